//! Embedding lookup (forward) and its scatter-add (backward).
//!
//! A table holds `vocab` rows of `dim` elements, in f32, f16 or bf16 (a frozen table may stay in
//! half precision; rows are widened to f32 as they are read). For token ids `t` (one per output
//! row) and a scale `s`:
//! - forward: `out[r] = s·table[t[r]]`, or `out[r] += s·table[t[r]]` with
//!   [`WriteMode::Accumulate`] (GPT-2 adds position embeddings to token embeddings; Gemma 3
//!   scales by `√hidden`, which callers should round from f64 to f32 as Hugging Face does);
//! - backward: `d_table[t[r]] += s·dy[r]` for every row `r`, into an f32 gradient table. Rows
//!   that share an id add up, in row order.
//!
//! The forward splits rows across threads. The backward splits the `dim` columns instead: each
//! task adds its columns of every row, so repeated ids never race, and every column is summed
//! in row order whatever the thread count (results are identical for any thread count).

use crate::kernels::Kernels;
use crate::parallel::{MIN_TASK_ELEMENTS, min_rows_per_task};
use crate::parallel::{Parallel, SharedSlice, for_each_range};
use mft_core::Element;

/// Whether a kernel overwrites its output or adds to it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteMode {
    /// `out = result`.
    Overwrite,
    /// `out += result`.
    Accumulate,
}

/// Fewest columns a backward task takes, so each touches whole cache lines of every row.
const MIN_BACKWARD_COLUMNS: usize = 64;

/// `out[r] (=|+=) scale·table[ids[r]]` for each row of `out` (`dim` columns).
#[inline(always)]
fn gather_rows<T: Element>(
    table: &[T],
    ids: &[u32],
    dim: usize,
    scale: f32,
    mode: WriteMode,
    out: &mut [f32],
) {
    for (out, &id) in out.chunks_exact_mut(dim).zip(ids) {
        let row = &table[id as usize * dim..][..dim];
        match mode {
            WriteMode::Overwrite => {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o = scale * v.to_f32();
                }
            }
            WriteMode::Accumulate => {
                for (o, &v) in out.iter_mut().zip(row) {
                    *o += scale * v.to_f32();
                }
            }
        }
    }
}

/// Panics unless every id is below `vocab`, naming the first that is not.
fn check_ids(what: &str, ids: &[u32], vocab: usize) {
    if let Some(&bad) = ids.iter().find(|&&id| id as usize >= vocab) {
        panic!("{what}: token id {bad} out of range for vocab {vocab}");
    }
}

impl Kernels {
    /// Embedding lookup: `out[r] = scale·table[ids[r]]` (or `+=` with
    /// [`WriteMode::Accumulate`]), for a `table` of `vocab × dim` elements and `out` of
    /// `ids.len() × dim`.
    ///
    /// # Panics
    /// If `dim` is 0, `table.len()` is not a multiple of `dim`, `out` is not `ids.len() × dim`,
    /// or an id is not below `vocab` (checked before anything is written).
    #[allow(clippy::too_many_arguments)] // table, ids, shape, scale, mode, output and threads
    pub fn embedding_forward<T: Element + Sync>(
        &self,
        table: &[T],
        ids: &[u32],
        dim: usize,
        scale: f32,
        mode: WriteMode,
        out: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "embedding_forward";
        assert!(dim > 0, "{WHAT}: dim is 0");
        assert!(
            table.len().is_multiple_of(dim),
            "{WHAT}: table has {} elements, not a multiple of dim {dim}",
            table.len()
        );
        assert!(
            out.len() == ids.len() * dim,
            "{WHAT}: out has {} elements, {} ids × dim {dim} is {}",
            out.len(),
            ids.len(),
            ids.len() * dim
        );
        check_ids(WHAT, ids, table.len() / dim);
        let out = SharedSlice::new(out);
        for_each_range(parallel, ids.len(), min_rows_per_task(dim), |rows| {
            // SAFETY: the row ranges of one run are disjoint.
            let out = unsafe { out.part(rows.start * dim..rows.end * dim) };
            let ids = &ids[rows];
            crate::vectorize::vectorized!(
                self.isa(),
                gather_rows(table, ids, dim, scale, mode, out)
            );
        });
    }

    /// Embedding backward: `d_table[ids[r]] += scale·dy[r]` for every row `r` of `dy`
    /// (`ids.len() × dim`), into `d_table` of `vocab × dim`. Identical for any thread count.
    ///
    /// # Panics
    /// If `dim` is 0, `d_table.len()` is not a multiple of `dim`, `dy` is not
    /// `ids.len() × dim`, or an id is not below `vocab` (checked before anything is written).
    pub fn embedding_backward(
        &self,
        dy: &[f32],
        ids: &[u32],
        dim: usize,
        scale: f32,
        d_table: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "embedding_backward";
        assert!(dim > 0, "{WHAT}: dim is 0");
        assert!(
            d_table.len().is_multiple_of(dim),
            "{WHAT}: d_table has {} elements, not a multiple of dim {dim}",
            d_table.len()
        );
        assert!(
            dy.len() == ids.len() * dim,
            "{WHAT}: dy has {} elements, {} ids × dim {dim} is {}",
            dy.len(),
            ids.len(),
            ids.len() * dim
        );
        check_ids(WHAT, ids, d_table.len() / dim);
        if ids.is_empty() {
            return;
        }
        let min_columns = MIN_BACKWARD_COLUMNS.max(MIN_TASK_ELEMENTS.div_ceil(ids.len()));
        let d_table = SharedSlice::new(d_table);
        for_each_range(parallel, dim, min_columns, |columns| {
            crate::vectorize::vectorized!(self.isa(), {
                for (dy, &id) in dy.chunks_exact(dim).zip(ids) {
                    let start = id as usize * dim;
                    // SAFETY: tasks take disjoint column ranges, and within a task the row part
                    // is dropped before the next row's is taken, so no two live parts overlap.
                    let d_row = unsafe { d_table.part(start + columns.start..start + columns.end) };
                    for (d, &g) in d_row.iter_mut().zip(&dy[columns.clone()]) {
                        *d += scale * g;
                    }
                }
            });
        });
    }
}
