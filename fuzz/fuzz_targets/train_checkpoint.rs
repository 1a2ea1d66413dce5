//! Fuzz resuming from a training checkpoint ([`checkpoint::load`]): a directory whose
//! trainer_state.json or tensors file is a damaged copy (see `mft_fuzz::corrupt`) of a valid
//! checkpoint of a tiny LoRA run, the other file intact. Bad input must be an error naming the
//! checkpoint, never a panic.
#![no_main]

use std::cell::RefCell;

use libfuzzer_sys::fuzz_target;
use mft_models::Model;
use mft_std::data::BatchPosition;
use mft_std::train::{
    OptimizerConfig, OptimizerKind, Schedule, ScheduleKind, TrainOptions, Trainable, Trainer,
    checkpoint,
};

/// A trainer of the tiny GPT-2 with LoRA adapters and AdamW, at step 0.
fn trainer() -> Trainer<f32> {
    let config = mft_fuzz::tiny_gpt2();
    let layout = mft_fuzz::tiny_lora();
    let adapters = vec![0.5; layout.len()];
    let options = TrainOptions {
        steps: 10,
        batch: 1,
        seq: 8,
        grad_accum: 1,
        optimizer: OptimizerConfig { kind: OptimizerKind::AdamW, momentum: 0.9, weight_decay: 0.0 },
        schedule: Schedule { kind: ScheduleKind::Constant, peak_lr: 1e-3, warmup: 0, total: 10 },
        max_grad_norm: 1.0,
        seed: 3,
        checkpointed_blocks: 0,
    };
    let weights = mft_std::random::random_weights::<f32>(&config, 1);
    let model = Model::new(config).expect("the tiny model is valid");
    Trainer::new(model, weights, Trainable::Lora { layout, adapters }, options, 1)
        .expect("the tiny trainer starts")
}

struct State {
    trainer: Trainer<f32>,
    /// The valid checkpoint's trainer_state.json, its tensors' file name, and that file.
    json: Vec<u8>,
    tensors_name: String,
    tensors: Vec<u8>,
}

thread_local! {
    static STATE: RefCell<State> = RefCell::new({
        let mut trainer = trainer();
        let dir = mft_fuzz::fresh_dir("valid-checkpoint");
        checkpoint::save(&dir, &mut trainer, BatchPosition { epoch: 1, index: 2 }, "lora")
            .expect("the valid checkpoint saves");
        let json = std::fs::read(dir.join(checkpoint::STATE_FILE)).expect("saved");
        let tensors_name = std::fs::read_dir(&dir)
            .expect("saved")
            .map(|entry| entry.expect("listable").file_name().into_string().expect("UTF-8"))
            .find(|name| name.starts_with("tensors-step"))
            .expect("the save wrote a tensors file");
        let tensors = std::fs::read(dir.join(&tensors_name)).expect("saved");
        State { trainer, json, tensors_name, tensors }
    });
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, rest)) = data.split_first() else { return };
    STATE.with_borrow_mut(|state| {
        let dir = mft_fuzz::scratch().join("checkpoint");
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the scratch directory can be made");
        let (json, tensors) = if which & 1 == 0 {
            (mft_fuzz::corrupt(&state.json, rest), state.tensors.clone())
        } else {
            (state.json.clone(), mft_fuzz::corrupt(&state.tensors, rest))
        };
        std::fs::write(dir.join(checkpoint::STATE_FILE), json).expect("writable");
        std::fs::write(dir.join(&state.tensors_name), tensors).expect("writable");
        let _ = checkpoint::load(&dir, &mut state.trainer, "lora");
    });
});
