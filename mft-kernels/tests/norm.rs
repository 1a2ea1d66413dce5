//! LayerNorm and RMSNorm (both forms) against f64 references written here: forwards over odd
//! shapes, backwards against central finite differences of the reference, threaded runs against
//! sequential ones, and the shape checks. Every test runs on every ISA the CPU has.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::norm::RmsNormForm;
use mft_kernels::{Kernels, Parallel, Sequential};
use proptest::prelude::*;
use std::sync::atomic::{AtomicUsize, Ordering};

const LN_EPS: f32 = 1e-5;
const RMS_EPS: f32 = 1e-6;

/// Wraps a [`Parallel`] and records the largest task count of any run, so a threading test can
/// check that the work really was split.
struct Counted<P> {
    inner: P,
    most_tasks: AtomicUsize,
}

impl<P> Counted<P> {
    fn new(inner: P) -> Self {
        Counted { inner, most_tasks: AtomicUsize::new(0) }
    }
    fn most_tasks(&self) -> usize {
        self.most_tasks.load(Ordering::Relaxed)
    }
}

// SAFETY: forwards to `inner`, which upholds the contract.
unsafe impl<P: Parallel> Parallel for Counted<P> {
    fn threads(&self) -> usize {
        self.inner.threads()
    }
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        self.most_tasks.fetch_max(tasks, Ordering::Relaxed);
        self.inner.run(tasks, task);
    }
}

/// LayerNorm in f64: `(y, mean, rstd)`.
fn layer_norm_ref(x: &[f64], w: &[f64], b: &[f64], eps: f64) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
    let dim = w.len();
    let (mut y, mut means, mut rstds) = (Vec::new(), Vec::new(), Vec::new());
    for row in x.chunks(dim) {
        let mean = row.iter().sum::<f64>() / dim as f64;
        let var = row.iter().map(|v| (v - mean) * (v - mean)).sum::<f64>() / dim as f64;
        let rstd = 1.0 / (var + eps).sqrt();
        for j in 0..dim {
            y.push((row[j] - mean) * rstd * w[j] + b[j]);
        }
        means.push(mean);
        rstds.push(rstd);
    }
    (y, means, rstds)
}

/// RMSNorm in f64: `(y, rstd)`.
fn rms_norm_ref(x: &[f64], w: &[f64], form: RmsNormForm, eps: f64) -> (Vec<f64>, Vec<f64>) {
    let dim = w.len();
    let offset = match form {
        RmsNormForm::Weight => 0.0,
        RmsNormForm::OnePlusWeight => 1.0,
    };
    let (mut y, mut rstds) = (Vec::new(), Vec::new());
    for row in x.chunks(dim) {
        let rstd = 1.0 / (row.iter().map(|v| v * v).sum::<f64>() / dim as f64 + eps).sqrt();
        for j in 0..dim {
            y.push(row[j] * rstd * (offset + w[j]));
        }
        rstds.push(rstd);
    }
    (y, rstds)
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Outputs of one LayerNorm forward.
struct LnForward {
    y: Vec<f32>,
    mean: Vec<f32>,
    rstd: Vec<f32>,
}

fn ln_forward(k: &Kernels, x: &[f32], w: &[f32], b: &[f32], par: &dyn Parallel) -> LnForward {
    let rows = x.len() / w.len();
    let mut out = LnForward { y: vec![0.0; x.len()], mean: vec![0.0; rows], rstd: vec![0.0; rows] };
    k.layer_norm_forward(x, w, b, LN_EPS, &mut out.y, &mut out.mean, &mut out.rstd, par);
    out
}

/// `(dx, d_weight, d_bias)` of one LayerNorm backward, with parameter gradients starting from
/// `dw0`, `db0`.
#[allow(clippy::too_many_arguments)]
fn ln_backward(
    k: &Kernels,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    fwd: &LnForward,
    dw0: &[f32],
    db0: &[f32],
    par: &dyn Parallel,
) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let dim = w.len();
    let mut dx = vec![f32::NAN; x.len()];
    let (mut dw, mut db) = (dw0.to_vec(), db0.to_vec());
    let mut scratch = vec![f32::NAN; Kernels::layer_norm_backward_scratch_len(dim, par.threads())];
    k.layer_norm_backward(
        dy,
        x,
        w,
        &fwd.mean,
        &fwd.rstd,
        &mut dx,
        &mut dw,
        &mut db,
        &mut scratch,
        par,
    );
    (dx, dw, db)
}

fn rms_forward(
    k: &Kernels,
    x: &[f32],
    w: &[f32],
    form: RmsNormForm,
    par: &dyn Parallel,
) -> (Vec<f32>, Vec<f32>) {
    let (mut y, mut rstd) = (vec![0.0; x.len()], vec![0.0; x.len() / w.len()]);
    k.rms_norm_forward(x, w, form, RMS_EPS, &mut y, &mut rstd, par);
    (y, rstd)
}

#[allow(clippy::too_many_arguments)]
fn rms_backward(
    k: &Kernels,
    dy: &[f32],
    x: &[f32],
    w: &[f32],
    form: RmsNormForm,
    rstd: &[f32],
    dw0: &[f32],
    par: &dyn Parallel,
) -> (Vec<f32>, Vec<f32>) {
    let mut dx = vec![f32::NAN; x.len()];
    let mut dw = dw0.to_vec();
    let mut scratch =
        vec![f32::NAN; Kernels::rms_norm_backward_scratch_len(w.len(), par.threads())];
    k.rms_norm_backward(dy, x, w, form, rstd, &mut dx, &mut dw, &mut scratch, par);
    (dx, dw)
}

fn odd_dims() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 17, 63, 65, 130])
}

fn forms() -> impl Strategy<Value = RmsNormForm> {
    prop::sample::select(vec![RmsNormForm::Weight, RmsNormForm::OnePlusWeight])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn layer_norm_forward_matches_f64(dim in odd_dims(), rows in 1usize..5, seed: u64) {
        let x = values(seed, rows * dim, 2.0);
        let w = values(seed ^ 1, dim, 1.5);
        let b = values(seed ^ 2, dim, 0.5);
        let (y, mean, rstd) = layer_norm_ref(&widen(&x), &widen(&w), &widen(&b), LN_EPS as f64);
        for k in every_isa() {
            let got = ln_forward(&k, &x, &w, &b, &Sequential);
            assert_close(&format!("{} y", k.isa()), &got.y, &y, 1e-5, 1e-5);
            assert_close(&format!("{} mean", k.isa()), &got.mean, &mean, 1e-6, 1e-5);
            assert_close(&format!("{} rstd", k.isa()), &got.rstd, &rstd, 0.0, 1e-5);
        }
    }

    #[test]
    fn rms_norm_forward_matches_f64(
        dim in odd_dims(), rows in 1usize..5, form in forms(), seed: u64,
    ) {
        let x = values(seed, rows * dim, 2.0);
        let w = values(seed ^ 1, dim, 1.5);
        let (y, rstd) = rms_norm_ref(&widen(&x), &widen(&w), form, RMS_EPS as f64);
        for k in every_isa() {
            let (got_y, got_rstd) = rms_forward(&k, &x, &w, form, &Sequential);
            assert_close(&format!("{} {form:?} y", k.isa()), &got_y, &y, 1e-5, 1e-5);
            assert_close(&format!("{} {form:?} rstd", k.isa()), &got_rstd, &rstd, 0.0, 1e-5);
        }
    }

    #[test]
    fn layer_norm_backward_matches_finite_differences(
        dim in prop::sample::select(vec![1usize, 2, 3, 17, 33]), rows in 1usize..4, seed: u64,
    ) {
        let x = values(seed, rows * dim, 2.0);
        let w = values(seed ^ 1, dim, 1.5);
        let b = values(seed ^ 2, dim, 0.5);
        let r = values(seed ^ 3, rows * dim, 1.0);
        let dw0 = values(seed ^ 4, dim, 1.0);
        let db0 = values(seed ^ 5, dim, 1.0);
        let (xd, wd, bd, rd) = (widen(&x), widen(&w), widen(&b), widen(&r));
        let eps = LN_EPS as f64;
        let loss = |x: &[f64], w: &[f64], b: &[f64]| dot(&layer_norm_ref(x, w, b, eps).0, &rd);
        let want_dx = finite_difference(&xd, fd_step(&xd, dim, true), |x| loss(x, &wd, &bd));
        let want_dw: Vec<f64> = finite_difference(&wd, 1e-4, |w| loss(&xd, w, &bd))
            .iter().zip(&dw0).map(|(g, &d0)| g + d0 as f64).collect();
        let want_db: Vec<f64> = finite_difference(&bd, 1e-4, |b| loss(&xd, &wd, b))
            .iter().zip(&db0).map(|(g, &d0)| g + d0 as f64).collect();
        for k in every_isa() {
            let fwd = ln_forward(&k, &x, &w, &b, &Sequential);
            let (dx, dw, db) = ln_backward(&k, &r, &x, &w, &fwd, &dw0, &db0, &Sequential);
            assert_close(&format!("{} dx", k.isa()), &dx, &want_dx, fd_tolerance(&want_dx), 1e-4);
            assert_close(&format!("{} d_weight", k.isa()), &dw, &want_dw, fd_tolerance(&want_dw), 1e-4);
            assert_close(&format!("{} d_bias", k.isa()), &db, &want_db, fd_tolerance(&want_db), 1e-4);
        }
    }

    #[test]
    fn rms_norm_backward_matches_finite_differences(
        dim in prop::sample::select(vec![1usize, 2, 3, 17, 33]),
        rows in 1usize..4,
        form in forms(),
        seed: u64,
    ) {
        let x = values(seed, rows * dim, 2.0);
        let w = values(seed ^ 1, dim, 1.5);
        let r = values(seed ^ 3, rows * dim, 1.0);
        let dw0 = values(seed ^ 4, dim, 1.0);
        let (xd, wd, rd) = (widen(&x), widen(&w), widen(&r));
        let eps = RMS_EPS as f64;
        let loss = |x: &[f64], w: &[f64]| dot(&rms_norm_ref(x, w, form, eps).0, &rd);
        let want_dx = finite_difference(&xd, fd_step(&xd, dim, false), |x| loss(x, &wd));
        let want_dw: Vec<f64> = finite_difference(&wd, 1e-4, |w| loss(&xd, w))
            .iter().zip(&dw0).map(|(g, &d0)| g + d0 as f64).collect();
        for k in every_isa() {
            let (_, rstd) = rms_forward(&k, &x, &w, form, &Sequential);
            let (dx, dw) = rms_backward(&k, &r, &x, &w, form, &rstd, &dw0, &Sequential);
            assert_close(&format!("{} {form:?} dx", k.isa()), &dx, &want_dx, fd_tolerance(&want_dx), 1e-4);
            assert_close(&format!("{} {form:?} d_weight", k.isa()), &dw, &want_dw, fd_tolerance(&want_dw), 1e-4);
        }
    }
}

/// Rows far from zero (mean 1000, spread 1): a one-pass `E[x²] − E[x]²` in f32 would lose every
/// digit of the variance; the two-pass variance keeps it.
#[test]
fn layer_norm_variance_is_accurate_for_rows_with_a_large_mean() {
    let (rows, dim) = (4, 96);
    let x: Vec<f32> = values(7, rows * dim, 1.0).iter().map(|v| 1000.0 + v).collect();
    let w = vec![1.0; dim];
    let b = vec![0.0; dim];
    let (y, mean, rstd) = layer_norm_ref(&widen(&x), &widen(&w), &widen(&b), LN_EPS as f64);
    for k in every_isa() {
        let got = ln_forward(&k, &x, &w, &b, &Sequential);
        assert_close(&format!("{} rstd", k.isa()), &got.rstd, &rstd, 0.0, 1e-4);
        assert_close(&format!("{} mean", k.isa()), &got.mean, &mean, 0.0, 1e-6);
        assert_close(&format!("{} y", k.isa()), &got.y, &y, 1e-3, 0.0);
    }
}

/// Gemma's form with a zero weight is a plain RMSNorm with unit gain; the Qwen form with a zero
/// weight is zero. Checks the offset against values known without a reference.
#[test]
fn rms_norm_forms_differ_by_one_in_the_weight() {
    let dim = 19;
    let x = values(11, 3 * dim, 1.0);
    let zero = vec![0.0; dim];
    let one = vec![1.0; dim];
    for k in every_isa() {
        let (gemma, _) = rms_forward(&k, &x, &zero, RmsNormForm::OnePlusWeight, &Sequential);
        let (qwen_one, _) = rms_forward(&k, &x, &one, RmsNormForm::Weight, &Sequential);
        assert_eq!(gemma, qwen_one, "{}", k.isa());
        let (qwen, _) = rms_forward(&k, &x, &zero, RmsNormForm::Weight, &Sequential);
        assert!(qwen.iter().all(|&v| v == 0.0), "{}", k.isa());
    }
}

/// Enough rows to split across three tasks: per-row outputs are bit-identical to a sequential
/// run; parameter gradients sum partials in a different order, so they agree to rounding.
#[test]
fn threaded_runs_match_sequential() {
    let (rows, dim) = (70, 513);
    let x = values(21, rows * dim, 2.0);
    let w = values(22, dim, 1.5);
    let b = values(23, dim, 0.5);
    let dy = values(24, rows * dim, 1.0);
    let dw0 = values(25, dim, 1.0);
    let db0 = values(26, dim, 1.0);
    for k in every_isa() {
        for threads in [2, 3] {
            let par = Counted::new(ScopedThreads(threads));
            let seq = ln_forward(&k, &x, &w, &b, &Sequential);
            let thr = ln_forward(&k, &x, &w, &b, &par);
            assert_eq!(seq.y, thr.y, "{} layer norm y", k.isa());
            assert_eq!(seq.mean, thr.mean);
            assert_eq!(seq.rstd, thr.rstd);
            let (dx_s, dw_s, db_s) = ln_backward(&k, &dy, &x, &w, &seq, &dw0, &db0, &Sequential);
            let (dx_t, dw_t, db_t) = ln_backward(&k, &dy, &x, &w, &seq, &dw0, &db0, &par);
            assert_eq!(dx_s, dx_t, "{} layer norm dx", k.isa());
            assert_close("layer norm d_weight", &dw_t, &widen(&dw_s), 1e-5, 1e-5);
            assert_close("layer norm d_bias", &db_t, &widen(&db_s), 1e-5, 1e-5);

            for form in [RmsNormForm::Weight, RmsNormForm::OnePlusWeight] {
                let (y_s, rstd_s) = rms_forward(&k, &x, &w, form, &Sequential);
                let (y_t, rstd_t) = rms_forward(&k, &x, &w, form, &par);
                assert_eq!(y_s, y_t, "{} rms {form:?} y", k.isa());
                assert_eq!(rstd_s, rstd_t);
                let (dx_s, dw_s) = rms_backward(&k, &dy, &x, &w, form, &rstd_s, &dw0, &Sequential);
                let (dx_t, dw_t) = rms_backward(&k, &dy, &x, &w, form, &rstd_s, &dw0, &par);
                assert_eq!(dx_s, dx_t, "{} rms {form:?} dx", k.isa());
                assert_close("rms d_weight", &dw_t, &widen(&dw_s), 1e-5, 1e-5);
            }
            assert_eq!(par.most_tasks(), threads, "the work was not split");
        }
    }
}

/// The backward accumulates into the parameter gradients: two calls give twice the gradient.
#[test]
fn parameter_gradients_accumulate() {
    let (rows, dim) = (5, 40);
    let x = values(31, rows * dim, 1.0);
    let w = values(32, dim, 1.0);
    let b = values(33, dim, 1.0);
    let dy = values(34, rows * dim, 1.0);
    let zero = vec![0.0; dim];
    for k in every_isa() {
        let fwd = ln_forward(&k, &x, &w, &b, &Sequential);
        let (_, dw1, db1) = ln_backward(&k, &dy, &x, &w, &fwd, &zero, &zero, &Sequential);
        let (_, dw2, db2) = ln_backward(&k, &dy, &x, &w, &fwd, &dw1, &db1, &Sequential);
        let doubled = |v: &[f32]| v.iter().map(|&g| 2.0 * g).collect::<Vec<_>>();
        assert_eq!(dw2, doubled(&dw1));
        assert_eq!(db2, doubled(&db1));
    }
}

#[test]
#[should_panic(expected = "layer_norm_forward: bias has 767 elements, dim is 768")]
fn layer_norm_rejects_a_short_bias() {
    let (x, w, b) = (vec![0.0; 768], vec![1.0; 768], vec![0.0; 767]);
    let (mut y, mut mean, mut rstd) = (vec![0.0; 768], vec![0.0; 1], vec![0.0; 1]);
    Kernels::best().layer_norm_forward(&x, &w, &b, 1e-5, &mut y, &mut mean, &mut rstd, &Sequential);
}

#[test]
#[should_panic(expected = "layer_norm_forward: x has 100 elements, not a multiple of dim 64")]
fn layer_norm_rejects_partial_rows() {
    let (x, w, b) = (vec![0.0; 100], vec![1.0; 64], vec![0.0; 64]);
    let (mut y, mut mean, mut rstd) = (vec![0.0; 100], vec![0.0; 1], vec![0.0; 1]);
    Kernels::best().layer_norm_forward(&x, &w, &b, 1e-5, &mut y, &mut mean, &mut rstd, &Sequential);
}

#[test]
#[should_panic(
    expected = "layer_norm_backward: scratch has 10 floats, needs 256 for dim 64 on 2 threads"
)]
fn layer_norm_backward_rejects_short_scratch() {
    let (dy, x, w) = (vec![0.0; 128], vec![0.0; 128], vec![1.0; 64]);
    let (mean, rstd) = (vec![0.0; 2], vec![1.0; 2]);
    let (mut dx, mut dw, mut db, mut scratch) =
        (vec![0.0; 128], vec![0.0; 64], vec![0.0; 64], vec![0.0; 10]);
    Kernels::best().layer_norm_backward(
        &dy,
        &x,
        &w,
        &mean,
        &rstd,
        &mut dx,
        &mut dw,
        &mut db,
        &mut scratch,
        &ScopedThreads(2),
    );
}

#[test]
#[should_panic(expected = "rms_norm_forward: rstd has 3 elements, the row count is 2")]
fn rms_norm_rejects_wrong_statistics() {
    let (x, w) = (vec![0.0; 8], vec![1.0; 4]);
    let (mut y, mut rstd) = (vec![0.0; 8], vec![0.0; 3]);
    Kernels::best().rms_norm_forward(
        &x,
        &w,
        RmsNormForm::Weight,
        1e-6,
        &mut y,
        &mut rstd,
        &Sequential,
    );
}

#[test]
#[should_panic(expected = "rms_norm_backward: d_weight has 5 elements, dim is 4")]
fn rms_norm_backward_rejects_wrong_gradient() {
    let (dy, x, w, rstd) = (vec![0.0; 8], vec![0.0; 8], vec![1.0; 4], vec![1.0; 2]);
    let (mut dx, mut dw, mut scratch) = (vec![0.0; 8], vec![0.0; 5], vec![0.0; 4]);
    Kernels::best().rms_norm_backward(
        &dy,
        &x,
        &w,
        RmsNormForm::OnePlusWeight,
        &rstd,
        &mut dx,
        &mut dw,
        &mut scratch,
        &Sequential,
    );
}

/// Absolute tolerance for a gradient checked against central differences: the differences'
/// own truncation error grows with the curvature (large when a row's norm is small, as with
/// one or two elements near zero), so it is relative to the gradient's largest entry. A wrong
/// formula is off by the order of that entry itself.
fn fd_tolerance(want: &[f64]) -> f64 {
    2e-5 + 3e-4 * want.iter().fold(0.0f64, |m, v| m.max(v.abs()))
}

/// A central-difference step for `x` small against its smallest row scale (the row's standard
/// deviation when `centered`, its root mean square otherwise), so the truncation error stays
/// small even for a row that happens to lie close to zero.
fn fd_step(x: &[f64], dim: usize, centered: bool) -> f64 {
    let scale = x
        .chunks_exact(dim)
        .map(|row| {
            let c = if centered { row.iter().sum::<f64>() / dim as f64 } else { 0.0 };
            (row.iter().map(|v| (v - c) * (v - c)).sum::<f64>() / dim as f64).sqrt()
        })
        .fold(f64::INFINITY, f64::min);
    (1e-3 * scale).clamp(1e-7, 1e-4)
}
