//! `cargo xtask bench SUITE`: runs a benchmark suite of mft-benches through `cargo bench` from the
//! workspace root, its output passed through untouched (with `--json`, stdout is the JSON
//! document alone; what xtask says goes to stderr).

use std::process::Command;

use crate::cli::Bench;
use crate::phase::{Failure, workspace_root};

/// The `cargo bench` arguments that run `bench`.
pub fn cargo_args(bench: &Bench) -> Vec<String> {
    let mut args: Vec<String> =
        ["bench", "-p", "mft-benches", "--bench", bench.suite.bench_target()]
            .map(String::from)
            .to_vec();
    // `--device cuda` needs the CUDA offload compiled in.
    if wants_cuda(&bench.extra) {
        args.extend(["--features", "cuda"].map(String::from));
    }
    args.push("--".into());
    if bench.json {
        args.push("--json".into());
    }
    if bench.quick {
        args.push("--quick".into());
    }
    if let Some(threads) = &bench.threads {
        let list: Vec<String> = threads.iter().map(usize::to_string).collect();
        args.extend(["--threads".into(), list.join(",")]);
    }
    args.extend(bench.extra.iter().cloned());
    args
}

/// Whether the suite's own flags ask for `--device cuda`.
fn wants_cuda(extra: &[String]) -> bool {
    extra.windows(2).any(|w| w[0] == "--device" && w[1] == "cuda")
}

/// Run the suite; fails when `cargo bench` does (a build error, or a kernel that gave a wrong
/// result).
pub fn run(bench: &Bench) -> Result<(), Failure> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let args = cargo_args(bench);
    let shown = format!("cargo {}", args.join(" "));
    eprintln!("xtask: bench {}: {shown}", bench.suite.name());
    let status = Command::new(&cargo)
        .args(&args)
        .current_dir(workspace_root())
        .status()
        .map_err(|e| Failure(format!("could not start {cargo}: {e}")))?;
    if status.success() { Ok(()) } else { Err(Failure(format!("`{shown}` failed ({status})"))) }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::BenchSuite;

    #[test]
    fn flags_reach_the_bench_binary_after_the_separator() {
        let bench = Bench {
            suite: BenchSuite::Kernels,
            json: true,
            quick: true,
            threads: Some(vec![1, 2]),
            extra: vec![],
        };
        assert_eq!(
            cargo_args(&bench).join(" "),
            "bench -p mft-benches --bench kernels -- --json --quick --threads 1,2"
        );
        let plain = Bench {
            suite: BenchSuite::Kernels,
            json: false,
            quick: false,
            threads: None,
            extra: vec![],
        };
        assert_eq!(cargo_args(&plain).join(" "), "bench -p mft-benches --bench kernels --");
        let train = Bench {
            suite: BenchSuite::Train,
            json: true,
            quick: false,
            threads: None,
            extra: vec!["--model".into(), "gpt2".into(), "--threads".into(), "2".into()],
        };
        assert_eq!(
            cargo_args(&train).join(" "),
            "bench -p mft-benches --bench train -- --json --model gpt2 --threads 2"
        );
        let cuda = Bench { extra: vec!["--device".into(), "cuda".into()], ..train };
        assert_eq!(
            cargo_args(&cuda).join(" "),
            "bench -p mft-benches --bench train --features cuda -- --json --device cuda"
        );
    }
}
