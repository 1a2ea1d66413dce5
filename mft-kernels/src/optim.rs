//! Optimizer steps and gradient utilities: AdamW and SGD (PyTorch's semantics), the global
//! gradient L2 norm and clipping by it (`torch.nn.utils.clip_grad_norm_`).
//!
//! Every routine is elementwise over flat f32 slices (parameters, gradients, optimizer state of
//! equal length), split into contiguous element ranges across threads ([`Parallel`]) and run in
//! vectorized bodies, one per ISA. They are memory-bound: an AdamW step reads 16 and writes 12
//! bytes per parameter, and needs no scratch.
//!
//! # AdamW ([`Kernels::adamw_step`], as `torch.optim.AdamW`)
//! With step `t` (1-based), learning rate `lr`, decay `wd`:
//! `p ← p·(1 − lr·wd)`; `m ← m + (1 − β1)·(g − m)` (= `β1·m + (1 − β1)·g`, PyTorch's `lerp`);
//! `v ← β2·v + (1 − β2)·g²`; `p ← p − (lr / (1 − β1ᵗ))·m / (√v / √(1 − β2ᵗ) + eps)`, which is
//! `p − lr·m̂/(√v̂ + eps)` with `m̂ = m/(1 − β1ᵗ)`, `v̂ = v/(1 − β2ᵗ)`. The per-step scalars
//! (bias corrections, step size, decay factor) are computed in f64 as Python computes them.
//!
//! # SGD ([`Kernels::sgd_step`], as `torch.optim.SGD`)
//! `g ← g + wd·p` (L2 penalty added to the gradient); with momentum `μ`: `b ← g` on step 1,
//! else `b ← μ·b + (1 − dampening)·g`, then `g ← b` (or `g + μ·b` with Nesterov);
//! `p ← p − lr·g`.
//!
//! # Norm and clipping
//! [`Kernels::grad_norm`] is `√Σ g²` over several slices, accumulated in f64 (16 lanes per
//! task, tasks summed in order). [`Kernels::clip_grad_norm`] scales every gradient by
//! `max_norm / (norm + 1e-6)` when that is below 1, and returns the norm before clipping.
//!
//! # Square root
//! `core` has no `sqrt`, and `libm::sqrtf` is an inline-assembly instruction per element that
//! keeps the loop from vectorizing. [`sqrt`] is written to vectorize instead: Newton's iteration
//! for `1/√x` in f64 from a bit-level first guess, then one correction of `√x`, rounded to f32.
//! The tests check it against the correctly rounded square root over a dense sample of all
//! non-negative floats (every result within one ulp), and it was checked exhaustively over all
//! 2³¹ of them once (release build): see `tests/optim.rs`.

use crate::kernels::Kernels;
use crate::parallel::{Parallel, SharedSlice, for_each_range};

/// Fewest elements a thread takes (below this, one thread does them all).
const MIN_ELEMENTS_PER_TASK: usize = 1 << 14;
/// Most tasks a reduction splits into (the partial sums live on the stack).
const MAX_REDUCTION_TASKS: usize = 64;
/// Independent f64 accumulators of a reduction: enough for any ISA's vectors.
const LANES: usize = 16;
/// Added to the norm in [`Kernels::clip_grad_norm`]'s coefficient, as PyTorch does.
const CLIP_EPS: f32 = 1e-6;

/// AdamW's hyper-parameters; [`Default`] gives PyTorch's defaults.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct AdamW {
    /// Learning rate (default 1e-3).
    pub lr: f32,
    /// Decay of the first moment (default 0.9).
    pub beta1: f32,
    /// Decay of the second moment (default 0.999).
    pub beta2: f32,
    /// Added to the denominator (default 1e-8).
    pub eps: f32,
    /// Decoupled weight decay (default 0.01).
    pub weight_decay: f32,
}

impl Default for AdamW {
    fn default() -> Self {
        AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 }
    }
}

/// SGD's hyper-parameters; [`Default`] gives PyTorch's defaults (plain SGD, lr 1e-3).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sgd {
    /// Learning rate (default 1e-3).
    pub lr: f32,
    /// Momentum factor, 0 for none (default 0).
    pub momentum: f32,
    /// Dampening of the gradient in the momentum buffer (default 0).
    pub dampening: f32,
    /// L2 penalty added to the gradient (default 0).
    pub weight_decay: f32,
    /// Nesterov momentum (default false).
    pub nesterov: bool,
}

impl Default for Sgd {
    fn default() -> Self {
        Sgd { lr: 1e-3, momentum: 0.0, dampening: 0.0, weight_decay: 0.0, nesterov: false }
    }
}

/// √x, vectorizable (no libm call): within one ulp of the correctly rounded result for every
/// f32 (see the module docs); `sqrt(-0.0) = -0.0`, `sqrt(+∞) = +∞`, NaN for NaN and negative
/// numbers.
#[inline(always)]
pub fn sqrt(x: f32) -> f32 {
    let d = x as f64;
    // 1/√d: a first guess within 3.5 % from the exponent and leading mantissa bits, then four
    // Newton steps r ← r·(3 − d·r²)/2, each squaring the relative error (to below 1e-16).
    let mut r = f64::from_bits(0x5fe6_eb50_c7b5_37a9u64.wrapping_sub(d.to_bits() >> 1));
    for _ in 0..4 {
        r *= 1.5 - 0.5 * d * r * r;
    }
    // √d = d·(1/√d), refined once more by Newton's step for the square root itself.
    let y = d * r;
    let y = (y + 0.5 * r * (d - y * y)) as f32;
    let y = if x == f32::INFINITY { x } else { y };
    if x < 0.0 { f32::NAN } else { y }
}

/// The AdamW update of one range (see the module docs); `s` holds the step's scalars.
#[inline(always)]
fn adamw_range(s: &AdamWScalars, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = p.len();
    let (g, m, v) = (&g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let pi = p[i] * s.decay;
        let mi = m[i] + s.one_minus_beta1 * (gi - m[i]);
        let vi = v[i] * s.beta2 + s.one_minus_beta2 * gi * gi;
        let denom = sqrt(vi) / s.bias_correction2_sqrt + s.eps;
        p[i] = pi - s.step_size * (mi / denom);
        m[i] = mi;
        v[i] = vi;
    }
}

/// The f32 scalars of one AdamW step, computed in f64 as PyTorch computes them in Python.
struct AdamWScalars {
    decay: f32,
    one_minus_beta1: f32,
    beta2: f32,
    one_minus_beta2: f32,
    step_size: f32,
    bias_correction2_sqrt: f32,
    eps: f32,
}

impl AdamWScalars {
    fn new(h: &AdamW, step: u64) -> Self {
        let (lr, beta1, beta2) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64);
        // β^t by repeated squaring in f64 (t may be large; powi takes an i32).
        let power = |base: f64| {
            let (mut result, mut base, mut e) = (1.0f64, base, step);
            while e > 0 {
                if e & 1 == 1 {
                    result *= base;
                }
                base *= base;
                e >>= 1;
            }
            result
        };
        let bias_correction1 = 1.0 - power(beta1);
        let bias_correction2 = 1.0 - power(beta2);
        AdamWScalars {
            decay: (1.0 - lr * h.weight_decay as f64) as f32,
            one_minus_beta1: (1.0 - beta1) as f32,
            beta2: h.beta2,
            one_minus_beta2: (1.0 - beta2) as f32,
            step_size: (lr / bias_correction1) as f32,
            // A scalar per step: libm's f64 square root is fine here.
            bias_correction2_sqrt: libm::sqrt(bias_correction2) as f32,
            eps: h.eps,
        }
    }
}

/// The SGD update of one range; `b` is the momentum buffer (unused without momentum).
#[inline(always)]
fn sgd_range(h: &Sgd, first: bool, p: &mut [f32], g: &[f32], b: &mut [f32]) {
    let n = p.len();
    let g = &g[..n];
    let (lr, wd, mu) = (h.lr, h.weight_decay, h.momentum);
    let keep = 1.0 - h.dampening;
    if mu == 0.0 {
        for (p, &g) in p.iter_mut().zip(g) {
            let d = if wd != 0.0 { g + wd * *p } else { g };
            *p += -lr * d;
        }
        return;
    }
    let b = &mut b[..n];
    for i in 0..n {
        let d = if wd != 0.0 { g[i] + wd * p[i] } else { g[i] };
        let buf = if first { d } else { b[i] * mu + keep * d };
        b[i] = buf;
        let d = if h.nesterov { d + mu * buf } else { buf };
        p[i] += -lr * d;
    }
}

/// Σ x² in f64, with [`LANES`] independent accumulators.
#[inline(always)]
fn sum_squares(x: &[f32]) -> f64 {
    let mut acc = [0.0f64; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, &v) in acc.iter_mut().zip(chunk) {
            let v = v as f64;
            *a += v * v;
        }
    }
    for (a, &v) in acc.iter_mut().zip(chunks.remainder()) {
        let v = v as f64;
        *a += v * v;
    }
    acc.iter().sum()
}

/// Checks that an operand has the expected number of elements.
fn check_len(what: &str, operand: &str, len: usize, expected: usize) {
    assert!(len == expected, "{what}: {operand} has {len} elements, params has {expected}");
}

impl Kernels {
    /// One AdamW step (step `step`, counted from 1) on `params` with `grads`, updating the
    /// first and second moments `exp_avg` and `exp_avg_sq` (zero before the first step).
    ///
    /// # Panics
    /// If `step` is 0 or the slices differ in length.
    #[allow(clippy::too_many_arguments)] // hyper-parameters, step, four tensors, threads
    pub fn adamw_step(
        &self,
        hyper: &AdamW,
        step: u64,
        params: &mut [f32],
        grads: &[f32],
        exp_avg: &mut [f32],
        exp_avg_sq: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "adamw_step";
        assert!(step >= 1, "{WHAT}: steps are counted from 1, got 0");
        let n = params.len();
        check_len(WHAT, "grads", grads.len(), n);
        check_len(WHAT, "exp_avg", exp_avg.len(), n);
        check_len(WHAT, "exp_avg_sq", exp_avg_sq.len(), n);
        let s = AdamWScalars::new(hyper, step);
        let (p, m, v) =
            (SharedSlice::new(params), SharedSlice::new(exp_avg), SharedSlice::new(exp_avg_sq));
        for_each_range(parallel, n, MIN_ELEMENTS_PER_TASK, |range| {
            // SAFETY: the ranges of one run are disjoint.
            let (p, m, v) =
                unsafe { (p.part(range.clone()), m.part(range.clone()), v.part(range.clone())) };
            let g = &grads[range];
            crate::vectorize::vectorized!(self.isa(), adamw_range(&s, p, g, m, v),);
        });
    }

    /// One SGD step (step `step`, counted from 1: the momentum buffer is set to the gradient on
    /// step 1, as PyTorch does when it has no buffer yet) on `params` with `grads`.
    /// `momentum_buffer` has the length of `params` when `hyper.momentum` is not 0; otherwise it
    /// is not used and may be empty.
    ///
    /// # Panics
    /// If `step` is 0 or the slices differ in length.
    pub fn sgd_step(
        &self,
        hyper: &Sgd,
        step: u64,
        params: &mut [f32],
        grads: &[f32],
        momentum_buffer: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "sgd_step";
        assert!(step >= 1, "{WHAT}: steps are counted from 1, got 0");
        let n = params.len();
        check_len(WHAT, "grads", grads.len(), n);
        let with_buffer = hyper.momentum != 0.0;
        if with_buffer {
            check_len(WHAT, "momentum_buffer", momentum_buffer.len(), n);
        }
        let first = step == 1;
        let (p, b) = (SharedSlice::new(params), SharedSlice::new(momentum_buffer));
        for_each_range(parallel, n, MIN_ELEMENTS_PER_TASK, |range| {
            // SAFETY: the ranges of one run are disjoint; without momentum the buffer is not
            // touched (an empty part).
            let (p, b) = unsafe {
                (
                    p.part(range.clone()),
                    if with_buffer { b.part(range.clone()) } else { b.part(0..0) },
                )
            };
            let g = &grads[range];
            crate::vectorize::vectorized!(self.isa(), sgd_range(hyper, first, p, g, b),);
        });
    }

    /// The L2 norm of all of `grads` together, `√Σ g²`, accumulated in f64 (the slices are
    /// split into element ranges across threads regardless of where one slice ends).
    pub fn grad_norm<S: AsRef<[f32]> + Sync>(&self, grads: &[S], parallel: &dyn Parallel) -> f32 {
        libm::sqrt(self.sum_of_squares(grads, parallel)) as f32
    }

    /// Clips the gradients like `torch.nn.utils.clip_grad_norm_`: with `norm` the L2 norm of
    /// all of `grads` together ([`Kernels::grad_norm`]; slices, `Vec`s, anything seen as
    /// `[f32]`), multiplies every gradient by `max_norm / (norm + 1e-6)` when that is below 1.
    /// Returns `norm`, before clipping.
    ///
    /// An infinite norm scales by 0 (as PyTorch does); a NaN norm leaves the gradients as they
    /// are (PyTorch would make them all NaN): check the returned norm before stepping.
    pub fn clip_grad_norm<S: AsRef<[f32]> + AsMut<[f32]> + Sync>(
        &self,
        grads: &mut [S],
        max_norm: f32,
        parallel: &dyn Parallel,
    ) -> f32 {
        let norm = self.grad_norm(grads, parallel);
        if let Some(coefficient) = Kernels::clip_coefficient(norm, max_norm) {
            for grad in grads.iter_mut() {
                self.scale(grad.as_mut(), coefficient, parallel);
            }
        }
        norm
    }

    /// The factor [`Kernels::clip_grad_norm`] multiplies gradients of norm `norm` by, or
    /// `None` when it leaves them as they are.
    pub fn clip_coefficient(norm: f32, max_norm: f32) -> Option<f32> {
        let coefficient = max_norm / (norm + CLIP_EPS);
        (coefficient < 1.0).then_some(coefficient)
    }

    /// `x *= factor`, element by element (each product the same however `x` is split).
    pub fn scale(&self, x: &mut [f32], factor: f32, parallel: &dyn Parallel) {
        let shared = SharedSlice::new(x);
        for_each_range(parallel, shared.len(), MIN_ELEMENTS_PER_TASK, |range| {
            // SAFETY: the ranges of one run are disjoint.
            let x = unsafe { shared.part(range) };
            crate::vectorize::vectorized!(self.isa(), x.iter_mut().for_each(|v| *v *= factor),);
        });
    }

    /// Σ x² of one tensor, in f64: its term of a squared gradient norm. The value depends
    /// only on `x` and `parallel.threads()`, so a tensor's term is the same whether its
    /// gradient is held with the others or paged in alone.
    pub fn sum_of_squares_of(&self, x: &[f32], parallel: &dyn Parallel) -> f64 {
        self.sum_of_squares(&[x], parallel)
    }

    /// Σ g² over all of `grads`, in f64: the slices are seen as one index space split into
    /// contiguous ranges, one per task, whose partial sums are added in order.
    fn sum_of_squares<S: AsRef<[f32]> + Sync>(&self, grads: &[S], parallel: &dyn Parallel) -> f64 {
        let total: usize = grads.iter().map(|g| g.as_ref().len()).sum();
        // Σ g² over elements `range` of the concatenation.
        let range_sum = |range: core::ops::Range<usize>| {
            let mut start = 0;
            let mut sum = 0.0;
            for g in grads {
                let g = g.as_ref();
                let (lo, hi) = (range.start.max(start), range.end.min(start + g.len()));
                if lo < hi {
                    let part = &g[lo - start..hi - start];
                    sum += crate::vectorize::vectorized!(self.isa(), sum_squares(part),);
                }
                start += g.len();
                if start >= range.end {
                    break;
                }
            }
            sum
        };
        let tasks = parallel
            .threads()
            .clamp(1, MAX_REDUCTION_TASKS)
            .min(total.div_ceil(MIN_ELEMENTS_PER_TASK))
            .max(1);
        let per_task = total.div_ceil(tasks).max(1);
        let tasks = total.div_ceil(per_task);
        if tasks <= 1 {
            return range_sum(0..total);
        }
        let mut partials = [0.0f64; MAX_REDUCTION_TASKS];
        {
            let shared = SharedSlice::new(&mut partials[..tasks]);
            parallel.run(tasks, &|t| {
                let sum = range_sum(t * per_task..total.min((t + 1) * per_task));
                // SAFETY: each task writes only its own partial.
                unsafe { shared.part(t..t + 1)[0] = sum };
            });
        }
        partials[..tasks].iter().sum()
    }
}
