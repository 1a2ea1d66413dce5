//! The trainer: accumulation weighted by tokens equals one big batch, checkpoints resume
//! bit-identically, a run lowers the loss, and the optimizer groups decay as documented.

use mft_models::{Family, LoraConfig, LoraLayout, LoraTargets, Model, ModelConfig};
use mft_std::data::{Batcher, Example};
use mft_std::hf::ModelWeights;
use mft_std::random::random_weights;
use mft_std::train::{
    OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainOptions, Trainable, Trainer,
    checkpoint,
};

fn tiny() -> ModelConfig {
    let mut c = ModelConfig::gpt2();
    c.vocab = 64;
    c.hidden = 32;
    c.layers = 3;
    c.heads = 4;
    c.kv_heads = 4;
    c.head_dim = 8;
    c.intermediate = 64;
    c.max_positions = 32;
    c
}

/// Examples of varied length whose tokens follow a pattern a model can learn.
fn examples(count: usize) -> Vec<Example> {
    (0..count)
        .map(|i| {
            let len = 6 + (i * 5) % 11;
            let ids: Vec<u32> = (0..len).map(|t| ((i + 3 * t) % 60) as u32 + 1).collect();
            let mut scored = vec![true; len];
            scored[0] = false;
            if i % 3 == 0 {
                scored[1] = false; // a prompt token
            }
            Example { ids, scored }
        })
        .collect()
}

fn options(batch: usize, grad_accum: usize, optimizer: OptimizerKind) -> TrainOptions {
    TrainOptions {
        steps: 20,
        batch,
        seq: 16,
        grad_accum,
        optimizer: OptimizerConfig { kind: optimizer, momentum: 0.9, weight_decay: 0.01 },
        schedule: Schedule { kind: ScheduleKind::Cosine, peak_lr: 3e-3, warmup: 2, total: 20 },
        max_grad_norm: 1.0,
        seed: 7,
        checkpointed_blocks: 0,
    }
}

fn lora_trainable(config: &ModelConfig, dropout: f32) -> Trainable {
    let targets = LoraTargets::from_module_names(Family::Gpt2, ["c_attn", "c_proj"]).unwrap();
    let lora = LoraConfig { rank: 4, alpha: 8.0, dropout, rslora: false, targets };
    let layout = LoraLayout::new(config, &lora);
    let mut adapters = vec![0.0; layout.len()];
    layout.init(3, &mut adapters);
    // Non-zero B, so the first step's gradients reach A too.
    let len = adapters.len();
    for (i, a) in adapters.iter_mut().enumerate().skip(len / 2) {
        *a = ((i % 7) as f32 - 3.0) * 1e-2;
    }
    Trainable::Lora { layout, adapters }
}

fn trainer(trainable: Trainable, options: TrainOptions) -> Trainer<f32> {
    let config = tiny();
    let weights: ModelWeights<f32> = random_weights(&config, 1);
    Trainer::new(Model::new(config).unwrap(), weights, trainable, options, 1).unwrap()
}

fn trained_tensors(t: &Trainer<f32>) -> Vec<f32> {
    match t.trainable() {
        Trainable::Lora { adapters, .. } => adapters.clone(),
        Trainable::Full => {
            let mut all =
                t.weights().matrix_store().expect("full fine-tuning keeps a store").to_vec();
            all.extend_from_slice(&t.weights().vectors);
            all
        }
    }
}

#[test]
fn micro_batches_accumulate_to_the_big_batch() {
    // No shuffling and no dropout: 2 micro-batches of 2 see what one batch of 4 sees.
    let data = examples(8);
    for full in [false, true] {
        let make = |batch, accum| {
            let trainable = if full { Trainable::Full } else { lora_trainable(&tiny(), 0.0) };
            let mut t = trainer(trainable, options(batch, accum, OptimizerKind::Sgd));
            let mut batcher = Batcher::new(data.clone(), batch, 0, 1, false);
            let mut reports = Vec::new();
            for _ in 0..3 {
                reports.push(t.train_step(&mut batcher).unwrap());
            }
            (reports, trained_tensors(&t))
        };
        let (big, big_tensors) = make(4, 1);
        let (small, small_tensors) = make(2, 2);
        for (b, s) in big.iter().zip(&small) {
            assert_eq!(b.scored_tokens, s.scored_tokens);
            assert!((b.loss - s.loss).abs() <= 1e-5 * b.loss, "loss {} vs {}", b.loss, s.loss);
            assert!((b.grad_norm - s.grad_norm).abs() <= 1e-4 * b.grad_norm, "full {full}");
        }
        let scale = big_tensors.iter().fold(0.0f32, |m, v| m.max(v.abs()));
        for (i, (b, s)) in big_tensors.iter().zip(&small_tensors).enumerate() {
            assert!((b - s).abs() <= 1e-6 * scale, "full {full}: tensor {i}: {b} vs {s}");
        }
    }
}

#[test]
fn a_checkpoint_resumes_bit_identically() {
    let dir = tempfile::tempdir().unwrap();
    for (full, kind) in [(false, OptimizerKind::AdamW), (true, OptimizerKind::Sgd)] {
        let mode = if full { "full" } else { "lora" };
        let make = || {
            let trainable = if full { Trainable::Full } else { lora_trainable(&tiny(), 0.1) };
            trainer(trainable, options(2, 2, kind))
        };
        let batcher = || Batcher::new(examples(9), 2, 0, 5, true);

        let mut straight = make();
        let mut data = batcher();
        let losses: Vec<f32> =
            (0..6).map(|_| straight.train_step(&mut data).unwrap().loss).collect();

        let mut first = make();
        let mut data = batcher();
        for _ in 0..3 {
            first.train_step(&mut data).unwrap();
        }
        let ckpt = dir.path().join(mode);
        checkpoint::save(&ckpt, &mut first, data.position(), mode).unwrap();
        drop(first);

        let mut resumed = make();
        let mut data = batcher();
        let position = checkpoint::load(&ckpt, &mut resumed, mode).unwrap();
        data.resume(position).unwrap();
        assert_eq!(resumed.step_count(), 3);
        let rest: Vec<f32> = (0..3).map(|_| resumed.train_step(&mut data).unwrap().loss).collect();
        assert_eq!(&losses[3..], &rest[..], "{mode}: losses after resuming");
        assert_eq!(trained_tensors(&straight), trained_tensors(&resumed), "{mode}: tensors");
        assert_eq!(straight.optimizer(), resumed.optimizer(), "{mode}: optimizer state");

        // Another mode, or other settings, are refused with the directory named.
        let err = checkpoint::load(&ckpt, &mut make(), if full { "lora" } else { "full" })
            .unwrap_err()
            .to_string();
        assert!(err.contains(mode) && err.contains(&ckpt.display().to_string()), "{err}");
    }
}

#[test]
fn a_short_run_lowers_the_loss() {
    let data = examples(12);
    for kind in [OptimizerKind::AdamW, OptimizerKind::Sgd] {
        let mut opts = options(4, 1, kind);
        opts.schedule =
            Schedule { kind: ScheduleKind::Constant, peak_lr: 0.01, warmup: 0, total: 40 };
        if kind == OptimizerKind::Sgd {
            opts.schedule.peak_lr = 0.5;
        }
        let mut t = trainer(Trainable::Full, opts);
        let before = t.evaluate(&data, 0).unwrap();
        let mut batcher = Batcher::new(data.clone(), 4, 0, 1, true);
        for _ in 0..40 {
            t.train_step(&mut batcher).unwrap();
        }
        let after = t.evaluate(&data, 0).unwrap();
        assert_eq!(before.tokens, data.iter().map(Example::scored_tokens).sum::<usize>());
        assert!(after.loss < 0.8 * before.loss, "{kind:?}: {} → {}", before.loss, after.loss);
        assert!((after.ppl - after.loss.exp()).abs() < 1e-9 * after.ppl);
    }
}

#[test]
fn full_fine_tuning_of_half_precision_weights_is_refused() {
    let config = tiny();
    let weights: ModelWeights<mft_kernels::bf16> = random_weights(&config, 1);
    let model = Model::new(config).unwrap();
    let err = Trainer::new(model, weights, Trainable::Full, options(2, 1, OptimizerKind::AdamW), 1)
        .err()
        .unwrap();
    assert!(err.to_string().contains("full fine-tuning"), "{err}");
    let mut long = options(2, 1, OptimizerKind::AdamW);
    long.seq = 33;
    let err = Trainer::new(
        Model::new(tiny()).unwrap(),
        random_weights::<f32>(&tiny(), 1),
        Trainable::Full,
        long,
        1,
    )
    .err()
    .unwrap();
    assert!(err.to_string().contains("--seq 33"), "{err}");
}
