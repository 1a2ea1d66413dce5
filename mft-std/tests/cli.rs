//! The `mft` command end to end on the tiny GPT-2 fixture: a LoRA run writes a PEFT adapter that
//! `mft eval` reads back, resuming continues a run, and bad input gets one line naming the
//! problem, a non-zero exit, and leaves what was written alone.
//!
//! Host-only: the aarch64 cross run executes test binaries under qemu user mode, where the test
//! cannot exec the (aarch64) `mft` binary it spawns; the library paths it drives are covered
//! there by the other tests, and this file runs in CI's host test phase.
#![cfg(not(target_arch = "aarch64"))]

mod run_mft;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use run_mft::{finetune_args, fixture, ids_file, stderr};

fn mft(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_mft")).args(args).output().expect("mft runs")
}

#[test]
fn finetune_writes_an_adapter_that_eval_reads_and_resume_continues() {
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let out = dir.path().join("run");
    let model = fixture().display().to_string();
    let (data_s, out_s) = (data.display().to_string(), out.display().to_string());
    let common = [
        "finetune",
        "--model",
        &model,
        "--data",
        &data_s,
        "--out",
        &out_s,
        "--seq",
        "16",
        "--lr",
        "0.01",
        "--threads",
        "1",
        "--quiet",
    ];
    let run = mft(&[&common[..], &["--steps", "6", "--json"]].concat());
    assert!(run.status.success(), "{}", stderr(&run));
    let summary: serde_json::Value = serde_json::from_slice(&run.stdout).unwrap();
    assert_eq!(summary["steps"], 6);
    for file in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "metrics.jsonl",
        "loss.svg",
        "checkpoint/trainer_state.json",
    ] {
        assert!(out.join(file).exists(), "{file} missing");
    }
    let adapter_before = std::fs::read(out.join("adapter_model.safetensors")).unwrap();

    // A second run into the same directory is refused and changes nothing.
    let again = mft(&[&common[..], &["--steps", "6"]].concat());
    assert!(!again.status.success());
    assert!(
        stderr(&again).contains("previous run") && stderr(&again).contains(&out_s),
        "{}",
        stderr(&again)
    );
    assert_eq!(std::fs::read(out.join("adapter_model.safetensors")).unwrap(), adapter_before);

    // --resume continues to step 9: three more train lines in metrics.jsonl, after the earlier
    // lines kept as they were.
    let before = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let resumed = mft(&[&common[..], &["--steps", "9", "--resume", "--json"]].concat());
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let metrics = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    assert!(metrics.starts_with(&before), "earlier lines rewritten:\n{before}\n---\n{metrics}");
    assert!(before.contains("\"grad_norm\""), "{before}");
    let steps: Vec<u64> = metrics
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .filter(|v| v["kind"] == "train")
        .map(|v| v["step"].as_u64().unwrap())
        .collect();
    assert_eq!(steps, (1..=9).collect::<Vec<_>>());

    let eval = mft(&[
        "eval",
        "--model",
        &model,
        "--adapter",
        &out_s,
        "--data",
        &data_s,
        "--json",
        "--threads",
        "1",
    ]);
    assert!(eval.status.success(), "{}", stderr(&eval));
    let e: serde_json::Value = serde_json::from_slice(&eval.stdout).unwrap();
    let (loss, ppl) = (e["loss"].as_f64().unwrap(), e["ppl"].as_f64().unwrap());
    assert!(
        loss > 0.0 && (ppl - loss.exp()).abs() < 1e-6 * ppl && e["tokens"].as_u64().unwrap() > 0
    );
}

#[test]
fn bad_input_gets_one_line_and_a_failure() {
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let model = fixture().display().to_string();
    let data_s = data.display().to_string();
    let out_s = dir.path().join("out").display().to_string();
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--seq".into(), "64".into()], "beyond the model's context of 32"),
        (vec!["--model".into(), "random:nonsense".into()], "neither a preset"),
        (
            vec!["--model".into(), dir.path().join("nowhere").display().to_string()],
            "no such model directory",
        ),
        (
            vec!["--data".into(), dir.path().join("missing.jsonl").display().to_string()],
            "missing.jsonl",
        ),
        (vec!["--lora-targets".into(), "q_proj".into()], "q_proj"),
    ];
    for (flags, expected) in cases {
        let mut args: Vec<String> = [
            "finetune", "--model", &model, "--data", &data_s, "--out", &out_s, "--seq", "16",
            "--steps", "2", "--quiet",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect();
        // A later flag replaces an earlier one of the same name.
        for pair in flags.chunks(2) {
            if let Some(i) = args.iter().position(|a| *a == pair[0]) {
                args[i + 1] = pair[1].clone();
            } else {
                args.extend_from_slice(pair);
            }
        }
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = mft(&refs);
        let err = stderr(&o);
        assert!(!o.status.success(), "{flags:?} succeeded");
        assert!(err.contains(expected), "{flags:?}: {err}");
        assert_eq!(err.trim_end().lines().count(), 1, "{flags:?}: more than one line: {err}");
    }
    // A malformed JSONL line is reported with its line number.
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"ids\": [1, 2, 3]}\n{\"ids\": [1, 2,\n").unwrap();
    let o = mft(&[
        "finetune",
        "--model",
        &model,
        "--data",
        &bad.display().to_string(),
        "--out",
        &out_s,
        "--seq",
        "16",
        "--quiet",
    ]);
    assert!(!o.status.success());
    assert!(stderr(&o).contains("bad.jsonl:2:"), "{}", stderr(&o));
}

/// Ctrl-C (SIGINT) finishes the current step, saves a checkpoint and the adapter, exits 130;
/// `--resume` then ends with the adapter an uninterrupted run writes, byte for byte.
#[test]
fn ctrl_c_saves_and_resume_finishes_the_same_run() {
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let model = fixture().display().to_string();
    let data_s = data.display().to_string();
    let args = |out: &Path, steps: u64| -> Vec<String> {
        [
            "finetune",
            "--model",
            &model,
            "--data",
            &data_s,
            "--seq",
            "16",
            "--lr",
            "0.01",
            "--optimizer",
            "adamw",
            "--threads",
            "1",
            "--quiet",
            "--json",
            "--out",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([out.display().to_string(), "--steps".into(), steps.to_string()])
        .collect()
    };

    let out = dir.path().join("interrupted");
    let child = Command::new(env!("CARGO_BIN_EXE_mft"))
        .args(args(&out, 1_000_000))
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Wait until it trains, then interrupt it as a terminal's Ctrl-C does.
    let metrics = out.join("metrics.jsonl");
    let started = std::time::Instant::now();
    while std::fs::read_to_string(&metrics).map_or(0, |m| m.lines().count()) < 3 {
        assert!(started.elapsed().as_secs() < 60, "no training steps within 60 s");
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
    let kill = Command::new("kill").args(["-INT", &child.id().to_string()]).status().unwrap();
    assert!(kill.success());
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(130), "{}", stderr(&output));
    let summary: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(summary["interrupted"], true);
    let stopped_at = summary["steps"].as_u64().unwrap();
    assert!((3..1_000_000).contains(&stopped_at), "{stopped_at}");
    let state = std::fs::read_to_string(out.join("checkpoint/trainer_state.json")).unwrap();
    let state: serde_json::Value = serde_json::from_str(&state).unwrap();
    assert_eq!(state["step"].as_u64(), Some(stopped_at), "{state}");
    assert!(out.join("adapter_model.safetensors").exists());

    let total = stopped_at + 3;
    let mut resume = args(&out, total);
    resume.push("--resume".into());
    let resumed = Command::new(env!("CARGO_BIN_EXE_mft")).args(&resume).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let straight_out = dir.path().join("straight");
    let straight =
        Command::new(env!("CARGO_BIN_EXE_mft")).args(args(&straight_out, total)).output();
    let straight = straight.unwrap();
    assert!(straight.status.success(), "{}", stderr(&straight));
    let adapter = |dir: &Path| std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    assert!(adapter(&out) == adapter(&straight_out), "resumed adapter differs");
}

/// `--mem-budget`: the smallest budget that works pages the frozen blocks and embeddings,
/// checkpoints every block and splits the batch into micro-batches of one, and trains exactly
/// what the unconstrained run with those micro-batches trains; a byte less is refused in one
/// line naming that smallest budget, before anything is written.
/// A four-block GPT-2 snapshot (two paging slots hold less than its blocks do) in `dir/model`,
/// the model, and the LoRA layout of [`PAGED_LORA_ARGS`].
fn paged_snapshot(dir: &Path) -> (PathBuf, mft_models::Model, mft_models::LoraLayout) {
    let mut config = mft_models::ModelConfig::gpt2_with(32, 4, 4);
    config.vocab = 96;
    config.max_positions = 32;
    let snapshot = dir.join("model");
    let weights = mft_std::random::random_weights::<f32>(&config, 5);
    let params = mft_models::ParamLayout::new(&config);
    mft_std::export::export_hf_snapshot(&snapshot, &config, &params, weights.as_weights(), None)
        .unwrap();
    let targets = mft_models::LoraTargets::from_module_names(config.family, ["c_attn", "c_proj"]);
    let lora = mft_models::LoraConfig {
        rank: 4,
        alpha: 8.0,
        dropout: 0.0,
        rslora: false,
        targets: targets.unwrap(),
    };
    let layout = mft_models::LoraLayout::new(&config, &lora);
    (snapshot, mft_models::Model::new(config).unwrap(), layout)
}

/// The LoRA flags of runs on [`paged_snapshot`].
const PAGED_LORA_ARGS: [&str; 6] =
    ["--lora-targets", "c_attn,c_proj", "--lora-r", "4", "--lora-dropout", "0"];

#[test]
fn mem_budget_pages_and_refuses_what_does_not_fit() {
    use mft_std::budget::{MemBudget, StepShape, estimate, mib};
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let (snapshot, m, layout) = paged_snapshot(dir.path());
    let config = *m.config();
    let model = snapshot.display().to_string();
    let data_s = data.display().to_string();
    let lora_args = PAGED_LORA_ARGS;
    let shape = StepShape { batch: 4, seq: 16, threads: 1, tokenizer_bytes: 0, training: true };
    let f32 = mft_core::DType::F32;
    let paging = mft_models::Paging::BlocksAndEmbeddings;
    let micro = StepShape { batch: 1, ..shape };
    let smallest = estimate(&m, Some(&layout), f32, micro, config.layers, paging).total();
    let off = mft_models::Paging::Off;
    let resident = estimate(&m, Some(&layout), f32, shape, config.layers, off).total();
    assert!(smallest < resident, "paging saves memory here");
    let run = |out: &Path, extra: &[&str]| {
        let out_s = out.display().to_string();
        let mut args = vec![
            "finetune",
            "--model",
            &model,
            "--data",
            &data_s,
            "--out",
            &out_s,
            "--seq",
            "16",
            "--steps",
            "3",
            "--threads",
            "1",
            "--eval-fraction",
            "0",
        ];
        args.extend_from_slice(&lora_args);
        args.extend_from_slice(extra);
        mft(&args)
    };
    // The smallest plan splits the batch of 4 into micro-batches of 1: the plain run that
    // trains the same way accumulates 4 micro-batches of 1.
    let plain_out = dir.path().join("plain");
    let plain = run(&plain_out, &["--batch", "1", "--grad-accum", "4"]);
    assert!(plain.status.success(), "{}", stderr(&plain));

    let budget = format!("{smallest}");
    let paged_out = dir.path().join("paged");
    let paged = run(&paged_out, &["--batch", "4", "--mem-budget", &budget]);
    assert!(paged.status.success(), "{}", stderr(&paged));
    let said = stderr(&paged);
    let expected = format!(
        "frozen blocks and embeddings paged, {} blocks checkpointed, micro-batches of 1",
        config.layers
    );
    assert!(said.contains(&expected), "{said}");
    let adapter = |dir: &Path| std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    assert!(adapter(&paged_out) == adapter(&plain_out), "the paged run trained differently");

    let too_small = format!("{}", smallest - 1);
    let refused_out = dir.path().join("refused");
    let refused = run(&refused_out, &["--batch", "4", "--mem-budget", &too_small]);
    assert!(!refused.status.success());
    let said = stderr(&refused);
    assert_eq!(said.lines().count(), 1, "{said}");
    let smallest_text = format!("the smallest that works is {}", mib(smallest));
    assert!(said.contains(&smallest_text), "{said}");
    assert!(!refused_out.exists(), "nothing written");
    assert_eq!(MemBudget(smallest - 1).to_string(), mib(smallest - 1));
}

/// `mft finetune --full --mem-budget`: a budget below what full fine-tuning keeps in memory
/// pages the blocks' weights, gradients and moments through a scratch file in `--out` (gone
/// when the run ends), and the snapshot it exports is byte for byte the unpaged run's.
#[test]
fn full_fine_tuning_in_a_budget_pages_and_exports_the_same_snapshot() {
    use mft_std::budget::{StepShape, estimate};
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let mut config = mft_models::ModelConfig::gpt2_with(64, 8, 4);
    config.vocab = 96;
    config.max_positions = 32;
    let snapshot = dir.path().join("model");
    let weights = mft_std::random::random_weights::<f32>(&config, 5);
    let params = mft_models::ParamLayout::new(&config);
    mft_std::export::export_hf_snapshot(&snapshot, &config, &params, weights.as_weights(), None)
        .unwrap();
    let model = mft_models::Model::new(config).unwrap();
    let shape = StepShape { batch: 2, seq: 16, threads: 1, tokenizer_bytes: 0, training: true };
    let f32 = mft_core::DType::F32;
    let paged_estimate = estimate(&model, None, f32, shape, 0, mft_models::Paging::Blocks);
    let resident = estimate(&model, None, f32, shape, 0, mft_models::Paging::Off);
    assert!(paged_estimate.total() < resident.total(), "{paged_estimate} vs {resident}");
    let run = |out: &Path, extra: &[&str]| {
        let mut flags = vec!["--full", "--batch", "2", "--steps", "3", "--eval-fraction", "0"];
        flags.extend_from_slice(extra);
        let args = finetune_args(&snapshot, &data, out, &flags);
        mft(&args.iter().map(String::as_str).collect::<Vec<_>>())
    };
    let plain_out = dir.path().join("plain");
    let plain = run(&plain_out, &[]);
    assert!(plain.status.success(), "{}", stderr(&plain));
    let budget = paged_estimate.total().to_string();
    let paged_out = dir.path().join("paged");
    let paged = run(&paged_out, &["--mem-budget", &budget]);
    assert!(paged.status.success(), "{}", stderr(&paged));
    let said = stderr(&paged);
    assert!(said.contains("blocks paged, 0 blocks checkpointed, micro-batches of 2"), "{said}");
    let weights = |dir: &Path| std::fs::read(dir.join("model.safetensors")).unwrap();
    assert!(weights(&paged_out) == weights(&plain_out), "the paged run trained differently");
    let scratch = std::fs::read_dir(&paged_out)
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with("mft-scratch-"))
        .count();
    assert_eq!(scratch, 0, "the scratch file is removed");
}

/// A paged run (`--mem-budget`, saving every step) killed with SIGKILL at arbitrary moments,
/// during steps and checkpoint writes alike, always resumes from a readable checkpoint and
/// ends with the adapter of a run that was never killed.
#[test]
fn a_paged_run_killed_mid_step_resumes_to_the_same_result() {
    use mft_std::budget::{StepShape, estimate};
    let dir = tempfile::tempdir().unwrap();
    let data = ids_file(dir.path());
    let (snapshot, m, layout) = paged_snapshot(dir.path());
    let shape = StepShape { batch: 4, seq: 16, threads: 1, tokenizer_bytes: 0, training: true };
    let paging = mft_models::Paging::BlocksAndEmbeddings;
    let budget = estimate(&m, Some(&layout), mft_core::DType::F32, shape, 0, paging).total();
    let steps = 60;
    let (budget, steps_text) = (budget.to_string(), steps.to_string());
    let args = |out: &Path| -> Vec<String> {
        let flags = [
            &["--batch", "4", "--save-every", "1", "--eval-fraction", "0", "--quiet"][..],
            &["--mem-budget", &budget, "--steps", &steps_text],
            &PAGED_LORA_ARGS,
        ];
        finetune_args(&snapshot, &data, out, &flags.concat())
    };
    let out = dir.path().join("killed");
    let state = out.join("checkpoint/trainer_state.json");
    let mut last_step = 0;
    for (kill, delay_us) in [(0, 300), (1, 1700), (2, 50), (3, 900)] {
        let mut command = args(&out);
        if kill > 0 {
            command.push("--resume".into());
        }
        let mut child = Command::new(env!("CARGO_BIN_EXE_mft")).args(&command).spawn().unwrap();
        // Let it take a few steps past the last checkpoint, then kill it a little later.
        let started = std::time::Instant::now();
        let step_of = || -> u64 {
            let Ok(text) = std::fs::read_to_string(&state) else { return 0 };
            let state: serde_json::Value = serde_json::from_str(&text).expect("never corrupt");
            state["step"].as_u64().unwrap()
        };
        while step_of() < last_step + 3 {
            assert!(started.elapsed().as_secs() < 60, "no progress within 60 s");
            if let Some(status) = child.try_wait().unwrap() {
                panic!("run {kill} ended ({status}) after step {last_step} (its stderr is above)");
            }
            std::thread::sleep(std::time::Duration::from_micros(200));
        }
        std::thread::sleep(std::time::Duration::from_micros(delay_us));
        child.kill().unwrap();
        child.wait().unwrap();
        last_step = step_of();
        assert!(last_step < steps, "the run finished before it was killed");
    }
    let mut resume = args(&out);
    resume.push("--resume".into());
    let resumed = Command::new(env!("CARGO_BIN_EXE_mft")).args(&resume).output().unwrap();
    assert!(resumed.status.success(), "{}", stderr(&resumed));
    let straight_out = dir.path().join("straight");
    let straight = Command::new(env!("CARGO_BIN_EXE_mft")).args(args(&straight_out)).output();
    let straight = straight.unwrap();
    assert!(straight.status.success(), "{}", stderr(&straight));
    let adapter = |dir: &Path| std::fs::read(dir.join("adapter_model.safetensors")).unwrap();
    assert!(adapter(&out) == adapter(&straight_out), "the killed run trained differently");
}
