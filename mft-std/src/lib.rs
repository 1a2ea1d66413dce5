//! mft-std: the std layer of mft over the `no_std` core: files, Hugging Face checkpoints and
//! tokenizers, data, the trainer and the `mft` command. Today it reports what the machine offers
//! the kernels ([`system`]); loading and training land with their issues.

pub mod error;
pub mod pool;
pub mod system;

pub use error::{Error, Result};
pub use pool::ThreadPool;

pub use mft_core;
pub use mft_kernels;
pub use mft_models;
