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

use std::os::unix::fs::FileExt;

use mft_core::{DType, Element};
use mft_kernels::GemmRhs;
use serde::{Deserialize, Serialize};

use super::{TrainOptions, Trainer};
use crate::data::BatchPosition;
use crate::error::{Error, Result};
use crate::export::{TensorHeader, write_f32s, write_safetensors_with_metadata};
use crate::fsio::{create_dir_all, write_atomic_with};

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
    let step = trainer.step_count();
    let named = trainer.checkpoint_tensors();
    let header: Vec<TensorHeader> = named
        .iter()
        .map(|(name, len)| TensorHeader {
            name: name.clone(),
            dtype: DType::F32,
            shape: vec![*len],
        })
        .collect();
    let tensors = tensors_file(step);
    let tensors_path = dir.join(&tensors);
    // Streamed chunk by chunk: a paged run's tensors are not all in memory.
    let mut chunk = vec![0.0f32; CHUNK];
    write_safetensors_with_metadata(
        &tensors_path,
        &header,
        &[("step", step.to_string())],
        |index, out| {
            for first in (0..named[index].1).step_by(CHUNK) {
                let part = &mut chunk[..CHUNK.min(named[index].1 - first)];
                trainer
                    .checkpoint_chunk(index, first, part, false)
                    .map_err(std::io::Error::other)?;
                write_f32s(out, part)?;
            }
            Ok(())
        },
    )?;
    let state = TrainerState { step, data_position: position, options, mode: mode.into(), tensors };
    write_atomic_with(&dir.join(STATE_FILE), |out| {
        serde_json::to_writer_pretty(&mut *out, &state).map_err(std::io::Error::other)
    })?;
    remove_other_tensors(dir, &state.tensors);
    Ok(())
}

/// Removes the tensors' files of earlier checkpoints in `dir` (all but `current`), and the
/// temporary files of writes that a killed process left (`.NAME.tmp-…`: this save's own writes
/// are renamed into place by now). A file that cannot be removed is left: it is never read
/// again.
fn remove_other_tensors(dir: &Path, current: &str) {
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        let old = name == TENSORS_FILE
            || (name.starts_with("tensors-step") && name.ends_with(".safetensors"))
            || (name.starts_with('.') && name.contains(".tmp-"));
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
    let header = read_header(&tensors_path)?;
    let tensor_step = header.metadata.get("step").cloned();
    if tensor_step != Some(state.step.to_string()) {
        return Err(refuse(format!(
            "{tensors} is of step {}, {STATE_FILE} of step {}",
            tensor_step.as_deref().unwrap_or("?"),
            state.step
        )));
    }
    let file = std::fs::File::open(&tensors_path)
        .map_err(|source| Error::Io { path: tensors_path.clone(), source })?;
    let mut chunk = vec![0.0f32; CHUNK];
    for (index, (name, len)) in trainer.checkpoint_tensors().into_iter().enumerate() {
        let Some(entry) = header.tensors.get(&name) else {
            return Err(refuse(format!("{tensors} has no tensor {name}")));
        };
        if entry.dtype != "F32" || entry.end - entry.start != 4 * len as u64 {
            return Err(refuse(format!(
                "{tensors}: tensor {name} holds {} bytes of {}, expected {len} f32 values",
                entry.end - entry.start,
                entry.dtype
            )));
        }
        for first in (0..len).step_by(CHUNK) {
            let part = &mut chunk[..CHUNK.min(len - first)];
            let bytes: &mut [u8] = bytemuck::cast_slice_mut(part);
            file.read_exact_at(bytes, header.data_start + entry.start + 4 * first as u64)
                .map_err(|source| Error::Io { path: tensors_path.clone(), source })?;
            if cfg!(target_endian = "big") {
                part.iter_mut().for_each(|v| *v = f32::from_bits(u32::from_le(v.to_bits())));
            }
            trainer.checkpoint_chunk(index, first, part, true)?;
        }
    }
    trainer.set_step_count(state.step);
    Ok(state.data_position)
}

/// Elements a checkpoint is written and read in at a time.
const CHUNK: usize = 1 << 20;

/// A safetensors file's header: where each tensor's bytes are, and the metadata.
struct Header {
    /// Where the data starts in the file.
    data_start: u64,
    tensors: HashMap<String, Entry>,
    metadata: HashMap<String, String>,
}

/// A tensor in a safetensors header.
#[derive(Deserialize)]
struct Entry {
    dtype: String,
    #[serde(rename = "data_offsets", deserialize_with = "offsets")]
    start_end: (u64, u64),
    #[serde(skip)]
    start: u64,
    #[serde(skip)]
    end: u64,
}

fn offsets<'de, D: serde::Deserializer<'de>>(d: D) -> std::result::Result<(u64, u64), D::Error> {
    let [start, end] = <[u64; 2]>::deserialize(d)?;
    Ok((start, end))
}

/// Reads the header of the safetensors file at `path` (without reading its data), checking that
/// every tensor lies inside the file.
fn read_header(path: &Path) -> Result<Header> {
    let bad = |problem: String| Error::Checkpoint { path: path.to_path_buf(), problem };
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = std::fs::File::open(path).map_err(io)?;
    let file_len = file.metadata().map_err(io)?.len();
    let mut len = [0u8; 8];
    file.read_exact_at(&mut len, 0).map_err(io)?;
    let len = u64::from_le_bytes(len);
    if len > file_len.saturating_sub(8) || len > 100 << 20 {
        return Err(bad(format!("a header of {len} bytes does not fit the file")));
    }
    let mut text = vec![0u8; len as usize];
    file.read_exact_at(&mut text, 8).map_err(io)?;
    let mut json: HashMap<String, serde_json::Value> = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("the header is not a JSON object: {e}")))?;
    let metadata = match json.remove("__metadata__") {
        Some(m) => serde_json::from_value(m)
            .map_err(|e| bad(format!("__metadata__ is not an object of strings: {e}")))?,
        None => HashMap::new(),
    };
    let data_start = 8 + len;
    let mut tensors = HashMap::new();
    for (name, value) in json {
        let mut entry: Entry =
            serde_json::from_value(value).map_err(|e| bad(format!("tensor {name}: {e}")))?;
        (entry.start, entry.end) = entry.start_end;
        if entry.start > entry.end || data_start + entry.end > file_len {
            return Err(bad(format!("tensor {name} lies outside the file")));
        }
        tensors.insert(name, entry);
    }
    Ok(Header { data_start, tensors, metadata })
}
