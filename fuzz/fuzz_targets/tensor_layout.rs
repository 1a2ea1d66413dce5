//! Fuzz tensor layouts: arbitrary shapes and strides either are refused with an error or give a
//! view whose every element offset lies inside the buffer, through narrowing and splitting too.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mft_core::{Layout, TensorViewMut, for_each_offset};

fuzz_target!(|data: &[u8]| {
    if data.len() < 2 {
        return;
    }
    let rank = (data[0] % 5) as usize;
    let fields: Vec<usize> = data[1..].iter().map(|&b| (b % 9) as usize).collect();
    if fields.len() < 2 * rank + 1 {
        return;
    }
    let shape = &fields[..rank];
    let strides = &fields[rank..2 * rank];
    let buffer_len = fields[2 * rank] * 7;
    let mut buffer = vec![0f32; buffer_len];
    let Ok(layout) = Layout::strided(shape, strides) else { return };
    let Ok(view) = TensorViewMut::with_layout(&mut buffer, layout) else {
        assert!(layout.span().unwrap() > buffer_len);
        return;
    };
    for_each_offset(view.layout(), |offset| assert!(offset < buffer_len));
    if rank > 0 {
        let at = fields.get(2 * rank + 1).copied().unwrap_or(0) % (shape[0] + 1);
        if let Ok((mut head, mut tail)) = view.split_leading_at(at) {
            head.fill(1.0);
            tail.fill(2.0);
        }
    }
});
