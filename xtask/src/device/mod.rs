//! `cargo xtask bench --device NAME`: builds `mft-bench` for a device profile, puts it on the
//! device (adb, or this machine), runs it there, brings its JSON back, checks it, keeps it
//! under `TARGET/bench-runs/NAME/`, and prints a table with the change against the previous
//! run of the same device.
//!
//! - [`profile`]: the devices (pixel8, galaxy-s23, jetson-orin-nano, host, qemu);
//! - [`adb`]: finding adb and the device, with one clear line per failure;
//! - [`check`]: the device's ISA, CPU parts and memory against its profile;
//! - [`model`]: `--model DIR` pushed once per content hash;
//! - [`result`]: the `mft-bench/1` document checked field by field;
//! - [`report`], [`store`]: the table and the stored runs; [`json`]: reading and writing JSON;
//! - [`pipeline_check`]: CI's end-to-end run of the qemu profile through the fake adb
//!   (`xtask/src/bin/fake-adb.rs`), with a checkpoint pushed once and then found cached.

pub mod adb;
pub mod check;
pub mod json;
pub mod model;
pub mod profile;
pub mod report;
pub mod result;
pub mod store;

use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use adb::Adb;
use json::Value;
use profile::{Build, Profile, Transport};

use crate::phase::{Failure, workspace_root};

/// Where the benchmark lives on a phone: `/data/local/tmp` is the one place adb's shell user
/// may write and execute.
pub const DEVICE_DIR: &str = "/data/local/tmp/mft";

/// `cargo xtask bench --device NAME [flags]`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceBench {
    pub device: String,
    pub serial: Option<String>,
    /// `kernels`, `train` or `all`.
    pub suite: String,
    pub model: Option<PathBuf>,
    /// `--quick` / `--full`; `None`: the profile's default.
    pub quick: Option<bool>,
    pub threads: Option<usize>,
    pub steps: Option<usize>,
    /// Print the stored document on stdout.
    pub json: bool,
    /// Where the benchmark reads the battery and thermal zones (`DIR/sys/class/…`, a path on
    /// the device); `None`: `/`.
    pub power_root: Option<String>,
}

impl DeviceBench {
    /// The defaults for `device`.
    pub fn new(device: &str) -> DeviceBench {
        DeviceBench {
            device: device.into(),
            serial: None,
            suite: "all".into(),
            model: None,
            quick: None,
            threads: None,
            steps: None,
            json: false,
            power_root: None,
        }
    }
}

/// What a finished run left.
#[derive(Debug)]
pub struct Outcome {
    /// The stored document.
    pub doc: Value,
    /// Where it is stored.
    pub stored: PathBuf,
    /// The stored run it was compared with.
    pub previous: Option<String>,
    /// With `--model` on a device: whether the checkpoint was pushed (false: it was cached).
    pub model_pushed: Option<bool>,
}

/// Settings of the fake adb for the qemu profile (the CI check gives its own).
#[derive(Debug, Clone, Default)]
pub struct FakeSetup {
    /// The directory standing in for the phone; default `TARGET/fake-adb/phone`.
    pub root: Option<PathBuf>,
    /// More environment for the fake adb (`FAKE_ADB_LOG`, …).
    pub envs: Vec<(String, OsString)>,
}

/// `cargo xtask bench --device NAME`.
pub fn run(request: &DeviceBench) -> Result<(), Failure> {
    bench(request, &FakeSetup::default()).map(drop).map_err(Failure)
}

/// The cargo target directory.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// The whole pipeline.
pub fn bench(request: &DeviceBench, fake: &FakeSetup) -> Result<Outcome, String> {
    let profile = Profile::find(&request.device)?;
    let quick = request.quick.unwrap_or(profile.quick_by_default);
    let threads = request.threads.or(profile.threads());
    let runs_dir = target_dir().join("bench-runs").join(profile.name);
    let mut args: Vec<String> =
        vec!["--profile".into(), profile.name.into(), "--suite".into(), request.suite.clone()];
    if quick {
        args.push("--quick".into());
    }
    if let Some(threads) = threads {
        args.extend(["--threads".into(), threads.to_string()]);
    }
    if !profile.cpus.is_empty() {
        args.extend(["--cpus".into(), profile.cpu_list()]);
    }
    if let Some(cpu) = profile.single_cpu {
        args.extend(["--single-cpu".into(), cpu.to_string()]);
    }
    if let Some(steps) = request.steps {
        args.extend(["--steps".into(), steps.to_string()]);
    }
    if let Some(root) = &request.power_root {
        args.extend(["--power-root".into(), root.clone()]);
    }
    let (raw, mut device, model_pushed) = match profile.transport {
        Transport::Adb | Transport::FakeAdb => on_adb_device(profile, request, fake, &mut args)?,
        Transport::Local => on_this_machine(profile, request, &runs_dir, &mut args)?,
    };
    let mut doc = json::parse(&raw).map_err(|e| format!("the result of mft-bench: {e}"))?;
    let expect = result::Expect {
        profile: profile.name.into(),
        suite: request.suite.clone(),
        quick,
        threads,
    };
    result::validate(&doc, &expect)
        .map_err(|e| format!("the result of mft-bench is wrong: {e}"))?;
    let mut warnings: Vec<Value> =
        device.get("warnings").and_then(Value::as_array).map(<[Value]>::to_vec).unwrap_or_default();
    for warning in check::runtime_warnings(profile, &doc) {
        eprintln!("xtask: warning: {warning}");
        warnings.push(Value::str(warning));
    }
    device.set("warnings", Value::Array(warnings));
    device.set("commit", Value::opt_str(git_commit()));
    doc.set("device", device);
    let serial = doc.get("device").and_then(|d| d.get("serial")).and_then(Value::as_str);
    let serial = serial.unwrap_or("local").to_string();
    let previous = store::previous(&runs_dir, &doc);
    let stored = store::save(&runs_dir, &doc, &serial)?;
    let previous_view = previous.as_ref().map(|(name, d)| (d, name.as_str()));
    eprintln!();
    eprint!("{}", report::table(&doc, previous_view));
    eprintln!("stored as {}", stored.display());
    if request.json {
        print!("{}", doc.pretty());
    }
    Ok(Outcome { doc, stored, previous: previous.map(|(name, _)| name), model_pushed })
}

/// Builds, pushes and runs over adb; the document's text, the `device` object, and whether a
/// model was pushed.
fn on_adb_device(
    profile: &Profile,
    request: &DeviceBench,
    fake: &FakeSetup,
    args: &mut Vec<String>,
) -> Result<(String, Value, Option<bool>), String> {
    let adb = match profile.transport {
        Transport::FakeAdb => fake_adb(profile, fake)?,
        _ => Adb::new(None, Vec::new()),
    };
    let version = adb.version()?;
    let serial = adb::select(&adb.devices()?, request.serial.as_deref())?;
    let adb = adb.with_serial(&serial);
    eprintln!("xtask: {} on {serial} ({version})", profile.name);

    let cpuinfo = adb.shell("cat /proc/cpuinfo").map(|t| check::parse_cpuinfo(&t));
    let mem = adb.shell("cat /proc/meminfo").ok().and_then(|t| check::parse_mem_total(&t));
    let warnings = check::device_warnings(profile, &cpuinfo, mem);
    for warning in &warnings {
        eprintln!("xtask: warning: {warning}");
    }
    let prop = |name: &str| {
        adb.shell(&format!("getprop {name}"))
            .ok()
            .map(|s| s.trim().to_string())
            .filter(|s| !s.is_empty())
    };
    let (model_name, soc) = (prop("ro.product.model"), prop("ro.soc.model"));
    if let Some(dir) = &request.model {
        model::files(dir)?;
    }

    let binary = build_bench(profile)?;
    let remote_bin = format!("{DEVICE_DIR}/mft-bench");
    let remote_out = format!("{DEVICE_DIR}/result.json");
    adb.shell(&format!("mkdir -p {DEVICE_DIR}"))?;
    eprintln!("xtask: pushing {} to {remote_bin}", binary.display());
    adb.push(&binary, &remote_bin)?;
    adb.shell(&format!("chmod 755 {remote_bin} && rm -f {remote_out}"))?;
    let mut model_pushed = None;
    if let Some(dir) = &request.model {
        let (remote, pushed) = model::push_cached(&adb, dir, &format!("{DEVICE_DIR}/models"))?;
        args.extend(["--model".into(), remote, "--model-name".into(), model_label(dir)]);
        model_pushed = Some(pushed);
    }
    args.extend(["--out".into(), remote_out.clone()]);

    let status_before = thermal_status(&adb);
    let command = format!("{remote_bin} {}", args.join(" "));
    eprintln!("xtask: adb -s {serial} shell {command}");
    adb.shell_streamed(&command).map_err(|e| format!("the benchmark failed on the device: {e}"))?;
    let status_after = thermal_status(&adb);

    let local =
        target_dir().join("bench-runs").join(format!(".pulled-{}.json", std::process::id()));
    std::fs::create_dir_all(local.parent().expect("a parent")).map_err(|e| e.to_string())?;
    adb.pull(&remote_out, &local)?;
    let raw = std::fs::read_to_string(&local).map_err(|e| format!("{}: {e}", local.display()));
    let _ = std::fs::remove_file(&local);
    let thermal = match (status_before, status_after) {
        (Ok(before), Ok(after)) => Value::Object(vec![
            ("before".into(), Value::Number(before)),
            ("after".into(), Value::Number(after)),
            ("unavailable".into(), Value::Null),
        ]),
        (Err(why), _) | (_, Err(why)) => Value::Object(vec![
            ("before".into(), Value::Null),
            ("after".into(), Value::Null),
            ("unavailable".into(), Value::str(why)),
        ]),
    };
    let device = Value::Object(vec![
        ("profile".into(), Value::str(profile.name)),
        (
            "transport".into(),
            Value::str(if profile.transport == Transport::FakeAdb {
                "fake adb (qemu-aarch64)"
            } else {
                "adb"
            }),
        ),
        ("serial".into(), Value::str(serial)),
        ("adb".into(), Value::str(version)),
        ("model".into(), Value::opt_str(model_name)),
        ("soc".into(), Value::opt_str(soc)),
        (
            "cpuinfo_features".into(),
            match &cpuinfo {
                Ok(info) => Value::Array(info.features.iter().map(Value::str).collect()),
                Err(_) => Value::Null,
            },
        ),
        ("mem_total_bytes".into(), mem.map_or(Value::Null, |m| Value::Number(m as f64))),
        ("android_thermal_status".into(), thermal),
        ("warnings".into(), Value::Array(warnings.into_iter().map(Value::str).collect())),
    ]);
    Ok((raw?, device, model_pushed))
}

/// The name a checkpoint directory goes by in results: its own name (`base` for
/// `demo/base`), with anything a shell would read specially replaced.
fn model_label(dir: &Path) -> String {
    let name = dir.canonicalize().unwrap_or_else(|_| dir.to_path_buf());
    let name = name.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned());
    name.chars()
        .map(|c| if c.is_ascii_alphanumeric() || "._-".contains(c) { c } else { '_' })
        .collect()
}

/// Android's thermal status (0 none, 1 light, 2 moderate, 3 severe, 4 critical, 5 emergency,
/// 6 shutdown) from `dumpsys thermalservice`.
fn thermal_status(adb: &Adb) -> Result<f64, String> {
    let text =
        adb.shell("dumpsys thermalservice").map_err(|e| format!("dumpsys thermalservice: {e}"))?;
    text.lines()
        .find_map(|l| l.trim().strip_prefix("Thermal Status:"))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .ok_or_else(|| "dumpsys thermalservice printed no `Thermal Status:` line".into())
}

/// Builds and runs on this machine; the document's text and the `device` object.
fn on_this_machine(
    profile: &Profile,
    request: &DeviceBench,
    runs_dir: &Path,
    args: &mut Vec<String>,
) -> Result<(String, Value, Option<bool>), String> {
    if request.serial.is_some() {
        return Err(format!("--serial is for adb devices; {} runs on this machine", profile.name));
    }
    if let Some(arch) = profile.arch
        && arch != std::env::consts::ARCH
    {
        return Err(format!(
            "the {} profile runs on the device itself (run `cargo xtask bench --device {}` \
             there); this machine is {}",
            profile.name,
            profile.name,
            std::env::consts::ARCH
        ));
    }
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo")
        .map(|t| check::parse_cpuinfo(&t))
        .map_err(|e| format!("/proc/cpuinfo: {e}"));
    let mem =
        std::fs::read_to_string("/proc/meminfo").ok().and_then(|t| check::parse_mem_total(&t));
    let warnings = check::device_warnings(profile, &cpuinfo, mem);
    for warning in &warnings {
        eprintln!("xtask: warning: {warning}");
    }
    if let Some(dir) = &request.model {
        model::files(dir)?;
    }
    let binary = build_bench(profile)?;
    std::fs::create_dir_all(runs_dir).map_err(|e| format!("{}: {e}", runs_dir.display()))?;
    let out = runs_dir.join(format!(".result-{}.json", std::process::id()));
    if let Some(model) = &request.model {
        args.extend(["--model".into(), model.to_string_lossy().into_owned()]);
        args.extend(["--model-name".into(), model_label(model)]);
    }
    args.extend(["--out".into(), out.to_string_lossy().into_owned()]);
    eprintln!("xtask: {} {}", binary.display(), args.join(" "));
    let status = Command::new(&binary)
        .args(args.iter())
        .stdin(Stdio::null())
        .stdout(std::io::stderr())
        .status()
        .map_err(|e| format!("could not run {}: {e}", binary.display()))?;
    if !status.success() {
        return Err(format!("the benchmark failed ({status})"));
    }
    let raw = std::fs::read_to_string(&out).map_err(|e| format!("{}: {e}", out.display()));
    let _ = std::fs::remove_file(&out);
    let device = Value::Object(vec![
        ("profile".into(), Value::str(profile.name)),
        ("transport".into(), Value::str("local")),
        ("serial".into(), Value::str("local")),
        ("model".into(), Value::opt_str(cpuinfo.as_ref().ok().and_then(|i| i.model_name.clone()))),
        (
            "cpuinfo_features".into(),
            match &cpuinfo {
                Ok(info) => Value::Array(info.features.iter().map(Value::str).collect()),
                Err(_) => Value::Null,
            },
        ),
        ("mem_total_bytes".into(), mem.map_or(Value::Null, |m| Value::Number(m as f64))),
        ("warnings".into(), Value::Array(warnings.into_iter().map(Value::str).collect())),
    ]);
    Ok((raw?, device, None))
}

/// Builds `mft-bench` in release for the profile; the executable.
fn build_bench(profile: &Profile) -> Result<PathBuf, String> {
    let mut args = vec!["build", "--release", "-p", "mft-benches", "--bin", "mft-bench"];
    let mut envs: Vec<(&str, &str)> = Vec::new();
    if let Build::Static(target) = profile.build {
        crate::preflight::require(&crate::preflight::static_target_tools(target))
            .map_err(|f| f.0)?;
        args.extend(["--target", target]);
        // For a crate that would compile C: Debian's cross compiler (mft-bench itself has none).
        if std::env::var_os("CC_aarch64_unknown_linux_musl").is_none() {
            envs.push(("CC_aarch64_unknown_linux_musl", "aarch64-linux-gnu-gcc"));
        }
    }
    cargo_build(&args, &envs, "mft-bench")
}

/// `cargo ARGS`, the path of the executable `name` it built.
pub fn cargo_build(args: &[&str], envs: &[(&str, &str)], name: &str) -> Result<PathBuf, String> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    eprintln!("xtask: cargo {}", args.join(" "));
    let out = Command::new(&cargo)
        .args(args)
        .arg("--message-format=json-render-diagnostics")
        .envs(envs.iter().copied())
        .current_dir(workspace_root())
        .stderr(Stdio::inherit())
        .output()
        .map_err(|e| format!("could not start {cargo}: {e}"))?;
    if !out.status.success() {
        return Err(format!("`cargo {}` failed ({})", args.join(" "), out.status));
    }
    let text = String::from_utf8_lossy(&out.stdout);
    let executable = text
        .lines()
        .filter_map(|line| json::parse(line).ok())
        .filter(|m| m.get("reason").and_then(Value::as_str) == Some("compiler-artifact"))
        .filter(|m| {
            m.get("target").and_then(|t| t.get("name")).and_then(Value::as_str) == Some(name)
        })
        .filter_map(|m| m.get("executable").and_then(Value::as_str).map(PathBuf::from))
        .next_back();
    executable.ok_or_else(|| format!("`cargo {}` built no executable {name}", args.join(" ")))
}

/// Builds the fake adb and gives an [`Adb`] that finds it first on its PATH, with the fake
/// phone's directory and the profile's emulated CPU.
fn fake_adb(profile: &Profile, fake: &FakeSetup) -> Result<Adb, String> {
    crate::preflight::require(&crate::preflight::fake_device_tools()).map_err(|f| f.0)?;
    let built = cargo_build(&["build", "-p", "xtask", "--bin", "fake-adb"], &[], "fake-adb")?;
    let bin_dir = target_dir().join("fake-adb").join("bin");
    std::fs::create_dir_all(&bin_dir).map_err(|e| format!("{}: {e}", bin_dir.display()))?;
    let adb_path = bin_dir.join(format!("adb{}", std::env::consts::EXE_SUFFIX));
    // Copied beside nothing else, so the PATH entry adds only `adb`.
    let temp = bin_dir.join(".adb.tmp");
    std::fs::copy(&built, &temp)
        .and_then(|_| std::fs::rename(&temp, &adb_path))
        .map_err(|e| format!("{}: {e}", adb_path.display()))?;
    let root = fake.root.clone().unwrap_or_else(|| target_dir().join("fake-adb").join("phone"));
    let mut path = OsString::from(&bin_dir);
    if let Some(rest) = std::env::var_os("PATH") {
        path.push(":");
        path.push(rest);
    }
    let mut envs = vec![("FAKE_ADB_ROOT".to_string(), root.into_os_string())];
    if let Some(cpu) = profile.qemu_cpu {
        envs.push(("QEMU_CPU".into(), cpu.into()));
    }
    envs.extend(fake.envs.iter().cloned());
    Ok(Adb::new(Some(path), envs))
}

/// Where the fake adb's phone has a fake battery and thermal zone (see
/// `xtask/src/bin/fake-adb.rs`): discharging at a constant 4.0 V × 0.5 A, one zone at 41 °C.
const FAKE_POWER_ROOT: &str = "/data/local/tmp/fake-power";

/// The energy and temperatures a run read from the fake phone's power tree must be what that
/// tree holds: 2 W over the timed steps, 41 °C, 80 %.
fn check_fake_power(doc: &Value) -> Result<(), String> {
    for row in doc.get("train").and_then(Value::as_array).unwrap_or(&[]) {
        let energy = row.get("energy").ok_or("a train row without energy")?;
        let joules = energy.get("joules").and_then(Value::as_f64);
        let seconds = energy.get("seconds").and_then(Value::as_f64);
        let (Some(joules), Some(seconds)) = (joules, seconds) else {
            let why = energy.get("unavailable").and_then(Value::as_str).unwrap_or("no reason");
            return Err(format!("energy not measured: {why}"));
        };
        let watts = joules / seconds;
        if (watts - 2.0).abs() > 1e-6 || seconds <= 0.0 {
            return Err(format!(
                "{joules} J over {seconds} s is {watts} W, not the fake battery's 2 W"
            ));
        }
    }
    let hottest =
        doc.get("thermal").and_then(|t| t.get("hottest_before_c")).and_then(Value::as_f64);
    if hottest != Some(41.0) {
        return Err(format!("the hottest sensor read {hottest:?} °C, not the fake zone's 41 °C"));
    }
    let level = doc
        .get("battery")
        .and_then(|b| b.get("before"))
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .and_then(|b| b.get("capacity_percent"))
        .and_then(Value::as_f64);
    if level != Some(80.0) {
        return Err(format!("the battery read {level:?} %, not the fake battery's 80 %"));
    }
    Ok(())
}

/// `git rev-parse --short HEAD`, with `-dirty` when the tree has changes.
fn git_commit() -> Option<String> {
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(workspace_root())
            .stderr(Stdio::null())
            .output()
            .ok()
            .filter(|o| o.status.success())
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    };
    let commit = git(&["rev-parse", "--short", "HEAD"])?;
    let dirty =
        git(&["status", "--porcelain", "--untracked-files=no"]).is_some_and(|s| !s.is_empty());
    Some(if dirty { format!("{commit}-dirty") } else { commit })
}

/// CI's end-to-end check of the phone pipeline without a phone: the qemu profile through the
/// fake adb on a fresh fake phone, three times: both suites; the train suite with the demo
/// checkpoint (pushed) reading the fake phone's fake battery and thermal zone
/// (`--power-root`); and again (the checkpoint found on the device by its hash, not pushed,
/// and the run compared with the one before). Each run's document is checked by [`bench`]
/// itself; the energy of the fake battery's constant 2 W must come back as 2 W.
pub fn pipeline_check() -> Result<(), String> {
    let scratch = target_dir().join("fake-adb").join(format!("ci-{}", std::process::id()));
    pipeline_runs(&scratch).map_err(|e| {
        format!("{e} (the fake phone and the fake adb's log are in {})", scratch.display())
    })?;
    let _ = std::fs::remove_dir_all(&scratch);
    Ok(())
}

fn pipeline_runs(scratch: &Path) -> Result<(), String> {
    let _ = std::fs::remove_dir_all(scratch);
    std::fs::create_dir_all(scratch).map_err(|e| format!("{}: {e}", scratch.display()))?;
    let log = scratch.join("adb.log");
    let fake = FakeSetup {
        root: Some(scratch.join("phone")),
        envs: vec![("FAKE_ADB_LOG".into(), log.clone().into_os_string())],
    };
    let all = bench(&DeviceBench::new("qemu"), &fake)?;
    let kernel_rows = all.doc.get("kernels").and_then(|k| k.get("rows")).and_then(Value::as_array);
    if kernel_rows.is_none_or(<[Value]>::is_empty) {
        return Err("the qemu run has no kernel rows".into());
    }
    // The emulator has no battery: the energy must be null with the reason, never a number.
    for row in all.doc.get("train").and_then(Value::as_array).unwrap_or(&[]) {
        let energy = row.get("energy");
        let reason = energy.and_then(|e| e.get("unavailable")).and_then(Value::as_str);
        let joules = energy.and_then(|e| e.get("joules"));
        if reason.is_none() || joules.is_none_or(|j| !j.is_null()) {
            return Err("the qemu run without a battery reported an energy".into());
        }
    }

    let demo = workspace_root().join("demo").join("base");
    let with_model = DeviceBench {
        suite: "train".into(),
        model: Some(demo),
        power_root: Some(FAKE_POWER_ROOT.into()),
        ..DeviceBench::new("qemu")
    };
    let first = bench(&with_model, &fake)?;
    if first.model_pushed != Some(true) {
        return Err("the first run with --model did not push the checkpoint".into());
    }
    let second = bench(&with_model, &fake)?;
    if second.model_pushed != Some(false) {
        return Err("the second run with --model pushed the checkpoint again".into());
    }
    let first_name = first.stored.file_name().map(|n| n.to_string_lossy().into_owned());
    if second.previous != first_name {
        return Err(format!(
            "the second run was compared with {:?}, not with the run before it ({first_name:?})",
            second.previous
        ));
    }
    let log = std::fs::read_to_string(&log).map_err(|e| format!("{}: {e}", log.display()))?;
    let pushes =
        log.lines().filter(|l| l.contains(" push ") && l.contains("model.safetensors")).count();
    if pushes != 1 {
        return Err(format!("the fake adb saw model.safetensors pushed {pushes} times, not once"));
    }
    for (run, outcome) in [("first", &first), ("second", &second)] {
        let model =
            outcome.doc.get("train").and_then(Value::as_array).and_then(|rows| rows.first());
        let random = model.and_then(|m| m.get("random_weights")).and_then(Value::as_bool);
        if random != Some(false) {
            return Err(format!("the {run} run with --model trained random weights"));
        }
        check_fake_power(&outcome.doc)
            .map_err(|e| format!("the {run} run with --power-root: {e}"))?;
    }
    Ok(())
}
