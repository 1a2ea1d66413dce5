//! Fuzz the `.npy` reader of the Flower client ([`mft_fl::npy::decode_f32`]): a damaged copy
//! (see `mft_fuzz::corrupt`) of a valid 2×3 float32 array, or bytes from scratch. Bad input
//! must be an error, never a panic; an accepted array holds as many values as its shape says.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mft_fl::npy::{decode_f32, encode_f32};

fuzz_target!(|data: &[u8]| {
    let valid = encode_f32(&[2, 3], &[0.5, -1.0, 2.0, 3.5, 0.0, -0.25]);
    let bytes = mft_fuzz::corrupt(&valid, data);
    if let Ok(array) = decode_f32(&bytes) {
        let count = array.shape.iter().try_fold(1usize, |n, &d| n.checked_mul(d));
        assert_eq!(count, Some(array.values.len()), "values for every element of the shape");
    }
});
