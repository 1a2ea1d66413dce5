//! The attention forward of one task: for each of its (batch, head, query tile) items, the blocks
//! of keys one after the other with an online softmax, then the normalized output and the
//! log-sum-exp of every row.
//!
//! The forward works on transposed tiles, keys as rows and queries as columns: `Sᵀ = scale·K·Qᵀ`
//! and `Oᵀ += Vᵀ·Pᵀ`, so every softmax statistic is a column-wise vector operation (a running max,
//! sum and rescale per query, updated one key row at a time, with no horizontal reductions). The
//! products run on packed operands ([`crate::gemm::packed`]): `K` (A panels over keys) and `Vᵀ` (A
//! panels over `head_dim`, read from the block's first key on) are packed once per key/value head,
//! `Qᵀ` (B panels over queries) once per tile (a strip reads it from the panel of its first row:
//! strips are aligned to `nr` rows), and `Sᵀ` is written straight as B panels over the queries,
//! `nr` queries wide: the mask and the softmax work on it in place, panel by panel (each a
//! row-major `keys × nr` matrix), and it is the `Pᵀ` operand of the next product as it stands.
//!
//! Scratch per task ([`task_len`]): the packed `K` and `Vᵀ` of a key/value head (`head_dim × seq`
//! each), the packed `Qᵀ`, the `Oᵀ` accumulator and the output rows of a tile (`head_dim × br`
//! each), one score tile in panels (about `bc × br`) and four statistics per query.

use core::ops::Range;

use super::{AttentionInputs, Geometry, key_align, strip_align, transpose, visible_queries};
use crate::gemm::packed::{
    Packed, pack_a_full, pack_b_full, packed_len, panel_stride, run_packed, run_packed_to_panels,
    take_aligned,
};
use crate::gemm::{Gemm, Mat, MatMut, round_up};
use crate::math::exp;
use crate::parallel::SharedSlice;

/// Lengths of the packed buffers of a task: `K` (A panels over keys, depth `head_dim`), `Vᵀ`
/// (A panels over `head_dim`, depth `seq`), `Qᵀ` of a tile (B panels over queries) and the
/// score panels (B panels over queries, depth up to the widest block).
fn packed_lens(gemm: &Gemm, geo: &Geometry) -> [usize; 4] {
    let (mr, nr, d, seq) = (gemm.mr(), gemm.nr(), geo.dim, geo.seq);
    let w_max = seq.min(geo.bc + key_align(mr) - 1);
    [
        packed_len(seq, mr, panel_stride(d, mr)),
        packed_len(d, mr, panel_stride(seq, mr)),
        packed_len(geo.br, nr, panel_stride(d, nr)),
        packed_len(geo.br, nr, panel_stride(round_up(w_max, mr), nr)),
    ]
}

/// Floats of scratch one forward task needs.
pub(super) fn task_len(gemm: &Gemm, geo: &Geometry) -> usize {
    let (br, d) = (geo.br, geo.dim);
    let packed: usize = packed_lens(gemm, geo).iter().map(|len| len + 16).sum();
    packed + 2 * d * br + 4 * br
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
    let (br, d, seq) = (geo.br, geo.dim, geo.seq);
    let (mr, nr) = (gemm.mr(), gemm.nr());
    let align = key_align(mr);
    let (sk, svt, sq) = (panel_stride(d, mr), panel_stride(seq, mr), panel_stride(d, nr));
    let [k_len, vt_len, qt_len, s_len] = packed_lens(gemm, geo);
    let (k_pack, rest) = take_aligned(scratch, k_len);
    let (vt_pack, rest) = take_aligned(rest, vt_len);
    let (qt_pack, rest) = take_aligned(rest, qt_len);
    let (s_pack, rest) = take_aligned(rest, s_len);
    let (o_t, rest) = rest.split_at_mut(d * br);
    let (o_rows, rest) = rest.split_at_mut(br * d);
    let (col_max, rest) = rest.split_at_mut(br);
    let (col_sum, rest) = rest.split_at_mut(br);
    let (shift, rest) = rest.split_at_mut(br);
    let correction = &mut rest[..br];
    let mut current = None;
    for item in items {
        let (b, h, t) = geo.item(item);
        let g = h / geo.group;
        if current != Some(geo.group_of(item)) {
            // K and Vᵀ of the key/value head, packed once for all its heads and tiles.
            let kv = geo.kv_at(b, 0, g);
            let k_rows = Mat::row_major(&x.k[kv..], seq, d, geo.kv_stride());
            let v_rows = Mat::row_major(&x.v[kv..], seq, d, geo.kv_stride());
            pack_a_full(gemm, k_rows, k_pack, sk);
            pack_a_full(gemm, v_rows.t(), vt_pack, svt);
            current = Some(geo.group_of(item));
        }
        let rows = geo.tile(t);
        let n = rows.len();
        o_t.fill(0.0);
        col_max[..n].fill(f32::NEG_INFINITY);
        col_sum[..n].fill(0.0);
        let mask = x.key_mask.map(|m| &m[b * seq..(b + 1) * seq]);
        // Qᵀ of the tile; a block from row r0 reads it from the panel of r0 on.
        let q = Mat::row_major(&x.q[geo.q_at(b, rows.start, h)..], n, d, geo.q_stride());
        pack_b_full(gemm, q.t(), qt_pack, sq);
        for blk in geo.blocks(rows.clone(), strip_align(nr)) {
            let (nq, ro) = (blk.r1 - blk.r0, blk.r0 - rows.start);
            // Keys kal..k1: the block's, from a panel boundary (keys before k0 are masked).
            let kal = blk.k0 / align * align;
            let w = blk.k1 - kal;
            let ss = panel_stride(round_up(w, mr), nr);
            // Sᵀ = scale·K·Qᵀ, straight into B panels over the queries.
            let k_rows = Packed::new(k_pack, sk).panels_from(kal / mr);
            let q_cols = Packed::new(qt_pack, sq).panels_from(ro / nr);
            run_packed_to_panels(gemm, geo.scale, k_rows, q_cols, w, nq, d, s_pack, ss);
            for p in 0..nq.div_ceil(nr) {
                let (c0, cw) = (p * nr, nr.min(nq - p * nr));
                let panel = &mut s_pack[p * ss..][..w * nr];
                // −∞ where a query may not see the key.
                for (j, s_row) in panel.chunks_exact_mut(nr).enumerate() {
                    let key = kal + j;
                    let keep = key >= blk.k0 && mask.is_none_or(|m| m[key]);
                    let (lo, hi) = if keep { visible_queries(geo, key, &blk) } else { (0, 0) };
                    let lo = lo.clamp(c0, c0 + cw) - c0;
                    let hi = hi.clamp(c0, c0 + cw) - c0;
                    s_row[..lo].fill(f32::NEG_INFINITY);
                    s_row[hi.max(lo)..cw].fill(f32::NEG_INFINITY);
                }
                let cols = ro + c0..ro + c0 + cw;
                let (m, l) = (&mut col_max[cols.clone()], &mut col_sum[cols.clone()]);
                match (cw == nr, nr) {
                    (true, 16) => softmax_step_wide::<16>(panel, m, l, &mut correction[..cw]),
                    (true, 32) => softmax_step_wide::<32>(panel, m, l, &mut correction[..cw]),
                    _ => softmax_step(panel, nr, m, l, &mut shift[..cw], &mut correction[..cw]),
                }
                for o_row in o_t.chunks_exact_mut(br) {
                    for (o, &c) in o_row[cols.clone()].iter_mut().zip(&correction[..cw]) {
                        *o *= c;
                    }
                }
            }
            // Oᵀ += Vᵀ·Pᵀ.
            let v_cols = Packed::new(vt_pack, svt).skip(kal, mr);
            let o_cols = MatMut::row_major(&mut o_t[ro..], d, nq, br);
            run_packed(gemm, 1.0, v_cols, Packed::new(s_pack, ss), w, 1.0, o_cols);
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

/// [`softmax_step`] for a whole panel of `W` queries (`W` the panel width), with the running
/// statistics in registers: the same operations on every value, in the same order.
#[inline(always)]
fn softmax_step_wide<const W: usize>(
    s: &mut [f32],
    m: &mut [f32],
    l: &mut [f32],
    correction: &mut [f32],
) {
    let m_old: [f32; W] = m.try_into().expect("one panel of statistics");
    let mut m_new = m_old;
    for row in s.chunks_exact(W) {
        for (mx, &v) in m_new.iter_mut().zip(row) {
            *mx = mx.max(v);
        }
    }
    let mut shift = [0.0f32; W];
    let mut sum: [f32; W] = (&*l).try_into().expect("one panel of statistics");
    for i in 0..W {
        shift[i] = if m_new[i] == f32::NEG_INFINITY { 0.0 } else { m_new[i] };
        correction[i] = exp(m_old[i] - shift[i]);
        sum[i] *= correction[i];
    }
    for row in s.chunks_exact_mut(W) {
        for ((v, &sh), total) in row.iter_mut().zip(&shift).zip(&mut sum) {
            *v = exp(*v - sh);
            *total += *v;
        }
    }
    m.copy_from_slice(&m_new);
    l.copy_from_slice(&sum);
}

/// One block of the online softmax, for the queries that are the first `n = m.len()` columns of
/// `s` (`keys` rows, `stride` apart):
/// raises each query's running max `m` to the block's, sets `correction = exp(m_old − m_new)`
/// (by which the caller rescales the output accumulator), turns the scores into
/// `exp(s − m_new)` and updates the running sums `l`. While a query has seen no visible key its
/// max stays −∞, its probabilities 0 and its correction 0 (its accumulator is 0 anyway).
#[inline(always)]
fn softmax_step(
    s: &mut [f32],
    stride: usize,
    m: &mut [f32],
    l: &mut [f32],
    shift: &mut [f32],
    correction: &mut [f32],
) {
    let n = m.len();
    correction.copy_from_slice(m);
    for row in s.chunks_exact(stride) {
        for (mx, &v) in m.iter_mut().zip(&row[..n]) {
            *mx = mx.max(v);
        }
    }
    for (((sh, c), &mx), sum) in shift.iter_mut().zip(correction.iter_mut()).zip(&*m).zip(&mut *l) {
        // exp(−∞ − 0) = 0 where nothing is visible yet, instead of exp(−∞ + ∞) = NaN.
        *sh = if mx == f32::NEG_INFINITY { 0.0 } else { mx };
        *c = exp(*c - *sh);
        *sum *= *c;
    }
    for row in s.chunks_exact_mut(stride) {
        for ((v, &sh), sum) in row[..n].iter_mut().zip(&*shift).zip(&mut *l) {
            *v = exp(*v - sh);
            *sum += *v;
        }
    }
}
