//! The node's side of federated LoRA: a model, its local data and mft-std's trainer, kept
//! across rounds. A `train` round starts the trainer from the global adapters
//! ([`mft_std::train::Trainer::begin_round`]: fresh optimizer, the round's seed, learning rate
//! and FedProx term), takes the configured steps through the local data (the data order
//! continues from round to round), and reports the adapters with the round's metrics. An
//! `evaluate` round loads the global adapters and measures the loss on the held-out split.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mft_core::Element;
use mft_kernels::GemmRhs;
use mft_models::{LoraLayout, ModelConfig};
use mft_std::data::{self, Batcher, DataOptions, Example};
use mft_std::energy::{EnergyOptions, EnergySession, StepEnergy};
use mft_std::finetune::LoraArgs;
use mft_std::progress::peak_rss_bytes;
use mft_std::source::{LoadedModel, ModelSource, load_model};
use mft_std::train::{
    OptimizerConfig, OptimizerKind, RoundStart, Schedule, ScheduleKind, TrainOptions, Trainable,
    Trainer,
};

use crate::error::{Error, Result};
use crate::lora::AdapterArrays;

/// How the node trains and evaluates.
#[derive(Debug, Clone, PartialEq)]
pub struct LocalSettings {
    /// `--model`: a Hugging Face directory or `random:…`.
    pub model: String,
    /// Training data (this node's shard).
    pub data: PathBuf,
    /// Held-out data; without it, `eval_fraction` of `data` is held out.
    pub eval_data: Option<PathBuf>,
    /// Share of `data` held out when there is no `eval_data`.
    pub eval_fraction: f64,
    /// The adapter every node of the federation trains (it must match the server's arrays).
    pub lora: LoraArgs,
    /// Optimizer steps per round, unless the server's config says `local-steps`.
    pub local_steps: u64,
    /// Sequences per step.
    pub batch: usize,
    /// Longest sequence.
    pub seq: usize,
    /// Learning rate, unless the server's config says `lr`.
    pub lr: f32,
    /// Optimizer (a fresh one each round).
    pub optimizer: OptimizerKind,
    /// Weight decay.
    pub weight_decay: f32,
    /// Gradient clipping (0: off).
    pub max_grad_norm: f32,
    /// Seed of data order, dropout, and random weights.
    pub seed: u64,
    /// Threads.
    pub threads: usize,
}

/// A round's configuration, from the server's `ConfigRecord` with the local defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RoundConfig {
    /// `server-round`.
    pub round: u64,
    /// Optimizer steps.
    pub steps: u64,
    /// Learning rate.
    pub lr: f32,
    /// FedProx's `proximal-mu`.
    pub proximal_mu: Option<f32>,
}

/// What a training round produced.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainOutcome {
    /// The updated adapters.
    pub adapters: Vec<f32>,
    /// Training examples of the node (FedAvg's weight).
    pub num_examples: usize,
    /// Per step: loss and seconds.
    pub steps: Vec<(f32, f64)>,
    /// Tokens processed.
    pub tokens: usize,
    /// Seconds of the whole round's training.
    pub seconds: f64,
    /// Joules measured over the round's steps (`None`: not measurable here).
    pub energy_joules: Option<f64>,
    /// Why energy is not measured.
    pub energy_note: Option<String>,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
}

impl TrainOutcome {
    /// Mean loss over the round's steps.
    pub fn mean_loss(&self) -> f64 {
        let n = self.steps.len().max(1) as f64;
        self.steps.iter().map(|&(l, _)| f64::from(l)).sum::<f64>() / n
    }
}

/// What an evaluation produced.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct EvalOutcome {
    /// Mean cross-entropy over the held-out split's scored tokens.
    pub loss: f64,
    /// Held-out examples.
    pub num_examples: usize,
    /// Scored tokens.
    pub tokens: usize,
}

/// Local training of one node.
pub struct Local<T: 'static> {
    trainer: Trainer<T>,
    batcher: Batcher,
    eval: Vec<Example>,
    pad: u32,
    arrays: AdapterArrays,
    layout: LoraLayout,
    model_config: ModelConfig,
    source_name: String,
    num_train: usize,
    settings: LocalSettings,
    energy: EnergySession,
}

impl<T: GemmRhs + Element + Send + Sync> Local<T> {
    /// Loads the model and the data, and makes the trainer (adapters initialized as PEFT does;
    /// each round replaces them with the global ones).
    ///
    /// # Errors
    /// A model, data file or flag that cannot be used, each named.
    pub fn new(settings: LocalSettings) -> Result<Local<T>> {
        let source = ModelSource::parse(&settings.model)?;
        let loaded = load_model::<T>(source, settings.seed)?;
        let config = *loaded.model.config();
        mft_std::train::check_seq(&config, settings.seq)?;
        let encoder = loaded.encoder();
        let mut options = DataOptions::new(settings.seq, config.vocab);
        options.seed = settings.seed;
        options.eval_fraction =
            if settings.eval_data.is_some() { 0.0 } else { settings.eval_fraction };
        let mut dataset = data::load(&settings.data, encoder, &options)?;
        if let Some(eval) = &settings.eval_data {
            let all = DataOptions { eval_fraction: 0.0, shuffle: false, ..options };
            dataset.eval = data::load(eval, encoder, &all)?.train;
        }
        let pad = encoder.eos_id();
        let LoadedModel { source, model, weights, tokenizer: _ } = loaded;
        let layout = settings.lora.layout(&config).map_err(Error::Usage)?;
        let mut adapters = vec![0.0; layout.len()];
        layout.init(settings.seed, &mut adapters);
        let options = TrainOptions {
            steps: settings.local_steps,
            batch: settings.batch,
            seq: settings.seq,
            grad_accum: 1,
            optimizer: OptimizerConfig {
                kind: settings.optimizer,
                momentum: 0.0,
                weight_decay: settings.weight_decay,
            },
            schedule: Schedule {
                kind: ScheduleKind::Constant,
                peak_lr: settings.lr,
                warmup: 0,
                total: settings.local_steps,
            },
            max_grad_norm: settings.max_grad_norm,
            seed: settings.seed,
            checkpointed_blocks: 0,
        };
        let trainable = Trainable::Lora { layout, adapters };
        let trainer = Trainer::new(model, weights, trainable, options, settings.threads)?;
        let num_train = dataset.train.len();
        let batcher = Batcher::new(dataset.train, settings.batch, pad, settings.seed, true);
        Ok(Local {
            trainer,
            batcher,
            eval: dataset.eval,
            pad,
            arrays: AdapterArrays::new(&layout),
            layout,
            model_config: config,
            source_name: source.name(),
            num_train,
            energy: EnergySession::new(&EnergyOptions::default(), settings.threads),
            settings,
        })
    }

    /// The adapter's arrays.
    pub fn arrays(&self) -> &AdapterArrays {
        &self.arrays
    }

    /// The LoRA layout.
    pub fn layout(&self) -> &LoraLayout {
        &self.layout
    }

    /// The model's configuration.
    pub fn model_config(&self) -> &ModelConfig {
        &self.model_config
    }

    /// The model's name (its directory).
    pub fn source_name(&self) -> &str {
        &self.source_name
    }

    /// Training examples.
    pub fn num_train(&self) -> usize {
        self.num_train
    }

    /// Held-out examples.
    pub fn num_eval(&self) -> usize {
        self.eval.len()
    }

    /// The settings.
    pub fn settings(&self) -> &LocalSettings {
        &self.settings
    }

    /// Trains `round.steps` steps from `global`. `stop`, or reaching `deadline`, ends the round
    /// early with an error (the update of a cut round is not sent).
    ///
    /// # Errors
    /// A step that fails (a non-finite gradient); `stop`; the deadline.
    pub fn train(
        &mut self,
        global: &[f32],
        round: &RoundConfig,
        stop: &AtomicBool,
        deadline: Instant,
    ) -> Result<TrainOutcome> {
        let seed = self.settings.seed ^ round.round.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        self.trainer.begin_round(
            global,
            RoundStart { seed, lr: round.lr, proximal_mu: round.proximal_mu },
        )?;
        let start = Instant::now();
        let mut steps = Vec::with_capacity(round.steps as usize);
        let mut tokens = 0;
        let mut joules = Some(0.0);
        let mut note = None;
        for i in 0..round.steps {
            if stop.load(Ordering::SeqCst) {
                return Err(Error::Usage(format!(
                    "stopped during round {} at step {i}",
                    round.round
                )));
            }
            if Instant::now() >= deadline {
                return Err(Error::Usage(format!(
                    "round {}: the message's deadline passed after {i} of {} steps",
                    round.round, round.steps
                )));
            }
            self.energy.begin_step();
            let report = self.trainer.train_step(&mut self.batcher)?;
            match self.energy.finish_step() {
                StepEnergy::Measured { joules: j, .. } => joules = joules.map(|sum| sum + j),
                StepEnergy::Unavailable { reason } => {
                    joules = None;
                    note.get_or_insert(reason);
                }
            }
            tokens += report.tokens;
            steps.push((report.loss, report.seconds));
            crate::log::info(&format!(
                "round {}: step {}/{} loss {:.4} ({:.0} ms)",
                round.round,
                i + 1,
                round.steps,
                report.loss,
                report.seconds * 1e3
            ));
        }
        let adapters = match self.trainer.trainable() {
            Trainable::Lora { adapters, .. } => adapters.clone(),
            Trainable::Full => unreachable!("federated rounds train LoRA"),
        };
        Ok(TrainOutcome {
            adapters,
            num_examples: self.num_train,
            steps,
            tokens,
            seconds: start.elapsed().as_secs_f64(),
            energy_joules: joules,
            energy_note: note,
            peak_rss_bytes: peak_rss_bytes(),
        })
    }

    /// The loss of `global` on the held-out split.
    ///
    /// # Errors
    /// No held-out examples; an example the model refuses.
    pub fn evaluate(&mut self, global: &[f32]) -> Result<EvalOutcome> {
        if self.eval.is_empty() {
            return Err(Error::Usage(
                "no held-out examples to evaluate on (give --eval-data or --eval-fraction)".into(),
            ));
        }
        self.trainer.set_adapters(global)?;
        let report = self.trainer.evaluate(&self.eval, self.pad)?;
        Ok(EvalOutcome { loss: report.loss, num_examples: self.eval.len(), tokens: report.tokens })
    }
}
