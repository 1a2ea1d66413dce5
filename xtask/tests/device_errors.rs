//! `cargo xtask bench --device pixel8` before anything is built: with the repository's fake
//! adb first on PATH (or no adb at all), each way of not having a usable phone must stop the
//! run with its own clear message and a failing exit status, and a phone whose
//! `/proc/cpuinfo` is not a Pixel 8's must be warned about.
//!
//! (The whole pipeline, build and run included, is CI's `phone bench pipeline` phase:
//! `device::pipeline_check`.)

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A scratch directory with `bin/adb` (the fake adb) and `phones/` for its fake phones.
struct Scratch {
    dir: PathBuf,
}

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("xtask-device-{name}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(dir.join("bin")).unwrap();
        fs::create_dir_all(dir.join("empty")).unwrap();
        fs::copy(env!("CARGO_BIN_EXE_fake-adb"), dir.join("bin").join("adb")).unwrap();
        Scratch { dir }
    }

    /// Runs `xtask ARGS` with PATH = `path` (and the system's tools after it); its exit
    /// success and stderr.
    fn xtask(
        &self,
        path: &Path,
        devices: &str,
        args: &[&str],
        extra: &[(&str, &Path)],
    ) -> (bool, String) {
        let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
            .args(args)
            .env("PATH", format!("{}:/usr/bin:/bin", path.display()))
            .env("FAKE_ADB_ROOT", self.dir.join("phones"))
            .env("FAKE_ADB_DEVICES", devices)
            .envs(extra.iter().map(|(k, v)| (k, v)))
            .output()
            .unwrap();
        (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
    }

    fn bin(&self) -> PathBuf {
        self.dir.join("bin")
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.dir);
    }
}

/// Fails unless the run failed and said `needle`.
fn fails_saying(result: (bool, String), needle: &str) {
    let (ok, stderr) = result;
    assert!(!ok, "the run succeeded; stderr:\n{stderr}");
    assert!(stderr.contains(needle), "stderr does not say `{needle}`:\n{stderr}");
}

#[test]
fn without_adb_the_run_says_how_to_get_it() {
    let s = Scratch::new("no-adb");
    // Only an empty directory: no adb anywhere on PATH (the system directories hold none here,
    // which the check below makes sure of).
    assert!(!Path::new("/usr/bin/adb").exists() && !Path::new("/bin/adb").exists());
    fails_saying(
        s.xtask(&s.dir.join("empty"), "A:device", &["bench", "--device", "pixel8"], &[]),
        "adb is not on PATH: install Android's platform-tools",
    );
}

#[test]
fn no_device_several_devices_and_an_unknown_serial_are_each_explained() {
    let s = Scratch::new("choice");
    let pixel = ["bench", "--device", "pixel8"];
    fails_saying(
        s.xtask(&s.bin(), "", &pixel, &[]),
        "no device attached (`adb devices` lists none)",
    );
    fails_saying(
        s.xtask(&s.bin(), "A:device,B:device", &pixel, &[]),
        "several devices attached: A (device), B (device); choose one with --serial SERIAL",
    );
    fails_saying(
        s.xtask(&s.bin(), "A:device", &["bench", "--device", "pixel8", "--serial", "Z"], &[]),
        "device Z is not attached; `adb devices` lists: A (device)",
    );
}

#[test]
fn an_unauthorized_or_offline_device_is_named_with_what_to_do() {
    let s = Scratch::new("auth");
    fails_saying(
        s.xtask(&s.bin(), "A:unauthorized", &["bench", "--device", "pixel8"], &[]),
        "device A is unauthorized: unlock it and accept the \"Allow USB debugging?\" prompt",
    );
    fails_saying(
        s.xtask(
            &s.bin(),
            "A:device,B:unauthorized",
            &["bench", "--device", "pixel8", "--serial", "B"],
            &[],
        ),
        "device B is unauthorized",
    );
    fails_saying(
        s.xtask(&s.bin(), "A:offline", &["bench", "--device", "pixel8"], &[]),
        "device A is offline",
    );
}

#[test]
fn a_phone_without_the_profiles_isa_is_warned_about_before_the_run() {
    let s = Scratch::new("isa");
    // A NEON-only phone with four Cortex-A76 cores, in the arm64 kernel's layout.
    let cpuinfo = s.dir.join("cpuinfo");
    let block = |i: usize| {
        format!(
            "processor\t: {i}\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp \
             asimdhp cpuid asimdrdm lrcpc dcpop asimddp\nCPU implementer\t: 0x41\nCPU part\t: 0xd0b\n\n"
        )
    };
    fs::write(&cpuinfo, (0..4).map(block).collect::<String>()).unwrap();
    // A --model directory without a checkpoint stops the run after the checks, before the
    // build, so that this test stays fast.
    let not_a_model = s.dir.join("empty");
    let args = ["bench", "--device", "pixel8", "--model", not_a_model.to_str().unwrap()];
    let (ok, stderr) = s.xtask(&s.bin(), "P8:device", &args, &[("FAKE_ADB_CPUINFO", &cpuinfo)]);
    assert!(!ok, "{stderr}");
    assert!(
        stderr.contains(
            "warning: the device's /proc/cpuinfo lacks i8mm, bf16, sve, sve2 that a pixel8 has"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("CPU parts are [0xd0b]"), "{stderr}");
    assert!(stderr.contains("no config.json there"), "{stderr}");

    // The same phone with a Pixel 8's cpuinfo: no ISA warning.
    let pixel = s.dir.join("cpuinfo-pixel8");
    let block = |(i, part): (usize, &str)| {
        format!(
            "processor\t: {i}\nFeatures\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp \
             asimdhp cpuid asimdrdm jscvt fcma lrcpc dcpop sha3 asimddp sha512 sve asimdfhm sve2 \
             svei8mm svebf16 i8mm bf16 bti\nCPU implementer\t: 0x41\nCPU part\t: {part}\n\n"
        )
    };
    let parts = ["0xd46", "0xd46", "0xd46", "0xd46", "0xd4d", "0xd4d", "0xd4d", "0xd4d", "0xd4e"];
    fs::write(&pixel, parts.into_iter().enumerate().map(block).collect::<String>()).unwrap();
    let (ok, stderr) = s.xtask(&s.bin(), "P8:device", &args, &[("FAKE_ADB_CPUINFO", &pixel)]);
    assert!(!ok && stderr.contains("no config.json there"), "{stderr}");
    assert!(!stderr.contains("lacks"), "{stderr}");
    assert!(!stderr.contains("CPU parts"), "{stderr}");
}
