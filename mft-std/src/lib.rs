//! mft-std: the std layer of mft over the `no_std` core, and the `mft` command.
//!
//! - Inputs: Hugging Face configs and checkpoints ([`hf`]), tokenizers ([`tokenizer`]), model
//!   sources including random weights ([`source`], [`random`]), training data ([`data`]).
//! - Training: the trainer ([`train`]: optimizer steps, accumulation, schedules, evaluation,
//!   checkpoints) and the main job ([`finetune`]), with its progress and metrics ([`progress`],
//!   [`svg`]); the smaller commands ([`commands`], [`generate`]).
//! - Outputs: PEFT adapters and Hugging Face snapshots ([`export`]), written atomically ([`fsio`]).
//! - The machine: its kernels ([`system`]), the thread pool ([`pool`]), the GPU the GEMMs may
//!   go to ([`device`]), and its battery and temperatures ([`energy`]: when to train, on how
//!   many threads, and at what energy cost).

pub mod budget;
pub mod commands;
pub mod data;
pub mod device;
pub mod energy;
pub mod error;
pub mod export;
pub mod finetune;
pub mod fsio;
pub mod generate;
pub mod hf;
pub mod paging;
pub mod pool;
pub mod progress;
pub mod random;
pub mod source;
pub mod svg;
pub mod system;
pub mod tokenizer;
pub mod train;

pub use error::{Error, Result};
pub use pool::ThreadPool;

pub use mft_core;
pub use mft_kernels;
pub use mft_models;
