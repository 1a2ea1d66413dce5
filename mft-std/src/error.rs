//! The error type of mft-std: one variant per kind of failure, each naming what failed.

/// Everything that can go wrong in mft-std.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The worker threads could not be started.
    #[error("cannot start a pool of {threads} threads: {source}")]
    ThreadPool {
        /// Threads asked for.
        threads: usize,
        /// Why rayon refused.
        source: rayon::ThreadPoolBuildError,
    },
}

/// Result alias for mft-std.
pub type Result<T> = std::result::Result<T, Error>;
