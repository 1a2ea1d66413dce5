//! mft-fl: joins a Flower federation (Fleet API) and trains LoRA adapters locally with
//! mft-std's trainer. The client lands with the federated-learning issue; today the crate fixes
//! its place at the top of the dependency order.

pub use mft_std;
