//! `mft-bench`: the standalone benchmark `cargo xtask bench --device NAME` runs on a phone (or a
//! board, or this machine). It measures our GEMM's GFLOP/s at GPT-2-small shapes next to the
//! FMA peak, then GPT-2-small LoRA and full fine-tuning steps with random weights (or a
//! checkpoint directory), with peak RSS, the battery energy of the timed steps where the
//! battery can tell, and the temperatures before and after; it writes one JSON document.
//!
//! Nothing here needs a peer crate or a C toolchain: the binary cross-builds as a static
//! `aarch64-unknown-linux-musl` executable that runs from `/data/local/tmp` without the NDK.
//!
//! Flags: `--out PATH` (the JSON document; required), `--suite kernels|train|all`, `--quick`
//! (tiny shapes, few steps: the CI run under qemu), `--threads N`, `--cpus LIST` (pin to these
//! cores, e.g. `4-8`), `--single-cpu C` (the core of the one-thread kernel rows), `--model DIR`
//! (a Hugging Face checkpoint directory instead of random GPT-2-small weights; `--model-name`
//! names it in the document, by default the directory's name), `--steps N`,
//! `--warmup N`, `--batch N`, `--seq N`, `--profile NAME` (a label kept in the document),
//! `--power-root DIR` (read the battery and thermal zones under `DIR/sys/class/` instead of
//! `/sys/class/`, as `mft finetune --power-root` does).
//!
//! The document's layout is `mft-bench/1`; `xtask/src/device/result.rs` checks it field by
//! field.

mod kernels;
mod machine;
mod train;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use serde_json::{Value, json};

/// The document layout this binary writes.
pub const SCHEMA: &str = "mft-bench/1";

const USAGE: &str = "\
usage: mft-bench --out PATH [--suite kernels|train|all] [--quick] [--threads N] [--cpus LIST]
                 [--single-cpu C] [--model DIR [--model-name NAME]] [--steps N] [--warmup N]
                 [--batch N] [--seq N] [--profile NAME] [--power-root DIR]";

/// Which parts run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Suite {
    /// GEMM and the FMA peak.
    Kernels,
    /// Training steps.
    Train,
    /// Both.
    All,
}

impl Suite {
    fn name(self) -> &'static str {
        match self {
            Suite::Kernels => "kernels",
            Suite::Train => "train",
            Suite::All => "all",
        }
    }
}

/// The command line.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where the JSON document goes.
    pub out: PathBuf,
    /// What runs.
    pub suite: Suite,
    /// Tiny shapes and few steps.
    pub quick: bool,
    /// Threads of the multi-threaded rows and of training.
    pub threads: usize,
    /// Cores to pin the process to (empty: no pinning).
    pub cpus: Vec<usize>,
    /// The core of the one-thread kernel rows.
    pub single_cpu: Option<usize>,
    /// A checkpoint directory to train instead of random GPT-2-small weights.
    pub model: Option<PathBuf>,
    /// Timed training steps (default: 3, quick: 2).
    pub steps: Option<usize>,
    /// Untimed steps before them (default 1).
    pub warmup: usize,
    /// Sequences per step (default: 4, quick: 2).
    pub batch: Option<usize>,
    /// Tokens per sequence (default: 128, quick: 32).
    pub seq: Option<usize>,
    /// The name of `--model` in the document (default: the directory's name).
    pub model_name: Option<String>,
    /// The device profile's name, kept in the document.
    pub profile: String,
    /// Where the battery and thermal zones are read: `ROOT/sys/class/…` (default `/`).
    pub power_root: PathBuf,
}

/// `4-8` or `0,2,4-5` → the cores.
fn parse_cpu_list(text: &str) -> Result<Vec<usize>, String> {
    let mut cpus = Vec::new();
    for part in text.split(',') {
        let bad = || format!("--cpus: `{part}` is neither a core nor a range of cores");
        let (lo, hi) = match part.split_once('-') {
            Some((lo, hi)) => {
                (lo.trim().parse().map_err(|_| bad())?, hi.trim().parse().map_err(|_| bad())?)
            }
            None => {
                let c: usize = part.trim().parse().map_err(|_| bad())?;
                (c, c)
            }
        };
        if lo > hi || hi >= 1024 {
            return Err(bad());
        }
        cpus.extend(lo..=hi);
    }
    cpus.sort_unstable();
    cpus.dedup();
    Ok(cpus)
}

fn parse_args(args: &[String]) -> Result<Options, String> {
    let mut o = Options {
        out: PathBuf::new(),
        suite: Suite::All,
        quick: false,
        threads: std::thread::available_parallelism().map_or(1, |n| n.get()),
        cpus: Vec::new(),
        single_cpu: None,
        model: None,
        steps: None,
        warmup: 1,
        batch: None,
        seq: None,
        model_name: None,
        profile: "unnamed".into(),
        power_root: PathBuf::from("/"),
    };
    let mut out = None;
    let mut it = args.iter();
    while let Some(arg) = it.next() {
        let mut value = |name: &str| it.next().cloned().ok_or(format!("{name} needs a value"));
        let positive = |name: &str, v: String| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("{name}: `{v}` is not a positive integer"))
        };
        match arg.as_str() {
            "--out" => out = Some(PathBuf::from(value("--out")?)),
            "--suite" => {
                o.suite = match value("--suite")?.as_str() {
                    "kernels" => Suite::Kernels,
                    "train" => Suite::Train,
                    "all" => Suite::All,
                    other => {
                        return Err(format!("--suite: `{other}` is not kernels, train or all"));
                    }
                }
            }
            "--quick" => o.quick = true,
            "--threads" => o.threads = positive("--threads", value("--threads")?)?,
            "--cpus" => o.cpus = parse_cpu_list(&value("--cpus")?)?,
            "--single-cpu" => {
                let v = value("--single-cpu")?;
                o.single_cpu =
                    Some(v.parse().map_err(|_| format!("--single-cpu: `{v}` is not a core"))?);
            }
            "--model" => o.model = Some(PathBuf::from(value("--model")?)),
            "--model-name" => o.model_name = Some(value("--model-name")?),
            "--steps" => o.steps = Some(positive("--steps", value("--steps")?)?),
            "--warmup" => {
                let v = value("--warmup")?;
                o.warmup = v.parse().map_err(|_| format!("--warmup: `{v}` is not a number"))?;
            }
            "--batch" => o.batch = Some(positive("--batch", value("--batch")?)?),
            "--seq" => o.seq = Some(positive("--seq", value("--seq")?)?),
            "--profile" => o.profile = value("--profile")?,
            "--power-root" => o.power_root = PathBuf::from(value("--power-root")?),
            "--help" | "-h" => return Err(USAGE.into()),
            other => return Err(format!("unknown argument `{other}`\n{USAGE}")),
        }
    }
    o.out = out.ok_or(format!("--out PATH is required\n{USAGE}"))?;
    Ok(o)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match parse_args(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("mft-bench: {message}");
            return ExitCode::from(2);
        }
    };
    match run(&options) {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("mft-bench: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Everything, in order: the machine, pinning, kernels, training, the document.
fn run(o: &Options) -> Result<(), String> {
    let started = Instant::now();
    let started_unix_s = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let pinning = machine::pin(&o.cpus);
    if let Some(error) = &pinning.error {
        eprintln!("mft-bench: warning: {error}");
    }
    let sensors = machine::Sensors::new(&o.power_root);
    let before = sensors.snapshot();
    let kernels = match o.suite {
        Suite::Kernels | Suite::All => Some(kernels::run(o, &pinning)?),
        Suite::Train => None,
    };
    // Training resets VmHWM before each run (to give each its own peak), and the kernel may
    // then lose a peak that was freed: the run's peak is the greatest of the parts'.
    let mut peak_rss = machine::peak_rss();
    let train = match o.suite {
        Suite::Train | Suite::All => train::run(o, &sensors)?,
        Suite::Kernels => Vec::new(),
    };
    for row in &train {
        peak_rss = peak_rss.max(row["peak_rss_bytes"].as_u64().unwrap_or(0));
    }
    let peak_rss = peak_rss.max(machine::peak_rss());
    let after = sensors.snapshot();
    let doc = json!({
        "schema": SCHEMA,
        "profile": o.profile,
        "suite": o.suite.name(),
        "power_root": o.power_root.to_string_lossy(),
        "quick": o.quick,
        "started_unix_s": started_unix_s,
        "machine": machine::describe(),
        "pinning": pinning.json(),
        "threads": o.threads,
        "kernels": kernels.unwrap_or(Value::Null),
        "train": train,
        "peak_rss_bytes": peak_rss,
        "battery": sensors.battery_json(&before, &after),
        "thermal": sensors.thermal_json(&before, &after),
        "notes": sensors.notes(),
        "duration_s": started.elapsed().as_secs_f64(),
    });
    let text = serde_json::to_string_pretty(&doc).map_err(|e| e.to_string())?;
    mft_std::fsio::write_atomic(&o.out, text.as_bytes()).map_err(|e| e.to_string())?;
    eprintln!("mft-bench: wrote {}", o.out.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_lists() {
        assert_eq!(parse_cpu_list("4-8").unwrap(), [4, 5, 6, 7, 8]);
        assert_eq!(parse_cpu_list("0,2,4-5,2").unwrap(), [0, 2, 4, 5]);
        assert!(parse_cpu_list("5-4").is_err());
        assert!(parse_cpu_list("x").is_err());
    }
}
