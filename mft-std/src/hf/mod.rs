//! Hugging Face's files, read into mft's types: a model's config.json ([`config`]), PEFT's
//! adapter_config.json ([`adapter`]), and safetensors weights of a checkpoint or an adapter
//! ([`checkpoint`]). Every error names the file, and the field or tensor within it.

pub mod adapter;
pub mod checkpoint;
pub mod config;
mod fields;

pub use adapter::{parse_lora_config, read_lora_config};
pub use checkpoint::{
    ModelWeights, checkpoint_files, load_adapters, load_weights, load_weights_paged,
    parse_adapters, parse_index,
};
pub use config::{parse_model_config, read_model_config};
