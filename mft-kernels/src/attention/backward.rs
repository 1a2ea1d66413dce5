//! The attention backward of one task, and the sum of the `dk`/`dv` partials that tasks leave
//! when they split a key/value group between them.
//!
//! Per block (queries as rows): `S = scale·Q·Kᵀ`, `P = exp(S − lse)` (0 where masked),
//! `dVᵀ += dOᵀ·P`, `dP = dO·Vᵀ`, `dS = P ∘ (dP − D)`, `dKᵀ += scale·Qᵀ·dS`, `dQ += scale·dS·K`.
//! The right-hand operands are row-major in memory, which the GEMM packs by plain row copies: `P`
//! and `dS` are produced that way, `K` is, and `Kᵀ` and `Vᵀ` of the current key/value head are
//! transposed into scratch once per group (and reused by all its tiles and blocks). The
//! left-hand ones are `dS` and views of `q` and `d_out` in either orientation (the GEMM packs its
//! left operand about as fast either way).
//!
//! A task walks its (batch, head, query tile) items in order; consecutive items of the same
//! key/value group (batch, kv head) share one pair of `dKᵀ`/`dVᵀ` accumulators (`head_dim × seq`
//! each, in a slot of the task's scratch). When the group is done, a task that ran all of its
//! items writes them (transposed) to `dk`/`dv`; otherwise they stay in the slot (slot 0 for the
//! task's first group, slot 1 for its last) for [`Backward::reduce_shared`].
//!
//! Scratch per task ([`Backward::task_len`]): the slots (one when there is a single task, else
//! two; `2·head_dim·seq` each), `Kᵀ` and `Vᵀ` (`head_dim × seq` each), the `dQ` accumulator
//! (`br × head_dim`), `P` and `dS` tiles (`br × bc` each), `D` and `−lse` of the tile's rows
//! (`br` each) and the GEMM's packing buffers: O(seq).

use core::ops::Range;

use super::{
    AttentionInputs, Geometry, Partition, gemm_scratch, multiply, transpose, visible_keys,
};
use crate::gemm::{Gemm, Mat, MatMut};
use crate::math::{dot, exp};
use crate::parallel::SharedSlice;

/// The gradients, shared by the tasks (each writes disjoint rows).
pub(super) struct SharedGrads<'a> {
    pub dq: SharedSlice<'a, f32>,
    pub dk: SharedSlice<'a, f32>,
    pub dv: SharedSlice<'a, f32>,
}

/// Everything a backward task reads.
pub(super) struct Backward<'a> {
    pub gemm: &'a Gemm,
    pub geo: Geometry,
    pub x: AttentionInputs<'a>,
    pub out: &'a [f32],
    pub lse: &'a [f32],
    pub d_out: &'a [f32],
    /// `dKᵀ`/`dVᵀ` accumulator slots per task: 1 with a single task (nothing is shared), else 2.
    pub slots: usize,
}

impl Backward<'_> {
    /// Accumulator slots per task when the work is split in `parts`.
    pub(super) fn slots_for(parts: usize) -> usize {
        if parts > 1 { 2 } else { 1 }
    }

    /// Floats of one slot: `dKᵀ` then `dVᵀ`, `head_dim × ld` each.
    fn slot_len(geo: &Geometry) -> usize {
        2 * geo.dim * geo.ld
    }

    /// Floats of scratch one backward task needs.
    pub(super) fn task_len(gemm: &Gemm, geo: &Geometry, slots: usize) -> usize {
        let (br, bc, d) = (geo.br, geo.bc, geo.dim);
        slots * Self::slot_len(geo)
            + 2 * d * geo.ld
            + d * br
            + 2 * br * bc
            + 2 * br
            + gemm_scratch(gemm, &[(br, bc, d), (d, bc, br), (br, d, bc)])
    }

    /// Runs the backward of `items`: writes their rows of `dq`, and the `dk`/`dv` of every group
    /// they cover entirely; leaves the partials of a shared first or last group in its slot.
    #[inline(always)]
    pub(super) fn task(&self, grads: &SharedGrads<'_>, items: Range<usize>, scratch: &mut [f32]) {
        let geo = &self.geo;
        let (br, bc, d, seq, ld) = (geo.br, geo.bc, geo.dim, geo.seq, geo.ld);
        let slot_len = Self::slot_len(geo);
        let (slots, rest) = scratch.split_at_mut(self.slots * slot_len);
        let (k_t, rest) = rest.split_at_mut(d * ld);
        let (v_t, rest) = rest.split_at_mut(d * ld);
        let (dq_acc, rest) = rest.split_at_mut(br * d);
        let (p_tile, rest) = rest.split_at_mut(br * bc);
        let (ds_tile, rest) = rest.split_at_mut(br * bc);
        let (row_d, rest) = rest.split_at_mut(br);
        let (row_bias, gemm_scratch) = rest.split_at_mut(br);

        let first_group = geo.group_of(items.start);
        let exclusive = |group: usize| {
            let own = geo.group_items(group);
            items.start <= own.start && own.end <= items.end
        };
        let mut current: Option<(usize, usize)> = None;
        for item in items.clone() {
            let group = geo.group_of(item);
            if current.map(|(g, _)| g) != Some(group) {
                if let Some((done, slot)) = current.filter(|&(g, _)| exclusive(g)) {
                    let acc = &slots[slot * slot_len..(slot + 1) * slot_len];
                    self.write_group(grads, done, acc, dq_acc);
                }
                let slot = if group == first_group || self.slots == 1 { 0 } else { 1 };
                slots[slot * slot_len..(slot + 1) * slot_len].fill(0.0);
                let (b, g) = (group / geo.kv_heads, group % geo.kv_heads);
                transpose(&self.x.k[geo.kv_at(b, 0, g)..], geo.kv_stride(), seq, d, k_t, ld);
                transpose(&self.x.v[geo.kv_at(b, 0, g)..], geo.kv_stride(), seq, d, v_t, ld);
                current = Some((group, slot));
            }
            let slot = current.map_or(0, |(_, s)| s);
            let (dk_acc, dv_acc) =
                slots[slot * slot_len..(slot + 1) * slot_len].split_at_mut(d * ld);
            let (b, h, t) = geo.item(item);
            let g = h / geo.group;
            let rows = geo.tile(t);
            let n = rows.len();
            for (r, pos) in rows.clone().enumerate() {
                let at = geo.q_at(b, pos, h);
                row_d[r] = dot(&self.d_out[at..at + d], &self.out[at..at + d]);
                // P = exp(s − lse). A row that saw no key (lse = −∞) gets +∞ here, but every key
                // it could see is padding, whose P the padding mask sets to 0 afterwards.
                row_bias[r] = -self.lse[(b * geo.heads + h) * seq + pos];
            }
            dq_acc[..n * d].fill(0.0);
            let mask = self.x.key_mask.map(|m| &m[b * seq..(b + 1) * seq]);
            for blk in geo.blocks(rows.clone()) {
                let (nr, w, ro) = (blk.r1 - blk.r0, blk.k1 - blk.k0, blk.r0 - rows.start);
                let (q_at, kv_at) = (geo.q_at(b, blk.r0, h), geo.kv_at(b, blk.k0, g));
                let q_rows = Mat::row_major(&self.x.q[q_at..], nr, d, geo.q_stride());
                let do_rows = Mat::row_major(&self.d_out[q_at..], nr, d, geo.q_stride());
                let k_rows = Mat::row_major(&self.x.k[kv_at..], w, d, geo.kv_stride());
                let k_cols = Mat::row_major(&k_t[blk.k0..], d, w, ld);
                let v_cols = Mat::row_major(&v_t[blk.k0..], d, w, ld);
                let gemm = self.gemm;
                // P = exp(scale·Q·Kᵀ − lse), zero where masked.
                let p = &mut p_tile[..nr * w];
                let p_mat = MatMut::row_major(p, nr, w, w);
                multiply(gemm, geo.scale, q_rows, k_cols, 0.0, p_mat, gemm_scratch);
                let padding = mask.map(|m| &m[blk.k0..blk.k1]).filter(|m| m.contains(&false));
                for (r, p_row) in p.chunks_exact_mut(w).enumerate() {
                    let (lo, hi) = visible_keys(geo, blk.r0 + r, &blk);
                    probabilities(p_row, row_bias[ro + r], lo, hi, padding);
                }
                let p = Mat::row_major(&p_tile[..nr * w], nr, w, w);
                // dVᵀ += dOᵀ·P.
                let dv_cols = MatMut::row_major(&mut dv_acc[blk.k0..], d, w, ld);
                multiply(gemm, 1.0, do_rows.t(), p, 1.0, dv_cols, gemm_scratch);
                // dP = dO·Vᵀ, then dS = P ∘ (dP − D) in place.
                let ds = &mut ds_tile[..nr * w];
                let ds_mat = MatMut::row_major(ds, nr, w, w);
                multiply(gemm, 1.0, do_rows, v_cols, 0.0, ds_mat, gemm_scratch);
                for ((ds_row, p_row), &dd) in
                    ds.chunks_exact_mut(w).zip(p_tile.chunks_exact(w)).zip(&row_d[ro..ro + nr])
                {
                    for (v, &p) in ds_row.iter_mut().zip(p_row) {
                        *v = p * (*v - dd);
                    }
                }
                let ds = Mat::row_major(&ds_tile[..nr * w], nr, w, w);
                // dKᵀ += scale·Qᵀ·dS.
                let dk_cols = MatMut::row_major(&mut dk_acc[blk.k0..], d, w, ld);
                multiply(gemm, geo.scale, q_rows.t(), ds, 1.0, dk_cols, gemm_scratch);
                // dQ += scale·dS·K.
                let dq_rows = MatMut::row_major(&mut dq_acc[ro * d..n * d], nr, d, d);
                multiply(gemm, geo.scale, ds, k_rows, 1.0, dq_rows, gemm_scratch);
            }
            for (r, pos) in rows.enumerate() {
                let at = geo.q_at(b, pos, h);
                // SAFETY: row `pos` of head `h` in sequence `b` belongs to this item alone.
                unsafe { grads.dq.part(at..at + d) }.copy_from_slice(&dq_acc[r * d..(r + 1) * d]);
            }
        }
        if let Some((done, slot)) = current.filter(|&(g, _)| exclusive(g)) {
            self.write_group(grads, done, &slots[slot * slot_len..(slot + 1) * slot_len], dq_acc);
        }
    }

    /// Writes the accumulators `acc` (`dKᵀ` then `dVᵀ`) of `group`, which this task owns
    /// entirely, to `dk` and `dv`, transposing `br` positions at a time through `rows`
    /// (`br × head_dim`).
    #[inline(always)]
    fn write_group(&self, grads: &SharedGrads<'_>, group: usize, acc: &[f32], rows: &mut [f32]) {
        let geo = &self.geo;
        let (b, g, d, ld) = (group / geo.kv_heads, group % geo.kv_heads, geo.dim, geo.ld);
        for (acc_t, grad) in [(&acc[..d * ld], &grads.dk), (&acc[d * ld..], &grads.dv)] {
            for p0 in (0..geo.seq).step_by(geo.br) {
                let n = geo.br.min(geo.seq - p0);
                transpose(&acc_t[p0..], ld, d, n, rows, d);
                for (r, row) in rows.chunks_exact(d).take(n).enumerate() {
                    let at = geo.kv_at(b, p0 + r, g);
                    // SAFETY: no other task touches `group` (this task ran all of its items), and
                    // the row of (b, p0 + r, g) belongs to that group alone.
                    unsafe { grad.part(at..at + d) }.copy_from_slice(row);
                }
            }
        }
    }

    /// After every task has run: writes the groups shared between tasks, summing their partials
    /// from each task's slots in task order (`scratch` holds the tasks' scratch, `task_len`
    /// floats each).
    #[inline(always)]
    pub(super) fn reduce_shared(
        &self,
        partition: &Partition,
        scratch: &[f32],
        task_len: usize,
        dk: &mut [f32],
        dv: &mut [f32],
    ) {
        let geo = &self.geo;
        let (d, ld) = (geo.dim, geo.ld);
        let slot_len = Self::slot_len(geo);
        for p in 0..partition.parts {
            let items = partition.range(geo, p);
            if items.is_empty() {
                continue;
            }
            let (first, last) = (geo.group_of(items.start), geo.group_of(items.end - 1));
            for (group, slot) in [(first, 0), (last, 1)] {
                let own = geo.group_items(group);
                let exclusive = items.start <= own.start && own.end <= items.end;
                if (slot == 1 && last == first) || exclusive {
                    continue;
                }
                // The task holding the group's first item writes, the later ones add.
                let overwrite = own.start >= items.start;
                let at = p * task_len + slot * slot_len;
                let (dk_t, dv_t) = scratch[at..at + slot_len].split_at(d * ld);
                let (b, g) = (group / geo.kv_heads, group % geo.kv_heads);
                for pos in 0..geo.seq {
                    let row = geo.kv_at(b, pos, g);
                    for (dst, acc) in [(&mut dk[row..row + d], dk_t), (&mut dv[row..row + d], dv_t)]
                    {
                        for (c, o) in dst.iter_mut().enumerate() {
                            let a = acc[c * ld + pos];
                            *o = if overwrite { a } else { *o + a };
                        }
                    }
                }
            }
        }
    }
}

/// One row of `P`: `exp(s + bias)` on the visible keys `lo..hi` that are not padding, 0
/// elsewhere.
#[inline(always)]
fn probabilities(p: &mut [f32], bias: f32, lo: usize, hi: usize, padding: Option<&[bool]>) {
    p[..lo].fill(0.0);
    p[hi..].fill(0.0);
    for v in &mut p[lo..hi] {
        *v = exp(*v + bias);
    }
    if let Some(keep) = padding {
        for (v, &keep) in p.iter_mut().zip(keep) {
            *v = if keep { *v } else { 0.0 };
        }
    }
}
