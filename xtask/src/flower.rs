//! `cargo xtask flower`: the Flower integration test of mft-fl. Makes (or reuses)
//! `target/flwr-venv`, a Python virtual environment with flwr pinned to the version the Fleet
//! API code was written against, then runs `mft-fl/tests/flower_federation.rs` with
//! `MFT_FL_FLWR_VENV` pointing at it: a SuperLink, the Flower app, three mft-fl clients on
//! loopback, and a client killed and restarted mid-round.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::phase::{Failure, Phases, workspace_root};

/// The flwr release mft-fl's Fleet API client is tested against.
pub const FLWR_VERSION: &str = "1.42.0";

/// The virtual environment, under the workspace's target directory.
fn venv_dir() -> PathBuf {
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| workspace_root().join("target"));
    target.join("flwr-venv")
}

/// Runs the phases: the venv, then the federation test.
pub fn run(phases: &mut Phases) -> Result<(), Failure> {
    let venv = venv_dir();
    phases.run(&format!("flwr {FLWR_VERSION} venv ({})", venv.display()), || ensure_venv(&venv))?;
    phases.cargo(
        "Flower federation (3 mft-fl clients, kill and restart)",
        &["test", "-p", "mft-fl", "--test", "flower_federation", "--", "--ignored", "--nocapture"],
        &[("MFT_FL_FLWR_VENV", venv.display().to_string())],
    )
}

/// Makes the venv with flwr unless it already holds the pinned version.
fn ensure_venv(venv: &Path) -> Result<(), String> {
    let python = venv.join("bin/python");
    if installed_version(&python).as_deref() == Some(FLWR_VERSION) {
        println!("reusing {} (flwr {FLWR_VERSION})", venv.display());
        return Ok(());
    }
    run_command(
        Command::new("python3").args(["-m", "venv", "--clear"]).arg(venv),
        "python3 -m venv",
    )
    .map_err(|e| format!("{e} (on Debian: apt-get install -y python3-venv python3-pip)"))?;
    let pip = venv.join("bin/pip");
    run_command(
        Command::new(&pip)
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(format!("flwr=={FLWR_VERSION}")),
        "pip install flwr",
    )?;
    match installed_version(&python) {
        Some(v) if v == FLWR_VERSION => Ok(()),
        other => Err(format!("flwr in {} is {other:?} after pip install", venv.display())),
    }
}

/// The flwr version the venv's Python imports, if any.
fn installed_version(python: &Path) -> Option<String> {
    let out = Command::new(python)
        .args(["-c", "import importlib.metadata as m; print(m.version('flwr'))"])
        .output()
        .ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn run_command(command: &mut Command, what: &str) -> Result<(), String> {
    let status = command.status().map_err(|e| format!("{what}: cannot start: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("{what} failed ({status})")) }
}
