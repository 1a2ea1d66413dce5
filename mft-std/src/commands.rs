//! The smaller subcommands of `mft` — `eval`, `generate`, `inspect` — and the bundled demo that
//! `mft finetune` runs with no `--model` and no `--data`.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::atomic::AtomicBool;

use mft_core::DType;
use mft_kernels::Kernels;
use mft_models::{Adapters, LoraConfig, LoraLayout, MemoryPlan, Mode, Model, ModelConfig, Paging};

use crate::budget::{self, BudgetPlan, MemBudget, StepShape};
use crate::data::{self, DataOptions};
use crate::device::{self, Device};
use crate::error::{Error, Result};
use crate::finetune::{FinetuneArgs, LoraArgs, finetune, lora_targets};
use crate::generate::{Sampling, generate as generate_tokens};
use crate::hf::{checkpoint_files, load_adapters, read_lora_config};
use crate::pool::ThreadPool;
use crate::source::{LoadedModel, ModelSource, load_model, load_model_paged};
use crate::tokenizer::Tokenizer;
use crate::train::{OptimizerKind, ScheduleKind, check_seq, evaluate_with};

/// `mft eval`'s flags.
#[derive(Debug, Clone)]
pub struct EvalArgs {
    /// Model directory or `random:…`.
    pub model: String,
    /// PEFT adapter directory.
    pub adapter: Option<PathBuf>,
    /// Data file.
    pub data: PathBuf,
    /// Sequences per batch.
    pub batch: usize,
    /// Longest sequence.
    pub seq: Option<usize>,
    /// Threads.
    pub threads: usize,
    /// One JSON object on stdout.
    pub json: bool,
    /// Keep the process within this much memory (paging the weights if needed).
    pub mem_budget: Option<MemBudget>,
}

/// `mft generate`'s flags.
#[derive(Debug, Clone)]
pub struct GenerateArgs {
    /// Model directory.
    pub model: String,
    /// PEFT adapter directory.
    pub adapter: Option<PathBuf>,
    /// Text to continue.
    pub prompt: String,
    /// New tokens at most.
    pub max_new_tokens: usize,
    /// Nucleus sampling (None: greedy).
    pub top_p: Option<f32>,
    /// Temperature.
    pub temperature: f32,
    /// Sampling seed.
    pub seed: u64,
    /// Threads.
    pub threads: usize,
}

/// `mft inspect`'s flags.
#[derive(Debug, Clone)]
pub struct InspectArgs {
    /// Model directory or `random:…`.
    pub model: String,
    /// Plan full fine-tuning (else LoRA).
    pub full: bool,
    /// Plan's batch.
    pub batch: usize,
    /// Plan's sequence length.
    pub seq: usize,
    /// LoRA rank.
    pub lora_r: usize,
    /// LoRA targets.
    pub lora_targets: Option<Vec<String>>,
    /// Frozen dtype.
    pub frozen: DType,
    /// Checkpointed blocks.
    pub checkpoint_blocks: usize,
    /// Threads.
    pub threads: usize,
    /// One JSON object on stdout.
    pub json: bool,
}

/// A PEFT adapter directory's layout and weights, for `config`.
fn read_adapter(dir: &Path, config: &ModelConfig) -> Result<(LoraLayout, Vec<f32>)> {
    let lora = read_lora_config(&dir.join("adapter_config.json"), config.family)?;
    let layout = LoraLayout::new(config, &lora);
    let adapters = load_adapters(&dir.join("adapter_model.safetensors"), &layout)?;
    Ok((layout, adapters))
}

/// A model with its optional adapter, in f32, for evaluation and generation.
struct Evaluated {
    loaded: LoadedModel<f32>,
    lora: Option<(LoraLayout, Vec<f32>)>,
}

impl Evaluated {
    fn load(model: &str, adapter: Option<&Path>) -> Result<Evaluated> {
        Evaluated::load_paged(model, adapter, Paging::Off)
    }

    /// The matrices `paging` covers stay in the checkpoint files, paged in as they are needed.
    fn load_paged(model: &str, adapter: Option<&Path>, paging: Paging) -> Result<Evaluated> {
        let source = ModelSource::parse(model)?;
        let loaded = match paging {
            Paging::Off => load_model::<f32>(source, 0)?,
            _ => load_model_paged::<f32>(source, 0, paging)?,
        };
        let lora = match adapter {
            Some(dir) => Some(read_adapter(dir, loaded.model.config())?),
            None => None,
        };
        Ok(Evaluated { loaded, lora })
    }

    fn adapters(&self) -> Option<Adapters<'_>> {
        self.lora.as_ref().map(|(layout, weights)| Adapters { layout, weights })
    }

    fn tokenizer(&self, what: &str) -> Result<&Tokenizer> {
        self.loaded.tokenizer.as_ref().ok_or_else(|| Error::Training {
            problem: format!("{what} needs a tokenizer; {} has none", self.loaded.source.name()),
        })
    }
}

/// `mft eval`: mean cross-entropy over every scored token of the file.
///
/// # Errors
/// Bad model, adapter or data (named).
pub fn eval(args: &EvalArgs) -> Result<ExitCode> {
    let (paging, batch) = match args.mem_budget {
        Some(budget) => {
            let plan = eval_budget_plan(args, budget)?;
            if !args.json {
                eprintln!("memory budget {budget}: {plan}");
            }
            (plan.paging, plan.micro_batch)
        }
        None => (Paging::Off, args.batch),
    };
    let mut e = Evaluated::load_paged(&args.model, args.adapter.as_deref(), paging)?;
    let report = eval_report(&mut e, &args.data, batch, args.seq, args.threads)?;
    if args.json {
        println!(
            "{}",
            serde_json::json!({"loss": report.loss, "tokens": report.tokens, "ppl": report.ppl})
        );
    } else {
        println!(
            "loss {:.4}  perplexity {:.3}  ({} tokens)",
            report.loss, report.ppl, report.tokens
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How `mft eval` stays within `budget`.
fn eval_budget_plan(args: &EvalArgs, budget: MemBudget) -> Result<BudgetPlan> {
    let source = ModelSource::parse(&args.model)?;
    let config = source.config()?;
    let model = Model::new(config).map_err(|e| Error::Training { problem: e.to_string() })?;
    let lora = match &args.adapter {
        Some(dir) => Some(read_adapter(dir, &config)?.0),
        None => None,
    };
    let shape = StepShape {
        batch: args.batch,
        seq: eval_seq(&config, args.seq),
        threads: args.threads,
        tokenizer_bytes: source.tokenizer_bytes(),
        training: false,
    };
    let can_page = matches!(source, ModelSource::Dir(_));
    budget::plan(&model, lora.as_ref(), DType::F32, shape, 0, can_page, budget)
}

/// The sequence length `mft eval` uses.
fn eval_seq(config: &ModelConfig, seq: Option<usize>) -> usize {
    seq.unwrap_or(config.max_positions.min(1024))
}

fn eval_report(
    e: &mut Evaluated,
    data_path: &Path,
    batch: usize,
    seq: Option<usize>,
    threads: usize,
) -> Result<crate::train::EvalReport> {
    let config = e.loaded.model.config();
    let seq = eval_seq(config, seq);
    check_seq(config, seq)?;
    let encoder = e.loaded.encoder();
    let mut options = DataOptions::new(seq, config.vocab);
    options.shuffle = false;
    options.eval_fraction = 0.0;
    let examples = data::load(data_path, encoder, &options)?.train;
    let pad = encoder.eos_id();
    let pool = ThreadPool::new(threads)?;
    let mut workspace = Vec::new();
    let adapters = e.lora.as_ref().map(|(layout, weights)| Adapters { layout, weights });
    evaluate_with(
        &e.loaded.model,
        &Kernels::best(),
        &mut e.loaded.weights,
        adapters,
        &examples,
        batch,
        pad,
        &mut workspace,
        &pool,
    )
}

/// `mft generate`: prints the prompt's continuation.
///
/// # Errors
/// Bad model or adapter, a model without a tokenizer.
pub fn generate(args: &GenerateArgs) -> Result<ExitCode> {
    let e = Evaluated::load(&args.model, args.adapter.as_deref())?;
    let text = continuation(&e, &args.prompt, args, args.threads)?;
    println!("{}{text}", args.prompt);
    Ok(ExitCode::SUCCESS)
}

fn continuation(
    e: &Evaluated,
    prompt: &str,
    args: &GenerateArgs,
    threads: usize,
) -> Result<String> {
    let tokenizer = e.tokenizer("generate")?;
    let ids = tokenizer.encode(prompt, true)?;
    let sampling = Sampling {
        max_new_tokens: args.max_new_tokens,
        top_p: args.top_p,
        temperature: args.temperature,
        seed: args.seed,
    };
    let pool = ThreadPool::new(threads)?;
    let new = generate_tokens(
        &e.loaded.model,
        e.loaded.weights.as_weights(),
        e.adapters(),
        &ids,
        Some(tokenizer.eos_id()),
        &sampling,
        &pool,
    )?;
    tokenizer.decode(&new, true)
}

/// `mft inspect`: family, sizes, stored dtypes and the memory plan of a step.
///
/// # Errors
/// A bad model directory (named).
pub fn inspect(args: &InspectArgs) -> Result<ExitCode> {
    let source = ModelSource::parse(&args.model)?;
    let config = match &source {
        ModelSource::Dir(dir) => crate::hf::read_model_config(&dir.join("config.json"))?,
        ModelSource::Random { config, .. } => *config,
    };
    let model = mft_models::Model::new(config)
        .map_err(|source| Error::Model { path: PathBuf::from(&args.model), source })?;
    let stored = match &source {
        ModelSource::Dir(dir) => stored_dtypes(&checkpoint_files(dir)?)?,
        ModelSource::Random { .. } => Vec::new(),
    };
    let mode = if args.full {
        Mode::Full
    } else {
        let targets = lora_targets(config.family, args.lora_targets.as_deref())
            .map_err(|problem| Error::Training { problem })?;
        let lora = LoraConfig {
            rank: args.lora_r,
            alpha: 2.0 * args.lora_r as f32,
            dropout: 0.0,
            rslora: false,
            targets,
        };
        Mode::Lora { config: lora, frozen: args.frozen }
    };
    let plan = MemoryPlan::new(
        &model,
        &Kernels::best(),
        &mode,
        args.batch,
        args.seq,
        args.checkpoint_blocks,
        args.threads,
    );
    let mb = |b: usize| b as f64 / 1e6;
    if args.json {
        let value = serde_json::json!({
            "model": args.model, "family": format!("{:?}", config.family).to_lowercase(),
            "parameters": model.layout().numel(), "layers": config.layers, "hidden": config.hidden,
            "vocab": config.vocab, "context": config.max_positions,
            "stored_dtypes": stored.iter().map(|(d, n)| (d.clone(), (*n).into())).collect::<serde_json::Map<_, _>>(),
            "plan": {
                "mode": if args.full { "full" } else { "lora" }, "batch": args.batch, "seq": args.seq,
                "checkpointed_blocks": args.checkpoint_blocks.min(config.layers),
                "trainable_params": plan.trainable_params,
                "parameter_bytes": plan.parameter_bytes, "adapter_bytes": plan.adapter_bytes,
                "gradient_bytes": plan.gradient_bytes, "optimizer_bytes": plan.optimizer_bytes,
                "saved_activation_bytes": plan.saved_activation_bytes, "scratch_bytes": plan.scratch_bytes,
                "total_bytes": plan.total_bytes(), "step_flops": plan.step_flops(),
                "recompute_flops": plan.recompute_flops,
            },
        });
        println!("{value}");
    } else {
        println!(
            "{}: {:?}, {} parameters, {} layers, hidden {}, vocab {}, context {}",
            args.model,
            config.family,
            model.layout().numel(),
            config.layers,
            config.hidden,
            config.vocab,
            config.max_positions
        );
        if !stored.is_empty() {
            let list: Vec<String> =
                stored.iter().map(|(d, n)| format!("{n} tensors {d}")).collect();
            println!("stored:      {}", list.join(", "));
        }
        println!(
            "plan of a {} step, batch {}×{}{}:",
            if args.full { "full" } else { "LoRA" },
            args.batch,
            args.seq,
            match args.checkpoint_blocks.min(config.layers) {
                0 => String::new(),
                k => format!(", {k} blocks recomputed"),
            }
        );
        println!("  parameters        {:>10.1} MB", mb(plan.parameter_bytes));
        println!(
            "  adapters          {:>10.1} MB ({} trainable parameters)",
            mb(plan.adapter_bytes),
            plan.trainable_params
        );
        println!("  gradients         {:>10.1} MB", mb(plan.gradient_bytes));
        println!("  optimizer state   {:>10.1} MB", mb(plan.optimizer_bytes));
        println!("  saved activations {:>10.1} MB", mb(plan.saved_activation_bytes));
        println!("  scratch           {:>10.1} MB", mb(plan.scratch_bytes));
        println!(
            "  total             {:>10.1} MB; {:.1} GFLOP per step",
            mb(plan.total_bytes()),
            plan.step_flops() as f64 / 1e9
        );
    }
    Ok(ExitCode::SUCCESS)
}

/// How many tensors of each dtype the checkpoint files store (read from their headers only).
fn stored_dtypes(files: &[PathBuf]) -> Result<Vec<(String, usize)>> {
    let mut counts: std::collections::BTreeMap<String, usize> = Default::default();
    for file in files {
        let f =
            std::fs::File::open(file).map_err(|source| Error::Io { path: file.clone(), source })?;
        // SAFETY: the file is mapped read-only and only its header is parsed; mft does not
        // modify checkpoint files while reading them.
        let map = unsafe { memmap2::Mmap::map(&f) }
            .map_err(|source| Error::Io { path: file.clone(), source })?;
        let (_, meta) = safetensors::SafeTensors::read_metadata(&map)
            .map_err(|source| Error::Safetensors { path: file.clone(), source })?;
        for (_, info) in meta.tensors() {
            *counts.entry(format!("{:?}", info.dtype)).or_default() += 1;
        }
    }
    Ok(counts.into_iter().collect())
}

/// The directory of the bundled demo: `$MFT_DEMO_DIR`, or `demo/` of this source tree.
pub fn demo_dir() -> PathBuf {
    std::env::var_os("MFT_DEMO_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../demo"))
}

/// The bundled demo: LoRA fine-tuning of the tiny GPT-2 that mft pretrained on the bundled
/// text, on the bundled question-answering task; eval loss and a generation before and after;
/// the adapter written to `out` (replaced if it holds an earlier demo run). The fine-tuning's
/// GEMMs go to `device`.
///
/// # Errors
/// A missing demo directory, or any error of the run.
pub fn demo(out: &Path, threads: usize, device: Device, stop: &AtomicBool) -> Result<()> {
    // A device this build cannot use is refused before any work (finetune prints the notice).
    device::select(device)?;
    let dir = demo_dir();
    let base = dir.join("base");
    let prompt_path = dir.join("task/prompt.txt");
    let prompt = std::fs::read_to_string(&prompt_path)
        .map_err(|source| Error::Io { path: prompt_path.clone(), source })?;
    let prompt = prompt.trim_end_matches('\n');
    let model = base.display().to_string();
    let sampling = GenerateArgs {
        model: model.clone(),
        adapter: None,
        prompt: prompt.into(),
        max_new_tokens: 12,
        top_p: None,
        temperature: 1.0,
        seed: 0,
        threads,
    };
    eprintln!(
        "mft demo: LoRA fine-tuning of a tiny GPT-2 (pretrained by mft on {}) on {}",
        dir.join("corpus.txt").display(),
        dir.join("task/train.jsonl").display()
    );
    let before = Evaluated::load(&model, None)?;
    let before_text = continuation(&before, prompt, &sampling, threads)?;
    drop(before);
    let args = FinetuneArgs {
        model,
        data: dir.join("task/train.jsonl"),
        out: out.to_path_buf(),
        adapter: None,
        lora: LoraArgs {
            rank: 8,
            alpha: 16.0,
            dropout: 0.05,
            targets: Some(vec!["c_attn".into(), "c_proj".into(), "c_fc".into()]),
            rslora: false,
        },
        full: false,
        frozen: DType::F32,
        steps: 150,
        batch: 16,
        seq: 64,
        grad_accum: 1,
        lr: 3e-3,
        optimizer: OptimizerKind::AdamW,
        momentum: 0.0,
        weight_decay: 0.0,
        warmup: 10,
        schedule: ScheduleKind::Cosine,
        max_grad_norm: 1.0,
        seed: 0,
        threads,
        no_shuffle: false,
        stride: None,
        eval_fraction: 0.0,
        eval_data: Some(dir.join("task/eval.jsonl")),
        eval_every: 50,
        save_every: 0,
        checkpoint_blocks: 0,
        mem_budget: None,
        resume: false,
        overwrite: true,
        quiet: false,
        energy: crate::energy::EnergyOptions::default(),
        device,
    };
    let summary = finetune(&args, stop)?;
    let after = Evaluated::load(&args.model, Some(out))?;
    let after_text = continuation(&after, prompt, &sampling, threads)?;
    println!("prompt:  {prompt:?}");
    println!("before:  {before_text:?}");
    println!("after:   {after_text:?}");
    if let (Some(b), Some(a)) = (summary.eval_before, summary.eval_after) {
        println!(
            "eval loss {:.3} → {:.3} (perplexity {:.2} → {:.2}) on {} held-out tokens",
            b.loss, a.loss, b.ppl, a.ppl, a.tokens
        );
    }
    println!(
        "adapter: {} (PEFT format: PeftModel.from_pretrained(base, \"{}\"))",
        out.display(),
        out.display()
    );
    Ok(())
}
