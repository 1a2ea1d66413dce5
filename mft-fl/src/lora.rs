//! The LoRA adapters as Flower arrays: one float32 array per PEFT tensor, named by its PEFT key
//! (`base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`) in PEFT's shape (`A`
//! `[r, in]`, `B` `[out, r]`), serialized as `.npy`. A server-side PEFT model, a Flower strategy
//! and `mft` all agree on these names, so the global adapter of any round is a PEFT adapter.
//!
//! Arrays that come in are checked against the local adapter before anything is replaced:
//! exactly the expected names (none missing, none extra), dtype `float32`, `stype`
//! `numpy.ndarray`, the expected shape in both the record and the `.npy` header, and finite
//! values. Anything else is an [`Error::Arrays`] naming the array, so a bad update is refused
//! rather than trained on.

use std::collections::HashMap;
use std::ops::Range;

use mft_models::LoraLayout;

use crate::error::{Error, Result};
use crate::objects::{Array, STYPE_NUMPY};

/// The arrays of one LoRA layout.
#[derive(Debug, Clone, PartialEq)]
pub struct AdapterArrays {
    tensors: Vec<Tensor>,
    len: usize,
}

#[derive(Debug, Clone, PartialEq)]
struct Tensor {
    name: String,
    shape: [usize; 2],
    range: Range<usize>,
}

impl AdapterArrays {
    /// The arrays of `layout`, in its order (block by block, `A` then `B`).
    pub fn new(layout: &LoraLayout) -> AdapterArrays {
        let rank = layout.config().rank;
        let tensors = layout
            .tensors()
            .map(|(layer, param, is_b)| {
                let slot = layout.slot(layer, param).expect("tensors() lists adapted projections");
                Tensor {
                    name: layout.name(layer, param, is_b).to_string(),
                    shape: if is_b { [slot.out_features, rank] } else { [rank, slot.in_features] },
                    range: layout.range(layer, param, is_b),
                }
            })
            .collect();
        AdapterArrays { tensors, len: layout.len() }
    }

    /// Number of arrays.
    pub fn count(&self) -> usize {
        self.tensors.len()
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.tensors.iter().map(|t| t.name.as_str())
    }

    /// `adapters` (the flat buffer of the layout) as named arrays.
    ///
    /// # Panics
    /// If `adapters` is not the layout's length (a programming error).
    pub fn to_arrays(&self, adapters: &[f32]) -> Vec<(String, Array)> {
        assert_eq!(adapters.len(), self.len, "adapters of another layout");
        self.tensors
            .iter()
            .map(|t| (t.name.clone(), Array::from_f32(&t.shape, &adapters[t.range.clone()])))
            .collect()
    }

    /// The flat adapter buffer from `arrays`, after checking every one (see the
    /// [module docs](self)).
    ///
    /// # Errors
    /// [`Error::Arrays`] naming the first array that is missing, unexpected, duplicated, of
    /// another dtype, serialization or shape, unreadable, or not finite.
    pub fn from_arrays(&self, arrays: &[(String, Array)]) -> Result<Vec<f32>> {
        let bad = |problem: String| Error::Arrays { problem };
        let index: HashMap<&str, &Tensor> =
            self.tensors.iter().map(|t| (t.name.as_str(), t)).collect();
        let mut seen: HashMap<&str, ()> = HashMap::new();
        let mut out = vec![0.0f32; self.len];
        for (name, array) in arrays {
            let Some(t) = index.get(name.as_str()) else {
                return Err(bad(format!(
                    "unexpected array {name:?}: the local adapter ({} arrays, e.g. {:?}) has no such tensor",
                    self.tensors.len(),
                    self.tensors.first().map_or("", |t| t.name.as_str())
                )));
            };
            if seen.insert(t.name.as_str(), ()).is_some() {
                return Err(bad(format!("array {name:?} appears twice")));
            }
            if array.dtype != "float32" {
                return Err(bad(format!("{name}: dtype {:?}, expected \"float32\"", array.dtype)));
            }
            if array.stype != STYPE_NUMPY {
                return Err(bad(format!(
                    "{name}: stype {:?}, expected {STYPE_NUMPY:?}",
                    array.stype
                )));
            }
            let expected: Vec<i64> = t.shape.iter().map(|&d| d as i64).collect();
            if array.shape != expected {
                return Err(bad(format!(
                    "{name}: shape {:?}, the local adapter's is {:?} (another rank or model?)",
                    array.shape, t.shape
                )));
            }
            let decoded =
                crate::npy::decode_f32(&array.data).map_err(|e| bad(format!("{name}: {e}")))?;
            if decoded.shape != t.shape {
                return Err(bad(format!(
                    "{name}: the .npy data has shape {:?}, its record says {:?}",
                    decoded.shape, array.shape
                )));
            }
            if let Some(i) = decoded.values.iter().position(|v| !v.is_finite()) {
                return Err(bad(format!("{name}: value {i} is {}", decoded.values[i])));
            }
            out[t.range.clone()].copy_from_slice(&decoded.values);
        }
        if seen.len() != self.tensors.len() {
            let missing: Vec<&str> =
                self.names().filter(|n| !seen.contains_key(n)).take(3).collect();
            return Err(bad(format!(
                "{} of the local adapter's {} arrays are missing, e.g. {missing:?}",
                self.tensors.len() - seen.len(),
                self.tensors.len()
            )));
        }
        Ok(out)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::objects::Named;
    use mft_models::{Family, LoraConfig, LoraTargets, ModelConfig};

    fn layout(rank: usize) -> LoraLayout {
        let config = ModelConfig::gpt2_with(32, 2, 2);
        let lora = LoraConfig {
            rank,
            alpha: 16.0,
            dropout: 0.0,
            rslora: false,
            targets: LoraTargets::from_module_names(Family::Gpt2, ["c_attn"]).unwrap(),
        };
        LoraLayout::new(&config, &lora)
    }

    #[test]
    fn round_trip_and_peft_names() {
        let layout = layout(4);
        let arrays = AdapterArrays::new(&layout);
        let values: Vec<f32> = (0..layout.len()).map(|i| i as f32 * 1e-3).collect();
        let named = arrays.to_arrays(&values);
        assert_eq!(named.len(), arrays.count());
        assert_eq!(named[0].0, "base_model.model.transformer.h.0.attn.c_attn.lora_A.weight");
        assert_eq!(named[1].0, "base_model.model.transformer.h.0.attn.c_attn.lora_B.weight");
        assert_eq!(named[0].1.shape[0], 4);
        assert_eq!(named[1].1.shape[1], 4);
        assert_eq!(arrays.from_arrays(&named).unwrap(), values);
        // Any order.
        let mut reversed = named.clone();
        reversed.reverse();
        assert_eq!(arrays.from_arrays(&reversed).unwrap(), values);
    }

    #[test]
    fn rejects_arrays_that_do_not_match() {
        let layout = layout(4);
        let arrays = AdapterArrays::new(&layout);
        let named = arrays.to_arrays(&vec![0.5; layout.len()]);
        let check = |edit: &dyn Fn(&mut Vec<Named<Array>>), expect: &str| {
            let mut a = named.clone();
            edit(&mut a);
            let err = arrays.from_arrays(&a).unwrap_err().to_string();
            assert!(err.contains(expect), "{err} should contain {expect}");
        };
        check(&|a| a[0].0 = "base_model.model.lm_head.lora_A.weight".into(), "unexpected array");
        check(
            &|a| {
                a.pop();
            },
            "missing",
        );
        check(
            &|a| {
                let d = a[0].clone();
                a.push(d);
            },
            "twice",
        );
        check(&|a| a[0].1.dtype = "float64".into(), "dtype");
        check(&|a| a[0].1.stype = "torch.tensor".into(), "stype");
        check(&|a| a[0].1.shape = vec![8, a[0].1.shape[1]], "another rank");
        check(&|a| a[0].1.data.truncate(40), "npy");
        check(
            &|a| {
                let shape: Vec<usize> = a[0].1.shape.iter().map(|&d| d as usize).collect();
                let n: usize = shape.iter().product();
                let mut values = vec![0.0; n];
                values[3] = f32::NAN;
                a[0].1 = Array::from_f32(&shape, &values);
            },
            "value 3 is NaN",
        );
        // Another rank everywhere: a server started for another adapter.
        let other =
            AdapterArrays::new(&self::layout(8)).to_arrays(&vec![0.0; self::layout(8).len()]);
        assert!(arrays.from_arrays(&other).unwrap_err().to_string().contains("shape"));
    }
}
