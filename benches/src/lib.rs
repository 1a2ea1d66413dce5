//! Benchmarks of mft's kernels live in `benches/`: `cargo xtask bench kernels` runs
//! `benches/kernels.rs`, the side-by-side GEMM table against the `gemm`, `matrixmultiply` and
//! `faer` crates and the measured FMA peak; `cargo bench -p mft-benches --bench gemm` is the
//! criterion version, `--bench vector` the vector kernels.
//!
//! The library holds what needs no peer: the FMA-peak loop ([`peak`]), shared by those
//! benchmarks and by `mft-bench` (`src/bin/mft-bench/`), the standalone benchmark that
//! `cargo xtask bench --device NAME` cross-builds, pushes to a phone and runs there.

pub mod peak;
