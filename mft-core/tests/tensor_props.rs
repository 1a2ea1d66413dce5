//! Properties of tensor layouts over random shapes and strides: every element offset lies inside
//! the buffer, narrowing the leading axis selects exactly those rows, and a split hands out two
//! views that together cover the original elements, each element in the right half.

use mft_core::{Layout, TensorView, TensorViewMut, for_each_offset};
use proptest::prelude::*;

fn layout() -> impl Strategy<Value = (Vec<usize>, Option<Vec<usize>>)> {
    (0usize..=4).prop_flat_map(|rank| {
        (
            prop::collection::vec(0usize..5, rank),
            prop::option::of(prop::collection::vec(0usize..12, rank)),
        )
    })
}

fn offsets(layout: &Layout) -> Vec<usize> {
    let mut out = Vec::new();
    for_each_offset(layout, |o| out.push(o));
    out
}

proptest! {
    #[test]
    fn views_stay_in_bounds_and_split_correctly(
        (shape, strides) in layout(),
        extra in 0usize..4,
        at_pick in any::<usize>(),
        start_pick in any::<usize>(),
    ) {
        let layout = match &strides {
            Some(s) => Layout::strided(&shape, s).unwrap(),
            None => Layout::contiguous(&shape).unwrap(),
        };
        let span = layout.span().unwrap();
        let all = offsets(&layout);
        prop_assert_eq!(all.len(), layout.numel());
        prop_assert!(all.iter().all(|&o| o < span));
        if strides.is_none() {
            prop_assert!(layout.is_contiguous());
            prop_assert_eq!(all.clone(), (0..layout.numel()).collect::<Vec<_>>());
        }
        if span > 0 {
            let short = vec![0f32; span - 1];
            prop_assert!(TensorView::with_layout(&short, layout).is_err());
        }
        let mut buffer = vec![0f32; span + extra];
        if shape.is_empty() {
            return Ok(());
        }
        let rows = shape[0];

        // Narrowing selects exactly the offsets of those rows.
        let start = start_pick % (rows + 1);
        let len = (start_pick / 7) % (rows - start + 1);
        let view = TensorView::with_layout(&buffer, layout).unwrap();
        let narrowed = view.narrow_leading(start, len).unwrap();
        let base = (narrowed.data().as_ptr().addr() - buffer.as_ptr().addr()) / 4;
        let per_row = layout.numel() / rows.max(1);
        let expected: Vec<usize> = if per_row == 0 || len == 0 {
            vec![]
        } else {
            all[start * per_row..(start + len) * per_row].to_vec()
        };
        let got: Vec<usize> = offsets(narrowed.layout()).iter().map(|o| o + base).collect();
        prop_assert_eq!(got, expected);

        // Splitting (when rows do not interleave) puts each element in the right half.
        let at = at_pick % (rows + 1);
        let view = TensorViewMut::with_layout(&mut buffer, layout).unwrap();
        if let Ok((mut head, mut tail)) = view.split_leading_at(at) {
            head.fill(1.0);
            tail.fill(2.0);
            for (i, &o) in all.iter().enumerate() {
                let row = i / per_row.max(1);
                prop_assert_eq!(buffer[o], if row < at { 1.0 } else { 2.0 });
            }
        }
    }
}
