//! Benchmarks of mft's kernels live in `benches/`; run them with `cargo bench -p mft-benches`.
//! Peers (gemm, matrixmultiply, faer, PyTorch through a script) join as the kernels they measure
//! land. This library target is empty.
