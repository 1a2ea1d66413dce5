//! aarch64 tests under qemu-aarch64 user mode: the workspace tests are cross-built once (release:
//! qemu runs debug SIMD code far too slowly) and run once per emulated CPU.
//!
//! Each run tells the tests which CPU it emulates through `MFT_EXPECT_SVE_BITS` (0 for the
//! NEON-only core), so a test can fail if qemu did not give the vector length asked for.

use crate::phase::{Failure, Phases};

/// The cross target; its linker and runner are set in `.cargo/config.toml`.
pub const TARGET: &str = "aarch64-unknown-linux-gnu";
/// Where Debian's cross libc lives (the runner passes it to qemu with `-L`).
pub const SYSROOT: &str = "/usr/aarch64-linux-gnu";

/// One emulated CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QemuCpu {
    /// qemu's `max` CPU with SVE at this vector length in bits.
    Sve(usize),
    /// A Cortex-A76: NEON, no SVE.
    NeonOnly,
}

impl QemuCpu {
    /// SVE at 128, 256 and 512 bits, then the NEON-only core.
    pub fn all() -> Vec<QemuCpu> {
        vec![QemuCpu::Sve(128), QemuCpu::Sve(256), QemuCpu::Sve(512), QemuCpu::NeonOnly]
    }

    /// The value of `QEMU_CPU`.
    fn qemu_cpu(self) -> String {
        match self {
            QemuCpu::Sve(bits) => format!("max,sve-default-vector-length={}", bits / 8),
            QemuCpu::NeonOnly => "cortex-a76".into(),
        }
    }

    fn label(self) -> String {
        match self {
            QemuCpu::Sve(bits) => format!("aarch64 tests under qemu, SVE {bits}-bit"),
            QemuCpu::NeonOnly => "aarch64 tests under qemu, NEON-only (cortex-a76)".into(),
        }
    }

    fn expected_sve_bits(self) -> usize {
        match self {
            QemuCpu::Sve(bits) => bits,
            QemuCpu::NeonOnly => 0,
        }
    }
}

/// Cross-build the tests, then run them once per CPU in `cpus`.
pub fn run(phases: &mut Phases, cpus: &[QemuCpu], filter: &[String]) -> Result<(), Failure> {
    // xtask's own tests exercise the host tooling, not the library, and mft-benches has none (its
    // peers would only slow the cross-build), so neither is cross-run.
    let base = [
        "test",
        "--workspace",
        "--exclude",
        "xtask",
        "--exclude",
        "mft-benches",
        "--release",
        "--target",
        TARGET,
        "--lib",
        "--bins",
        "--tests",
    ];
    let mut build: Vec<&str> = base.to_vec();
    build.push("--no-run");
    phases.cargo(&format!("cross-build tests for {TARGET}"), &build, &[])?;
    for &cpu in cpus {
        let mut args: Vec<&str> = base.to_vec();
        if !filter.is_empty() {
            args.push("--");
            args.extend(filter.iter().map(String::as_str));
        }
        let envs = [
            ("QEMU_CPU", cpu.qemu_cpu()),
            ("MFT_EXPECT_SVE_BITS", cpu.expected_sve_bits().to_string()),
        ];
        phases.cargo(&cpu.label(), &args, &envs)?;
    }
    Ok(())
}
