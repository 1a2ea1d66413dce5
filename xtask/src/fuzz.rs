//! `cargo xtask fuzz [--target T] [--seconds N]`: builds the cargo-fuzz targets of `fuzz/` once
//! (nightly, address sanitizer) and runs each (or `T`) for `N` seconds, one per CPU at a time
//! (each in its own log file when several run at once).
//!
//! Each target's corpus is `fuzz/corpus/T/` (kept between runs, not in git); before a run it is
//! seeded with the target's inputs from [`seeds`]: valid files of the repository (the demo, the
//! test fixtures) behind the byte(s) that tell the target how to read them. A crash leaves its
//! input in `fuzz/artifacts/T/`, and the run fails naming it and the command that replays it.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use crate::phase::{Failure, workspace_root};

/// The cargo-fuzz version CI installs (`.ci/run`) and the one this workflow is tested with.
pub const CARGO_FUZZ_VERSION: &str = "0.13.2";

/// Every fuzz target in `fuzz/Cargo.toml`, in the order a full run takes them.
pub const TARGETS: [&str; 11] = [
    "model_config",
    "safetensors_header",
    "safetensors_index",
    "tokenizer",
    "data_lines",
    "train_checkpoint",
    "peft_adapter",
    "npy",
    "flower_objects",
    "arena_ops",
    "tensor_layout",
];

/// A seed input: `prefix` then the content of `source`.
pub struct Seed {
    prefix: &'static [u8],
    source: Source,
}

/// Where a seed's content comes from.
enum Source {
    /// A repository file, whole.
    File(&'static str),
    /// The first lines of a repository file.
    Lines(&'static str, usize),
    /// Bytes given here.
    Bytes(&'static [u8]),
}

const fn file(prefix: &'static [u8], path: &'static str) -> Seed {
    Seed { prefix, source: Source::File(path) }
}

const fn bytes(prefix: &'static [u8], content: &'static [u8]) -> Seed {
    Seed { prefix, source: Source::Bytes(content) }
}

/// The seeds of `target` (see each target's docs for what its leading bytes select).
pub fn seeds(target: &str) -> Vec<Seed> {
    const INDEX: &[u8] = br#"{"metadata": {"total_size": 1024}, "weight_map": {
        "transformer.wte.weight": "model-00001-of-00002.safetensors",
        "transformer.h.0.ln_1.weight": "model-00001-of-00002.safetensors",
        "transformer.h.1.mlp.c_fc.weight": "model-00002-of-00002.safetensors"}}"#;
    match target {
        "model_config" => [
            "demo/base/config.json",
            "mft-models/tests/fixtures/gpt2_full/config.json",
            "mft-models/tests/fixtures/qwen2_full/config.json",
            "mft-models/tests/fixtures/gemma3_full/config.json",
        ]
        .map(|path| file(b"", path))
        .into(),
        "safetensors_index" => vec![bytes(b"", INDEX)],
        // The targets corrupt a valid file themselves: [how, position (4 bytes), bytes].
        "safetensors_header" | "train_checkpoint" | "npy" => vec![
            bytes(&[1, 9, 0, 0, 0], b"{\"__metadata__\""),
            bytes(&[2, 40, 0, 0, 0], b""),
            bytes(&[3, 0, 0, 0, 0], b"\xff\xff"),
            bytes(&[4, 3, 0, 0, 0], b"\x07"),
            bytes(&[0x11, 30, 0, 0, 0], b"\"step\": 99"),
        ],
        "tokenizer" => vec![
            bytes(&[0], "Hello, world! <|endoftext|> caf\u{e9} \u{1F600}".as_bytes()),
            bytes(&[2], b"<|im_start|>user\nhi<|im_end|>"),
            bytes(&[4], b"<bos><start_of_turn>user  two  spaces<eos>"),
            bytes(&[1, 1, 200, 0, 0, 0], b"\"x\""),
            bytes(&[3, 2, 100, 0, 0, 0], b""),
            bytes(&[5, 4, 60, 0, 0, 0], b"\x01"),
        ],
        // [format | encoder | seq | stride | eval split] bits, then the file.
        "data_lines" => vec![
            Seed { prefix: &[76], source: Source::Lines("demo/task/train.jsonl", 8) },
            Seed { prefix: &[77], source: Source::Lines("demo/corpus.txt", 12) },
            bytes(&[14], b"{\"ids\": [1, 2, 3], \"mask\": [0, 1, true]}\n{\"ids\": [4, 5]}\n"),
            bytes(&[12], b"{\"text\": \"a b c\"}\r\n\n{\"prompt\": \"q\", \"completion\": \" a\"}"),
        ],
        // [mode: even corrupts a valid message, odd reads the rest as objects] (see the target).
        "flower_objects" => vec![
            bytes(&[0, 4], b"\x40\x01\0\0\x03"),
            bytes(&[0, 2], b"\x90\x01\0\0"),
            bytes(&[0, 3, 20, 0, 0, 0], b","),
            bytes(&[1], b"Message $1 2\0\x08\x01\n\xff\xfe\nRecordDict  2\0{}"),
        ],
        "peft_adapter" => vec![
            file(&[0], "mft-std/tests/fixtures/peft_export/gpt2/adapter_config.json"),
            file(&[2], "mft-std/tests/fixtures/peft_export/qwen2/adapter_config.json"),
            file(&[4], "mft-std/tests/fixtures/peft_export/gemma3/adapter_config.json"),
            bytes(&[1, 1, 9, 0, 0, 0], b"{\"a\": 1}"),
            bytes(&[1, 2, 80, 0, 0, 0], b""),
        ],
        _ => Vec::new(),
    }
}

impl Seed {
    /// The seed's bytes, read from the repository at `root`.
    fn content(&self, root: &Path) -> Result<Vec<u8>, String> {
        let read =
            |path: &str| std::fs::read(root.join(path)).map_err(|e| format!("seed {path}: {e}"));
        let body = match self.source {
            Source::File(path) => read(path)?,
            Source::Lines(path, n) => {
                let text = read(path)?;
                let lines: Vec<&[u8]> = text.split(|&b| b == b'\n').take(n).collect();
                lines.join(&b'\n')
            }
            Source::Bytes(bytes) => bytes.to_vec(),
        };
        Ok([self.prefix, &body].concat())
    }
}

/// What one `cargo xtask fuzz` does.
#[derive(Debug, PartialEq, Eq)]
pub struct FuzzRun {
    /// The targets, in order.
    pub targets: Vec<String>,
    /// Seconds each one runs.
    pub seconds: u64,
}

/// The directory cargo-fuzz builds in: `$CARGO_TARGET_DIR/fuzz` when that is set (so that a
/// shared checkout's builds stay apart), else cargo-fuzz's own `fuzz/target`.
fn target_dir() -> Option<PathBuf> {
    std::env::var_os("CARGO_TARGET_DIR").map(|dir| PathBuf::from(dir).join("fuzz"))
}

/// `cargo +nightly fuzz ARGS` from the workspace root, with the environment a stable
/// `cargo xtask` leaves (its toolchain pin) removed.
fn cargo_fuzz(args: &[String]) -> Command {
    let mut command = Command::new("cargo");
    command
        .arg("+nightly")
        .arg("fuzz")
        .args(args)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .current_dir(workspace_root());
    command
}

/// Whether `cargo +nightly fuzz` runs.
fn cargo_fuzz_present() -> bool {
    cargo_fuzz(&["--version".into()])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

/// The `cargo fuzz build` arguments (every target at once).
pub fn build_args() -> Vec<String> {
    let mut args = vec!["build".to_string()];
    if let Some(dir) = target_dir() {
        args.extend(["--target-dir".into(), dir.display().to_string()]);
    }
    args
}

/// The `cargo fuzz run` arguments of `target` for `seconds`.
pub fn run_args(target: &str, seconds: u64) -> Vec<String> {
    let mut args = vec!["run".to_string(), target.to_string()];
    if let Some(dir) = target_dir() {
        args.extend(["--target-dir".into(), dir.display().to_string()]);
    }
    args.push(format!("fuzz/corpus/{target}"));
    args.push("--".into());
    if !["arena_ops", "tensor_layout"].contains(&target) {
        // The parsers read JSON: their dictionary of tokens (fuzz/dict/json.dict).
        let dict = workspace_root().join("fuzz/dict/json.dict");
        args.push(format!("-dict={}", dict.display()));
    }
    args.extend([
        format!("-max_total_time={seconds}"),
        // An input that takes this long is a hang, reported as a failure.
        "-timeout=30".into(),
        "-print_final_stats=1".into(),
    ]);
    args
}

/// Fails, naming the install commands, unless `cargo +nightly fuzz` runs.
pub fn require_tools() -> Result<(), Failure> {
    if cargo_fuzz_present() {
        return Ok(());
    }
    Err(Failure(format!(
        "missing cargo-fuzz on the nightly toolchain (install them with: rustup toolchain \
         install nightly && cargo install cargo-fuzz --version {CARGO_FUZZ_VERSION} --locked)"
    )))
}

/// Builds the targets, then runs each for its seconds, as many at a time as there are CPUs;
/// stops after the first batch in which one fails.
pub fn run(request: &FuzzRun) -> Result<(), Failure> {
    require_tools()?;
    let root = workspace_root();
    let started = Instant::now();
    let build = build_args();
    println!("==> fuzz build: cargo +nightly fuzz {}", build.join(" "));
    let status = cargo_fuzz(&build).status().map_err(|e| Failure(format!("cargo fuzz: {e}")))?;
    if !status.success() {
        return Err(Failure(format!(
            "`cargo +nightly fuzz {}` failed ({status})",
            build.join(" ")
        )));
    }
    println!("<== fuzz build: ok in {:.1}s", started.elapsed().as_secs_f64());
    // Several targets run side by side, one per CPU (each libFuzzer process is one thread),
    // their output in a log file each; a single target runs in the foreground.
    let jobs = if request.targets.len() > 1 {
        std::thread::available_parallelism().map_or(1, |n| n.get())
    } else {
        1
    };
    let logs = target_dir().unwrap_or_else(|| root.join("fuzz/target")).join("logs");
    for batch in request.targets.chunks(jobs) {
        let mut running = Vec::new();
        for target in batch {
            let corpus = root.join("fuzz/corpus").join(target);
            std::fs::create_dir_all(&corpus)
                .map_err(|e| Failure(format!("{}: {e}", corpus.display())))?;
            for (i, seed) in seeds(target).iter().enumerate() {
                let content = seed.content(&root).map_err(Failure)?;
                let path = corpus.join(format!("seed-{i}"));
                std::fs::write(&path, content)
                    .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
            }
            let args = run_args(target, request.seconds);
            println!(
                "\n==> fuzz {target} for {} s: cargo +nightly fuzz {}",
                request.seconds,
                args.join(" ")
            );
            let mut command = cargo_fuzz(&args);
            let log = if jobs > 1 {
                std::fs::create_dir_all(&logs)
                    .map_err(|e| Failure(format!("{}: {e}", logs.display())))?;
                let path = logs.join(format!("{target}.log"));
                let file = std::fs::File::create(&path)
                    .map_err(|e| Failure(format!("{}: {e}", path.display())))?;
                let copy =
                    file.try_clone().map_err(|e| Failure(format!("{}: {e}", path.display())))?;
                command.stdout(copy).stderr(file);
                Some(path)
            } else {
                None
            };
            let child = command.spawn().map_err(|e| Failure(format!("cargo fuzz: {e}")))?;
            running.push((target, child, log, Instant::now()));
        }
        // Every process of the batch is waited for before a failure is reported.
        let mut failed = None;
        for (target, mut child, log, start) in running {
            let status = child.wait().map_err(|e| Failure(format!("cargo fuzz: {e}")))?;
            if status.success() {
                println!("<== fuzz {target}: clean for {:.0}s", start.elapsed().as_secs_f64());
                continue;
            }
            if let Some(path) = &log {
                let text = std::fs::read_to_string(path).unwrap_or_default();
                let lines: Vec<&str> = text.lines().collect();
                println!("--- the end of {} ---", path.display());
                for line in &lines[lines.len().saturating_sub(60)..] {
                    println!("{line}");
                }
            }
            failed.get_or_insert(Failure(format!(
                "fuzz target {target} failed ({status}): its input is in fuzz/artifacts/{target}/; \
                 replay it with `cargo +nightly fuzz run {target} fuzz/artifacts/{target}/<file>`"
            )));
        }
        if let Some(failure) = failed {
            return Err(failure);
        }
    }
    println!(
        "\nall {} fuzz target(s) ran clean ({} s each) in {:.0}s",
        request.targets.len(),
        request.seconds,
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list here and the `[[bin]]` targets of fuzz/Cargo.toml are the same set.
    #[test]
    fn targets_match_the_fuzz_manifest() {
        let manifest = std::fs::read_to_string(workspace_root().join("fuzz/Cargo.toml")).unwrap();
        let mut in_manifest: Vec<&str> = manifest
            .split("[[bin]]")
            .skip(1)
            .map(|bin| {
                let line = bin.lines().find(|l| l.trim_start().starts_with("name")).unwrap();
                line.split('"').nth(1).unwrap()
            })
            .collect();
        in_manifest.sort_unstable();
        let mut listed = TARGETS.to_vec();
        listed.sort_unstable();
        assert_eq!(listed, in_manifest);
    }

    /// Every seed names a file that is there, and seeds exist for the parser targets.
    #[test]
    fn seeds_read() {
        let root = workspace_root();
        for target in TARGETS {
            for seed in seeds(target) {
                let content = seed.content(&root).unwrap();
                assert!(content.len() > 1, "{target}: an empty seed");
            }
        }
        assert_eq!(seeds("model_config").len(), 4);
        assert!(seeds("data_lines").iter().all(|s| s.content(&root).unwrap().len() > 20));
        assert!(seeds("arena_ops").is_empty());
    }

    /// CI installs the cargo-fuzz this workflow names.
    #[test]
    fn ci_installs_the_pinned_cargo_fuzz() {
        let script = std::fs::read_to_string(workspace_root().join(".ci/run")).unwrap();
        assert!(script.contains(&format!("CARGO_FUZZ_VERSION={CARGO_FUZZ_VERSION}")));
    }

    #[test]
    fn run_arguments() {
        let args = run_args("tokenizer", 20);
        let corpus = args.iter().position(|a| a == "fuzz/corpus/tokenizer").unwrap();
        assert_eq!(&args[..2], ["run", "tokenizer"]);
        assert_eq!(args[corpus + 1], "--");
        assert!(args.contains(&"-max_total_time=20".to_string()));
        assert!(args.iter().any(|a| a.starts_with("-dict=") && a.ends_with("json.dict")));
        assert!(!run_args("arena_ops", 1).iter().any(|a| a.starts_with("-dict=")));
        assert!(workspace_root().join("fuzz/dict/json.dict").is_file());
    }
}
