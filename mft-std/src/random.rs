//! Random weights at a model's real shapes, for `--model random:<preset>` runs and tests: the
//! initialisation transformers gives a fresh model (matrices with standard deviation 0.02 —
//! here uniform in ±0.02·√3, which has it — norm weights at their identity, biases zero).

use mft_core::Element;
use mft_models::params::GlobalParam;
use mft_models::rng::Counter;
use mft_models::{Family, ModelConfig, Param, ParamLayout};

use crate::hf::ModelWeights;

/// Standard deviation of transformers' `initializer_range` default.
const INIT_STD: f32 = 0.02;

/// Weights for `config` drawn from `seed`; the same seed gives the same weights.
pub fn random_weights<T: Element + Send>(config: &ModelConfig, seed: u64) -> ModelWeights<T> {
    let layout = ParamLayout::new(config);
    let bound = INIT_STD * 3f32.sqrt();
    let mut matrices = vec![T::default(); layout.matrix_len()];
    let mut vectors = vec![0.0f32; layout.vector_len()];
    for (index, param) in layout.params().enumerate() {
        let slot = layout.slot(param).expect("the layout lists its own parameters");
        if slot.matrix {
            let rng = Counter::new(seed, &[index as u64]);
            for (i, v) in matrices[slot.range()].iter_mut().enumerate() {
                *v = T::from_f32((2.0 * rng.uniform(i as u64) - 1.0) * bound);
            }
        } else {
            vectors[slot.range()].fill(vector_init(config.family, param));
        }
    }
    ModelWeights::from_stores(matrices, vectors)
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
