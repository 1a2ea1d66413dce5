//! Weights from safetensors files: a model's checkpoint (one `model.safetensors`, or the shards
//! `model-00001-of-0000N.safetensors`) into the flat stores of a [`ParamLayout`], and a PEFT
//! adapter_model.safetensors into the flat buffer of a [`LoraLayout`].
//!
//! Each file is memory-mapped and its tensors are converted one at a time, in file order,
//! straight into their place in the destination: nothing holds a second copy of the file. F32,
//! F16 and BF16 tensors are read; matrices become the store's element type, vectors f32.
//!
//! Names are Hugging Face's ([`mft_models::Param::name`]), with the variants transformers
//! itself accepts: a checkpoint of the bare base model (no `transformer.` / `model.` prefix),
//! and the text tower of a multimodal Gemma 3 (`language_model.model.…`, or
//! `model.language_model.…` in newer versions). A tied head's `lm_head.weight` is not read;
//! tensors the model does not use (GPT-2's `attn.bias` masks, a vision tower) are skipped.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::path::{Path, PathBuf};

use memmap2::Mmap;
use mft_core::{Element, bf16, f16};
use mft_models::params::{GlobalParam, LayerParam, Slot};
use mft_models::{Family, LoraLayout, Param, ParamLayout, Weights};
use safetensors::{Dtype, SafeTensors};

use crate::error::{Error, Result};

/// A model's weights in memory: the owned counterpart of [`Weights`].
#[derive(Debug, Clone, PartialEq)]
pub struct OwnedWeights<T> {
    /// The matrix store ([`ParamLayout::matrix_len`] elements).
    pub matrices: Vec<T>,
    /// The vector store ([`ParamLayout::vector_len`] elements).
    pub vectors: Vec<f32>,
}

impl<T> OwnedWeights<T> {
    /// The stores as the borrowed view the model reads.
    pub fn as_weights(&self) -> Weights<'_, T> {
        Weights { matrices: &self.matrices, vectors: &self.vectors }
    }
}

/// The weight files of a checkpoint directory: `model.safetensors`, or every shard
/// `model-NNNNN-of-MMMMM.safetensors` in order (all `MMMMM` of them must be there). A path to
/// a `.safetensors` file is returned as it is.
pub fn checkpoint_files(dir: &Path) -> Result<Vec<PathBuf>> {
    if dir.is_file() {
        return Ok(vec![dir.to_path_buf()]);
    }
    let single = dir.join("model.safetensors");
    if single.is_file() {
        return Ok(vec![single]);
    }
    let io = |source| Error::Io { path: dir.to_path_buf(), source };
    let mut shards: Vec<(usize, usize, PathBuf)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let entry = entry.map_err(io)?;
        let name = entry.file_name();
        if let Some((index, count)) = name.to_str().and_then(shard_number) {
            shards.push((index, count, entry.path()));
        }
    }
    let problem = |problem: String| Error::Checkpoint { path: dir.to_path_buf(), problem };
    let Some(&(_, count, _)) = shards.first() else {
        return Err(problem(
            "no model.safetensors and no model-NNNNN-of-NNNNN.safetensors shards".into(),
        ));
    };
    if let Some((_, other, _)) = shards.iter().find(|s| s.1 != count) {
        return Err(problem(format!("shards disagree on their count ({count} and {other})")));
    }
    shards.sort_by_key(|s| s.0);
    shards.dedup_by_key(|s| s.0);
    for (expected, (index, _, _)) in (1..=count).zip(&shards) {
        if *index != expected {
            return Err(problem(format!("shard {expected} of {count} is missing")));
        }
    }
    if shards.len() < count {
        return Err(problem(format!("shard {} of {count} is missing", shards.len() + 1)));
    }
    Ok(shards.into_iter().map(|(_, _, path)| path).collect())
}

/// `(index, count)` of a shard's file name `model-00002-of-00003.safetensors`.
fn shard_number(name: &str) -> Option<(usize, usize)> {
    let stem = name.strip_prefix("model-")?.strip_suffix(".safetensors")?;
    let (index, count) = stem.split_once("-of-")?;
    let digits = |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit());
    if !(digits(index) && digits(count)) {
        return None;
    }
    let (index, count) = (index.parse().ok()?, count.parse().ok()?);
    (1..=count).contains(&index).then_some((index, count))
}

/// Loads every parameter of `layout` from the checkpoint `files` (as [`checkpoint_files`]
/// lists them), checking each tensor's shape against the layout and converting matrices to
/// `T` and vectors to f32.
pub fn load_weights<T: Element>(
    files: &[PathBuf],
    layout: &ParamLayout,
) -> Result<OwnedWeights<T>> {
    let family = layout.family();
    let hidden = hidden_width(layout);
    // Every name a parameter may have in the files, mapped to the parameter.
    let mut wanted: HashMap<String, Param> = HashMap::new();
    for param in layout.params() {
        for name in aliases(&param.name(family).to_string()) {
            wanted.entry(name).or_insert(param);
        }
    }
    let mut weights = OwnedWeights {
        matrices: vec![T::default(); layout.matrix_len()],
        vectors: vec![0.0; layout.vector_len()],
    };
    let mut loaded: HashSet<Param> = HashSet::new();
    for path in files {
        let map = map_file(path)?;
        let (header, metadata) = SafeTensors::read_metadata(&map)
            .map_err(|source| Error::Safetensors { path: path.clone(), source })?;
        let data = &map[8 + header..];
        for name in metadata.offset_keys() {
            let Some(&param) = wanted.get(&name) else { continue };
            if loaded.contains(&param) {
                continue;
            }
            let info = metadata.info(&name).expect("offset_keys lists the header's tensors");
            let slot = layout.slot(param).expect("params() lists the layout's parameters");
            let tensor = Tensor {
                path,
                name: &name,
                dtype: info.dtype,
                shape: &info.shape,
                bytes: &data[info.data_offsets.0..info.data_offsets.1],
            };
            tensor.expect_shape(&hf_shape(param, slot, hidden, family))?;
            if slot.matrix {
                tensor.convert_into(&mut weights.matrices[slot.range()])?;
            } else {
                tensor.convert_into(&mut weights.vectors[slot.range()])?;
            }
            loaded.insert(param);
        }
    }
    if let Some(missing) = layout.params().find(|p| !loaded.contains(p)) {
        return Err(Error::MissingTensor {
            files: files.to_vec(),
            tensor: missing.name(family).to_string(),
        });
    }
    Ok(weights)
}

/// Loads every adapter of `layout` from a PEFT adapter_model.safetensors, checking shapes
/// (`A` `[r, in]`, `B` `[out, r]`); the result is the flat LoRA buffer.
pub fn load_adapters(path: &Path, layout: &LoraLayout) -> Result<Vec<f32>> {
    let map = map_file(path)?;
    let file = SafeTensors::deserialize(&map)
        .map_err(|source| Error::Safetensors { path: path.to_path_buf(), source })?;
    let rank = layout.config().rank;
    let mut buffer = vec![0.0f32; layout.len()];
    for (layer, param, is_b) in layout.tensors() {
        let canonical = layout.name(layer, param, is_b).to_string();
        let (name, view) = aliases(&canonical)
            .into_iter()
            .find_map(|name| file.tensor(&name).ok().map(|view| (name, view)))
            .ok_or_else(|| Error::MissingTensor {
                files: vec![path.to_path_buf()],
                tensor: canonical.clone(),
            })?;
        let slot = layout.slot(layer, param).expect("tensors() lists adapted projections");
        let expected = if is_b { [slot.out_features, rank] } else { [rank, slot.in_features] };
        let tensor = Tensor {
            path,
            name: &name,
            dtype: view.dtype(),
            shape: view.shape(),
            bytes: view.data(),
        };
        tensor.expect_shape(&expected)?;
        tensor.convert_into(&mut buffer[layout.range(layer, param, is_b)])?;
    }
    Ok(buffer)
}

/// Maps `path` read-only.
fn map_file(path: &Path) -> Result<Mmap> {
    let io = |source| Error::Io { path: path.to_path_buf(), source };
    let file = File::open(path).map_err(io)?;
    // SAFETY: the map is read-only and lives only while this function's caller reads the
    // tensors; a checkpoint truncated or rewritten by another process meanwhile is outside
    // what mft supports (as for every mmap-based reader of safetensors).
    unsafe { Mmap::map(&file) }.map_err(io)
}

/// The names `canonical` may have in a file: itself; without the base-model prefix
/// (`transformer.` / `model.`: a checkpoint of the bare model); the text tower of a multimodal
/// Gemma 3 (`language_model.model.…`, `model.language_model.…`, `language_model.lm_head.…`).
/// A PEFT prefix `base_model.model.` stays in front.
fn aliases(canonical: &str) -> Vec<String> {
    let (peft, name) = match canonical.strip_prefix("base_model.model.") {
        Some(rest) => ("base_model.model.", rest),
        None => ("", canonical),
    };
    let mut names = vec![name.to_string()];
    if let Some(bare) = name.strip_prefix("transformer.") {
        names.push(bare.to_string());
    } else if let Some(bare) = name.strip_prefix("model.") {
        names.push(bare.to_string());
        names.push(format!("language_model.model.{bare}"));
        names.push(format!("model.language_model.{bare}"));
    } else {
        names.push(format!("language_model.{name}"));
    }
    names.into_iter().map(|n| format!("{peft}{n}")).collect()
}

/// Width of the residual stream: the length of the final norm's weight.
fn hidden_width(layout: &ParamLayout) -> usize {
    layout.slot(Param::Global(GlobalParam::FinalNorm)).expect("every model has a final norm").len
}

/// The shape of `param` in a Hugging Face checkpoint. Every projection has the residual width
/// on one side (its input, or for the attention and MLP outputs its output), so the layout's
/// element count and `hidden` give both sides. Linear weights are `[out, in]`, GPT-2's Conv1D
/// weights `[in, out]`, tables `[rows, hidden]`, vectors 1-D.
fn hf_shape(param: Param, slot: Slot, hidden: usize, family: Family) -> Vec<usize> {
    if !slot.matrix {
        return vec![slot.len];
    }
    let other = slot.len / hidden.max(1);
    match param {
        Param::Global(_) => vec![other, hidden],
        Param::Layer(_, p) => {
            let (inp, out) = match p {
                LayerParam::O | LayerParam::Down => (other, hidden),
                _ => (hidden, other),
            };
            if family == Family::Gpt2 { vec![inp, out] } else { vec![out, inp] }
        }
    }
}

/// One tensor of a mapped file.
struct Tensor<'a> {
    path: &'a Path,
    name: &'a str,
    dtype: Dtype,
    shape: &'a [usize],
    bytes: &'a [u8],
}

impl Tensor<'_> {
    fn expect_shape(&self, expected: &[usize]) -> Result<()> {
        if self.shape == expected {
            return Ok(());
        }
        Err(Error::TensorShape {
            path: self.path.to_path_buf(),
            tensor: self.name.to_string(),
            expected: expected.to_vec(),
            actual: self.shape.to_vec(),
        })
    }

    /// Converts the tensor (whose element count matches `dst`) into `dst`.
    fn convert_into<T: Element>(&self, dst: &mut [T]) -> Result<()> {
        let source = match self.dtype {
            Dtype::F32 => mft_core::DType::F32,
            Dtype::F16 => mft_core::DType::F16,
            Dtype::BF16 => mft_core::DType::BF16,
            other => {
                return Err(Error::TensorDtype {
                    path: self.path.to_path_buf(),
                    tensor: self.name.to_string(),
                    dtype: other.to_string(),
                });
            }
        };
        debug_assert_eq!(self.bytes.len(), dst.len() * source.size_bytes());
        if source == T::DTYPE && cfg!(target_endian = "little") {
            bytemuck::cast_slice_mut::<T, u8>(dst).copy_from_slice(self.bytes);
            return Ok(());
        }
        match source {
            mft_core::DType::F32 => widen(self.bytes, dst, f32::from_le_bytes),
            mft_core::DType::F16 => widen(self.bytes, dst, |b| f16::from_le_bytes(b).to_f32()),
            mft_core::DType::BF16 => widen(self.bytes, dst, |b| bf16::from_le_bytes(b).to_f32()),
        }
        Ok(())
    }
}

/// `dst[i] = T::from_f32(decode(bytes of element i))`.
fn widen<T: Element, const N: usize>(bytes: &[u8], dst: &mut [T], decode: impl Fn([u8; N]) -> f32) {
    for (chunk, d) in bytes.chunks_exact(N).zip(dst) {
        let mut raw = [0u8; N];
        raw.copy_from_slice(chunk);
        *d = T::from_f32(decode(raw));
    }
}

#[cfg(test)]
mod tests {
    use mft_models::ModelConfig;

    use super::*;

    /// The shapes derived from the layout alone agree with the config's `features`.
    #[test]
    fn derived_shapes_match_features() {
        let mut qwen = ModelConfig::qwen2_5_0_5b();
        qwen.tie_embeddings = false;
        for config in [ModelConfig::gpt2(), qwen, ModelConfig::gemma3_270m()] {
            let layout = ParamLayout::new(&config);
            let hidden = hidden_width(&layout);
            assert_eq!(hidden, config.hidden);
            for param in layout.params() {
                let slot = layout.slot(param).unwrap();
                let shape = hf_shape(param, slot, hidden, config.family);
                let expected = match param {
                    Param::Layer(_, p) if p.is_matrix() => {
                        let (inp, out) = p.features(&config).unwrap();
                        if config.family == Family::Gpt2 { vec![inp, out] } else { vec![out, inp] }
                    }
                    Param::Layer(_, p) => vec![p.numel(&config)],
                    Param::Global(GlobalParam::Positions) => {
                        vec![config.max_positions, config.hidden]
                    }
                    Param::Global(g) if g.is_matrix() => vec![config.vocab, config.hidden],
                    Param::Global(g) => vec![g.numel(&config)],
                };
                assert_eq!(shape, expected, "{}", param.name(config.family));
            }
        }
    }

    #[test]
    fn shard_names() {
        assert_eq!(shard_number("model-00002-of-00003.safetensors"), Some((2, 3)));
        assert_eq!(shard_number("model-00004-of-00003.safetensors"), None);
        assert_eq!(shard_number("model-x-of-00003.safetensors"), None);
        assert_eq!(shard_number("model.safetensors"), None);
    }

    #[test]
    fn gemma_aliases_cover_multimodal_names() {
        let names = aliases("model.layers.0.mlp.up_proj.weight");
        assert!(names.contains(&"language_model.model.layers.0.mlp.up_proj.weight".to_string()));
        assert!(names.contains(&"model.language_model.layers.0.mlp.up_proj.weight".to_string()));
        assert_eq!(aliases("lm_head.weight")[1], "language_model.lm_head.weight");
        let peft = aliases("base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
        assert_eq!(peft[1], "base_model.model.h.0.attn.c_attn.lora_A.weight");
    }
}
