//! Causal self-attention, forward and backward, flash-style: tiled, with an online softmax in the
//! forward and the scores recomputed in the backward, so no `seq × seq` matrix ever exists.
//!
//! # What is computed
//! For batch `b`, query head `h` (which reads key/value head `h / (n_heads / n_kv_heads)`:
//! grouped-query attention) and query position `i`:
//! `S[i, j] = scale·q_i·k_j`, `P[i, ·] = softmax_j(S[i, ·])` over the visible keys only, and
//! `out_i = Σ_j P[i, j]·v_j`. Key `j` is visible to query `i` iff `j ≤ i` (causal), `i − j <
//! window` when a sliding window is set (Hugging Face's semantics), and the key is not padding
//! (`key_mask[b·seq + j]` is true; it plays the part of Hugging Face's `attention_mask`).
//! The forward also saves `lse_i = log Σ_j exp(S[i, j])`, `[batch, n_heads, seq]`.
//!
//! A query row that sees no key at all (possible only through padding: every key up to it is
//! padding, or every key in its window is) produces `out_i = 0` and `lse_i = −∞`; its `dq_i` is
//! 0 and it adds nothing to `dk` or `dv`.
//!
//! Layouts are those the projections produce: `q`, `out`, `d_out`, `dq` are
//! `[batch, seq, n_heads, head_dim]`; `k`, `v`, `dk`, `dv` are `[batch, seq, n_kv_heads,
//! head_dim]`. A head is a strided view of them.
//!
//! # Algorithm
//! Queries are cut into tiles of [`BR`] rows. For one (batch, head, query tile) the visible keys
//! form a range, cut into blocks: [`BC`]-wide blocks of keys before the tile, then the diagonal
//! square cut into four strips of rows, each against the keys up to its last row, so about an
//! eighth of the square, not half, is spent on scores the causal mask removes. Blocks above the
//! diagonal (or left of the window) are never computed; the scores of a block that the masks cut
//! are masked elementwise.
//!
//! Every product runs the crate's GEMM micro-kernel on packed operands
//! (`gemm::packed`, on the task's thread), so that nothing is packed once per product:
//! `K` and `V` of a key/value head are packed once for all its heads and tiles, `Q` and `dO` once
//! per tile (a strip starts on a whole panel of them: the strips' rows are aligned to the panel
//! width the pass reads them in), and the score-sized operands are never packed at all: the
//! score product writes its
//! tiles straight in the panel layout the next product reads, and the elementwise passes (mask,
//! softmax, `dS`) work in place in it. A block's products start at the last key at or before its
//! first that is a multiple of a small alignment (so a packed head can be read from a whole
//! panel, 64-byte aligned); the few keys in front are masked. The orientations:
//! - Forward (`forward.rs`), per block, on transposed tiles (keys as rows): `Sᵀ = scale·K·Qᵀ`,
//!   mask, online softmax per query column (running max `m` and sum `l`; the output accumulator
//!   is rescaled by `exp(m_old − m_new)` when the max grows), `Oᵀ += Vᵀ·Pᵀ`. At the end of the
//!   tile `out = O / l`, `lse = m + ln l`.
//! - Backward (`backward.rs`, FlashAttention-2), per tile `D_i = dO_i·O_i`, then per block:
//!   `P = exp(scale·Q·Kᵀ − lse)` (masked entries 0), `dVᵀ += dOᵀ·P`, `dP = dO·Vᵀ`,
//!   `dS = P ∘ (dP − D)`, `dKᵀ += scale·Qᵀ·dS`, `dQ += scale·dS·K`; `dQ` is written at the end
//!   of the tile, `dKᵀ`/`dVᵀ` when the task is done with the key/value group.
//!
//! # Memory
//! Per task: one to three `BR × BC` score tiles (in panels) and a few `head_dim × BR` tiles;
//! the packed `K` and `V` of one key/value head (`head_dim × seq` each, three of them in the
//! backward) and in the backward the `dKᵀ`/`dVᵀ` accumulators of one key/value head
//! (`head_dim × seq` each, twice when the work is split between tasks): O(seq), never O(seq²).
//! [`Kernels::attention_forward_scratch_len`] and [`Kernels::attention_backward_scratch_len`]
//! give the exact sizes.
//!
//! # Parallelism
//! The work items are the (batch, query head, query tile) triples, ordered so the heads of one
//! key/value group are adjacent; each task takes a contiguous range of them, balanced by the
//! number of scores each tile computes. Tasks write disjoint rows of `out`, `lse` and `dq`. The
//! `dk`/`dv` of a group are accumulated by one task in its scratch and written out when it owns
//! the whole group; a group split between tasks leaves partials in their scratch, summed in
//! task order after the run (so results do not depend on which thread ran what).

mod backward;
mod forward;

use core::ops::Range;

use crate::kernels::Kernels;
use crate::parallel::{Parallel, SharedSlice};
use crate::vectorize::vectorized;

/// Query rows per tile.
pub const BR: usize = 128;
/// Keys per block left of the diagonal (at least [`BR`]).
pub const BC: usize = 256;
/// The diagonal square of a tile is cut into this many strips of rows, each against the keys up
/// to its last row, when it has at least [`SPLIT_MIN`] rows: a strip of `n/s` rows wastes
/// about `n²/2s²` masked scores, `n²/2s` over the square.
const DIAGONAL_STRIPS: usize = 4;
/// The diagonal square of a tile is split only when it has at least this many rows.
const SPLIT_MIN: usize = 64;
/// The row alignment of the strips of a split diagonal square when balancing tasks (the passes
/// align them to their panels, [`strip_align`]).
const SPLIT_ALIGN: usize = 16;
/// Scores' worth of fixed cost charged per tile when balancing tasks.
const TILE_OVERHEAD: u64 = 4096;

const _: () = assert!(BC >= BR && BR >= SPLIT_MIN && SPLIT_MIN >= 2 * SPLIT_ALIGN);
const _: () = assert!(DIAGONAL_STRIPS >= 1 && DIAGONAL_STRIPS < 256);

/// The sizes of one attention call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AttentionShape {
    /// Sequences in the batch.
    pub batch: usize,
    /// Positions per sequence (queries and keys alike).
    pub seq: usize,
    /// Query heads.
    pub n_heads: usize,
    /// Key/value heads; divides `n_heads` (equal for multi-head attention, 1 for multi-query).
    pub n_kv_heads: usize,
    /// Elements per head.
    pub head_dim: usize,
    /// Sliding window: key `j` is visible to query `i` only if `i − j < window` (`None`: no
    /// window; `Some(0)` is rejected).
    pub window: Option<usize>,
    /// Factor on `q·k`: `1/√head_dim` for GPT-2 and Qwen 2.5, `query_pre_attn_scalar^−½` for
    /// Gemma 3.
    pub scale: f32,
}

impl AttentionShape {
    /// Multi-head or grouped-query attention without a window, scaled by `1/√head_dim`.
    pub fn new(
        batch: usize,
        seq: usize,
        n_heads: usize,
        n_kv_heads: usize,
        head_dim: usize,
    ) -> Self {
        let scale = 1.0 / libm::sqrtf(head_dim.max(1) as f32);
        AttentionShape { batch, seq, n_heads, n_kv_heads, head_dim, window: None, scale }
    }

    /// The same shape with a sliding window.
    pub fn with_window(self, window: Option<usize>) -> Self {
        AttentionShape { window, ..self }
    }

    /// The same shape with another scale.
    pub fn with_scale(self, scale: f32) -> Self {
        AttentionShape { scale, ..self }
    }

    /// Floats of `q`, `out`, `d_out` and `dq`: `batch·seq·n_heads·head_dim`.
    pub fn q_len(&self) -> usize {
        product("q", &[self.batch, self.seq, self.n_heads, self.head_dim])
    }

    /// Floats of `k`, `v`, `dk` and `dv`: `batch·seq·n_kv_heads·head_dim`.
    pub fn kv_len(&self) -> usize {
        product("k", &[self.batch, self.seq, self.n_kv_heads, self.head_dim])
    }

    /// Floats of the saved log-sum-exp: `batch·n_heads·seq`.
    pub fn lse_len(&self) -> usize {
        product("lse", &[self.batch, self.n_heads, self.seq])
    }

    /// Entries of a key mask: `batch·seq`.
    pub fn mask_len(&self) -> usize {
        product("key_mask", &[self.batch, self.seq])
    }

    /// (query, key) pairs visible through the causal mask and the window (padding aside), over
    /// every sequence and query head: the scores the attention needs. Each of its products
    /// (`Q·Kᵀ` and `P·V` forward; `Pᵀ·dO`, `dO·Vᵀ`, `dS·K`, `dSᵀ·Q` backward) costs
    /// `2·head_dim` FLOPs per visible pair.
    pub fn visible_pairs(&self) -> u64 {
        let t = self.seq as u64;
        let per_head = match self.window {
            Some(w) if (w as u64) < t => {
                let w = w as u64;
                // Rows 0..w see i + 1 keys; the remaining t − w rows see w each.
                w * (w + 1) / 2 + (t - w) * w
            }
            _ => t * (t + 1) / 2,
        };
        per_head * self.batch as u64 * self.n_heads as u64
    }

    /// Query heads per key/value head.
    fn group(&self) -> usize {
        self.n_heads / self.n_kv_heads
    }

    /// Asserts the shape itself is consistent.
    fn check(&self, what: &str) {
        assert!(
            self.n_heads > 0 && self.n_kv_heads > 0 && self.head_dim > 0,
            "{what}: n_heads ({}), n_kv_heads ({}) and head_dim ({}) must be positive",
            self.n_heads,
            self.n_kv_heads,
            self.head_dim
        );
        assert!(
            self.n_heads.is_multiple_of(self.n_kv_heads),
            "{what}: n_heads {} is not a multiple of n_kv_heads {}",
            self.n_heads,
            self.n_kv_heads
        );
        assert!(self.window != Some(0), "{what}: window is 0 (no key would be visible)");
        // Every size fits in usize (panics with the operand's name otherwise).
        let _ = (self.q_len(), self.kv_len(), self.lse_len(), self.mask_len());
    }
}

/// The product of `dims`, asserting it does not overflow.
fn product(what: &str, dims: &[usize]) -> usize {
    dims.iter().try_fold(1usize, |acc, &d| acc.checked_mul(d)).unwrap_or_else(|| {
        panic!("attention: the size of {what} ({dims:?}) overflows usize");
    })
}

/// The inputs of an attention call, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct AttentionInputs<'a> {
    /// Queries, `[batch, seq, n_heads, head_dim]`.
    pub q: &'a [f32],
    /// Keys, `[batch, seq, n_kv_heads, head_dim]`.
    pub k: &'a [f32],
    /// Values, `[batch, seq, n_kv_heads, head_dim]`.
    pub v: &'a [f32],
    /// Padding, `[batch, seq]`: `true` for a real token, `false` for a key no query may attend
    /// (Hugging Face's `attention_mask`). `None`: no padding.
    pub key_mask: Option<&'a [bool]>,
}

/// The gradients the backward writes (overwriting whatever they held).
#[derive(Debug)]
pub struct AttentionGrads<'a> {
    /// `∂L/∂q`, `[batch, seq, n_heads, head_dim]`.
    pub dq: &'a mut [f32],
    /// `∂L/∂k`, `[batch, seq, n_kv_heads, head_dim]` (summed over the query heads of a group).
    pub dk: &'a mut [f32],
    /// `∂L/∂v`, `[batch, seq, n_kv_heads, head_dim]` (summed over the query heads of a group).
    pub dv: &'a mut [f32],
}

/// `n` rounded up to a multiple of 16, plus 16 more if that is a multiple of 256.
fn padded(n: usize) -> usize {
    let n = n.next_multiple_of(16);
    if n.is_multiple_of(256) { n + 16 } else { n }
}

/// `dst[c·dst_stride + r] = src[r·src_stride + c]` for `r < rows`, `c < cols`, in 8×8 blocks
/// (eight row loads, eight column stores) so the compiler can keep a block in registers.
#[inline(always)]
fn transpose(
    src: &[f32],
    src_stride: usize,
    rows: usize,
    cols: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    const B: usize = 8;
    let mut r0 = 0;
    while r0 + B <= rows {
        let mut c0 = 0;
        while c0 + B <= cols {
            let mut block = [[0.0f32; B]; B];
            for (u, row) in block.iter_mut().enumerate() {
                row.copy_from_slice(&src[(r0 + u) * src_stride + c0..][..B]);
            }
            for c in 0..B {
                let out = &mut dst[(c0 + c) * dst_stride + r0..][..B];
                for (o, row) in out.iter_mut().zip(&block) {
                    *o = row[c];
                }
            }
            c0 += B;
        }
        for c in c0..cols {
            for u in 0..B {
                dst[c * dst_stride + r0 + u] = src[(r0 + u) * src_stride + c];
            }
        }
        r0 += B;
    }
    for r in r0..rows {
        for (c, &v) in src[r * src_stride..][..cols].iter().enumerate() {
            dst[c * dst_stride + r] = v;
        }
    }
}

/// The keys of `blk` that query `i` sees (causal and window; padding aside), relative to
/// `blk.k0`; an empty range is `(0, 0)`.
#[inline(always)]
fn visible_keys(geo: &Geometry, i: usize, blk: &Block) -> (usize, usize) {
    let lo = geo.first_key(i).max(blk.k0);
    let hi = (i + 1).min(blk.k1);
    if lo < hi { (lo - blk.k0, hi - blk.k0) } else { (0, 0) }
}

/// The queries of `blk` that see key `key` (causal and window; padding aside), relative to
/// `blk.r0`; an empty range is `(0, 0)`.
#[inline(always)]
fn visible_queries(geo: &Geometry, key: usize, blk: &Block) -> (usize, usize) {
    let lo = key.max(blk.r0);
    let hi = geo.window.map_or(blk.r1, |w| blk.r1.min(key.saturating_add(w)));
    if lo < hi { (lo - blk.r0, hi - blk.r0) } else { (0, 0) }
}

/// One rectangle of scores: query rows `r0..r1` against keys `k0..k1` (absolute positions).
#[derive(Debug, Clone, Copy)]
struct Block {
    r0: usize,
    r1: usize,
    k0: usize,
    k1: usize,
}

/// The shape with everything the tasks derive from it.
#[derive(Debug, Clone, Copy)]
struct Geometry {
    batch: usize,
    seq: usize,
    heads: usize,
    kv_heads: usize,
    group: usize,
    dim: usize,
    window: Option<usize>,
    scale: f32,
    /// Query tiles per (batch, head).
    tiles: usize,
    /// Rows of the largest tile (`min(BR, seq)`).
    br: usize,
    /// Keys of the widest block (`min(BC, seq)`).
    bc: usize,
    /// Row stride of the `head_dim × seq` buffers (`seq` rounded up, and kept off multiples of
    /// 256 floats so the rows of a transpose do not all land in the same cache sets).
    ld: usize,
}

impl Geometry {
    fn new(shape: &AttentionShape) -> Self {
        Geometry {
            batch: shape.batch,
            seq: shape.seq,
            heads: shape.n_heads,
            kv_heads: shape.n_kv_heads,
            group: shape.group(),
            dim: shape.head_dim,
            window: shape.window,
            scale: shape.scale,
            tiles: shape.seq.div_ceil(BR),
            br: BR.min(shape.seq),
            bc: BC.min(shape.seq),
            ld: padded(shape.seq),
        }
    }

    /// Work items: (batch, query head, query tile) triples.
    fn items(&self) -> usize {
        self.batch * self.heads * self.tiles
    }

    /// Item `x` as (batch, query head, tile); items run over tiles, then heads, then batch.
    fn item(&self, x: usize) -> (usize, usize, usize) {
        let unit = x / self.tiles;
        (unit / self.heads, unit % self.heads, x % self.tiles)
    }

    /// The key/value group of item `x`: `batch·n_kv_heads + kv head`.
    fn group_of(&self, x: usize) -> usize {
        x / (self.tiles * self.group)
    }

    /// Items of group `g`.
    fn group_items(&self, g: usize) -> Range<usize> {
        let per = self.tiles * self.group;
        g * per..(g + 1) * per
    }

    /// Index of `q[b, pos, h, 0]` (also of `out`, `d_out`, `dq`).
    fn q_at(&self, b: usize, pos: usize, h: usize) -> usize {
        ((b * self.seq + pos) * self.heads + h) * self.dim
    }

    /// Index of `k[b, pos, g, 0]` (also of `v`, `dk`, `dv`).
    fn kv_at(&self, b: usize, pos: usize, g: usize) -> usize {
        ((b * self.seq + pos) * self.kv_heads + g) * self.dim
    }

    /// Floats between consecutive positions of `q`.
    fn q_stride(&self) -> usize {
        self.heads * self.dim
    }

    /// Floats between consecutive positions of `k`.
    fn kv_stride(&self) -> usize {
        self.kv_heads * self.dim
    }

    /// Query rows of tile `t`.
    fn tile(&self, t: usize) -> Range<usize> {
        t * BR..self.seq.min((t + 1) * BR)
    }

    /// The first key any row of `rows` can see (the window's edge for the first row).
    fn first_key(&self, first_row: usize) -> usize {
        self.window.map_or(0, |w| (first_row + 1).saturating_sub(w))
    }

    /// The blocks of query tile `rows`, in order: full-width blocks left of the diagonal, then
    /// the diagonal square (in [`DIAGONAL_STRIPS`] strips when it is large, starting at multiples
    /// of `align` rows from the tile's top).
    fn blocks(&self, rows: Range<usize>, align: usize) -> Blocks {
        let next_key = self.first_key(rows.start);
        Blocks { geo: *self, rows, align, next_key, diagonal: 0 }
    }

    /// What tile `t` costs, in scores computed plus a fixed charge.
    fn tile_cost(&self, t: usize) -> u64 {
        let mut cost = TILE_OVERHEAD;
        for blk in self.blocks(self.tile(t), SPLIT_ALIGN) {
            cost += ((blk.r1 - blk.r0) * (blk.k1 - blk.k0)) as u64;
        }
        cost
    }
}

/// The blocks of one query tile (see [`Geometry::blocks`]). An iterator rather than a callback
/// so the loop body stays inside the task, compiled with its ISA's features.
#[derive(Debug, Clone)]
struct Blocks {
    geo: Geometry,
    rows: Range<usize>,
    /// Strips start at multiples of this many rows from the tile's top.
    align: usize,
    /// The first key of the next block left of the diagonal.
    next_key: usize,
    /// Diagonal strips already produced (or skipped as empty).
    diagonal: usize,
}

impl Iterator for Blocks {
    type Item = Block;

    #[inline(always)]
    fn next(&mut self) -> Option<Block> {
        let (q0, q1) = (self.rows.start, self.rows.end);
        if self.next_key < q0 {
            let (k0, k1) = (self.next_key, q0.min(self.next_key + BC));
            self.next_key = k1;
            return Some(Block { r0: q0, r1: q1, k0, k1 });
        }
        let n = q1 - q0;
        let strips = if n >= SPLIT_MIN { DIAGONAL_STRIPS } else { 1 };
        // Strip `s` starts at row `edge(s)`; rounding may leave a strip empty, which is skipped.
        let edge = |s: usize| {
            if s == 0 { q0 } else { q1.min(q0 + (n * s / strips).next_multiple_of(self.align)) }
        };
        while self.diagonal < strips {
            let s = self.diagonal;
            self.diagonal += 1;
            let (r0, r1) = (edge(s), if s + 1 == strips { q1 } else { edge(s + 1) });
            if r0 < r1 {
                return Some(Block { r0, r1, k0: self.geo.first_key(r0).max(q0), k1: r1 });
            }
        }
        None
    }
}

/// How the items are split between tasks: contiguous ranges of about equal cost.
#[derive(Debug, Clone, Copy)]
struct Partition {
    parts: usize,
    /// Cost of one (batch, head)'s tiles.
    unit_cost: u64,
    /// (batch, head) pairs.
    units: usize,
}

impl Partition {
    fn new(geo: &Geometry, threads: usize) -> Self {
        let parts = threads.max(1).min(geo.items().max(1));
        let unit_cost = (0..geo.tiles).map(|t| geo.tile_cost(t)).sum();
        Partition { parts, unit_cost, units: geo.batch * geo.heads }
    }

    /// The first item of part `p` (`p == parts` gives the item count): the number of items whose
    /// cumulative cost before them is below `p/parts` of the total.
    fn boundary(&self, geo: &Geometry, p: usize) -> usize {
        // u64 throughout: costs reach seq²·batch·heads, beyond a 32-bit usize.
        let (parts, units) = (self.parts as u64, self.units as u64);
        let target = p as u64 * units; // in units of unit_cost / parts
        let unit = target / parts;
        if unit >= units {
            return geo.items();
        }
        let mut before = unit * self.unit_cost;
        let mut x = unit as usize * geo.tiles;
        for t in 0..geo.tiles {
            if before * parts >= target * self.unit_cost {
                break;
            }
            before += geo.tile_cost(t);
            x += 1;
        }
        x
    }

    /// The items of part `p`.
    fn range(&self, geo: &Geometry, p: usize) -> Range<usize> {
        self.boundary(geo, p)..self.boundary(geo, p + 1)
    }
}

/// Runs `task(p, items of p)` for every part, on `parallel` when there is more than one.
fn run_parts(
    geo: &Geometry,
    partition: &Partition,
    parallel: &dyn Parallel,
    task: impl Fn(usize, Range<usize>) + Sync,
) {
    let run = |p: usize| {
        let items = partition.range(geo, p);
        if !items.is_empty() {
            task(p, items);
        }
    };
    match partition.parts {
        0 => {}
        1 => run(0),
        parts => parallel.run(parts, &run),
    }
}

/// Asserts `len == want`, naming the operand.
#[track_caller]
fn check_len(what: &str, operand: &str, len: usize, want: usize, shape: &AttentionShape) {
    assert!(
        len == want,
        "{what}: {operand} has {len} elements, the shape needs {want} (batch {}, seq {}, \
         n_heads {}, n_kv_heads {}, head_dim {})",
        shape.batch,
        shape.seq,
        shape.n_heads,
        shape.n_kv_heads,
        shape.head_dim
    );
}

/// Asserts the inputs match the shape.
#[track_caller]
fn check_inputs(what: &str, shape: &AttentionShape, x: &AttentionInputs<'_>) {
    shape.check(what);
    check_len(what, "q", x.q.len(), shape.q_len(), shape);
    check_len(what, "k", x.k.len(), shape.kv_len(), shape);
    check_len(what, "v", x.v.len(), shape.kv_len(), shape);
    if let Some(mask) = x.key_mask {
        check_len(what, "key_mask", mask.len(), shape.mask_len(), shape);
    }
}

/// Strips of a split diagonal square start at a multiple of this many rows from the tile's top,
/// for a pass that packs the tile's queries in panels `width` wide: a strip then reads whole
/// panels of the tile's one packing, and (as for keys, [`key_align`]) a depth offset of
/// `row·width` floats in panels the other way round stays on a 64-byte boundary.
/// (A coarse alignment merges strips: fewer of them, more masked work, the same result.)
fn strip_align(width: usize) -> usize {
    key_align(width)
}

/// The first multiple of this at or below a block's first key is where its packed products
/// start, for panels `width` wide over the keys: a whole panel, and a depth offset of
/// `key·width` floats on a 64-byte boundary in panels the other way round. The keys between it
/// and the block's first key are computed and masked.
fn key_align(width: usize) -> usize {
    let other = 16 / gcd(width, 16);
    width / gcd(width, other) * other
}

fn gcd(a: usize, b: usize) -> usize {
    if b == 0 { a } else { gcd(b, a % b) }
}

impl Kernels {
    /// Floats of scratch [`Kernels::attention_forward`] needs for `shape` on up to `threads`
    /// threads: per task, the packed `K` and `Vᵀ` of a key/value head (`head_dim × seq` each),
    /// the packed `Qᵀ`, the output accumulator and the output rows of a tile (`head_dim × BR`
    /// each), a score tile in panels (about `BC × BR`) and four statistics per query. Linear in
    /// `seq`.
    pub fn attention_forward_scratch_len(&self, shape: &AttentionShape, threads: usize) -> usize {
        shape.check("attention_forward_scratch_len");
        let geo = Geometry::new(shape);
        Partition::new(&geo, threads).parts * forward::task_len(self.gemm(), &geo)
    }

    /// Floats of scratch [`Kernels::attention_backward`] needs for `shape` on up to `threads`
    /// threads: per task, three score tiles in panels (about `BR × BC`: `P`, `dS` and `dS`
    /// transposed), a `dQ` accumulator and four packed `head_dim × BR` tiles (`Q`, `dO` both
    /// ways), the packed `Kᵀ`, `Vᵀ` and `K` of one key/value head and one or two pairs of
    /// `dKᵀ`/`dVᵀ` accumulators (`head_dim × seq` each). Linear in `seq`.
    pub fn attention_backward_scratch_len(&self, shape: &AttentionShape, threads: usize) -> usize {
        shape.check("attention_backward_scratch_len");
        let geo = Geometry::new(shape);
        let partition = Partition::new(&geo, threads);
        let slots = backward::Backward::slots_for(partition.parts);
        partition.parts * backward::Backward::task_len(self.gemm(), &geo, slots)
    }

    /// Causal self-attention forward: writes `out` (`[batch, seq, n_heads, head_dim]`) and the
    /// per-row log-sum-exp `lse` (`[batch, n_heads, seq]`) the backward needs. See the
    /// [module docs](self) for the definition, the masks and the empty-row convention.
    ///
    /// # Panics
    /// If a slice's length does not match `shape` (naming it), if `n_heads` is not a multiple
    /// of `n_kv_heads`, if the window is 0, or if `scratch` is shorter than
    /// [`Kernels::attention_forward_scratch_len`] for `parallel.threads()`.
    pub fn attention_forward(
        &self,
        shape: &AttentionShape,
        x: AttentionInputs<'_>,
        out: &mut [f32],
        lse: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "attention_forward";
        check_inputs(WHAT, shape, &x);
        check_len(WHAT, "out", out.len(), shape.q_len(), shape);
        check_len(WHAT, "lse", lse.len(), shape.lse_len(), shape);
        let geo = Geometry::new(shape);
        let partition = Partition::new(&geo, parallel.threads());
        let task_len = forward::task_len(self.gemm(), &geo);
        let needed = partition.parts * task_len;
        assert!(
            scratch.len() >= needed,
            "{WHAT}: scratch holds {} floats, needs {needed} on {} threads \
             (see attention_forward_scratch_len)",
            scratch.len(),
            parallel.threads()
        );
        let (out, lse) = (SharedSlice::new(out), SharedSlice::new(lse));
        let scratch = SharedSlice::new(&mut scratch[..needed]);
        run_parts(&geo, &partition, parallel, |p, items| {
            // SAFETY: part p's scratch is the p-th disjoint `task_len` range.
            let scratch = unsafe { scratch.part(p * task_len..(p + 1) * task_len) };
            vectorized!(
                self.isa(),
                forward::task(self.gemm(), &geo, &x, &out, &lse, items, scratch)
            );
        });
    }

    /// Causal self-attention backward: from the forward's inputs, its `out` and `lse`, and
    /// `d_out = ∂L/∂out`, writes `dq`, `dk` and `dv` (overwriting them). The scores are
    /// recomputed tile by tile; see the [module docs](self).
    ///
    /// # Panics
    /// If a slice's length does not match `shape` (naming it), if `n_heads` is not a multiple
    /// of `n_kv_heads`, if the window is 0, or if `scratch` is shorter than
    /// [`Kernels::attention_backward_scratch_len`] for `parallel.threads()`.
    #[allow(clippy::too_many_arguments)] // inputs, saved forward results, gradients, scratch
    pub fn attention_backward(
        &self,
        shape: &AttentionShape,
        x: AttentionInputs<'_>,
        out: &[f32],
        lse: &[f32],
        d_out: &[f32],
        grads: AttentionGrads<'_>,
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "attention_backward";
        check_inputs(WHAT, shape, &x);
        check_len(WHAT, "out", out.len(), shape.q_len(), shape);
        check_len(WHAT, "lse", lse.len(), shape.lse_len(), shape);
        check_len(WHAT, "d_out", d_out.len(), shape.q_len(), shape);
        check_len(WHAT, "dq", grads.dq.len(), shape.q_len(), shape);
        check_len(WHAT, "dk", grads.dk.len(), shape.kv_len(), shape);
        check_len(WHAT, "dv", grads.dv.len(), shape.kv_len(), shape);
        let geo = Geometry::new(shape);
        let partition = Partition::new(&geo, parallel.threads());
        let slots = backward::Backward::slots_for(partition.parts);
        let task_len = backward::Backward::task_len(self.gemm(), &geo, slots);
        let needed = partition.parts * task_len;
        assert!(
            scratch.len() >= needed,
            "{WHAT}: scratch holds {} floats, needs {needed} on {} threads \
             (see attention_backward_scratch_len)",
            scratch.len(),
            parallel.threads()
        );
        let scratch = &mut scratch[..needed];
        let job = backward::Backward { gemm: self.gemm(), geo, x, out, lse, d_out, slots };
        {
            let grads = backward::SharedGrads {
                dq: SharedSlice::new(&mut *grads.dq),
                dk: SharedSlice::new(&mut *grads.dk),
                dv: SharedSlice::new(&mut *grads.dv),
            };
            let scratch = SharedSlice::new(&mut *scratch);
            run_parts(&geo, &partition, parallel, |p, items| {
                // SAFETY: part p's scratch is the p-th disjoint `task_len` range.
                let scratch = unsafe { scratch.part(p * task_len..(p + 1) * task_len) };
                vectorized!(self.isa(), job.task(&grads, items, scratch));
            });
        }
        vectorized!(
            self.isa(),
            job.reduce_shared(&partition, scratch, task_len, grads.dk, grads.dv)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The parts cover every item once, in order, and each costs about a `parts`-th of the whole
    /// (within one tile's cost).
    #[test]
    fn partition_covers_every_item_once_and_balances_cost() {
        for (batch, seq, heads, kv_heads, window) in [
            (1, 1, 1, 1, None),
            (4, 512, 12, 12, None),
            (1, 1000, 4, 1, Some(300)),
            (3, 130, 6, 2, Some(7)),
            (2, 4096, 8, 1, None),
        ] {
            let shape = AttentionShape::new(batch, seq, heads, kv_heads, 8).with_window(window);
            let geo = Geometry::new(&shape);
            let cost_of =
                |items: Range<usize>| -> u64 { items.map(|x| geo.tile_cost(geo.item(x).2)).sum() };
            let total = cost_of(0..geo.items());
            let max_tile = (0..geo.tiles).map(|t| geo.tile_cost(t)).max().unwrap();
            for threads in [1, 2, 3, 4, 7, 16, 1000] {
                let partition = Partition::new(&geo, threads);
                assert!(partition.parts <= threads.max(1));
                let mut next = 0;
                for p in 0..partition.parts {
                    let items = partition.range(&geo, p);
                    assert_eq!(
                        items.start, next,
                        "part {p} of {threads} starts where the last ended"
                    );
                    assert!(items.start <= items.end && items.end <= geo.items());
                    next = items.end;
                    let share = total / partition.parts as u64;
                    let cost = cost_of(items);
                    assert!(
                        cost.abs_diff(share) <= max_tile,
                        "part {p} of {}: cost {cost}, share {share}, tile {max_tile}",
                        partition.parts
                    );
                }
                assert_eq!(next, geo.items(), "every item is in a part");
            }
        }
    }

    #[test]
    fn blocks_cover_exactly_the_visible_keys_of_each_row() {
        for (seq, window) in
            [(1, None), (130, None), (700, None), (700, Some(37)), (700, Some(300))]
        {
            let shape = AttentionShape::new(1, seq, 1, 1, 4).with_window(window);
            let geo = Geometry::new(&shape);
            for (t, align) in (0..geo.tiles).flat_map(|t| [8, 12, 24, 32].map(|a| (t, a))) {
                let rows = geo.tile(t);
                // How many times each (row, key) is covered by a block of the tile.
                let mut covered = std::vec![0u8; rows.len() * seq];
                for blk in geo.blocks(rows.clone(), align) {
                    assert!(blk.r0 < blk.r1 && blk.k0 < blk.k1 && blk.k1 - blk.k0 <= BC);
                    assert!((blk.r0 - rows.start).is_multiple_of(align), "strip at {}", blk.r0);
                    for i in blk.r0..blk.r1 {
                        for j in blk.k0..blk.k1 {
                            covered[(i - rows.start) * seq + j] += 1;
                        }
                    }
                }
                let mut wasted = 0;
                for i in rows.clone() {
                    for j in 0..seq {
                        let visible = j <= i && window.is_none_or(|w| i - j < w);
                        let n = covered[(i - rows.start) * seq + j];
                        assert!(n <= 1, "({i}, {j}) computed twice");
                        assert!(!visible || n == 1, "visible ({i}, {j}) never computed");
                        wasted += usize::from(n == 1 && !visible);
                    }
                }
                // Without a window only the diagonal square wastes work: about 1/(2·strips) of
                // it once split, instead of half.
                let n = rows.len();
                if window.is_none() && n >= SPLIT_MIN {
                    let bound = n * n / (2 * DIAGONAL_STRIPS) + align * n;
                    assert!(wasted <= bound, "tile {t}, strips {align}-aligned, wastes {wasted}");
                }
            }
        }
    }
}
