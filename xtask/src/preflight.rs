//! Checks that the tools a workflow needs are installed, before it starts: a missing one stops
//! xtask with one line naming it and the command that installs it.

use std::path::Path;
use std::process::{Command, Stdio};

use crate::phase::Failure;

/// Something a workflow needs, and how to get it.
pub struct Tool {
    name: String,
    install: String,
    present: fn(&str) -> bool,
}

/// rustfmt and clippy.
pub fn lint_tools() -> Vec<Tool> {
    vec![
        Tool {
            name: "cargo fmt".into(),
            install: "rustup component add rustfmt".into(),
            present: cargo_subcommand,
        },
        Tool {
            name: "cargo clippy".into(),
            install: "rustup component add clippy".into(),
            present: cargo_subcommand,
        },
    ]
}

/// The standard libraries of the targets without std.
pub fn no_std_tools() -> Vec<Tool> {
    crate::NO_STD_TARGETS.iter().map(|t| rust_target(t)).collect()
}

/// What cross-testing on aarch64 under qemu needs.
pub fn cross_tools() -> Vec<Tool> {
    vec![
        rust_target(crate::cross::TARGET),
        Tool {
            name: "qemu-aarch64".into(),
            install: "apt-get install -y qemu-user".into(),
            present: executable,
        },
        Tool {
            name: "aarch64-linux-gnu-gcc".into(),
            install: "apt-get install -y gcc-aarch64-linux-gnu".into(),
            present: executable,
        },
        Tool {
            name: format!("{}/lib/libc.so.6", crate::cross::SYSROOT),
            install: "apt-get install -y libc6-dev-arm64-cross".into(),
            present: |path| Path::new(path).exists(),
        },
    ]
}

/// What a static build for a phone needs: the Rust target (rust-lld ships with the toolchain).
pub fn static_target_tools(target: &str) -> Vec<Tool> {
    vec![rust_target(target)]
}

/// What the fake adb of the qemu device profile needs to run the pushed aarch64 binary.
pub fn fake_device_tools() -> Vec<Tool> {
    vec![Tool {
        name: "qemu-aarch64".into(),
        install: "apt-get install -y qemu-user".into(),
        present: executable,
    }]
}

/// Fail on the first missing tool.
pub fn require(tools: &[Tool]) -> Result<(), Failure> {
    for tool in tools {
        if !(tool.present)(&tool.name) {
            return Err(Failure(format!(
                "missing {} (install it with: {})",
                tool.name, tool.install
            )));
        }
    }
    Ok(())
}

fn rust_target(target: &str) -> Tool {
    Tool {
        name: format!("rust target {target}"),
        install: format!("rustup target add {target}"),
        present: |name| {
            let target = name.trim_start_matches("rust target ");
            sysroot().is_some_and(|root| root.join("lib/rustlib").join(target).join("lib").is_dir())
        },
    }
}

fn sysroot() -> Option<std::path::PathBuf> {
    let out = Command::new("rustc").args(["--print", "sysroot"]).output().ok()?;
    out.status.success().then(|| String::from_utf8_lossy(&out.stdout).trim().into())
}

fn executable(name: &str) -> bool {
    quiet(Command::new(name).arg("--version"))
}

fn cargo_subcommand(name: &str) -> bool {
    let sub = name.trim_start_matches("cargo ");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    quiet(Command::new(cargo).args([sub, "--version"]))
}

fn quiet(command: &mut Command) -> bool {
    command.stdout(Stdio::null()).stderr(Stdio::null()).status().is_ok_and(|s| s.success())
}
