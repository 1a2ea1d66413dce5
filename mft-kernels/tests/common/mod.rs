//! Helpers shared by the primitive tests: a threaded [`Parallel`], the kernels of every ISA this
//! CPU runs, deterministic inputs, tolerance checks and central finite differences in f64.
//!
//! Each test file includes it with `mod common;` and uses a different part of it.
#![allow(dead_code)]

use mft_kernels::{Isa, Kernels, Parallel};

/// Runs each task on its own scoped thread: a second `Parallel` implementation for the tests.
pub struct ScopedThreads(pub usize);

// SAFETY: every index is spawned once and the scope joins all threads before returning.
unsafe impl Parallel for ScopedThreads {
    fn threads(&self) -> usize {
        self.0
    }

    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in 0..tasks {
                s.spawn(move || task(i));
            }
        });
    }
}

/// The kernels of every ISA this build and CPU support (scalar first). Tests run each, so every
/// SIMD path is covered wherever it exists (AVX2 and AVX-512 on x86_64, NEON and SVE under qemu).
pub fn every_isa() -> Vec<Kernels> {
    let kernels: Vec<Kernels> = Isa::supported().filter_map(Kernels::for_isa).collect();
    assert!(!kernels.is_empty(), "no ISA supported");
    kernels
}

/// `len` deterministic pseudo-random values in `[-scale, scale)` from `seed` (a 64-bit LCG, so
/// failures reproduce from the seed alone).
pub fn values(seed: u64, len: usize, scale: f32) -> Vec<f32> {
    let mut state = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..len)
        .map(|_| {
            state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            let unit = (state >> 40) as f32 / (1u64 << 24) as f32;
            (2.0 * unit - 1.0) * scale
        })
        .collect()
}

/// Asserts `|got − want| ≤ abs + rel·|want|` elementwise, naming the first element that is off.
#[track_caller]
pub fn assert_close(what: &str, got: &[f32], want: &[f64], abs: f64, rel: f64) {
    assert_eq!(got.len(), want.len(), "{what}: lengths differ");
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        let err = (g as f64 - w).abs();
        assert!(
            err <= abs + rel * w.abs(),
            "{what}[{i}]: got {g}, want {w} (error {err:e}, allowed {:e})",
            abs + rel * w.abs()
        );
    }
}

/// The gradient of `f` at `x` by central differences, `(f(x + h·eᵢ) − f(x − h·eᵢ)) / 2h`, in
/// f64 (use it with an f64 reference implementation of the forward).
pub fn finite_difference(x: &[f64], h: f64, mut f: impl FnMut(&[f64]) -> f64) -> Vec<f64> {
    let mut probe = x.to_vec();
    (0..x.len())
        .map(|i| {
            probe[i] = x[i] + h;
            let up = f(&probe);
            probe[i] = x[i] - h;
            let down = f(&probe);
            probe[i] = x[i];
            (up - down) / (2.0 * h)
        })
        .collect()
}

/// `x` widened to f64.
pub fn widen(x: &[f32]) -> Vec<f64> {
    x.iter().map(|&v| v as f64).collect()
}
