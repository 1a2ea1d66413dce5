//! `cargo xtask`: every mft workflow as plain Rust, run from the workspace root.
//!
//! - `cargo xtask ci`: fmt, tidy, clippy (host and aarch64), fuzz targets (20 s each), host tests,
//!   the kernels' GEMM and loss tests under AddressSanitizer, the Flower federation test
//!   (`cargo xtask flower`), no_std builds, aarch64 tests under qemu, the phone benchmark's
//!   pipeline through the fake adb (`device::pipeline_check`).
//! - `cargo xtask test [--target host|aarch64] [--sve-vl 128,256,512] [--neon-only] [-- FILTER]`
//! - `cargo xtask nostd`: build the no_std crates for targets without std.
//! - `cargo xtask bench kernels [--json] [--quick] [--threads 1,2]`: GEMM against its peers and
//!   the FMA peak, side by side (see `benches/benches/kernels.rs`).
//! - `cargo xtask bench --device pixel8|galaxy-s23|jetson-orin-nano|host|qemu [...]`: the phone
//!   benchmark `mft-bench`, built, pushed over adb, run and compared with the previous run (see
//!   `device/`); `qemu` runs the same pipeline through a fake adb under qemu-aarch64.
//! - `cargo xtask phone-check`: CI's check of that pipeline (`device::pipeline_check`).
//! - `cargo xtask flower`: mft-fl against a real Flower SuperLink (flwr 1.42.0 in
//!   `target/flwr-venv`, see `flower.rs`).
//! - `cargo xtask fuzz [--target T] [--seconds N]`: the cargo-fuzz targets of `fuzz/`, each for
//!   N seconds (see `fuzz.rs`).

mod bench;
mod cli;
mod cross;
mod device;
mod flower;
mod fuzz;
mod phase;
mod preflight;
mod tidy;

use std::process::ExitCode;

use cli::{Command, TestTarget};
use phase::{Failure, Phases, workspace_root};

/// Targets with no std at all: building the core crates for them proves they stay `no_std`.
const NO_STD_TARGETS: [&str; 2] = ["aarch64-unknown-none", "thumbv7em-none-eabihf"];
/// The crates that must build without std.
const NO_STD_CRATES: [&str; 3] = ["mft-core", "mft-kernels", "mft-models"];

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let command = match cli::parse(&args) {
        Ok(command) => command,
        Err(message) => {
            eprintln!("xtask: {message}\n\n{}", cli::USAGE);
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", cli::USAGE);
            Ok(())
        }
        Command::Ci => ci(),
        Command::Test { target: TestTarget::Host, filter } => {
            let mut phases = Phases::new();
            host_tests(&mut phases, &filter).and_then(|()| phases.finish())
        }
        Command::Test { target: TestTarget::Aarch64(configs), filter } => {
            let mut phases = Phases::new();
            preflight::require(&preflight::cross_tools())
                .and_then(|()| cross::run(&mut phases, &configs, &filter))
                .and_then(|()| phases.finish())
        }
        Command::Bench(ref request) => bench::run(request),
        Command::DeviceBench(ref request) => device::run(request),
        Command::Flower => {
            let mut phases = Phases::new();
            flower::run(&mut phases).and_then(|()| phases.finish())
        }
        Command::PhoneCheck => {
            let mut phases = Phases::new();
            phone_check(&mut phases).and_then(|()| phases.finish())
        }
        Command::Fuzz(ref request) => fuzz::run(request),
        Command::NoStd => {
            let mut phases = Phases::new();
            preflight::require(&preflight::no_std_tools())
                .and_then(|()| no_std_builds(&mut phases))
                .and_then(|()| phases.finish())
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(failure) => {
            eprintln!("xtask: {failure}");
            ExitCode::FAILURE
        }
    }
}

/// Everything CI checks, in order; stops at the first failing phase.
fn ci() -> Result<(), Failure> {
    let mut tools = preflight::lint_tools();
    tools.extend(preflight::no_std_tools());
    tools.extend(preflight::cross_tools());
    preflight::require(&tools)?;
    fuzz::require_tools()?;

    let mut phases = Phases::new();
    phases.cargo("fmt", &["fmt", "--all", "--check"], &[])?;
    phases.run("tidy", tidy::check)?;
    phases.cargo(
        "clippy",
        &["clippy", "--workspace", "--all-targets", "--", "-D", "warnings"],
        &[],
    )?;
    // The NEON and SVE kernels compile only for aarch64: lint them there too.
    phases.cargo(
        "clippy aarch64",
        &[
            "clippy",
            "--target",
            cross::TARGET,
            "-p",
            "mft-core",
            "-p",
            "mft-kernels",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    // The cargo-fuzz targets are their own workspace: built (nightly, sanitizer) and each run
    // for a short while; `cargo xtask fuzz --seconds 600` is the long version.
    phases.run("fuzz targets, 20 s each", || {
        let all = fuzz::FuzzRun { targets: fuzz::TARGETS.map(String::from).to_vec(), seconds: 20 };
        fuzz::run(&all).map_err(|failure| failure.0)
    })?;
    host_tests(&mut phases, &[])?;
    phases.run("kernels under AddressSanitizer", sanitized_kernel_tests)?;
    cuda_checks(&mut phases)?;
    flower::run(&mut phases)?;
    no_std_builds(&mut phases)?;
    cross::run(&mut phases, &cross::QemuCpu::all(), &[])?;
    phone_check(&mut phases)?;
    phases.finish()
}

/// The GEMM and fused-loss tests of mft-kernels built with AddressSanitizer (nightly): the
/// micro-kernels read operands in place through raw pointers, and a read past an operand's end
/// (say a short tile reading rows it then drops) changes no result a test can compare.
fn sanitized_kernel_tests() -> Result<(), String> {
    let target_dir = std::env::var_os("CARGO_TARGET_DIR")
        .map_or_else(|| workspace_root().join("target"), std::path::PathBuf::from)
        .join("asan");
    let args = [
        "+nightly",
        "test",
        "-p",
        "mft-kernels",
        "--target",
        "x86_64-unknown-linux-gnu",
        "--lib",
        "--test",
        "gemm",
        "--test",
        "loss",
    ];
    println!("RUSTFLAGS=-Zsanitizer=address cargo {}", args.join(" "));
    let status = std::process::Command::new("cargo")
        .args(args)
        .env("RUSTFLAGS", "-Zsanitizer=address")
        .env("CARGO_TARGET_DIR", &target_dir)
        .env_remove("RUSTUP_TOOLCHAIN")
        .env_remove("RUSTC")
        .env_remove("CARGO")
        .current_dir(workspace_root())
        .status()
        .map_err(|e| format!("could not start cargo +nightly: {e}"))?;
    if status.success() { Ok(()) } else { Err(format!("sanitized kernel tests failed ({status})")) }
}

/// The phone benchmark's whole pipeline, without a phone: fake adb, qemu-aarch64.
fn phone_check(phases: &mut Phases) -> Result<(), Failure> {
    phases.run("phone bench pipeline (qemu profile, fake adb)", device::pipeline_check)
}

/// The `cuda` feature on a machine without a CUDA toolkit or driver: it must build and lint
/// clean, its pure logic must pass, and `mft finetune --device cuda` must fall back to the CPU
/// with one notice and the same adapter as `--device cpu`.
fn cuda_checks(phases: &mut Phases) -> Result<(), Failure> {
    let features = "mft-kernels/cuda,mft-std/cuda,mft-benches/cuda";
    phases.cargo(
        "clippy --features cuda",
        &[
            "clippy",
            "-p",
            "mft-kernels",
            "-p",
            "mft-std",
            "-p",
            "mft-benches",
            "--all-targets",
            "--features",
            features,
            "--",
            "-D",
            "warnings",
        ],
        &[],
    )?;
    phases.cargo(
        "cuda offload logic (no GPU)",
        &["test", "-p", "mft-kernels", "--features", "cuda", "--lib", "--", "cuda::"],
        &[],
    )?;
    phases.cargo(
        "--device cuda falls back to the CPU",
        &["test", "-p", "mft-std", "--features", "cuda", "--lib", "--test", "device", "--", "cuda"],
        &[],
    )
}

fn host_tests(phases: &mut Phases, filter: &[String]) -> Result<(), Failure> {
    // mft-benches has no tests; building it for a test run would compile the peers (faer, gemm,
    // matrixmultiply) for nothing. clippy --all-targets still checks it.
    let mut args = vec!["test", "--workspace", "--exclude", "mft-benches"];
    if !filter.is_empty() {
        args.push("--");
        args.extend(filter.iter().map(String::as_str));
    }
    phases.cargo("host tests", &args, &[])
}

fn no_std_builds(phases: &mut Phases) -> Result<(), Failure> {
    for target in NO_STD_TARGETS {
        let mut args = vec!["build", "--target", target];
        for krate in NO_STD_CRATES {
            args.extend(["-p", krate]);
        }
        phases.cargo(&format!("no_std build {target}"), &args, &[])?;
    }
    Ok(())
}
