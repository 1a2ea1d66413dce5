//! The side-by-side GEMM table: `cargo xtask bench kernels [--json] [--quick] [--threads 1,2]`
//! (or `cargo bench -p mft-benches --bench kernels -- [flags]`).
//!
//! For every GPT-2-small shape (512 tokens; X·W, dY·Wᵀ and Xᵀ·dY of each linear layer) and thread
//! count, our GEMM and each peer (`gemm`, `matrixmultiply`, `faer`) run interleaved, in a rotating
//! order, several times after a warm-up, together with a sample of the machine's FMA peak; the
//! table gives each one's median GFLOP/s and spread, ours ÷ the best peer and ours ÷ the peak,
//! all measured in the same run. Further rows compare our GEMM with an f16 or bf16 B against our
//! f32 one at the forward and dY·Wᵀ shapes. Every implementation is checked against
//! `matrixmultiply` once per shape before it is timed; a wrong one is reported, never timed.
//! Last come the training primitives (`common/primitives.rs`): attention forward + backward at
//! batch 4, 12 heads, head_dim 64, T = 128, 512, 1024, and the fused LM head + cross-entropy at
//! GPT-2's and Gemma 3's vocabularies, each as counted GFLOP/s against our GEMM measured
//! interleaved with it (their correctness is the tests' job).
//!
//! `matrixmultiply` fixes its thread count once per process (`MATMUL_NUM_THREADS`), so each
//! thread count is measured in a child process of this one (`--worker`) with `MATMUL_NUM_THREADS`
//! and `RAYON_NUM_THREADS` set to it; the parent gathers the children's JSON and prints the
//! table (stdout), or with `--json` the JSON document (stdout) and the table (stderr). Progress
//! goes to stderr.

#[path = "common/mod.rs"]
mod common;

use std::io::Write;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use common::primitives::{AttentionBench, LossBench, LossMode};
use common::{Impl, Problem, Runner, Shape, Stats, TOLERANCE, relative_error};
use mft_benches::peak::FmaPeak;
use mft_kernels::{Kernels, bf16, f16};
use serde_json::{Value, json};

const USAGE: &str = "\
usage: kernels [--json] [--quick] [--threads 1,2] [--primitives]
  --json          print a JSON document of every number (the table goes to stderr)
  --quick         fewer repetitions, no vocabulary-sized GEMM shapes, no T = 1024 attention,
                  no Gemma-sized loss: a smoke test
  --threads LIST  thread counts to measure (default 1,2)
  --primitives    only the training primitives (attention, fused loss) and the FMA peak";

/// Command-line options.
#[derive(Debug)]
struct Options {
    json: bool,
    quick: bool,
    threads: Vec<usize>,
    /// Skip the GEMM comparison: only the primitives (and a sample of the peak).
    primitives_only: bool,
    /// Measure one thread count (`threads[0]`) and print its JSON: the child process.
    worker: bool,
}

impl Options {
    fn parse(args: &[String]) -> Result<Options, String> {
        let mut options = Options {
            json: false,
            quick: false,
            threads: vec![1, 2],
            primitives_only: false,
            worker: false,
        };
        let mut i = 0;
        while i < args.len() {
            let (flag, inline) = match args[i].split_once('=') {
                Some((flag, value)) => (flag, Some(value.to_string())),
                None => (args[i].as_str(), None),
            };
            match flag {
                "--json" => options.json = true,
                "--quick" => options.quick = true,
                "--primitives" => options.primitives_only = true,
                "--worker" => options.worker = true,
                // `cargo bench` passes `--bench` to every bench binary.
                "--bench" => {}
                "--threads" => {
                    let list = match inline {
                        Some(v) => v,
                        None => {
                            i += 1;
                            args.get(i).cloned().ok_or("`--threads` needs a value (e.g. 1,2)")?
                        }
                    };
                    options.threads = parse_threads(&list)?;
                }
                "--help" | "-h" => return Err(USAGE.into()),
                other => return Err(format!("unexpected argument `{other}`\n{USAGE}")),
            }
            i += 1;
        }
        Ok(options)
    }

    /// Repetitions of each measurement after the warm-up.
    fn reps(&self) -> usize {
        if self.quick { 3 } else { 7 }
    }

    /// The least time one sample of an implementation runs for (several calls when one is
    /// shorter), so timer resolution and one-off hiccups weigh little.
    fn min_sample(&self) -> Duration {
        if self.quick { Duration::from_millis(30) } else { Duration::from_millis(100) }
    }
}

fn parse_threads(list: &str) -> Result<Vec<usize>, String> {
    let threads: Vec<usize> = list
        .split(',')
        .map(|t| match t.trim().parse::<usize>() {
            Ok(n) if n >= 1 => Ok(n),
            _ => Err(format!("--threads: `{t}` is not a thread count (1 or more)")),
        })
        .collect::<Result<_, _>>()?;
    if threads.is_empty() {
        return Err("--threads: no thread counts".into());
    }
    Ok(threads)
}

fn main() -> ExitCode {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let options = match Options::parse(&args) {
        Ok(options) => options,
        Err(message) => {
            eprintln!("kernels: {message}");
            return ExitCode::from(2);
        }
    };
    if options.worker {
        let threads = options.threads[0];
        let (report, ok) = worker(&options, threads);
        println!("{report}");
        return if ok { ExitCode::SUCCESS } else { ExitCode::FAILURE };
    }
    match parent(&options) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::FAILURE,
        Err(message) => {
            eprintln!("kernels: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Run one child process per thread count, then print the table (and the JSON).
fn parent(options: &Options) -> Result<bool, String> {
    let exe = std::env::current_exe().map_err(|e| format!("cannot find this program: {e}"))?;
    let started = Instant::now();
    let mut reports = Vec::new();
    let mut ok = true;
    for &threads in &options.threads {
        let mut command = Command::new(&exe);
        command
            .args(["--worker", "--threads", &threads.to_string()])
            .env("MATMUL_NUM_THREADS", threads.to_string())
            .env("RAYON_NUM_THREADS", threads.to_string())
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        if options.quick {
            command.arg("--quick");
        }
        if options.primitives_only {
            command.arg("--primitives");
        }
        let output =
            command.output().map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let text = String::from_utf8_lossy(&output.stdout);
        let report: Value = serde_json::from_str(&text).map_err(|e| {
            format!("the {threads}-thread measurement ({}) gave no report: {e}", output.status)
        })?;
        ok &= output.status.success();
        reports.push(report);
    }
    let took = started.elapsed();
    eprintln!("kernels: measured in {:.0}s", took.as_secs_f64());
    let document = document(options, &reports, took);
    let table = table(&document);
    if options.json {
        eprintln!("{table}");
        let mut stdout = std::io::stdout().lock();
        serde_json::to_writer_pretty(&mut stdout, &document).map_err(|e| e.to_string())?;
        writeln!(stdout).map_err(|e| e.to_string())?;
    } else {
        println!("{table}");
    }
    if !ok {
        eprintln!("kernels: some implementation gave a wrong result (see WRONG above)");
    }
    Ok(ok)
}

/// The whole run as one JSON document: machine, peaks, rows sorted by shape then threads.
fn document(options: &Options, reports: &[Value], took: Duration) -> Value {
    let mut rows: Vec<Value> = Vec::new();
    let mut half_rows: Vec<Value> = Vec::new();
    let mut primitive_rows: Vec<Value> = Vec::new();
    let mut peaks = serde_json::Map::new();
    for report in reports {
        let threads = report["threads"].as_u64().unwrap_or(0);
        peaks.insert(threads.to_string(), report["peak"].clone());
        rows.extend(report["rows"].as_array().cloned().unwrap_or_default());
        half_rows.extend(report["half_rows"].as_array().cloned().unwrap_or_default());
        primitive_rows.extend(report["primitive_rows"].as_array().cloned().unwrap_or_default());
    }
    let key = |row: &Value| (row["index"].as_u64(), row["threads"].as_u64());
    rows.sort_by_key(key);
    half_rows.sort_by_key(key);
    primitive_rows.sort_by_key(key);
    let fma_isa = reports.first().map_or(Value::Null, |r| r["fma_isa"].clone());
    let mut flags = String::new();
    if options.quick {
        flags.push_str(" --quick");
    }
    if options.primitives_only {
        flags.push_str(" --primitives");
    }
    let threads: Vec<String> = options.threads.iter().map(usize::to_string).collect();
    if threads != ["1", "2"] {
        flags.push_str(&format!(" --threads {}", threads.join(",")));
    }
    json!({
        "suite": "kernels",
        "command": if options.primitives_only {
            // xtask has no such flag: name the bench binary's own command.
            format!("cargo bench -p mft-benches --bench kernels --{flags}")
        } else {
            format!("cargo xtask bench kernels{flags}")
        },
        "quick": options.quick,
        "reps": options.reps(),
        "seconds": took.as_secs_f64(),
        "machine": {
            "arch": std::env::consts::ARCH,
            "cpu": cpu_model(),
            "logical_cpus": std::thread::available_parallelism().map_or(1, |n| n.get()),
            "gemm_isa": mft_kernels::Gemm::best().isa().name(),
            "fma_isa": fma_isa,
            "peak_gflops": peaks,
        },
        "rows": rows,
        "half_rows": half_rows,
        "primitive_rows": primitive_rows,
    })
}

/// The CPU's model name, where the OS says it.
fn cpu_model() -> Option<String> {
    let info = std::fs::read_to_string("/proc/cpuinfo").ok()?;
    info.lines()
        .find(|l| l.starts_with("model name") || l.starts_with("Model"))
        .and_then(|l| l.split_once(':'))
        .map(|(_, v)| v.trim().to_string())
}

/// Measure every shape on `threads` threads; the report as JSON, and whether every
/// implementation gave the right result.
fn worker(options: &Options, threads: usize) -> (Value, bool) {
    let mut runner = Runner::new(threads);
    let peak = FmaPeak::detect();
    let peak_iters = peak.calibrate(options.min_sample() / 2);
    let shapes = if options.primitives_only { Vec::new() } else { Shape::all(!options.quick) };
    let reps = options.reps();
    let mut peak_samples = Vec::new();
    let mut rows = Vec::new();
    let mut all_ok = true;
    eprintln!(
        "kernels: {threads} thread(s): {} shapes × {} implementations, {reps} interleaved runs \
         each; ours is {}, FMA peak loop {}",
        shapes.len(),
        Impl::ALL.len(),
        runner.gemm().isa().name(),
        peak.isa()
    );
    for (index, shape) in shapes.iter().enumerate() {
        let started = Instant::now();
        let (row, ok) =
            measure_shape(&mut runner, &peak, peak_iters, shape, reps, options.min_sample());
        all_ok &= ok;
        if let Some(samples) = row["peak"]["samples"].as_array() {
            peak_samples.extend(samples.iter().filter_map(Value::as_f64));
        }
        let summary: Vec<String> = Impl::ALL
            .iter()
            .map(|which| match Stats::from_json(&row["results"][which.name()]) {
                Some(s) => format!("{} {:.1}", which.name(), s.median),
                None => format!("{} WRONG", which.name()),
            })
            .collect();
        eprintln!(
            "  [{threads}t {}/{}] {} {} ({}): {} GFLOP/s ({:.1}s)",
            index + 1,
            shapes.len(),
            shape.layer(),
            shape.layout.formula(),
            shape.dims(),
            summary.join(", "),
            started.elapsed().as_secs_f64()
        );
        let mut row = row;
        row["index"] = json!(index);
        rows.push(row);
    }
    let mut half_rows = Vec::new();
    let half_shapes: Vec<(usize, &Shape)> = shapes
        .iter()
        .enumerate()
        .filter(|(_, s)| s.layout != common::Layout::BackwardWeight)
        .collect();
    for (n, &(index, shape)) in half_shapes.iter().enumerate() {
        let started = Instant::now();
        let (mut row, ok) = measure_half(&mut runner, shape, reps, options.min_sample());
        all_ok &= ok;
        row["index"] = json!(index);
        row["threads"] = json!(threads);
        let cell = |name: &str| {
            Stats::from_json(&row["results"][name])
                .map_or_else(|| "WRONG".to_string(), |s| format!("{:.1}", s.median))
        };
        eprintln!(
            "  [{threads}t half {}/{}] {} {} ({}): f32 {}, f16 {}, bf16 {} GFLOP/s ({:.1}s)",
            n + 1,
            half_shapes.len(),
            shape.layer(),
            shape.layout.formula(),
            shape.dims(),
            cell("f32"),
            cell("f16"),
            cell("bf16"),
            started.elapsed().as_secs_f64()
        );
        half_rows.push(row);
    }
    let primitive_rows = measure_primitives(&mut runner, options);
    if peak_samples.is_empty() {
        peak_samples = (0..reps).map(|_| peak.gflops(peak_iters, threads)).collect();
    }
    let peak_stats = Stats::of(&peak_samples);
    let report = json!({
        "threads": threads,
        "fma_isa": peak.isa(),
        "peak": peak_stats.json(&peak_samples),
        "rows": rows,
        "half_rows": half_rows,
        "primitive_rows": primitive_rows,
    });
    (report, all_ok)
}

/// The training primitives (attention, the fused loss), each interleaved with our GEMM at GPT-2's
/// `c_attn` forward shape (512×2304×768), whose rate they are compared with.
fn measure_primitives(runner: &mut Runner, options: &Options) -> Vec<Value> {
    let kernels = Kernels::best();
    let threads = runner.threads();
    let reference = Shape { k_in: 768, n_out: 2304, layout: common::Layout::Forward };
    let mut problem = Problem::new(reference);
    let reference_flops = reference.flops();
    let seqs: &[usize] = if options.quick { &[128, 512] } else { &[128, 512, 1024] };
    let mut rows = Vec::new();
    let mut measure = |kind: &str,
                       name: String,
                       dims: String,
                       flops: f64,
                       scratch_floats: usize,
                       run: &mut dyn FnMut(&mut Runner)| {
        let started = Instant::now();
        let Problem { a, b, c, .. } = &mut problem;
        let start = Instant::now();
        run(runner);
        let calls = calls_for(start.elapsed(), options.min_sample());
        let start = Instant::now();
        runner.run_ours(&reference, a, b, c);
        let reference_calls = calls_for(start.elapsed(), options.min_sample());
        let (mut samples, mut reference_samples) = (Vec::new(), Vec::new());
        for _ in 0..options.reps() {
            samples.push(time_calls(flops, calls, || run(runner)));
            reference_samples.push(time_calls(reference_flops, reference_calls, || {
                runner.run_ours(&reference, a, b, c)
            }));
        }
        let (stats, reference_stats) = (Stats::of(&samples), Stats::of(&reference_samples));
        let ms_per_call: Vec<f64> = samples.iter().map(|g| flops / g / 1e6).collect();
        let ratio = stats.median / reference_stats.median;
        eprintln!(
            "  [{threads}t] {kind} {name} ({dims}): {:.1} GFLOP/s, {:.1} ms a call, {ratio:.2}× \
             our GEMM ({:.1}) ({:.1}s)",
            stats.median,
            Stats::of(&ms_per_call).median,
            reference_stats.median,
            started.elapsed().as_secs_f64()
        );
        rows.push(json!({
            "index": rows.len(),
            "kernel": kind,
            "name": name,
            "dims": dims,
            "threads": threads,
            "gflop_per_call": flops / 1e9,
            "scratch_bytes": scratch_floats * 4,
            "gflops": stats.json(&samples),
            "ms_per_call": Stats::of(&ms_per_call).json(&ms_per_call),
            "gemm_reference": format!("ours, X·W {}", reference.dims()),
            "gemm_gflops": reference_stats.json(&reference_samples),
            "over_gemm": ratio,
        }));
    };
    for &seq in seqs {
        let mut bench = AttentionBench::gpt2(&kernels, seq, threads);
        let s = *bench.shape();
        measure(
            "attention fwd+bwd",
            format!("T={seq}"),
            format!("{}×{}×{}×{}", s.batch, s.n_heads, seq, s.head_dim),
            bench.flops(),
            bench.scratch_len(),
            &mut |runner| bench.run(&kernels, runner.parallel()),
        );
    }
    let mut losses = vec![LossBench::gpt2(&kernels, threads)];
    if !options.quick {
        losses.push(LossBench::gemma(&kernels, threads));
    }
    for mut bench in losses {
        for mode in LossMode::ALL {
            let s = *bench.shape(mode);
            let (flops, scratch) = (bench.flops(mode), bench.scratch_len(mode, &kernels, threads));
            measure(
                "loss fwd+bwd",
                format!("{} {}", bench.name(), mode.name()),
                format!("{}×{}×{}", s.tokens(), s.hidden(), s.vocab()),
                flops,
                scratch,
                &mut |runner| bench.run(mode, &kernels, runner.parallel()),
            );
        }
    }
    rows
}

/// Calls of a run that took `one` per call so a sample lasts at least `min_sample`.
fn calls_for(one: Duration, min_sample: Duration) -> u32 {
    let calls = (min_sample.as_secs_f64() / one.as_secs_f64().max(1e-9)).ceil();
    calls.clamp(1.0, 10_000.0) as u32
}

/// GFLOP/s of `calls` runs of `f`.
fn time_calls(flops: f64, calls: u32, mut f: impl FnMut()) -> f64 {
    let start = Instant::now();
    for _ in 0..calls {
        f();
    }
    flops * f64::from(calls) / start.elapsed().as_secs_f64() / 1e9
}

/// One shape on one thread count: check each implementation against `matrixmultiply`, then
/// interleave timed runs of the correct ones with samples of the FMA peak.
fn measure_shape(
    runner: &mut Runner,
    peak: &FmaPeak,
    peak_iters: u64,
    shape: &Shape,
    reps: usize,
    min_sample: Duration,
) -> (Value, bool) {
    let Problem { a, b, c, .. } = &mut Problem::new(*shape);
    let flops = shape.flops();
    let (m, n, k) = shape.mnk();

    // The reference, and the warm-up: each implementation once, its result checked.
    let mut reference = vec![0f32; c.len()];
    runner.run(Impl::MatrixMultiply, shape, a, b, &mut reference);
    let mut errors = Vec::new();
    let mut calls = Vec::new();
    for which in Impl::ALL {
        c.fill(f32::NAN);
        let start = Instant::now();
        runner.run(which, shape, a, b, c);
        let one = start.elapsed();
        let error = relative_error(c, &reference);
        errors.push(error);
        calls.push(calls_for(one, min_sample));
    }
    drop(reference);
    let correct: Vec<bool> = errors.iter().map(|&e| e <= TOLERANCE).collect();

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); Impl::ALL.len()];
    let mut peak_samples = Vec::new();
    for rep in 0..reps {
        peak_samples.push(peak.gflops(peak_iters, runner.threads()));
        for offset in 0..Impl::ALL.len() {
            let i = (rep + offset) % Impl::ALL.len();
            if !correct[i] {
                continue;
            }
            let which = Impl::ALL[i];
            samples[i].push(time_calls(flops, calls[i], || runner.run(which, shape, a, b, c)));
        }
    }

    let peak_stats = Stats::of(&peak_samples);
    let names = Impl::ALL.map(|which| which.name());
    let (results, medians) = summarize(&names, &correct, &samples, &calls, &errors);
    let ours = medians[0];
    let best_peer = medians[1..]
        .iter()
        .flatten()
        .copied()
        .fold(None, |best: Option<f64>, x| Some(best.map_or(x, |b| b.max(x))));
    let best_peer_name = Impl::PEERS
        .iter()
        .zip(&medians[1..])
        .filter_map(|(p, m)| m.map(|m| (p.name(), m)))
        .max_by(|x, y| x.1.total_cmp(&y.1))
        .map(|(name, _)| name);
    let row = json!({
        "layer": shape.layer(),
        "formula": shape.layout.formula(),
        "op": shape.layout.op(),
        "m": m, "n": n, "k": k,
        "gflop_per_call": flops / 1e9,
        "threads": runner.threads(),
        "b_dtype": "f32",
        "results": results,
        "peak": peak_stats.json(&peak_samples),
        "best_peer": best_peer_name,
        "ours_over_best_peer": ours.zip(best_peer).map(|(o, p)| o / p),
        "ours_over_peak": ours.map(|o| o / peak_stats.median),
    });
    (row, correct.iter().all(|&c| c))
}

/// Our GEMM with an f32, f16 and bf16 B at one shape: checked against `matrixmultiply` on the
/// same (rounded) values, then interleaved.
fn measure_half(
    runner: &mut Runner,
    shape: &Shape,
    reps: usize,
    min_sample: Duration,
) -> (Value, bool) {
    let Problem { a, b, c, .. } = &mut Problem::new(*shape);
    let b_f16: Vec<f16> = b.iter().map(|&x| f16::from_f32(x)).collect();
    let b_bf16: Vec<bf16> = b.iter().map(|&x| bf16::from_f32(x)).collect();
    let flops = shape.flops();
    let (m, n, k) = shape.mnk();
    const NAMES: [&str; 3] = ["f32", "f16", "bf16"];

    let run = |runner: &mut Runner, i: usize, c: &mut [f32]| match i {
        0 => runner.run_ours(shape, a, b, c),
        1 => runner.run_ours(shape, a, &b_f16, c),
        _ => runner.run_ours(shape, a, &b_bf16, c),
    };

    let mut errors = Vec::new();
    let mut calls = Vec::new();
    let mut reference = vec![0f32; c.len()];
    for i in 0..NAMES.len() {
        let widened: Vec<f32> = match i {
            0 => b.clone(),
            1 => b_f16.iter().map(|x| x.to_f32()).collect(),
            _ => b_bf16.iter().map(|x| x.to_f32()).collect(),
        };
        runner.run(Impl::MatrixMultiply, shape, a, &widened, &mut reference);
        drop(widened);
        c.fill(f32::NAN);
        let start = Instant::now();
        run(runner, i, c);
        let one = start.elapsed();
        errors.push(relative_error(c, &reference));
        calls.push(calls_for(one, min_sample));
    }
    drop(reference);
    let correct: Vec<bool> = errors.iter().map(|&e| e <= TOLERANCE).collect();

    let mut samples: Vec<Vec<f64>> = vec![Vec::new(); NAMES.len()];
    for rep in 0..reps {
        for offset in 0..NAMES.len() {
            let i = (rep + offset) % NAMES.len();
            if correct[i] {
                samples[i].push(time_calls(flops, calls[i], || run(runner, i, c)));
            }
        }
    }

    let (results, medians) = summarize(&NAMES, &correct, &samples, &calls, &errors);
    let ratio = |i: usize| medians[i].zip(medians[0]).map(|(h, f)| h / f);
    let row = json!({
        "layer": shape.layer(),
        "formula": shape.layout.formula(),
        "op": shape.layout.op(),
        "m": m, "n": n, "k": k,
        "gflop_per_call": flops / 1e9,
        "results": results,
        "f16_over_f32": ratio(1),
        "bf16_over_f32": ratio(2),
    });
    (row, correct.iter().all(|&c| c))
}

/// JSON has no infinity or NaN: those become null.
/// Per implementation: its JSON result (statistics, or `wrong` when it failed the check) and its
/// median GFLOP/s (`None` when wrong).
fn summarize(
    names: &[&str],
    correct: &[bool],
    samples: &[Vec<f64>],
    calls: &[u32],
    errors: &[f64],
) -> (serde_json::Map<String, Value>, Vec<Option<f64>>) {
    let mut results = serde_json::Map::new();
    let mut medians = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let value = if correct[i] {
            let stats = Stats::of(&samples[i]);
            medians.push(Some(stats.median));
            let mut v = stats.json(&samples[i]);
            v["calls_per_sample"] = json!(calls[i]);
            v["max_rel_error"] = json!(errors[i]);
            v
        } else {
            medians.push(None);
            json!({ "wrong": true, "max_rel_error": finite_or_null(errors[i]) })
        };
        results.insert(name.to_string(), value);
    }
    (results, medians)
}

fn finite_or_null(x: f64) -> Value {
    if x.is_finite() { json!(x) } else { Value::Null }
}

/// `median ±half-range` of a result, or `WRONG`.
fn cell(result: &Value) -> String {
    match Stats::from_json(result) {
        Some(s) => format!("{:.1} ±{:.1}", s.median, (s.max - s.min) / 2.0),
        None if result.get("wrong").is_some() => "WRONG".into(),
        None => "-".into(),
    }
}

fn ratio_cell(value: &Value) -> String {
    value.as_f64().map_or_else(|| "-".into(), |r| format!("{r:.2}"))
}

/// The human-readable tables.
fn table(doc: &Value) -> String {
    let mut out = String::new();
    let machine = &doc["machine"];
    let peaks = machine["peak_gflops"].as_object().cloned().unwrap_or_default();
    let peak_text: Vec<String> = peaks
        .iter()
        .filter_map(|(t, p)| {
            Stats::from_json(p)
                .map(|s| format!("{t} thread(s) {:.1} ({:.1}–{:.1})", s.median, s.min, s.max))
        })
        .collect();
    out += &format!(
        "GEMM, GFLOP/s: median ±half-range of {} interleaved runs; C = A·B, M = 512 tokens\n\
         machine: {} ({}), {} logical CPUs; ours: {}; FMA peak ({}): {}\n\
         command: {}\n\n",
        doc["reps"],
        machine["cpu"].as_str().unwrap_or("unknown CPU"),
        machine["arch"].as_str().unwrap_or("?"),
        machine["logical_cpus"],
        machine["gemm_isa"].as_str().unwrap_or("?"),
        machine["fma_isa"].as_str().unwrap_or("?"),
        peak_text.join(", "),
        doc["command"].as_str().unwrap_or(""),
    );
    let header = format!(
        "{:<10} {:<6} {:<16} {:>3}  {:>13} {:>13} {:>15} {:>13}  {:>9} {:>9}\n",
        "layer",
        "op",
        "m×n×k",
        "thr",
        "ours",
        "gemm",
        "matrixmultiply",
        "faer",
        "ours/best",
        "ours/peak"
    );
    let gemm_rows = doc["rows"].as_array().cloned().unwrap_or_default();
    if !gemm_rows.is_empty() {
        out += &header;
        out += &format!("{}\n", "-".repeat(header.chars().count() - 1));
    }
    for row in &gemm_rows {
        out += &format!(
            "{:<10} {:<6} {:<16} {:>3}  {:>13} {:>13} {:>15} {:>13}  {:>9} {:>9}\n",
            row["layer"].as_str().unwrap_or(""),
            row["formula"].as_str().unwrap_or(""),
            format!("{}×{}×{}", row["m"], row["n"], row["k"]),
            row["threads"],
            cell(&row["results"]["ours"]),
            cell(&row["results"]["gemm"]),
            cell(&row["results"]["matrixmultiply"]),
            cell(&row["results"]["faer"]),
            ratio_cell(&row["ours_over_best_peer"]),
            ratio_cell(&row["ours_over_peak"]),
        );
    }
    let half_rows = doc["half_rows"].as_array().cloned().unwrap_or_default();
    if !half_rows.is_empty() {
        out += "\nours with B in f16 / bf16 (widened while packing) against ours with B in f32, \
                GFLOP/s\n";
        let header = format!(
            "{:<10} {:<6} {:<16} {:>3}  {:>13} {:>13} {:>8} {:>13} {:>9}\n",
            "layer", "op", "m×n×k", "thr", "f32", "f16", "f16/f32", "bf16", "bf16/f32"
        );
        out += &header;
        out += &format!("{}\n", "-".repeat(header.chars().count() - 1));
        for row in &half_rows {
            out += &format!(
                "{:<10} {:<6} {:<16} {:>3}  {:>13} {:>13} {:>8} {:>13} {:>9}\n",
                row["layer"].as_str().unwrap_or(""),
                row["formula"].as_str().unwrap_or(""),
                format!("{}×{}×{}", row["m"], row["n"], row["k"]),
                row["threads"],
                cell(&row["results"]["f32"]),
                cell(&row["results"]["f16"]),
                ratio_cell(&row["f16_over_f32"]),
                cell(&row["results"]["bf16"]),
                ratio_cell(&row["bf16_over_f32"]),
            );
        }
    }
    let primitive_rows = doc["primitive_rows"].as_array().cloned().unwrap_or_default();
    if !primitive_rows.is_empty() {
        out += "\ntraining primitives, counted GFLOP/s (attention: the six products over the causally \
                visible scores;\nloss: the useful 2·tokens·hidden·vocab products, 3 with the head's \
                gradient, 2 without), against our GEMM\n(X·W 512×2304×768) interleaved with each row\n";
        let header = format!(
            "{:<18} {:<31} {:<15} {:>3}  {:>13} {:>13} {:>13} {:>9} {:>10}\n",
            "kernel",
            "case",
            "shape",
            "thr",
            "ms/call",
            "GFLOP/s",
            "GEMM",
            "over GEMM",
            "scratch MB"
        );
        out += &header;
        out += &format!("{}\n", "-".repeat(header.chars().count() - 1));
        for row in &primitive_rows {
            out += &format!(
                "{:<18} {:<31} {:<15} {:>3}  {:>13} {:>13} {:>13} {:>9} {:>10.1}\n",
                row["kernel"].as_str().unwrap_or(""),
                row["name"].as_str().unwrap_or(""),
                row["dims"].as_str().unwrap_or(""),
                row["threads"],
                cell(&row["ms_per_call"]),
                cell(&row["gflops"]),
                cell(&row["gemm_gflops"]),
                ratio_cell(&row["over_gemm"]),
                row["scratch_bytes"].as_f64().unwrap_or(0.0) / 1e6,
            );
        }
    }
    out.pop();
    out
}
