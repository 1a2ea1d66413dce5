//! A fake `adb` for testing `cargo xtask bench --device` without a phone. The qemu device
//! profile (and the tests of adb's failures) put it first on PATH under the name `adb`.
//!
//! It answers `version`, `devices`, `-s SERIAL`, `push`, `pull` and `shell` against a
//! directory standing in for each phone, `$FAKE_ADB_ROOT/<serial>/`: absolute paths under
//! `/data/`, `/sdcard/` and `/proc/{cpuinfo,meminfo}` in a shell command are rewritten into it,
//! the command runs in the host's `sh` with the phone's `system/bin` first on PATH, and an
//! aarch64 executable it runs (a path in command position) runs through `qemu-aarch64` (with
//! the caller's `QEMU_CPU`).
//! A fresh phone gets a `/proc/cpuinfo` that lists the features of the CPU qemu emulates
//! (qemu's user mode shows the host's own cpuinfo), the host's `/proc/meminfo`, a `getprop`,
//! and under `/data/local/tmp/fake-power/sys/class/` a fake battery (discharging at a constant
//! 4.0 V × 0.5 A = 2 W, 80 %) and one thermal zone at 41 °C, for `--power-root` (the phone's
//! real `/sys` is the host's: qemu does not redirect it).
//!
//! Environment:
//! - `FAKE_ADB_ROOT` (required): the directory of the fake phones;
//! - `FAKE_ADB_DEVICES`: `SERIAL:STATE,…` (default `qemu-aarch64-1:device`; empty: no device;
//!   states as adb prints them: `device`, `unauthorized`, `offline`);
//! - `FAKE_ADB_CPUINFO`: a file to serve as `/proc/cpuinfo` instead of the generated one;
//! - `FAKE_ADB_LOG`: a file that gets one line per invocation (`adb ARGS`).
//!
//! Its messages for a missing, ambiguous or unauthorized device are adb's own.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};

const DEFAULT_DEVICES: &str = "qemu-aarch64-1:device";

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if let Some(log) = std::env::var_os("FAKE_ADB_LOG") {
        let line = format!("adb {}\n", args.join(" "));
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(log)
            .and_then(|mut f| f.write_all(line.as_bytes()));
    }
    match run(&args) {
        Ok(code) => code,
        Err(message) => {
            eprintln!("{message}");
            ExitCode::from(1)
        }
    }
}

/// `(serial, state)` of every fake device.
fn devices() -> Vec<(String, String)> {
    let list = std::env::var("FAKE_ADB_DEVICES").unwrap_or_else(|_| DEFAULT_DEVICES.into());
    list.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once(':') {
            Some((serial, state)) => (serial.trim().to_string(), state.trim().to_string()),
            None => (item.trim().to_string(), "device".to_string()),
        })
        .collect()
}

fn run(args: &[String]) -> Result<ExitCode, String> {
    let (serial, rest) = match args {
        [flag, serial, rest @ ..] if flag == "-s" => (Some(serial.as_str()), rest),
        _ => (None, args),
    };
    let Some((command, operands)) = rest.split_first() else {
        return Err("adb: usage: adb [-s SERIAL] COMMAND (fake adb of mft)".into());
    };
    match command.as_str() {
        "version" => {
            println!("Android Debug Bridge version 1.0.41 (the fake adb of mft's xtask)");
            return Ok(ExitCode::SUCCESS);
        }
        "devices" => {
            println!("List of devices attached");
            for (serial, state) in devices() {
                println!("{serial}\t{state}");
            }
            println!();
            return Ok(ExitCode::SUCCESS);
        }
        "kill-server" | "start-server" => return Ok(ExitCode::SUCCESS),
        _ => {}
    }
    let serial = choose(serial)?;
    let root = std::env::var_os("FAKE_ADB_ROOT")
        .map(PathBuf::from)
        .ok_or("fake adb: FAKE_ADB_ROOT is not set (the directory of the fake phones)")?;
    let phone = root.join(&serial);
    prepare(&phone)?;
    match (command.as_str(), operands) {
        ("push", [local, remote]) => push(Path::new(local), &on_phone(&phone, remote)),
        ("pull", [remote, local]) => pull(&on_phone(&phone, remote), remote, Path::new(local)),
        ("shell", words) if !words.is_empty() => shell(&phone, &words.join(" ")),
        ("shell", _) => Err("fake adb: an interactive shell is not supported".into()),
        (other, _) => Err(format!("fake adb: `{other}` with these operands is not supported")),
    }
}

/// The device the command goes to, as adb chooses it.
fn choose(serial: Option<&str>) -> Result<String, String> {
    let all = devices();
    let (serial, state) = match serial {
        Some(s) => {
            all.iter().find(|(d, _)| d == s).ok_or(format!("adb: device '{s}' not found"))?
        }
        None => match all.as_slice() {
            [] => return Err("adb: no devices/emulators found".into()),
            [one] => one,
            _ => return Err("adb: more than one device/emulator".into()),
        },
    };
    match state.as_str() {
        "device" => Ok(serial.clone()),
        "unauthorized" => {
            Err("adb: device unauthorized.\nThis adb server's $ADB_VENDOR_KEYS is not set\n\
                               Try 'adb kill-server' if that seems wrong.\n\
                               Otherwise check for a confirmation dialog on your device."
                .into())
        }
        "offline" => Err("adb: device offline".into()),
        other => Err(format!("adb: device '{serial}' is {other}")),
    }
}

/// A phone's path on this machine.
fn on_phone(phone: &Path, remote: &str) -> PathBuf {
    phone.join(remote.trim_start_matches('/'))
}

/// Makes a fresh phone: its directories, `/proc/cpuinfo`, `/proc/meminfo` and `getprop`.
fn prepare(phone: &Path) -> Result<(), String> {
    let io = |path: &Path, e: std::io::Error| format!("fake adb: {}: {e}", path.display());
    for dir in ["data/local/tmp", "sdcard", "proc", "system/bin"] {
        let dir = phone.join(dir);
        fs::create_dir_all(&dir).map_err(|e| io(&dir, e))?;
    }
    let cpuinfo = phone.join("proc/cpuinfo");
    match std::env::var_os("FAKE_ADB_CPUINFO") {
        Some(file) => {
            fs::copy(&file, &cpuinfo).map_err(|e| io(Path::new(&file), e))?;
        }
        None if !cpuinfo.exists() => {
            fs::write(&cpuinfo, generated_cpuinfo()).map_err(|e| io(&cpuinfo, e))?;
        }
        None => {}
    }
    let meminfo = phone.join("proc/meminfo");
    if !meminfo.exists() {
        let host = fs::read_to_string("/proc/meminfo").unwrap_or_default();
        fs::write(&meminfo, host).map_err(|e| io(&meminfo, e))?;
    }
    let power = phone.join("data/local/tmp/fake-power/sys/class");
    let nodes: [(&str, &str); 8] = [
        ("power_supply/battery/type", "Battery"),
        ("power_supply/battery/status", "Discharging"),
        ("power_supply/battery/capacity", "80"),
        ("power_supply/battery/voltage_now", "4000000"),
        // Negative while discharging, as on many Android kernels.
        ("power_supply/battery/current_now", "-500000"),
        ("power_supply/battery/temp", "300"),
        ("thermal/thermal_zone0/type", "fake-cpu"),
        ("thermal/thermal_zone0/temp", "41000"),
    ];
    for (node, value) in nodes {
        let path = power.join(node);
        if !path.exists() {
            let dir = path.parent().expect("a node has a directory");
            fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
            fs::write(&path, format!("{value}\n")).map_err(|e| io(&path, e))?;
        }
    }
    let getprop = phone.join("system/bin/getprop");
    if !getprop.exists() {
        let script = "#!/bin/sh\ncase \"$1\" in\n  ro.product.model) echo 'fake phone (qemu-aarch64)' ;;\n  *) echo ;;\nesac\n";
        fs::write(&getprop, script).map_err(|e| io(&getprop, e))?;
        make_executable(&getprop)?;
    }
    Ok(())
}

#[cfg(unix)]
fn make_executable(path: &Path) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    fs::set_permissions(path, fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("fake adb: {}: {e}", path.display()))
}

#[cfg(not(unix))]
fn make_executable(_path: &Path) -> Result<(), String> {
    Ok(())
}

/// A `/proc/cpuinfo` in the arm64 kernel's layout for the CPU `QEMU_CPU` names: `max` (as
/// the qemu profile uses it, with SVE2) or a NEON-only Cortex-A76; one block per host core.
fn generated_cpuinfo() -> String {
    let cpu = std::env::var("QEMU_CPU").unwrap_or_else(|_| "max".into());
    let (features, part) = if cpu.starts_with("cortex-a76") {
        (
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
            "0xd0b",
        )
    } else {
        (
            "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm jscvt fcma \
             lrcpc dcpop sha3 sm3 sm4 asimddp sha512 sve asimdfhm dit uscat ilrcpc flagm ssbs sb paca \
             pacg dcpodp sve2 sveaes svepmull svebitperm svesha3 svesm4 flagm2 frint svei8mm svef32mm \
             svef64mm svebf16 i8mm bf16 dgh rng bti",
            "0x051",
        )
    };
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    (0..cores)
        .map(|i| {
            format!(
                "processor\t: {i}\nBogoMIPS\t: 2000.00\nFeatures\t: {features}\nCPU implementer\t: 0x00\n\
                 CPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: {part}\nCPU revision\t: 0\n\n"
            )
        })
        .collect()
}

fn push(local: &Path, target: &Path) -> Result<ExitCode, String> {
    let target = if target.is_dir() {
        target.join(local.file_name().unwrap_or_default())
    } else {
        target.to_path_buf()
    };
    if let Some(parent) = target.parent() {
        fs::create_dir_all(parent).map_err(|e| format!("adb: error: {}: {e}", parent.display()))?;
    }
    let bytes = fs::copy(local, &target)
        .map_err(|e| format!("adb: error: cannot push '{}': {e}", local.display()))?;
    println!("{}: 1 file pushed, 0 skipped. ({bytes} bytes)", local.display());
    Ok(ExitCode::SUCCESS)
}

fn pull(source: &Path, remote: &str, local: &Path) -> Result<ExitCode, String> {
    if !source.is_file() {
        return Err(format!(
            "adb: error: failed to stat remote object '{remote}': No such file or directory"
        ));
    }
    let target = if local.is_dir() {
        local.join(source.file_name().unwrap_or_default())
    } else {
        local.to_path_buf()
    };
    let bytes = fs::copy(source, &target)
        .map_err(|e| format!("adb: error: cannot create '{}': {e}", target.display()))?;
    println!("{remote}: 1 file pulled, 0 skipped. ({bytes} bytes)");
    Ok(ExitCode::SUCCESS)
}

/// Whether `path` is an aarch64 ELF executable.
fn is_aarch64_elf(path: &Path) -> bool {
    let Ok(bytes) = fs::read(path).map(|b| b.get(..20).map(<[u8]>::to_vec)) else { return false };
    // e_ident starts with \x7fELF; e_machine (bytes 18-19, little-endian) is 183 for aarch64.
    bytes.is_some_and(|h| h.starts_with(b"\x7fELF") && h[18] == 183 && h[19] == 0)
}

/// Runs `command` as the phone's shell would, with its paths inside the fake phone.
fn shell(phone: &Path, command: &str) -> Result<ExitCode, String> {
    let phone_text = phone.to_string_lossy();
    let split: Vec<&str> = command.split(' ').collect();
    let words: Vec<String> = split
        .iter()
        .enumerate()
        .map(|(i, word)| {
            let mapped = ["/data/", "/sdcard/", "/proc/cpuinfo", "/proc/meminfo"]
                .iter()
                .find(|prefix| word.starts_with(**prefix))
                .map(|_| format!("{phone_text}{word}"));
            // A word the shell runs: the first, or the first after an operator or keyword.
            let runs =
                i == 0 || ["&&", "||", ";", "|", "then", "else", "do"].contains(&split[i - 1]);
            match mapped {
                Some(path) if runs && is_aarch64_elf(Path::new(&path)) => {
                    format!("qemu-aarch64 {path}")
                }
                Some(path) => path,
                None => word.to_string(),
            }
        })
        .collect();
    let path = match std::env::var_os("PATH") {
        Some(rest) => {
            let mut p = phone.join("system/bin").into_os_string();
            p.push(":");
            p.push(rest);
            p
        }
        None => phone.join("system/bin").into_os_string(),
    };
    let status = Command::new("sh")
        .arg("-c")
        .arg(words.join(" "))
        .current_dir(phone)
        .env("PATH", path)
        .status()
        .map_err(|e| format!("fake adb: could not run sh: {e}"))?;
    // adb's shell protocol passes the command's exit status on.
    Ok(ExitCode::from(status.code().map_or(1, |c| c.clamp(0, 255) as u8)))
}
