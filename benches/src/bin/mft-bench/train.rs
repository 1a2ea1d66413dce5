//! The training rows of `mft-bench`: whole steps (forward, backward, AdamW on every trainable
//! tensor, gradients zeroed) of LoRA and of full fine-tuning, the step `benches/train.rs` and
//! `scripts/torch_step.py` time. The model is GPT-2 small with random weights (quick: a
//! two-block GPT-2 of width 128 and a 4096-token vocabulary), or the checkpoint of `--model`.
//!
//! Each run reports its step times, tokens/s, first and last loss, its own peak RSS (VmHWM is
//! reset before it where the kernel allows) and the energy the battery gave during the timed
//! steps (`mft_std::energy::EnergyMeter`), or why that cannot be known.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use mft_kernels::{AdamW, Kernels};
use mft_models::rng::Counter;
use mft_models::{
    Adapters, Batch, Gradients, LoraConfig, LoraLayout, LoraTargets, Model, ModelConfig, Purpose,
    StepOptions,
};
use mft_std::ThreadPool;
use mft_std::energy::{EnergyMeter, StepEnergy, SystemClock};
use mft_std::finetune::default_targets;
use mft_std::hf::ModelWeights;
use serde_json::{Value, json};

use crate::Options;
use crate::machine::{self, Sensors};

/// The model trained and where its weights come from.
struct Subject {
    name: String,
    config: ModelConfig,
    weights: ModelWeights<f32>,
    random: bool,
}

/// The quick model: GPT-2's recipe at toy width.
fn quick_config() -> ModelConfig {
    ModelConfig { vocab: 4096, max_positions: 256, ..ModelConfig::gpt2_with(128, 2, 2) }
}

fn subject(o: &Options) -> Result<Subject, String> {
    match &o.model {
        Some(dir) => load(o, dir),
        None => {
            let (name, config) = if o.quick {
                ("gpt2-tiny".to_string(), quick_config())
            } else {
                ("gpt2".to_string(), ModelConfig::gpt2())
            };
            eprintln!("mft-bench: random weights for {name}");
            let weights = mft_std::random::random_weights::<f32>(&config, 1);
            Ok(Subject { name, config, weights, random: true })
        }
    }
}

/// A Hugging Face checkpoint directory: `config.json` and its safetensors files.
fn load(o: &Options, dir: &Path) -> Result<Subject, String> {
    let config = mft_std::hf::read_model_config(&dir.join("config.json"))
        .map_err(|e| format!("--model {}: {e}", dir.display()))?;
    let files = mft_std::hf::checkpoint_files(dir).map_err(|e| e.to_string())?;
    let model = Model::new(config).map_err(|e| format!("--model {}: {e}", dir.display()))?;
    let weights =
        mft_std::hf::load_weights::<f32>(&files, model.layout()).map_err(|e| e.to_string())?;
    let name = match &o.model_name {
        Some(name) => name.clone(),
        None => dir.file_name().map_or("model".into(), |n| n.to_string_lossy().into_owned()),
    };
    eprintln!("mft-bench: loaded {name} from {}", dir.display());
    Ok(Subject { name, config, weights, random: false })
}

/// The batch, the kernels, the threads and a workspace.
struct Rig {
    model: Model,
    kernels: Kernels,
    pool: ThreadPool,
    ids: Vec<u32>,
    targets: Vec<i32>,
    workspace: Vec<f32>,
    batch: usize,
    seq: usize,
    hyper: AdamW,
}

impl Rig {
    fn new(o: &Options, config: ModelConfig, lora: Option<&LoraLayout>) -> Result<Rig, String> {
        let batch = o.batch.unwrap_or(if o.quick { 2 } else { 4 });
        let seq = o.seq.unwrap_or(if o.quick { 32 } else { 128 });
        if seq > config.max_positions {
            return Err(format!("--seq {seq} is longer than the model's {}", config.max_positions));
        }
        let model = Model::new(config).map_err(|e| e.to_string())?;
        let kernels = Kernels::best();
        let pool = ThreadPool::new(o.threads).map_err(|e| e.to_string())?;
        let rng = Counter::new(3, &[]);
        let n = batch * seq;
        let ids: Vec<u32> =
            (0..n).map(|i| (rng.bits(i as u64) % config.vocab as u64) as u32).collect();
        let labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let mut targets = vec![0; n];
        mft_models::shift_labels(&labels, seq, &mut targets);
        let purpose = Purpose::Train { checkpointed_blocks: 0 };
        let len = model.workspace_sizes(&kernels, lora, batch, seq, purpose, o.threads).total();
        Ok(Rig {
            model,
            kernels,
            pool,
            ids,
            targets,
            workspace: vec![0.0; len],
            batch,
            seq,
            hyper: AdamW { lr: 1e-4, ..AdamW::default() },
        })
    }
}

/// The `train` array of the document: LoRA, then full fine-tuning.
pub fn run(o: &Options, sensors: &Sensors) -> Result<Vec<Value>, String> {
    let mut subject = subject(o)?;
    let lora = run_lora(o, &subject, sensors)?;
    let full = run_full(o, &mut subject, sensors)?;
    Ok(vec![lora, full])
}

fn run_lora(o: &Options, s: &Subject, sensors: &Sensors) -> Result<Value, String> {
    let names = default_targets(s.config.family);
    let targets = LoraTargets::from_module_names(s.config.family, names.iter().copied())
        .map_err(|e| e.to_string())?;
    let lora = LoraConfig { rank: 8, alpha: 16.0, dropout: 0.05, rslora: false, targets };
    let layout = LoraLayout::new(&s.config, &lora);
    let reset = machine::reset_peak_rss();
    let mut rig = Rig::new(o, s.config, Some(&layout))?;
    let mut adapters = vec![0.0; layout.len()];
    layout.init(4, &mut adapters);
    let (mut grads, mut m, mut v) =
        (vec![0.0; layout.len()], vec![0.0; layout.len()], vec![0.0; layout.len()]);
    let weights = s.weights.as_weights();
    let timing = measure(o, sensors, |step| {
        grads.fill(0.0);
        let r = &mut rig;
        let batch = Batch { input_ids: &r.ids, targets: &r.targets, batch: r.batch, seq: r.seq };
        let a = Adapters { layout: &layout, weights: &adapters };
        let options = StepOptions { dropout_seed: step, ..StepOptions::default() };
        let loss = r
            .model
            .train_step(
                &r.kernels,
                weights,
                Some(a),
                Gradients::Lora(&mut grads),
                &batch,
                options,
                &mut r.workspace,
                &r.pool,
            )
            .map_err(|e| format!("LoRA step {step}: {e}"))?;
        r.kernels.adamw_step(&r.hyper, step, &mut adapters, &grads, &mut m, &mut v, &r.pool);
        Ok(loss.loss)
    })?;
    Ok(row(o, s, &rig, "lora", layout.len(), timing, reset))
}

fn run_full(o: &Options, s: &mut Subject, sensors: &Sensors) -> Result<Value, String> {
    let reset = machine::reset_peak_rss();
    let mut rig = Rig::new(o, s.config, None)?;
    let layout = *rig.model.layout();
    let (matrices, vectors) = s.weights.stores_mut(&layout);
    let zeros = |n| vec![0.0f32; n];
    let (mut gm, mut gv) = (zeros(matrices.len()), zeros(vectors.len()));
    let (mut mm, mut vm) = (zeros(matrices.len()), zeros(matrices.len()));
    let (mut mv, mut vv) = (zeros(vectors.len()), zeros(vectors.len()));
    let timing = measure(o, sensors, |step| {
        gm.fill(0.0);
        gv.fill(0.0);
        let r = &mut rig;
        let batch = Batch { input_ids: &r.ids, targets: &r.targets, batch: r.batch, seq: r.seq };
        let grads = Gradients::Full { matrices: &mut gm, vectors: &mut gv };
        let weights = mft_models::Weights::new(matrices, vectors);
        let loss = r
            .model
            .train_step(
                &r.kernels,
                weights,
                None,
                grads,
                &batch,
                StepOptions::default(),
                &mut r.workspace,
                &r.pool,
            )
            .map_err(|e| format!("full step {step}: {e}"))?;
        r.kernels.adamw_step(&r.hyper, step, matrices, &gm, &mut mm, &mut vm, &r.pool);
        r.kernels.adamw_step(&r.hyper, step, vectors, &gv, &mut mv, &mut vv, &r.pool);
        Ok(loss.loss)
    })?;
    let trainable = matrices.len() + vectors.len();
    Ok(row(o, s, &rig, "full", trainable, timing, reset))
}

/// What [`measure`] gives back.
struct Timing {
    warmup: usize,
    step_s: Vec<f64>,
    losses: Vec<f32>,
    energy: StepEnergy,
}

/// `warmup` untimed steps, then the timed ones with the energy meter running over them.
fn measure(
    o: &Options,
    sensors: &Sensors,
    mut step: impl FnMut(u64) -> Result<f32, String>,
) -> Result<Timing, String> {
    let steps = o.steps.unwrap_or(if o.quick { 2 } else { 3 });
    let meter = EnergyMeter::new(
        sensors.reader(),
        Arc::new(SystemClock::new()),
        Some(Duration::from_millis(200)),
    );
    let (mut step_s, mut losses) = (Vec::new(), Vec::new());
    for i in 0..o.warmup + steps {
        if i == o.warmup {
            meter.begin();
        }
        let start = Instant::now();
        let loss = step(i as u64 + 1)?;
        let secs = start.elapsed().as_secs_f64();
        let warm = if i < o.warmup { " (warm-up)" } else { "" };
        eprintln!(
            "mft-bench: step {}/{}: {secs:.3} s, loss {loss:.4}{warm}",
            i + 1,
            o.warmup + steps
        );
        if !loss.is_finite() {
            return Err(format!("step {} gave the loss {loss}", i + 1));
        }
        losses.push(loss);
        if i >= o.warmup {
            step_s.push(secs);
        }
    }
    let energy = meter.finish();
    Ok(Timing { warmup: o.warmup, step_s, losses, energy })
}

/// One element of the `train` array.
fn row(
    o: &Options,
    s: &Subject,
    rig: &Rig,
    mode: &str,
    trainable: usize,
    t: Timing,
    rss_reset: bool,
) -> Value {
    let mut sorted = t.step_s.clone();
    sorted.sort_by(f64::total_cmp);
    let n = sorted.len();
    let median = if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
    let tokens = rig.batch * rig.seq;
    let timed_tokens = tokens * n;
    let energy = match &t.energy {
        StepEnergy::Measured { joules, seconds, method, samples } => json!({
            "joules": joules, "seconds": seconds, "method": method.name(), "samples": samples,
            "joules_per_token": joules / timed_tokens as f64, "unavailable": null,
        }),
        StepEnergy::Unavailable { reason } => json!({
            "joules": null, "joules_per_token": null, "unavailable": reason,
        }),
    };
    let c = &s.config;
    json!({
        "model": s.name, "random_weights": s.random, "mode": mode,
        "config": {
            "family": format!("{:?}", c.family).to_lowercase(), "vocab": c.vocab,
            "hidden": c.hidden, "layers": c.layers, "heads": c.heads,
        },
        "batch": rig.batch, "seq": rig.seq, "threads": o.threads,
        "trainable_params": trainable, "warmup": t.warmup, "steps": n,
        "step_s": t.step_s, "median_step_s": median, "min_step_s": sorted[0],
        "tokens_per_s": tokens as f64 / median,
        "loss_first": t.losses[0], "loss_last": t.losses[t.losses.len() - 1],
        "peak_rss_bytes": machine::peak_rss(), "peak_rss_reset": rss_reset,
        "energy": energy,
    })
}
