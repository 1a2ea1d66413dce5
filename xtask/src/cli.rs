//! Command-line parsing for xtask, by hand to keep xtask free of dependencies.

use crate::cross::QemuCpu;
use crate::device::DeviceBench;
use crate::fuzz::{FuzzRun, TARGETS};

pub const USAGE: &str = "\
usage: cargo xtask <command>

commands:
  ci                       everything CI checks, in order: fmt, tidy, clippy (host and
                           aarch64), fuzz targets (20 s each), host tests, the Flower
                           federation test, no_std builds, aarch64 tests under qemu, the
                           phone bench pipeline (qemu)
  test [--target host]     the workspace tests on this machine
  test --target aarch64 [--sve-vl 128,256,512] [--neon-only]
                           cross-build the tests for aarch64-unknown-linux-gnu (release) and
                           run them under qemu-aarch64 once per SVE vector length (bits) and
                           once on a NEON-only core; no flags: all four configurations
  nostd                    build mft-core, mft-kernels and mft-models for targets without std
  bench kernels [--json] [--quick] [--threads 1,2]
                           GEMM at GPT-2-small shapes against the gemm, matrixmultiply and
                           faer crates and the machine's FMA peak, side by side in one run,
                           then attention and the fused LM-head loss against our GEMM
                           (minutes); --json: every number as JSON on stdout; --quick: fewer
                           runs, no LM-head shapes; --threads: thread counts (default 1,2)
  bench train [--model gpt2] [--mode lora|full] [--batch 4] [--seq 128] [--threads 2]
              [--steps 8] [--warmup 2] [--frozen f32|bf16|f16] [--rank 8]
              [--targets c_attn,c_proj] [--checkpointing | --checkpoint-blocks K]
              [--mem-budget SIZE] [--digest] [--json] [--device cpu|cuda]
                           whole training steps at real shapes with random weights (models:
                           gpt2, gpt2-medium, qwen2.5-0.5b, gemma3-270m, gemma3-1b): median
                           and min step time, tokens/s, peak RSS; compare with
                           scripts/torch_step.py (same flags) in the same session
                           (--device cuda: built with --features cuda, GEMMs on cuBLAS,
                           the CPU with a notice when no NVIDIA driver loads)
  bench --device NAME [--serial S] [--suite kernels|train|all] [--model DIR]
        [--quick | --full] [--threads N] [--steps N] [--power-root DIR] [--json]
                           build mft-bench for a device profile (pixel8, galaxy-s23,
                           jetson-orin-nano, host, qemu), push it over adb (with --model:
                           the checkpoint too, once per content hash), run it there, and
                           print GEMM GFLOP/s, GPT-2-small LoRA and full fine-tuning step
                           times, tokens/s, peak RSS, energy and temperatures with the
                           change against the previous run (kept in target/bench-runs/);
                           (--power-root: read battery and thermal zones under DIR/sys on
                           the device); qemu: the same pipeline through a fake adb and
                           qemu-aarch64
  phone-check              what CI checks of that pipeline: three qemu runs through the fake
                           adb (both suites; the train suite with demo/base pushed; again,
                           demo/base found cached and the run compared with the one before)
  flower                   the Flower integration test: target/flwr-venv with flwr 1.42.0
                           (made once), a SuperLink, the app of mft-fl/flower/app and three
                           mft-fl clients on loopback, one killed and restarted mid-round
  fuzz [--target T] [--seconds N]
                           build the cargo-fuzz targets of fuzz/ (nightly, cargo-fuzz) and
                           run each (or T) for N seconds (default 20), one per CPU at a time;
                           a crash stops the run, its input in fuzz/artifacts/T/
  help                     this text

Arguments after `--` go to the test binaries (a name filter, --nocapture, ...).";

/// A parsed xtask invocation.
#[derive(Debug, PartialEq, Eq)]
pub enum Command {
    Help,
    Ci,
    Test { target: TestTarget, filter: Vec<String> },
    NoStd,
    Bench(Bench),
    DeviceBench(DeviceBench),
    PhoneCheck,
    Flower,
    Fuzz(FuzzRun),
}

/// `cargo xtask bench SUITE [flags]`.
#[derive(Debug, PartialEq, Eq)]
pub struct Bench {
    pub suite: BenchSuite,
    /// Print the results as JSON on stdout.
    pub json: bool,
    /// A smoke test: fewer repetitions, the largest shapes skipped.
    pub quick: bool,
    /// Thread counts to measure; `None`: the suite's default.
    pub threads: Option<Vec<usize>>,
    /// Flags passed to the bench binary as they are (the train suite validates its own).
    pub extra: Vec<String>,
}

/// A benchmark suite `cargo xtask bench` runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BenchSuite {
    /// GEMM against its peers and the FMA peak: `benches/benches/kernels.rs`.
    Kernels,
    /// Whole training steps at real model shapes: `benches/benches/train.rs`.
    Train,
}

impl BenchSuite {
    pub const ALL: [BenchSuite; 2] = [BenchSuite::Kernels, BenchSuite::Train];

    /// The name on the command line.
    pub fn name(self) -> &'static str {
        match self {
            BenchSuite::Kernels => "kernels",
            BenchSuite::Train => "train",
        }
    }

    /// One line on what the suite measures.
    pub fn about(self) -> &'static str {
        match self {
            BenchSuite::Kernels => {
                "GEMM against gemm, matrixmultiply, faer and the FMA peak, side by side"
            }
            BenchSuite::Train => {
                "training steps at real model shapes: step time, tokens/s, peak RSS"
            }
        }
    }

    /// The `[[bench]]` target of mft-benches that runs the suite.
    pub fn bench_target(self) -> &'static str {
        match self {
            BenchSuite::Kernels => "kernels",
            BenchSuite::Train => "train",
        }
    }

    /// Every suite, one per line, for messages.
    pub fn list() -> String {
        BenchSuite::ALL.iter().map(|s| format!("\n  {:<10} {}", s.name(), s.about())).collect()
    }
}

/// Where `cargo xtask test` runs the tests.
#[derive(Debug, PartialEq, Eq)]
pub enum TestTarget {
    Host,
    Aarch64(Vec<QemuCpu>),
}

/// Parse the arguments after `cargo xtask`.
pub fn parse(args: &[String]) -> Result<Command, String> {
    let (args, passthrough) = match args.iter().position(|a| a == "--") {
        Some(i) => (&args[..i], args[i + 1..].to_vec()),
        None => (args, Vec::new()),
    };
    let Some((command, rest)) = args.split_first() else {
        return Ok(Command::Help);
    };
    match command.as_str() {
        "help" | "--help" | "-h" => Ok(Command::Help),
        "ci" => no_more(rest).map(|()| Command::Ci),
        "nostd" => no_more(rest).map(|()| Command::NoStd),
        "phone-check" => no_more(rest).map(|()| Command::PhoneCheck),
        "flower" => no_more(rest).map(|()| Command::Flower),
        "test" => parse_test(rest, passthrough),
        "bench" => parse_bench(rest, &passthrough),
        "fuzz" => match passthrough.first() {
            Some(arg) => Err(format!("unexpected argument `{arg}` after `--` to `fuzz`")),
            None => parse_fuzz(rest),
        },
        other => Err(format!("unknown command `{other}`")),
    }
}

fn no_more(rest: &[String]) -> Result<(), String> {
    match rest.first() {
        None => Ok(()),
        Some(arg) => Err(format!("unexpected argument `{arg}`")),
    }
}

fn parse_test(rest: &[String], filter: Vec<String>) -> Result<Command, String> {
    let mut target = None;
    let mut sve_bits: Option<Vec<usize>> = None;
    let mut neon_only = false;
    let mut flags = Flags::new(rest);
    while let Some(flag) = flags.next_flag() {
        match flag.name {
            "--target" => target = Some(flags.value(&flag)?),
            "--sve-vl" => sve_bits = Some(parse_vector_lengths(flags.value(&flag)?)?),
            "--neon-only" if flag.is_switch() => neon_only = true,
            _ => return Err(flag.unexpected("test")),
        }
    }
    let target = match target {
        None | Some("host") => {
            if sve_bits.is_some() || neon_only {
                return Err("--sve-vl and --neon-only need `--target aarch64`".into());
            }
            TestTarget::Host
        }
        Some("aarch64") => {
            let configs = match (sve_bits, neon_only) {
                (None, false) => QemuCpu::all(),
                (bits, neon) => {
                    let mut configs: Vec<QemuCpu> =
                        bits.unwrap_or_default().into_iter().map(QemuCpu::Sve).collect();
                    if neon {
                        configs.push(QemuCpu::NeonOnly);
                    }
                    configs
                }
            };
            TestTarget::Aarch64(configs)
        }
        Some(other) => return Err(format!("unknown test target `{other}` (host or aarch64)")),
    };
    Ok(Command::Test { target, filter })
}

fn parse_bench(rest: &[String], passthrough: &[String]) -> Result<Command, String> {
    if let Some(arg) = passthrough.first() {
        return Err(format!("unexpected argument `{arg}` after `--` to `bench`"));
    }
    // `bench --device NAME …` is the phone bench; `bench train --device cpu|cuda` is the suite.
    let suite_first = rest.first().is_some_and(|a| BenchSuite::ALL.iter().any(|s| s.name() == a));
    if !suite_first && rest.iter().any(|a| a == "--device" || a.starts_with("--device=")) {
        return parse_device_bench(rest);
    }
    let Some((suite, flags)) = rest.split_first() else {
        return Err(format!("`bench` needs a suite; the suites are:{}", BenchSuite::list()));
    };
    let suite = BenchSuite::ALL.into_iter().find(|s| s.name() == suite).ok_or_else(|| {
        format!("unknown bench suite `{suite}`; the suites are:{}", BenchSuite::list())
    })?;
    let mut bench = Bench { suite, json: false, quick: false, threads: None, extra: Vec::new() };
    if suite == BenchSuite::Train {
        // The train bench parses its own flags and names any it does not know.
        bench.json = flags.iter().any(|f| f == "--json");
        bench.extra = flags.iter().filter(|f| *f != "--json").cloned().collect();
        return Ok(Command::Bench(bench));
    }
    let mut flags = Flags::new(flags);
    while let Some(flag) = flags.next_flag() {
        match flag.name {
            "--json" if flag.is_switch() => bench.json = true,
            "--quick" if flag.is_switch() => bench.quick = true,
            "--threads" => bench.threads = Some(parse_thread_counts(flags.value(&flag)?)?),
            _ => return Err(flag.unexpected(&format!("bench {}", suite.name()))),
        }
    }
    Ok(Command::Bench(bench))
}

fn parse_fuzz(rest: &[String]) -> Result<Command, String> {
    let mut run = FuzzRun { targets: TARGETS.map(String::from).to_vec(), seconds: 20 };
    let mut flags = Flags::new(rest);
    while let Some(flag) = flags.next_flag() {
        match flag.name {
            "--target" => {
                let target = flags.value(&flag)?;
                if !TARGETS.contains(&target) {
                    return Err(format!(
                        "unknown fuzz target `{target}` (targets: {})",
                        TARGETS.join(", ")
                    ));
                }
                run.targets = vec![target.to_string()];
            }
            "--seconds" => run.seconds = positive("--seconds", flags.value(&flag)?)? as u64,
            _ => return Err(flag.unexpected("fuzz")),
        }
    }
    Ok(Command::Fuzz(run))
}

/// `bench --device NAME [flags]`: the device's profile is checked when the run starts.
fn parse_device_bench(rest: &[String]) -> Result<Command, String> {
    let mut bench = DeviceBench::new("");
    let mut flags = Flags::new(rest);
    while let Some(flag) = flags.next_flag() {
        match flag.name {
            "--device" => bench.device = flags.value(&flag)?.into(),
            "--serial" => bench.serial = Some(flags.value(&flag)?.into()),
            "--suite" => {
                let suite = flags.value(&flag)?;
                if !["kernels", "train", "all"].contains(&suite) {
                    return Err(format!("--suite: `{suite}` is not kernels, train or all"));
                }
                bench.suite = suite.into();
            }
            "--model" => bench.model = Some(flags.value(&flag)?.into()),
            "--quick" if flag.is_switch() => bench.quick = Some(true),
            "--full" if flag.is_switch() => bench.quick = Some(false),
            "--threads" => bench.threads = Some(positive("--threads", flags.value(&flag)?)?),
            "--steps" => bench.steps = Some(positive("--steps", flags.value(&flag)?)?),
            "--json" if flag.is_switch() => bench.json = true,
            "--power-root" => bench.power_root = Some(flags.value(&flag)?.into()),
            _ => return Err(flag.unexpected("bench --device")),
        }
    }
    if bench.device.is_empty() {
        return Err("`--device` needs a value".into());
    }
    if bench.model.is_some() && bench.suite == "kernels" {
        return Err("--model is for the train suite; `--suite kernels` trains nothing".into());
    }
    Ok(Command::DeviceBench(bench))
}

/// `1,2` → thread counts, each at least 1.
/// Reads `--flag value`, `--flag=value` and bare `--flag` arguments in order, for the
/// subcommands' hand-written flag loops.
struct Flags<'a> {
    args: &'a [String],
    next: usize,
}

/// One flag argument: its name, and the value written after `=` if any.
struct Flag<'a> {
    name: &'a str,
    inline: Option<&'a str>,
    /// The argument as given, for error messages.
    raw: &'a str,
}

impl<'a> Flags<'a> {
    fn new(args: &'a [String]) -> Self {
        Flags { args, next: 0 }
    }

    /// The next flag, or `None` after the last argument.
    fn next_flag(&mut self) -> Option<Flag<'a>> {
        let raw = self.args.get(self.next)?.as_str();
        self.next += 1;
        let (name, inline) = match raw.split_once('=') {
            Some((name, value)) => (name, Some(value)),
            None => (raw, None),
        };
        Some(Flag { name, inline, raw })
    }

    /// The flag's value: what follows its `=`, or else the next argument.
    fn value(&mut self, flag: &Flag<'a>) -> Result<&'a str, String> {
        if let Some(value) = flag.inline {
            return Ok(value);
        }
        let value =
            self.args.get(self.next).ok_or_else(|| format!("`{}` needs a value", flag.name))?;
        self.next += 1;
        Ok(value)
    }
}

impl Flag<'_> {
    /// Written without `=value` (how an on/off flag must be written).
    fn is_switch(&self) -> bool {
        self.inline.is_none()
    }

    /// The error for a flag `command` does not take.
    fn unexpected(&self, command: &str) -> String {
        format!("unexpected argument `{}` to `{command}`", self.raw)
    }
}

/// A count of 1 or more given to flag `name`.
fn positive(name: &str, text: &str) -> Result<usize, String> {
    match text.parse::<usize>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{name}: `{text}` is not a positive number")),
    }
}

fn parse_thread_counts(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|item| match item.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("--threads: `{item}` is not a thread count (1 or more)")),
        })
        .collect()
}

/// `128,256,512` → bits; each a multiple of 128 from 128 to 2048, as SVE allows.
fn parse_vector_lengths(list: &str) -> Result<Vec<usize>, String> {
    list.split(',')
        .map(|item| {
            let bits: usize =
                item.trim().parse().map_err(|_| format!("--sve-vl: `{item}` is not a number"))?;
            if !bits.is_multiple_of(128) || !(128..=2048).contains(&bits) {
                return Err(format!(
                    "--sve-vl: {bits} is not an SVE vector length (a multiple of 128 from 128 to 2048 bits)"
                ));
            }
            Ok(bits)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Command, String> {
        let args: Vec<String> = line.split_whitespace().map(String::from).collect();
        parse(&args)
    }

    #[test]
    fn flower_takes_no_arguments() {
        assert_eq!(parse_str("flower").unwrap(), Command::Flower);
        assert!(parse_str("flower --quick").is_err());
    }

    #[test]
    fn aarch64_without_flags_runs_all_four_configurations() {
        assert_eq!(
            parse_str("test --target aarch64").unwrap(),
            Command::Test {
                target: TestTarget::Aarch64(vec![
                    QemuCpu::Sve(128),
                    QemuCpu::Sve(256),
                    QemuCpu::Sve(512),
                    QemuCpu::NeonOnly
                ]),
                filter: vec![],
            }
        );
    }

    #[test]
    fn flags_select_configurations() {
        assert_eq!(
            parse_str("test --target=aarch64 --sve-vl 256 -- arena --nocapture").unwrap(),
            Command::Test {
                target: TestTarget::Aarch64(vec![QemuCpu::Sve(256)]),
                filter: vec!["arena".into(), "--nocapture".into()],
            }
        );
        assert_eq!(
            parse_str("test --target aarch64 --neon-only --sve-vl=128,2048").unwrap(),
            Command::Test {
                target: TestTarget::Aarch64(vec![
                    QemuCpu::Sve(128),
                    QemuCpu::Sve(2048),
                    QemuCpu::NeonOnly
                ]),
                filter: vec![],
            }
        );
    }

    #[test]
    fn bad_input_is_refused_with_a_reason() {
        assert!(parse_str("test --target aarch64 --sve-vl 100").unwrap_err().contains("100"));
        assert!(parse_str("test --target aarch64 --sve-vl").unwrap_err().contains("needs a value"));
        assert!(parse_str("test --sve-vl 128").unwrap_err().contains("--target aarch64"));
        assert!(parse_str("test --target riscv").unwrap_err().contains("riscv"));
        assert!(parse_str("bench").unwrap_err().contains("kernels"));
        assert!(parse_str("ci now").unwrap_err().contains("now"));
    }

    #[test]
    fn no_command_is_help() {
        assert_eq!(parse_str("").unwrap(), Command::Help);
        assert_eq!(
            parse_str("test").unwrap(),
            Command::Test { target: TestTarget::Host, filter: vec![] }
        );
    }

    #[test]
    fn bench_kernels_takes_its_flags() {
        assert_eq!(
            parse_str("bench kernels").unwrap(),
            Command::Bench(Bench {
                suite: BenchSuite::Kernels,
                json: false,
                quick: false,
                threads: None,
                extra: vec![],
            })
        );
        assert_eq!(
            parse_str("bench kernels --json --quick --threads 1,2").unwrap(),
            Command::Bench(Bench {
                suite: BenchSuite::Kernels,
                json: true,
                quick: true,
                threads: Some(vec![1, 2]),
                extra: vec![],
            })
        );
        assert_eq!(
            parse_str("bench kernels --threads=2").unwrap(),
            Command::Bench(Bench {
                suite: BenchSuite::Kernels,
                json: false,
                quick: false,
                threads: Some(vec![2]),
                extra: vec![],
            })
        );
    }

    #[test]
    fn bench_refuses_unknown_suites_and_flags() {
        let no_suite = parse_str("bench").unwrap_err();
        assert!(no_suite.contains("needs a suite") && no_suite.contains("kernels"), "{no_suite}");
        let unknown = parse_str("bench training").unwrap_err();
        assert!(unknown.contains("`training`") && unknown.contains("kernels"), "{unknown}");
        assert!(parse_str("bench kernels --fast").unwrap_err().contains("--fast"));
        assert!(parse_str("bench kernels --threads").unwrap_err().contains("needs a value"));
        assert!(parse_str("bench kernels --threads 0").unwrap_err().contains("`0`"));
        assert!(parse_str("bench kernels --threads 1,x").unwrap_err().contains("`x`"));
        assert!(parse_str("bench kernels --json=yes").unwrap_err().contains("--json=yes"));
        assert!(parse_str("bench kernels -- extra").unwrap_err().contains("extra"));
    }

    #[test]
    fn fuzz_runs_every_target_or_one() {
        let Command::Fuzz(all) = parse_str("fuzz").unwrap() else { panic!("not fuzz") };
        assert_eq!(all.targets.len(), TARGETS.len());
        assert_eq!(all.seconds, 20);
        assert_eq!(
            parse_str("fuzz --target model_config --seconds=600").unwrap(),
            Command::Fuzz(FuzzRun { targets: vec!["model_config".into()], seconds: 600 })
        );
        assert!(parse_str("fuzz --target nope").unwrap_err().contains("`nope`"));
        assert!(parse_str("fuzz --seconds 0").unwrap_err().contains("`0`"));
        assert!(parse_str("fuzz --seconds").unwrap_err().contains("needs a value"));
        assert!(parse_str("fuzz --jobs 2").unwrap_err().contains("--jobs"));
        assert!(parse_str("fuzz -- -runs=1").unwrap_err().contains("-runs=1"));
    }

    #[test]
    fn bench_train_takes_a_compute_device() {
        let Command::Bench(bench) = parse_str("bench train --device cuda --json").unwrap() else {
            panic!("not the train suite");
        };
        assert_eq!(bench.suite, BenchSuite::Train);
        assert_eq!(bench.extra, ["--device", "cuda"]);
    }

    #[test]
    fn bench_device_takes_its_flags() {
        let Command::DeviceBench(bench) = parse_str("bench --device pixel8").unwrap() else {
            panic!("not a device bench");
        };
        assert_eq!(bench, DeviceBench::new("pixel8"));
        let Command::DeviceBench(bench) = parse_str(
            "bench --device=qemu --serial ABC --suite train --model demo/base --quick --threads 2 \
             --steps 3 --json",
        )
        .unwrap() else {
            panic!("not a device bench");
        };
        assert_eq!(
            bench,
            DeviceBench {
                device: "qemu".into(),
                serial: Some("ABC".into()),
                suite: "train".into(),
                model: Some("demo/base".into()),
                quick: Some(true),
                threads: Some(2),
                steps: Some(3),
                json: true,
                power_root: None,
            }
        );
        let full = parse_str("bench --device qemu --full").unwrap();
        assert!(matches!(full, Command::DeviceBench(DeviceBench { quick: Some(false), .. })));
        assert!(parse_str("bench --device").unwrap_err().contains("needs a value"));
        assert!(parse_str("bench --device pixel8 --suite fast").unwrap_err().contains("`fast`"));
        assert!(parse_str("bench --device pixel8 --threads 0").unwrap_err().contains("`0`"));
        assert!(parse_str("bench --device pixel8 --mode lora").unwrap_err().contains("--mode"));
        let kernels = parse_str("bench --device pixel8 --suite kernels --model m").unwrap_err();
        assert!(kernels.contains("train suite"), "{kernels}");
    }

    #[test]
    fn bench_train_hands_its_flags_to_the_bench() {
        let Command::Bench(bench) =
            parse_str("bench train --model gpt2 --json --mode lora").unwrap()
        else {
            panic!("not a bench");
        };
        assert_eq!(bench.suite, BenchSuite::Train);
        assert!(bench.json);
        assert_eq!(bench.extra, ["--model", "gpt2", "--mode", "lora"]);
    }
}
