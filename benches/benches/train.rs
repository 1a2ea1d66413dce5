//! Whole training steps at real model shapes, with random weights (nothing is downloaded):
//! `cargo xtask bench train --model gpt2 --mode lora` (or `cargo bench -p mft-benches --bench
//! train -- …`). One step is what `scripts/torch_step.py` times for PyTorch: forward, backward,
//! the AdamW update of every trainable tensor, and zeroing the gradients.
//!
//! Flags: `--model gpt2|gpt2-medium|qwen2.5-0.5b|gemma3-270m|gemma3-1b`, `--mode lora|full`,
//! `--batch 4`, `--seq 128`, `--threads 2`, `--steps 8` (timed, after `--warmup 2`),
//! `--frozen f32|bf16|f16` (LoRA: the dtype of the frozen weights), `--rank 8`, `--targets
//! c_attn,c_proj` (default: GPT-2 `c_attn,c_proj`, others `q_proj,k_proj,v_proj,o_proj`),
//! `--checkpointing` (all blocks) or `--checkpoint-blocks K` (the first K), `--json` (one JSON object: `median_step_s`, `min_step_s`,
//! `tokens_per_s`, `peak_rss_bytes`, and the settings).
//!
//! `--device cuda` (a build with `--features cuda`, which `cargo xtask bench train --device cuda`
//! makes): every GEMM is offered to cuBLAS first (LoRA: the frozen store kept on the GPU); with
//! no usable driver, one notice and the run stays on the CPU. Without the feature, an error.
//!
//! `--mem-budget SIZE`: the run `mft finetune --mem-budget` makes. The planner of
//! [`mft_std::budget`] chooses what is paged, how many blocks are checkpointed and the
//! micro-batch, and the plan is printed; the weights come from a checkpoint of random weights at
//! the model's shapes, its matrices stored in the `--frozen` type, written once (piece by piece)
//! under Cargo's target tmpdir and reused; the JSON adds `mem_budget_bytes`, `paging`,
//! `micro_batch` and `estimated_peak_bytes`. Peak RSS is the whole process's VmHWM. Full
//! fine-tuning with a budget runs through mft-std's trainer (clipping at 1, AdamW at 1e-4), its
//! blocks' weights, gradients and moments paged through a scratch file when the plan says so;
//! `--digest` (full) prints a digest of the weights after the run, to compare a paged run with
//! an unpaged one (`--digest` without `--mem-budget`) bit for bit.

use std::hash::Hasher;
use std::path::PathBuf;
use std::time::Instant;

use mft_kernels::{AdamW, GemmOffload, GemmRhs, Kernels, bf16, f16};
use mft_models::rng::Counter;
use mft_models::{
    Adapters, Batch, Gradients, LoraConfig, LoraLayout, LoraTargets, Model, ModelConfig, Paging,
    Purpose, StepOptions, Weights,
};
use mft_std::ThreadPool;
use mft_std::budget::{self, BudgetPlan, MemBudget, StepShape};
use mft_std::data::{Batcher, Example};
use mft_std::device::Device;
use mft_std::finetune::default_targets;
use mft_std::hf::{load_weights, load_weights_paged};
use mft_std::mft_core::DType;
use mft_std::mft_core::Element;
use mft_std::progress::peak_rss_bytes;
use mft_std::random::write_random_checkpoint;
use mft_std::train::{
    OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainOptions, Trainable, Trainer,
};

/// The settings of a run, from the command line.
#[derive(Debug, Clone)]
struct Settings {
    model: String,
    lora: bool,
    batch: usize,
    seq: usize,
    threads: usize,
    steps: usize,
    warmup: usize,
    frozen: String,
    rank: usize,
    targets: Option<String>,
    checkpointed_blocks: usize,
    mem_budget: Option<MemBudget>,
    json: bool,
    digest: bool,
    /// `--device cpu|cuda`.
    device: Device,
    /// The GEMM backend `device` resolved to (set in `main`).
    offload: Option<&'static dyn GemmOffload>,
}

fn parse_args() -> Result<Settings, String> {
    let mut s = Settings {
        model: "gpt2".into(),
        lora: true,
        batch: 4,
        seq: 128,
        threads: 2,
        steps: 8,
        warmup: 2,
        frozen: "f32".into(),
        rank: 8,
        targets: None,
        checkpointed_blocks: 0,
        mem_budget: None,
        json: false,
        digest: false,
        device: Device::Cpu,
        offload: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = |name: &str| args.next().ok_or(format!("{name} needs a value"));
        let number = |name: &str, v: String| {
            v.parse::<usize>()
                .ok()
                .filter(|&n| n > 0)
                .ok_or(format!("{name}: `{v}` is not a positive integer"))
        };
        match arg.as_str() {
            "--model" => s.model = value("--model")?,
            "--mode" => {
                s.lora = match value("--mode")?.as_str() {
                    "lora" => true,
                    "full" => false,
                    other => return Err(format!("--mode: `{other}` is neither lora nor full")),
                }
            }
            "--batch" => s.batch = number("--batch", value("--batch")?)?,
            "--seq" => s.seq = number("--seq", value("--seq")?)?,
            "--threads" => s.threads = number("--threads", value("--threads")?)?,
            "--steps" => s.steps = number("--steps", value("--steps")?)?,
            "--warmup" => {
                s.warmup = value("--warmup")?.parse().map_err(|_| "--warmup: not a number")?
            }
            "--frozen" => s.frozen = value("--frozen")?,
            "--rank" => s.rank = number("--rank", value("--rank")?)?,
            "--targets" => s.targets = Some(value("--targets")?),
            "--checkpointing" => s.checkpointed_blocks = usize::MAX,
            "--checkpoint-blocks" => {
                let v = value("--checkpoint-blocks")?;
                s.checkpointed_blocks =
                    v.parse().map_err(|_| format!("--checkpoint-blocks: `{v}` is not a number"))?
            }
            "--mem-budget" => {
                let v = value("--mem-budget")?;
                s.mem_budget = Some(v.parse().map_err(|e| format!("--mem-budget: {e}"))?);
            }
            "--json" => s.json = true,
            "--device" => {
                s.device = match value("--device")?.as_str() {
                    "cpu" => Device::Cpu,
                    "cuda" => Device::Cuda,
                    other => return Err(format!("--device: `{other}` is neither cpu nor cuda")),
                }
            }
            "--digest" => s.digest = true,
            // cargo bench passes --bench to harness-less targets.
            "--bench" => {}
            other => return Err(format!("unknown argument `{other}`")),
        }
    }
    Ok(s)
}

/// `len` values uniform in `[-scale, scale)`, filled in parallel chunks.
fn random_values<T: GemmRhs + Send>(len: usize, seed: u64, scale: f32, offset: f32) -> Vec<T> {
    let rng = Counter::new(seed, &[]);
    let mut out = vec![T::default(); len];
    std::thread::scope(|scope| {
        let chunk = len.div_ceil(4).max(1);
        for (c, part) in out.chunks_mut(chunk).enumerate() {
            scope.spawn(move || {
                for (i, v) in part.iter_mut().enumerate() {
                    let x = (2.0 * rng.uniform((c * chunk + i) as u64) - 1.0) * scale + offset;
                    *v = T::from_f32(x);
                }
            });
        }
    });
    out
}

fn median(sorted: &[f64]) -> f64 {
    let n = sorted.len();
    if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 }
}

/// The whole batch's token ids, random.
fn batch_ids(s: &Settings, config: &ModelConfig) -> Vec<u32> {
    let rng = Counter::new(3, &[]);
    (0..s.batch * s.seq).map(|i| (rng.bits(i as u64) % config.vocab as u64) as u32).collect()
}

/// What every run needs: the model, its batch and workspace, and the threads.
struct Bench {
    model: Model,
    kernels: Kernels,
    pool: ThreadPool,
    ids: Vec<u32>,
    targets: Vec<i32>,
    workspace: Vec<f32>,
    options: StepOptions,
    hyper: AdamW,
}

impl Bench {
    /// The model, the whole batch's data, and a workspace for micro-batches of `micro_batch`
    /// sequences with `checkpointed_blocks`.
    fn new(
        s: &Settings,
        config: ModelConfig,
        lora: Option<&LoraLayout>,
        micro_batch: usize,
        checkpointed_blocks: usize,
    ) -> Result<Bench, String> {
        let model = Model::new(config).map_err(|e| e.to_string())?;
        let kernels = Kernels::best().with_gemm_offload(s.offload);
        let pool = ThreadPool::new(s.threads).map_err(|e| e.to_string())?;
        let ids = batch_ids(s, &config);
        let n = ids.len();
        let labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let mut targets = vec![0; n];
        mft_models::shift_labels(&labels, s.seq, &mut targets);
        let purpose = Purpose::Train { checkpointed_blocks };
        let sizes = model.workspace_sizes(&kernels, lora, micro_batch, s.seq, purpose, s.threads);
        let len = sizes.total();
        eprintln!(
            "workspace: {:.0} MB saved activations, {:.0} MB scratch",
            sizes.saved as f64 * 4e-6,
            sizes.scratch as f64 * 4e-6
        );
        Ok(Bench {
            model,
            kernels,
            pool,
            ids,
            targets,
            workspace: vec![0.0; len],
            options: StepOptions { checkpointed_blocks, ..StepOptions::default() },
            hyper: AdamW { lr: 1e-4, ..AdamW::default() },
        })
    }
}

/// Times `step` (`warmup` untimed calls, then `steps` timed ones) and prints the result, with
/// the plan's settings when the run has a memory budget.
fn measure(
    s: &Settings,
    config_layers: usize,
    plan: Option<&BudgetPlan>,
    mut step: impl FnMut(u64) -> f32,
) {
    let mut times = Vec::new();
    for i in 0..s.warmup + s.steps {
        let start = Instant::now();
        let loss = step(i as u64 + 1);
        let secs = start.elapsed().as_secs_f64();
        eprintln!(
            "step {:>2}/{}: {secs:.3} s, loss {loss:.4}{}",
            i + 1,
            s.warmup + s.steps,
            if i < s.warmup { " (warm-up)" } else { "" }
        );
        if i >= s.warmup {
            times.push(secs);
        }
    }
    let mut sorted = times.clone();
    sorted.sort_by(f64::total_cmp);
    let median_s = median(&sorted);
    let tokens_per_s = (s.batch * s.seq) as f64 / median_s;
    let rss = peak_rss_bytes();
    let mode = if s.lora { "lora" } else { "full" };
    let checkpointed = plan.map_or(s.checkpointed_blocks, |p| p.checkpointed_blocks);
    if s.json {
        let mut doc = serde_json::json!({
            "implementation": "mft",
            "model": s.model, "mode": mode, "batch": s.batch, "seq": s.seq, "threads": s.threads,
            "steps": s.steps, "frozen_dtype": if s.lora { s.frozen.as_str() } else { "f32" },
            "checkpointed_blocks": checkpointed.min(config_layers), "rank": s.rank,
            "median_step_s": median_s, "min_step_s": sorted[0], "tokens_per_s": tokens_per_s,
            "peak_rss_bytes": rss, "step_s": times,
        });
        if let (Some(plan), Some(budget)) = (plan, s.mem_budget) {
            doc["mem_budget_bytes"] = budget.0.into();
            doc["paging"] = format!("{:?}", plan.paging).into();
            doc["micro_batch"] = plan.micro_batch.into();
            doc["estimated_peak_bytes"] = plan.total().into();
        }
        println!("{doc}");
    } else {
        println!(
            "mft {} {mode} batch {}×{} on {} threads{}: median {median_s:.3} s, min {:.3} s, {tokens_per_s:.0} tokens/s, peak RSS {:.0} MB",
            s.model,
            s.batch,
            s.seq,
            s.threads,
            match checkpointed.min(config_layers) {
                0 => String::new(),
                k => format!(", {k} checkpointed blocks"),
            },
            sorted[0],
            rss as f64 / 1e6
        );
    }
}

/// LoRA: frozen weights in `T`, adapters and their AdamW state in f32.
fn run_lora<T: GemmRhs + Element + Send + Sync>(
    s: &Settings,
    config: ModelConfig,
) -> Result<(), String> {
    let names = s.targets.clone().unwrap_or_else(|| default_targets(config.family).join(","));
    let targets = LoraTargets::from_module_names(config.family, names.split(','))
        .map_err(|e| format!("--targets {names}: {e}"))?;
    let lora = LoraConfig {
        rank: s.rank,
        alpha: 2.0 * s.rank as f32,
        dropout: 0.05,
        rslora: false,
        targets,
    };
    let layout = LoraLayout::new(&config, &lora);
    if let Some(budget) = s.mem_budget {
        return run_lora_in_budget::<T>(s, config, &layout, budget);
    }
    let mut bench = Bench::new(s, config, Some(&layout), s.batch, s.checkpointed_blocks)?;
    let params = *bench.model.layout();
    let matrices: Vec<T> = random_values(params.matrix_len(), 1, 0.02, 0.0);
    let vectors: Vec<f32> = random_values(params.vector_len(), 2, 0.02, 1.0);
    // The frozen store stays on the offload's device for the whole run (released below).
    let resident = s.offload.filter(|o| o.keep_resident(T::rhs_data(&matrices)));
    if resident.is_some() {
        eprintln!(
            "{:.0} MB of frozen weights resident on the device",
            size_of_val(&matrices[..]) as f64 / 1e6
        );
    }
    let mut adapters = vec![0.0; layout.len()];
    layout.init(4, &mut adapters);
    let (mut grads, mut m, mut v) =
        (vec![0.0; layout.len()], vec![0.0; layout.len()], vec![0.0; layout.len()]);
    measure(s, config.layers, None, |step| {
        grads.fill(0.0);
        let b = &mut bench;
        let weights = Weights::new(&matrices, &vectors);
        let a = Adapters { layout: &layout, weights: &adapters };
        let options = StepOptions { dropout_seed: step, ..b.options };
        let batch = Batch { input_ids: &b.ids, targets: &b.targets, batch: s.batch, seq: s.seq };
        let loss = b
            .model
            .train_step(
                &b.kernels,
                weights,
                Some(a),
                Gradients::Lora(&mut grads),
                &batch,
                options,
                &mut b.workspace,
                &b.pool,
            )
            .expect("the step runs");
        b.kernels.adamw_step(&b.hyper, step, &mut adapters, &grads, &mut m, &mut v, &b.pool);
        loss.loss
    });
    if let Some(offload) = resident {
        offload.release(matrices.as_ptr() as usize);
    }
    Ok(())
}

/// Full fine-tuning: every parameter in f32, with gradients and AdamW moments.
fn run_full(s: &Settings, config: ModelConfig) -> Result<(), String> {
    if s.mem_budget.is_some() || s.digest {
        return run_full_trainer(s, config);
    }
    let mut bench = Bench::new(s, config, None, s.batch, s.checkpointed_blocks)?;
    let params = *bench.model.layout();
    let mut matrices: Vec<f32> = random_values(params.matrix_len(), 1, 0.02, 0.0);
    let mut vectors: Vec<f32> = random_values(params.vector_len(), 2, 0.02, 1.0);
    let zeros = |n| vec![0.0f32; n];
    let (mut gm, mut gv) = (zeros(params.matrix_len()), zeros(params.vector_len()));
    let (mut mm, mut vm) = (zeros(params.matrix_len()), zeros(params.matrix_len()));
    let (mut mv, mut vv) = (zeros(params.vector_len()), zeros(params.vector_len()));
    measure(s, config.layers, None, |step| {
        gm.fill(0.0);
        gv.fill(0.0);
        let b = &mut bench;
        let batch = Batch { input_ids: &b.ids, targets: &b.targets, batch: s.batch, seq: s.seq };
        let grads = Gradients::Full { matrices: &mut gm, vectors: &mut gv };
        let weights = Weights::new(&matrices, &vectors);
        let loss = b
            .model
            .train_step(
                &b.kernels,
                weights,
                None,
                grads,
                &batch,
                b.options,
                &mut b.workspace,
                &b.pool,
            )
            .expect("the step runs");
        b.kernels.adamw_step(&b.hyper, step, &mut matrices, &gm, &mut mm, &mut vm, &b.pool);
        b.kernels.adamw_step(&b.hyper, step, &mut vectors, &gv, &mut mv, &mut vv, &b.pool);
        loss.loss
    });
    Ok(())
}

/// Full fine-tuning through mft-std's trainer over weights read from a random checkpoint file:
/// within `--mem-budget` with the plan's paging (blocks' weights, gradients and moments in a
/// scratch file under the target directory), checkpointing and micro-batches, or all in memory
/// without one. With `--digest`, prints a digest of the trained weights after the run (equal
/// digests: bit-identical weights).
fn run_full_trainer(s: &Settings, config: ModelConfig) -> Result<(), String> {
    let model = Model::new(config).map_err(|e| e.to_string())?;
    let shape = step_shape(s);
    let plan = match s.mem_budget {
        Some(budget) => {
            let plan =
                budget::plan(&model, None, DType::F32, shape, s.checkpointed_blocks, true, budget)
                    .map_err(|e| e.to_string())?;
            eprintln!("memory budget {budget}: {plan}");
            Some(plan)
        }
        None => None,
    };
    let files = [random_checkpoint(s, &config, DType::F32)?];
    let micro = plan.as_ref().map_or(s.batch, |p| p.micro_batch);
    let checkpointed_blocks =
        plan.as_ref().map_or(s.checkpointed_blocks, |p| p.checkpointed_blocks);
    let options = TrainOptions {
        steps: (s.warmup + s.steps) as u64,
        batch: micro,
        seq: s.seq,
        grad_accum: s.batch / micro,
        optimizer: OptimizerConfig { kind: OptimizerKind::AdamW, momentum: 0.0, weight_decay: 0.0 },
        schedule: Schedule { kind: ScheduleKind::Constant, peak_lr: 1e-4, warmup: 0, total: 1 },
        max_grad_norm: 1.0,
        seed: 1,
        checkpointed_blocks,
    };
    let paged = plan.as_ref().is_some_and(|p| p.paging != Paging::Off);
    let mut trainer = if paged {
        let weights = load_weights_paged::<f32>(&files, model.layout(), Paging::Blocks)
            .map_err(|e| e.to_string())?;
        let scratch = PathBuf::from(env!("CARGO_TARGET_TMPDIR"));
        Trainer::new_full_paged(model, weights, options, s.threads, &scratch)
    } else {
        let weights = load_weights::<f32>(&files, model.layout()).map_err(|e| e.to_string())?;
        Trainer::new(model, weights, Trainable::Full, options, s.threads)
    }
    .map_err(|e| e.to_string())?;
    trainer.set_gemm_offload(s.offload);
    let examples: Vec<Example> = batch_ids(s, &config)
        .chunks(s.seq)
        .map(|row| Example { ids: row.to_vec(), scored: vec![true; row.len()] })
        .collect();
    let mut batcher = Batcher::new(examples, micro, 0, 1, false);
    measure(s, config.layers, plan.as_ref(), |_| {
        trainer.train_step(&mut batcher).expect("the step runs").loss
    });
    if s.digest {
        let layout = *trainer.model().layout();
        let mut digest = std::hash::DefaultHasher::new();
        let chunk = 1 << 20;
        let mut values = vec![0.0f32; chunk];
        for start in (0..layout.matrix_len()).step_by(chunk) {
            let end = (start + chunk).min(layout.matrix_len());
            trainer
                .read_full_matrices(start..end, &mut values[..end - start])
                .map_err(|e| e.to_string())?;
            values[..end - start].iter().for_each(|v| digest.write_u32(v.to_bits()));
        }
        trainer.weights().vectors.iter().for_each(|v| digest.write_u32(v.to_bits()));
        eprintln!("weights digest after {} steps: {:016x}", trainer.step_count(), digest.finish());
    }
    Ok(())
}

/// The planner's view of the run.
fn step_shape(s: &Settings) -> StepShape {
    StepShape { batch: s.batch, seq: s.seq, threads: s.threads, tokenizer_bytes: 0, training: true }
}

/// A random checkpoint of `config` in `dtype` under the target directory, written once.
fn random_checkpoint(s: &Settings, config: &ModelConfig, dtype: DType) -> Result<PathBuf, String> {
    let dir = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("bench-weights");
    std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    let path = dir.join(format!("{}-{dtype:?}-seed1.safetensors", s.model).to_lowercase());
    if !path.exists() {
        eprintln!("writing random weights to {}", path.display());
        write_random_checkpoint(&path, config, dtype, 1).map_err(|e| e.to_string())?;
    }
    Ok(path)
}

/// LoRA within `budget`: the plan's paging, checkpointing and micro-batches, over weights read
/// from a random checkpoint file.
fn run_lora_in_budget<T: GemmRhs + Element + Send + Sync>(
    s: &Settings,
    config: ModelConfig,
    layout: &LoraLayout,
    budget: MemBudget,
) -> Result<(), String> {
    let model = Model::new(config).map_err(|e| e.to_string())?;
    let shape = step_shape(s);
    let plan =
        budget::plan(&model, Some(layout), T::DTYPE, shape, s.checkpointed_blocks, true, budget)
            .map_err(|e| e.to_string())?;
    eprintln!("memory budget {budget}: {plan}");
    let files = [random_checkpoint(s, &config, T::DTYPE)?];
    let mut weights = match plan.paging {
        Paging::Off => load_weights::<T>(&files, model.layout()),
        paging => load_weights_paged::<T>(&files, model.layout(), paging),
    }
    .map_err(|e| e.to_string())?;
    let micro = plan.micro_batch;
    let mut bench = Bench::new(s, config, Some(layout), micro, plan.checkpointed_blocks)?;
    let mut adapters = vec![0.0; layout.len()];
    layout.init(4, &mut adapters);
    let (mut grads, mut m, mut v) =
        (vec![0.0; layout.len()], vec![0.0; layout.len()], vec![0.0; layout.len()]);
    let splits = s.batch / micro;
    let tokens = micro * s.seq;
    measure(s, config.layers, Some(&plan), |step| {
        grads.fill(0.0);
        let b = &mut bench;
        let mut loss_sum = 0.0;
        for i in 0..splits {
            let a = Adapters { layout, weights: &adapters };
            let options = StepOptions {
                dropout_seed: step * splits as u64 + i as u64,
                loss_weight: 1.0 / splits as f32,
                ..b.options
            };
            let rows = i * tokens..(i + 1) * tokens;
            let batch = Batch {
                input_ids: &b.ids[rows.clone()],
                targets: &b.targets[rows],
                batch: micro,
                seq: s.seq,
            };
            let grads = Gradients::Lora(&mut grads);
            let (model, kernels, ws, pool) = (&b.model, &b.kernels, &mut b.workspace, &b.pool);
            let loss = match weights.for_step() {
                (weights, None) => model
                    .train_step(kernels, weights, Some(a), grads, &batch, options, ws, pool)
                    .map_err(|e| e.to_string()),
                (weights, Some(paged)) => {
                    let schedule = paged.schedule(model, true, tokens);
                    paged
                        .run(&schedule, |source| {
                            model.train_step_paged(
                                kernels,
                                weights,
                                source,
                                Some(a),
                                grads,
                                &batch,
                                options,
                                ws,
                                pool,
                            )
                        })
                        .map_err(|e| e.to_string())
                }
            }
            .expect("the step runs");
            loss_sum += loss.loss / splits as f32;
        }
        b.kernels.adamw_step(&b.hyper, step, &mut adapters, &grads, &mut m, &mut v, &b.pool);
        loss_sum
    });
    Ok(())
}

fn main() {
    let mut settings = match parse_args() {
        Ok(s) => s,
        Err(e) => {
            eprintln!("train bench: {e}");
            std::process::exit(2);
        }
    };
    match mft_std::device::select(settings.device) {
        Ok(selected) => {
            if let Some(notice) = &selected.notice {
                eprintln!("{notice}");
            }
            if let Some(name) = &selected.device_name {
                eprintln!("cuda: GEMMs offloaded to {name}");
            }
            settings.offload = selected.offload;
        }
        Err(e) => {
            eprintln!("train bench: {e}");
            std::process::exit(2);
        }
    }
    let Some(config) = ModelConfig::preset(&settings.model) else {
        eprintln!(
            "train bench: unknown --model `{}` (gpt2, gpt2-medium, qwen2.5-0.5b, gemma3-270m, gemma3-1b)",
            settings.model
        );
        std::process::exit(2);
    };
    let result = match (settings.lora, settings.frozen.as_str()) {
        (false, _) => run_full(&settings, config),
        (true, "f32") => run_lora::<f32>(&settings, config),
        (true, "bf16") => run_lora::<bf16>(&settings, config),
        (true, "f16") => run_lora::<f16>(&settings, config),
        (true, other) => Err(format!("--frozen: `{other}` is not f32, bf16 or f16")),
    };
    if let Err(e) = result {
        eprintln!("train bench: {e}");
        std::process::exit(1);
    }
}
