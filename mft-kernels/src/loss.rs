//! The fused LM head and cross-entropy loss: `loss = mean over valid tokens of
//! (logsumexp(h·Wᵀ) − (h·Wᵀ)[label])`, forward and backward, without ever holding the
//! `tokens × vocab` logits.
//!
//! # The math
//! For token `t` with hidden state `h_t` (`[hidden]`), head weight `W` (`[vocab, hidden]`: a tied
//! embedding or an untied `lm_head`, f32 or a frozen f16/bf16 copy) and label `y_t`:
//! - logits `l_t = W·h_t`, `lse_t = log Σ_v exp(l_tv)`, per-token loss `lse_t − l_t,y`;
//! - the loss is the mean over the `n` valid tokens (label ≠ [`IGNORE_INDEX`]);
//! - with `g = d_loss / n`: `dl_tv = g·(softmax(l_t)_v − [v = y_t])` (zero on ignored tokens),
//!   `d_hidden = dl·W` and `d_weight = dlᵀ·hidden`.
//!
//! If no token is valid, the loss is defined as 0 and every gradient as zero (`d_hidden` is
//! written with zeros, `d_weight` is left unchanged). PyTorch's mean over zero elements gives NaN
//! instead; 0 keeps gradient accumulation over micro-batches (some of them fully padded) finite.
//!
//! # Memory: vocabulary chunks
//! The vocabulary is walked in chunks of `chunk` entries ([`LmHeadLoss::with_chunk`]; by default
//! about 2²⁰ logits a chunk, 2048 entries at 512 tokens). Scratch holds one `tokens × chunk`
//! block of logits, three floats and one head row (the label's) per token and the GEMM's
//! packing buffers, never more (token blocks, below, take more): at GPT-2 shapes (512 tokens × 768 × 50257) that is 4.2 MB of
//! logits, 1.6 MB of label rows and about 2.1 MB of packing per thread
//! ([`LmHeadLoss::scratch_len`] gives the exact figure).
//!
//! - [`Kernels::lm_head_loss_forward`]: per chunk, one GEMM (`logits = hidden·W_cᵀ`) and an
//!   online log-sum-exp (running max and sum per token). Saves `lse` (`[tokens]`).
//! - [`Kernels::lm_head_loss_backward`]: per chunk, recompute the logits (GEMM), turn them into
//!   `dl` with the saved `lse`, then `d_hidden += dl·W_c` and `d_weight_c += dlᵀ·hidden` (GEMMs;
//!   the second skipped when the head is frozen). A separate forward and backward thus run four
//!   GEMMs of `2·tokens·hidden·vocab` FLOPs where three are the useful work.
//! - [`Kernels::lm_head_loss_forward_backward`]: the training call. With a frozen head (LoRA, no
//!   `d_weight`) it needs only the two useful GEMMs: the logits, and `d_hidden` accumulated
//!   flash-style from the unnormalised probabilities `exp(l − m_t)` under the running max `m_t`
//!   (a row is rescaled when its max grows), divided by the final sum at the end, minus the
//!   label's weight row. With a trained head, `d_weight` needs the final `lse` before any chunk
//!   can contribute: on a shape planned with [`LmHeadLoss::with_token_blocks`] (and an f32 head,
//!   no offload backend) it runs token blocks (below, and `loss/token_blocks.rs`); otherwise the
//!   forward and then the backward (four GEMMs).
//!
//! The head's rows come through [`HeadRows`], one chunk at a time, in vocabulary order: a
//! `[vocab, hidden]` slice in memory, or (the `_paged` calls, frozen heads only) a source that
//! reads each chunk when the walk reaches it, so the head need not be in memory at all. The
//! labels' own rows, which the flash-style `d_hidden` subtracts at the end, are copied (as f32)
//! into scratch as their chunks pass.
//!
//! The per-row work on a chunk (max, exp, sums) runs in vectorized bodies (one per ISA) split by
//! token rows across threads; the products run on [`Kernels::gemm`], which splits its columns.
//!
//! # Token blocks for a trained head
//! Recomputing the logits caps the chunk path at 0.75 of the GEMM's rate with a trained head
//! (four products where three are useful). A shape planned with
//! [`LmHeadLoss::with_token_blocks`] instead keeps a block of tokens' logits over the whole
//! vocabulary (64 tokens × 50257 = 12.9 MB at GPT-2 shapes, 13.6 MB of scratch in all on 1
//! thread), so one walk gives the logits and the flash-style `d_hidden`, and `d_weight` follows
//! from the kept values: three products. Their operands are thin (64 tokens), so packing the
//! head would cost a quarter of the time: the micro-kernels read the head's rows in place
//! (the GEMM module's strided-A kernels), and the next rows are prefetched while a chunk
//! multiplies. Threads split the vocabulary, not the products. On the 2-core AVX-512 machine
//! (`cargo bench -p mft-benches --bench loss`) this runs at 0.95 (1 thread) and 0.91 (2) of the
//! LM head GEMM's rate against 0.75 and 0.72 for the chunk path. A vocabulary too large for a
//! block of 32 tokens (Gemma 3's 262144 entries) keeps the chunk path.
//!
//! The chunk size of the chunk path barely matters between 1024 and 4096 entries at 512 tokens
//! (within noise); 2048 keeps scratch small.

use crate::gemm::{Gemm, GemmRhs, Mat, MatMut};
use crate::kernels::Kernels;
use crate::math::{self, LANES};
use crate::parallel::{Parallel, SharedSlice, for_each_range};

mod token_blocks;

/// The label of a token that takes no part in the loss (PyTorch's `ignore_index` default).
pub const IGNORE_INDEX: i32 = -100;

/// Logits per chunk the default chunk size aims at (4 MiB of f32).
const CHUNK_LOGITS: usize = 1 << 20;
/// Smallest default chunk (vocabulary entries), for many tokens.
const MIN_CHUNK: usize = 256;
/// Largest default chunk, for few tokens.
const MAX_CHUNK: usize = 8192;
/// The default chunk is a multiple of this, so the GEMM's column tiles are whole.
const CHUNK_ALIGN: usize = 64;
/// Fewest logits a thread takes in a per-row pass (below this, one thread does them all).
const MIN_LOGITS_PER_TASK: usize = 1 << 14;
/// Floats of per-token state in scratch: running max, running sum, the label's logit.
const STATS_PER_TOKEN: usize = 3;

/// The shape of a fused LM head + cross-entropy call, the vocabulary chunk it walks in, and
/// (for a trained head) its token blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LmHeadLoss {
    tokens: usize,
    hidden: usize,
    vocab: usize,
    chunk: usize,
    /// Tokens per block of the trained-head path (0: that path is not planned).
    token_block: usize,
    /// Vocabulary entries per chunk of a token block's walk.
    block_chunk: usize,
}

/// The result of a forward pass: the mean loss and how many tokens it averages over.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LossValue {
    /// Mean cross-entropy over the valid tokens (0 when there are none).
    pub loss: f32,
    /// Tokens whose label is not [`IGNORE_INDEX`].
    pub valid_tokens: usize,
}

/// The LM head's rows, one vocabulary chunk at a time: a whole `[vocab, hidden]` weight in
/// memory (`&[T]`), or a source that supplies each chunk only when the walk reaches it (paged
/// weights).
pub trait HeadRows<T> {
    /// Rows `first..first + rows` of the head (`rows × hidden` elements, row-major), valid
    /// until the next call. A pass asks for the chunks of [`LmHeadLoss::chunk`] entries in
    /// vocabulary order, each once.
    ///
    /// # Errors
    /// `Err(())` when the rows cannot be supplied; the source keeps the reason.
    #[allow(clippy::result_unit_err)] // The reason stays with the (std) source.
    fn rows(&mut self, first: usize, rows: usize, hidden: usize) -> Result<&[T], ()>;
}

impl<T> HeadRows<T> for &[T] {
    fn rows(&mut self, first: usize, rows: usize, hidden: usize) -> Result<&[T], ()> {
        Ok(&self[first * hidden..(first + rows) * hidden])
    }
}

impl LmHeadLoss {
    /// `tokens` hidden rows of width `hidden` against a `[vocab, hidden]` head, in the default
    /// chunk: about 2²⁰ logits (2048 vocabulary entries at 512 tokens), clamped to 256..=8192
    /// entries and to the vocabulary.
    pub fn new(tokens: usize, hidden: usize, vocab: usize) -> Self {
        let chunk =
            (CHUNK_LOGITS / tokens.max(1)).clamp(MIN_CHUNK, MAX_CHUNK) / CHUNK_ALIGN * CHUNK_ALIGN;
        let chunk = chunk.min(vocab).max(1);
        LmHeadLoss { tokens, hidden, vocab, chunk, token_block: 0, block_chunk: chunk }
    }

    /// The same shape walked in chunks of `chunk` vocabulary entries (more than `vocab` means one
    /// chunk). Smaller chunks need less scratch; very small ones make the GEMMs inefficient.
    ///
    /// # Panics
    /// If `chunk` is 0.
    pub fn with_chunk(self, chunk: usize) -> Self {
        assert!(chunk > 0, "LmHeadLoss: the chunk must hold at least one vocabulary entry");
        LmHeadLoss { chunk: chunk.min(self.vocab).max(1), ..self }
    }

    /// Token rows.
    pub fn tokens(&self) -> usize {
        self.tokens
    }

    /// Hidden width.
    pub fn hidden(&self) -> usize {
        self.hidden
    }

    /// Vocabulary size.
    pub fn vocab(&self) -> usize {
        self.vocab
    }

    /// Vocabulary entries per chunk (at most `vocab`, at least 1).
    pub fn chunk(&self) -> usize {
        self.chunk
    }

    /// The same shape planned for a trained head: [`Kernels::lm_head_loss_forward_backward`]
    /// with `d_weight` (and an f32 head) then keeps blocks of tokens' logits over the whole
    /// vocabulary and runs the three useful products instead of four (see
    /// `loss/token_blocks.rs`). A block holds about 3.4M logits (64 tokens at GPT-2's 50257
    /// entries, 12.9 MB), walked in chunks of 128 entries. A vocabulary so large that a block
    /// would hold fewer than 32 tokens (above about 106k entries) keeps the recomputing chunk
    /// path, whose scratch is far smaller. The other calls, and [`LmHeadLoss::chunk`], are
    /// unchanged.
    pub fn with_token_blocks(self) -> Self {
        match token_blocks::default_block(self.tokens, self.vocab) {
            0 => self,
            block => {
                let walk_chunk = token_blocks::BLOCK_CHUNK.min(self.vocab).max(1);
                LmHeadLoss { token_block: block, block_chunk: walk_chunk, ..self }
            }
        }
    }

    /// The trained-head path with blocks of `tokens` tokens (at most all of them) walking the
    /// vocabulary in the current chunks ([`LmHeadLoss::with_chunk`] before this call), or, with
    /// 0, without it.
    pub fn with_token_block(self, tokens: usize) -> Self {
        LmHeadLoss { token_block: tokens.min(self.tokens), block_chunk: self.chunk, ..self }
    }

    /// Tokens per block of the trained-head path (0 when it is not planned).
    pub fn token_block(&self) -> usize {
        self.token_block
    }

    /// Floats of scratch each of the three calls needs with `kernels` on up to `threads`
    /// threads.
    pub fn scratch_len(&self, kernels: &Kernels, threads: usize) -> usize {
        let (stats, logits, gemm) = self.scratch_parts(kernels.gemm(), threads);
        let blocks = match self.token_block {
            0 => 0,
            _ => token_blocks::scratch_len(self, kernels.gemm(), threads),
        };
        (stats + logits + gemm).max(blocks)
    }

    /// Floats of the per-token state (with the labels' head rows), the logits block and the
    /// GEMM packing buffers.
    fn scratch_parts(&self, gemm: &Gemm, threads: usize) -> (usize, usize, usize) {
        let (t, h, c) = (self.tokens, self.hidden, self.chunk);
        let packing = gemm
            .scratch_len(t, c, h, threads) // logits = hidden · W_cᵀ
            .max(gemm.scratch_len(t, h, c, threads)) // d_hidden += dl · W_c
            .max(gemm.scratch_len(c, h, t, threads)); // d_weight_c += dlᵀ · hidden
        ((STATS_PER_TOKEN + h) * t, t * c, packing)
    }

    /// Asserts a whole head weight matches the shape.
    fn check_weight<T>(&self, what: &str, weight: &[T]) {
        let (h, v) = (self.hidden, self.vocab);
        assert!(
            weight.len() == v * h,
            "{what}: weight holds {} elements, expected vocab {v} × hidden {h}",
            weight.len()
        );
    }

    /// Asserts the operands match the shape; returns the number of valid tokens.
    fn check(&self, what: &str, hidden: &[f32], labels: &[i32]) -> usize {
        let (t, h, v) = (self.tokens, self.hidden, self.vocab);
        assert!(
            hidden.len() == t * h,
            "{what}: hidden holds {} floats, expected tokens {t} × hidden {h}",
            hidden.len()
        );
        assert!(
            labels.len() == t,
            "{what}: labels holds {} entries, expected one per token ({t})",
            labels.len()
        );
        let mut valid = 0;
        for (i, &label) in labels.iter().enumerate() {
            if label == IGNORE_INDEX {
                continue;
            }
            assert!(
                label >= 0 && (label as usize) < v,
                "{what}: label {label} of token {i} is neither {IGNORE_INDEX} (ignored) nor in \
                 0..{v}"
            );
            valid += 1;
        }
        valid
    }
}

/// The label of a token as an index, `None` when it is ignored (labels were checked).
#[inline(always)]
fn label_index(label: i32) -> Option<usize> {
    (label != IGNORE_INDEX).then_some(label as usize)
}

/// The scratch of one call, split into its parts.
struct Scratch<'a> {
    /// Running max per token; the log-sum-exp once the pass is finished.
    max: &'a mut [f32],
    /// Running sum of `exp(l − max)` per token.
    sum: &'a mut [f32],
    /// The label's logit per token.
    target: &'a mut [f32],
    /// The label's head row per token (`[tokens, hidden]`, flash-style pass only).
    label_rows: &'a mut [f32],
    /// One `tokens × chunk` block of logits.
    logits: &'a mut [f32],
    /// The GEMM's packing buffers.
    gemm: &'a mut [f32],
}

/// The operands every pass reads (the head comes apart, through [`HeadRows`]).
#[derive(Clone, Copy)]
struct Operands<'a> {
    shape: &'a LmHeadLoss,
    hidden: &'a [f32],
    labels: &'a [i32],
}

impl<'a> Operands<'a> {
    /// The `[tokens, hidden]` hidden states.
    fn hidden(&self) -> Mat<'a, f32> {
        let (t, h) = (self.shape.tokens, self.shape.hidden);
        Mat::row_major(self.hidden, t, h, h)
    }

    /// Rows `v0..v0 + w` of the head from `head` (`[w, hidden]`, row-major).
    fn head_rows<'h, T: GemmRhs>(
        &self,
        head: &'h mut dyn HeadRows<T>,
        v0: usize,
        w: usize,
    ) -> Result<&'h [T], ()> {
        let h = self.shape.hidden;
        let rows = head.rows(v0, w, h)?;
        assert!(
            rows.len() == w * h,
            "HeadRows: rows {v0}..{} hold {} elements, expected {w} × hidden {h}",
            v0 + w,
            rows.len()
        );
        Ok(rows)
    }

    /// The vocabulary chunks as `(first entry, width)`.
    fn chunks(&self) -> impl Iterator<Item = (usize, usize)> + use<> {
        let (v, c) = (self.shape.vocab, self.shape.chunk);
        (0..v).step_by(c).map(move |v0| (v0, c.min(v - v0)))
    }
}

/// Token rows per task in a per-row pass over `width` logits each.
fn rows_per_task(width: usize) -> usize {
    MIN_LOGITS_PER_TASK.div_ceil(width.max(1))
}

impl Kernels {
    /// Floats of scratch [`Kernels::lm_head_loss_forward`], [`Kernels::lm_head_loss_backward`]
    /// and [`Kernels::lm_head_loss_forward_backward`] need for the default chunk
    /// ([`LmHeadLoss::new`]) on up to `threads` threads.
    pub fn lm_head_loss_scratch_len(
        &self,
        tokens: usize,
        hidden: usize,
        vocab: usize,
        threads: usize,
    ) -> usize {
        LmHeadLoss::new(tokens, hidden, vocab).scratch_len(self, threads)
    }

    /// The loss of the LM head over `hidden` (`[tokens, hidden]`) against `weight`
    /// (`[vocab, hidden]`, f32, f16 or bf16) and `labels` (`[tokens]`, already shifted;
    /// [`IGNORE_INDEX`] is ignored). Writes the per-token log-sum-exp of the logits to `lse`
    /// (`[tokens]`, every row, ignored ones included) for [`Kernels::lm_head_loss_backward`].
    ///
    /// # Panics
    /// Before touching memory, if an operand's length does not match `shape`, a label is neither
    /// [`IGNORE_INDEX`] nor in `0..vocab`, or `scratch` is shorter than
    /// [`LmHeadLoss::scratch_len`] for `parallel.threads()`.
    #[allow(clippy::too_many_arguments)] // operands, saved state, scratch, threads
    pub fn lm_head_loss_forward<T: GemmRhs>(
        &self,
        shape: &LmHeadLoss,
        hidden: &[f32],
        mut weight: &[T],
        labels: &[i32],
        lse: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) -> LossValue {
        shape.check_weight("lm_head_loss_forward", weight);
        self.lm_head_loss_forward_paged(shape, hidden, &mut weight, labels, lse, scratch, parallel)
            .expect("a slice supplies every chunk")
    }

    /// [`Kernels::lm_head_loss_forward`] with the head's rows from `head`, chunk by chunk.
    ///
    /// # Errors
    /// `Err(())` when `head` fails (`lse` is then unspecified).
    ///
    /// # Panics
    /// As [`Kernels::lm_head_loss_forward`], and if `head` gives a chunk of the wrong length.
    #[allow(clippy::too_many_arguments)] // operands, saved state, scratch, threads
    #[allow(clippy::result_unit_err)] // The reason stays with the head's source.
    pub fn lm_head_loss_forward_paged<T: GemmRhs>(
        &self,
        shape: &LmHeadLoss,
        hidden: &[f32],
        head: &mut dyn HeadRows<T>,
        labels: &[i32],
        lse: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue, ()> {
        const WHAT: &str = "lm_head_loss_forward";
        let valid = shape.check(WHAT, hidden, labels);
        assert!(
            lse.len() == shape.tokens,
            "{WHAT}: lse holds {} floats, expected one per token ({})",
            lse.len(),
            shape.tokens
        );
        let s = self.split_scratch(WHAT, shape, scratch, parallel.threads());
        let ops = Operands { shape, hidden, labels };
        self.online_pass(ops, head, s.max, s.sum, s.target, s.logits, s.gemm, None, parallel)?;
        finish_lse(s.max, s.sum);
        lse.copy_from_slice(s.max);
        Ok(LossValue { loss: mean_loss(lse, s.target, labels, valid), valid_tokens: valid })
    }

    /// The gradients of the loss of [`Kernels::lm_head_loss_forward`] (called with the same
    /// operands, which produced `lse`) times `d_loss`: writes `d_hidden` (`[tokens, hidden]`) and,
    /// unless the head is frozen (`None`), accumulates into `d_weight` (`[vocab, hidden]`, f32,
    /// `+=`). With no valid token, `d_hidden` is zero and `d_weight` unchanged.
    ///
    /// Runs three GEMMs per chunk (two without `d_weight`): the logits are recomputed.
    ///
    /// # Panics
    /// As [`Kernels::lm_head_loss_forward`], and if `lse`, `d_hidden` or `d_weight` has the
    /// wrong length.
    #[allow(clippy::too_many_arguments)] // operands, saved state, gradients, scratch, threads
    pub fn lm_head_loss_backward<T: GemmRhs>(
        &self,
        shape: &LmHeadLoss,
        hidden: &[f32],
        mut weight: &[T],
        labels: &[i32],
        lse: &[f32],
        d_loss: f32,
        d_hidden: &mut [f32],
        d_weight: Option<&mut [f32]>,
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "lm_head_loss_backward";
        shape.check_weight(WHAT, weight);
        let valid = shape.check(WHAT, hidden, labels);
        assert!(
            lse.len() == shape.tokens,
            "{WHAT}: lse holds {} floats, expected one per token ({})",
            lse.len(),
            shape.tokens
        );
        check_gradients(WHAT, shape, d_hidden, d_weight.as_deref());
        let s = self.split_scratch(WHAT, shape, scratch, parallel.threads());
        let ops = Operands { shape, hidden, labels };
        let g = gradient_scale(d_loss, valid);
        let (logits, gemm) = (s.logits, s.gemm);
        self.backward_pass(ops, &mut weight, lse, g, d_hidden, d_weight, logits, gemm, parallel)
            .expect("a slice supplies every chunk");
    }

    /// Forward and backward in one call (training): returns the loss, writes `d_hidden` and
    /// accumulates into `d_weight` (unless `None`) as [`Kernels::lm_head_loss_backward`] does
    /// after [`Kernels::lm_head_loss_forward`], keeping the log-sum-exp in scratch.
    ///
    /// Without `d_weight` (a frozen head, as in LoRA) it runs two GEMMs per chunk instead of
    /// three: `d_hidden` is accumulated from the unnormalised probabilities while the logits are
    /// computed (see the module docs). Its rounding error is, as the separate backward's, a
    /// few f32 epsilons of `g·|W|` per element (both hold probabilities in f32, so a token
    /// predicted with p within 1e-4 of 1 gets its small gradient to about 1e-3 relative). With
    /// `d_weight`, on a shape planned with [`LmHeadLoss::with_token_blocks`] (an f32 head and no
    /// offload backend), it runs token blocks: three products, the vocabulary split between the
    /// threads (so its last bits depend on the thread count); otherwise the forward, then the
    /// backward.
    ///
    /// # Panics
    /// As [`Kernels::lm_head_loss_backward`].
    #[allow(clippy::too_many_arguments)] // operands, gradients, scratch, threads
    pub fn lm_head_loss_forward_backward<T: GemmRhs>(
        &self,
        shape: &LmHeadLoss,
        hidden: &[f32],
        mut weight: &[T],
        labels: &[i32],
        d_loss: f32,
        d_hidden: &mut [f32],
        d_weight: Option<&mut [f32]>,
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) -> LossValue {
        const WHAT: &str = "lm_head_loss_forward_backward";
        shape.check_weight(WHAT, weight);
        let Some(d_weight) = d_weight else {
            return self
                .lm_head_loss_forward_backward_paged(
                    shape,
                    hidden,
                    &mut weight,
                    labels,
                    d_loss,
                    d_hidden,
                    scratch,
                    parallel,
                )
                .expect("a slice supplies every chunk");
        };
        let valid = shape.check(WHAT, hidden, labels);
        check_gradients(WHAT, shape, d_hidden, Some(d_weight));
        let threads = parallel.threads();
        // Token blocks multiply on this CPU's micro-kernels directly; with an offload backend the
        // chunk path's whole products are what it can take.
        let blocks = shape.token_block > 0 && valid > 0 && self.gemm().offload().is_none();
        if let Some(head) = T::as_f32(weight).filter(|_| blocks) {
            let needed = shape.scratch_len(self, threads);
            assert!(
                scratch.len() >= needed,
                "{WHAT}: scratch holds {} floats, needs {needed} for {shape:?} on {threads} \
                 threads (see LmHeadLoss::scratch_len)",
                scratch.len()
            );
            let ops = Operands { shape, hidden, labels };
            let g = gradient_scale(d_loss, valid);
            let total = self
                .token_blocks_forward_backward(ops, head, g, d_hidden, d_weight, scratch, parallel);
            return LossValue { loss: (total / valid as f64) as f32, valid_tokens: valid };
        }
        let s = self.split_scratch(WHAT, shape, scratch, threads);
        if valid == 0 {
            d_hidden.fill(0.0);
            return LossValue { loss: 0.0, valid_tokens: 0 };
        }
        let ops = Operands { shape, hidden, labels };
        let g = gradient_scale(d_loss, valid);
        let (logits, gemm) = (s.logits, s.gemm);
        let head = &mut weight;
        self.online_pass(ops, head, s.max, s.sum, s.target, logits, gemm, None, parallel)
            .and_then(|()| {
                finish_lse(s.max, s.sum);
                let d_weight = Some(d_weight);
                self.backward_pass(ops, head, s.max, g, d_hidden, d_weight, logits, gemm, parallel)
            })
            .expect("a slice supplies every chunk");
        LossValue { loss: mean_loss(s.max, s.target, labels, valid), valid_tokens: valid }
    }

    /// [`Kernels::lm_head_loss_forward_backward`] for a frozen head (no `d_weight`) whose rows
    /// come from `head`, chunk by chunk, each once.
    ///
    /// # Errors
    /// `Err(())` when `head` fails (`d_hidden` is then unspecified).
    ///
    /// # Panics
    /// As [`Kernels::lm_head_loss_forward_backward`], and if `head` gives a chunk of the wrong
    /// length.
    #[allow(clippy::too_many_arguments)] // operands, gradients, scratch, threads
    #[allow(clippy::result_unit_err)] // The reason stays with the head's source.
    pub fn lm_head_loss_forward_backward_paged<T: GemmRhs>(
        &self,
        shape: &LmHeadLoss,
        hidden: &[f32],
        head: &mut dyn HeadRows<T>,
        labels: &[i32],
        d_loss: f32,
        d_hidden: &mut [f32],
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue, ()> {
        const WHAT: &str = "lm_head_loss_forward_backward";
        let valid = shape.check(WHAT, hidden, labels);
        check_gradients(WHAT, shape, d_hidden, None);
        let s = self.split_scratch(WHAT, shape, scratch, parallel.threads());
        if valid == 0 {
            d_hidden.fill(0.0);
            return Ok(LossValue { loss: 0.0, valid_tokens: 0 });
        }
        let ops = Operands { shape, hidden, labels };
        let g = gradient_scale(d_loss, valid);
        let flash = Some(Flash { acc: &mut *d_hidden, label_rows: &mut *s.label_rows });
        self.online_pass(ops, head, s.max, s.sum, s.target, s.logits, s.gemm, flash, parallel)?;
        self.finish_flash(ops, s.label_rows, s.sum, g, d_hidden, parallel);
        finish_lse(s.max, s.sum);
        Ok(LossValue { loss: mean_loss(s.max, s.target, labels, valid), valid_tokens: valid })
    }

    /// Splits `scratch` after checking it is long enough.
    fn split_scratch<'a>(
        &self,
        what: &str,
        shape: &LmHeadLoss,
        scratch: &'a mut [f32],
        threads: usize,
    ) -> Scratch<'a> {
        let threads = threads.max(1);
        let (stats, logits, gemm) = shape.scratch_parts(self.gemm(), threads);
        assert!(
            scratch.len() >= stats + logits + gemm,
            "{what}: scratch holds {} floats, needs {} for {shape:?} on {threads} threads (see \
             LmHeadLoss::scratch_len)",
            scratch.len(),
            stats + logits + gemm
        );
        let (t, h) = (shape.tokens, shape.hidden);
        let (max, rest) = scratch.split_at_mut(t);
        let (sum, rest) = rest.split_at_mut(t);
        let (target, rest) = rest.split_at_mut(t);
        let (label_rows, rest) = rest.split_at_mut(t * h);
        let (logits, rest) = rest.split_at_mut(logits);
        Scratch { max, sum, target, label_rows, logits, gemm: &mut rest[..gemm] }
    }

    /// Walks the vocabulary chunk by chunk: logits by GEMM, then per token the running max, the
    /// running sum of `exp(l − max)` and the label's logit. With `flash`, also accumulates
    /// `flash.acc += exp(l − max)·W_c` (rows rescaled when their max grows; ignored tokens'
    /// rows end up zero) and copies each valid token's label row of the head into
    /// `flash.label_rows`.
    #[allow(clippy::too_many_arguments)] // the scratch parts, passed apart to borrow apart
    fn online_pass<T: GemmRhs>(
        &self,
        ops: Operands<'_>,
        head: &mut dyn HeadRows<T>,
        max: &mut [f32],
        sum: &mut [f32],
        target: &mut [f32],
        logits: &mut [f32],
        gemm: &mut [f32],
        mut flash: Option<Flash<'_>>,
        parallel: &dyn Parallel,
    ) -> Result<(), ()> {
        let (t, h) = (ops.shape.tokens, ops.shape.hidden);
        max.fill(f32::NEG_INFINITY);
        sum.fill(0.0);
        target.fill(0.0);
        for (v0, w) in ops.chunks() {
            let first = v0 == 0;
            let block = &mut logits[..t * w];
            let out = MatMut::row_major(block, t, w, w);
            let rows = ops.head_rows(head, v0, w)?;
            let weight = Mat::row_major(rows, w, h, h);
            self.gemm().run(1.0, ops.hidden(), weight.t(), 0.0, out, gemm, parallel);
            {
                let rows_of_block = SharedSlice::new(&mut *block);
                let (max, sum) = (SharedSlice::new(&mut *max), SharedSlice::new(&mut *sum));
                let target = SharedSlice::new(&mut *target);
                let acc = flash.as_mut().map(|f| SharedSlice::new(&mut *f.acc));
                for_each_range(parallel, t, rows_per_task(w), |rows| {
                    // SAFETY: the tasks of one run take disjoint token ranges, and every part
                    // below is the range's own tokens (rows of the block and of `acc`).
                    let (block, max, sum, target, acc) = unsafe {
                        (
                            rows_of_block.part(rows.start * w..rows.end * w),
                            max.part(rows.clone()),
                            sum.part(rows.clone()),
                            target.part(rows.clone()),
                            acc.as_ref().map(|a| a.part(rows.start * h..rows.end * h)),
                        )
                    };
                    let labels = &ops.labels[rows];
                    let chunk = Chunk { v0, w, first };
                    crate::vectorize::vectorized!(
                        self.isa(),
                        online_rows(block, chunk, labels, max, sum, target, acc, h),
                    );
                });
            }
            if let Some(Flash { acc, label_rows }) = flash.as_mut() {
                copy_label_rows(rows, v0, w, ops.labels, label_rows, h);
                let beta = if first { 0.0 } else { 1.0 };
                let e = Mat::row_major(&*block, t, w, w);
                let out = MatMut::row_major(acc, t, h, h);
                self.gemm().run(1.0, e, weight, beta, out, gemm, parallel);
            }
        }
        Ok(())
    }

    /// `d_hidden = g·(acc / sum − W[label])` per valid token (`acc` is `d_hidden` as
    /// [`Kernels::online_pass`] left it, `W[label]` its copy in `label_rows`), zero for ignored
    /// ones.
    fn finish_flash(
        &self,
        ops: Operands<'_>,
        label_rows: &[f32],
        sum: &[f32],
        g: f32,
        d_hidden: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        let (t, h) = (ops.shape.tokens, ops.shape.hidden);
        if h == 0 {
            return;
        }
        let shared = SharedSlice::new(d_hidden);
        for_each_range(parallel, t, rows_per_task(h), |rows| {
            // SAFETY: the tasks of one run take disjoint token ranges.
            let d_hidden = unsafe { shared.part(rows.start * h..rows.end * h) };
            crate::vectorize::vectorized!(self.isa(), {
                for (i, row) in rows.zip(d_hidden.chunks_exact_mut(h)) {
                    match label_index(ops.labels[i]) {
                        None => row.fill(0.0),
                        Some(_) => {
                            let inv = 1.0 / sum[i];
                            let w_row = &label_rows[i * h..(i + 1) * h];
                            for (d, &wv) in row.iter_mut().zip(w_row) {
                                *d = g * (*d * inv - wv);
                            }
                        }
                    }
                }
            },);
        });
    }

    /// Per chunk: recompute the logits, turn them into `softmax − onehot` with the saved `lse`
    /// (zero rows for ignored tokens), then `d_hidden (=, then +=) g·dl·W_c` and
    /// `d_weight_c += g·dlᵀ·hidden`. `g = 0` (no valid token) writes zeros to `d_hidden` only.
    #[allow(clippy::too_many_arguments)] // operands, saved state, gradients, scratch, threads
    fn backward_pass<T: GemmRhs>(
        &self,
        ops: Operands<'_>,
        head: &mut dyn HeadRows<T>,
        lse: &[f32],
        g: f32,
        d_hidden: &mut [f32],
        mut d_weight: Option<&mut [f32]>,
        logits: &mut [f32],
        gemm: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<(), ()> {
        if g == 0.0 {
            d_hidden.fill(0.0);
            return Ok(());
        }
        let (t, h) = (ops.shape.tokens, ops.shape.hidden);
        if ops.shape.vocab == 0 {
            d_hidden.fill(0.0);
        }
        for (v0, w) in ops.chunks() {
            let block = &mut logits[..t * w];
            let out = MatMut::row_major(block, t, w, w);
            let weight = Mat::row_major(ops.head_rows(head, v0, w)?, w, h, h);
            self.gemm().run(1.0, ops.hidden(), weight.t(), 0.0, out, gemm, parallel);
            {
                let rows_of_block = SharedSlice::new(&mut *block);
                for_each_range(parallel, t, rows_per_task(w), |rows| {
                    // SAFETY: the tasks of one run take disjoint token ranges.
                    let block = unsafe { rows_of_block.part(rows.start * w..rows.end * w) };
                    let (labels, lse) = (&ops.labels[rows.clone()], &lse[rows]);
                    crate::vectorize::vectorized!(
                        self.isa(),
                        softmax_minus_onehot_rows(block, v0, w, labels, lse),
                    );
                });
            }
            let dl = Mat::row_major(&*block, t, w, w);
            let beta = if v0 == 0 { 0.0 } else { 1.0 };
            let out = MatMut::row_major(&mut *d_hidden, t, h, h);
            self.gemm().run(g, dl, weight, beta, out, gemm, parallel);
            if let Some(d_weight) = d_weight.as_deref_mut() {
                let out = MatMut::row_major(&mut d_weight[v0 * h..(v0 + w) * h], w, h, h);
                self.gemm().run(g, dl.t(), ops.hidden(), 1.0, out, gemm, parallel);
            }
        }
        Ok(())
    }
}

/// The flash-style pass's outputs: the `d_hidden` accumulator and the labels' head rows.
struct Flash<'a> {
    acc: &'a mut [f32],
    label_rows: &'a mut [f32],
}

/// Copies, as f32, the head row of every token whose label lies in the chunk `v0..v0 + w`
/// (`chunk`: its `[w, h]` rows) into that token's row of `label_rows`.
fn copy_label_rows<T: GemmRhs>(
    chunk: &[T],
    v0: usize,
    w: usize,
    labels: &[i32],
    label_rows: &mut [f32],
    h: usize,
) {
    for (i, &label) in labels.iter().enumerate() {
        if let Some(y) = label_index(label).filter(|y| (v0..v0 + w).contains(y)) {
            let row = &chunk[(y - v0) * h..(y - v0 + 1) * h];
            for (dst, &src) in label_rows[i * h..(i + 1) * h].iter_mut().zip(row) {
                *dst = src.widen();
            }
        }
    }
}

/// `d_loss / valid`, or 0 when no token is valid.
fn gradient_scale(d_loss: f32, valid: usize) -> f32 {
    if valid == 0 { 0.0 } else { d_loss / valid as f32 }
}

fn check_gradients(what: &str, shape: &LmHeadLoss, d_hidden: &[f32], d_weight: Option<&[f32]>) {
    let (t, h, v) = (shape.tokens, shape.hidden, shape.vocab);
    assert!(
        d_hidden.len() == t * h,
        "{what}: d_hidden holds {} floats, expected tokens {t} × hidden {h}",
        d_hidden.len()
    );
    if let Some(d_weight) = d_weight {
        assert!(
            d_weight.len() == v * h,
            "{what}: d_weight holds {} floats, expected vocab {v} × hidden {h}",
            d_weight.len()
        );
    }
}

/// `max[t] += ln(sum[t])`: the log-sum-exp, from the running max and sum (one libm call per
/// token, outside the per-logit loops).
fn finish_lse(max: &mut [f32], sum: &[f32]) {
    for (m, &s) in max.iter_mut().zip(sum) {
        *m += libm::logf(s);
    }
}

/// Mean of `lse − target` over the valid tokens (0 when there are none), summed in f64.
fn mean_loss(lse: &[f32], target: &[f32], labels: &[i32], valid: usize) -> f32 {
    if valid == 0 {
        return 0.0;
    }
    let total: f64 = lse
        .iter()
        .zip(target)
        .zip(labels)
        .filter(|&(_, &label)| label != IGNORE_INDEX)
        .map(|((&l, &y), _)| f64::from(l) - f64::from(y))
        .sum();
    (total / valid as f64) as f32
}

/// Where a block of logits lies in the vocabulary.
#[derive(Clone, Copy)]
struct Chunk {
    /// First vocabulary entry.
    v0: usize,
    /// Entries (the block's row length).
    w: usize,
    /// Whether this is the first chunk (nothing accumulated yet).
    first: bool,
}

/// The per-token update for one chunk's logits (`block`: rows of `chunk.w`): record the label's
/// logit, fold the chunk into the running max and sum. With `acc` (the flash-style `d_hidden`
/// rows, `h` wide), the logits become `exp(l − max)` in place (zero for ignored tokens) and
/// `acc`'s rows are rescaled by `exp(old max − new max)` when their max grows.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the per-token state, passed apart as the tasks split it
fn online_rows(
    block: &mut [f32],
    chunk: Chunk,
    labels: &[i32],
    max: &mut [f32],
    sum: &mut [f32],
    target: &mut [f32],
    mut acc: Option<&mut [f32]>,
    h: usize,
) {
    let Chunk { v0, w, first } = chunk;
    for (i, row) in block.chunks_exact_mut(w).enumerate() {
        let label = label_index(labels[i]);
        if let Some(y) = label
            && (v0..v0 + w).contains(&y)
        {
            target[i] = row[y - v0];
        }
        let old = max[i];
        let new = old.max(math::max(row));
        // exp(−∞) = 0 on the first chunk, where the running sum is still 0.
        let rescale = math::exp(old - new);
        max[i] = new;
        match acc.as_deref_mut() {
            None => sum[i] = sum[i] * rescale + sum_exp(row, new),
            Some(acc) => {
                if label.is_none() {
                    row.fill(0.0);
                    continue;
                }
                sum[i] = sum[i] * rescale + exp_in_place(row, new);
                if !first && rescale != 1.0 {
                    acc[i * h..(i + 1) * h].iter_mut().for_each(|a| *a *= rescale);
                }
            }
        }
    }
}

/// `block`'s rows (`w` logits of vocabulary `v0..v0 + w`) become `softmax − onehot` with the
/// saved log-sum-exp, or zero for ignored tokens.
#[inline(always)]
fn softmax_minus_onehot_rows(block: &mut [f32], v0: usize, w: usize, labels: &[i32], lse: &[f32]) {
    for (i, row) in block.chunks_exact_mut(w).enumerate() {
        match label_index(labels[i]) {
            None => row.fill(0.0),
            Some(y) => {
                let shift = lse[i];
                row.iter_mut().for_each(|x| *x = math::exp(*x - shift));
                if (v0..v0 + w).contains(&y) {
                    row[y - v0] -= 1.0;
                }
            }
        }
    }
}

/// Σ exp(x[i] − shift), with [`LANES`] independent partial sums (so the loop vectorizes).
#[inline(always)]
fn sum_exp(x: &[f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            *a += math::exp(v - shift);
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += math::exp(v - shift);
    }
    acc.iter().sum()
}

/// x[i] = exp(x[i] − shift); returns their sum (with [`LANES`] partial sums).
#[inline(always)]
fn exp_in_place(x: &mut [f32], shift: f32) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact_mut(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *v = math::exp(*v - shift);
            *a += *v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.into_remainder()) {
        *v = math::exp(*v - shift);
        *a += *v;
    }
    acc.iter().sum()
}
