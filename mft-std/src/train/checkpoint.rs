//! Training checkpoints: everything a run needs to continue exactly where it stopped.
//!
//! A checkpoint is a directory with two files, each written atomically:
//! - `tensors-step{N}.safetensors`: the trainable tensors (`trainable.{group}`: the adapters, or
//!   the matrices and the vectors of full fine-tuning) and the optimizer state
//!   (`optimizer.{group}.{i}`: AdamW's moments, SGD's momentum buffer) after step N, f32,
//!   bit-exact; its metadata repeats the step.
//! - `trainer_state.json`: the step, the data position, the settings of the run, and the name of
//!   its tensors' file.
//!
//! A save writes the new step's tensors beside the old ones, then the JSON that names them
//! (the commit point), and only then removes the old tensors. A process killed at any moment
//! therefore leaves a JSON naming a complete tensors file of its own step: the last complete
//! checkpoint, which resuming reads. (Checkpoints of earlier versions name no file and have
//! their tensors in `trainer_state.safetensors`.)

use std::collections::HashMap;
use std::path::Path;

use mft_core::Element;
use mft_kernels::GemmRhs;
use safetensors::{Dtype, SafeTensors, tensor::TensorView};
use serde::{Deserialize, Serialize};

use super::{TrainOptions, Trainer};
use crate::data::BatchPosition;
use crate::error::{Error, Result};
use crate::fsio::{create_dir_all, write_atomic, write_atomic_with};

/// The tensors' file of checkpoints that do not name theirs (made before the name was kept).
pub const TENSORS_FILE: &str = "trainer_state.safetensors";
/// The state's file in a checkpoint directory.
pub const STATE_FILE: &str = "trainer_state.json";

/// The JSON part of a checkpoint.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainerState {
    /// Optimizer steps taken.
    pub step: u64,
    /// Where the data continues.
    pub data_position: BatchPosition,
    /// The run's settings.
    pub options: TrainOptions,
    /// `"lora"` or `"full"`.
    pub mode: String,
    /// The tensors' file, in the checkpoint directory.
    #[serde(default = "legacy_tensors_file")]
    pub tensors: String,
}

fn legacy_tensors_file() -> String {
    TENSORS_FILE.into()
}

/// The tensors' file of the checkpoint after `step`.
fn tensors_file(step: u64) -> String {
    format!("tensors-step{step}.safetensors")
}

/// Writes `trainer`'s checkpoint into `dir` (created if missing), with the data at `position`.
///
/// # Errors
/// A directory or file that cannot be written (named).
pub fn save<T: GemmRhs + Element + Send + Sync>(
    dir: &Path,
    trainer: &mut Trainer<T>,
    position: BatchPosition,
    mode: &str,
) -> Result<()> {
    create_dir_all(dir)?;
    let options = *trainer.options();
    let (tensors, optimizer, step) = trainer.parts_mut();
    let step = *step;
    let mut named: Vec<(String, &[f32])> = Vec::new();
    for (g, t) in tensors.iter().enumerate() {
        named.push((format!("trainable.{g}"), &t[..]));
    }
    for (g, state) in optimizer.state().iter().enumerate() {
        for (i, t) in state.iter().enumerate() {
            named.push((format!("optimizer.{g}.{i}"), &t[..]));
        }
    }
    let views: Vec<(String, TensorView<'_>)> = named
        .iter()
        .map(|(name, values)| {
            let bytes: &[u8] = bytemuck::cast_slice(values);
            let view = TensorView::new(Dtype::F32, vec![values.len()], bytes)
                .expect("a flat f32 tensor's shape fits its bytes");
            (name.clone(), view)
        })
        .collect();
    let metadata = HashMap::from([("step".to_string(), step.to_string())]);
    let tensors = tensors_file(step);
    let tensors_path = dir.join(&tensors);
    let bytes = safetensors::serialize(views, Some(metadata))
        .map_err(|source| Error::Safetensors { path: tensors_path.clone(), source })?;
    write_atomic(&tensors_path, &bytes)?;
    let state = TrainerState { step, data_position: position, options, mode: mode.into(), tensors };
    write_atomic_with(&dir.join(STATE_FILE), |out| {
        serde_json::to_writer_pretty(&mut *out, &state).map_err(std::io::Error::other)
    })?;
    remove_other_tensors(dir, &state.tensors);
    Ok(())
}

/// Removes the tensors' files of earlier checkpoints in `dir` (all but `current`). A file that
/// cannot be removed is left: it is never read again.
fn remove_other_tensors(dir: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let old = name == TENSORS_FILE
            || (name.starts_with("tensors-step") && name.ends_with(".safetensors"));
        if old && name != current {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Reads the checkpoint in `dir` into `trainer` (which must be set up as the saving run was:
/// same model, mode and settings) and returns the data position to resume the batcher from.
///
/// # Errors
/// Missing or corrupt files, a checkpoint of another mode, other settings or other tensor
/// sizes, or tensors and state of different steps.
pub fn load<T: GemmRhs + Element + Send + Sync>(
    dir: &Path,
    trainer: &mut Trainer<T>,
    mode: &str,
) -> Result<BatchPosition> {
    let refuse = |problem: String| Error::Resume { path: dir.to_path_buf(), problem };
    let state_path = dir.join(STATE_FILE);
    let text = std::fs::read_to_string(&state_path)
        .map_err(|source| Error::Io { path: state_path.clone(), source })?;
    let state: TrainerState = serde_json::from_str(&text).map_err(|source| Error::Json {
        path: state_path.clone(),
        line: source.line(),
        column: source.column(),
        source,
    })?;
    if state.mode != mode {
        return Err(refuse(format!("the checkpoint trains {}, this run {mode}", state.mode)));
    }
    let options = *trainer.options();
    let same_settings =
        TrainOptions { steps: options.steps, schedule: options.schedule, ..state.options };
    if same_settings != options {
        return Err(refuse(
            "the checkpoint was made with other settings (batch, seq, optimizer, seed, …); \
             resume with the same flags (only --steps may change)"
                .into(),
        ));
    }
    let tensors = state.tensors.as_str();
    if Path::new(tensors).file_name().and_then(|n| n.to_str()) != Some(tensors) {
        return Err(refuse(format!(
            "{STATE_FILE} names \"{tensors}\", not a file of the checkpoint"
        )));
    }
    let tensors_path = dir.join(tensors);
    let bytes = std::fs::read(&tensors_path)
        .map_err(|source| Error::Io { path: tensors_path.clone(), source })?;
    let (_, meta) = SafeTensors::read_metadata(&bytes)
        .map_err(|source| Error::Safetensors { path: tensors_path.clone(), source })?;
    let tensor_step = meta.metadata().as_ref().and_then(|m| m.get("step")).cloned();
    if tensor_step != Some(state.step.to_string()) {
        return Err(refuse(format!(
            "{tensors} is of step {}, {STATE_FILE} of step {}",
            tensor_step.as_deref().unwrap_or("?"),
            state.step
        )));
    }
    let st = SafeTensors::deserialize(&bytes)
        .map_err(|source| Error::Safetensors { path: tensors_path.clone(), source })?;
    let read = |name: &str, into: &mut [f32]| -> Result<()> {
        let t = st.tensor(name).map_err(|_| refuse(format!("{tensors} has no tensor {name}")))?;
        if t.dtype() != Dtype::F32 || t.data().len() != 4 * into.len() {
            return Err(refuse(format!(
                "{tensors}: tensor {name} holds {} bytes of {:?}, expected {} f32 values",
                t.data().len(),
                t.dtype(),
                into.len()
            )));
        }
        for (v, b) in into.iter_mut().zip(t.data().chunks_exact(4)) {
            *v = f32::from_le_bytes(b.try_into().expect("4 bytes"));
        }
        Ok(())
    };
    let (mut tensors, optimizer, step) = trainer.parts_mut();
    for (g, t) in tensors.iter_mut().enumerate() {
        read(&format!("trainable.{g}"), t)?;
    }
    for (g, state) in optimizer.state_mut().iter_mut().enumerate() {
        for (i, t) in state.iter_mut().enumerate() {
            read(&format!("optimizer.{g}.{i}"), t)?;
        }
    }
    *step = state.step;
    Ok(state.data_position)
}
