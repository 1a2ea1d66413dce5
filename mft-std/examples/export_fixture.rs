//! Exports, for each family (GPT-2, Qwen 2.5, Gemma 3), a LoRA adapter and a merged model the way
//! a finished mft run would, for `scripts/peft_export_check.py` to load with PEFT and
//! transformers:
//!
//! ```text
//! cargo run -p mft-std --example export_fixture -- OUT_DIR
//! ```
//!
//! writes `OUT_DIR/<family>/adapter/` (adapter_config.json + adapter_model.safetensors, by
//! [`export_peft_adapter`]) and `OUT_DIR/<family>/merged/` (a generated config.json +
//! model.safetensors, by [`merge_lora`] and [`export_hf_snapshot`]).
//!
//! The base model is the golden fixture `mft-models/tests/fixtures/<family>_lora`; the adapter
//! starts from that fixture's adapter, takes other hyper-parameters (a GPT-2 target only PEFT's
//! suffix matching can express, rsLoRA, a fractional alpha, dropout) and is perturbed by a
//! fixed integer hash, so the values are the same on every machine. `tests/export.rs` includes
//! this file to rebuild the same adapter and compare it with the committed one.

use std::path::{Path, PathBuf};

use mft_models::{Family, LoraConfig, LoraLayout, LoraTargets, ModelConfig};
use mft_std::export::{export_hf_snapshot, export_peft_adapter, merge_lora};
use mft_std::hf::{ModelWeights, load_adapters, load_weights, read_lora_config, read_model_config};

/// The families, by the name of their fixture directories.
pub const FAMILIES: [&str; 3] = ["gpt2", "qwen2", "gemma3"];

/// The base model (and source adapter) of `family`: its LoRA golden fixture.
pub fn base_dir(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../mft-models/tests/fixtures")
        .join(format!("{family}_lora"))
}

/// One family's exported adapter, as the exporter is handed it.
pub struct Case {
    /// The base model's configuration.
    pub model: ModelConfig,
    /// The adapter's layout (and hyper-parameters).
    pub lora: LoraLayout,
    /// The adapter's flat buffer.
    pub adapters: Vec<f32>,
    /// What `base_model_name_or_path` is set to.
    pub base_model_name_or_path: Option<&'static str>,
}

/// The adapter exported for `family` (one of [`FAMILIES`]).
pub fn case(family: &str) -> mft_std::Result<Case> {
    let dir = base_dir(family);
    let model = read_model_config(&dir.join("config.json"))?;
    let source_config = read_lora_config(&dir.join("adapter_config.json"), model.family)?;
    let source = LoraLayout::new(&model, &source_config);
    let source_adapters = load_adapters(&dir.join("adapter_model.safetensors"), &source)?;

    let (names, alpha, dropout, rslora, base): (&[&str], f32, f32, bool, _) = match model.family {
        // `attn.c_proj` without `mlp.c_proj`: PEFT must match the module path's suffix.
        Family::Gpt2 => (&["c_attn", "attn.c_proj", "c_fc"], 12.0, 0.05, false, Some("gpt2")),
        Family::Qwen2 => (
            &["q_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
            16.0,
            0.1,
            true,
            Some("Qwen/Qwen2.5-0.5B"),
        ),
        Family::Gemma3 => {
            (&["q_proj", "v_proj", "o_proj", "gate_proj", "down_proj"], 6.5, 0.0, false, None)
        }
    };
    let targets = LoraTargets::from_module_names(model.family, names.iter().copied())
        .expect("the families have these projections");
    let config = LoraConfig { rank: source_config.rank, alpha, dropout, rslora, targets };
    let lora = LoraLayout::new(&model, &config);
    let mut adapters = vec![0.0f32; lora.len()];
    for (index, (layer, param, is_b)) in lora.tensors().enumerate() {
        let from = &source_adapters[source.range(layer, param, is_b)];
        let to = &mut adapters[lora.range(layer, param, is_b)];
        for (element, (t, &f)) in to.iter_mut().zip(from).enumerate() {
            *t = f + 0.05 * unit_noise(index as u64, element as u64);
        }
    }
    Ok(Case { model, lora, adapters, base_model_name_or_path: base })
}

/// The base model of `case` with its adapter merged in.
pub fn merged_weights(family: &str, case: &Case) -> mft_std::Result<ModelWeights<f32>> {
    let layout = mft_models::ParamLayout::new(&case.model);
    let mut weights = load_weights::<f32>(&[base_dir(family).join("model.safetensors")], &layout)?;
    merge_lora(&case.model, weights.stores_mut(&layout).0, &case.lora, &case.adapters);
    Ok(weights)
}

/// A value in [-1, 1) from (`stream`, `index`), by the SplitMix64 finaliser: integer
/// arithmetic and exact float steps only, so every platform gets the same bits.
fn unit_noise(stream: u64, index: u64) -> f32 {
    let mut z = (stream << 32 | index).wrapping_add(0x9e37_79b9_7f4a_7c15);
    z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
    z ^= z >> 31;
    (z >> 40) as f32 / (1u32 << 23) as f32 - 1.0
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let out =
        std::env::args_os().nth(1).map(PathBuf::from).ok_or("usage: export_fixture OUT_DIR")?;
    for family in FAMILIES {
        let case = case(family)?;
        let adapter_dir = out.join(family).join("adapter");
        export_peft_adapter(
            &adapter_dir,
            &case.model,
            &case.lora,
            &case.adapters,
            case.base_model_name_or_path,
        )?;
        let merged = merged_weights(family, &case)?;
        let merged_dir = out.join(family).join("merged");
        let layout = mft_models::ParamLayout::new(&case.model);
        export_hf_snapshot(&merged_dir, &case.model, &layout, merged.as_weights(), None)?;
        println!("{family}: {} and {}", adapter_dir.display(), merged_dir.display());
    }
    Ok(())
}
