//! Fuzz a sharded checkpoint's model.safetensors.index.json: the text alone ([`parse_index`]),
//! then as `mft` finds a checkpoint's files ([`checkpoint_files`]) in a directory that holds
//! it beside one valid shard `model-00001-of-00002.safetensors`, loading the weights when the
//! index is accepted. Bad input must be an error naming the index, never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mft_models::ParamLayout;
use mft_std::hf::{checkpoint_files, load_weights, parse_index};

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    if parse_index(text, "model.safetensors.index.json".as_ref()).is_err() {
        return;
    }
    let dir = mft_fuzz::scratch().join("sharded");
    if !dir.is_dir() {
        std::fs::create_dir_all(&dir).expect("the scratch directory can be made");
        let shard = dir.join("model-00001-of-00002.safetensors");
        std::fs::write(shard, mft_fuzz::tiny_gpt2_safetensors()).expect("writable");
    }
    std::fs::write(dir.join("model.safetensors.index.json"), text).expect("writable");
    if let Ok(files) = checkpoint_files(&dir) {
        let layout = ParamLayout::new(&mft_fuzz::tiny_gpt2());
        let _ = load_weights::<f32>(&files, &layout);
    }
});
