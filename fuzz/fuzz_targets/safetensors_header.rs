//! Fuzz a checkpoint's safetensors file (header and data) as `mft` loads it: mapped
//! ([`load_weights`], in f32 and bf16) and paged ([`load_weights_paged`], then every paged
//! matrix read back). The file is a damaged copy of a valid tiny GPT-2 checkpoint (see
//! `mft_fuzz::corrupt`). Bad input must be an error naming the file, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mft_core::bf16;
use mft_models::{Paging, ParamLayout};
use mft_std::hf::{load_weights, load_weights_paged};

fuzz_target!(|data: &[u8]| {
    let bytes = mft_fuzz::corrupt(mft_fuzz::tiny_gpt2_safetensors(), data);
    let path = mft_fuzz::scratch().join("model.safetensors");
    std::fs::write(&path, &bytes).expect("the scratch file can be written");
    let layout = ParamLayout::new(&mft_fuzz::tiny_gpt2());
    let files = [path];
    if let Ok(weights) = load_weights::<f32>(&files, &layout) {
        let _ = weights.to_stores(&layout);
    }
    let _ = load_weights::<bf16>(&files, &layout);
    if let Ok(weights) = load_weights_paged::<f32>(&files, &layout, Paging::BlocksAndEmbeddings) {
        let _ = weights.to_stores(&layout);
    }
});
