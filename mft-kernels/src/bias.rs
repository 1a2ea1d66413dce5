//! Bias add and its gradient.
//!
//! For `x` of `rows × n` and a bias `b` of `n`:
//! - forward (in place): `x[r][j] += b[j]`;
//! - backward: the input gradient is `dy` itself (nothing to compute), and the bias gradient is
//!   the column sum `d_b[j] += Σ_r dy[r][j]`.
//!
//! The bias gradient sums over rows split across tasks through per-task partials (see
//! [`crate::parallel`]); scratch is `threads · n` floats ([`Kernels::bias_add_backward_scratch_len`]).

use crate::kernels::Kernels;
use crate::parallel::{
    Parallel, SharedSlice, add_partials, for_each_range, for_each_range_with_partials,
    min_rows_per_task,
};

/// `partial[j] += Σ_r dy[r][j]` over the rows of `dy` (`dim` columns each).
#[inline(always)]
fn column_sums(dy: &[f32], dim: usize, partial: &mut [f32]) {
    for row in dy.chunks_exact(dim) {
        for (p, v) in partial.iter_mut().zip(row) {
            *p += v;
        }
    }
}

/// `x[r][j] += bias[j]` for each row.
#[inline(always)]
fn add_bias_rows(x: &mut [f32], bias: &[f32]) {
    for row in x.chunks_exact_mut(bias.len()) {
        for (v, b) in row.iter_mut().zip(bias) {
            *v += b;
        }
    }
}

impl Kernels {
    /// `x[r][j] += bias[j]`, in place, for `x` of `rows × bias.len()`.
    ///
    /// # Panics
    /// If `bias` is empty while `x` is not, or `x.len()` is not a multiple of `bias.len()`.
    pub fn bias_add_forward(&self, x: &mut [f32], bias: &[f32], parallel: &dyn Parallel) {
        let dim = bias.len();
        assert!(
            dim > 0 || x.is_empty(),
            "bias_add_forward: bias is empty, x has {} elements",
            x.len()
        );
        if x.is_empty() {
            return;
        }
        assert!(
            x.len().is_multiple_of(dim),
            "bias_add_forward: x has {} elements, not a multiple of the bias length {dim}",
            x.len()
        );
        let rows = x.len() / dim;
        let x = SharedSlice::new(x);
        for_each_range(parallel, rows, min_rows_per_task(dim), |range| {
            // SAFETY: the ranges of one run are disjoint, so are their rows.
            let x = unsafe { x.part(range.start * dim..range.end * dim) };
            crate::vectorize::vectorized!(self.isa(), add_bias_rows(x, bias));
        });
    }

    /// The bias gradient: `d_bias[j] += Σ_r dy[r][j]` for `dy` of `rows × d_bias.len()` (the
    /// input gradient of a bias add is `dy` itself).
    ///
    /// `scratch` holds the per-task partial sums: at least
    /// [`Kernels::bias_add_backward_scratch_len`]`(d_bias.len(), parallel.threads())` floats.
    /// Results with different thread counts agree to rounding (the summation order differs).
    ///
    /// # Panics
    /// If `d_bias` is empty while `dy` is not, `dy.len()` is not a multiple of `d_bias.len()`,
    /// or `scratch` is too short.
    pub fn bias_add_backward(
        &self,
        dy: &[f32],
        d_bias: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        let dim = d_bias.len();
        assert!(
            dim > 0 || dy.is_empty(),
            "bias_add_backward: d_bias is empty, dy has {} elements",
            dy.len()
        );
        if dy.is_empty() {
            return;
        }
        assert!(
            dy.len().is_multiple_of(dim),
            "bias_add_backward: dy has {} elements, not a multiple of the bias length {dim}",
            dy.len()
        );
        let threads = parallel.threads();
        let needed = Kernels::bias_add_backward_scratch_len(dim, threads);
        assert!(
            scratch.len() >= needed,
            "bias_add_backward: scratch has {} floats, needs {needed} for {dim} columns on \
             {threads} threads",
            scratch.len()
        );
        let rows = dy.len() / dim;
        let parts = for_each_range_with_partials(
            parallel,
            rows,
            min_rows_per_task(dim),
            dim,
            scratch,
            |range, partial| {
                let dy = &dy[range.start * dim..range.end * dim];
                crate::vectorize::vectorized!(self.isa(), column_sums(dy, dim, partial));
            },
        );
        crate::vectorize::vectorized!(self.isa(), add_partials(scratch, parts, dim, 0, d_bias));
    }

    /// Floats of scratch [`Kernels::bias_add_backward`] needs for a bias of `dim` on `threads`
    /// threads: one partial column sum per task.
    pub fn bias_add_backward_scratch_len(dim: usize, threads: usize) -> usize {
        threads.max(1) * dim
    }
}
