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
pub mod schedule;

use std::time::Instant;

use mft_core::{DType, Element};
use mft_kernels::{GemmRhs, Kernels, Parallel};
use mft_models::rng::Counter;
use mft_models::{
    Adapters, Gradients, LoraLayout, Model, ModelConfig, ParamLayout, Purpose, StepOptions,
};

use crate::data::{Batcher, Example, MicroBatch, eval_batches};
use crate::error::{Error, Result};
use crate::hf::ModelWeights;
use crate::pool::ThreadPool;

pub use optimizer::{Group, Optimizer, OptimizerConfig, OptimizerKind};
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

/// A model being trained: weights, trainable tensors, gradients, optimizer, and the workspace.
pub struct Trainer<T: 'static> {
    model: Model,
    kernels: Kernels,
    pool: ThreadPool,
    /// The threads the workspace is sized for: [`Trainer::set_threads`] stays within them.
    max_threads: usize,
    weights: ModelWeights<T>,
    trainable: Trainable,
    /// Per optimizer group, the gradients.
    grads: Vec<Vec<f32>>,
    optimizer: Optimizer,
    options: TrainOptions,
    workspace: Vec<f32>,
    micro: Vec<MicroBatch>,
    step: u64,
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
        let group_lens = group_lens(&model, &trainable);
        let mut weights = weights;
        if matches!(trainable, Trainable::Full) {
            // Trained weights need one writable store (not the mapped checkpoint files).
            weights.stores_mut(model.layout());
        }
        Ok(Trainer {
            grads: group_lens.iter().map(|&n| vec![0.0; n]).collect(),
            optimizer: Optimizer::new(options.optimizer, &group_lens),
            model,
            kernels,
            pool,
            max_threads: threads.max(1),
            weights,
            trainable,
            options,
            workspace: vec![0.0; len],
            micro: vec![MicroBatch::default(); options.grad_accum],
            step: 0,
        })
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
        let mut loss_sum = 0.0f64;
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
                    paged.run(&schedule, |source| {
                        model.train_step_paged(
                            kernels, weights, source, adapters, grads, &batch, options, workspace,
                            pool,
                        )
                    })?
                }
            };
            loss_sum += loss.loss as f64 * loss.valid_tokens as f64;
        }
        let grad_norm = if self.options.max_grad_norm > 0.0 {
            self.kernels.clip_grad_norm(&mut self.grads, self.options.max_grad_norm, &self.pool)
        } else {
            self.kernels.grad_norm(&self.grads, &self.pool)
        };
        if !grad_norm.is_finite() {
            return Err(Error::Training {
                problem: format!(
                    "step {}: the gradient norm is {grad_norm}; not stepping (lower --lr?)",
                    step + 1
                ),
            });
        }
        let lr = self.options.schedule.lr(step);
        let mut groups =
            groups(self.model.layout(), &mut self.weights, &mut self.trainable, &self.grads);
        self.optimizer.step(&self.kernels, lr, step + 1, &mut groups, &self.pool);
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

    /// Parts for checkpoints: the trainable tensors per group and the optimizer.
    pub(crate) fn parts_mut(&mut self) -> (Vec<&mut [f32]>, &mut Optimizer, &mut u64) {
        let tensors =
            trainable_tensors(self.model.layout(), &mut self.weights, &mut self.trainable);
        (tensors, &mut self.optimizer, &mut self.step)
    }

    /// The weights as f32, in full fine-tuning (where they are what is trained).
    pub fn full_weights(&self) -> Option<mft_models::Weights<'_, f32>> {
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
