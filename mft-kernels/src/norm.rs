//! Normalization layers over the last dimension, forward and backward: LayerNorm (GPT-2) and
//! RMSNorm in its two forms (Qwen 2.5: `x·rstd·w`; Gemma 3: `x·rstd·(1 + w)`).
//!
//! Every row `x` of `dim` elements is normalized on its own; statistics are computed in f32.
//!
//! # LayerNorm
//! Forward, with a two-pass mean and (biased, as PyTorch's) variance:
//! `μ = Σx/n`, `σ² = Σ(x − μ)²/n`, `rstd = 1/√(σ² + ε)`, `x̂ = (x − μ)·rstd`, `y = x̂·w + b`.
//! `μ` and `rstd` are saved per row for the backward.
//!
//! Backward, with `g = dy·w`:
//! `dx = rstd·(g − mean(g) − x̂·mean(g·x̂))`, `dw += Σ_rows dy·x̂`, `db += Σ_rows dy`.
//!
//! # RMSNorm
//! Forward: `rstd = 1/√(Σx²/n + ε)`, `x̂ = x·rstd`, `y = x̂·w'` where `w' = w`
//! ([`RmsNormForm::Weight`]) or `w' = 1 + w` ([`RmsNormForm::OnePlusWeight`]); `rstd` is saved.
//!
//! Backward, with `g = dy·w'`: `dx = rstd·(g − x̂·mean(g·x̂))`, `dw += Σ_rows dy·x̂` (in both
//! forms, since `∂w'/∂w = 1`).
//!
//! Input gradients are written; parameter gradients are accumulated, each task into a partial
//! of the caller's scratch, as described in [`crate::bias`].

use crate::kernels::Kernels;
use crate::math::{LANES, dot, sum};
use crate::parallel::{Parallel, SharedSlice, for_each_range};
use crate::parallel::{add_partials, for_each_range_with_partials, min_rows_per_task};

/// Which RMSNorm: how the learned weight scales the normalized row.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RmsNormForm {
    /// `y = x·rstd·w` (Qwen 2.5, Llama).
    Weight,
    /// `y = x·rstd·(1 + w)` (Gemma 3: the weight is stored as an offset from one).
    OnePlusWeight,
}

impl RmsNormForm {
    /// What is added to the stored weight to get the factor `w'`.
    fn offset(self) -> f32 {
        match self {
            RmsNormForm::Weight => 0.0,
            RmsNormForm::OnePlusWeight => 1.0,
        }
    }
}

/// `Σ f(x[i])` with [`LANES`] independent partial sums (so the loop vectorizes).
#[inline(always)]
fn sum_map(x: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += f(v);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += f(v);
    }
    acc.iter().sum()
}

/// The two sums `Σ f(a[i], b[i], c[i])` (over the length of `a`) with [`LANES`] independent
/// partial sums each.
#[inline(always)]
fn sum2_map3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> [f32; 2]) -> [f32; 2] {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let mut acc0 = [0.0f32; LANES];
    let mut acc1 = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    let mut cc = c.chunks_exact(LANES);
    for ((xa, xb), xc) in (&mut ca).zip(&mut cb).zip(&mut cc) {
        for l in 0..LANES {
            let [s0, s1] = f(xa[l], xb[l], xc[l]);
            acc0[l] += s0;
            acc1[l] += s1;
        }
    }
    let rest = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder());
    for ((a0, a1), ((&va, &vb), &vc)) in acc0.iter_mut().zip(acc1.iter_mut()).zip(rest) {
        let [s0, s1] = f(va, vb, vc);
        *a0 += s0;
        *a1 += s1;
    }
    [acc0.iter().sum(), acc1.iter().sum()]
}

/// `Σ f(a[i], b[i], c[i])` (over the length of `a`) with [`LANES`] independent partial sums.
#[inline(always)]
fn sum_map3(a: &[f32], b: &[f32], c: &[f32], f: impl Fn(f32, f32, f32) -> f32) -> f32 {
    let n = a.len();
    let (b, c) = (&b[..n], &c[..n]);
    let mut acc = [0.0f32; LANES];
    let mut ca = a.chunks_exact(LANES);
    let mut cb = b.chunks_exact(LANES);
    let mut cc = c.chunks_exact(LANES);
    for ((xa, xb), xc) in (&mut ca).zip(&mut cb).zip(&mut cc) {
        for l in 0..LANES {
            acc[l] += f(xa[l], xb[l], xc[l]);
        }
    }
    let rest = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder());
    for (a, ((&va, &vb), &vc)) in acc.iter_mut().zip(rest) {
        *a += f(va, vb, vc);
    }
    acc.iter().sum()
}

/// LayerNorm forward over the rows of `x` (`weight.len()` columns each).
#[inline(always)]
fn layer_norm_rows(
    x: &[f32],
    weight: &[f32],
    bias: &[f32],
    eps: f32,
    y: &mut [f32],
    mean: &mut [f32],
    rstd: &mut [f32],
) {
    let dim = weight.len();
    let bias = &bias[..dim];
    let n = dim as f32;
    let rows = x.chunks_exact(dim).zip(y.chunks_exact_mut(dim));
    for (((x, y), mean), rstd) in rows.zip(mean.iter_mut()).zip(rstd.iter_mut()) {
        let mu = sum(x) / n;
        let var = sum_map(x, |v| (v - mu) * (v - mu)) / n;
        let r = 1.0 / libm::sqrtf(var + eps);
        for (((y, &x), &w), &b) in y.iter_mut().zip(x).zip(weight).zip(bias) {
            *y = (x - mu) * r * w + b;
        }
        *mean = mu;
        *rstd = r;
    }
}

/// LayerNorm backward over the rows of `dy`: writes `dx`, adds the rows' `dy·x̂` and `dy` into
/// `partial[..dim]` and `partial[dim..]`.
#[inline(always)]
fn layer_norm_backward_rows(
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    mean: &[f32],
    rstd: &[f32],
    dx: &mut [f32],
    partial: &mut [f32],
) {
    let dim = weight.len();
    let (dw, db) = partial.split_at_mut(dim);
    let n = dim as f32;
    let rows = dy.chunks_exact(dim).zip(x.chunks_exact(dim)).zip(dx.chunks_exact_mut(dim));
    for (((dy, x), dx), (&mu, &r)) in rows.zip(mean.iter().zip(rstd)) {
        let [sum_g, sum_gx] = sum2_map3(dy, weight, x, |dy, w, x| {
            let g = dy * w;
            [g, g * ((x - mu) * r)]
        });
        let (mean_g, mean_gx) = (sum_g / n, sum_gx / n);
        let params = dw.iter_mut().zip(db.iter_mut());
        for ((((dx, &dy), &x), &w), (dw, db)) in
            dx.iter_mut().zip(dy).zip(x).zip(weight).zip(params)
        {
            let xhat = (x - mu) * r;
            *dx = r * (dy * w - mean_g - xhat * mean_gx);
            *dw += dy * xhat;
            *db += dy;
        }
    }
}

/// RMSNorm forward over the rows of `x`; `offset` is added to the weight (0 or 1).
#[inline(always)]
fn rms_norm_rows(
    x: &[f32],
    weight: &[f32],
    offset: f32,
    eps: f32,
    y: &mut [f32],
    rstd: &mut [f32],
) {
    let dim = weight.len();
    let n = dim as f32;
    for ((x, y), rstd) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)).zip(rstd.iter_mut()) {
        let r = 1.0 / libm::sqrtf(dot(x, x) / n + eps);
        for ((y, &x), &w) in y.iter_mut().zip(x).zip(weight) {
            *y = (x * r) * (offset + w);
        }
        *rstd = r;
    }
}

/// RMSNorm backward over the rows of `dy`: writes `dx`, adds the rows' `dy·x̂` into `dw`.
#[inline(always)]
fn rms_norm_backward_rows(
    dy: &[f32],
    x: &[f32],
    weight: &[f32],
    offset: f32,
    rstd: &[f32],
    dx: &mut [f32],
    dw: &mut [f32],
) {
    let dim = weight.len();
    let n = dim as f32;
    let rows = dy.chunks_exact(dim).zip(x.chunks_exact(dim)).zip(dx.chunks_exact_mut(dim));
    for (((dy, x), dx), &r) in rows.zip(rstd) {
        // Σ g·x̂ = rstd·Σ dy·w'·x.
        let sum_gx = sum_map3(dy, weight, x, |dy, w, x| dy * (offset + w) * x);
        let mean_gx = sum_gx * r / n;
        for ((((dx, &dy), &x), &w), dw) in
            dx.iter_mut().zip(dy).zip(x).zip(weight).zip(dw.iter_mut())
        {
            let xhat = x * r;
            *dx = r * (dy * (offset + w) - xhat * mean_gx);
            *dw += dy * xhat;
        }
    }
}

/// Checks that `len` is a whole number of rows of `dim` and returns the row count.
fn rows_of(what: &str, operand: &str, len: usize, dim: usize) -> usize {
    assert!(dim > 0, "{what}: dim is 0");
    assert!(
        len.is_multiple_of(dim),
        "{what}: {operand} has {len} elements, not a multiple of dim {dim}"
    );
    len / dim
}

/// Checks that an operand has the expected number of elements.
fn check_len(what: &str, operand: &str, len: usize, expected: usize, of: &str) {
    assert!(len == expected, "{what}: {operand} has {len} elements, {of} is {expected}");
}

impl Kernels {
    /// LayerNorm forward: `y = (x − μ)·rstd·weight + bias` over rows of `dim = weight.len()`,
    /// saving each row's `mean` (μ) and `rstd` (`1/√(σ² + eps)`, σ² the biased variance).
    ///
    /// # Panics
    /// If `dim` is 0, `x.len()` is not a multiple of it, or `bias`, `y`, `mean`, `rstd` do not
    /// match (`dim`, `x.len()`, rows, rows elements).
    #[allow(clippy::too_many_arguments)] // operands, saved statistics and threads, as in llm.c
    pub fn layer_norm_forward(
        &self,
        x: &[f32],
        weight: &[f32],
        bias: &[f32],
        eps: f32,
        y: &mut [f32],
        mean: &mut [f32],
        rstd: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "layer_norm_forward";
        let dim = weight.len();
        let rows = rows_of(WHAT, "x", x.len(), dim);
        check_len(WHAT, "bias", bias.len(), dim, "dim");
        check_len(WHAT, "y", y.len(), x.len(), "x's length");
        check_len(WHAT, "mean", mean.len(), rows, "the row count");
        check_len(WHAT, "rstd", rstd.len(), rows, "the row count");
        let (y, mean, rstd) = (SharedSlice::new(y), SharedSlice::new(mean), SharedSlice::new(rstd));
        for_each_range(parallel, rows, min_rows_per_task(dim), |range| {
            let x = &x[range.start * dim..range.end * dim];
            // SAFETY: the ranges of one run are disjoint, so are their rows and statistics.
            let (y, mean, rstd) = unsafe {
                (
                    y.part(range.start * dim..range.end * dim),
                    mean.part(range.clone()),
                    rstd.part(range.clone()),
                )
            };
            crate::vectorize::vectorized!(
                self.isa(),
                layer_norm_rows(x, weight, bias, eps, y, mean, rstd)
            );
        });
    }

    /// LayerNorm backward: writes `dx` and accumulates `d_weight += Σ dy·x̂`,
    /// `d_bias += Σ dy`, from the forward's input `x` and saved `mean` and `rstd`.
    ///
    /// `scratch` holds per-task partial sums: at least
    /// [`Kernels::layer_norm_backward_scratch_len`]`(dim, parallel.threads())` floats. `dx` does
    /// not depend on the thread count; the parameter gradients agree to rounding across thread
    /// counts (the summation order over rows differs).
    ///
    /// # Panics
    /// If any operand does not match `dim = weight.len()` and the rows of `dy`, or `scratch` is
    /// too short.
    #[allow(clippy::too_many_arguments)] // operands, saved statistics, gradients and scratch
    pub fn layer_norm_backward(
        &self,
        dy: &[f32],
        x: &[f32],
        weight: &[f32],
        mean: &[f32],
        rstd: &[f32],
        dx: &mut [f32],
        d_weight: &mut [f32],
        d_bias: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "layer_norm_backward";
        let dim = weight.len();
        let rows = rows_of(WHAT, "dy", dy.len(), dim);
        check_len(WHAT, "x", x.len(), dy.len(), "dy's length");
        check_len(WHAT, "dx", dx.len(), dy.len(), "dy's length");
        check_len(WHAT, "mean", mean.len(), rows, "the row count");
        check_len(WHAT, "rstd", rstd.len(), rows, "the row count");
        check_len(WHAT, "d_weight", d_weight.len(), dim, "dim");
        check_len(WHAT, "d_bias", d_bias.len(), dim, "dim");
        let threads = parallel.threads();
        let needed = Kernels::layer_norm_backward_scratch_len(dim, threads);
        assert!(
            scratch.len() >= needed,
            "{WHAT}: scratch has {} floats, needs {needed} for dim {dim} on {threads} threads",
            scratch.len()
        );
        let dx = SharedSlice::new(dx);
        let parts = for_each_range_with_partials(
            parallel,
            rows,
            min_rows_per_task(dim),
            2 * dim,
            scratch,
            |range, partial| {
                let span = range.start * dim..range.end * dim;
                let (dy, x) = (&dy[span.clone()], &x[span.clone()]);
                let (mean, rstd) = (&mean[range.clone()], &rstd[range]);
                // SAFETY: the row ranges of one run are disjoint, so are their rows of dx.
                let dx = unsafe { dx.part(span) };
                crate::vectorize::vectorized!(self.isa(), {
                    layer_norm_backward_rows(dy, x, weight, mean, rstd, dx, partial)
                });
            },
        );
        crate::vectorize::vectorized!(self.isa(), {
            add_partials(scratch, parts, 2 * dim, 0, d_weight);
            add_partials(scratch, parts, 2 * dim, dim, d_bias);
        });
    }

    /// Floats of scratch [`Kernels::layer_norm_backward`] needs for rows of `dim` on `threads`
    /// threads: the weight and bias partial sums of each task.
    pub fn layer_norm_backward_scratch_len(dim: usize, threads: usize) -> usize {
        threads.max(1) * 2 * dim
    }

    /// RMSNorm forward: `y = x·rstd·w'` over rows of `dim = weight.len()`, with `w' = weight`
    /// or `1 + weight` by `form`, saving each row's `rstd = 1/√(Σx²/dim + eps)`.
    ///
    /// # Panics
    /// If `dim` is 0, `x.len()` is not a multiple of it, or `y`, `rstd` do not match.
    #[allow(clippy::too_many_arguments)] // operands, form, saved statistics and threads
    pub fn rms_norm_forward(
        &self,
        x: &[f32],
        weight: &[f32],
        form: RmsNormForm,
        eps: f32,
        y: &mut [f32],
        rstd: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "rms_norm_forward";
        let dim = weight.len();
        let rows = rows_of(WHAT, "x", x.len(), dim);
        check_len(WHAT, "y", y.len(), x.len(), "x's length");
        check_len(WHAT, "rstd", rstd.len(), rows, "the row count");
        let offset = form.offset();
        let (y, rstd) = (SharedSlice::new(y), SharedSlice::new(rstd));
        for_each_range(parallel, rows, min_rows_per_task(dim), |range| {
            let x = &x[range.start * dim..range.end * dim];
            // SAFETY: the ranges of one run are disjoint, so are their rows and statistics.
            let (y, rstd) =
                unsafe { (y.part(range.start * dim..range.end * dim), rstd.part(range.clone())) };
            crate::vectorize::vectorized!(
                self.isa(),
                rms_norm_rows(x, weight, offset, eps, y, rstd)
            );
        });
    }

    /// RMSNorm backward: writes `dx` and accumulates `d_weight += Σ dy·x̂` from the forward's
    /// input `x` and saved `rstd`.
    ///
    /// `scratch` holds per-task partial sums: at least
    /// [`Kernels::rms_norm_backward_scratch_len`]`(dim, parallel.threads())` floats. `dx` does
    /// not depend on the thread count; `d_weight` agrees to rounding across thread counts.
    ///
    /// # Panics
    /// If any operand does not match `dim = weight.len()` and the rows of `dy`, or `scratch` is
    /// too short.
    #[allow(clippy::too_many_arguments)] // operands, form, saved statistics, gradients, scratch
    pub fn rms_norm_backward(
        &self,
        dy: &[f32],
        x: &[f32],
        weight: &[f32],
        form: RmsNormForm,
        rstd: &[f32],
        dx: &mut [f32],
        d_weight: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "rms_norm_backward";
        let dim = weight.len();
        let rows = rows_of(WHAT, "dy", dy.len(), dim);
        check_len(WHAT, "x", x.len(), dy.len(), "dy's length");
        check_len(WHAT, "dx", dx.len(), dy.len(), "dy's length");
        check_len(WHAT, "rstd", rstd.len(), rows, "the row count");
        check_len(WHAT, "d_weight", d_weight.len(), dim, "dim");
        let threads = parallel.threads();
        let needed = Kernels::rms_norm_backward_scratch_len(dim, threads);
        assert!(
            scratch.len() >= needed,
            "{WHAT}: scratch has {} floats, needs {needed} for dim {dim} on {threads} threads",
            scratch.len()
        );
        let offset = form.offset();
        let dx = SharedSlice::new(dx);
        let parts = for_each_range_with_partials(
            parallel,
            rows,
            min_rows_per_task(dim),
            dim,
            scratch,
            |range, partial| {
                let span = range.start * dim..range.end * dim;
                let (dy, x, rstd) = (&dy[span.clone()], &x[span.clone()], &rstd[range]);
                // SAFETY: the row ranges of one run are disjoint, so are their rows of dx.
                let dx = unsafe { dx.part(span) };
                crate::vectorize::vectorized!(self.isa(), {
                    rms_norm_backward_rows(dy, x, weight, offset, rstd, dx, partial)
                });
            },
        );
        crate::vectorize::vectorized!(self.isa(), add_partials(scratch, parts, dim, 0, d_weight));
    }

    /// Floats of scratch [`Kernels::rms_norm_backward`] needs for rows of `dim` on `threads`
    /// threads: the weight partial sums of each task.
    pub fn rms_norm_backward_scratch_len(dim: usize, threads: usize) -> usize {
        threads.max(1) * dim
    }
}
