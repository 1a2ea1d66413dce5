//! Paged frozen weights: a LoRA run whose blocks (and embeddings) are paged in from the
//! checkpoint files one page at a time trains and evaluates exactly like the run with every
//! weight resident, reads each page in the documented order, and names the file when a read
//! fails.

use std::path::Path;

use mft_core::bf16;
use mft_models::{
    Family, LoraConfig, LoraLayout, LoraTargets, Model, ModelConfig, Paging, ParamLayout, Rope,
};
use mft_std::data::{Batcher, Example};
use mft_std::export::export_hf_snapshot;
use mft_std::hf::{ModelWeights, checkpoint_files, load_weights, load_weights_paged};
use mft_std::random::random_weights;
use mft_std::train::{
    OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainOptions, Trainable, Trainer,
    checkpoint,
};

fn tiny(family: Family) -> ModelConfig {
    let mut c = ModelConfig::gpt2_with(32, 3, 4);
    c.vocab = 64;
    c.max_positions = 32;
    c.intermediate = 64;
    match family {
        Family::Gpt2 => c,
        Family::Qwen2 => ModelConfig {
            family,
            kv_heads: 2,
            norm_eps: 1e-6,
            tie_embeddings: false,
            rope: Some(Rope { base: 10_000.0, linear_factor: 1.0 }),
            ..c
        },
        Family::Gemma3 => ModelConfig {
            family,
            kv_heads: 2,
            norm_eps: 1e-6,
            rope: Some(Rope { base: 10_000.0, linear_factor: 1.0 }),
            rope_local: Some(Rope { base: 1_000.0, linear_factor: 1.0 }),
            sliding_window: Some(5),
            sliding_layers: 0b011,
            padding_idx: Some(0),
            ..c
        },
    }
}

fn examples() -> Vec<Example> {
    (0..12)
        .map(|i| {
            let len = 6 + (i * 5) % 11;
            let ids: Vec<u32> = (0..len).map(|t| ((i + 3 * t) % 60) as u32 + 1).collect();
            Example { ids, scored: vec![true; len] }
        })
        .collect()
}

fn lora(config: &ModelConfig) -> Trainable {
    let names: &[&str] = match config.family {
        Family::Gpt2 => &["c_attn", "c_fc"],
        _ => &["q_proj", "down_proj"],
    };
    let targets = LoraTargets::from_module_names(config.family, names.iter().copied()).unwrap();
    let layout = LoraLayout::new(
        config,
        &LoraConfig { rank: 4, alpha: 8.0, dropout: 0.1, rslora: false, targets },
    );
    let mut adapters = vec![0.0; layout.len()];
    layout.init(3, &mut adapters);
    let len = adapters.len();
    for (i, a) in adapters.iter_mut().enumerate().skip(len / 2) {
        *a = ((i % 7) as f32 - 3.0) * 1e-2;
    }
    Trainable::Lora { layout, adapters }
}

fn options(checkpointed_blocks: usize) -> TrainOptions {
    TrainOptions {
        steps: 4,
        batch: 2,
        seq: 16,
        grad_accum: 2,
        optimizer: OptimizerConfig {
            kind: OptimizerKind::AdamW,
            momentum: 0.0,
            weight_decay: 0.01,
        },
        schedule: Schedule { kind: ScheduleKind::Constant, peak_lr: 3e-3, warmup: 0, total: 4 },
        max_grad_norm: 1.0,
        seed: 7,
        checkpointed_blocks,
    }
}

/// Four LoRA steps and an evaluation; the adapters and the losses.
fn run<T: mft_kernels::GemmRhs + mft_core::Element + Send + Sync>(
    config: &ModelConfig,
    weights: ModelWeights<T>,
    checkpointed_blocks: usize,
) -> (Vec<f32>, Vec<f32>, f64, Trainer<T>) {
    let model = Model::new(*config).unwrap();
    let mut trainer =
        Trainer::new(model, weights, lora(config), options(checkpointed_blocks), 2).unwrap();
    let mut batcher = Batcher::new(examples(), 2, 0, 7, true);
    let losses = (0..4).map(|_| trainer.train_step(&mut batcher).unwrap().loss).collect();
    let eval = trainer.evaluate(&examples()[..5], 0).unwrap().loss;
    let Trainable::Lora { adapters, .. } = trainer.trainable() else { unreachable!() };
    (adapters.clone(), losses, eval, trainer)
}

fn snapshot(config: &ModelConfig, dir: &Path) {
    let layout = ParamLayout::new(config);
    let weights = random_weights::<f32>(config, 11);
    export_hf_snapshot(dir, config, &layout, weights.as_weights(), None).unwrap();
}

#[test]
fn paged_runs_equal_resident_runs() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let config = tiny(family);
        let layout = ParamLayout::new(&config);
        let dir = tempfile::tempdir().unwrap();
        snapshot(&config, dir.path());
        let files = checkpoint_files(dir.path()).unwrap();
        for (paging, checkpointed_blocks) in [
            (Paging::Blocks, 0),
            (Paging::Blocks, 2),
            (Paging::BlocksAndEmbeddings, 0),
            (Paging::BlocksAndEmbeddings, 3),
        ] {
            let what = format!("{family:?}, {paging:?}, {checkpointed_blocks} checkpointed");
            // f32 as stored, and bf16 converted while paging in.
            let resident =
                run::<f32>(&config, load_weights(&files, &layout).unwrap(), checkpointed_blocks);
            let paged = run::<f32>(
                &config,
                load_weights_paged(&files, &layout, paging).unwrap(),
                checkpointed_blocks,
            );
            assert_eq!(paged.0, resident.0, "{what}: adapters");
            assert_eq!(
                (paged.1.clone(), paged.2),
                (resident.1.clone(), resident.2),
                "{what}: losses"
            );
            let blocks = paged.3.weights().paged().expect("paged");
            assert_eq!(blocks.paging(), paging);
            // Per micro-batch 2·layers − 1 block reads (the last block stays in its slot for
            // its backward), or, when the embeddings are paged, 2·layers block reads and the
            // head's one chunk (64 entries) between them; 4 steps of 2; then the evaluation's
            // batches, a read per block (and the head chunk) each.
            let head = usize::from(paging == Paging::BlocksAndEmbeddings);
            let eval_batches = 3;
            let reads = 4 * 2 * (2 * 3 - 1 + 2 * head) + eval_batches * (3 + head);
            assert_eq!(blocks.reads(), reads, "{what}");

            let resident =
                run::<bf16>(&config, load_weights(&files, &layout).unwrap(), checkpointed_blocks);
            let paged = run::<bf16>(
                &config,
                load_weights_paged(&files, &layout, paging).unwrap(),
                checkpointed_blocks,
            );
            assert_eq!(paged.0, resident.0, "{what}: bf16 adapters");
            assert_eq!(paged.2, resident.2, "{what}: bf16 eval");
        }
    }
}

#[test]
fn a_failed_read_names_the_file() {
    let config = tiny(Family::Gpt2);
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    snapshot(&config, dir.path());
    let files = checkpoint_files(dir.path()).unwrap();
    let weights = load_weights_paged::<f32>(&files, &layout, Paging::BlocksAndEmbeddings).unwrap();
    // The file shrinks under the run: the last block cannot be read.
    let file = std::fs::OpenOptions::new().write(true).open(&files[0]).unwrap();
    let len = file.metadata().unwrap().len();
    file.set_len(len / 2).unwrap();
    let model = Model::new(config).unwrap();
    let mut trainer = Trainer::new(model, weights, lora(&config), options(0), 1).unwrap();
    let mut batcher = Batcher::new(examples(), 2, 0, 7, true);
    let err = trainer.train_step(&mut batcher).unwrap_err();
    let message = err.to_string();
    assert!(matches!(err, mft_std::Error::Io { ref path, .. } if *path == files[0]), "{message}");
    assert_eq!(message.lines().count(), 1);
}

/// A random checkpoint written piece by piece loads to exactly the weights `random_weights`
/// makes in memory, for every family and stored type.
#[test]
fn random_checkpoints_hold_the_random_weights() {
    fn check<T: mft_core::Element + Send>(config: &ModelConfig, dtype: mft_core::DType) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("model.safetensors");
        mft_std::random::write_random_checkpoint(&path, config, dtype, 5).unwrap();
        let layout = ParamLayout::new(config);
        let loaded = load_weights::<T>(&[path], &layout).unwrap();
        let made = random_weights::<T>(config, 5);
        assert_eq!(loaded.to_stores(&layout).unwrap(), made.to_stores(&layout).unwrap());
    }
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let config = tiny(family);
        check::<f32>(&config, mft_core::DType::F32);
        check::<bf16>(&config, mft_core::DType::BF16);
        check::<mft_core::f16>(&config, mft_core::DType::F16);
    }
}

/// Three full fine-tuning steps (two micro-batches each) and an evaluation: the matrix store,
/// the vectors, the step reports and the evaluation loss.
type FullRun = (Vec<f32>, Vec<f32>, Vec<(f32, f32)>, f64);

fn run_full(trainer: &mut Trainer<f32>) -> FullRun {
    let mut batcher = Batcher::new(examples(), 2, 0, 7, true);
    let reports = (0..3)
        .map(|_| {
            let r = trainer.train_step(&mut batcher).unwrap();
            (r.loss, r.grad_norm)
        })
        .collect();
    let eval = trainer.evaluate(&examples()[..5], 0).unwrap().loss;
    let len = trainer.model().layout().matrix_len();
    let mut matrices = vec![0.0; len];
    trainer.read_full_matrices(0..len, &mut matrices).unwrap();
    (matrices, trainer.weights().vectors.clone(), reports, eval)
}

/// Full fine-tuning with the blocks' weights, gradients and optimizer state in a scratch file
/// ends bit for bit where the run with everything in memory does: AdamW and SGD with momentum,
/// with and without checkpointed blocks, clipping active (a max norm of 1).
#[test]
fn paged_full_fine_tuning_equals_resident_full_fine_tuning() {
    for family in [Family::Gpt2, Family::Qwen2, Family::Gemma3] {
        let config = tiny(family);
        let layout = ParamLayout::new(&config);
        let dir = tempfile::tempdir().unwrap();
        snapshot(&config, dir.path());
        let files = checkpoint_files(dir.path()).unwrap();
        let sgd = OptimizerConfig { kind: OptimizerKind::Sgd, momentum: 0.9, weight_decay: 0.0 };
        for (optimizer, checkpointed_blocks) in
            [(options(0).optimizer, 0), (options(0).optimizer, 2), (sgd, 0)]
        {
            let what =
                format!("{family:?}, {:?}, {checkpointed_blocks} checkpointed", optimizer.kind);
            let options = TrainOptions { optimizer, ..options(checkpointed_blocks) };
            let model = Model::new(config).unwrap();
            let weights = load_weights(&files, &layout).unwrap();
            let mut resident = Trainer::new(model, weights, Trainable::Full, options, 2).unwrap();
            let resident = run_full(&mut resident);

            let scratch = tempfile::tempdir().unwrap();
            let weights = load_weights_paged(&files, &layout, Paging::Blocks).unwrap();
            let mut paged =
                Trainer::new_full_paged(model, weights, options, 2, scratch.path()).unwrap();
            assert_eq!(std::fs::read_dir(scratch.path()).unwrap().count(), 1, "{what}");
            let paged_run = run_full(&mut paged);
            assert!(resident.2.iter().any(|(_, norm)| *norm > 1.0), "{what}: clipping never ran");
            assert_eq!(paged_run.2, resident.2, "{what}: losses and norms");
            assert_eq!(paged_run.3, resident.3, "{what}: evaluation");
            assert!(paged_run.0 == resident.0, "{what}: matrices differ");
            assert_eq!(paged_run.1, resident.1, "{what}: vectors");
            drop(paged);
            assert_eq!(
                std::fs::read_dir(scratch.path()).unwrap().count(),
                0,
                "{what}: scratch left"
            );
        }
    }
}

/// A paged full fine-tuning checkpoint (streamed out of the scratch file) resumes bit for bit,
/// paged or not, and a resident run's checkpoint resumes paged.
#[test]
fn paged_full_fine_tuning_checkpoints_resume_either_way() {
    let config = tiny(Family::Qwen2);
    let layout = ParamLayout::new(&config);
    let dir = tempfile::tempdir().unwrap();
    snapshot(&config, dir.path());
    let files = checkpoint_files(dir.path()).unwrap();
    let model = Model::new(config).unwrap();
    let options = options(1);
    let scratch = tempfile::tempdir().unwrap();
    let paged = |scratch: &Path| {
        let weights = load_weights_paged(&files, &layout, Paging::Blocks).unwrap();
        Trainer::new_full_paged(model, weights, options, 2, scratch).unwrap()
    };
    let resident = || {
        let weights = load_weights(&files, &layout).unwrap();
        Trainer::new(model, weights, Trainable::Full, options, 2).unwrap()
    };
    let weights_of = |trainer: &Trainer<f32>| {
        let len = layout.matrix_len();
        let mut matrices = vec![0.0; len];
        trainer.read_full_matrices(0..len, &mut matrices).unwrap();
        (matrices, trainer.weights().vectors.clone())
    };
    // Two steps, a checkpoint, two more steps.
    let mut reference = paged(scratch.path());
    let mut batcher = Batcher::new(examples(), 2, 0, 7, true);
    for _ in 0..2 {
        reference.train_step(&mut batcher).unwrap();
    }
    let saved = tempfile::tempdir().unwrap();
    checkpoint::save(saved.path(), &mut reference, batcher.position(), "full").unwrap();
    for _ in 0..2 {
        reference.train_step(&mut batcher).unwrap();
    }
    let expected = weights_of(&reference);
    for mut resumed in [paged(scratch.path()), resident()] {
        let position = checkpoint::load(saved.path(), &mut resumed, "full").unwrap();
        let mut batcher = Batcher::new(examples(), 2, 0, 7, true);
        batcher.resume(position).unwrap();
        for _ in 0..2 {
            resumed.train_step(&mut batcher).unwrap();
        }
        assert_eq!(resumed.step_count(), 4);
        assert!(weights_of(&resumed) == expected, "resumed weights differ");
    }
    // And the other way: a resident checkpoint resumes paged.
    let mut unpaged = resident();
    let mut batcher = Batcher::new(examples(), 2, 0, 7, true);
    for _ in 0..2 {
        unpaged.train_step(&mut batcher).unwrap();
    }
    let saved = tempfile::tempdir().unwrap();
    checkpoint::save(saved.path(), &mut unpaged, batcher.position(), "full").unwrap();
    let mut resumed = paged(scratch.path());
    let position = checkpoint::load(saved.path(), &mut resumed, "full").unwrap();
    let mut resumed_batcher = Batcher::new(examples(), 2, 0, 7, true);
    resumed_batcher.resume(position).unwrap();
    for _ in 0..2 {
        unpaged.train_step(&mut batcher).unwrap();
        resumed.train_step(&mut resumed_batcher).unwrap();
    }
    assert!(weights_of(&resumed) == weights_of(&unpaged), "paged resume of a resident run");
}
