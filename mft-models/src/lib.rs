//! mft-models: GPT-2, Gemma 3 and Qwen 2.5 as plain configurations, parameter layouts and
//! explicit forward and backward passes per block, for full fine-tuning and LoRA. `no_std` and
//! allocation-free: weights, gradients and the step's workspace are buffers the caller sizes
//! from the memory plan ([`MemoryPlan`]) and passes in.
//!
//! - [`config`]: [`ModelConfig`] and the presets of the published shapes.
//! - [`params`]: which tensors each family has, their Hugging Face names, the flat stores.
//! - [`lora`]: PEFT-compatible adapters: targets, layout, initialisation, dropout.
//! - [`model`]: [`Model::train_step`] and [`Model::logits`].
//! - [`plan`]: the memory plan and the FLOPs of a step.
#![no_std]

pub mod block;
mod carve;
pub mod config;
pub mod error;
pub mod lora;
pub mod model;
pub mod ops;
pub mod params;
pub mod plan;
pub mod rng;

pub use config::{Family, ModelConfig, Rope};
pub use error::{Error, Result};
pub use lora::{LoraConfig, LoraLayout, LoraTargets};
pub use model::{Batch, Model, Purpose, StepOptions, WorkspaceSizes, shift_labels};
pub use ops::{Adapters, Gradients};
pub use params::{GlobalParam, LayerParam, Param, ParamLayout, Weights};
pub use plan::{MemoryPlan, Mode};

pub use mft_core;
pub use mft_kernels;
