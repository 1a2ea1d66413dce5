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
//!
//! One LoRA step of a small GPT-2 (weights would come from a checkpoint through mft-std):
//!
//! ```
//! use mft_kernels::{Kernels, Sequential};
//! use mft_models::{Adapters, Batch, Family, Gradients, LoraConfig, LoraLayout, LoraTargets,
//!                  Model, ModelConfig, Purpose, StepOptions, Weights, shift_labels};
//!
//! let config = ModelConfig { vocab: 64, max_positions: 16, ..ModelConfig::gpt2_with(32, 2, 4) };
//! let model = Model::new(config)?;
//! let layout = model.layout();
//! let matrices = vec![0.02f32; layout.matrix_len()];   // f32, f16 or bf16
//! let vectors = vec![1.0f32; layout.vector_len()];     // norm weights and biases
//! let targets = LoraTargets::from_module_names(Family::Gpt2, ["c_attn", "c_proj"])?;
//! let lora = LoraConfig { rank: 4, alpha: 8.0, dropout: 0.05, rslora: false, targets };
//! let lora_layout = LoraLayout::new(&config, &lora);
//! let mut adapters = vec![0.0f32; lora_layout.len()];
//! lora_layout.init(0, &mut adapters);                  // PEFT's: A Kaiming-uniform, B zero
//!
//! let (batch, seq) = (2, 8);
//! let ids: Vec<u32> = (0..16).map(|i| i % 64).collect();
//! let labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
//! let mut next = vec![0; 16];
//! shift_labels(&labels, seq, &mut next);               // as transformers shifts labels
//!
//! let k = Kernels::best();
//! let purpose = Purpose::Train { checkpointed_blocks: 0 };
//! let mut workspace = vec![0.0f32; model.workspace_len(&k, Some(&lora_layout), batch, seq, purpose, 1)];
//! let mut grads = vec![0.0f32; lora_layout.len()];
//! let loss = model.train_step(
//!     &k,
//!     Weights::new(&matrices, &vectors),
//!     Some(Adapters { layout: &lora_layout, weights: &adapters }),
//!     Gradients::Lora(&mut grads),
//!     &Batch { input_ids: &ids, targets: &next, batch, seq },
//!     StepOptions { dropout_seed: 1, ..StepOptions::default() },
//!     &mut workspace,
//!     &Sequential,
//! )?;
//! assert_eq!(loss.valid_tokens, 14);                   // the last position of each row has no target
//! assert!(loss.loss.is_finite());
//! # Ok::<(), mft_models::Error>(())
//! ```
#![no_std]

pub mod block;
mod carve;
pub mod config;
pub mod error;
pub mod lora;
pub mod model;
pub mod ops;
pub mod paged;
pub mod params;
pub mod plan;
pub mod rng;

pub use config::{Family, ModelConfig, Rope};
pub use error::{Error, Result};
pub use lora::{LoraConfig, LoraLayout, LoraTargets};
pub use model::{Batch, Model, Purpose, StepOptions, WorkspaceSizes, shift_labels};
pub use ops::{Adapters, Gradients};
pub use paged::{BlockSource, Page, Paging};
pub use params::{GlobalParam, LayerParam, Matrices, Param, ParamLayout, Weights};
pub use plan::{MemoryPlan, Mode};

pub use mft_core;
pub use mft_kernels;
