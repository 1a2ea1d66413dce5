//! The main job, `mft finetune`: a Hugging Face snapshot (or random weights) and a data file in,
//! a PEFT adapter (LoRA) or a Hugging Face snapshot (`--full`) out, with progress, per-step
//! metrics, periodic evaluation, checkpoints that resume bit-identically, and a loss curve.
//!
//! What `--out DIR` receives:
//! - LoRA: `adapter_config.json` + `adapter_model.safetensors` (PEFT's format: load them with
//!   `PeftModel.from_pretrained(base, DIR)`); full: `config.json` + `model.safetensors` and the
//!   tokenizer files;
//! - `metrics.jsonl` (one JSON object per step, and one per evaluation), `loss.svg`;
//! - `checkpoint/`: the trainer's state, for `--resume`.
//!
//! A directory that already holds a run is refused unless `--resume` (continue it) or
//! `--overwrite` (start over) is given. Ctrl-C finishes the current step, saves a checkpoint and
//! the adapter or snapshot, and stops.
//!
//! Before every step the energy policy ([`crate::energy`]: battery, charger, temperature,
//! quiet hours) decides: train on all threads, on fewer (too warm), or pause — save a
//! checkpoint and wait, or (`--on-pause exit`) save as Ctrl-C does and end with
//! [`FinetuneSummary::paused`] set. Each step's energy goes to `metrics.jsonl`.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Instant;

use mft_core::{DType, Element, bf16, f16};
use mft_kernels::GemmRhs;
use mft_models::{Family, LoraConfig, LoraLayout, LoraTargets, ModelConfig, Paging};

use crate::budget::{self, BudgetPlan, MemBudget, StepShape};
use crate::data::{self, DataOptions, Dataset, TextEncoder};
use crate::device::{self, Device, Selected};
use crate::energy::{Action, Decision, EnergyOptions, EnergySession, Gate, StepEnergy};
use crate::error::{Error, Result};
use crate::export::{export_hf_snapshot, export_hf_snapshot_with, export_peft_adapter, write_f32s};
use crate::fsio::{create_dir_all, write_atomic};
use crate::hf::{load_adapters, read_lora_config};
use crate::progress::{Progress, peak_rss_bytes};
use crate::source::{LoadedModel, ModelSource, load_model, load_model_paged};
use crate::svg::loss_curve_svg;
use crate::train::{
    EvalReport, OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, StepReport, TrainOptions,
    Trainable, Trainer, check_seq, checkpoint,
};

/// LoRA's settings, and the command-line flags that set them (`--lora-r`, `--lora-alpha`,
/// `--lora-dropout`, `--lora-targets`, `--rslora`), shared by `mft finetune` and `mft-fl run`.
#[derive(Debug, Clone, PartialEq, clap::Args)]
pub struct LoraArgs {
    /// LoRA rank (in a federation, the server's adapter arrays fix it).
    #[arg(long = "lora-r", default_value_t = 8)]
    pub rank: usize,
    /// LoRA alpha (scaling = alpha / rank, or alpha / √rank with --rslora).
    #[arg(long = "lora-alpha", default_value_t = 16.0)]
    pub alpha: f32,
    /// Dropout on the adapters' input.
    #[arg(long = "lora-dropout", default_value_t = 0.05)]
    pub dropout: f32,
    /// LoRA target modules, Hugging Face names (default: GPT-2 c_attn,c_proj; others
    /// q_proj,k_proj,v_proj,o_proj).
    #[arg(long = "lora-targets", value_delimiter = ',')]
    pub targets: Option<Vec<String>>,
    /// rsLoRA scaling (alpha / √rank).
    #[arg(long)]
    pub rslora: bool,
}

impl LoraArgs {
    /// The adapter these settings describe on a model of `family`.
    ///
    /// # Errors
    /// One line naming the flag: targets the family does not have, or a rank, alpha or dropout
    /// LoRA refuses.
    pub fn config(&self, family: Family) -> std::result::Result<LoraConfig, String> {
        let lora = LoraConfig {
            rank: self.rank,
            alpha: self.alpha,
            dropout: self.dropout,
            rslora: self.rslora,
            targets: lora_targets(family, self.targets.as_deref())?,
        };
        lora.validate().map_err(|e| format!("LoRA flags: {e}"))?;
        Ok(lora)
    }

    /// The adapter's layout on a model of `config`.
    ///
    /// # Errors
    /// As [`LoraArgs::config`].
    pub fn layout(&self, config: &ModelConfig) -> std::result::Result<LoraLayout, String> {
        Ok(LoraLayout::new(config, &self.config(config.family)?))
    }
}

/// The modules `--lora-targets` names (`None`: the family's [`default_targets`]).
///
/// # Errors
/// `--lora-targets …: problem` for a name the family does not have.
pub fn lora_targets(
    family: Family,
    names: Option<&[String]>,
) -> std::result::Result<LoraTargets, String> {
    let names: Vec<&str> = match names {
        Some(t) => t.iter().map(String::as_str).collect(),
        None => default_targets(family).to_vec(),
    };
    LoraTargets::from_module_names(family, names.iter().copied())
        .map_err(|e| format!("--lora-targets {}: {e}", names.join(",")))
}

/// Everything `mft finetune` takes.
#[derive(Debug, Clone, PartialEq)]
pub struct FinetuneArgs {
    /// `--model`: a directory or `random:…`.
    pub model: String,
    /// Training data (plain text or JSONL).
    pub data: PathBuf,
    /// Output directory.
    pub out: PathBuf,
    /// Start from this PEFT adapter.
    pub adapter: Option<PathBuf>,
    /// LoRA settings (ignored with `full`).
    pub lora: LoraArgs,
    /// Train every parameter.
    pub full: bool,
    /// Element type of frozen weights (LoRA).
    pub frozen: DType,
    /// Optimizer steps.
    pub steps: u64,
    /// Sequences per micro-batch.
    pub batch: usize,
    /// Tokens per sequence (at most).
    pub seq: usize,
    /// Micro-batches per step.
    pub grad_accum: usize,
    /// Peak learning rate.
    pub lr: f32,
    /// Optimizer.
    pub optimizer: OptimizerKind,
    /// SGD momentum.
    pub momentum: f32,
    /// Weight decay.
    pub weight_decay: f32,
    /// Warmup steps.
    pub warmup: u64,
    /// Schedule after warmup.
    pub schedule: ScheduleKind,
    /// Clip gradients to this norm (0: off).
    pub max_grad_norm: f32,
    /// Seed of data order, dropout, adapter init and random weights.
    pub seed: u64,
    /// Threads.
    pub threads: usize,
    /// Keep the file order.
    pub no_shuffle: bool,
    /// Plain text: window stride.
    pub stride: Option<usize>,
    /// Share of examples held out for evaluation.
    pub eval_fraction: f64,
    /// A separate evaluation file (then nothing is held out).
    pub eval_data: Option<PathBuf>,
    /// Evaluate every this many steps (0: only before and after).
    pub eval_every: u64,
    /// Save a checkpoint every this many steps (0: only at the end).
    pub save_every: u64,
    /// Blocks recomputed in backward.
    pub checkpoint_blocks: usize,
    /// Keep the whole process within this much memory (paging and checkpointing as needed).
    pub mem_budget: Option<MemBudget>,
    /// Continue the run in `out`.
    pub resume: bool,
    /// Replace the run in `out`.
    pub overwrite: bool,
    /// Print less (no progress bar).
    pub quiet: bool,
    /// Energy and thermal scheduling, and where the battery is read ([`crate::energy`]).
    pub energy: EnergyOptions,
    /// Where the GEMMs run ([`crate::device`]).
    pub device: Device,
}

/// What a run ended with.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct FinetuneSummary {
    /// Steps done in all (including a resumed run's earlier ones).
    pub steps: u64,
    /// Evaluation before training (when the run started at step 0).
    pub eval_before: Option<EvalReport>,
    /// Evaluation after training.
    pub eval_after: Option<EvalReport>,
    /// Loss of the last step.
    pub last_loss: f32,
    /// Whether Ctrl-C stopped it early.
    pub interrupted: bool,
    /// Peak resident memory of the process.
    pub peak_rss_bytes: u64,
    /// Wall-clock seconds of training (not counting pauses of the energy policy).
    pub seconds: f64,
    /// Why the energy policy paused the run (with `--on-pause exit`; resume with `--resume`).
    pub paused: Option<String>,
}

/// The file that marks `--out` as holding a run.
const METRICS_FILE: &str = "metrics.jsonl";
/// The checkpoint's subdirectory.
const CHECKPOINT_DIR: &str = "checkpoint";

/// Runs `mft finetune`; `stop` set (by Ctrl-C) ends it after the current step.
///
/// # Errors
/// Bad input (model, data, adapter, flags: each naming the file or flag), an `--out` holding a
/// previous run, a failed write.
pub fn finetune(args: &FinetuneArgs, stop: &AtomicBool) -> Result<FinetuneSummary> {
    check_out_dir(args)?;
    let device = device::select(args.device)?;
    if let Some(notice) = &device.notice {
        eprintln!("{notice}");
    }
    let source = ModelSource::parse(&args.model)?;
    if args.full {
        return run::<f32>(args, source, stop, &device);
    }
    match args.frozen {
        DType::F32 => run::<f32>(args, source, stop, &device),
        DType::BF16 => run::<bf16>(args, source, stop, &device),
        DType::F16 => run::<f16>(args, source, stop, &device),
    }
}

/// Refuses an `--out` that holds a previous run, unless resuming or overwriting.
fn check_out_dir(args: &FinetuneArgs) -> Result<()> {
    let out = &args.out;
    let refuse = |problem: &str| Err(Error::Output { path: out.clone(), problem: problem.into() });
    if args.resume && args.overwrite {
        return refuse("--resume and --overwrite exclude each other");
    }
    if out.exists() && !out.is_dir() {
        return refuse("--out exists and is not a directory");
    }
    let has_run = out.join(METRICS_FILE).exists() || out.join(CHECKPOINT_DIR).exists();
    if args.resume && !out.join(CHECKPOINT_DIR).join(checkpoint::STATE_FILE).exists() {
        return refuse("--resume: there is no checkpoint to resume in this directory");
    }
    if has_run && !args.resume && !args.overwrite {
        return refuse(
            "holds a previous run; pass --resume to continue it or --overwrite to replace it",
        );
    }
    Ok(())
}

/// The family's default LoRA targets: GPT-2's attention and projections, the others' attention.
pub fn default_targets(family: Family) -> &'static [&'static str] {
    match family {
        Family::Gpt2 => &["c_attn", "c_proj"],
        _ => &["q_proj", "k_proj", "v_proj", "o_proj"],
    }
}

fn run<T: GemmRhs + Element + Send + Sync>(
    args: &FinetuneArgs,
    source: ModelSource,
    stop: &AtomicBool,
    device: &Selected,
) -> Result<FinetuneSummary> {
    let seq = args.seq;
    let (paging, checkpointed_blocks, micro_batch) = match args.mem_budget {
        Some(budget) => {
            let plan = budget_plan(args, &source, budget)?;
            if !args.quiet {
                eprintln!("memory budget {budget}: {plan}");
            }
            (plan.paging, plan.checkpointed_blocks, plan.micro_batch)
        }
        None => (Paging::Off, args.checkpoint_blocks, args.batch),
    };
    let loaded = if paging == Paging::Off {
        load_model::<T>(source, args.seed)?
    } else {
        load_model_paged::<T>(source, args.seed, paging)?
    };
    let config = *loaded.model.config();
    check_seq(&config, seq)?;
    let dataset = load_data(args, loaded.encoder(), config.vocab)?;
    let pad = loaded.encoder().eos_id();
    let LoadedModel { source, model, weights, tokenizer } = loaded;
    let trainable = if args.full {
        Trainable::Full
    } else {
        let (layout, adapters) = lora_start(args, &config)?;
        Trainable::Lora { layout, adapters }
    };
    let mode = if args.full { "full" } else { "lora" };
    let options = TrainOptions {
        steps: args.steps,
        // A batch the plan splits is accumulated over more micro-batches into the same step.
        batch: micro_batch,
        seq,
        grad_accum: args.grad_accum * (args.batch / micro_batch),
        optimizer: OptimizerConfig {
            kind: args.optimizer,
            momentum: args.momentum,
            weight_decay: args.weight_decay,
        },
        schedule: Schedule {
            kind: args.schedule,
            peak_lr: args.lr,
            warmup: args.warmup,
            total: args.steps,
        },
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        checkpointed_blocks,
    };
    create_dir_all(&args.out)?;
    let mut trainer = if args.full && paging != Paging::Off {
        // The blocks' weights, gradients and moments go to a scratch file in --out.
        Trainer::new_full_paged(model, weights, options, args.threads, &args.out)?
    } else {
        Trainer::new(model, weights, trainable, options, args.threads)?
    };
    let resident = trainer.set_gemm_offload(device.offload);
    let mut batcher =
        data::Batcher::new(dataset.train.clone(), micro_batch, pad, args.seed, !args.no_shuffle);
    let checkpoint_dir = args.out.join(CHECKPOINT_DIR);
    let mut history = Vec::new();
    let mut earlier_lines = String::new();
    if args.resume {
        let position = checkpoint::load(&checkpoint_dir, &mut trainer, mode)?;
        batcher
            .resume(position)
            .map_err(|e| Error::Resume { path: checkpoint_dir.clone(), problem: e.to_string() })?;
        (history, earlier_lines) =
            read_history(&args.out.join(METRICS_FILE), trainer.step_count())?;
    }
    let log = |line: String| {
        if !args.quiet {
            eprintln!("{line}");
        }
    };
    log(format!(
        "mft finetune: {} ({:?}, {} parameters), {mode}{}, {} training / {} eval examples from {}",
        source.name(),
        config.family,
        trainer.model().layout().numel(),
        match trainer.trainable() {
            Trainable::Lora { layout, .. } => format!(" ({} trainable)", layout.len()),
            Trainable::Full => String::new(),
        },
        dataset.train.len(),
        dataset.eval.len(),
        args.data.display()
    ));
    let mapped = trainer.weights().mapped_bytes();
    if mapped > 0 {
        log(format!(
            "frozen weights: {:.1} MB read in place from the mapped checkpoint (not copied)",
            mapped as f64 / 1e6
        ));
    }
    if let Some(name) = &device.device_name {
        // Printed even with --quiet, as the fallback notice is: which device ran matters.
        eprintln!(
            "cuda: GEMMs offloaded to {name}; {:.1} MB of frozen weights resident on it",
            resident as f64 / 1e6
        );
    }
    let mut metrics = MetricsLog::open(&args.out.join(METRICS_FILE), &earlier_lines)?;
    let eval_before = if trainer.step_count() == 0 && !dataset.eval.is_empty() {
        let e = trainer.evaluate(&dataset.eval, pad)?;
        log(format!(
            "eval before: loss {:.4}, perplexity {:.2} ({} tokens)",
            e.loss, e.ppl, e.tokens
        ));
        metrics.eval(0, &e)?;
        Some(e)
    } else {
        None
    };
    let start = Instant::now();
    let first_step = trainer.step_count();
    let mut progress = Progress::new(args.steps, first_step, args.quiet);
    let mut last_loss = f32::NAN;
    let mut interrupted = false;
    // Energy and thermal policy: asked before every step; the energy of each step measured.
    let mut energy = EnergySession::new(&args.energy, args.threads);
    let mut paused = None;
    // Time spent deciding and waiting out pauses (not training).
    let mut gated = std::time::Duration::ZERO;
    while trainer.step_count() < args.steps {
        let at = trainer.step_count();
        let gate_start = Instant::now();
        let gate = energy.gate(
            stop,
            |d| {
                progress.println(&format!("energy: before step {}: {}", at + 1, decision_line(d)));
                metrics.energy(at, d)
            },
            |_| {
                checkpoint::save(&checkpoint_dir, &mut trainer, batcher.position(), mode)?;
                progress.println(&format!(
                    "energy: checkpoint saved at step {at}; waiting, checking every {:.1} s",
                    args.energy.poll.as_secs_f64()
                ));
                Ok(())
            },
        );
        gated += gate_start.elapsed();
        print_energy_notes(&energy, &progress);
        match gate? {
            Gate::Run { threads } => {
                trainer.set_threads(threads)?;
            }
            Gate::Exit { reason } => {
                progress.println(&format!("energy: paused at step {at}: saving to resume later"));
                paused = Some(reason);
                break;
            }
            Gate::Stopped => {
                interrupted = true;
                progress.println(&format!("interrupted while paused: saving at step {at}"));
                break;
            }
        }
        energy.begin_step();
        let report = trainer.train_step(&mut batcher)?;
        let used = energy.finish_step();
        print_energy_notes(&energy, &progress);
        last_loss = report.loss;
        history.push((report.step, report.loss));
        let rss = peak_rss_bytes();
        metrics.step(&report, rss, trainer.threads(), &used)?;
        progress.update(&report, rss, &used.short(report.tokens));
        let step = report.step;
        if args.eval_every > 0
            && step.is_multiple_of(args.eval_every)
            && step < args.steps
            && !dataset.eval.is_empty()
        {
            let e = trainer.evaluate(&dataset.eval, pad)?;
            progress
                .println(&format!("step {step}: eval loss {:.4}, perplexity {:.2}", e.loss, e.ppl));
            metrics.eval(step, &e)?;
        }
        if args.save_every > 0 && step.is_multiple_of(args.save_every) && step < args.steps {
            checkpoint::save(&checkpoint_dir, &mut trainer, batcher.position(), mode)?;
        }
        if stop.load(Ordering::SeqCst) {
            interrupted = true;
            progress.println(&format!("interrupted: saving at step {step}"));
            break;
        }
    }
    progress.finish();
    let seconds = start.elapsed().saturating_sub(gated).as_secs_f64();
    checkpoint::save(&checkpoint_dir, &mut trainer, batcher.position(), mode)?;
    let eval_after = if !interrupted && paused.is_none() && !dataset.eval.is_empty() {
        let e = trainer.evaluate(&dataset.eval, pad)?;
        log(format!(
            "eval after:  loss {:.4}, perplexity {:.2} ({} tokens)",
            e.loss, e.ppl, e.tokens
        ));
        metrics.eval(trainer.step_count(), &e)?;
        Some(e)
    } else {
        None
    };
    export(args, &source, &trainer, tokenizer.as_ref().map(|t| t.path()))?;
    write_atomic(&args.out.join("loss.svg"), loss_curve_svg(&history).as_bytes())?;
    if let Some(reason) = &paused {
        log(format!("paused by the energy policy: {reason}. Continue with --resume."));
    }
    let steps_done = trainer.step_count() - first_step;
    if steps_done > 0 {
        log(format!(
            "{steps_done} steps in {seconds:.1} s ({:.2} s/step); wrote {}",
            seconds / steps_done as f64,
            args.out.display()
        ));
    }
    if let Some(budget) = args.mem_budget {
        let peak = peak_rss_bytes();
        let verdict = if peak <= budget.0 { "within" } else { "OVER" };
        log(format!("peak RSS {} {verdict} --mem-budget {budget}", crate::budget::mib(peak)));
    }
    Ok(FinetuneSummary {
        steps: trainer.step_count(),
        eval_before,
        eval_after,
        last_loss,
        interrupted,
        peak_rss_bytes: peak_rss_bytes(),
        seconds,
        paused,
    })
}

/// A decision as a log line: `pause: …` or `run on 2 threads: …`.
fn decision_line(d: &Decision) -> String {
    match d.action {
        Action::Pause => format!("pause: {}", d.reason),
        Action::Run { threads: 1 } => format!("run on 1 thread: {}", d.reason),
        Action::Run { threads } => format!("run on {threads} threads: {}", d.reason),
    }
}

/// Prints the device nodes the energy session could not read (each once per run).
fn print_energy_notes(energy: &EnergySession, progress: &Progress) {
    for note in energy.take_notes() {
        progress.println(&format!("energy: {note} (tolerated; noted once)"));
    }
}

/// The training set and the evaluation set.
fn load_data(args: &FinetuneArgs, encoder: &dyn TextEncoder, vocab: usize) -> Result<Dataset> {
    let mut options = DataOptions::new(args.seq, vocab);
    options.stride = args.stride;
    options.seed = args.seed;
    options.shuffle = !args.no_shuffle;
    options.eval_fraction = if args.eval_data.is_some() { 0.0 } else { args.eval_fraction };
    let mut dataset = data::load(&args.data, encoder, &options)?;
    if let Some(eval) = &args.eval_data {
        let all = DataOptions { eval_fraction: 0.0, shuffle: false, ..options };
        dataset.eval = data::load(eval, encoder, &all)?.train;
    }
    Ok(dataset)
}

/// The adapters to start from: `--adapter`'s, or fresh ones (PEFT's init) from the flags.
/// The plan that keeps the run within `budget`.
fn budget_plan(args: &FinetuneArgs, source: &ModelSource, budget: MemBudget) -> Result<BudgetPlan> {
    let config = source.config()?;
    check_seq(&config, args.seq)?;
    let model =
        mft_models::Model::new(config).map_err(|e| Error::Training { problem: e.to_string() })?;
    let lora = if args.full { None } else { Some(lora_start(args, &config)?.0) };
    let shape = StepShape {
        batch: args.batch,
        seq: args.seq,
        threads: args.threads,
        tokenizer_bytes: source.tokenizer_bytes(),
        training: true,
    };
    let can_page = matches!(source, ModelSource::Dir(_));
    let frozen = if args.full { DType::F32 } else { args.frozen };
    budget::plan(&model, lora.as_ref(), frozen, shape, args.checkpoint_blocks, can_page, budget)
}

fn lora_start(args: &FinetuneArgs, config: &ModelConfig) -> Result<(LoraLayout, Vec<f32>)> {
    if let Some(dir) = &args.adapter {
        let lora = read_lora_config(&dir.join("adapter_config.json"), config.family)?;
        let layout = LoraLayout::new(config, &lora);
        let adapters = load_adapters(&dir.join("adapter_model.safetensors"), &layout)?;
        return Ok((layout, adapters));
    }
    let lora = args.lora.config(config.family).map_err(|problem| Error::Training { problem })?;
    let layout = LoraLayout::new(config, &lora);
    let mut adapters = vec![0.0; layout.len()];
    layout.init(args.seed, &mut adapters);
    Ok((layout, adapters))
}

/// Writes the adapter (LoRA) or the snapshot (full) into `--out`.
fn export<T: GemmRhs + Element + Send + Sync>(
    args: &FinetuneArgs,
    source: &ModelSource,
    trainer: &Trainer<T>,
    tokenizer: Option<&Path>,
) -> Result<()> {
    let config = trainer.model().config();
    match trainer.trainable() {
        Trainable::Lora { layout, adapters } => {
            export_peft_adapter(&args.out, config, layout, adapters, Some(&source.name()))
        }
        Trainable::Full => {
            let source_config = source.config_path().filter(|p| p.exists());
            let layout = trainer.model().layout();
            match trainer.full_weights() {
                Some(view) => {
                    export_hf_snapshot(&args.out, config, layout, view, source_config.as_deref())?
                }
                // Paged: each matrix read out of the scratch file in chunks.
                None => export_hf_snapshot_with(
                    &args.out,
                    config,
                    layout,
                    |param, out| {
                        let slot = layout.slot(param).expect("a parameter of the layout");
                        if !slot.matrix {
                            return write_f32s(out, &trainer.weights().vectors[slot.range()]);
                        }
                        let mut chunk = vec![0.0f32; slot.len.min(1 << 20)];
                        for first in (slot.offset..slot.range().end).step_by(chunk.len()) {
                            let part = &mut chunk[..(slot.range().end - first).min(1 << 20)];
                            trainer
                                .read_full_matrices(first..first + part.len(), part)
                                .map_err(std::io::Error::other)?;
                            write_f32s(out, part)?;
                        }
                        Ok(())
                    },
                    source_config.as_deref(),
                )?,
            }
            copy_tokenizer_files(tokenizer, &args.out)
        }
    }
}

/// Copies the tokenizer files next to `tokenizer` into `out` (a full snapshot is usable alone).
fn copy_tokenizer_files(tokenizer: Option<&Path>, out: &Path) -> Result<()> {
    let Some(dir) = tokenizer.and_then(Path::parent) else { return Ok(()) };
    for name in [
        "tokenizer.json",
        "tokenizer_config.json",
        "vocab.json",
        "merges.txt",
        "special_tokens_map.json",
    ] {
        let from = dir.join(name);
        if from.exists() {
            let bytes =
                std::fs::read(&from).map_err(|source| Error::Io { path: from.clone(), source })?;
            write_atomic(&out.join(name), &bytes)?;
        }
    }
    Ok(())
}

/// What a resumed run keeps of `metrics.jsonl`: the (step, loss) pairs up to `step` (the loss
/// curve continues), and those lines verbatim with the evaluations up to `step` and the energy
/// decisions before it. Lines of steps after the checkpoint (to be run again) are dropped.
fn read_history(path: &Path, step: u64) -> Result<(Vec<(u64, f32)>, String)> {
    let Ok(text) = std::fs::read_to_string(path) else { return Ok((Vec::new(), String::new())) };
    let mut history = Vec::new();
    let mut kept = String::new();
    for line in text.lines() {
        let Ok(value) = serde_json::from_str::<serde_json::Value>(line) else { continue };
        let Some(at) = value["step"].as_u64() else { continue };
        let keep = match value["kind"].as_str() {
            Some("train") => {
                let Some(loss) = value["loss"].as_f64() else { continue };
                if at <= step {
                    history.push((at, loss as f32));
                }
                at <= step
            }
            Some("eval") => at <= step,
            // A decision taken before step `at + 1`; the resumed run decides again at `step`.
            Some("energy") => at < step,
            _ => false,
        };
        if keep {
            kept.push_str(line);
            kept.push('\n');
        }
    }
    Ok((history, kept))
}

/// `metrics.jsonl`: one line per step (`"kind": "train"`, with its threads and energy), per
/// evaluation (`"eval"`), and per energy-scheduling decision (`"energy"`).
struct MetricsLog {
    file: std::fs::File,
    path: PathBuf,
}

impl MetricsLog {
    /// Starts the file over with `earlier` (the lines a resumed run keeps, see
    /// [`read_history`]).
    fn open(path: &Path, earlier: &str) -> Result<MetricsLog> {
        write_atomic(path, earlier.as_bytes())?;
        let file = std::fs::OpenOptions::new()
            .append(true)
            .open(path)
            .map_err(|source| Error::Io { path: path.to_path_buf(), source })?;
        Ok(MetricsLog { file, path: path.to_path_buf() })
    }

    /// Appends `value` as one line in one write, so a kill leaves at most the last line torn.
    fn write(&mut self, value: serde_json::Value) -> Result<()> {
        let line = format!("{value}\n");
        self.file
            .write_all(line.as_bytes())
            .map_err(|source| Error::Io { path: self.path.clone(), source })
    }

    fn step(
        &mut self,
        r: &StepReport,
        rss_bytes: u64,
        threads: usize,
        e: &StepEnergy,
    ) -> Result<()> {
        let mut line = serde_json::json!({
            "kind": "train", "step": r.step, "loss": r.loss, "lr": r.lr, "grad_norm": r.grad_norm,
            "tokens": r.tokens, "scored_tokens": r.scored_tokens, "seconds": r.seconds,
            "tokens_per_s": r.tokens as f64 / r.seconds.max(1e-9), "peak_rss_bytes": rss_bytes,
            "threads": threads,
            "energy_j": e.joules(), "energy_j_per_token": e.joules_per_token(r.tokens),
        });
        let fields = line.as_object_mut().expect("a JSON object");
        match e {
            StepEnergy::Measured { joules, seconds, method, .. } => {
                fields.insert("energy_method".into(), method.name().into());
                fields.insert("power_w".into(), (joules / seconds.max(1e-9)).into());
            }
            StepEnergy::Unavailable { reason } => {
                fields.insert("energy_unavailable".into(), reason.as_str().into());
            }
        }
        self.write(line)
    }

    /// A scheduling decision before step `done + 1`.
    fn energy(&mut self, done: u64, d: &Decision) -> Result<()> {
        let (action, threads) = match d.action {
            Action::Pause => ("pause", None),
            Action::Run { threads } => ("run", Some(threads)),
        };
        self.write(serde_json::json!({
            "kind": "energy", "step": done, "action": action, "threads": threads,
            "reason": d.reason, "battery_percent": d.battery_percent, "power": d.power.name(),
            "temp_c": d.hottest.as_ref().map(|h| h.1),
            "sensor": d.hottest.as_ref().map(|h| h.0.as_str()),
        }))
    }

    fn eval(&mut self, step: u64, e: &EvalReport) -> Result<()> {
        self.write(serde_json::json!({
            "kind": "eval", "step": step, "loss": e.loss, "ppl": e.ppl, "tokens": e.tokens,
        }))
    }
}
