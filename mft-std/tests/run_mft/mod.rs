//! Helpers shared by the tests that run the `mft` binary: the tiny GPT-2 fixture, a data file its
//! vocabulary accepts, and the process's stderr as text.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The tiny GPT-2 snapshot of mft-models' fixtures (vocabulary 96).
pub fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../mft-models/tests/fixtures/gpt2_full")
}

/// What the process wrote to stderr.
pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// `finetune --model MODEL --data DATA --out OUT --seq 16 --threads 1`, then `flags`.
pub fn finetune_args(model: &Path, data: &Path, out: &Path, flags: &[&str]) -> Vec<String> {
    let paths = [("--model", model), ("--data", data), ("--out", out)];
    let mut args = vec!["finetune".to_string()];
    for (flag, path) in paths {
        args.extend([flag.to_string(), path.display().to_string()]);
    }
    let fixed = ["--seq", "16", "--threads", "1"];
    args.extend(fixed.iter().chain(flags).map(|s| s.to_string()));
    args
}

/// Writes `dir/ids.jsonl`: 30 `{"ids"}` lines of 8 to 12 ids the fixture's vocabulary accepts.
pub fn ids_file(dir: &Path) -> PathBuf {
    let path = dir.join("ids.jsonl");
    let lines: Vec<String> = (0..30)
        .map(|i| {
            let ids: Vec<String> =
                (0..8 + i % 5).map(|t| ((i * 7 + t * 3) % 90 + 1).to_string()).collect();
            format!("{{\"ids\": [{}]}}", ids.join(","))
        })
        .collect();
    std::fs::write(&path, lines.join("\n")).unwrap();
    path
}
