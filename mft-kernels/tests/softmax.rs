//! Row softmax against an f64 reference written here: the forward over odd shapes and extreme
//! rows, the backward against central finite differences, threaded runs against sequential
//! ones, and the shape checks. Every test runs on every ISA the CPU has.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::{Kernels, Parallel, Sequential};
use proptest::prelude::*;

fn softmax_ref(x: &[f64], dim: usize) -> Vec<f64> {
    let mut y = Vec::with_capacity(x.len());
    for row in x.chunks(dim) {
        let m = row.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let total: f64 = row.iter().map(|v| (v - m).exp()).sum();
        y.extend(row.iter().map(|v| (v - m).exp() / total));
    }
    y
}

fn forward(k: &Kernels, x: &[f32], dim: usize, par: &dyn Parallel) -> Vec<f32> {
    let mut y = vec![f32::NAN; x.len()];
    k.softmax_forward(x, dim, &mut y, par);
    y
}

fn backward(k: &Kernels, dy: &[f32], y: &[f32], dim: usize, par: &dyn Parallel) -> Vec<f32> {
    let mut dx = vec![f32::NAN; y.len()];
    k.softmax_backward(dy, y, dim, &mut dx, par);
    dx
}

fn odd_dims() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 17, 63, 65, 130])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn forward_matches_f64(dim in odd_dims(), rows in 1usize..5, scale in 0.1f32..40.0, seed: u64) {
        let x = values(seed, rows * dim, scale);
        let want = softmax_ref(&widen(&x), dim);
        for k in every_isa() {
            let y = forward(&k, &x, dim, &Sequential);
            assert_close(&format!("{} softmax", k.isa()), &y, &want, 1e-7, 2e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences(
        dim in prop::sample::select(vec![1usize, 2, 3, 17, 33]), rows in 1usize..4, seed: u64,
    ) {
        let x = values(seed, rows * dim, 3.0);
        let r = values(seed ^ 1, rows * dim, 1.0);
        let rd = widen(&r);
        let want = finite_difference(&widen(&x), 1e-4, |x| {
            softmax_ref(x, dim).iter().zip(&rd).map(|(y, r)| y * r).sum()
        });
        for k in every_isa() {
            let y = forward(&k, &x, dim, &Sequential);
            let dx = backward(&k, &r, &y, dim, &Sequential);
            assert_close(&format!("{} softmax dx", k.isa()), &dx, &want, 1e-6, 1e-4);
        }
    }
}

/// Large logits (no overflow thanks to the max), −∞ entries (masked: exactly 0), and a fully
/// masked row (all zeros, not NaN).
#[test]
fn extreme_rows() {
    let inf = f32::INFINITY;
    let x = [
        1000.0, 999.0, -inf, 998.0, /* */ -inf, -inf, -inf, -inf, /* */ -inf, 5.0, -inf,
        -inf,
    ];
    let e = std::f64::consts::E;
    let total = 1.0 + 1.0 / e + 1.0 / (e * e);
    let want = [
        1.0 / total,
        1.0 / (e * total),
        0.0,
        1.0 / (e * e * total),
        0.0,
        0.0,
        0.0,
        0.0,
        0.0,
        1.0,
        0.0,
        0.0,
    ];
    for k in every_isa() {
        let y = forward(&k, &x, 4, &Sequential);
        assert_close(&format!("{} extreme", k.isa()), &y, &want, 0.0, 1e-6);
        assert_eq!(y[2], 0.0);
    }
}

/// Rows are independent: threaded results are bit-identical to sequential ones.
#[test]
fn threaded_runs_match_sequential() {
    let (rows, dim) = (300, 257);
    let x = values(51, rows * dim, 5.0);
    let dy = values(52, rows * dim, 1.0);
    for k in every_isa() {
        let y = forward(&k, &x, dim, &Sequential);
        let dx = backward(&k, &dy, &y, dim, &Sequential);
        for threads in [2, 3] {
            let par = ScopedThreads(threads);
            assert_eq!(y, forward(&k, &x, dim, &par), "{} forward", k.isa());
            assert_eq!(dx, backward(&k, &dy, &y, dim, &par), "{} backward", k.isa());
        }
    }
}

#[test]
#[should_panic(expected = "softmax_forward: x has 10 elements, not a multiple of dim 4")]
fn forward_rejects_partial_rows() {
    Kernels::best().softmax_forward(&[0.0; 10], 4, &mut [0.0; 10], &Sequential);
}

#[test]
#[should_panic(expected = "softmax_backward: dx has 7 elements, dy has 8")]
fn backward_rejects_a_short_gradient() {
    Kernels::best().softmax_backward(&[0.0; 8], &[0.0; 8], 4, &mut [0.0; 7], &Sequential);
}
