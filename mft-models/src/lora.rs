//! LoRA as PEFT defines it: for a targeted projection `y = W·x`, training adds
//! `scaling · B·A·dropout(x)` with `A` `[r, in]`, `B` `[out, r]`, `scaling = alpha / r` (or
//! `alpha / √r` with rsLoRA), dropout only while training. `A` starts Kaiming-uniform
//! (`a = √5`, i.e. `U(−1/√in, 1/√in)`), `B` at zero, so training starts from the base model.
//!
//! Targets are Hugging Face module names matched as PEFT matches them (a name selects every
//! module whose path is it or ends with `.name`): GPT-2's `c_proj` is both `attn.c_proj` and
//! `mlp.c_proj`. The adapters of all layers sit in one flat f32 buffer ([`LoraLayout`]); their
//! gradients and optimizer state use the same layout.

use core::fmt;

use crate::config::{Family, ModelConfig};
use crate::error::{Error, Result};
use crate::params::{LAYER_PARAMS, LayerParam};
use crate::rng::Counter;
use mft_kernels::{Parallel, SharedSlice, for_each_range};

/// A set of projections carrying adapters.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct LoraTargets(u32);

impl LoraTargets {
    /// No target.
    pub const NONE: LoraTargets = LoraTargets(0);

    /// Whether `param` is targeted.
    pub fn contains(self, param: LayerParam) -> bool {
        self.0 >> param as u32 & 1 == 1
    }

    /// The set with `param` added.
    pub fn with(self, param: LayerParam) -> LoraTargets {
        LoraTargets(self.0 | 1 << param as u32)
    }

    /// Whether the set is empty.
    pub fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// The targeted projections of `family`, in layout order.
    pub fn params(self, family: Family) -> impl Iterator<Item = LayerParam> {
        LayerParam::ALL
            .into_iter()
            .filter(move |p| self.contains(*p) && p.in_family(family) && p.is_matrix())
    }

    /// The projections `names` select, PEFT-style (`c_proj` selects every module whose path
    /// is `c_proj` or ends with `.c_proj`). Fails on a name that selects nothing, so a typo is
    /// not silently a no-op.
    pub fn from_module_names<'n>(
        family: Family,
        names: impl IntoIterator<Item = &'n str>,
    ) -> Result<LoraTargets> {
        let mut set = LoraTargets::NONE;
        let mut any = false;
        for name in names {
            any = true;
            let before = set;
            for p in LayerParam::ALL {
                if !(p.in_family(family) && p.is_matrix()) {
                    continue;
                }
                let path = p.module_path(family);
                let selected =
                    path == name || path.strip_suffix(name).is_some_and(|head| head.ends_with('.'));
                if selected {
                    set = set.with(p);
                }
            }
            if set == before {
                return Err(Error::UnknownLoraTarget { family: family.model_type() });
            }
        }
        if !any {
            return Err(Error::InvalidLora { field: "target_modules", problem: "is empty" });
        }
        Ok(set)
    }
}

/// LoRA's hyper-parameters.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraConfig {
    /// Rank `r`.
    pub rank: usize,
    /// `lora_alpha`.
    pub alpha: f32,
    /// `lora_dropout`: probability of zeroing an input element while training.
    pub dropout: f32,
    /// `use_rslora`: scale by `alpha / √r` instead of `alpha / r`.
    pub rslora: bool,
    /// The projections that carry adapters.
    pub targets: LoraTargets,
}

impl LoraConfig {
    /// The factor applied to `B·A·x`.
    pub fn scaling(&self) -> f32 {
        let r = self.rank as f32;
        if self.rslora { self.alpha / libm::sqrtf(r) } else { self.alpha / r }
    }

    /// Checks the settings, naming the first bad one by its PEFT name.
    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::InvalidLora { field: "r", problem: "must be positive" });
        }
        if self.rank > crate::config::MAX_WIDTH {
            // Beyond any width a model has; the adapters' sizes would overflow.
            return Err(Error::InvalidLora { field: "r", problem: "is beyond 2^24 (16777216)" });
        }
        if !self.alpha.is_finite() {
            return Err(Error::InvalidLora { field: "lora_alpha", problem: "must be finite" });
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return Err(Error::InvalidLora { field: "lora_dropout", problem: "must be in [0, 1)" });
        }
        if self.targets.is_empty() {
            return Err(Error::InvalidLora { field: "target_modules", problem: "is empty" });
        }
        Ok(())
    }
}

/// Where an adapter pair lives in the flat LoRA buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AdapterSlot {
    /// First element of `A` (`[rank, in]`, row-major).
    pub a: usize,
    /// First element of `B` (`[out, rank]`, row-major).
    pub b: usize,
    /// `in_features`.
    pub in_features: usize,
    /// `out_features`.
    pub out_features: usize,
}

/// The layout of every adapter of a model: block after block, the targeted projections in
/// [`LayerParam`] order, each `A` then `B`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct LoraLayout {
    config: LoraConfig,
    family: Family,
    layers: usize,
    in_block: [Option<AdapterSlot>; LAYER_PARAMS],
    block_stride: usize,
}

impl LoraLayout {
    /// The layout of `lora`'s adapters on `model`.
    pub fn new(model: &ModelConfig, lora: &LoraConfig) -> LoraLayout {
        let mut in_block = [None; LAYER_PARAMS];
        let mut next = 0;
        for p in lora.targets.params(model.family) {
            let (in_features, out_features) = p.features(model).expect("targets are matrices");
            let a = next;
            let b = a + lora.rank * in_features;
            next = b + out_features * lora.rank;
            in_block[p as usize] = Some(AdapterSlot { a, b, in_features, out_features });
        }
        LoraLayout {
            config: *lora,
            family: model.family,
            layers: model.layers,
            in_block,
            block_stride: next,
        }
    }

    /// The hyper-parameters.
    pub fn config(&self) -> &LoraConfig {
        &self.config
    }

    /// Elements of the whole buffer.
    pub fn len(&self) -> usize {
        self.layers * self.block_stride
    }

    /// Whether there is no adapter at all.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The adapter of `param` in block `layer`, if it has one.
    pub fn slot(&self, layer: usize, param: LayerParam) -> Option<AdapterSlot> {
        if layer >= self.layers {
            return None;
        }
        let s = self.in_block[param as usize]?;
        let base = layer * self.block_stride;
        Some(AdapterSlot { a: base + s.a, b: base + s.b, ..s })
    }

    /// Every adapter tensor: `(layer, projection, is_b)`, in buffer order.
    pub fn tensors(&self) -> impl Iterator<Item = (usize, LayerParam, bool)> + '_ {
        (0..self.layers).flat_map(move |l| {
            self.config.targets.params(self.family).flat_map(move |p| [(l, p, false), (l, p, true)])
        })
    }

    /// The range of one adapter tensor in the buffer.
    pub fn range(&self, layer: usize, param: LayerParam, is_b: bool) -> core::ops::Range<usize> {
        let s = self.slot(layer, param).expect("the projection carries an adapter");
        let r = self.config.rank;
        if is_b { s.b..s.b + s.out_features * r } else { s.a..s.a + r * s.in_features }
    }

    /// The PEFT name of an adapter tensor (as in adapter_model.safetensors).
    pub fn name(&self, layer: usize, param: LayerParam, is_b: bool) -> AdapterName {
        AdapterName { family: self.family, layer, param, is_b }
    }

    /// PEFT's initialisation: every `A` Kaiming-uniform (`U(−1/√in, 1/√in)`), every `B` zero.
    /// The values depend only on `seed` and the tensor, not on the order of visiting.
    pub fn init(&self, seed: u64, buffer: &mut [f32]) {
        assert_eq!(buffer.len(), self.len(), "LoRA buffer holds the wrong number of floats");
        for (layer, param, is_b) in self.tensors() {
            let range = self.range(layer, param, is_b);
            let values = &mut buffer[range];
            if is_b {
                values.fill(0.0);
                continue;
            }
            let in_features = self.slot(layer, param).map_or(1, |s| s.in_features);
            let bound = 1.0 / libm::sqrtf(in_features as f32);
            let rng = Counter::new(seed, &[layer as u64, param as u64]);
            for (i, v) in values.iter_mut().enumerate() {
                *v = (2.0 * rng.uniform(i as u64) - 1.0) * bound;
            }
        }
    }
}

/// An adapter tensor's PEFT name; `Display` writes it, e.g.
/// `base_model.model.transformer.h.0.attn.c_attn.lora_A.weight`.
#[derive(Debug, Clone, Copy)]
pub struct AdapterName {
    family: Family,
    layer: usize,
    param: LayerParam,
    is_b: bool,
}

impl fmt::Display for AdapterName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let prefix = match self.family {
            Family::Gpt2 => "transformer.h",
            Family::Qwen2 | Family::Gemma3 => "model.layers",
        };
        let which = if self.is_b { "B" } else { "A" };
        write!(
            f,
            "base_model.model.{prefix}.{}.{}.lora_{which}.weight",
            self.layer,
            self.param.module_path(self.family)
        )
    }
}

/// The inverted-dropout mask of one projection input in one step: element `i` is dropped when
/// its 16-bit draw falls below `p·65536` (so `p` is honoured to 1/65536), and kept elements are
/// scaled by `1/(1 − p)`. One 64-bit hash gives the draws of four consecutive elements. The mask
/// is regenerated in backward rather than stored.
#[derive(Debug, Clone, Copy)]
pub struct DropoutMask {
    rng: Counter,
    threshold: u32,
    scale: f32,
}

/// Elements below this many are not worth splitting across threads.
const MIN_ELEMENTS_PER_TASK: usize = 1 << 14;

impl DropoutMask {
    /// The mask for `seed` (per step), block `layer`, projection `param`.
    pub fn new(p: f32, seed: u64, layer: usize, param: LayerParam) -> DropoutMask {
        DropoutMask {
            rng: Counter::new(seed, &[layer as u64, param as u64, 0x64726f70]),
            threshold: (p * 65536.0) as u32,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// Calls `f(i, factor)` for every `i` in `range`, `factor` being 0 or `1/(1 − p)`.
    #[inline(always)]
    fn for_each(&self, range: core::ops::Range<usize>, mut f: impl FnMut(usize, f32)) {
        let mut i = range.start;
        while i < range.end {
            let draws = self.rng.bits((i / 4) as u64);
            let group_end = ((i / 4 + 1) * 4).min(range.end);
            for j in i..group_end {
                let draw = (draws >> (16 * (j % 4))) as u32 & 0xffff;
                f(j, if draw < self.threshold { 0.0 } else { self.scale });
            }
            i = group_end;
        }
    }

    /// `out[i] = mask(i)·x[i]`, recording which elements were kept in `bits` (bit `i % 32` of
    /// word `i / 32`; [`mask_words`]`(x.len())` words), so backward can replay the mask with
    /// [`RecordedMask`] instead of hashing again.
    pub fn apply_recording(
        &self,
        x: &[f32],
        out: &mut [f32],
        bits: &mut [u32],
        parallel: &dyn Parallel,
    ) {
        let n = x.len();
        assert_eq!(n, out.len(), "dropout: input and output differ in length");
        assert_eq!(bits.len(), mask_words(n), "dropout: the mask holds the wrong number of words");
        let (out, bits) = (SharedSlice::new(out), SharedSlice::new(bits));
        for_each_range(parallel, mask_words(n), MIN_ELEMENTS_PER_TASK / 32, |words| {
            let range = words.start * 32..(words.end * 32).min(n);
            let start = range.start;
            // SAFETY: the word ranges of one run are disjoint, and so are their elements.
            let (part, bits) = unsafe { (out.part(range.clone()), bits.part(words.clone())) };
            bits.fill(0);
            self.for_each(range, |i, factor| {
                part[i - start] = x[i] * factor;
                bits[(i - start) / 32] |= u32::from(factor != 0.0) << (i % 32);
            });
        });
    }

    /// `out[i] = mask(i)·x[i]`.
    pub fn apply(&self, x: &[f32], out: &mut [f32], parallel: &dyn Parallel) {
        assert_eq!(x.len(), out.len(), "dropout: input and output differ in length");
        let out = SharedSlice::new(out);
        for_each_range(parallel, x.len(), MIN_ELEMENTS_PER_TASK, |range| {
            // SAFETY: the ranges of one run are disjoint.
            let part = unsafe { out.part(range.clone()) };
            let start = range.start;
            self.for_each(range, |i, factor| part[i - start] = x[i] * factor);
        });
    }

    /// `acc[i] += mask(i)·g[i]`: the backward of [`DropoutMask::apply`].
    pub fn accumulate(&self, g: &[f32], acc: &mut [f32], parallel: &dyn Parallel) {
        assert_eq!(g.len(), acc.len(), "dropout: gradient and accumulator differ in length");
        let acc = SharedSlice::new(acc);
        for_each_range(parallel, g.len(), MIN_ELEMENTS_PER_TASK, |range| {
            // SAFETY: the ranges of one run are disjoint.
            let part = unsafe { acc.part(range.clone()) };
            let start = range.start;
            self.for_each(range, |i, factor| part[i - start] += g[i] * factor);
        });
    }
}

/// Words of a recorded mask over `len` elements.
pub fn mask_words(len: usize) -> usize {
    len.div_ceil(32)
}

/// A mask recorded by [`DropoutMask::apply_recording`], replayed without hashing.
#[derive(Debug, Clone, Copy)]
pub struct RecordedMask<'a> {
    bits: &'a [u32],
    scale: f32,
}

impl<'a> RecordedMask<'a> {
    /// The mask in `bits`, for dropout probability `p`.
    pub fn new(bits: &'a [u32], p: f32) -> RecordedMask<'a> {
        RecordedMask { bits, scale: 1.0 / (1.0 - p) }
    }

    /// Calls `f(elements, their words)` over word-aligned ranges of `0..len`, in parallel.
    fn run(
        &self,
        len: usize,
        parallel: &dyn Parallel,
        f: impl Fn(core::ops::Range<usize>, &[u32]) + Sync,
    ) {
        assert!(self.bits.len() >= mask_words(len), "dropout: the recorded mask is too short");
        for_each_range(parallel, mask_words(len), MIN_ELEMENTS_PER_TASK / 32, |words| {
            f(words.start * 32..(words.end * 32).min(len), &self.bits[words])
        });
    }

    /// `out[i] = mask(i)·x[i]`.
    pub fn apply(&self, x: &[f32], out: &mut [f32], parallel: &dyn Parallel) {
        assert_eq!(x.len(), out.len(), "dropout: input and output differ in length");
        let scale = self.scale;
        let shared = SharedSlice::new(out);
        self.run(x.len(), parallel, |range, bits| {
            // SAFETY: the ranges of one run are disjoint.
            let part = unsafe { shared.part(range.clone()) };
            for (j, (o, &v)) in part.iter_mut().zip(&x[range]).enumerate() {
                let keep = bits[j / 32] >> (j % 32) & 1;
                *o = if keep == 1 { v * scale } else { 0.0 };
            }
        });
    }

    /// `acc[i] += mask(i)·g[i]`.
    pub fn accumulate(&self, g: &[f32], acc: &mut [f32], parallel: &dyn Parallel) {
        assert_eq!(g.len(), acc.len(), "dropout: gradient and accumulator differ in length");
        let scale = self.scale;
        let shared = SharedSlice::new(acc);
        self.run(g.len(), parallel, |range, bits| {
            // SAFETY: the ranges of one run are disjoint.
            let part = unsafe { shared.part(range.clone()) };
            for (j, (a, &v)) in part.iter_mut().zip(&g[range]).enumerate() {
                let keep = bits[j / 32] >> (j % 32) & 1;
                *a += if keep == 1 { v * scale } else { 0.0 };
            }
        });
    }
}
