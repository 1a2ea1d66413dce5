//! Running CI phases: each prints a header with its command, its result and its time, and a
//! summary of all phases closes the run.

use std::fmt;
use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

/// The workspace root (xtask lives one level below it).
pub fn workspace_root() -> PathBuf {
    let xtask_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    xtask_dir.parent().expect("xtask is inside the workspace").to_path_buf()
}

/// Why a workflow stopped.
#[derive(Debug)]
pub struct Failure(pub String);

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The phases of one workflow run, timed.
pub struct Phases {
    done: Vec<(String, Duration)>,
    started: Instant,
}

impl Phases {
    pub fn new() -> Self {
        Phases { done: Vec::new(), started: Instant::now() }
    }

    /// Run `cargo ARGS` with extra environment variables as the phase `name`.
    pub fn cargo(
        &mut self,
        name: &str,
        args: &[&str],
        envs: &[(&str, String)],
    ) -> Result<(), Failure> {
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let shown_env: String = envs.iter().map(|(k, v)| format!("{k}={v} ")).collect();
        let header = format!("{shown_env}cargo {}", args.join(" "));
        self.run_step(name, &header, || {
            let status = Command::new(&cargo)
                .args(args)
                .envs(envs.iter().map(|(k, v)| (k, v)))
                .current_dir(workspace_root())
                .status()
                .map_err(|e| format!("could not start {cargo}: {e}"))?;
            if status.success() { Ok(()) } else { Err(format!("`{header}` failed ({status})")) }
        })
    }

    /// Run an in-process check as the phase `name`.
    pub fn run(
        &mut self,
        name: &str,
        check: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), Failure> {
        self.run_step(name, "(built into xtask)", check)
    }

    fn run_step(
        &mut self,
        name: &str,
        header: &str,
        step: impl FnOnce() -> Result<(), String>,
    ) -> Result<(), Failure> {
        println!("\n==> [{}] {name}: {header}", self.done.len() + 1);
        let start = Instant::now();
        let result = step();
        let took = start.elapsed();
        match result {
            Ok(()) => {
                println!("<== {name}: ok in {:.1}s", took.as_secs_f64());
                self.done.push((name.to_string(), took));
                Ok(())
            }
            Err(reason) => {
                self.print_summary();
                Err(Failure(format!(
                    "phase `{name}` failed after {:.1}s: {reason}",
                    took.as_secs_f64()
                )))
            }
        }
    }

    fn print_summary(&self) {
        println!("\nphases passed:");
        for (name, took) in &self.done {
            println!("  {:>7.1}s  {name}", took.as_secs_f64());
        }
    }

    /// Print the summary; every phase passed.
    pub fn finish(self) -> Result<(), Failure> {
        self.print_summary();
        println!(
            "all {} phases passed in {:.1}s",
            self.done.len(),
            self.started.elapsed().as_secs_f64()
        );
        Ok(())
    }
}
