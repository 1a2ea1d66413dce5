//! The attention forward of one task: for each of its (batch, head, query tile) items, the
//! blocks of keys one after the other with an online softmax, then the normalized output and the
//! log-sum-exp of every row.
//!
//! The forward works on transposed tiles, keys as rows and queries as columns: `Sᵀ = scale·K·Qᵀ`
//! and `Oᵀ += Vᵀ·Pᵀ`, so the probabilities are the GEMM's right-hand operand (packed by plain row
//! copies) and every softmax statistic is a column-wise vector operation (a running max, sum and
//! rescale per query, updated one key row at a time, with no horizontal reductions). The
//! right-hand operands are row-major in memory, which the GEMM packs by plain row copies: `Pᵀ` is
//! produced that way and `Qᵀ` of the tile is transposed into scratch once per tile (and reused by
//! all its blocks). The left-hand ones are views: `K` of `k`, `Vᵀ` of `v` (the GEMM packs its
//! left operand about as fast in either orientation).
//!
//! Scratch per task ([`task_len`]): `Qᵀ` and the `Oᵀ` accumulator of a tile (`head_dim × br`
//! each), the output rows (`br × head_dim`), one score tile (`bc × br`), four statistics per
//! query (`br` each) and the GEMM's packing buffers; independent of `seq` beyond `bc`.

use core::ops::Range;

use super::{AttentionInputs, Geometry, gemm_scratch, multiply, transpose, visible_queries};
use crate::gemm::{Gemm, Mat, MatMut};
use crate::math::exp;
use crate::parallel::SharedSlice;

/// Floats of scratch one forward task needs.
pub(super) fn task_len(gemm: &Gemm, geo: &Geometry) -> usize {
    let (br, bc, d) = (geo.br, geo.bc, geo.dim);
    3 * d * br + bc * br + 4 * br + gemm_scratch(gemm, &[(bc, br, d), (d, br, bc)])
}

/// Runs the forward of `items`, writing their rows of `out` and `lse`.
#[inline(always)]
pub(super) fn task(
    gemm: &Gemm,
    geo: &Geometry,
    x: &AttentionInputs<'_>,
    out: &SharedSlice<'_, f32>,
    lse: &SharedSlice<'_, f32>,
    items: Range<usize>,
    scratch: &mut [f32],
) {
    let (br, bc, d, seq) = (geo.br, geo.bc, geo.dim, geo.seq);
    let (q_t, rest) = scratch.split_at_mut(d * br);
    let (o_t, rest) = rest.split_at_mut(d * br);
    let (o_rows, rest) = rest.split_at_mut(br * d);
    let (s_t, rest) = rest.split_at_mut(bc * br);
    let (col_max, rest) = rest.split_at_mut(br);
    let (col_sum, rest) = rest.split_at_mut(br);
    let (shift, rest) = rest.split_at_mut(br);
    let (correction, gemm_scratch) = rest.split_at_mut(br);
    for item in items {
        let (b, h, t) = geo.item(item);
        let g = h / geo.group;
        let rows = geo.tile(t);
        let n = rows.len();
        transpose(&x.q[geo.q_at(b, rows.start, h)..], geo.q_stride(), n, d, q_t, br);
        o_t.fill(0.0);
        col_max[..n].fill(f32::NEG_INFINITY);
        col_sum[..n].fill(0.0);
        let mask = x.key_mask.map(|m| &m[b * seq..(b + 1) * seq]);
        for blk in geo.blocks(rows.clone()) {
            let (nr, w, ro) = (blk.r1 - blk.r0, blk.k1 - blk.k0, blk.r0 - rows.start);
            let s = &mut s_t[..w * nr];
            let q_cols = Mat::row_major(&q_t[ro..], d, nr, br);
            let k_rows = Mat::row_major(&x.k[geo.kv_at(b, blk.k0, g)..], w, d, geo.kv_stride());
            // Sᵀ = scale·K·Qᵀ, then −∞ where a query may not see the key.
            let s_mat = MatMut::row_major(s, w, nr, nr);
            multiply(gemm, geo.scale, k_rows, q_cols, 0.0, s_mat, gemm_scratch);
            for (j, s_row) in s.chunks_exact_mut(nr).enumerate() {
                let key = blk.k0 + j;
                let keep = mask.is_none_or(|m| m[key]);
                let (lo, hi) = if keep { visible_queries(geo, key, &blk) } else { (0, 0) };
                s_row[..lo].fill(f32::NEG_INFINITY);
                s_row[hi..].fill(f32::NEG_INFINITY);
            }
            let cols = ro..ro + nr;
            softmax_step(
                s,
                &mut col_max[cols.clone()],
                &mut col_sum[cols.clone()],
                &mut shift[..nr],
                &mut correction[..nr],
            );
            for o_row in o_t.chunks_exact_mut(br) {
                for (o, &c) in o_row[cols.clone()].iter_mut().zip(&correction[..nr]) {
                    *o *= c;
                }
            }
            // Oᵀ += Vᵀ·Pᵀ.
            let p = Mat::row_major(&s_t[..w * nr], w, nr, nr);
            let o_cols = MatMut::row_major(&mut o_t[ro..], d, nr, br);
            let v_rows = Mat::row_major(&x.v[geo.kv_at(b, blk.k0, g)..], w, d, geo.kv_stride());
            multiply(gemm, 1.0, v_rows.t(), p, 1.0, o_cols, gemm_scratch);
        }
        transpose(o_t, br, d, n, o_rows, d);
        for (r, pos) in rows.clone().enumerate() {
            let at = geo.q_at(b, pos, h);
            // SAFETY: row `pos` of head `h` in sequence `b` belongs to this item alone.
            let dst = unsafe { out.part(at..at + d) };
            let l = col_sum[r];
            let inv = if l > 0.0 { 1.0 / l } else { 0.0 };
            for (o, &a) in dst.iter_mut().zip(&o_rows[r * d..(r + 1) * d]) {
                *o = a * inv;
            }
            col_sum[r] = if l > 0.0 { col_max[r] + libm::logf(l) } else { f32::NEG_INFINITY };
        }
        let at = (b * geo.heads + h) * seq + rows.start;
        // SAFETY: the log-sum-exp of these rows of head `h` in sequence `b` belong to this item.
        unsafe { lse.part(at..at + n) }.copy_from_slice(&col_sum[..n]);
    }
}

/// One block of the online softmax, for the queries that are the columns of `s` (`keys × n`):
/// raises each query's running max `m` to the block's, sets `correction = exp(m_old − m_new)`
/// (by which the caller rescales the output accumulator), turns the scores into
/// `exp(s − m_new)` and updates the running sums `l`. While a query has seen no visible key its
/// max stays −∞, its probabilities 0 and its correction 0 (its accumulator is 0 anyway).
#[inline(always)]
fn softmax_step(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    shift: &mut [f32],
    correction: &mut [f32],
) {
    let n = m.len();
    correction.copy_from_slice(m);
    for row in s.chunks_exact(n) {
        for (mx, &v) in m.iter_mut().zip(row) {
            *mx = mx.max(v);
        }
    }
    for (((sh, c), &mx), sum) in shift.iter_mut().zip(correction.iter_mut()).zip(&*m).zip(&mut *l) {
        // exp(−∞ − 0) = 0 where nothing is visible yet, instead of exp(−∞ + ∞) = NaN.
        *sh = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
        *c = exp(*c - *sh);
        *sum *= *c;
    }
    for row in s.chunks_exact_mut(n) {
        for ((v, &sh), sum) in row.iter_mut().zip(&*shift).zip(&mut *l) {
            *v = exp(*v - sh);
            *sum += *v;
        }
    }
}
