//! Fuzz config.json → model config, and what `mft inspect` does next with a config that
//! parses: the model (parameter layout), a LoRA layout over every linear projection and the
//! memory plan of a step. Bad input must be an error, never a panic or an overflow.
#![no_main]

use libfuzzer_sys::fuzz_target;
use mft_core::DType;
use mft_kernels::Kernels;
use mft_models::params::LayerParam;
use mft_models::{LoraConfig, LoraTargets, MemoryPlan, Mode, Model};
use mft_std::hf::parse_model_config;
use mft_std::mft_kernels;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else { return };
    let Ok(config) = parse_model_config(text, "config.json".as_ref()) else { return };
    let Ok(model) = Model::new(config) else { return };
    let family = config.family;
    let linear = LayerParam::ALL.into_iter().filter(|p| p.in_family(family) && p.is_matrix());
    let names: Vec<&str> = linear.map(|p| p.module_path(family)).collect();
    let targets = LoraTargets::from_module_names(family, names).expect("the family's own modules");
    let lora = LoraConfig { rank: 2, alpha: 4.0, dropout: 0.0, rslora: false, targets };
    for mode in [Mode::Full, Mode::Lora { config: lora, frozen: DType::BF16 }] {
        let seq = config.max_positions.min(16);
        let plan = MemoryPlan::new(&model, &Kernels::best(), &mode, 1, seq, 1, 1);
        let _ = plan.total_bytes();
    }
});
