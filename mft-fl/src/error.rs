//! mft-fl's errors: one enum whose variants name what failed (the RPC, the object, the array,
//! the config key, the file) in one line.

use std::path::PathBuf;

/// What went wrong.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The SuperLink could not be reached (connection refused, DNS, TLS, timeout): worth
    /// retrying.
    #[error("cannot reach the SuperLink at {address} ({rpc}): {problem}")]
    Unreachable {
        /// `host:port`.
        address: String,
        /// The Fleet API call.
        rpc: &'static str,
        /// What the HTTP client reported.
        problem: String,
    },
    /// The SuperLink rejected the node's authentication (HTTP 401).
    #[error(
        "the SuperLink at {address} rejected this node's authentication ({rpc}: HTTP 401): \
         {detail}"
    )]
    Unauthorized {
        /// `host:port`.
        address: String,
        /// The Fleet API call.
        rpc: &'static str,
        /// The SuperLink's explanation.
        detail: String,
    },
    /// The SuperLink answered with an error status.
    #[error("the SuperLink refused {rpc} (HTTP {status}): {detail}")]
    Refused {
        /// The Fleet API call.
        rpc: &'static str,
        /// HTTP status.
        status: u16,
        /// The SuperLink's explanation (its JSON error, shortened).
        detail: String,
    },
    /// A reply that is not the protobuf message it should be.
    #[error("{rpc}: the SuperLink's reply is not a valid protobuf message: {problem}")]
    Decode {
        /// The Fleet API call.
        rpc: &'static str,
        /// What prost reported.
        problem: String,
    },
    /// An object of the object store that is malformed or does not hash to its id.
    #[error("object {id}: {problem}")]
    Object {
        /// The object's id (sha256), shortened in messages by the caller if needed.
        id: String,
        /// What is wrong with it.
        problem: String,
    },
    /// A message this client cannot act on (missing records, wrong types, unknown type).
    #[error("message {message_id}: {problem}")]
    Message {
        /// The message's id.
        message_id: String,
        /// What is wrong with it.
        problem: String,
    },
    /// Arrays that do not match the local adapter (names, shapes, dtypes, values).
    #[error("arrays: {problem}")]
    Arrays {
        /// Which array and what is wrong with it.
        problem: String,
    },
    /// A `.npy` payload mft cannot read.
    #[error("npy: {problem}")]
    Npy {
        /// What is wrong with it.
        problem: String,
    },
    /// The node key file.
    #[error("{}: {problem}", path.display())]
    Key {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
    /// A file that cannot be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        /// The file.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// A command-line value that cannot be used.
    #[error("{0}")]
    Usage(String),
    /// Training, evaluation, model or data loading (mft-std's errors).
    #[error(transparent)]
    Std(#[from] mft_std::Error),
}

/// Results of mft-fl.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Whether a retry may succeed (the network or the SuperLink is down for a while).
    pub fn is_transient(&self) -> bool {
        match self {
            Error::Unreachable { .. } => true,
            // Overloaded, restarting, or behind a proxy that is.
            Error::Refused { status, .. } => matches!(status, 429 | 500 | 502 | 503 | 504),
            _ => false,
        }
    }
}
