//! `mft-fl`: a Flower client that fine-tunes LoRA adapters on this device.
//!
//! - `mft-fl run --superlink HOST:PORT --model DIR --data FILE …` joins the federation and
//!   answers `train` and `evaluate` messages until Ctrl-C or SIGTERM.
//! - `mft-fl init-adapter --model DIR --out DIR …` writes the starting adapter (PEFT format)
//!   the ServerApp sends in round 1.
//!
//! Errors are one line on stderr naming the file, flag or address, and a non-zero exit.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use clap::{Args, Parser, Subcommand};
use mft_fl::client::{Client, ClientSettings, default_key_path};
use mft_fl::local::{Local, LocalSettings};
use mft_fl::transport::Endpoint;
use mft_fl::{Error, Result, log};
use mft_std::finetune::LoraArgs;
use mft_std::mft_core::{DType, Element, bf16, f16};
use mft_std::mft_kernels::GemmRhs;
use mft_std::source::ModelSource;
use mft_std::train::OptimizerKind;

#[derive(Parser)]
#[command(
    name = "mft-fl",
    version,
    about = "A Flower client that fine-tunes LoRA adapters on this device"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Join a Flower federation and answer its train and evaluate messages.
    Run(Box<RunArgs>),
    /// Write the starting LoRA adapter (PEFT format) for the ServerApp's `initial-adapter`.
    InitAdapter(InitArgs),
}

#[derive(Args)]
struct RunArgs {
    /// The SuperLink's Fleet API, HOST:PORT.
    #[arg(long)]
    superlink: String,
    /// Plain HTTP without TLS (loopback, tests).
    #[arg(long)]
    insecure: bool,
    /// PEM file of the certificates that sign the SuperLink's (default: the Mozilla roots).
    #[arg(long, conflicts_with = "insecure")]
    root_certificates: Option<PathBuf>,
    /// Base model: a Hugging Face directory or random:<preset>.
    #[arg(long)]
    model: String,
    /// This node's training data (JSONL or text).
    #[arg(long)]
    data: PathBuf,
    /// Held-out data for evaluate messages (else --eval-fraction of --data is held out).
    #[arg(long)]
    eval_data: Option<PathBuf>,
    /// Share of --data held out when there is no --eval-data.
    #[arg(long, default_value_t = 0.1)]
    eval_fraction: f64,
    #[command(flatten)]
    lora: LoraArgs,
    /// Optimizer steps per round (the server's `local-steps` config overrides it).
    #[arg(long, default_value_t = 10)]
    local_steps: u64,
    /// Sequences per step.
    #[arg(long, default_value_t = 8)]
    batch: usize,
    /// Longest sequence, in tokens.
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Learning rate (the server's `lr` config overrides it).
    #[arg(long, default_value_t = 1e-3)]
    lr: f32,
    /// Optimizer, fresh each round: adamw or sgd.
    #[arg(long, default_value = "adamw")]
    optimizer: OptimizerKind,
    /// Weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f32,
    /// Clip gradients to this norm (0: off).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f32,
    /// Seed of data order, dropout and random weights.
    #[arg(long, default_value_t = 0)]
    seed: u64,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Element type of the frozen weights: f32, bf16, f16.
    #[arg(long, default_value = "f32")]
    frozen: String,
    /// Where the node keeps its key, its node id and the note of the message in progress.
    #[arg(long, default_value = "mft-fl-state")]
    state_dir: PathBuf,
    /// The node's ECDSA P-384 key (PEM; created if missing). Default: STATE_DIR/node-key.pem.
    #[arg(long)]
    key: Option<PathBuf>,
    /// Write each reply's adapter and metrics under this directory.
    #[arg(long)]
    record_dir: Option<PathBuf>,
    /// Heartbeat interval announced to the SuperLink, in seconds (10 to 1800).
    #[arg(long, default_value_t = 30.0)]
    heartbeat_interval: f64,
    /// Seconds between pulls when there is no message.
    #[arg(long, default_value_t = 1.0)]
    poll_interval: f64,
    /// Give up joining after this many seconds without reaching the SuperLink.
    #[arg(long, default_value_t = 60.0)]
    connect_timeout: f64,
    /// Give up after this many seconds without reaching the SuperLink while running.
    #[arg(long, default_value_t = 600.0)]
    reconnect_timeout: f64,
    /// Bound of one HTTP call, in seconds.
    #[arg(long, default_value_t = 120.0)]
    call_timeout: f64,
    /// Unregister the node when stopping (its key joins as a new node next time).
    #[arg(long)]
    unregister_on_exit: bool,
    /// Stop after answering this many messages.
    #[arg(long)]
    max_messages: Option<u64>,
    /// Log only warnings and errors.
    #[arg(long)]
    quiet: bool,
}

#[derive(Args)]
struct InitArgs {
    /// Base model: a Hugging Face directory or random:<preset>.
    #[arg(long)]
    model: String,
    /// Output directory (adapter_config.json + adapter_model.safetensors).
    #[arg(long)]
    out: PathBuf,
    #[command(flatten)]
    lora: LoraArgs,
    /// Seed of the adapters' initialization.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Run(args) => run(&args),
        Command::InitAdapter(args) => init_adapter(&args),
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("mft-fl: {e}");
            ExitCode::FAILURE
        }
    }
}

fn seconds(flag: &str, value: f64) -> Result<Duration> {
    Duration::try_from_secs_f64(value).ok().filter(|d| !d.is_zero()).ok_or_else(|| {
        Error::Usage(format!("--{flag} {value}: expected a positive number of seconds"))
    })
}

fn run(args: &RunArgs) -> Result<()> {
    log::set_quiet(args.quiet);
    let endpoint = Endpoint::parse(&args.superlink, args.insecure)?;
    if !(10.0..=1800.0).contains(&args.heartbeat_interval) {
        return Err(Error::Usage(format!(
            "--heartbeat-interval {}: the SuperLink accepts 10 to 1800 seconds",
            args.heartbeat_interval
        )));
    }
    if !(0.0..1.0).contains(&args.eval_fraction) {
        return Err(Error::Usage(format!(
            "--eval-fraction {}: expected [0, 1)",
            args.eval_fraction
        )));
    }
    let settings = ClientSettings {
        endpoint,
        root_certificates: args.root_certificates.clone(),
        key: args.key.clone().unwrap_or_else(|| default_key_path(&args.state_dir)),
        state_dir: args.state_dir.clone(),
        heartbeat_interval: seconds("heartbeat-interval", args.heartbeat_interval)?,
        poll_interval: seconds("poll-interval", args.poll_interval)?,
        connect_timeout: seconds("connect-timeout", args.connect_timeout)?,
        reconnect_timeout: seconds("reconnect-timeout", args.reconnect_timeout)?,
        call_timeout: seconds("call-timeout", args.call_timeout)?,
        record_dir: args.record_dir.clone(),
        unregister_on_exit: args.unregister_on_exit,
        max_messages: args.max_messages,
    };
    let threads =
        args.threads.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()));
    let local = LocalSettings {
        model: args.model.clone(),
        data: args.data.clone(),
        eval_data: args.eval_data.clone(),
        eval_fraction: args.eval_fraction,
        lora: args.lora.clone(),
        local_steps: args.local_steps,
        batch: args.batch,
        seq: args.seq,
        lr: args.lr,
        optimizer: args.optimizer,
        weight_decay: args.weight_decay,
        max_grad_norm: args.max_grad_norm,
        seed: args.seed,
        threads,
    };
    let frozen = match args.frozen.as_str() {
        "f32" => DType::F32,
        "bf16" => DType::BF16,
        "f16" => DType::F16,
        other => return Err(Error::Usage(format!("--frozen {other}: expected f32, bf16 or f16"))),
    };
    let stop = Arc::new(AtomicBool::new(false));
    {
        let stop = Arc::clone(&stop);
        ctrlc::set_handler(move || stop.store(true, Ordering::SeqCst))
            .map_err(|e| Error::Usage(format!("cannot install the Ctrl-C handler: {e}")))?;
    }
    match frozen {
        DType::F32 => serve::<f32>(settings, local, &stop),
        DType::BF16 => serve::<bf16>(settings, local, &stop),
        DType::F16 => serve::<f16>(settings, local, &stop),
    }
}

fn serve<T: GemmRhs + Element + Send + Sync>(
    settings: ClientSettings,
    local: LocalSettings,
    stop: &AtomicBool,
) -> Result<()> {
    let local = Local::<T>::new(local)?;
    log::info(&format!(
        "{}: LoRA r={} on {} training / {} held-out examples, {} arrays",
        local.source_name(),
        local.settings().lora.rank,
        local.num_train(),
        local.num_eval(),
        local.arrays().count()
    ));
    let mut client = Client::join(settings, local, stop)?;
    let outcome = client.run(stop);
    client.leave();
    outcome
}

fn init_adapter(args: &InitArgs) -> Result<()> {
    let source = ModelSource::parse(&args.model)?;
    let config = source.config()?;
    let layout = args.lora.layout(&config).map_err(Error::Usage)?;
    let mut adapters = vec![0.0; layout.len()];
    layout.init(args.seed, &mut adapters);
    mft_std::export::export_peft_adapter(
        &args.out,
        &config,
        &layout,
        &adapters,
        Some(&source.name()),
    )?;
    println!(
        "wrote {} ({} arrays, {} parameters; PEFT format)",
        args.out.display(),
        layout.tensors().count(),
        layout.len()
    );
    Ok(())
}
