//! Bias add and the bias gradient against f64 references written here, over odd shapes; the
//! gradient against finite differences; threaded runs against sequential ones; the shape and
//! scratch checks. Every test runs on every ISA the CPU has.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::{Kernels, Parallel, Sequential};
use proptest::prelude::*;

fn add(k: &Kernels, x: &[f32], bias: &[f32], par: &dyn Parallel) -> Vec<f32> {
    let mut y = x.to_vec();
    k.bias_add_forward(&mut y, bias, par);
    y
}

/// `d_bias0 + column sums of dy`, through the kernel.
fn grad(k: &Kernels, dy: &[f32], d_bias0: &[f32], par: &dyn Parallel) -> Vec<f32> {
    let mut d_bias = d_bias0.to_vec();
    let len = Kernels::bias_add_backward_scratch_len(d_bias.len(), par.threads());
    let mut scratch = vec![f32::NAN; len];
    k.bias_add_backward(dy, &mut d_bias, &mut scratch, par);
    d_bias
}

fn odd_dims() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 17, 63, 65, 130])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn forward_adds_the_bias_to_every_row(dim in odd_dims(), rows in 0usize..5, seed: u64) {
        let x = values(seed, rows * dim, 3.0);
        let bias = values(seed ^ 1, dim, 3.0);
        let want: Vec<f64> =
            x.iter().enumerate().map(|(i, &v)| v as f64 + bias[i % dim] as f64).collect();
        for k in every_isa() {
            // One rounding of the exact sum.
            assert_close(&k.isa().to_string(), &add(&k, &x, &bias, &Sequential), &want, 0.0, 6e-8);
        }
    }

    #[test]
    fn backward_sums_the_columns(dim in odd_dims(), rows in 0usize..40, seed: u64) {
        let dy = values(seed, rows * dim, 1.0);
        let d0 = values(seed ^ 1, dim, 1.0);
        let mut want: Vec<f64> = widen(&d0);
        for (i, &g) in dy.iter().enumerate() {
            want[i % dim] += g as f64;
        }
        for k in every_isa() {
            let got = grad(&k, &dy, &d0, &Sequential);
            assert_close(&k.isa().to_string(), &got, &want, 1e-5, 1e-6);
        }
    }

    /// The gradient is the derivative of `L = Σ r·(x + b)` with respect to `b`.
    #[test]
    fn backward_matches_finite_differences(dim in odd_dims(), rows in 1usize..4, seed: u64) {
        let x = values(seed, rows * dim, 1.0);
        let bias = values(seed ^ 1, dim, 1.0);
        let r = values(seed ^ 2, rows * dim, 1.0);
        let (xd, rd) = (widen(&x), widen(&r));
        let want = finite_difference(&widen(&bias), 1e-3, |b| {
            xd.iter().zip(&rd).enumerate().map(|(i, (x, r))| r * (x + b[i % dim])).sum()
        });
        for k in every_isa() {
            let got = grad(&k, &r, &vec![0.0; dim], &Sequential);
            assert_close(&k.isa().to_string(), &got, &want, 1e-5, 1e-5);
        }
    }
}

/// Rows split across tasks: the forward is bit-identical; the gradient sums per-task partials,
/// so it agrees to rounding.
#[test]
fn threaded_runs_match_sequential() {
    let (rows, dim) = (200, 769);
    let x = values(61, rows * dim, 1.0);
    let bias = values(62, dim, 1.0);
    let d0 = values(63, dim, 1.0);
    for k in every_isa() {
        let y = add(&k, &x, &bias, &Sequential);
        let g = grad(&k, &x, &d0, &Sequential);
        for threads in [2, 3] {
            let par = ScopedThreads(threads);
            assert_eq!(y, add(&k, &x, &bias, &par), "{} forward", k.isa());
            let g_par = grad(&k, &x, &d0, &par);
            assert_close(&format!("{} gradient", k.isa()), &g_par, &widen(&g), 1e-5, 1e-6);
        }
    }
}

#[test]
#[should_panic(
    expected = "bias_add_forward: x has 10 elements, not a multiple of the bias length 4"
)]
fn forward_rejects_partial_rows() {
    Kernels::best().bias_add_forward(&mut [0.0; 10], &[0.0; 4], &Sequential);
}

#[test]
#[should_panic(
    expected = "bias_add_backward: scratch has 5 floats, needs 24 for 8 columns on 3 threads"
)]
fn backward_rejects_short_scratch() {
    Kernels::best().bias_add_backward(&[0.0; 16], &mut [0.0; 8], &mut [0.0; 5], &ScopedThreads(3));
}

#[test]
#[should_panic(
    expected = "bias_add_backward: dy has 9 elements, not a multiple of the bias length 2"
)]
fn backward_rejects_partial_rows() {
    Kernels::best().bias_add_backward(&[0.0; 9], &mut [0.0; 2], &mut [0.0; 2], &Sequential);
}
