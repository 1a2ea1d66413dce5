//! Benchmarks of mft's kernels live in `benches/` (this library target is empty):
//! `cargo xtask bench kernels` runs `benches/kernels.rs`, the side-by-side GEMM table against the
//! `gemm`, `matrixmultiply` and `faer` crates and the measured FMA peak; `cargo bench -p
//! mft-benches --bench gemm` is the criterion version, `--bench vector` the vector kernels.
