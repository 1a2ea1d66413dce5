//! Bias add and its gradient, and the row splitting shared by every row-wise kernel: how many
//! rows make a task, and per-task partial column sums for parameter gradients.
//!
//! For `x` of `rows × n` and a bias `b` of `n`:
//! - forward (in place): `x[r][j] += b[j]`;
//! - backward: the input gradient is `dy` itself (nothing to compute), and the bias gradient is
//!   the column sum `d_b[j] += Σ_r dy[r][j]`.
//!
//! # Reductions across rows
//! A parameter gradient (a bias, a norm weight) sums over every row, and the rows are split
//! across tasks. Each task sums its rows into its own zeroed *partial* of the caller's scratch;
//! the partials are then added into the gradient in task order. No two tasks write the same
//! memory, and the result depends on how many tasks there were (the summation order changes the
//! rounding), never on how they were scheduled. Scratch is `threads · width` floats for a
//! gradient of `width` columns (see [`Kernels::bias_add_backward_scratch_len`]).

use crate::kernels::Kernels;
use crate::parallel::{Parallel, SharedSlice, for_each_range};
use core::ops::Range;

/// Elements a task should have at least: below this, handing work to another thread costs
/// about as much as doing it (these loops run at several floats per nanosecond).
pub(crate) const MIN_TASK_ELEMENTS: usize = 16 * 1024;

/// Rows of `row_len` elements a task should have at least (one or more).
pub(crate) fn min_rows_per_task(row_len: usize) -> usize {
    (MIN_TASK_ELEMENTS / row_len.max(1)).max(1)
}

/// `rows` split into `(parts, rows_per_part)`, the way [`for_each_range`] splits them: at most
/// `threads` parts of at least `min_rows` rows (one part when `rows` is small).
fn split_rows(threads: usize, rows: usize, min_rows: usize) -> (usize, usize) {
    if rows == 0 {
        return (0, 0);
    }
    let parts = threads.max(1).min(rows.div_ceil(min_rows.max(1)));
    let per_part = rows.div_ceil(parts);
    (rows.div_ceil(per_part), per_part)
}

/// Splits `0..rows` into tasks of at least `min_rows` rows and runs `task(rows, partial)` on
/// each, where `partial` is the task's own zeroed `width` floats of `scratch`. Returns how many
/// partials were written (at most `parallel.threads()`), for [`add_partials`].
///
/// The caller has checked that `scratch` holds `parallel.threads().max(1) · width` floats.
pub(crate) fn for_each_range_with_partials(
    parallel: &dyn Parallel,
    rows: usize,
    min_rows: usize,
    width: usize,
    scratch: &mut [f32],
    task: impl Fn(Range<usize>, &mut [f32]) + Sync,
) -> usize {
    let (parts, per_part) = split_rows(parallel.threads(), rows, min_rows);
    let partials = SharedSlice::new(&mut scratch[..parts * width]);
    let run_part = |p: usize| {
        // SAFETY: task `p` takes only partial `p`; the partials of different tasks are disjoint.
        let partial = unsafe { partials.part(p * width..(p + 1) * width) };
        partial.fill(0.0);
        task(p * per_part..rows.min((p + 1) * per_part), partial);
    };
    match parts {
        0 => {}
        1 => run_part(0),
        _ => parallel.run(parts, &run_part),
    }
    parts
}

/// `out[j] += Σ_p partials[p·stride + offset + j]` for the first `parts` partials, in order.
#[inline(always)]
pub(crate) fn add_partials(
    partials: &[f32],
    parts: usize,
    stride: usize,
    offset: usize,
    out: &mut [f32],
) {
    for p in 0..parts {
        let partial = &partials[p * stride + offset..][..out.len()];
        for (o, v) in out.iter_mut().zip(partial) {
            *o += v;
        }
    }
}

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
