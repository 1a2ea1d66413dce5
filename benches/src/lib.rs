//! Benchmarks of mft's kernels live in `benches/`: `cargo xtask bench kernels` runs
//! `benches/kernels.rs`, the side-by-side GEMM table against the `gemm`, `matrixmultiply` and
//! `faer` crates and the measured FMA peak; `cargo bench -p mft-benches --bench gemm` is the
//! criterion version, `--bench vector` the vector kernels.
//!
//! The library holds what needs no peer: the FMA-peak loop ([`peak`]) and the operands'
//! generator ([`random_values`]), shared by those
//! benchmarks and by `mft-bench` (`src/bin/mft-bench/`), the standalone benchmark that
//! `cargo xtask bench --device NAME` cross-builds, pushes to a phone and runs there.

pub mod peak;

/// `len` values in [-1, 1) from a xorshift generator seeded with `seed`.
pub fn random_values(len: usize, seed: u64) -> Vec<f32> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            // 24 random bits → [0, 1) exactly, then to [-1, 1).
            ((state >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}
