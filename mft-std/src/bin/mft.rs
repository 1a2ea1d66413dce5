//! The `mft` command: `finetune` (the main job; with no `--model`/`--data`, the bundled demo),
//! `eval`, `generate`, `inspect`, and `info` (what the kernels see on this machine). Each
//! subcommand's logic lives in the library (`mft_std::finetune`, `mft_std::commands`); this file
//! parses flags and reports errors as one line with a non-zero exit. Exit codes of `finetune`:
//! 0 done, 1 an error, 2 bad usage, 130 Ctrl-C, 75 paused by the energy policy with
//! `--on-pause exit` (a checkpoint to `--resume` from is saved).

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use clap::{Args, Parser, Subcommand};
use mft_core::DType;
use mft_std::budget::MemBudget;
use mft_std::commands::{self, EvalArgs, GenerateArgs, InspectArgs};
use mft_std::device::Device;
use mft_std::energy::{EnergyFlags, PAUSED_EXIT_CODE};
use mft_std::finetune::{FinetuneArgs, LoraArgs, finetune};
use mft_std::system::{SystemInfo, self_check};
use mft_std::train::{OptimizerKind, ScheduleKind};

#[derive(Parser)]
#[command(name = "mft", version, about = "On-device fine-tuning of language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Fine-tune a model (LoRA by default, --full for every parameter). With no --model and no
    /// --data: the bundled demo.
    Finetune(Box<FinetuneFlags>),
    /// Mean cross-entropy of a model (+ adapter) on a data file.
    Eval(EvalFlags),
    /// Continue a prompt (greedy, or top-p sampling).
    Generate(GenerateFlags),
    /// A model's family, parameters, stored dtypes and memory plan.
    Inspect(InspectFlags),
    /// Show the CPU features the kernels use here and check each ISA's kernels against scalar.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

#[derive(Args)]
struct FinetuneFlags {
    /// Hugging Face snapshot directory, or random:<preset|config.json> (random weights).
    #[arg(long)]
    model: Option<String>,
    /// Training data: plain text, or JSONL ({"text"}, {"prompt","completion"}, {"ids"[,"mask"]}).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Output directory (adapter or snapshot, metrics.jsonl, loss.svg, checkpoint/).
    #[arg(long)]
    out: Option<PathBuf>,
    /// Start from this PEFT adapter directory.
    #[arg(long)]
    adapter: Option<PathBuf>,
    #[command(flatten)]
    lora: LoraArgs,
    /// Train every parameter instead of LoRA adapters.
    #[arg(long, conflicts_with_all = ["adapter", "rslora"])]
    full: bool,
    /// Element type of the frozen weights in LoRA: f32, bf16 or f16.
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    frozen: DType,
    /// Optimizer steps.
    #[arg(long, default_value_t = 100)]
    steps: u64,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Tokens per sequence (at most).
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Micro-batches per optimizer step (gradients weighted by tokens).
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 1e-4)]
    lr: f32,
    /// adamw or sgd.
    #[arg(long, default_value = "adamw")]
    optimizer: OptimizerKind,
    /// SGD momentum (plain SGD unless given).
    #[arg(long, default_value_t = 0.0)]
    momentum: f32,
    /// Weight decay (AdamW: decoupled; matrices and adapters only).
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Linear warmup steps.
    #[arg(long, default_value_t = 0)]
    warmup: u64,
    /// constant, linear or cosine.
    #[arg(long, default_value = "constant")]
    schedule: ScheduleKind,
    /// Clip the gradient norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Seed of data order, dropout, adapter init and random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Where the GEMMs run: cpu, or cuda (an NVIDIA GPU; needs a build with `--features
    /// cuda`, and falls back to the CPU with a notice when no driver or device is found).
    #[arg(long, value_enum, default_value_t = Device::Cpu)]
    device: Device,
    /// Keep the data in file order.
    #[arg(long)]
    no_shuffle: bool,
    /// Plain text: start a window every this many tokens (default: --seq).
    #[arg(long)]
    stride: Option<usize>,
    /// Share of the examples held out for evaluation.
    #[arg(long, default_value_t = 0.05)]
    eval_fraction: f64,
    /// Evaluate on this file instead of a held-out share.
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Evaluate every this many steps (0: before and after only).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Save a checkpoint every this many steps (0: at the end only).
    #[arg(long, default_value_t = 50)]
    save_every: u64,
    /// Recompute the first K blocks in backward (less memory, more time).
    #[arg(long, default_value_t = 0)]
    checkpoint_blocks: usize,
    /// Keep the process within this much memory (e.g. 256MiB, 1GiB): checkpoint blocks and
    /// page the frozen weights from the checkpoint as needed; refused, naming the smallest
    /// budget that works, when nothing fits.
    #[arg(long, value_name = "SIZE")]
    mem_budget: Option<MemBudget>,
    /// Continue the run in --out from its checkpoint.
    #[arg(long)]
    resume: bool,
    /// Replace a previous run in --out.
    #[arg(long)]
    overwrite: bool,
    /// No progress output.
    #[arg(long)]
    quiet: bool,
    /// Print a JSON summary on stdout.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    energy: EnergyFlagArgs,
}

/// Energy and thermal scheduling (values are checked by the library, which names the flag in
/// one line when one is bad).
#[derive(Args)]
struct EnergyFlagArgs {
    /// Energy policy file (JSON: min_battery, charging_only, thermal_limit, thermal_pause,
    /// thermal_resume, thermal_threads, thermal_sensors, quiet_hours, utc_offset, on_pause,
    /// pause_poll, power_root); flags override its fields.
    #[arg(long, value_name = "FILE")]
    policy: Option<PathBuf>,
    /// Read the battery and temperatures under DIR/sys/class (default: /).
    #[arg(long, value_name = "DIR")]
    power_root: Option<PathBuf>,
    /// Pause on battery below PCT percent (a charger lifts it).
    #[arg(long, value_name = "PCT")]
    min_battery: Option<String>,
    /// Train only on external power.
    #[arg(long)]
    charging_only: bool,
    /// At C °C or above, train on fewer threads (--thermal-threads, default half).
    #[arg(long, value_name = "C")]
    thermal_limit: Option<String>,
    /// At C °C or above, pause (default: the limit + 5).
    #[arg(long, value_name = "C")]
    thermal_pause: Option<String>,
    /// Back to all threads, or out of a pause, at C °C or below (default: the limit − 5).
    #[arg(long, value_name = "C")]
    thermal_resume: Option<String>,
    /// Threads while over the thermal limit (default: half, at least 1).
    #[arg(long, value_name = "N")]
    thermal_threads: Option<String>,
    /// Sensors that count (thermal-zone types, battery names; default: all).
    #[arg(long, value_name = "A,B")]
    thermal_sensors: Option<String>,
    /// Pause during HH:MM-HH:MM (UTC, or at --utc-offset; may span midnight).
    #[arg(long, value_name = "HH:MM-HH:MM")]
    quiet_hours: Option<String>,
    /// The offset of --quiet-hours from UTC, ±HH:MM (default +00:00).
    #[arg(long, value_name = "±HH:MM", allow_hyphen_values = true)]
    utc_offset: Option<String>,
    /// On a pause: wait (checkpoint, continue when allowed) or exit (checkpoint, exit 75).
    #[arg(long, value_name = "wait|exit")]
    on_pause: Option<String>,
    /// Seconds between checks while paused and waiting (default 30).
    #[arg(long, value_name = "SECONDS")]
    pause_poll: Option<String>,
}

#[derive(Args)]
struct EvalFlags {
    /// Hugging Face snapshot directory (or random:PRESET).
    #[arg(long)]
    model: String,
    /// PEFT adapter directory.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// Data file (plain text or JSONL).
    #[arg(long)]
    data: PathBuf,
    /// Sequences per batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// Longest sequence (default: the model's context, at most 1024).
    #[arg(long)]
    seq: Option<usize>,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object: loss, tokens, ppl.
    #[arg(long)]
    json: bool,
    /// Keep the process within this much memory (e.g. 256MiB): page the weights from the
    /// checkpoint if needed; refused, naming the smallest budget that works, when nothing fits.
    #[arg(long, value_name = "SIZE")]
    mem_budget: Option<MemBudget>,
}

#[derive(Args)]
struct GenerateFlags {
    /// Hugging Face snapshot directory.
    #[arg(long)]
    model: String,
    /// PEFT adapter directory.
    #[arg(long)]
    adapter: Option<PathBuf>,
    /// The text to continue.
    #[arg(long)]
    prompt: String,
    /// New tokens at most.
    #[arg(long, default_value_t = 32)]
    max_new_tokens: usize,
    /// Sample from the smallest set of tokens holding this probability (default: greedy).
    #[arg(long)]
    top_p: Option<f32>,
    /// Sampling temperature.
    #[arg(long, default_value_t = 1.0)]
    temperature: f32,
    /// Sampling seed.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
}

#[derive(Args)]
struct InspectFlags {
    /// Hugging Face snapshot directory (or random:PRESET).
    model: String,
    /// The plan's mode: lora or full.
    #[arg(long, default_value = "lora")]
    mode: String,
    /// The plan's batch.
    #[arg(long, default_value_t = 4)]
    batch: usize,
    /// The plan's sequence length.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// LoRA rank for the plan.
    #[arg(long, default_value_t = 8)]
    lora_r: usize,
    /// LoRA targets for the plan.
    #[arg(long, value_delimiter = ',')]
    lora_targets: Option<Vec<String>>,
    /// Frozen dtype for the plan (LoRA).
    #[arg(long, default_value = "f32", value_parser = parse_dtype)]
    frozen: DType,
    /// Checkpointed blocks for the plan.
    #[arg(long, default_value_t = 0)]
    checkpoint_blocks: usize,
    /// Threads for the plan.
    #[arg(long)]
    threads: Option<usize>,
    /// Print one JSON object.
    #[arg(long)]
    json: bool,
}

fn parse_dtype(s: &str) -> Result<DType, String> {
    match s {
        "f32" => Ok(DType::F32),
        "bf16" => Ok(DType::BF16),
        "f16" => Ok(DType::F16),
        other => Err(format!("`{other}`: use f32, bf16 or f16")),
    }
}

fn threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Info { json } => return info(json),
        Command::Finetune(flags) => run_finetune(*flags),
        Command::Eval(f) => commands::eval(&EvalArgs {
            model: f.model,
            adapter: f.adapter,
            data: f.data,
            batch: f.batch,
            seq: f.seq,
            threads: threads(f.threads),
            json: f.json,
            mem_budget: f.mem_budget,
        }),
        Command::Generate(f) => commands::generate(&GenerateArgs {
            model: f.model,
            adapter: f.adapter,
            prompt: f.prompt,
            max_new_tokens: f.max_new_tokens,
            top_p: f.top_p,
            temperature: f.temperature,
            seed: f.seed,
            threads: threads(f.threads),
        }),
        Command::Inspect(f) => commands::inspect(&InspectArgs {
            model: f.model,
            full: match f.mode.as_str() {
                "full" => true,
                "lora" => false,
                other => {
                    eprintln!("mft: --mode {other}: use lora or full");
                    return ExitCode::from(2);
                }
            },
            batch: f.batch,
            seq: f.seq,
            lora_r: f.lora_r,
            lora_targets: f.lora_targets,
            frozen: f.frozen,
            checkpoint_blocks: f.checkpoint_blocks,
            threads: threads(f.threads),
            json: f.json,
        }),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("mft: {e}");
            ExitCode::FAILURE
        }
    }
}

fn run_finetune(f: FinetuneFlags) -> mft_std::Result<ExitCode> {
    let stop = Arc::new(AtomicBool::new(false));
    let flag = Arc::clone(&stop);
    // Ctrl-C: finish the step, save, export; a second Ctrl-C stops at once.
    let _ = ctrlc::set_handler(move || {
        if flag.swap(true, Ordering::SeqCst) {
            std::process::exit(130);
        }
        eprintln!("\nmft: stopping after this step (Ctrl-C again to abort)");
    });
    if f.model.is_none() && f.data.is_none() {
        let out = f.out.unwrap_or_else(|| PathBuf::from("mft-demo-out"));
        return commands::demo(&out, threads(f.threads), f.device, &stop)
            .map(|()| ExitCode::SUCCESS);
    }
    let (Some(model), Some(data), Some(out)) = (f.model, f.data, f.out) else {
        eprintln!("mft finetune: give --model, --data and --out (or none of them for the demo)");
        return Ok(ExitCode::from(2));
    };
    let e = f.energy;
    let energy = EnergyFlags {
        policy: e.policy,
        power_root: e.power_root,
        min_battery: e.min_battery,
        charging_only: e.charging_only,
        thermal_limit: e.thermal_limit,
        thermal_pause: e.thermal_pause,
        thermal_resume: e.thermal_resume,
        thermal_threads: e.thermal_threads,
        thermal_sensors: e.thermal_sensors,
        quiet_hours: e.quiet_hours,
        utc_offset: e.utc_offset,
        on_pause: e.on_pause,
        pause_poll: e.pause_poll,
    }
    .resolve()?;
    let args = FinetuneArgs {
        model,
        data,
        out,
        adapter: f.adapter,
        lora: f.lora,
        full: f.full,
        frozen: f.frozen,
        steps: f.steps,
        batch: f.batch,
        seq: f.seq,
        grad_accum: f.grad_accum,
        lr: f.lr,
        optimizer: f.optimizer,
        momentum: f.momentum,
        weight_decay: f.weight_decay,
        warmup: f.warmup,
        schedule: f.schedule,
        max_grad_norm: f.max_grad_norm,
        seed: f.seed,
        threads: threads(f.threads),
        no_shuffle: f.no_shuffle,
        stride: f.stride,
        eval_fraction: f.eval_fraction,
        eval_data: f.eval_data,
        eval_every: f.eval_every,
        save_every: f.save_every,
        checkpoint_blocks: f.checkpoint_blocks,
        mem_budget: f.mem_budget,
        resume: f.resume,
        overwrite: f.overwrite,
        quiet: f.quiet,
        energy,
        device: f.device,
    };
    let summary = finetune(&args, &stop)?;
    if f.json {
        println!("{}", serde_json::to_string(&summary).expect("the summary serializes"));
    }
    Ok(if summary.interrupted {
        ExitCode::from(130)
    } else if summary.paused.is_some() {
        ExitCode::from(PAUSED_EXIT_CODE)
    } else {
        ExitCode::SUCCESS
    })
}

fn info(json: bool) -> ExitCode {
    let info = SystemInfo::probe();
    let checks = self_check();
    let all_passed = checks.iter().all(|c| c.passed);
    if json {
        let value = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "arch": info.arch,
            "isas": info.supported.iter().map(|i| i.name()).collect::<Vec<_>>(),
            "best_isa": info.best.name(),
            "sve_vector_bits": info.sve_vector_bits,
            "threads": info.threads,
            "self_check": checks.iter().map(|c| (c.isa.name().to_string(), c.passed.into())).collect::<serde_json::Map<_, _>>(),
        });
        println!("{value}");
    } else {
        println!("mft {} on {}", env!("CARGO_PKG_VERSION"), info.arch);
        let names: Vec<&str> = info.supported.iter().map(|i| i.name()).collect();
        println!("kernels:  {} (using {})", names.join(", "), info.best);
        if let Some(bits) = info.sve_vector_bits {
            println!("sve:      {bits}-bit vectors");
        }
        println!("threads:  {}", info.threads);
        for check in &checks {
            let verdict = if check.passed { "ok" } else { "MISMATCH" };
            println!("check:    {:<7} {verdict}", check.isa.name());
        }
    }
    if all_passed {
        ExitCode::SUCCESS
    } else {
        eprintln!("mft: an ISA's kernels disagree with the scalar reference; see the lines above");
        ExitCode::FAILURE
    }
}
