//! Device profiles for `cargo xtask bench --device NAME`: how to build `mft-bench` for the
//! device, how to reach it, which cores to pin, and what the device should be (ISA features,
//! CPU parts, memory), checked before each run.
//!
//! Core numbers follow the kernel's order on each SoC: little cores first, the prime core last.

/// How the benchmark binary reaches the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    /// `adb push`, `adb shell`, `adb pull` to a phone.
    Adb,
    /// The same, through the repository's fake `adb` (`xtask/src/bin/fake-adb.rs`), which runs
    /// the pushed aarch64 binary under qemu-aarch64 in a directory standing in for the phone.
    FakeAdb,
    /// This machine: the binary runs here (the host, or a board running xtask itself).
    Local,
}

/// What the binary is built for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Build {
    /// A static executable for this Rust target, linked with rust-lld (no NDK, no libc on the
    /// device): it runs from `/data/local/tmp`.
    Static(&'static str),
    /// This machine's own target.
    Native,
}

/// One device profile.
#[derive(Debug, Clone, Copy)]
pub struct Profile {
    /// The name on the command line.
    pub name: &'static str,
    /// What the device is.
    pub about: &'static str,
    pub transport: Transport,
    pub build: Build,
    /// The architecture the device must have (`std::env::consts::ARCH` names); `None`: any.
    pub arch: Option<&'static str>,
    /// Cores the benchmark is pinned to (empty: no pinning); the threads are one per core.
    pub cpus: &'static [usize],
    /// The core of the one-thread kernel rows (the fastest).
    pub single_cpu: Option<usize>,
    /// Threads when no cores are pinned; `None`: what the device offers.
    pub threads: Option<usize>,
    /// Features `/proc/cpuinfo` must list (Linux names).
    pub features: &'static [&'static str],
    /// Features it must not list (a profile of a SoC whose firmware disables them).
    pub absent: &'static [&'static str],
    /// SVE vector length in bits, when the device has SVE.
    pub sve_bits: Option<usize>,
    /// The `CPU part` values of its cores (MIDR part numbers), each core type once.
    pub cpu_parts: &'static [(&'static str, &'static str)],
    /// Memory, bytes.
    pub memory_bytes: Option<u64>,
    /// Tiny shapes and few steps unless `--full`.
    pub quick_by_default: bool,
    /// `QEMU_CPU` for the fake device.
    pub qemu_cpu: Option<&'static str>,
}

const GIB: u64 = 1 << 30;

/// Every profile.
pub const PROFILES: [Profile; 5] = [
    Profile {
        name: "pixel8",
        about: "Google Pixel 8: Tensor G3 (1× Cortex-X3, 4× A715, 4× A510), SVE2 at 128 bits, 8 GB",
        transport: Transport::Adb,
        build: Build::Static("aarch64-unknown-linux-musl"),
        arch: Some("aarch64"),
        // cpu0-3 A510, cpu4-7 A715, cpu8 X3: the A715s and the X3.
        cpus: &[4, 5, 6, 7, 8],
        single_cpu: Some(8),
        threads: None,
        features: &["asimd", "asimddp", "i8mm", "bf16", "sve", "sve2"],
        absent: &[],
        sve_bits: Some(128),
        cpu_parts: &[("0xd46", "Cortex-A510"), ("0xd4d", "Cortex-A715"), ("0xd4e", "Cortex-X3")],
        memory_bytes: Some(8 * GIB),
        quick_by_default: false,
        qemu_cpu: None,
    },
    Profile {
        name: "galaxy-s23",
        about: "Samsung Galaxy S23: Snapdragon 8 Gen 2 (1× Cortex-X3, 2× A715, 2× A710, 3× A510), \
                NEON (its firmware leaves SVE off), 8 GB",
        transport: Transport::Adb,
        build: Build::Static("aarch64-unknown-linux-musl"),
        arch: Some("aarch64"),
        // cpu0-2 A510, cpu3-4 A715, cpu5-6 A710, cpu7 X3: all but the A510s.
        cpus: &[3, 4, 5, 6, 7],
        single_cpu: Some(7),
        threads: None,
        features: &["asimd", "asimddp", "i8mm", "bf16"],
        absent: &["sve"],
        sve_bits: None,
        cpu_parts: &[
            ("0xd46", "Cortex-A510"),
            ("0xd47", "Cortex-A710"),
            ("0xd4d", "Cortex-A715"),
            ("0xd4e", "Cortex-X3"),
        ],
        memory_bytes: Some(8 * GIB),
        quick_by_default: false,
        qemu_cpu: None,
    },
    Profile {
        name: "jetson-orin-nano",
        about: "NVIDIA Jetson Orin Nano 8 GB: 6× Cortex-A78AE (ARMv8.2, NEON with dot product); \
                run xtask on the board itself",
        transport: Transport::Local,
        build: Build::Native,
        arch: Some("aarch64"),
        cpus: &[0, 1, 2, 3, 4, 5],
        single_cpu: Some(0),
        threads: None,
        features: &["asimd", "asimddp", "fphp", "asimdhp"],
        absent: &["sve"],
        sve_bits: None,
        cpu_parts: &[("0xd42", "Cortex-A78AE")],
        memory_bytes: Some(8 * GIB),
        quick_by_default: false,
        qemu_cpu: None,
    },
    Profile {
        name: "host",
        about: "this machine, as it is: no pinning, every core, no expectations",
        transport: Transport::Local,
        build: Build::Native,
        arch: None,
        cpus: &[],
        single_cpu: None,
        threads: None,
        features: &[],
        absent: &[],
        sve_bits: None,
        cpu_parts: &[],
        memory_bytes: None,
        quick_by_default: false,
        qemu_cpu: None,
    },
    Profile {
        name: "qemu",
        about: "the phone pipeline without a phone: the fake adb, the static aarch64 binary under \
                qemu-aarch64 with SVE at 128 bits like the pixel8 (emulated: its speed means nothing)",
        transport: Transport::FakeAdb,
        build: Build::Static("aarch64-unknown-linux-musl"),
        arch: Some("aarch64"),
        cpus: &[],
        single_cpu: None,
        threads: Some(2),
        features: &["asimd", "sve", "sve2"],
        absent: &[],
        sve_bits: Some(128),
        cpu_parts: &[],
        memory_bytes: None,
        quick_by_default: true,
        qemu_cpu: Some("max,sve-default-vector-length=16"),
    },
];

impl Profile {
    /// The profile called `name`.
    pub fn find(name: &str) -> Result<&'static Profile, String> {
        PROFILES.iter().find(|p| p.name == name).ok_or_else(|| {
            format!("unknown device `{name}`; the device profiles are:{}", Profile::list())
        })
    }

    /// Every profile, one per line, for messages.
    pub fn list() -> String {
        PROFILES.iter().map(|p| format!("\n  {:<17} {}", p.name, p.about)).collect()
    }

    /// The threads the benchmark uses: one per pinned core, or the profile's count.
    pub fn threads(&self) -> Option<usize> {
        if self.cpus.is_empty() { self.threads } else { Some(self.cpus.len()) }
    }

    /// The pinned cores as `mft-bench --cpus` takes them (`4,5,6,7,8`).
    pub fn cpu_list(&self) -> String {
        self.cpus.iter().map(usize::to_string).collect::<Vec<_>>().join(",")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn profiles_are_consistent() {
        for p in &PROFILES {
            assert!(Profile::find(p.name).is_ok());
            if let Some(single) = p.single_cpu {
                assert!(p.cpus.contains(&single), "{}: the single core is not pinned", p.name);
            }
            assert_eq!(p.sve_bits.is_some(), p.features.contains(&"sve"), "{}", p.name);
            assert!(p.features.iter().all(|f| !p.absent.contains(f)), "{}", p.name);
            if p.transport != Transport::Local {
                assert_eq!(p.build, Build::Static("aarch64-unknown-linux-musl"), "{}", p.name);
            }
        }
        let pixel = Profile::find("pixel8").unwrap();
        assert_eq!(pixel.threads(), Some(5));
        assert_eq!(pixel.cpu_list(), "4,5,6,7,8");
        let unknown = Profile::find("pixel9").unwrap_err();
        assert!(unknown.contains("`pixel9`") && unknown.contains("galaxy-s23"), "{unknown}");
    }
}
