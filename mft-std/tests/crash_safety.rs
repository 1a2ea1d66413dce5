//! Crash safety of `mft finetune`: runs on the demo model are killed with SIGKILL at random
//! moments, at least 50 times, a third of them while a checkpoint file is being written; after
//! every kill the checkpoint on disk is whole and `--resume` continues from it (keeping the
//! metrics of the steps before it), and every chain of killed and resumed runs ends with the
//! same adapter, bit for bit, and the same per-step losses as one uninterrupted run.
//!
//! Host-only, as tests/cli.rs: under qemu the test cannot exec the `mft` binary it spawns.
#![cfg(not(target_arch = "aarch64"))]

#[allow(dead_code)] // the fixture helpers are for the other tests
mod run_mft;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use run_mft::{finetune_args, stderr};

/// Optimizer steps of every run.
const STEPS: u64 = 8;
/// Kills the test makes at least.
const KILLS: usize = 50;

/// A run of the demo: `--save-every 1` so that every step writes a checkpoint.
fn args(out: &Path, extra: Option<&str>) -> Vec<String> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let (model, data) = (root.join("demo/base"), root.join("demo/task/train.jsonl"));
    let steps = STEPS.to_string();
    let mut flags = vec!["--batch", "2", "--steps", &steps, "--save-every", "1"];
    flags.extend(["--eval-fraction", "0", "--quiet"]);
    flags.extend(extra);
    finetune_args(&model, &data, out, &flags)
}

fn spawn(out: &Path, extra: Option<&str>) -> Child {
    Command::new(env!("CARGO_BIN_EXE_mft"))
        .args(args(out, extra))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

/// `(step, loss)` of every training line of `dir/metrics.jsonl`.
fn losses(dir: &Path) -> Vec<(u64, u32)> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap();
    text.lines()
        .map(|line| serde_json::from_str::<serde_json::Value>(line).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| (v["step"].as_u64().unwrap(), (v["loss"].as_f64().unwrap() as f32).to_bits()))
        .collect()
}

/// The lines of `dir/metrics.jsonl` of steps up to `step`, as written. A kill may cut the
/// last line short (a resume drops it); any other line must be whole.
fn lines_up_to(dir: &Path, step: u64) -> Vec<String> {
    let text = std::fs::read_to_string(dir.join("metrics.jsonl")).unwrap_or_default();
    let count = text.lines().count();
    text.lines()
        .enumerate()
        .filter(|&(i, line)| match serde_json::from_str::<serde_json::Value>(line) {
            Ok(value) => value["step"].as_u64().is_some_and(|s| s <= step),
            Err(_) if i + 1 == count && !text.ends_with('\n') => false,
            Err(e) => panic!("{}: line {} is torn: {e}", dir.display(), i + 1),
        })
        .map(|(_, line)| line.to_string())
        .collect()
}

/// Names in `dir` of temporary files an atomic write leaves when it is killed.
fn temporaries(dir: &Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else { return Vec::new() };
    entries
        .flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|name| name.contains(".tmp-"))
        .collect()
}

/// The checkpoint left in `out` after a kill, checked whole: its state parses, names a
/// tensors file of its own step that is there and complete. `None` before the first save.
fn checkpoint_step(out: &Path) -> Option<u64> {
    let dir = out.join("checkpoint");
    let text = std::fs::read_to_string(dir.join("trainer_state.json")).ok()?;
    let state: serde_json::Value = serde_json::from_str(&text).expect("the state is never torn");
    let step = state["step"].as_u64().unwrap();
    let tensors = std::fs::read(dir.join(state["tensors"].as_str().unwrap()))
        .expect("the state names a tensors file that is there");
    let (_, meta) = safetensors::SafeTensors::read_metadata(&tensors).expect("a whole file");
    let stored = meta.metadata().as_ref().and_then(|m| m.get("step")).cloned();
    assert_eq!(stored, Some(step.to_string()), "the tensors are of the state's step");
    assert!(step <= STEPS);
    Some(step)
}

/// A SplitMix64 stream: the kill moments, the same on every run of the test.
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        (z ^ (z >> 31)) % n
    }
}

/// How a run ended.
enum End {
    Killed,
    Finished,
}

/// Waits for `child` to finish or until `kill_now` says to kill it (checked every 100 µs).
fn run_until(mut child: Child, mut kill_now: impl FnMut() -> bool) -> End {
    let started = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            let output = child.wait_with_output().unwrap();
            assert!(status.success(), "a run failed ({status}): {}", stderr(&output));
            return End::Finished;
        }
        if kill_now() {
            child.kill().unwrap(); // SIGKILL
            child.wait().unwrap();
            return End::Killed;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "a run made no progress");
        std::thread::sleep(Duration::from_micros(100));
    }
}

#[test]
fn finetune_killed_at_random_moments_resumes_to_the_uninterrupted_result() {
    let dir = tempfile::tempdir().unwrap();
    let reference = dir.path().join("reference");
    let started = Instant::now();
    let End::Finished = run_until(spawn(&reference, None), || false) else { unreachable!() };
    let span = started.elapsed().max(Duration::from_millis(50));
    let (adapter, reference_losses) =
        (std::fs::read(reference.join("adapter_model.safetensors")).unwrap(), losses(&reference));
    assert_eq!(reference_losses.len(), STEPS as usize);

    let mut rng = Rng(0x5EED);
    let (mut kills, mut in_writes, mut chains, mut resumed, mut stale) = (0, 0, 0, 0, 0);
    while kills < KILLS {
        let out: PathBuf = dir.path().join(format!("chain{chains}"));
        chains += 1;
        // Each chain of runs is killed 1 to 8 times, then runs to its end.
        let chain_kills = kills + 1 + rng.below(8) as usize;
        loop {
            // Resume from the checkpoint when there is one; killed before the first save,
            // the run starts over.
            let done = checkpoint_step(&out);
            let flag = if done.is_some() { "--resume" } else { "--overwrite" };
            resumed += usize::from(done.is_some());
            // The moments to choose from: this run's share of the uninterrupted one.
            let left = STEPS - done.unwrap_or(0);
            let checkpoints = out.join("checkpoint");
            let before = temporaries(&checkpoints);
            // A resumed run continues: it keeps the lines of the steps it does not redo.
            let kept = lines_up_to(&out, done.unwrap_or(0));
            let child = spawn(&out, Some(flag));
            let end = if kills >= chain_kills.min(KILLS) {
                run_until(child, || false)
            } else if kills % 3 == 0 {
                // While the n-th temporary file of this run's checkpoint writes is there.
                let n = 1 + rng.below(2 * left.max(1)) as usize;
                let mut seen: Vec<String> = Vec::new();
                run_until(child, || {
                    for name in temporaries(&checkpoints) {
                        if !seen.contains(&name) && !before.contains(&name) {
                            seen.push(name);
                        }
                    }
                    seen.len() >= n
                })
            } else {
                let share = span.as_micros() as u64 * (left + 1) / (STEPS + 1);
                let at = Duration::from_micros(rng.below(share.max(1)));
                let start = Instant::now();
                run_until(child, || start.elapsed() >= at)
            };
            if done.is_some() {
                assert_eq!(lines_up_to(&out, done.unwrap_or(0)), kept, "a resume redid steps");
            }
            match end {
                End::Killed => {
                    kills += 1;
                    let left_behind = temporaries(&checkpoints);
                    in_writes += usize::from(left_behind.iter().any(|t| !before.contains(t)));
                    checkpoint_step(&out);
                }
                End::Finished => break,
            }
        }
        let chain_adapter = std::fs::read(out.join("adapter_model.safetensors")).unwrap();
        assert!(chain_adapter == adapter, "{}: the adapter differs", out.display());
        assert_eq!(losses(&out), reference_losses, "{}: the losses differ", out.display());
        assert_eq!(temporaries(&out.join("checkpoint")), Vec::<String>::new());
        // Outside the checkpoint a killed write may leave its temporary file (reported only).
        stale += temporaries(&out).len();
    }
    eprintln!(
        "{kills} kills ({in_writes} during a checkpoint write) in {chains} chains, {resumed} \
         resumes, {stale} temporary files left in --out, in {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert!(in_writes >= 5, "only {in_writes} kills hit a checkpoint write");
    assert!(resumed >= KILLS / 2, "only {resumed} runs resumed from a checkpoint");
}
