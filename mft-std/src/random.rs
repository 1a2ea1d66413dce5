//! Random weights at a model's real shapes, for `--model random:<preset>` runs, benchmarks and
//! tests: the initialisation transformers gives a fresh model (matrices with standard deviation
//! 0.02 — here uniform in ±0.02·√3, which has it — norm weights at their identity, biases
//! zero). [`random_weights`] makes them in memory; [`write_random_checkpoint`] writes the same
//! values to a safetensors file, one piece at a time, for runs that page their weights.

use std::io::Write;
use std::path::Path;

use mft_core::{DType, Element, bf16, f16};
use mft_models::params::GlobalParam;
use mft_models::rng::Counter;
use mft_models::{Family, ModelConfig, Param, ParamLayout};

use crate::error::Result;
use crate::export::{TensorHeader, hf_shape, write_safetensors_with};
use crate::hf::ModelWeights;

/// Standard deviation of transformers' `initializer_range` default.
const INIT_STD: f32 = 0.02;

/// Weights for `config` drawn from `seed`; the same seed gives the same weights.
pub fn random_weights<T: Element + Send>(config: &ModelConfig, seed: u64) -> ModelWeights<T> {
    let layout = ParamLayout::new(config);
    let mut matrices = vec![T::default(); layout.matrix_len()];
    let mut vectors = vec![0.0f32; layout.vector_len()];
    for (index, param) in layout.params().enumerate() {
        let slot = layout.slot(param).expect("the layout lists its own parameters");
        if slot.matrix {
            let rng = Counter::new(seed, &[index as u64]);
            for (i, v) in matrices[slot.range()].iter_mut().enumerate() {
                *v = T::from_f32(matrix_value(&rng, i));
            }
        } else {
            vectors[slot.range()].fill(vector_init(config.family, param));
        }
    }
    ModelWeights::from_stores(matrices, vectors)
}

/// Element `i` of a matrix drawn from `rng`.
fn matrix_value(rng: &Counter, i: usize) -> f32 {
    (2.0 * rng.uniform(i as u64) - 1.0) * INIT_STD * 3f32.sqrt()
}

/// Writes the weights [`random_weights`]`::<T>(config, seed)` makes to `path` as a safetensors
/// checkpoint under transformers' names and shapes, matrices stored as `matrices` (f32, f16 or
/// bf16; the values are those of `T` = that type) and vectors as f32, generated and written a
/// piece at a time: the process never holds more than a few MB of them. Written atomically.
///
/// # Errors
/// [`crate::Error::Io`] naming `path` when it cannot be written.
pub fn write_random_checkpoint(
    path: &Path,
    config: &ModelConfig,
    matrices: DType,
    seed: u64,
) -> Result<()> {
    let layout = ParamLayout::new(config);
    let params: Vec<Param> = layout.params().collect();
    let header: Vec<TensorHeader> = params
        .iter()
        .map(|&param| {
            let slot = layout.slot(param).expect("the layout lists its own parameters");
            TensorHeader {
                name: param.name(config.family).to_string(),
                dtype: if slot.matrix { matrices } else { DType::F32 },
                shape: hf_shape(config, param),
            }
        })
        .collect();
    write_safetensors_with(path, &header, |index, out| {
        let param = params[index];
        let slot = layout.slot(param).expect("the layout lists its own parameters");
        if !slot.matrix {
            let value = vector_init(config.family, param);
            return write_pieces::<f32>(out, slot.len, |_| value);
        }
        let rng = Counter::new(seed, &[index as u64]);
        match matrices {
            DType::F32 => write_pieces::<f32>(out, slot.len, |i| matrix_value(&rng, i)),
            DType::F16 => write_pieces::<f16>(out, slot.len, |i| matrix_value(&rng, i)),
            DType::BF16 => write_pieces::<bf16>(out, slot.len, |i| matrix_value(&rng, i)),
        }
    })
}

/// Writes `len` values `value(i)` as `T`, little-endian, a piece at a time.
fn write_pieces<T: Element>(
    out: &mut dyn Write,
    len: usize,
    value: impl Fn(usize) -> f32,
) -> std::io::Result<()> {
    const PIECE: usize = 1 << 16;
    let mut bytes = Vec::with_capacity(PIECE * T::DTYPE.size_bytes());
    for start in (0..len).step_by(PIECE) {
        bytes.clear();
        for i in start..(start + PIECE).min(len) {
            let at = bytes.len();
            bytes.extend_from_slice(bytemuck::bytes_of(&T::from_f32(value(i))));
            if cfg!(target_endian = "big") {
                bytes[at..].reverse();
            }
        }
        out.write_all(&bytes)?;
    }
    Ok(())
}

/// Biases start at 0; norm weights at 1, or at 0 in Gemma's `1 + weight` form.
fn vector_init(family: Family, param: Param) -> f32 {
    let bias = match param {
        Param::Layer(_, p) => p.is_bias(),
        Param::Global(g) => g == GlobalParam::FinalNormBias,
    };
    match (bias, family) {
        (true, _) => 0.0,
        (false, Family::Gemma3) => 0.0,
        (false, _) => 1.0,
    }
}
