//! The `mft` command. Today: `mft info`, what the kernels see on this machine. `mft finetune`,
//! `mft inspect` and `mft eval` land with the main-job issue.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use mft_std::system::{SystemInfo, self_check};

#[derive(Parser)]
#[command(name = "mft", version, about = "On-device fine-tuning of language models")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Show the CPU features the kernels use here and check each ISA's kernels against scalar.
    Info {
        /// Print one JSON object instead of text.
        #[arg(long)]
        json: bool,
    },
}

fn main() -> ExitCode {
    match Cli::parse().command {
        Command::Info { json } => info(json),
    }
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
