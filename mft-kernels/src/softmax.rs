//! Softmax over the rows of a matrix, forward and backward.
//!
//! Forward, per row, stabilized by the row maximum `m = max x`:
//! `y[i] = e^(x[i] − m) / Σ_j e^(x[j] − m)`. A row whose elements are all −∞ (fully masked) gives
//! all zeros rather than NaN.
//!
//! Backward, from the forward's output `y`: `dx[i] = y[i]·(dy[i] − Σ_j y[j]·dy[j])`.
//!
//! Rows are independent, so results do not depend on the thread count.

use crate::kernels::Kernels;
use crate::math::{dot, exp, max, sum};
use crate::parallel::min_rows_per_task;
use crate::parallel::{Parallel, SharedSlice, for_each_range};

/// Softmax of each row of `x` (`dim` columns) into `y`.
#[inline(always)]
fn softmax_rows(x: &[f32], dim: usize, y: &mut [f32]) {
    for (x, y) in x.chunks_exact(dim).zip(y.chunks_exact_mut(dim)) {
        let m = max(x);
        // All −∞ (or empty): subtract 0 instead, so every e^(x − m) is 0 and the row becomes 0.
        let m = if m == f32::NEG_INFINITY { 0.0 } else { m };
        for (y, &x) in y.iter_mut().zip(x) {
            *y = exp(x - m);
        }
        let total = sum(y);
        let scale = if total == 0.0 { 0.0 } else { 1.0 / total };
        for y in y.iter_mut() {
            *y *= scale;
        }
    }
}

/// Softmax backward of each row (`dim` columns).
#[inline(always)]
fn softmax_backward_rows(dy: &[f32], y: &[f32], dim: usize, dx: &mut [f32]) {
    for ((dy, y), dx) in dy.chunks_exact(dim).zip(y.chunks_exact(dim)).zip(dx.chunks_exact_mut(dim))
    {
        let inner = dot(y, dy);
        for ((dx, &dy), &y) in dx.iter_mut().zip(dy).zip(y) {
            *dx = y * (dy - inner);
        }
    }
}

impl Kernels {
    /// `y = softmax(x)` over each row of `dim` elements (`x.len() / dim` rows).
    ///
    /// # Panics
    /// If `dim` is 0, `x.len()` is not a multiple of `dim`, or `y` differs in length from `x`.
    pub fn softmax_forward(&self, x: &[f32], dim: usize, y: &mut [f32], parallel: &dyn Parallel) {
        const WHAT: &str = "softmax_forward";
        assert!(dim > 0, "{WHAT}: dim is 0");
        assert!(
            x.len().is_multiple_of(dim),
            "{WHAT}: x has {} elements, not a multiple of dim {dim}",
            x.len()
        );
        assert!(y.len() == x.len(), "{WHAT}: y has {} elements, x has {}", y.len(), x.len());
        let y = SharedSlice::new(y);
        for_each_range(parallel, x.len() / dim, min_rows_per_task(dim), |rows| {
            let span = rows.start * dim..rows.end * dim;
            // SAFETY: the row ranges of one run are disjoint.
            let y = unsafe { y.part(span.clone()) };
            let x = &x[span];
            crate::vectorize::vectorized!(self.isa(), softmax_rows(x, dim, y));
        });
    }

    /// `dx = y·(dy − Σ y·dy)` per row of `dim` elements, from the forward's output `y`.
    ///
    /// # Panics
    /// If `dim` is 0, `dy.len()` is not a multiple of `dim`, or `y` or `dx` differ in length
    /// from `dy`.
    pub fn softmax_backward(
        &self,
        dy: &[f32],
        y: &[f32],
        dim: usize,
        dx: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "softmax_backward";
        assert!(dim > 0, "{WHAT}: dim is 0");
        assert!(
            dy.len().is_multiple_of(dim),
            "{WHAT}: dy has {} elements, not a multiple of dim {dim}",
            dy.len()
        );
        assert!(y.len() == dy.len(), "{WHAT}: y has {} elements, dy has {}", y.len(), dy.len());
        assert!(dx.len() == dy.len(), "{WHAT}: dx has {} elements, dy has {}", dx.len(), dy.len());
        let dx = SharedSlice::new(dx);
        for_each_range(parallel, dy.len() / dim, min_rows_per_task(dim), |rows| {
            let span = rows.start * dim..rows.end * dim;
            // SAFETY: the row ranges of one run are disjoint.
            let dx = unsafe { dx.part(span.clone()) };
            let (dy, y) = (&dy[span.clone()], &y[span]);
            crate::vectorize::vectorized!(self.isa(), softmax_backward_rows(dy, y, dim, dx));
        });
    }
}
