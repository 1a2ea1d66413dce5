//! The trainer: optimizer steps over micro-batches with token-weighted gradient accumulation,
//! gradient clipping, a learning-rate schedule, evaluation, and checkpoints that resume
//! bit-identically.
//!
//! One optimizer step takes `grad_accum` micro-batches from the [`Batcher`]. Each micro-batch's
//! gradient is weighted by its share of the step's scored tokens
//! ([`StepOptions::loss_weight`]), so `K` micro-batches give the gradient of their union as one
//! batch: the mean over every scored token of the step. Then the gradients are clipped to
//! `max_grad_norm` (when it is not 0), and the optimizer steps at the schedule's rate.
//!
//! Everything random is a function of `(seed, step, micro-batch)`: the dropout masks here, the
//! data order in the [`Batcher`]. A checkpoint ([`checkpoint`]) therefore only needs the
//! trainable tensors, the optimizer state, the step and the data position to continue exactly as
//! the uninterrupted run would have.

pub mod checkpoint;
pub mod optimizer;
pub mod rounds;
pub mod schedule;

use std::time::Instant;

use mft_core::{DType, Element};
use mft_kernels::{GemmOffload, GemmRhs, Kernels, Parallel};
use mft_models::rng::Counter;
use mft_models::{
    Adapters, GlobalParam, Gradients, LoraLayout, Model, ModelConfig, Param, ParamLayout, Purpose,
    StepOptions,
};

use crate::data::{Batcher, Example, MicroBatch, eval_batches};
use crate::error::{Error, Result};
use crate::hf::ModelWeights;
use crate::paging::full::{FullPaging, full_grad_norm};
use crate::pool::ThreadPool;

pub use optimizer::{Group, Optimizer, OptimizerConfig, OptimizerKind};
pub use rounds::{Proximal, RoundStart};
pub use schedule::{Schedule, ScheduleKind};

/// How a run trains.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TrainOptions {
    /// Optimizer steps of the whole run.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Longest sequence, in tokens.
    pub seq: usize,
    /// Micro-batches per optimizer step.
    pub grad_accum: usize,
    /// Optimizer and its settings.
    pub optimizer: OptimizerConfig,
    /// Learning rates.
    pub schedule: Schedule,
    /// Clip the gradient norm to this (0: no clipping).
    pub max_grad_norm: f32,
    /// Seed of dropout (and, in the data module, of the data order).
    pub seed: u64,
    /// Blocks (from the first) that recompute their forward in backward.
    pub checkpointed_blocks: usize,
}

/// What is trained, with its trainable tensors.
#[derive(Debug, Clone, PartialEq)]
#[allow(clippy::large_enum_variant)] // one per run; boxing the layout would buy nothing
pub enum Trainable {
    /// Every parameter (the model's weights, which must then be f32).
    Full,
    /// LoRA adapters over frozen weights.
    Lora {
        /// Where each adapter lives.
        layout: LoraLayout,
        /// The adapters.
        adapters: Vec<f32>,
    },
}

/// What one optimizer step did.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct StepReport {
    /// The step just taken (from 1).
    pub step: u64,
    /// Mean cross-entropy over the step's scored tokens.
    pub loss: f32,
    /// Learning rate used.
    pub lr: f32,
    /// Gradient norm before clipping.
    pub grad_norm: f32,
    /// Scored tokens of the step.
    pub scored_tokens: usize,
    /// Tokens processed (padding included).
    pub tokens: usize,
    /// Wall-clock seconds of the step.
    pub seconds: f64,
}

/// An evaluation's result.
#[derive(Debug, Clone, Copy, PartialEq, serde::Serialize)]
pub struct EvalReport {
    /// Mean cross-entropy over every scored token.
    pub loss: f64,
    /// Scored tokens.
    pub tokens: usize,
    /// `exp(loss)`.
    pub ppl: f64,
}

/// Frozen weights registered with a GEMM offload backend, released when dropped.
#[derive(Default)]
struct Resident {
    offload: Option<&'static dyn GemmOffload>,
    /// Addresses of the registered slices.
    addrs: Vec<usize>,
}

impl Drop for Resident {
    fn drop(&mut self) {
        if let Some(offload) = self.offload {
            for addr in self.addrs.drain(..) {
                offload.release(addr);
            }
        }
    }
}

/// A model being trained: weights, trainable tensors, gradients, optimizer, and the workspace.
pub struct Trainer<T: 'static> {
    model: Model,
    kernels: Kernels,
    pool: ThreadPool,
    /// The threads the workspace is sized for: [`Trainer::set_threads`] stays within them.
    max_threads: usize,
    /// Frozen weights kept on the GEMM offload's device (declared before `weights`, so they
    /// are released before the weights are freed).
    resident: Resident,
    weights: ModelWeights<T>,
    trainable: Trainable,
    /// Per optimizer group, the gradients.
    grads: Vec<Vec<f32>>,
    optimizer: Optimizer,
    options: TrainOptions,
    workspace: Vec<f32>,
    micro: Vec<MicroBatch>,
    step: u64,
    /// Full fine-tuning with paged blocks: the state kept in the scratch file (the weights then
    /// hold the global matrices, the vectors and the paged blocks; `grads` the globals' and the
    /// vectors'; the optimizer the vectors' state).
    full_paging: Option<FullPaging>,
    /// FedProx's proximal term of the current federated round ([`rounds`]).
    proximal: Option<Proximal>,
}

impl<T: GemmRhs + Element + Send + Sync> Trainer<T> {
    /// A trainer at step 0. Full fine-tuning needs f32 weights.
    ///
    /// # Errors
    /// Full fine-tuning of half-precision weights; settings that do not fit the model (a
    /// sequence beyond its context); threads that cannot start.
    pub fn new(
        model: Model,
        weights: ModelWeights<T>,
        trainable: Trainable,
        options: TrainOptions,
        threads: usize,
    ) -> Result<Trainer<T>> {
        Trainer::<T>::check(&model, &trainable, &options)?;
        let group_lens = group_lens(&model, &trainable);
        let mut weights = weights;
        if matches!(trainable, Trainable::Full) {
            // Trained weights need one writable store (not the mapped checkpoint files).
            weights.stores_mut(model.layout());
        }
        Trainer::assemble(
            model,
            weights,
            trainable,
            options,
            threads,
            &group_lens,
            &group_lens,
            None,
        )
    }

    /// A trainer at step 0 for full fine-tuning inside a memory budget: the blocks' weights,
    /// their gradients and the optimizer state of every matrix move to a scratch file in
    /// `scratch_dir` (removed when the trainer is dropped) and are paged in as the steps need
    /// them (see [`crate::paging::full`]). The results are bit for bit those of
    /// [`Trainer::new`].
    ///
    /// # Errors
    /// As [`Trainer::new`]; a scratch file that cannot be made or filled; weights whose
    /// embeddings are paged.
    pub fn new_full_paged(
        model: Model,
        weights: ModelWeights<T>,
        options: TrainOptions,
        threads: usize,
        scratch_dir: &std::path::Path,
    ) -> Result<Trainer<T>> {
        Trainer::<T>::check(&model, &Trainable::Full, &options)?;
        let layout = *model.layout();
        let states = options.optimizer.state_tensors();
        let (full, kept) = FullPaging::create(scratch_dir, &layout, states, &weights)?;
        drop(weights);
        let grad_lens = [layout.global_matrix_len(), layout.vector_len()];
        // The matrices' optimizer state is in the scratch file.
        let state_lens = [0, layout.vector_len()];
        let full = Some(full);
        Trainer::assemble(
            model,
            kept,
            Trainable::Full,
            options,
            threads,
            &grad_lens,
            &state_lens,
            full,
        )
    }

    /// Refuses settings the trainer cannot run.
    fn check(model: &Model, trainable: &Trainable, options: &TrainOptions) -> Result<()> {
        let invalid = |problem: String| Error::Training { problem };
        if matches!(trainable, Trainable::Full) && T::DTYPE != DType::F32 {
            return Err(invalid(format!(
                "full fine-tuning trains f32 weights, not {:?}",
                T::DTYPE
            )));
        }
        check_seq(model.config(), options.seq)?;
        if options.batch == 0 || options.grad_accum == 0 {
            return Err(invalid("--batch and --grad-accum must be at least 1".into()));
        }
        Ok(())
    }

    /// A trainer at step 0 with gradients of `grad_lens` and optimizer state of `state_lens`
    /// per group.
    #[allow(clippy::too_many_arguments)] // the parts of a trainer
    fn assemble(
        model: Model,
        weights: ModelWeights<T>,
        trainable: Trainable,
        options: TrainOptions,
        threads: usize,
        grad_lens: &[usize],
        state_lens: &[usize],
        full_paging: Option<FullPaging>,
    ) -> Result<Trainer<T>> {
        let kernels = Kernels::best();
        let pool = ThreadPool::new(threads)?;
        let lora = match &trainable {
            Trainable::Lora { layout, .. } => Some(layout),
            Trainable::Full => None,
        };
        let (b, t) = (options.batch, options.seq);
        let train = Purpose::Train { checkpointed_blocks: options.checkpointed_blocks };
        let len = model
            .workspace_len(&kernels, lora, b, t, train, threads)
            .max(model.workspace_len(&kernels, lora, b, t, Purpose::Logits, threads));
        Ok(Trainer {
            grads: grad_lens.iter().map(|&n| vec![0.0; n]).collect(),
            optimizer: Optimizer::new(options.optimizer, state_lens),
            model,
            kernels,
            pool,
            max_threads: threads.max(1),
            resident: Resident::default(),
            weights,
            trainable,
            options,
            workspace: vec![0.0; len],
            micro: vec![MicroBatch::default(); options.grad_accum],
            step: 0,
            full_paging,
            proximal: None,
        })
    }

    /// Offers every GEMM of the following steps and evaluations to `offload` first (`None`:
    /// the CPU only). In a LoRA run whose frozen weights are not paged, the weights the GEMMs
    /// read (the blocks' matrices and the LM head) are registered with the backend to stay on
    /// its device; they are released when the offload changes or the trainer is dropped.
    /// Returns the bytes the backend kept resident.
    pub fn set_gemm_offload(&mut self, offload: Option<&'static dyn GemmOffload>) -> usize {
        self.resident = Resident::default();
        self.kernels = self.kernels.with_gemm_offload(offload);
        let Some(offload) = offload else {
            return 0;
        };
        self.resident.offload = Some(offload);
        if !matches!(self.trainable, Trainable::Lora { .. }) || self.weights.paged().is_some() {
            // Trained weights change every step; paged ones change slot contents.
            return 0;
        }
        let layout = *self.model.layout();
        let tied = self.model.config().tie_embeddings;
        let weights = self.weights.as_weights();
        let mut kept = 0;
        for param in layout.params() {
            let read_by_gemms = match param {
                Param::Layer(..) => true,
                Param::Global(GlobalParam::LmHead) => true,
                Param::Global(GlobalParam::Embed) => tied,
                Param::Global(_) => false,
            };
            if !read_by_gemms || !layout.slot(param).is_some_and(|s| s.matrix) {
                continue;
            }
            let matrix = weights.matrix(&layout, param);
            if offload.keep_resident(T::rhs_data(matrix)) {
                self.resident.addrs.push(matrix.as_ptr() as usize);
                kept += size_of_val(matrix);
            }
        }
        kept
    }

    /// Threads the next step runs on.
    pub fn threads(&self) -> usize {
        self.pool.threads()
    }

    /// Runs the next steps on `threads` threads (clamped to 1 ..= the threads the trainer was
    /// made with, for which its workspace is sized); returns the count in use. The pool is
    /// rebuilt only when the count changes. Results may differ in the last bits between
    /// thread counts (per-thread partial sums are added in another grouping), not between
    /// runs on the same counts.
    ///
    /// # Errors
    /// Threads that cannot start.
    pub fn set_threads(&mut self, threads: usize) -> Result<usize> {
        let threads = threads.clamp(1, self.max_threads);
        if threads != self.pool.threads() {
            self.pool = ThreadPool::new(threads)?;
        }
        Ok(threads)
    }

    /// Optimizer steps taken.
    pub fn step_count(&self) -> u64 {
        self.step
    }

    /// The settings.
    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// The model.
    pub fn model(&self) -> &Model {
        &self.model
    }

    /// The weights (trained ones in full fine-tuning, frozen ones with LoRA).
    pub fn weights(&self) -> &ModelWeights<T> {
        &self.weights
    }

    /// What is trained.
    pub fn trainable(&self) -> &Trainable {
        &self.trainable
    }

    /// The optimizer and its state.
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// One optimizer step over the next `grad_accum` micro-batches of `data`.
    ///
    /// # Errors
    /// A micro-batch the model refuses (token ids out of its vocabulary), or a gradient that is
    /// not finite (the step is not taken).
    pub fn train_step(&mut self, data: &mut Batcher) -> Result<StepReport> {
        let start = Instant::now();
        for micro in &mut self.micro {
            data.next_batch(micro);
        }
        let scored: usize = self.micro.iter().map(|m| m.scored_tokens).sum();
        let tokens: usize = self.micro.iter().map(|m| m.batch * m.seq).sum();
        self.grads.iter_mut().for_each(|g| g.fill(0.0));
        if let Some(pages) = self.weights.for_step().1.and_then(|p| p.gradients_mut()) {
            pages.begin_step();
        }
        let mut loss_sum = 0.0f64;
        let mut grads_stored = false;
        let step = self.step;
        for (i, micro) in self.micro.iter().enumerate() {
            if micro.scored_tokens == 0 {
                continue;
            }
            let options = StepOptions {
                checkpointed_blocks: self.options.checkpointed_blocks,
                dropout_seed: Counter::new(self.options.seed, &[step, i as u64]).bits(0),
                loss_weight: micro.scored_tokens as f32 / scored as f32,
            };
            let batch = micro.as_batch();
            let (adapters, grads) = match (&self.trainable, &mut self.grads[..]) {
                (Trainable::Lora { layout, adapters }, [g]) => {
                    (Some(Adapters { layout, weights: adapters }), Gradients::Lora(g))
                }
                (Trainable::Full, [m, v]) => (None, Gradients::Full { matrices: m, vectors: v }),
                _ => unreachable!("the groups follow the trainable"),
            };
            let (model, kernels, pool) = (&self.model, &self.kernels, &self.pool);
            let workspace = &mut self.workspace;
            let loss = match self.weights.for_step() {
                (weights, None) => model
                    .train_step(kernels, weights, adapters, grads, &batch, options, workspace, pool)
                    .map_err(|e| Error::Training { problem: e.to_string() })?,
                (weights, Some(paged)) => {
                    let schedule = paged.schedule(model, true, batch.batch * batch.seq);
                    if let Some(pages) = paged.gradients_mut() {
                        pages.accumulate = grads_stored;
                    }
                    paged.run_with(&schedule, pool, |source| {
                        model.train_step_paged(
                            kernels, weights, source, adapters, grads, &batch, options, workspace,
                            pool,
                        )
                    })?
                }
            };
            grads_stored = true;
            loss_sum += loss.loss as f64 * loss.valid_tokens as f64;
        }
        rounds::add_proximal_gradient(self.proximal.as_ref(), &self.trainable, &mut self.grads);
        let grad_norm = match &self.trainable {
            // Tensor by tensor, so that paged gradients give the same norm (see
            // `crate::paging::full`).
            Trainable::Full => full_grad_norm(
                self.model.layout(),
                &self.kernels,
                &self.pool,
                &self.grads[0],
                &self.grads[1],
                self.weights.paged().and_then(|p| p.gradients()),
            ),
            Trainable::Lora { .. } => self.kernels.grad_norm(&self.grads, &self.pool),
        };
        let clip = Some(self.options.max_grad_norm)
            .filter(|&max| max > 0.0)
            .and_then(|max| Kernels::clip_coefficient(grad_norm, max));
        if !grad_norm.is_finite() {
            return Err(Error::Training {
                problem: format!(
                    "step {}: the gradient norm is {grad_norm}; not stepping (lower --lr?)",
                    step + 1
                ),
            });
        }
        let lr = self.options.schedule.lr(step);
        if let Some(full) = self.full_paging.take() {
            let updated = self.paged_update(&full, lr, step + 1, grads_stored, clip);
            self.full_paging = Some(full);
            updated?;
        } else {
            if let Some(c) = clip {
                self.grads.iter_mut().for_each(|g| self.kernels.scale(g, c, &self.pool));
            }
            let mut groups =
                groups(self.model.layout(), &mut self.weights, &mut self.trainable, &self.grads);
            self.optimizer.step(&self.kernels, lr, step + 1, &mut groups, &self.pool);
        }
        self.step += 1;
        Ok(StepReport {
            step: self.step,
            loss: if scored == 0 { 0.0 } else { (loss_sum / scored as f64) as f32 },
            lr,
            grad_norm,
            scored_tokens: scored,
            tokens,
            seconds: start.elapsed().as_secs_f64(),
        })
    }

    /// The optimizer step of full fine-tuning with paged blocks: the matrix store streamed
    /// through the scratch file, the vectors in memory.
    fn paged_update(
        &mut self,
        full: &FullPaging,
        lr: f32,
        step: u64,
        grads_stored: bool,
        clip: Option<f32>,
    ) -> Result<()> {
        let (kernels, pool) = (&self.kernels, &self.pool);
        let config = *self.optimizer.config();
        let (globals, vectors) = self.weights.stores_mut(self.model.layout());
        let globals = as_f32_mut(globals).expect("full fine-tuning holds f32 weights");
        let [global_grads, vector_grads] = &mut self.grads[..] else {
            unreachable!("full fine-tuning has two groups")
        };
        let matrices = config.update(kernels, lr, step, true);
        full.update(kernels, pool, globals, global_grads, grads_stored, clip, |p, g, state| {
            matrices(p, g, state, pool)
        })?;
        if let Some(c) = clip {
            kernels.scale(vector_grads, c, pool);
        }
        let mut state: Vec<&mut [f32]> =
            self.optimizer.state_mut()[1].iter_mut().map(|s| &mut s[..]).collect();
        config.update(kernels, lr, step, false)(vectors, vector_grads, &mut state, pool);
        Ok(())
    }

    /// Mean cross-entropy over every scored token of `examples` (no dropout).
    ///
    /// # Errors
    /// An example the model refuses.
    pub fn evaluate(&mut self, examples: &[Example], pad_id: u32) -> Result<EvalReport> {
        evaluate_with(
            &self.model,
            &self.kernels,
            &mut self.weights,
            match &self.trainable {
                Trainable::Lora { layout, adapters } => {
                    Some(Adapters { layout, weights: adapters })
                }
                Trainable::Full => None,
            },
            examples,
            self.options.batch,
            pad_id,
            &mut self.workspace,
            &self.pool,
        )
    }

    /// The tensors a checkpoint holds, named and sized: `trainable.{group}` (the adapters, or
    /// the matrices and the vectors), then `optimizer.{group}.{i}` (each state tensor).
    pub(crate) fn checkpoint_tensors(&self) -> Vec<(String, usize)> {
        let layout = self.model.layout();
        let group_lens = group_lens(&self.model, &self.trainable);
        let mut tensors: Vec<(String, usize)> =
            group_lens.iter().enumerate().map(|(g, &n)| (format!("trainable.{g}"), n)).collect();
        for (g, &n) in group_lens.iter().enumerate() {
            for i in 0..self.optimizer.config().state_tensors() {
                tensors.push((format!("optimizer.{g}.{i}"), n));
            }
        }
        debug_assert!(self.full_paging.is_none() || group_lens[0] == layout.matrix_len());
        tensors
    }

    /// Checkpoint tensor `index` ([`Trainer::checkpoint_tensors`]), `first..first + out.len()`,
    /// into `out` (`load`: false) or from it (`load`: true), wherever it is kept.
    pub(crate) fn checkpoint_chunk(
        &mut self,
        index: usize,
        first: usize,
        out: &mut [f32],
        load: bool,
    ) -> Result<()> {
        let groups = group_lens(&self.model, &self.trainable).len();
        let states = self.optimizer.config().state_tensors();
        let range = first..first + out.len();
        let (group, state) = if index < groups {
            (index, None)
        } else {
            ((index - groups) / states, Some((index - groups) % states))
        };
        if let (Some(full), 0) = (&self.full_paging, group) {
            let (globals, _) = self.weights.stores_mut(self.model.layout());
            let globals = as_f32_mut(globals).expect("full fine-tuning holds f32 weights");
            return match (state, load) {
                (None, false) => full.read_weights(globals, range, out),
                (None, true) => full.write_weights(globals, range, out),
                (Some(i), false) => full.read_state(i, range, out),
                (Some(i), true) => full.write_state(i, range, out),
            };
        }
        let tensor: &mut [f32] = match state {
            None => {
                let layout = self.model.layout();
                trainable_tensors(layout, &mut self.weights, &mut self.trainable).swap_remove(group)
            }
            Some(i) => &mut self.optimizer.state_mut()[group][i],
        };
        if load {
            tensor[range].copy_from_slice(out);
        } else {
            out.copy_from_slice(&tensor[range]);
        }
        Ok(())
    }

    /// Sets the steps taken (a checkpoint's).
    pub(crate) fn set_step_count(&mut self, step: u64) {
        self.step = step;
    }

    /// Reads elements `range` of the trained matrix store into `out`, in full fine-tuning
    /// (paged or not).
    ///
    /// # Errors
    /// A scratch file that cannot be read; [`Error::Training`] when the run is not full
    /// fine-tuning.
    pub fn read_full_matrices(&self, range: std::ops::Range<usize>, out: &mut [f32]) -> Result<()> {
        let not_full = || Error::Training { problem: "not full fine-tuning".into() };
        let store = self.weights.matrix_store().ok_or_else(not_full)?;
        let store: &[f32] = (T::DTYPE == DType::F32 && matches!(self.trainable, Trainable::Full))
            .then(|| bytemuck::cast_slice(store))
            .ok_or_else(not_full)?;
        match &self.full_paging {
            Some(full) => full.read_weights(store, range, out),
            None => {
                out.copy_from_slice(&store[range]);
                Ok(())
            }
        }
    }

    /// The weights as f32, in full fine-tuning (where they are what is trained) when they are
    /// all in memory (not paged: see [`Trainer::read_full_matrices`]).
    pub fn full_weights(&self) -> Option<mft_models::Weights<'_, f32>> {
        if self.full_paging.is_some() {
            return None;
        }
        let store = self.weights.matrix_store().filter(|_| T::DTYPE == DType::F32)?;
        Some(mft_models::Weights::new(bytemuck::cast_slice(store), &self.weights.vectors))
    }
}

/// Mean cross-entropy of `examples` under `weights` (+ `adapters`), `batch` sequences at a time,
/// padded with `pad_id`.
///
/// # Errors
/// An example the model refuses.
#[allow(clippy::too_many_arguments)] // model, kernels, weights, adapters, data, memory, threads
pub fn evaluate_with<T: GemmRhs>(
    model: &Model,
    kernels: &Kernels,
    weights: &mut ModelWeights<T>,
    adapters: Option<Adapters<'_>>,
    examples: &[Example],
    batch: usize,
    pad_id: u32,
    workspace: &mut Vec<f32>,
    pool: &ThreadPool,
) -> Result<EvalReport> {
    let (mut sum, mut tokens) = (0.0f64, 0usize);
    for micro in eval_batches(examples, batch, pad_id) {
        let need = model.workspace_len(
            kernels,
            adapters.map(|a| a.layout),
            micro.batch,
            micro.seq,
            Purpose::Logits,
            pool.threads(),
        );
        if workspace.len() < need {
            workspace.resize(need, 0.0);
        }
        let batch = micro.as_batch();
        let loss = match weights.for_step() {
            (weights, None) => model
                .loss(kernels, weights, adapters, &batch, workspace, pool)
                .map_err(|e| Error::Training { problem: e.to_string() })?,
            (weights, Some(paged)) => {
                let schedule = paged.schedule(model, false, batch.batch * batch.seq);
                paged.run(&schedule, |source| {
                    model.loss_paged(kernels, weights, source, adapters, &batch, workspace, pool)
                })?
            }
        };
        sum += loss.loss as f64 * loss.valid_tokens as f64;
        tokens += loss.valid_tokens;
    }
    let loss = if tokens == 0 { 0.0 } else { sum / tokens as f64 };
    Ok(EvalReport { loss, tokens, ppl: loss.exp() })
}

/// Refuses a sequence length the model cannot take: 0, or beyond its context.
///
/// # Errors
/// [`Error::Training`] naming `--seq` and the model's context.
pub fn check_seq(config: &ModelConfig, seq: usize) -> Result<()> {
    if seq == 0 || seq > config.max_positions {
        return Err(Error::Training {
            problem: format!(
                "--seq {seq} is beyond the model's context of {} positions",
                config.max_positions
            ),
        });
    }
    Ok(())
}

/// Lengths of the optimizer groups: the adapters; or the matrices and the vectors.
fn group_lens(model: &Model, trainable: &Trainable) -> Vec<usize> {
    match trainable {
        Trainable::Lora { layout, .. } => vec![layout.len()],
        Trainable::Full => vec![model.layout().matrix_len(), model.layout().vector_len()],
    }
}

/// The optimizer groups, one per trainable tensor: adapters decay; in full fine-tuning the
/// matrices decay and the norm weights and biases do not (as the Hugging Face Trainer groups
/// them).
fn groups<'a, T: Element>(
    layout: &ParamLayout,
    weights: &'a mut ModelWeights<T>,
    trainable: &'a mut Trainable,
    grads: &'a [Vec<f32>],
) -> Vec<Group<'a>> {
    let decays: &[bool] = match trainable {
        Trainable::Lora { .. } => &[true],
        Trainable::Full => &[true, false],
    };
    trainable_tensors(layout, weights, trainable)
        .into_iter()
        .zip(grads)
        .zip(decays)
        .map(|((params, grads), &decay)| Group { params, grads, decay })
        .collect()
}

/// The trained tensors, in the order of the optimizer groups: the adapters; or the matrices
/// and the vectors.
fn trainable_tensors<'a, T: Element>(
    layout: &ParamLayout,
    weights: &'a mut ModelWeights<T>,
    trainable: &'a mut Trainable,
) -> Vec<&'a mut [f32]> {
    match trainable {
        Trainable::Lora { adapters, .. } => vec![&mut adapters[..]],
        Trainable::Full => {
            let (matrices, vectors) = weights.stores_mut(layout);
            let matrices = as_f32_mut(matrices).expect("full fine-tuning holds f32 weights");
            vec![matrices, vectors]
        }
    }
}

/// The matrices as f32, when that is what they are.
fn as_f32_mut<T: Element>(values: &mut [T]) -> Option<&mut [f32]> {
    (T::DTYPE == DType::F32).then(|| bytemuck::cast_slice_mut(values))
}
