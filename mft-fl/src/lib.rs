//! mft-fl: a native Flower client. It joins a federation coordinated by a Flower SuperLink
//! (flwr 1.42's Fleet API: protobuf over HTTP/1.1, TLS or `--insecure`), and fine-tunes LoRA
//! adapters on the device with mft-std's trainer: each `train` message brings the global
//! adapters, the node trains them on its own data for the configured steps (FedAvg, or FedProx
//! when the config carries `proximal-mu`) and sends them back with `num-examples` and its
//! metrics; each `evaluate` message is answered with the loss on the held-out split.
//!
//! - Transport: [`proto`] (the Fleet API's messages, hand-written prost derives), [`transport`]
//!   (HTTP calls, TLS, traffic counts), [`auth`] (the node's P-384 key and signed headers),
//!   [`backoff`] (reconnecting), [`heartbeat`] (keeping the node online while it trains).
//! - Content: [`objects`] (Flower's content-addressed object store: ids, chunks, checks),
//!   [`npy`] (float32 `.npy`), [`lora`] (adapters as arrays named by their PEFT keys).
//! - The node: [`local`] (model, data and trainer across rounds), [`client`] (the loop,
//!   error replies, restarts), [`log`].
//!
//! The `mft-fl` binary wraps [`client::Client`]; `mft-fl/flower/` holds the Python Flower app
//! (the ServerApp with flwr's FedAvg or FedProx over the LoRA arrays) that drives it.

pub mod auth;
pub mod backoff;
pub mod client;
pub mod error;
pub mod heartbeat;
pub mod local;
pub mod log;
pub mod lora;
pub mod npy;
pub mod objects;
pub mod proto;
pub mod transport;

pub use error::{Error, Result};
pub use mft_std;
