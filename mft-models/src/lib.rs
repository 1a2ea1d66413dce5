//! mft-models: model families (GPT-2, Gemma 3, Qwen 2.5) as plain configs, parameter layouts and
//! explicit forward/backward passes per block, with LoRA. `no_std`, allocation-free: every buffer
//! comes from an [`mft_core::Arena`] sized by a memory plan.
//!
//! The families land with the models issue; today the crate fixes its place in the dependency
//! order (mft-core ← mft-kernels ← mft-models) and is built for bare-metal targets in CI.
#![no_std]

pub use mft_core;
pub use mft_kernels;
