//! The attention backward of one task, and the sum of the `dk`/`dv` partials that tasks leave when
//! they split a key/value group between them.
//!
//! Per block (queries as rows): `S = scale·Q·Kᵀ`, `P = exp(S − lse)` (0 where masked), `dVᵀ +=
//! dOᵀ·P`, `dP = dO·Vᵀ`, `dS = P ∘ (dP − D)`, `dKᵀ += scale·Qᵀ·dS`, `dQ += scale·dS·K`. The
//! products run on packed operands ([`crate::gemm::packed`]): `Kᵀ`, `Vᵀ` (B panels over keys) and
//! `K` (B panels over `head_dim`, read from the block's first key on) are packed once per key/value
//! group; `Qᵀ` and `dOᵀ` (A panels over `head_dim`, read from the block's first row on) once per
//! tile; `Q` and `dO` (A panels over queries) once per tile, each block reading them from the panel
//! of its first row (strips are aligned to `mr` rows). `P` and `dP` are written straight as B
//! panels over the keys, where `P` and `dS` are computed in place and read as they stand by `dVᵀ +=
//! dOᵀ·P` and `dKᵀ += scale·Qᵀ·dS`; only `dQ += dS·K`, which contracts over the keys, needs `dS`
//! repacked (as A panels over the queries).
//!
//! A task walks its (batch, head, query tile) items in order; consecutive items of the same
//! key/value group (batch, kv head) share one pair of `dKᵀ`/`dVᵀ` accumulators (`head_dim × seq`
//! each, in a slot of the task's scratch). When the group is done, a task that ran all of its items
//! writes them (transposed) to `dk`/`dv`; otherwise they stay in the slot (slot 0 for the task's
//! first group, slot 1 for its last) for [`Backward::reduce_shared`].
//!
//! Scratch per task ([`Backward::task_len`]): the slots (one when there is a single task, else two;
//! `2·head_dim·seq` each), packed `Kᵀ`, `Vᵀ` and `K` (`head_dim × seq` each), packed `Q`, `dO`,
//! `Qᵀ`, `dOᵀ` and the `dQ` accumulator (`br × head_dim` each), `P`, `dS` and repacked `dS` tiles
//! (about `br × bc` each), `D` and `−lse` of the tile's rows (`br` each): O(seq).

use core::ops::Range;

use super::{
    AttentionInputs, Geometry, Partition, key_align, strip_align, transpose, visible_keys,
};
use crate::gemm::packed::{
    Packed, pack_a_full, pack_b_full, packed_len, panel_stride, run_packed, run_packed_to_panels,
    take_aligned,
};
use crate::gemm::{Gemm, Mat, MatMut, round_up};
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

    /// Lengths of the packed buffers of a task: `Kᵀ`, `Vᵀ` (B panels over keys, depth
    /// `head_dim`), `K` (B panels over `head_dim`, depth `seq`), `Qᵀ`, `dOᵀ` of a tile (A panels
    /// over `head_dim`, depth `br`), `Q`, `dO` (A panels over queries, depth `head_dim`), `P`,
    /// `dS` (B panels over keys, depth `br`) and `dS` again (A panels over queries, depth up to
    /// the widest block).
    fn packed_lens(gemm: &Gemm, geo: &Geometry) -> [usize; 10] {
        let (mr, nr, d, seq, br) = (gemm.mr(), gemm.nr(), geo.dim, geo.seq, geo.br);
        let w_max = seq.min(geo.bc + key_align(nr) - 1);
        let kt = packed_len(seq, nr, panel_stride(d, nr));
        let qt = packed_len(d, mr, panel_stride(br, mr));
        let q = packed_len(br, mr, panel_stride(d, mr));
        let p = packed_len(w_max, nr, panel_stride(round_up(br, mr), nr));
        let ds_a = packed_len(br, mr, panel_stride(w_max, mr));
        [kt, kt, packed_len(d, nr, panel_stride(seq, nr)), qt, qt, q, q, p, p, ds_a]
    }

    /// Floats of scratch one backward task needs.
    pub(super) fn task_len(gemm: &Gemm, geo: &Geometry, slots: usize) -> usize {
        let (br, d) = (geo.br, geo.dim);
        let packed: usize = Self::packed_lens(gemm, geo).iter().map(|len| len + 16).sum();
        slots * Self::slot_len(geo) + packed + d * br + 2 * br
    }

    /// Runs the backward of `items`: writes their rows of `dq`, and the `dk`/`dv` of every group
    /// they cover entirely; leaves the partials of a shared first or last group in its slot.
    #[inline(always)]
    pub(super) fn task(&self, grads: &SharedGrads<'_>, items: Range<usize>, scratch: &mut [f32]) {
        let geo = &self.geo;
        let gemm = self.gemm;
        let (br, d, seq, ld) = (geo.br, geo.dim, geo.seq, geo.ld);
        let (mr, nr) = (gemm.mr(), gemm.nr());
        let align = key_align(nr);
        let skt = panel_stride(d, nr);
        let sk = panel_stride(seq, nr);
        let sqt = panel_stride(br, mr);
        let sq = panel_stride(d, mr);
        let slot_len = Self::slot_len(geo);
        let (slots, rest) = scratch.split_at_mut(self.slots * slot_len);
        let [kt_len, vt_len, k_len, qt_len, dot_len, q_len, do_len, p_len, ds_len, dsa_len] =
            Self::packed_lens(gemm, geo);
        let (kt_pack, rest) = take_aligned(rest, kt_len);
        let (vt_pack, rest) = take_aligned(rest, vt_len);
        let (k_pack, rest) = take_aligned(rest, k_len);
        let (qt_pack, rest) = take_aligned(rest, qt_len);
        let (dot_pack, rest) = take_aligned(rest, dot_len);
        let (q_pack, rest) = take_aligned(rest, q_len);
        let (do_pack, rest) = take_aligned(rest, do_len);
        let (p_pack, rest) = take_aligned(rest, p_len);
        let (ds_pack, rest) = take_aligned(rest, ds_len);
        let (dsa_pack, rest) = take_aligned(rest, dsa_len);
        let (dq_acc, rest) = rest.split_at_mut(br * d);
        let (row_d, rest) = rest.split_at_mut(br);
        let row_bias = &mut rest[..br];

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
                // Kᵀ, Vᵀ and K of the key/value head, packed once for all its heads and tiles.
                let (b, g) = (group / geo.kv_heads, group % geo.kv_heads);
                let kv = geo.kv_at(b, 0, g);
                let k_rows = Mat::row_major(&self.x.k[kv..], seq, d, geo.kv_stride());
                let v_rows = Mat::row_major(&self.x.v[kv..], seq, d, geo.kv_stride());
                pack_b_full(gemm, k_rows.t(), kt_pack, skt);
                pack_b_full(gemm, v_rows.t(), vt_pack, skt);
                pack_b_full(gemm, k_rows, k_pack, sk);
                current = Some((group, slot));
            }
            let slot = current.map_or(0, |(_, s)| s);
            let (dk_acc, dv_acc) =
                slots[slot * slot_len..(slot + 1) * slot_len].split_at_mut(d * ld);
            let (b, h, t) = geo.item(item);
            let rows = geo.tile(t);
            let n = rows.len();
            for (r, pos) in rows.clone().enumerate() {
                let at = geo.q_at(b, pos, h);
                row_d[r] = dot(&self.d_out[at..at + d], &self.out[at..at + d]);
                // P = exp(s − lse). A row that saw no key (lse = −∞) gets +∞ here, but every key
                // it could see is padding, whose P the padding mask sets to 0 afterwards.
                row_bias[r] = -self.lse[(b * geo.heads + h) * seq + pos];
            }
            // Qᵀ and dOᵀ of the tile, A panels over head_dim (every block reads a depth range).
            let at0 = geo.q_at(b, rows.start, h);
            let q_tile = Mat::row_major(&self.x.q[at0..], n, d, geo.q_stride());
            let do_tile = Mat::row_major(&self.d_out[at0..], n, d, geo.q_stride());
            pack_a_full(gemm, q_tile.t(), qt_pack, sqt);
            pack_a_full(gemm, do_tile.t(), dot_pack, sqt);
            // Q and dO of the tile, A panels over the queries; a block from row r0 reads them
            // from the panel of r0 on.
            pack_a_full(gemm, q_tile, q_pack, sq);
            pack_a_full(gemm, do_tile, do_pack, sq);
            dq_acc[..n * d].fill(0.0);
            let mask = self.x.key_mask.map(|m| &m[b * seq..(b + 1) * seq]);
            for blk in geo.blocks(rows.clone(), strip_align(mr)) {
                let (nq, ro) = (blk.r1 - blk.r0, blk.r0 - rows.start);
                // Keys kal..k1: the block's, from a panel boundary (keys before k0 are masked).
                let kal = blk.k0 / align * align;
                let w = blk.k1 - kal;
                let sp = panel_stride(round_up(nq, mr), nr);
                let key_panels = w.div_ceil(nr);
                // P = exp(scale·Q·Kᵀ − lse), zero where masked, in B panels over the keys.
                let k_cols = Packed::new(kt_pack, skt).panels_from(kal / nr);
                let q_rows = Packed::new(q_pack, sq).panels_from(ro / mr);
                run_packed_to_panels(gemm, geo.scale, q_rows, k_cols, nq, w, d, p_pack, sp);
                let padding = mask.map(|m| &m[blk.k0..blk.k1]).filter(|m| m.contains(&false));
                for p in 0..key_panels {
                    let base = kal + p * nr;
                    let keep = padding.and(mask).map(|m| &m[base.min(seq)..seq.min(base + nr)]);
                    let panel = &mut p_pack[p * sp..][..nq * nr];
                    for (r, p_row) in panel.chunks_exact_mut(nr).enumerate() {
                        let (lo, hi) = visible_keys(geo, blk.r0 + r, &blk);
                        let (lo, hi) = if lo < hi {
                            let clip = |x: usize| (x + blk.k0).clamp(base, base + nr) - base;
                            (clip(lo), clip(hi))
                        } else {
                            (0, 0)
                        };
                        let bias = row_bias[ro + r];
                        match (lo == 0 && hi == nr && keep.is_none(), nr) {
                            (true, 16) => exp_shifted::<16>(p_row, bias),
                            (true, 32) => exp_shifted::<32>(p_row, bias),
                            _ => probabilities(p_row, bias, lo, hi, keep),
                        }
                    }
                }
                let p_keys = Packed::new(p_pack, sp);
                // dVᵀ += dOᵀ·P.
                let do_cols = Packed::new(dot_pack, sqt).skip(ro, mr);
                let dv_cols = MatMut::row_major(&mut dv_acc[kal..], d, w, ld);
                run_packed(gemm, 1.0, do_cols, p_keys, nq, 1.0, dv_cols);
                // dP = dO·Vᵀ, then dS = P ∘ (dP − D) in place.
                let v_cols = Packed::new(vt_pack, skt).panels_from(kal / nr);
                let do_rows = Packed::new(do_pack, sq).panels_from(ro / mr);
                run_packed_to_panels(gemm, 1.0, do_rows, v_cols, nq, w, d, ds_pack, sp);
                for p in 0..key_panels {
                    let ds = &mut ds_pack[p * sp..][..nq * nr];
                    let pp = &p_pack[p * sp..][..nq * nr];
                    for ((ds_row, p_row), &dd) in
                        ds.chunks_exact_mut(nr).zip(pp.chunks_exact(nr)).zip(&row_d[ro..ro + nq])
                    {
                        for (v, &p) in ds_row.iter_mut().zip(p_row) {
                            *v = p * (*v - dd);
                        }
                    }
                }
                // dS again as A panels over the queries (depth: the keys), for dQ.
                let sa = panel_stride(w, mr);
                for p in 0..key_panels {
                    let c0 = p * nr;
                    let ds = Mat::row_major(&ds_pack[p * sp..], nq, nr.min(w - c0), nr);
                    pack_a_full(gemm, ds, &mut dsa_pack[c0 * mr..], sa);
                }
                let ds_keys = Packed::new(ds_pack, sp);
                // dKᵀ += scale·Qᵀ·dS.
                let q_cols = Packed::new(qt_pack, sqt).skip(ro, mr);
                let dk_cols = MatMut::row_major(&mut dk_acc[kal..], d, w, ld);
                run_packed(gemm, geo.scale, q_cols, ds_keys, nq, 1.0, dk_cols);
                // dQ += scale·dS·K.
                let k_rows = Packed::new(k_pack, sk).skip(kal, nr);
                let dq_rows = MatMut::row_major(&mut dq_acc[ro * d..n * d], nq, d, d);
                run_packed(gemm, geo.scale, Packed::new(dsa_pack, sa), k_rows, w, 1.0, dq_rows);
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

/// A row of `P` whose `W` keys are all visible: `exp(s + bias)`, as [`probabilities`] computes it.
#[inline(always)]
fn exp_shifted<const W: usize>(p: &mut [f32], bias: f32) {
    let p: &mut [f32; W] = p.try_into().expect("a whole row");
    for v in p {
        *v = exp(*v + bias);
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
