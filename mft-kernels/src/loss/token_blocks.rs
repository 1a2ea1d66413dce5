//! The trained-head path of [`Kernels::lm_head_loss_forward_backward`]: blocks of tokens whose
//! logits over the whole vocabulary stay in scratch, so that only the three useful products run
//! (logits, `d_hidden`, `d_weight`) instead of the vocabulary-chunk path's four.
//!
//! # Why
//! `d_weight`'s rows need every token's final log-sum-exp, which is known only after the whole
//! vocabulary has been seen. The chunk path therefore walks the vocabulary twice and computes the
//! logits twice (at most 0.75 of the GEMM's rate by construction). Here a block of `R` tokens
//! (64 at GPT-2's vocabulary: 12.9 MB of logits) keeps its logits, so one walk suffices for
//! them and `d_hidden`, and `d_weight` follows from the kept values.
//!
//! # Layout and products
//! The block is held vocabulary-major, `[vocab, R]` (`block[v·R + t]`): a chunk of entries is a
//! contiguous run of rows, so threads own disjoint slices, and a chunk's rows are the left
//! operand of its `d_weight` rows' product as they stand. Per chunk `c` of the walk (entries
//! `v0..v0 + w`, head rows `W_c`):
//! 1. `L_cᵀ = W_c·hiddenᵀ` (`w × R`), with `hiddenᵀ` packed once per block and `W_c` read in
//!    place by the micro-kernel (packed first where the ISA has no in-place kernel), while the
//!    next chunk's rows are prefetched from memory: the head is read from memory once per block;
//! 2. per token (a column): running max `m_t`, `E = exp(L − m_t)` in place, running sum; the
//!    shift `m_t` of this chunk is kept (`R` floats per chunk);
//! 3. `accᵀ += W_cᵀ·E` (`hidden × R`, rescaled by `exp(m_old − m_new)` when a max grows): the
//!    flash-style `d_hidden` of [`super`]'s frozen-head path, transposed, with `W_cᵀ` read in
//!    place from cache.
//!
//! With `P` threads the chunks are split into `min(P, chunks)` contiguous ranges, each walked by
//! one thread with its own max, sum and accumulator, merged at the end like flash-decoding's
//! split (64 tokens are too thin a product to split between threads). Then
//! `lse = m + ln(sum)`, `d_hidden = g·(acc/sum − W[label])`, and each thread, over its own
//! chunks again: in place `dl = g·(E·exp(shift − lse) − onehot)` (a multiply: the exponentials
//! are not recomputed), then `d_weight_c += dl_cᵀ·hidden` with the block's hidden states packed
//! once, prefetching the next chunk's `d_weight` rows.
//!
//! The sums therefore depend on the number of threads (a result differs in its last bits between
//! 1 and 2 threads, never between two runs on the same number), as the row-wise kernels'
//! parameter gradients do; the chunk path splits only its products' columns and does not.
//!
//! `E·exp(shift − lse)` is the probability rounded twice instead of once (a few f32 epsilons,
//! as the chunk path's `exp(l − lse)`); entries more than 86.5 below their chunk's max flush to
//! zero, where the probability is below f32's normal range anyway.

use super::{LmHeadLoss, Operands, label_index};
use crate::gemm::packed::{
    Packed, pack_a_full, pack_b_full, packed_len, panel_stride, run_packed_ahead, run_strided_a,
    strided_a_pack_len, take_aligned,
};
use crate::gemm::{Gemm, Mat, MatMut};
use crate::kernels::Kernels;
use crate::math;
use crate::parallel::{Parallel, SharedSlice};
use core::ops::Range;

/// Logits a default token block holds at most (13.6 MB of f32; 64 tokens at GPT-2's 50257).
pub(super) const BLOCK_LOGITS: usize = 3_400_000;
/// A default block smaller than all the tokens is a multiple of this.
const BLOCK_ALIGN: usize = 16;
/// Fewest tokens a default block takes: with fewer (a vocabulary above about 106k entries) the
/// products are too thin to beat the chunk path, which then runs instead.
pub(super) const MIN_BLOCK: usize = 32;
/// Vocabulary entries per chunk of a block's walk: the chunk's head rows (384 KB at hidden 768)
/// and the next chunk's, fetched meanwhile, stay in L2 together. 128 to 512 measured the same.
pub(super) const BLOCK_CHUNK: usize = 128;

/// The default token block for `tokens × vocab` (0: none worth taking).
pub(super) fn default_block(tokens: usize, vocab: usize) -> usize {
    let fits = BLOCK_LOGITS / vocab.max(1) / BLOCK_ALIGN * BLOCK_ALIGN;
    if tokens <= fits {
        tokens
    } else if fits >= MIN_BLOCK {
        fits
    } else {
        0
    }
}

/// Sizes of the token-block path's scratch (floats) for one shape and thread count.
struct Plan {
    /// Tokens per block (`R`).
    block: usize,
    /// Vocabulary chunks of the walk.
    chunks: usize,
    /// Threads that walk (at most one per chunk).
    walkers: usize,
    /// `hiddenᵀ` of a block, packed as the right operand of the logits' product.
    x_pack: usize,
    /// `hidden` of a block, packed as the right operand of `d_weight`'s product.
    xb_pack: usize,
    /// The chunk's `dlᵀ` packed as the left operand of `d_weight`'s product; before that, where
    /// the ISA has no strided-A kernel, the head rows packed for the logits' product.
    a_pack: usize,
    /// Where the ISA has no strided-A kernel, the head rows' transpose packed for the
    /// accumulator's product (else nothing).
    wt_pack: usize,
    /// `E` of a chunk packed as a right operand.
    e_pack: usize,
    /// One walker's slot: statistics, accumulator and packing buffers.
    slot: usize,
    /// The walkers' slots.
    shared: usize,
}

impl Plan {
    fn new(shape: &LmHeadLoss, gemm: &Gemm, threads: usize) -> Self {
        let (h, v, c, r) = (shape.hidden, shape.vocab, shape.block_chunk, shape.token_block);
        let (mr, nr) = (gemm.mr(), gemm.nr());
        let chunks = v.div_ceil(c);
        let walkers = threads.max(1).min(chunks).max(1);
        let x_pack = packed_len(r, nr, panel_stride(h, nr));
        let xb_pack = packed_len(h, nr, panel_stride(r, nr));
        let a_pack = strided_a_pack_len(gemm, c, h).max(packed_len(c, mr, panel_stride(r, mr)));
        let wt_pack = strided_a_pack_len(gemm, h, c);
        let e_pack = packed_len(r, nr, panel_stride(c, nr));
        // max, sum, label logit and rescale factor per token; accᵀ; the three packs (aligned).
        let slot = 4 * r + h * r + a_pack + 16 + wt_pack + 16 + e_pack + 16;
        let shared = walkers * slot;
        Plan { block: r, chunks, walkers, x_pack, xb_pack, a_pack, wt_pack, e_pack, slot, shared }
    }

    /// Floats in all: the block, a shift per token and chunk, the block's lse, the packed
    /// hidden states and the walkers' slots.
    fn len(&self, vocab: usize) -> usize {
        let r = self.block;
        vocab * r + self.chunks * r + r + self.x_pack + 16 + self.xb_pack + 16 + self.shared
    }

    /// Runs `walk(p, chunks)` for every walker `p` and its range of chunks, on the threads.
    fn for_each_walker(&self, parallel: &dyn Parallel, walk: impl Fn(usize, Range<usize>) + Sync) {
        let chunks_of =
            |p: usize| p * self.chunks / self.walkers..(p + 1) * self.chunks / self.walkers;
        if self.walkers == 1 {
            walk(0, chunks_of(0));
        } else {
            parallel.run(self.walkers, &|p| walk(p, chunks_of(p)));
        }
    }
}

/// Floats of scratch the token-block path needs.
pub(super) fn scratch_len(shape: &LmHeadLoss, gemm: &Gemm, threads: usize) -> usize {
    Plan::new(shape, gemm, threads).len(shape.vocab)
}

/// One walker's running state over its chunks, for the block's `R` tokens.
struct Walker<'a> {
    max: &'a mut [f32],
    sum: &'a mut [f32],
    target: &'a mut [f32],
    /// `exp(old max − new max)` of the current chunk (and, while walkers merge, the factor that
    /// brings this walker's state to the common max).
    rescale: &'a mut [f32],
    /// `[hidden, R]`: Σ over the walked entries of `exp(l − max)·W[v]`, per token column.
    acc_t: &'a mut [f32],
    a_pack: &'a mut [f32],
    wt_pack: &'a mut [f32],
    e_pack: &'a mut [f32],
}

impl<'a> Walker<'a> {
    /// The walker of `slot` for a block of `n ≤ R` tokens (the parts keep their places, so a
    /// slot reads the same whatever `n`).
    fn carve(slot: &'a mut [f32], plan: &Plan, h: usize, n: usize) -> Self {
        let r = plan.block;
        let (max, rest) = slot.split_at_mut(r);
        let (sum, rest) = rest.split_at_mut(r);
        let (target, rest) = rest.split_at_mut(r);
        let (rescale, rest) = rest.split_at_mut(r);
        let (acc_t, rest) = rest.split_at_mut(h * r);
        let (a_pack, rest) = take_aligned(rest, plan.a_pack);
        let (wt_pack, rest) = take_aligned(rest, plan.wt_pack);
        let (e_pack, _) = take_aligned(rest, plan.e_pack);
        Walker {
            max: &mut max[..n],
            sum: &mut sum[..n],
            target: &mut target[..n],
            rescale: &mut rescale[..n],
            acc_t: &mut acc_t[..h * n],
            a_pack,
            wt_pack,
            e_pack,
        }
    }
}

/// One walker's part of `d_weight`'s pass: its chunks' values (from entry `v0`), their
/// shifts, and its rows of `d_weight`.
struct WeightGradientPart<'a> {
    v0: usize,
    rows: &'a mut [f32],
    shifts: &'a [f32],
    lse: &'a [f32],
    g: f32,
    d_rows: &'a mut [f32],
    a_pack: &'a mut [f32],
}

/// What every walker of a block reads.
struct BlockInputs<'a> {
    weight: &'a [f32],
    labels: &'a [i32],
    /// `hiddenᵀ` of the block's tokens, packed as the logits' right operand.
    x_t: Packed<'a>,
    /// `hidden` of the block's tokens, packed as `d_weight`'s right operand.
    x: Packed<'a>,
    /// Tokens in this block (`≤ R`).
    n: usize,
    hidden: usize,
    vocab: usize,
    chunk: usize,
}

impl BlockInputs<'_> {
    /// The vocabulary entries of a range of chunks.
    fn entries(&self, chunks: &Range<usize>) -> Range<usize> {
        chunks.start * self.chunk..(chunks.end * self.chunk).min(self.vocab)
    }
}

/// `(token, row of the chunk)` for every token whose label lies in the chunk `v0..v0 + w`.
fn labels_in(labels: &[i32], v0: usize, w: usize) -> impl Iterator<Item = (usize, usize)> + '_ {
    let chunk = v0..v0 + w;
    labels.iter().enumerate().filter_map(move |(i, &label)| {
        label_index(label).filter(|y| chunk.contains(y)).map(|y| (i, y - v0))
    })
}

impl Kernels {
    /// [`Kernels::lm_head_loss_forward_backward`] with `d_weight` through token blocks (see the
    /// module docs). `valid > 0`; operands and scratch are checked by the caller. Returns the
    /// sum over valid tokens of `lse − target`, in f64.
    #[allow(clippy::too_many_arguments)] // operands, gradients, scratch, threads
    pub(super) fn token_blocks_forward_backward(
        &self,
        ops: Operands<'_>,
        weight: &[f32],
        g: f32,
        d_hidden: &mut [f32],
        d_weight: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) -> f64 {
        let shape = ops.shape;
        let (t, h, v) = (shape.tokens, shape.hidden, shape.vocab);
        let gemm = self.gemm();
        let (mr, nr) = (gemm.mr(), gemm.nr());
        let plan = Plan::new(shape, gemm, parallel.threads());
        let r = plan.block;
        let (block, rest) = scratch.split_at_mut(v * r);
        let (shifts, rest) = rest.split_at_mut(plan.chunks * r);
        let (lse, rest) = rest.split_at_mut(r);
        let (x_pack, rest) = take_aligned(rest, plan.x_pack);
        let (xb_pack, rest) = take_aligned(rest, plan.xb_pack);
        let slots = &mut rest[..plan.shared];
        let mut total = 0.0f64;
        for t0 in (0..t).step_by(r) {
            let n = r.min(t - t0);
            let x = Mat::row_major(&ops.hidden[t0 * h..(t0 + n) * h], n, h, h);
            let labels = &ops.labels[t0..t0 + n];
            crate::vectorize::vectorized!(self.isa(), {
                pack_b_full(gemm, x.t(), x_pack, panel_stride(h, nr));
                pack_b_full(gemm, x, xb_pack, panel_stride(n, nr));
            });
            let inputs = BlockInputs {
                weight,
                labels,
                x_t: Packed::new(x_pack, panel_stride(h, nr)),
                x: Packed::new(xb_pack, panel_stride(n, nr)),
                n,
                hidden: h,
                vocab: v,
                chunk: shape.block_chunk,
            };
            let block = &mut block[..v * n];
            let shifts = &mut shifts[..plan.chunks * n];
            self.walk_block(&inputs, &plan, block, shifts, slots, parallel);
            // The merged state is walker 0's.
            let w0 = Walker::carve(&mut slots[..plan.slot], &plan, h, n);
            let lse = &mut lse[..n];
            for i in 0..n {
                lse[i] = w0.max[i] + libm::logf(w0.sum[i]);
                if labels[i] != super::IGNORE_INDEX {
                    total += f64::from(lse[i]) - f64::from(w0.target[i]);
                }
            }
            let d_rows = &mut d_hidden[t0 * h..(t0 + n) * h];
            finish_d_hidden(&inputs, w0.acc_t, w0.sum, g, d_rows);
            // d_weight += dlᵀ·hidden, each walker its chunks' rows.
            let (block, shifts) = (SharedSlice::new(block), &*shifts);
            let (d_weight, shared_slots) =
                (SharedSlice::new(&mut *d_weight), SharedSlice::new(&mut *slots));
            let lse = &*lse;
            plan.for_each_walker(parallel, |p, chunks| {
                let entries = inputs.entries(&chunks);
                // SAFETY: walker `p` takes its own slot and its own chunks' rows of the block
                // and of d_weight; the walkers' ranges are disjoint.
                let (slot, rows, d_rows) = unsafe {
                    (
                        shared_slots.part(p * plan.slot..(p + 1) * plan.slot),
                        block.part(entries.start * n..entries.end * n),
                        d_weight.part(entries.start * h..entries.end * h),
                    )
                };
                let walker = Walker::carve(slot, &plan, h, n);
                let shifts = &shifts[chunks.start * n..chunks.end * n];
                let step = WeightGradientPart {
                    v0: entries.start,
                    rows,
                    shifts,
                    lse,
                    g,
                    d_rows,
                    a_pack: walker.a_pack,
                };
                crate::vectorize::vectorized!(
                    self.isa(),
                    self.weight_gradient_chunks(&inputs, step, mr)
                );
            });
        }
        total
    }

    /// The walk of one block's vocabulary, split between the walkers, merged into walker 0.
    fn walk_block(
        &self,
        inputs: &BlockInputs<'_>,
        plan: &Plan,
        block: &mut [f32],
        shifts: &mut [f32],
        slots: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        let (n, h) = (inputs.n, inputs.hidden);
        {
            let block = SharedSlice::new(&mut *block);
            let shifts = SharedSlice::new(&mut *shifts);
            let shared_slots = SharedSlice::new(&mut *slots);
            plan.for_each_walker(parallel, |p, chunks| {
                let entries = inputs.entries(&chunks);
                // SAFETY: walker `p` takes its own slot, and the block rows and shifts of its
                // own chunks; the ranges of different walkers are disjoint.
                let (slot, rows, shifts) = unsafe {
                    (
                        shared_slots.part(p * plan.slot..(p + 1) * plan.slot),
                        block.part(entries.start * n..entries.end * n),
                        shifts.part(chunks.start * n..chunks.end * n),
                    )
                };
                let mut walker = Walker::carve(slot, plan, h, n);
                crate::vectorize::vectorized!(
                    self.isa(),
                    self.walk_chunks(inputs, entries.start, rows, shifts, &mut walker)
                );
            });
        }
        let (first, others) = slots[..plan.walkers * plan.slot].split_at_mut(plan.slot);
        let mut w0 = Walker::carve(first, plan, h, n);
        for slot in others.chunks_exact_mut(plan.slot) {
            let mut wp = Walker::carve(slot, plan, h, n);
            crate::vectorize::vectorized!(self.isa(), merge(&mut w0, &mut wp, n));
        }
    }

    /// One walker's share of `d_weight += dlᵀ·hidden`: per chunk, its values `exp(l − shift)`
    /// become `dlᵀ` (see [`scale_columns`]), are packed, and multiply the packed hidden states
    /// into the chunk's rows of `d_weight`, while the next chunk's rows are fetched.
    #[inline(always)]
    fn weight_gradient_chunks(
        &self,
        inputs: &BlockInputs<'_>,
        step: WeightGradientPart<'_>,
        mr: usize,
    ) {
        let (n, h, c) = (inputs.n, inputs.hidden, inputs.chunk);
        let gemm = self.gemm();
        let WeightGradientPart { v0, rows, shifts, lse, g, d_rows, a_pack } = step;
        let sa = panel_stride(n, mr);
        let mut d_rows = d_rows;
        for (k, (lt, shift)) in rows.chunks_mut(c * n).zip(shifts.chunks_exact(n)).enumerate() {
            let w = lt.len() / n;
            scale_columns(lt, v0 + k * c, shift, lse, inputs.labels, g, n);
            pack_a_full(gemm, Mat::row_major(&*lt, w, n, n), a_pack, sa);
            let (current, rest) = core::mem::take(&mut d_rows).split_at_mut(w * h);
            let next_rows = (rest.len() / h.max(1)).min(c);
            let next =
                (next_rows > 0).then(|| Mat::row_major(&rest[..next_rows * h], next_rows, h, h));
            let out = MatMut::row_major(current, w, h, h);
            run_packed_ahead(gemm, 1.0, Packed::new(a_pack, sa), inputs.x, n, 1.0, out, next);
            d_rows = rest;
        }
    }

    /// One walker's chunks: entries `v0..` whose `[w, n]` logits rows are `rows` and whose
    /// shifts are `shifts` (`n` per chunk).
    #[inline(always)]
    fn walk_chunks(
        &self,
        inputs: &BlockInputs<'_>,
        v0: usize,
        rows: &mut [f32],
        shifts: &mut [f32],
        walker: &mut Walker<'_>,
    ) {
        let (n, h, c) = (inputs.n, inputs.hidden, inputs.chunk);
        let gemm = self.gemm();
        let nr = gemm.nr();
        walker.max.fill(f32::NEG_INFINITY);
        walker.sum.fill(0.0);
        walker.target.fill(0.0);
        let end = v0 + rows.len() / n.max(1);
        for (k, (lt, shift)) in rows.chunks_mut(c * n).zip(shifts.chunks_exact_mut(n)).enumerate() {
            let start = v0 + k * c;
            let w = lt.len() / n;
            let head = Mat::row_major(&inputs.weight[start * h..(start + w) * h], w, h, h);
            // L_cᵀ = W_c·hiddenᵀ, W_c read in place where the micro-kernel can, while the next
            // chunk's rows are fetched from memory.
            let out = MatMut::row_major(&mut *lt, w, n, n);
            let (next, next_end) = (start + w, (start + w + c).min(end));
            let next = (next < next_end).then(|| {
                Mat::row_major(&inputs.weight[next * h..next_end * h], next_end - next, h, h)
            });
            run_strided_a(gemm, 1.0, head, inputs.x_t, 0.0, out, walker.a_pack, next);
            let first = k == 0;
            online_columns(lt, start, inputs.labels, walker, shift, first, n);
            // accᵀ (=, then +=) W_cᵀ·E, W_cᵀ read in place where the micro-kernel can.
            let sb = panel_stride(w, nr);
            pack_b_full(gemm, Mat::row_major(&*lt, w, n, n), walker.e_pack, sb);
            let out = MatMut::row_major(&mut *walker.acc_t, h, n, n);
            let e = Packed::new(walker.e_pack, sb);
            let beta = if first { 0.0 } else { 1.0 };
            run_strided_a(gemm, 1.0, head.t(), e, beta, out, walker.wt_pack, None);
        }
    }
}

/// Folds one chunk's logits `lt` (`[w, n]`, entries from `v0`) into the walker's per-token max,
/// sum and label logit; turns them into `exp(l − max)` in place; rescales the accumulator's
/// columns when their max grew; records the shifts used.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the chunk, its place, the walker's state
fn online_columns(
    lt: &mut [f32],
    v0: usize,
    labels: &[i32],
    walker: &mut Walker<'_>,
    shift: &mut [f32],
    first: bool,
    n: usize,
) {
    let w = lt.len() / n;
    for (i, row) in labels_in(labels, v0, w) {
        walker.target[i] = lt[row * n + i];
    }
    shift.copy_from_slice(walker.max);
    for row in lt.chunks_exact(n) {
        for (m, &l) in shift.iter_mut().zip(row) {
            *m = m.max(l);
        }
    }
    let mut grew = false;
    let state = walker.max.iter_mut().zip(walker.sum.iter_mut()).zip(walker.rescale.iter_mut());
    for (((max, sum), rescale), &new) in state.zip(shift.iter()) {
        let f = math::exp(*max - new);
        grew |= f != 1.0;
        *rescale = f;
        *sum *= f;
        *max = new;
    }
    if !first && grew {
        for row in walker.acc_t.chunks_exact_mut(n) {
            for (a, &f) in row.iter_mut().zip(walker.rescale.iter()) {
                *a *= f;
            }
        }
    }
    // Ignored tokens are summed too; their loss, d_hidden and dl are left out at the end.
    let sum = &mut *walker.sum;
    for row in lt.chunks_exact_mut(n) {
        for ((x, &s), total) in row.iter_mut().zip(shift.iter()).zip(sum.iter_mut()) {
            let e = math::exp(*x - s);
            *x = e;
            *total += e;
        }
    }
}

/// Merges walker `other`'s state into `into` (the split vocabulary's reduction): both sums and
/// accumulators rescaled to the common max.
#[inline(always)]
fn merge(into: &mut Walker<'_>, other: &mut Walker<'_>, n: usize) {
    for i in 0..n {
        let m = into.max[i].max(other.max[i]);
        let factor = |max: f32| if max == f32::NEG_INFINITY { 0.0 } else { math::exp(max - m) };
        let (fa, fb) = (factor(into.max[i]), factor(other.max[i]));
        into.sum[i] = into.sum[i] * fa + other.sum[i] * fb;
        into.max[i] = m;
        into.target[i] += other.target[i];
        into.rescale[i] = fa;
        other.rescale[i] = fb;
    }
    let (fa, fb) = (&*into.rescale, &*other.rescale);
    for (ra, rb) in into.acc_t.chunks_exact_mut(n).zip(other.acc_t.chunks_exact(n)) {
        for i in 0..n {
            ra[i] = ra[i] * fa[i] + rb[i] * fb[i];
        }
    }
}

/// `d_hidden = g·(acc/sum − W[label])` per valid token, zero for ignored ones (`acc_t` is
/// `[hidden, n]`).
#[inline(always)]
fn finish_d_hidden(
    inputs: &BlockInputs<'_>,
    acc_t: &[f32],
    sum: &[f32],
    g: f32,
    d_rows: &mut [f32],
) {
    let (n, h) = (inputs.n, inputs.hidden);
    for (i, row) in d_rows.chunks_exact_mut(h).enumerate() {
        match label_index(inputs.labels[i]) {
            None => row.fill(0.0),
            Some(y) => {
                let inv = 1.0 / sum[i];
                let w_row = &inputs.weight[y * h..(y + 1) * h];
                for (j, (d, &wv)) in row.iter_mut().zip(w_row).enumerate() {
                    *d = g * (acc_t[j * n + i] * inv - wv);
                }
            }
        }
    }
}

/// One chunk's `[w, n]` values `exp(l − shift)` (entries from `v0`) become
/// `g·(exp(l − lse) − onehot)`, zero for ignored tokens.
#[inline(always)]
fn scale_columns(
    lt: &mut [f32],
    v0: usize,
    shift: &[f32],
    lse: &[f32],
    labels: &[i32],
    g: f32,
    n: usize,
) {
    const GROUP: usize = 64;
    let w = lt.len() / n;
    let mut factor = [0.0f32; GROUP];
    for c0 in (0..n).step_by(GROUP) {
        let cols = GROUP.min(n - c0);
        for (j, f) in factor[..cols].iter_mut().enumerate() {
            let i = c0 + j;
            *f = if labels[i] == super::IGNORE_INDEX {
                0.0
            } else {
                g * math::exp(shift[i] - lse[i])
            };
        }
        for row in lt.chunks_exact_mut(n) {
            for (x, &f) in row[c0..c0 + cols].iter_mut().zip(&factor[..cols]) {
                *x *= f;
            }
        }
    }
    for (i, row) in labels_in(labels, v0, w) {
        lt[row * n + i] -= g;
    }
}
