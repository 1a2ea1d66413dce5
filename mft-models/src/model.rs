//! A model: its configuration and parameter layout, and the whole-model passes over the blocks
//! of [`crate::block`]: embedding, blocks, final norm, and the fused LM head + cross-entropy.
//!
//! - [`Model::train_step`]: forward and backward of one batch, returning the loss and
//!   accumulating gradients (full fine-tuning or LoRA); optional activation checkpointing of the
//!   first `k` blocks (they keep only their input and recompute their forward in backward).
//!
//! # Where a partly checkpointed step recomputes
//!
//! A checkpointed block needs a whole block's activations while it runs. When at least two
//! blocks keep theirs, the last block's area serves: in forward it is written last, after every
//! checkpointed block ran; in backward it is consumed first, before any checkpointed block
//! recomputes. So checkpointing `k ≤ layers − 2` blocks costs no extra memory; only checkpointing
//! (nearly) all blocks carves a dedicated replay area.
//! - [`Model::logits`]: evaluation (no dropout), writing `[tokens, vocab]` logits.
//!
//! Both take one caller-provided f32 workspace whose size [`Model::workspace_len`] gives; nothing
//! is allocated.

use mft_kernels::{
    GemmRhs, IGNORE_INDEX, Kernels, LmHeadLoss, LossValue, Mat, MatMut, Parallel, WriteMode,
};

use crate::block::{self, Dims, Saved, Work};
use crate::carve::Carver;
use crate::config::{Family, ModelConfig};
use crate::error::{Error, Result};
use crate::lora::LoraLayout;
use crate::ops::{Adapters, Ctx, Gradients, Norm, NormKind};
use crate::paged::{BlockSource, Head, Page, Paging};
use crate::params::{GlobalParam, LAYER_PARAMS, LayerParam, Matrices, Param, ParamLayout, Weights};

/// One batch of token ids with their next-token targets.
#[derive(Debug, Clone, Copy)]
pub struct Batch<'a> {
    /// Token ids, `[batch, seq]`.
    pub input_ids: &'a [u32],
    /// The target of each position, `[batch, seq]`: the next token, or [`IGNORE_INDEX`]. Build
    /// it from Hugging Face-style labels with [`shift_labels`].
    pub targets: &'a [i32],
    /// Sequences in the batch.
    pub batch: usize,
    /// Tokens per sequence.
    pub seq: usize,
}

/// Turns Hugging Face labels (`[batch, seq]`, the model shifts them) into per-position targets:
/// `targets[b, t] = labels[b, t + 1]`, and [`IGNORE_INDEX`] at each sequence's last position.
pub fn shift_labels(labels: &[i32], seq: usize, targets: &mut [i32]) {
    assert_eq!(labels.len(), targets.len(), "shift_labels: labels and targets differ in length");
    for (row_in, row_out) in labels.chunks_exact(seq).zip(targets.chunks_exact_mut(seq)) {
        row_out[..seq - 1].copy_from_slice(&row_in[1..]);
        row_out[seq - 1] = IGNORE_INDEX;
    }
}

/// How a training step runs.
#[derive(Debug, Clone, Copy)]
pub struct StepOptions {
    /// How many blocks, from the first, keep only their input and recompute their forward in
    /// backward (0: none; `layers` or more: all).
    pub checkpointed_blocks: usize,
    /// Seed of this step's LoRA dropout masks (change it every step).
    pub dropout_seed: u64,
    /// The gradients accumulated are those of `loss_weight × mean loss`: 1 for one batch; for
    /// gradient accumulation weighted by tokens, each micro-batch's share of the scored tokens.
    pub loss_weight: f32,
}

impl Default for StepOptions {
    fn default() -> Self {
        StepOptions { checkpointed_blocks: 0, dropout_seed: 0, loss_weight: 1.0 }
    }
}

/// What a workspace is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    /// [`Model::train_step`].
    Train {
        /// Blocks (from the first) that keep only their input: [`StepOptions::checkpointed_blocks`].
        checkpointed_blocks: usize,
    },
    /// [`Model::logits`] and [`Model::loss`] (evaluation: no gradients, no dropout).
    Logits,
}

/// The sizes of a workspace's parts, in floats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct WorkspaceSizes {
    /// Activations kept from forward to backward (all blocks).
    pub saved: usize,
    /// Everything else: per-block scratch, recompute buffers, kernel scratch, RoPE tables.
    pub scratch: usize,
}

impl WorkspaceSizes {
    /// Floats in all.
    pub fn total(&self) -> usize {
        self.saved + self.scratch
    }
}

/// A model ready to run: configuration and parameter layout.
#[derive(Debug, Clone, Copy)]
pub struct Model {
    config: ModelConfig,
    layout: ParamLayout,
}

/// The workspace of a step, carved.
struct Buffers<'a> {
    positions: &'a mut [f32],
    rope_global: &'a mut [f32],
    rope_local: &'a mut [f32],
    /// Per block: its input only (the first `checkpointed` blocks) or its whole [`Saved`].
    saved: &'a mut [f32],
    /// Floats of a whole [`Saved`].
    saved_per_block: usize,
    /// Floats of a block's input.
    input_len: usize,
    /// Blocks that keep only their input.
    checkpointed: usize,
    /// Whether `replay` and `replay_out` are carved for themselves; otherwise checkpointed
    /// blocks recompute in the last block's area and `x_final`.
    dedicated_replay: bool,
    /// The last block's output.
    x_final: &'a mut [f32],
    mean: &'a mut [f32],
    rstd: &'a mut [f32],
    /// The final norm's output.
    hidden: &'a mut [f32],
    d_hidden: &'a mut [f32],
    dx: &'a mut [f32],
    /// The per-token log-sum-exp of an evaluation loss.
    lse: &'a mut [f32],
    /// The block being recomputed (dedicated: nearly all blocks checkpointed, evaluation).
    replay: Saved<'a>,
    replay_out: &'a mut [f32],
    work: Work<'a>,
    scratch: &'a mut [f32],
}

impl Model {
    /// A model of `config`, validated.
    pub fn new(config: ModelConfig) -> Result<Model> {
        config.validate()?;
        Ok(Model { config, layout: ParamLayout::new(&config) })
    }

    /// The configuration.
    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Where each parameter lives.
    pub fn layout(&self) -> &ParamLayout {
        &self.layout
    }

    /// The sizes of the workspace [`Model::train_step`] or [`Model::logits`] needs.
    pub fn workspace_sizes(
        &self,
        kernels: &Kernels,
        lora: Option<&LoraLayout>,
        batch: usize,
        seq: usize,
        purpose: Purpose,
        threads: usize,
    ) -> WorkspaceSizes {
        let mut c = Carver::measuring();
        self.carve(&mut c, kernels, lora, batch, seq, purpose, threads);
        let saved = self.saved_len(lora, batch, seq, purpose);
        WorkspaceSizes { saved, scratch: c.used() - saved }
    }

    /// Floats [`Model::train_step`] or [`Model::logits`] needs as workspace.
    pub fn workspace_len(
        &self,
        kernels: &Kernels,
        lora: Option<&LoraLayout>,
        batch: usize,
        seq: usize,
        purpose: Purpose,
        threads: usize,
    ) -> usize {
        self.workspace_sizes(kernels, lora, batch, seq, purpose, threads).total()
    }

    fn saved_len(
        &self,
        lora: Option<&LoraLayout>,
        batch: usize,
        seq: usize,
        purpose: Purpose,
    ) -> usize {
        let d = Dims::new(&self.config, lora, batch, seq);
        let layers = self.config.layers;
        match purpose {
            Purpose::Train { checkpointed_blocks } => {
                let k = checkpointed_blocks.min(layers);
                k * d.n * d.hidden + (layers - k) * saved_per_block(&d)
            }
            Purpose::Logits => 0,
        }
    }

    #[allow(clippy::too_many_arguments)] // the step's sizes
    fn carve<'a>(
        &self,
        c: &mut Carver<'a>,
        kernels: &Kernels,
        lora: Option<&LoraLayout>,
        batch: usize,
        seq: usize,
        purpose: Purpose,
        threads: usize,
    ) -> Buffers<'a> {
        let cfg = &self.config;
        let d = Dims::new(cfg, lora, batch, seq);
        let (n, h) = (d.n, cfg.hidden);
        let train = purpose != Purpose::Logits;
        let checkpointed = match purpose {
            Purpose::Train { checkpointed_blocks } => checkpointed_blocks.min(cfg.layers),
            Purpose::Logits => 0,
        };
        let dedicated_replay = !train || (checkpointed > 0 && checkpointed + 2 > cfg.layers);
        let rope_len = Kernels::rope_table_len(cfg.head_dim, seq);
        let saved_len = self.saved_len(lora, batch, seq, purpose);
        let loss = self.loss_shape(n, train && lora.is_none());
        let scratch_len = block::kernel_scratch_len(kernels, cfg, &d, threads)
            .max(loss.scratch_len(kernels, threads))
            .max(kernels.gemm().scratch_len(n, cfg.vocab, h, threads));
        Buffers {
            positions: c.take(n),
            rope_global: c.take_if(cfg.rope.is_some(), rope_len),
            rope_local: c.take_if(cfg.rope_local.is_some(), rope_len),
            saved: c.take(saved_len),
            saved_per_block: saved_per_block(&d),
            input_len: n * h,
            checkpointed,
            dedicated_replay,
            x_final: c.take(n * h),
            mean: c.take(n),
            rstd: c.take(n),
            hidden: c.take(n * h),
            d_hidden: c.take_if(train, n * h),
            dx: c.take_if(train, n * h),
            lse: c.take_if(!train, n),
            replay: if dedicated_replay {
                Saved::carve(c, &d)
            } else {
                Saved::carve(&mut Carver::measuring(), &d)
            },
            replay_out: c.take_if(dedicated_replay && train, n * h),
            work: Work::carve(c, &d, train),
            scratch: c.take(scratch_len),
        }
    }

    /// Carves the caller's workspace, or says how short it is.
    #[allow(clippy::too_many_arguments)] // the step's sizes
    fn carve_workspace<'a>(
        &self,
        workspace: &'a mut [f32],
        kernels: &Kernels,
        lora: Option<&LoraLayout>,
        batch: usize,
        seq: usize,
        purpose: Purpose,
        threads: usize,
    ) -> Result<Buffers<'a>> {
        let needed = self.workspace_len(kernels, lora, batch, seq, purpose, threads);
        if workspace.len() < needed {
            return Err(Error::BufferSize {
                buffer: "workspace",
                expected: needed,
                actual: workspace.len(),
            });
        }
        let mut c = Carver::new(&mut workspace[..needed]);
        Ok(self.carve(&mut c, kernels, lora, batch, seq, purpose, threads))
    }

    fn check_batch(&self, input_ids: &[u32], batch: usize, seq: usize) -> Result<()> {
        let bad = |problem, value, limit| Err(Error::InvalidBatch { problem, value, limit });
        if batch == 0 || seq == 0 {
            return bad("empty batch", batch * seq, 1);
        }
        if seq > self.config.max_positions {
            return bad(
                "sequence longer than max_position_embeddings",
                seq,
                self.config.max_positions,
            );
        }
        if input_ids.len() != batch * seq {
            return bad("input_ids is not batch × seq long", input_ids.len(), batch * seq);
        }
        if let Some(&id) = input_ids.iter().find(|&&id| id as usize >= self.config.vocab) {
            return bad("token id out of the vocabulary", id as usize, self.config.vocab);
        }
        Ok(())
    }

    /// Forward and backward of one batch: returns the mean cross-entropy over the valid
    /// targets and accumulates (`+=`) its gradients into `grads`. With LoRA gradients,
    /// `adapters` must be given; dropout runs with `options.dropout_seed`.
    ///
    /// # Errors
    /// A batch that does not fit the model, or a workspace shorter than
    /// [`Model::workspace_len`] for `Purpose::Train` and `parallel.threads()`.
    #[allow(clippy::too_many_arguments)] // kernels, weights, adapters, gradients, data, memory, threads
    pub fn train_step<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        adapters: Option<Adapters<'_>>,
        grads: Gradients<'_>,
        batch: &Batch<'_>,
        options: StepOptions,
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue> {
        let source = None;
        self.train_step_with(
            kernels, weights, source, adapters, grads, batch, options, workspace, parallel,
        )
    }

    /// [`Model::train_step`] with the blocks' frozen matrices (and, when the source pages
    /// them, the embedding's and the head's) paged in from `source`, in the order of
    /// [`Model::page_schedule`]`(true, …)`; `weights` supplies the rest (a table whose paged
    /// entries are not read). For full fine-tuning the source must keep the blocks' matrix
    /// gradients ([`BlockSource::pages_gradients`]) and `grads` hold only the global matrices'
    /// ([`ParamLayout::global_matrix_len`]) and the vectors'.
    ///
    /// # Errors
    /// As [`Model::train_step`]; [`Error::Paging`] when `source` fails; a block matrix of the
    /// wrong size; [`Error::Unsupported`] for a trained head with paged embeddings.
    #[allow(clippy::too_many_arguments)] // kernels, weights, source, adapters, gradients, data, memory, threads
    pub fn train_step_paged<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        source: &mut dyn BlockSource<T>,
        adapters: Option<Adapters<'_>>,
        grads: Gradients<'_>,
        batch: &Batch<'_>,
        options: StepOptions,
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue> {
        let source = Some(source);
        self.train_step_with(
            kernels, weights, source, adapters, grads, batch, options, workspace, parallel,
        )
    }

    /// The order in which a paged step over `tokens` tokens (batch × seq) asks its
    /// [`BlockSource`] for pages: every block forward; with `embeddings` (a source that pages
    /// them), the head's vocabulary chunks in order; then (training) every block backward, last
    /// to first.
    pub fn page_schedule(
        &self,
        training: bool,
        tokens: usize,
        embeddings: bool,
    ) -> impl Iterator<Item = Page> + use<> {
        let (layers, vocab) = (self.config.layers, self.config.vocab);
        let chunk = LmHeadLoss::new(tokens, self.config.hidden, vocab).chunk();
        let head = (0..vocab)
            .step_by(chunk)
            .filter(move |_| embeddings)
            .map(move |first| Page::Head { first, rows: chunk.min(vocab - first) });
        let backward = (0..layers).rev().filter(move |_| training);
        (0..layers).map(Page::Block).chain(head).chain(backward.map(Page::Block))
    }

    #[allow(clippy::too_many_arguments)] // kernels, weights, source, adapters, gradients, data, memory, threads
    fn train_step_with<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        mut source: Option<&mut dyn BlockSource<T>>,
        adapters: Option<Adapters<'_>>,
        mut grads: Gradients<'_>,
        batch: &Batch<'_>,
        options: StepOptions,
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue> {
        let (b, t) = (batch.batch, batch.seq);
        self.check_batch(batch.input_ids, b, t)?;
        self.check_targets(batch)?;
        let paging = Paging::of(source.as_deref());
        self.check_weights(&weights, adapters, paging)?;
        let head = self.head_param();
        let d_head = grads.param(&self.layout, head);
        if paging.covers(head) && d_head.is_some() {
            return Err(Error::Unsupported { what: "a trained head with paged embeddings" });
        }
        if let Gradients::Full { matrices, .. } = &grads
            && paging != Paging::Off
        {
            if !source.as_deref().is_some_and(|s| s.pages_gradients()) {
                return Err(Error::Unsupported {
                    what: "full fine-tuning of paged blocks from a source that keeps no gradients",
                });
            }
            let expected = self.layout.global_matrix_len();
            if matrices.len() != expected {
                return Err(Error::BufferSize {
                    buffer: "grads.matrices (the global matrices' gradients)",
                    expected,
                    actual: matrices.len(),
                });
            }
        }
        let lora = adapters.map(|a| a.layout);
        let purpose = Purpose::Train { checkpointed_blocks: options.checkpointed_blocks };
        let threads = parallel.threads();
        let mut buf = self.carve_workspace(workspace, kernels, lora, b, t, purpose, threads)?;
        let ctx = Ctx {
            kernels,
            parallel,
            config: &self.config,
            layout: &self.layout,
            weights,
            adapters,
            dropout_seed: Some(options.dropout_seed),
            batch: b,
            seq: t,
        };
        let d = Dims::new(&self.config, lora, b, t);
        let positions = self.prepare(&mut buf, t);
        self.embed(
            &ctx,
            &mut source,
            batch.input_ids,
            positions,
            first_block_input(&mut buf, d.n * self.config.hidden),
        )?;
        self.blocks_forward(&ctx, &mut source, &d, &mut buf, positions)?;

        // Final norm and the fused head + loss.
        let final_norm = self.final_norm();
        final_norm.forward(&ctx, buf.x_final, buf.hidden, buf.mean, buf.rstd);
        let shape = self.loss_shape(d.n, lora.is_none());
        let loss = match grads.param(&self.layout, head) {
            // A trained head (full fine-tuning) is in the weights (checked above).
            Some(d_head) => kernels.lm_head_loss_forward_backward(
                &shape,
                buf.hidden,
                weights.matrix(&self.layout, head),
                batch.targets,
                options.loss_weight,
                buf.d_hidden,
                Some(d_head),
                buf.scratch,
                parallel,
            ),
            None => {
                let mut rows = self.head(weights, source.as_deref_mut());
                kernels
                    .lm_head_loss_forward_backward_paged(
                        &shape,
                        buf.hidden,
                        &mut rows,
                        batch.targets,
                        options.loss_weight,
                        buf.d_hidden,
                        buf.scratch,
                        parallel,
                    )
                    .map_err(|()| rows.error())?
            }
        };
        final_norm.backward(
            &ctx,
            &mut grads,
            buf.d_hidden,
            buf.x_final,
            buf.mean,
            buf.rstd,
            buf.dx,
            buf.work.discard_mut(),
            buf.scratch,
        );

        self.blocks_backward(&ctx, &mut source, &mut grads, &d, &mut buf, positions)?;
        self.embed_backward(&ctx, &mut grads, batch.input_ids, positions, buf.dx);
        Ok(loss)
    }

    /// The logits of every position, `[batch·seq, vocab]`, in evaluation mode (no dropout).
    ///
    /// # Errors
    /// A batch that does not fit the model, `logits` of the wrong length, or a workspace shorter
    /// than [`Model::workspace_len`] for `Purpose::Logits`.
    #[allow(clippy::too_many_arguments)] // kernels, weights, adapters, data, output, memory, threads
    pub fn logits<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        adapters: Option<Adapters<'_>>,
        input_ids: &[u32],
        batch: usize,
        seq: usize,
        logits: &mut [f32],
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<()> {
        let n = batch * seq;
        if logits.len() != n * self.config.vocab {
            return Err(Error::BufferSize {
                buffer: "logits",
                expected: n * self.config.vocab,
                actual: logits.len(),
            });
        }
        let buf = self.eval_hidden(
            kernels, weights, &mut None, adapters, input_ids, batch, seq, workspace, parallel,
        )?;
        let (h, v) = (self.config.hidden, self.config.vocab);
        let head = weights.matrix(&self.layout, self.head_param());
        kernels.gemm().run(
            1.0,
            Mat::row_major(buf.hidden, n, h, h),
            Mat::row_major(head, v, h, h).t(),
            0.0,
            MatMut::row_major(logits, n, v, v),
            buf.scratch,
            parallel,
        );
        Ok(())
    }

    /// The mean cross-entropy of `batch` in evaluation mode (no dropout, no gradients), in the
    /// workspace of [`Model::logits`]: the logits are never held whole.
    ///
    /// # Errors
    /// As [`Model::logits`], and targets that are not `batch × seq` long or out of the
    /// vocabulary.
    pub fn loss<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        adapters: Option<Adapters<'_>>,
        batch: &Batch<'_>,
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue> {
        self.loss_with(kernels, weights, None, adapters, batch, workspace, parallel)
    }

    /// [`Model::loss`] with the blocks' frozen matrices (and, when the source pages them, the
    /// embedding's and the head's) paged in from `source`, in the order of
    /// [`Model::page_schedule`]`(false, …)`.
    ///
    /// # Errors
    /// As [`Model::loss`]; [`Error::Paging`] when `source` fails.
    #[allow(clippy::too_many_arguments)] // kernels, weights, source, adapters, data, memory, threads
    pub fn loss_paged<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        source: &mut dyn BlockSource<T>,
        adapters: Option<Adapters<'_>>,
        batch: &Batch<'_>,
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue> {
        self.loss_with(kernels, weights, Some(source), adapters, batch, workspace, parallel)
    }

    #[allow(clippy::too_many_arguments)] // kernels, weights, source, adapters, data, memory, threads
    fn loss_with<T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        source: Option<&mut dyn BlockSource<T>>,
        adapters: Option<Adapters<'_>>,
        batch: &Batch<'_>,
        workspace: &mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<LossValue> {
        self.check_targets(batch)?;
        let (b, t) = (batch.batch, batch.seq);
        let mut source = source;
        let buf = self.eval_hidden(
            kernels,
            weights,
            &mut source,
            adapters,
            batch.input_ids,
            b,
            t,
            workspace,
            parallel,
        )?;
        let shape = LmHeadLoss::new(b * t, self.config.hidden, self.config.vocab);
        let mut rows = self.head(weights, source);
        kernels
            .lm_head_loss_forward_paged(
                &shape,
                buf.hidden,
                &mut rows,
                batch.targets,
                buf.lse,
                buf.scratch,
                parallel,
            )
            .map_err(|()| rows.error())
    }

    /// The head's rows: paged in from `source` when it pages the embeddings, else from
    /// `weights`.
    fn head<'a, 'd, T>(
        &self,
        weights: Weights<'a, T>,
        source: Option<&'a mut (dyn BlockSource<T> + 'd)>,
    ) -> Head<'a, 'd, T> {
        match source.filter(|s| s.pages_embeddings()) {
            Some(source) => Head::Paged { source, last: Page::EmbeddingRows },
            None => Head::Resident(weights.matrix(&self.layout, self.head_param())),
        }
    }

    /// Evaluation forward up to the final norm, whose output `[batch·seq, hidden]` is left in
    /// the returned buffers' `hidden`.
    #[allow(clippy::too_many_arguments)] // kernels, weights, adapters, data, memory, threads
    fn eval_hidden<'w, T: GemmRhs>(
        &self,
        kernels: &Kernels,
        weights: Weights<'_, T>,
        source: &mut Option<&mut dyn BlockSource<T>>,
        adapters: Option<Adapters<'_>>,
        input_ids: &[u32],
        batch: usize,
        seq: usize,
        workspace: &'w mut [f32],
        parallel: &dyn Parallel,
    ) -> Result<Buffers<'w>> {
        self.check_batch(input_ids, batch, seq)?;
        self.check_weights(&weights, adapters, Paging::of(source.as_deref()))?;
        let lora = adapters.map(|a| a.layout);
        let threads = parallel.threads();
        let mut buf =
            self.carve_workspace(workspace, kernels, lora, batch, seq, Purpose::Logits, threads)?;
        let ctx = Ctx {
            kernels,
            parallel,
            config: &self.config,
            layout: &self.layout,
            weights,
            adapters,
            dropout_seed: None,
            batch,
            seq,
        };
        let d = Dims::new(&self.config, lora, batch, seq);
        let positions = self.prepare(&mut buf, seq);
        self.embed(&ctx, source, input_ids, positions, buf.replay.x)?;
        for layer in 0..self.config.layers {
            let rope = rope_of(&self.config, layer, buf.rope_global, buf.rope_local);
            self.in_block(&ctx, source, layer, |ctx| {
                block::forward(
                    ctx,
                    &d,
                    layer,
                    &mut buf.replay,
                    buf.x_final,
                    &mut buf.work,
                    buf.scratch,
                    rope,
                    positions,
                );
            })?;
            buf.replay.x.copy_from_slice(buf.x_final);
        }
        self.final_norm().forward(&ctx, buf.x_final, buf.hidden, buf.mean, buf.rstd);
        Ok(buf)
    }

    fn check_targets(&self, batch: &Batch<'_>) -> Result<()> {
        let n = batch.batch * batch.seq;
        if batch.targets.len() != n {
            return Err(Error::InvalidBatch {
                problem: "targets is not batch × seq long",
                value: batch.targets.len(),
                limit: n,
            });
        }
        if let Some(&bad) = batch
            .targets
            .iter()
            .find(|&&l| l != IGNORE_INDEX && (l < 0 || l as usize >= self.config.vocab))
        {
            return Err(Error::InvalidBatch {
                problem: "target out of the vocabulary",
                value: bad as usize,
                limit: self.config.vocab,
            });
        }
        Ok(())
    }

    fn check_weights<T>(
        &self,
        weights: &Weights<'_, T>,
        adapters: Option<Adapters<'_>>,
        paging: Paging,
    ) -> Result<()> {
        if let Some((buffer, expected, actual)) = weights.size_mismatch(&self.layout, paging) {
            return Err(Error::BufferSize { buffer, expected, actual });
        }
        match adapters {
            Some(a) if a.layout.len() != a.weights.len() => Err(Error::BufferSize {
                buffer: "adapters",
                expected: a.layout.len(),
                actual: a.weights.len(),
            }),
            _ => Ok(()),
        }
    }

    /// Fills positions and RoPE tables; moves the positions out of `buf` as u32.
    fn prepare<'a>(&self, buf: &mut Buffers<'a>, seq: usize) -> &'a [u32] {
        let head_dim = self.config.head_dim;
        if let Some(rope) = self.config.rope {
            Kernels::rope_fill_table(buf.rope_global, head_dim, rope.base, rope.linear_factor);
        }
        if let Some(rope) = self.config.rope_local {
            Kernels::rope_fill_table(buf.rope_local, head_dim, rope.base, rope.linear_factor);
        }
        let positions: &mut [u32] = bytemuck::cast_slice_mut(core::mem::take(&mut buf.positions));
        for (i, p) in positions.iter_mut().enumerate() {
            *p = (i % seq) as u32;
        }
        positions
    }

    fn final_norm(&self) -> Norm {
        Norm {
            kind: NormKind::of(self.config.family),
            weight: Param::Global(GlobalParam::FinalNorm),
            bias: (self.config.family == Family::Gpt2)
                .then_some(Param::Global(GlobalParam::FinalNormBias)),
        }
    }

    /// The fused loss's shape over `tokens` tokens; with `trained_head` (full fine-tuning, as
    /// the workspace was planned), planned for the trained head's token blocks.
    fn loss_shape(&self, tokens: usize, trained_head: bool) -> LmHeadLoss {
        let shape = LmHeadLoss::new(tokens, self.config.hidden, self.config.vocab);
        if trained_head { shape.with_token_blocks() } else { shape }
    }

    fn head_param(&self) -> Param {
        Param::Global(if self.config.tie_embeddings {
            GlobalParam::Embed
        } else {
            GlobalParam::LmHead
        })
    }

    /// `x = scale·embed[ids] (+ positions[t])`, the embedding's rows from `source` when it
    /// pages them.
    fn embed<T: GemmRhs>(
        &self,
        ctx: &Ctx<'_, T>,
        source: &mut Option<&mut dyn BlockSource<T>>,
        ids: &[u32],
        positions: &[u32],
        x: &mut [f32],
    ) -> Result<()> {
        let (k, par, h) = (ctx.kernels, ctx.parallel, self.config.hidden);
        let scale = self.config.embedding_scale();
        match source.as_deref_mut().filter(|s| s.pages_embeddings()) {
            Some(source) => {
                source
                    .embedding_rows(ids, h, x)
                    .map_err(|()| Error::Paging { page: Page::EmbeddingRows })?;
                // The product the kernel forms from a resident table, so the bits agree.
                if scale != 1.0 {
                    x.iter_mut().for_each(|v| *v *= scale);
                }
            }
            None => {
                let table = ctx.weights.matrix(&self.layout, Param::Global(GlobalParam::Embed));
                k.embedding_forward(table, ids, h, scale, WriteMode::Overwrite, x, par);
            }
        }
        if self.config.family == Family::Gpt2 {
            let wpe = ctx.weights.matrix(&self.layout, Param::Global(GlobalParam::Positions));
            k.embedding_forward(wpe, positions, h, 1.0, WriteMode::Accumulate, x, par);
        }
        Ok(())
    }

    fn embed_backward<T>(
        &self,
        ctx: &Ctx<'_, T>,
        grads: &mut Gradients<'_>,
        ids: &[u32],
        positions: &[u32],
        dx: &mut [f32],
    ) {
        let (k, par, h) = (ctx.kernels, ctx.parallel, self.config.hidden);
        if let Some(d_embed) = grads.param(&self.layout, Param::Global(GlobalParam::Embed)) {
            // nn.Embedding's padding_idx: the padding row takes nothing from the input side
            // (a tied head's gradient, already in it, stays). `dx` is not read after this.
            if let Some(pad) = self.config.padding_idx {
                for (row, _) in dx.chunks_exact_mut(h).zip(ids).filter(|(_, id)| **id == pad) {
                    row.fill(0.0);
                }
            }
            k.embedding_backward(dx, ids, h, self.config.embedding_scale(), d_embed, par);
        }
        if let Some(d_wpe) = grads.param(&self.layout, Param::Global(GlobalParam::Positions)) {
            k.embedding_backward(dx, positions, h, 1.0, d_wpe, par);
        }
    }

    fn blocks_forward<T: GemmRhs>(
        &self,
        ctx: &Ctx<'_, T>,
        source: &mut Option<&mut dyn BlockSource<T>>,
        d: &Dims,
        buf: &mut Buffers<'_>,
        positions: &[u32],
    ) -> Result<()> {
        let layers = self.config.layers;
        let last = buf.block_range(layers - 1);
        for layer in 0..layers {
            let rope = rope_of(&self.config, layer, buf.rope_global, buf.rope_local);
            let this = buf.block_range(layer);
            let next = buf.block_range(layer + 1).start;
            let (done, rest) = buf.saved.split_at_mut(next);
            let next_input_len = if layer + 1 < layers { buf.input_len } else { 0 };
            let (next_input, after) = rest.split_at_mut(next_input_len);
            let out = if layer + 1 < layers { next_input } else { &mut *buf.x_final };
            let input = &mut done[this];
            // A checkpointed block runs in a replay area (its input kept); the others keep
            // their activations where they are saved.
            let mut saved = if layer < buf.checkpointed {
                let replay = if buf.dedicated_replay {
                    buf.replay.reborrow()
                } else {
                    // The last block's area: not written before its own forward.
                    let area = &mut after[last.start - next - next_input_len..];
                    Saved::carve(&mut Carver::new(area), d)
                };
                replay.x.copy_from_slice(input);
                replay
            } else {
                Saved::carve(&mut Carver::new(input), d)
            };
            self.in_block(ctx, source, layer, |ctx| {
                block::forward(
                    ctx,
                    d,
                    layer,
                    &mut saved,
                    out,
                    &mut buf.work,
                    buf.scratch,
                    rope,
                    positions,
                );
            })?;
        }
        Ok(())
    }

    fn blocks_backward<T: GemmRhs>(
        &self,
        ctx: &Ctx<'_, T>,
        source: &mut Option<&mut dyn BlockSource<T>>,
        grads: &mut Gradients<'_>,
        d: &Dims,
        buf: &mut Buffers<'_>,
        positions: &[u32],
    ) -> Result<()> {
        let layers = self.config.layers;
        let last = buf.block_range(layers - 1);
        for layer in (0..layers).rev() {
            let rope = rope_of(&self.config, layer, buf.rope_global, buf.rope_local);
            let this = buf.block_range(layer);
            // A checkpointed block first recomputes its activations into a replay area.
            let (mut saved, recompute) = if layer < buf.checkpointed {
                let (replay, input, replay_out) = if buf.dedicated_replay {
                    (buf.replay.reborrow(), &buf.saved[this], &mut *buf.replay_out)
                } else {
                    // The last block's area was consumed by its backward; `x_final` by the final
                    // norm's.
                    let (head, tail) = buf.saved.split_at_mut(last.start);
                    (Saved::carve(&mut Carver::new(tail), d), &head[this], &mut *buf.x_final)
                };
                replay.x.copy_from_slice(input);
                (replay, Some(replay_out))
            } else {
                (Saved::carve(&mut Carver::new(&mut buf.saved[this]), d), None)
            };
            self.in_block_backward(ctx, source, grads, layer, |ctx, grads| {
                if let Some(out) = recompute {
                    block::forward(
                        ctx,
                        d,
                        layer,
                        &mut saved,
                        out,
                        &mut buf.work,
                        buf.scratch,
                        rope,
                        positions,
                    );
                }
                block::backward(
                    ctx,
                    grads,
                    d,
                    layer,
                    &mut saved,
                    buf.dx,
                    &mut buf.work,
                    buf.scratch,
                    rope,
                    positions,
                );
            })?;
        }
        Ok(())
    }

    /// Runs `run` on block `layer` with its matrices: from `ctx`'s weights, or paged in from
    /// `source` (checked against the layout) when there is one.
    fn in_block<T>(
        &self,
        ctx: &Ctx<'_, T>,
        source: &mut Option<&mut dyn BlockSource<T>>,
        layer: usize,
        run: impl FnOnce(&Ctx<'_, T>),
    ) -> Result<()> {
        let Some(source) = source else {
            run(ctx);
            return Ok(());
        };
        let block = source.block(layer).map_err(|()| Error::Paging { page: Page::Block(layer) })?;
        self.check_block(&block, layer)?;
        on_block(ctx, layer, &block, run);
        Ok(())
    }

    /// [`Model::in_block`] for a block's backward: when `source` keeps the blocks' gradients
    /// (and they are full), the block's matrix gradients come from it too.
    fn in_block_backward<T>(
        &self,
        ctx: &Ctx<'_, T>,
        source: &mut Option<&mut dyn BlockSource<T>>,
        grads: &mut Gradients<'_>,
        layer: usize,
        run: impl FnOnce(&Ctx<'_, T>, &mut Gradients<'_>),
    ) -> Result<()> {
        let paged = source.as_deref().is_some_and(|s| s.pages_gradients());
        let (true, Gradients::Full { matrices, vectors }) = (paged, &mut *grads) else {
            return self.in_block(ctx, source, layer, |ctx| run(ctx, grads));
        };
        let source = source.as_deref_mut().expect("a source keeps the gradients");
        let (block, block_grads) = source
            .block_with_gradients(layer)
            .map_err(|()| Error::Paging { page: Page::Block(layer) })?;
        self.check_block(&block, layer)?;
        let expected = self.layout.block_matrices(layer).len();
        if block_grads.len() != expected {
            return Err(Error::BufferSize {
                buffer: "a paged block's gradients",
                expected,
                actual: block_grads.len(),
            });
        }
        let mut grads = Gradients::Block { globals: matrices, layer, block: block_grads, vectors };
        on_block(ctx, layer, &block, |ctx| run(ctx, &mut grads));
        Ok(())
    }

    /// Checks a paged block's matrices against the layout.
    fn check_block<T>(&self, block: &[&[T]; LAYER_PARAMS], layer: usize) -> Result<()> {
        for p in LayerParam::ALL {
            let Some(slot) = self.layout.slot(Param::Layer(layer, p)).filter(|s| s.matrix) else {
                continue;
            };
            if block[p as usize].len() != slot.len {
                return Err(Error::BufferSize {
                    buffer: "a paged block matrix",
                    expected: slot.len,
                    actual: block[p as usize].len(),
                });
            }
        }
        Ok(())
    }
}

impl Buffers<'_> {
    /// Where block `layer`'s kept activations live in `saved` (`layer == layers`: the end).
    fn block_range(&self, layer: usize) -> core::ops::Range<usize> {
        let start_of = |l: usize| {
            let k = l.min(self.checkpointed);
            k * self.input_len + (l - k) * self.saved_per_block
        };
        let len = if layer < self.checkpointed { self.input_len } else { self.saved_per_block };
        start_of(layer)..start_of(layer) + len
    }
}

/// Runs `run` with `ctx` reading block `layer`'s matrices from `block` (paged in).
fn on_block<T>(
    ctx: &Ctx<'_, T>,
    layer: usize,
    block: &[&[T]; LAYER_PARAMS],
    run: impl FnOnce(&Ctx<'_, T>),
) {
    let base = ctx.weights.matrices;
    let weights = Weights {
        matrices: Matrices::Block { layer, block, base: &base },
        vectors: ctx.weights.vectors,
    };
    run(&Ctx { weights, ..*ctx });
}

/// Where the embedding writes: block 0's saved input.
fn first_block_input<'b>(buf: &'b mut Buffers<'_>, len: usize) -> &'b mut [f32] {
    &mut buf.saved[..len]
}

/// Floats of a block's whole [`Saved`].
fn saved_per_block(d: &Dims) -> usize {
    let mut c = Carver::measuring();
    Saved::carve(&mut c, d);
    c.used()
}

/// The RoPE table of `layer` (empty for GPT-2).
fn rope_of<'t>(
    config: &ModelConfig,
    layer: usize,
    global: &'t [f32],
    local: &'t [f32],
) -> &'t [f32] {
    if config.is_sliding(layer) && config.rope_local.is_some() { local } else { global }
}
