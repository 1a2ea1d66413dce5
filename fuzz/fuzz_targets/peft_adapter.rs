//! Fuzz loading a PEFT adapter: adapter_config.json text ([`parse_lora_config`] for each
//! family, then the LoRA layout it implies for a tiny model of that family) and
//! adapter_model.safetensors ([`parse_adapters`]: a damaged copy, see `mft_fuzz::corrupt`, of
//! a valid adapter of the tiny GPT-2). Bad input must be an error naming the file, never a
//! panic.
#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use mft_models::{Family, LoraLayout, ModelConfig};
use mft_std::hf::{parse_adapters, parse_lora_config};

/// A valid adapter_model.safetensors of `mft_fuzz::tiny_lora`.
fn valid_adapter() -> &'static [u8] {
    static BYTES: OnceLock<Vec<u8>> = OnceLock::new();
    BYTES.get_or_init(|| {
        let layout = mft_fuzz::tiny_lora();
        let adapters: Vec<f32> = (0..layout.len()).map(|i| i as f32 * 0.25).collect();
        let dir = mft_fuzz::fresh_dir("valid-adapter");
        mft_std::export::export_peft_adapter(
            &dir,
            &mft_fuzz::tiny_gpt2(),
            &layout,
            &adapters,
            None,
        )
        .expect("the tiny adapter exports");
        std::fs::read(dir.join("adapter_model.safetensors")).expect("the export wrote it")
    })
}

/// A small model of `family` (a config that validates).
fn small(family: Family) -> ModelConfig {
    let mut config = match family {
        Family::Gpt2 => return mft_fuzz::tiny_gpt2(),
        Family::Qwen2 => ModelConfig::qwen2_5_0_5b(),
        Family::Gemma3 => ModelConfig::gemma3_270m(),
    };
    (config.vocab, config.hidden, config.layers, config.intermediate) = (16, 8, 2, 16);
    (config.heads, config.kv_heads, config.head_dim, config.max_positions) = (2, 1, 4, 8);
    config
}

fuzz_target!(|data: &[u8]| {
    let Some((&how, rest)) = data.split_first() else { return };
    if how & 1 == 0 {
        let Ok(text) = std::str::from_utf8(rest) else { return };
        let family = [Family::Gpt2, Family::Qwen2, Family::Gemma3][usize::from(how >> 1) % 3];
        if let Ok(lora) = parse_lora_config(text, "adapter_config.json".as_ref(), family) {
            let layout = LoraLayout::new(&small(family), &lora);
            assert!(!layout.is_empty(), "an accepted adapter trains something");
        }
    } else {
        let bytes = mft_fuzz::corrupt(valid_adapter(), rest);
        let path = "adapter_model.safetensors".as_ref();
        if let Ok(adapters) = parse_adapters(&bytes, path, &mft_fuzz::tiny_lora()) {
            assert_eq!(adapters.len(), mft_fuzz::tiny_lora().len());
        }
    }
});
