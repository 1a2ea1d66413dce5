//! Elementwise activations and gated units, forward and backward: GELU with the tanh
//! approximation (GPT-2's `gelu_new`, Gemma 3's `gelu_pytorch_tanh`), SiLU, and the gates GeGLU
//! (Gemma 3) and SwiGLU (Qwen 2.5) over separate `gate` and `up` projections.
//!
//! # GELU (tanh approximation)
//! `gelu(x) = ½·x·(1 + tanh(u))`, `u = √(2/π)·(x + 0.044715·x³)`. Since `½·(1 + tanh(u)) =
//! σ(2u)` (σ the logistic function), it is computed as `gelu(x) = x·σ(2u)`: the same function,
//! but without the cancellation in `1 + tanh(u)` for negative `x`, so it is accurate to a few
//! ulp relative everywhere (PyTorch's float32 formula loses relative accuracy there; the two
//! agree to ~1e-7 absolute).
//! Derivative: `gelu'(x) = σ(2u) + x·σ(2u)·(1 − σ(2u))·2·√(2/π)·(1 + 3·0.044715·x²)`.
//!
//! # SiLU
//! `silu(x) = x·σ(x)`, `silu'(x) = σ(x)·(1 + x·(1 − σ(x)))`.
//!
//! # Gates
//! `y = act(gate)·up` with `act` = GELU (GeGLU) or SiLU (SwiGLU); backward:
//! `d_gate = dy·up·act'(gate)`, `d_up = dy·act(gate)`.
//!
//! All gradients here are activation gradients and are written, not accumulated. Elements are
//! independent, so results do not depend on the thread count.

use crate::kernels::Kernels;
use crate::math::sigmoid;
use crate::parallel::MIN_TASK_ELEMENTS;
use crate::parallel::{Parallel, SharedSlice, for_each_range};

/// `2·√(2/π)` (1.5957691216…) rounded to f32: GELU's `2u = GELU_2K·(x + GELU_C·x³)`.
const GELU_2K: f32 = 1.595_769_2;
/// The cubic coefficient of the tanh approximation.
const GELU_C: f32 = 0.044_715;

/// `gelu(x)` (tanh approximation).
#[inline(always)]
fn gelu(x: f32) -> f32 {
    x * sigmoid(GELU_2K * (x + GELU_C * x * x * x))
}

/// `(gelu(x), gelu'(x))`.
#[inline(always)]
fn gelu_and_derivative(x: f32) -> (f32, f32) {
    let x2 = x * x;
    let s = sigmoid(GELU_2K * (x + GELU_C * x2 * x));
    let du = GELU_2K * (1.0 + 3.0 * GELU_C * x2);
    (x * s, s + x * (s * (1.0 - s)) * du)
}

/// `silu(x)`.
#[inline(always)]
fn silu(x: f32) -> f32 {
    x * sigmoid(x)
}

/// `(silu(x), silu'(x))`.
#[inline(always)]
fn silu_and_derivative(x: f32) -> (f32, f32) {
    let s = sigmoid(x);
    (x * s, s * (1.0 + x * (1.0 - s)))
}

/// `y[i] = f(x[i])`.
#[inline(always)]
fn map1(x: &[f32], y: &mut [f32], f: impl Fn(f32) -> f32) {
    for (y, &x) in y.iter_mut().zip(x) {
        *y = f(x);
    }
}

/// `y[i] = f(a[i], b[i])`.
#[inline(always)]
fn map2(a: &[f32], b: &[f32], y: &mut [f32], f: impl Fn(f32, f32) -> f32) {
    let b = &b[..a.len()];
    for ((y, &a), &b) in y.iter_mut().zip(a).zip(b) {
        *y = f(a, b);
    }
}

/// `(y0[i], y1[i]) = f(a[i], b[i], c[i])`.
#[inline(always)]
fn map3_to2(
    a: &[f32],
    b: &[f32],
    c: &[f32],
    y0: &mut [f32],
    y1: &mut [f32],
    f: impl Fn(f32, f32, f32) -> (f32, f32),
) {
    let n = a.len();
    let (b, c, y1) = (&b[..n], &c[..n], &mut y1[..n]);
    for ((((y0, y1), &a), &b), &c) in y0.iter_mut().zip(y1).zip(a).zip(b).zip(c) {
        (*y0, *y1) = f(a, b, c);
    }
}

/// Asserts that `operand` has `len` elements, as `reference` (of `expected`) does.
fn check_same_len(what: &str, operand: &str, len: usize, reference: &str, expected: usize) {
    assert!(len == expected, "{what}: {operand} has {len} elements, {reference} has {expected}");
}

/// Runs `body(range)` over ranges of `0..len` split across `parallel`.
fn split_elements(
    parallel: &dyn Parallel,
    len: usize,
    body: impl Fn(core::ops::Range<usize>) + Sync,
) {
    for_each_range(parallel, len, MIN_TASK_ELEMENTS, body);
}

impl Kernels {
    /// `y = f(x)` elementwise, split across `parallel`.
    fn unary(
        &self,
        x: &[f32],
        y: &mut [f32],
        parallel: &dyn Parallel,
        f: impl Fn(f32) -> f32 + Sync,
    ) {
        let y = SharedSlice::new(y);
        split_elements(parallel, x.len(), |range| {
            // SAFETY: the ranges of one run are disjoint.
            let y = unsafe { y.part(range.clone()) };
            let x = &x[range];
            crate::vectorize::vectorized!(self.isa(), map1(x, y, &f));
        });
    }

    /// `y = f(a, b)` elementwise, split across `parallel`.
    fn binary(
        &self,
        a: &[f32],
        b: &[f32],
        y: &mut [f32],
        parallel: &dyn Parallel,
        f: impl Fn(f32, f32) -> f32 + Sync,
    ) {
        let y = SharedSlice::new(y);
        split_elements(parallel, a.len(), |range| {
            // SAFETY: the ranges of one run are disjoint.
            let y = unsafe { y.part(range.clone()) };
            let (a, b) = (&a[range.clone()], &b[range]);
            crate::vectorize::vectorized!(self.isa(), map2(a, b, y, &f));
        });
    }

    /// `(y0, y1) = f(a, b, c)` elementwise, split across `parallel`.
    #[allow(clippy::too_many_arguments)] // three inputs, two outputs, threads and the function
    fn ternary_to_two(
        &self,
        a: &[f32],
        b: &[f32],
        c: &[f32],
        y0: &mut [f32],
        y1: &mut [f32],
        parallel: &dyn Parallel,
        f: impl Fn(f32, f32, f32) -> (f32, f32) + Sync,
    ) {
        let (y0, y1) = (SharedSlice::new(y0), SharedSlice::new(y1));
        split_elements(parallel, a.len(), |range| {
            // SAFETY: the ranges of one run are disjoint.
            let (y0, y1) = unsafe { (y0.part(range.clone()), y1.part(range.clone())) };
            let (a, b, c) = (&a[range.clone()], &b[range.clone()], &c[range]);
            crate::vectorize::vectorized!(self.isa(), map3_to2(a, b, c, y0, y1, &f));
        });
    }

    /// A gated unit's backward, `d_gate = dy·up·act'(gate)`, `d_up = dy·act(gate)`, for the
    /// activation given as `act_and_derivative`; `what` names the public entry in panics.
    #[allow(clippy::too_many_arguments)] // three inputs, two outputs, threads and the activation
    #[inline(always)]
    fn gate_backward(
        &self,
        what: &str,
        dy: &[f32],
        gate: &[f32],
        up: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
        parallel: &dyn Parallel,
        act_and_derivative: impl Fn(f32) -> (f32, f32) + Sync,
    ) {
        check_same_len(what, "gate", gate.len(), "dy", dy.len());
        check_same_len(what, "up", up.len(), "dy", dy.len());
        check_same_len(what, "d_gate", d_gate.len(), "dy", dy.len());
        check_same_len(what, "d_up", d_up.len(), "dy", dy.len());
        self.ternary_to_two(
            dy,
            gate,
            up,
            d_gate,
            d_up,
            parallel,
            #[inline(always)]
            |dy, g, u| {
                let (act, d_act) = act_and_derivative(g);
                (dy * u * d_act, dy * act)
            },
        );
    }

    /// `y = gelu(x)` with the tanh approximation, elementwise.
    ///
    /// # Panics
    /// If `y` and `x` differ in length.
    pub fn gelu_tanh_forward(&self, x: &[f32], y: &mut [f32], parallel: &dyn Parallel) {
        check_same_len("gelu_tanh_forward", "y", y.len(), "x", x.len());
        self.unary(x, y, parallel, gelu);
    }

    /// `dx = dy·gelu'(x)` (tanh approximation), elementwise, from the forward's input `x`.
    ///
    /// # Panics
    /// If `x` or `dx` differ in length from `dy`.
    pub fn gelu_tanh_backward(
        &self,
        dy: &[f32],
        x: &[f32],
        dx: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        const WHAT: &str = "gelu_tanh_backward";
        check_same_len(WHAT, "x", x.len(), "dy", dy.len());
        check_same_len(WHAT, "dx", dx.len(), "dy", dy.len());
        self.binary(
            dy,
            x,
            dx,
            parallel,
            #[inline(always)]
            |dy, x| dy * gelu_and_derivative(x).1,
        );
    }

    /// `y = silu(x) = x·σ(x)`, elementwise.
    ///
    /// # Panics
    /// If `y` and `x` differ in length.
    pub fn silu_forward(&self, x: &[f32], y: &mut [f32], parallel: &dyn Parallel) {
        check_same_len("silu_forward", "y", y.len(), "x", x.len());
        self.unary(x, y, parallel, silu);
    }

    /// `dx = dy·silu'(x)`, elementwise, from the forward's input `x`.
    ///
    /// # Panics
    /// If `x` or `dx` differ in length from `dy`.
    pub fn silu_backward(&self, dy: &[f32], x: &[f32], dx: &mut [f32], parallel: &dyn Parallel) {
        const WHAT: &str = "silu_backward";
        check_same_len(WHAT, "x", x.len(), "dy", dy.len());
        check_same_len(WHAT, "dx", dx.len(), "dy", dy.len());
        self.binary(
            dy,
            x,
            dx,
            parallel,
            #[inline(always)]
            |dy, x| dy * silu_and_derivative(x).1,
        );
    }

    /// GeGLU: `y = gelu(gate)·up` (tanh approximation), elementwise.
    ///
    /// # Panics
    /// If `up` or `y` differ in length from `gate`.
    pub fn geglu_forward(&self, gate: &[f32], up: &[f32], y: &mut [f32], parallel: &dyn Parallel) {
        const WHAT: &str = "geglu_forward";
        check_same_len(WHAT, "up", up.len(), "gate", gate.len());
        check_same_len(WHAT, "y", y.len(), "gate", gate.len());
        self.binary(
            gate,
            up,
            y,
            parallel,
            #[inline(always)]
            |g, u| gelu(g) * u,
        );
    }

    /// GeGLU backward: `d_gate = dy·up·gelu'(gate)`, `d_up = dy·gelu(gate)`, from the forward's
    /// inputs `gate` and `up`.
    ///
    /// # Panics
    /// If any operand differs in length from `dy`.
    pub fn geglu_backward(
        &self,
        dy: &[f32],
        gate: &[f32],
        up: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        self.gate_backward(
            "geglu_backward",
            dy,
            gate,
            up,
            d_gate,
            d_up,
            parallel,
            gelu_and_derivative,
        );
    }

    /// SwiGLU: `y = silu(gate)·up`, elementwise.
    ///
    /// # Panics
    /// If `up` or `y` differ in length from `gate`.
    pub fn swiglu_forward(&self, gate: &[f32], up: &[f32], y: &mut [f32], parallel: &dyn Parallel) {
        const WHAT: &str = "swiglu_forward";
        check_same_len(WHAT, "up", up.len(), "gate", gate.len());
        check_same_len(WHAT, "y", y.len(), "gate", gate.len());
        self.binary(
            gate,
            up,
            y,
            parallel,
            #[inline(always)]
            |g, u| silu(g) * u,
        );
    }

    /// SwiGLU backward: `d_gate = dy·up·silu'(gate)`, `d_up = dy·silu(gate)`, from the
    /// forward's inputs `gate` and `up`.
    ///
    /// # Panics
    /// If any operand differs in length from `dy`.
    pub fn swiglu_backward(
        &self,
        dy: &[f32],
        gate: &[f32],
        up: &[f32],
        d_gate: &mut [f32],
        d_up: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        self.gate_backward(
            "swiglu_backward",
            dy,
            gate,
            up,
            d_gate,
            d_up,
            parallel,
            silu_and_derivative,
        );
    }
}
