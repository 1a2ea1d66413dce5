//! GELU (tanh approximation), SiLU, GeGLU and SwiGLU against f64 references written here:
//! forwards over odd lengths, backwards against central finite differences, threaded runs
//! against sequential ones, extreme inputs, and the length checks. Every test runs on every ISA
//! the CPU has.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::{Kernels, Sequential};
use proptest::prelude::*;

/// HF's `gelu_new` / `gelu_pytorch_tanh`, literally, in f64.
fn gelu_ref(x: f64) -> f64 {
    let k = (2.0 / std::f64::consts::PI).sqrt();
    0.5 * x * (1.0 + (k * (x + 0.044715 * x.powi(3))).tanh())
}

fn silu_ref(x: f64) -> f64 {
    x / (1.0 + (-x).exp())
}

/// Which elementwise activation a test exercises.
#[derive(Debug, Clone, Copy)]
enum Act {
    Gelu,
    Silu,
}

impl Act {
    fn reference(self, x: f64) -> f64 {
        match self {
            Act::Gelu => gelu_ref(x),
            Act::Silu => silu_ref(x),
        }
    }

    fn forward(self, k: &Kernels, x: &[f32], par: &dyn mft_kernels::Parallel) -> Vec<f32> {
        let mut y = vec![f32::NAN; x.len()];
        match self {
            Act::Gelu => k.gelu_tanh_forward(x, &mut y, par),
            Act::Silu => k.silu_forward(x, &mut y, par),
        }
        y
    }

    fn backward(
        self,
        k: &Kernels,
        dy: &[f32],
        x: &[f32],
        par: &dyn mft_kernels::Parallel,
    ) -> Vec<f32> {
        let mut dx = vec![f32::NAN; x.len()];
        match self {
            Act::Gelu => k.gelu_tanh_backward(dy, x, &mut dx, par),
            Act::Silu => k.silu_backward(dy, x, &mut dx, par),
        }
        dx
    }

    /// The gated unit `act(gate)·up`: `y`.
    fn gate_forward(
        self,
        k: &Kernels,
        gate: &[f32],
        up: &[f32],
        par: &dyn mft_kernels::Parallel,
    ) -> Vec<f32> {
        let mut y = vec![f32::NAN; gate.len()];
        match self {
            Act::Gelu => k.geglu_forward(gate, up, &mut y, par),
            Act::Silu => k.swiglu_forward(gate, up, &mut y, par),
        }
        y
    }

    /// The gated unit's backward: `(d_gate, d_up)`.
    fn gate_backward(
        self,
        k: &Kernels,
        dy: &[f32],
        gate: &[f32],
        up: &[f32],
        par: &dyn mft_kernels::Parallel,
    ) -> (Vec<f32>, Vec<f32>) {
        let (mut dg, mut du) = (vec![f32::NAN; gate.len()], vec![f32::NAN; gate.len()]);
        match self {
            Act::Gelu => k.geglu_backward(dy, gate, up, &mut dg, &mut du, par),
            Act::Silu => k.swiglu_backward(dy, gate, up, &mut dg, &mut du, par),
        }
        (dg, du)
    }
}

fn acts() -> impl Strategy<Value = Act> {
    prop::sample::select(vec![Act::Gelu, Act::Silu])
}

fn odd_lens() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![1usize, 3, 17, 63, 65, 130, 257])
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    #[test]
    fn forward_matches_f64(act in acts(), len in odd_lens(), seed: u64) {
        let x = values(seed, len, 8.0);
        let want: Vec<f64> = x.iter().map(|&v| act.reference(v as f64)).collect();
        for k in every_isa() {
            let y = act.forward(&k, &x, &Sequential);
            assert_close(&format!("{} {act:?}", k.isa()), &y, &want, 1e-6, 2e-6);
        }
    }

    #[test]
    fn gate_forward_matches_f64(act in acts(), len in odd_lens(), seed: u64) {
        let gate = values(seed, len, 8.0);
        let up = values(seed ^ 1, len, 3.0);
        let want: Vec<f64> =
            gate.iter().zip(&up).map(|(&g, &u)| act.reference(g as f64) * u as f64).collect();
        for k in every_isa() {
            let y = act.gate_forward(&k, &gate, &up, &Sequential);
            assert_close(&format!("{} {act:?} gate", k.isa()), &y, &want, 3e-6, 2e-6);
        }
    }

    #[test]
    fn backward_matches_finite_differences(act in acts(), len in odd_lens(), seed: u64) {
        let x = values(seed, len, 6.0);
        let r = values(seed ^ 1, len, 1.0);
        let rd = widen(&r);
        let want = finite_difference(&widen(&x), 1e-4, |x| {
            x.iter().zip(&rd).map(|(&v, r)| act.reference(v) * r).sum()
        });
        for k in every_isa() {
            let dx = act.backward(&k, &r, &x, &Sequential);
            assert_close(&format!("{} {act:?} dx", k.isa()), &dx, &want, 1e-5, 1e-4);
        }
    }

    #[test]
    fn gate_backward_matches_finite_differences(act in acts(), len in odd_lens(), seed: u64) {
        let gate = values(seed, len, 6.0);
        let up = values(seed ^ 1, len, 3.0);
        let r = values(seed ^ 2, len, 1.0);
        let (gd, ud, rd) = (widen(&gate), widen(&up), widen(&r));
        let loss = |g: &[f64], u: &[f64]| {
            let y: Vec<f64> = g.iter().zip(u).map(|(&g, &u)| act.reference(g) * u).collect();
            dot(&y, &rd)
        };
        let want_dg = finite_difference(&gd, 1e-4, |g| loss(g, &ud));
        let want_du = finite_difference(&ud, 1e-4, |u| loss(&gd, u));
        for k in every_isa() {
            let (dg, du) = act.gate_backward(&k, &r, &gate, &up, &Sequential);
            assert_close(&format!("{} {act:?} d_gate", k.isa()), &dg, &want_dg, 3e-5, 1e-4);
            assert_close(&format!("{} {act:?} d_up", k.isa()), &du, &want_du, 1e-5, 1e-4);
        }
    }
}

/// For negative inputs GELU is tiny, and `1 + tanh(u)` cancels; the kernel is accurate relative
/// to the value itself there.
#[test]
fn gelu_is_relatively_accurate_in_the_negative_tail() {
    let x: Vec<f32> = (0..200).map(|i| -2.0 - 3.0 * i as f32 / 200.0).collect();
    let want: Vec<f64> = x.iter().map(|&v| gelu_ref(v as f64)).collect();
    for k in every_isa() {
        let y = Act::Gelu.forward(&k, &x, &Sequential);
        assert_close(&format!("{} gelu tail", k.isa()), &y, &want, 0.0, 1e-5);
    }
}

/// Saturation: huge inputs give `x` or zero, never NaN, and gradients of large inputs are
/// finite (1 for large positive, 0 for large negative).
#[test]
fn extreme_inputs_saturate() {
    let x = [1e30f32, -1e30, 1e4, -1e4, 0.0, 100.0, -100.0];
    for k in every_isa() {
        for act in [Act::Gelu, Act::Silu] {
            let y = act.forward(&k, &x, &Sequential);
            assert_eq!(y[0], 1e30, "{} {act:?}", k.isa());
            assert_eq!(y[1], 0.0);
            assert_eq!(y[2], 1e4);
            assert_eq!(y[3], 0.0);
            assert_eq!(y[4], 0.0);
            assert_eq!(y[5], 100.0);
            assert!(y[6].abs() < 1e-30, "{} {act:?}: {}", k.isa(), y[6]);
            let dx = act.backward(&k, &[1.0; 4], &x[2..6], &Sequential);
            assert_eq!(dx, [1.0, 0.0, 0.5, 1.0], "{} {act:?}", k.isa());
        }
    }
}

/// Enough elements for three tasks: every element is computed alone, so threaded results are
/// bit-identical to sequential ones.
#[test]
fn threaded_runs_match_sequential() {
    let len = 100_003;
    let x = values(41, len, 6.0);
    let up = values(42, len, 2.0);
    let dy = values(43, len, 1.0);
    let par = ScopedThreads(3);
    for k in every_isa() {
        for act in [Act::Gelu, Act::Silu] {
            let what = format!("{} {act:?}", k.isa());
            assert_eq!(act.forward(&k, &x, &Sequential), act.forward(&k, &x, &par), "{what}");
            assert_eq!(
                act.backward(&k, &dy, &x, &Sequential),
                act.backward(&k, &dy, &x, &par),
                "{what}"
            );
            assert_eq!(
                act.gate_forward(&k, &x, &up, &Sequential),
                act.gate_forward(&k, &x, &up, &par),
                "{what}"
            );
            assert_eq!(
                act.gate_backward(&k, &dy, &x, &up, &Sequential),
                act.gate_backward(&k, &dy, &x, &up, &par),
                "{what}"
            );
        }
    }
}

#[test]
#[should_panic(expected = "gelu_tanh_forward: y has 9 elements, x has 10")]
fn gelu_rejects_a_short_output() {
    Kernels::best().gelu_tanh_forward(&[0.0; 10], &mut [0.0; 9], &Sequential);
}

#[test]
#[should_panic(expected = "silu_backward: x has 4 elements, dy has 5")]
fn silu_backward_rejects_mismatched_input() {
    Kernels::best().silu_backward(&[0.0; 5], &[0.0; 4], &mut [0.0; 5], &Sequential);
}

#[test]
#[should_panic(expected = "swiglu_forward: up has 7 elements, gate has 8")]
fn swiglu_rejects_mismatched_up() {
    Kernels::best().swiglu_forward(&[0.0; 8], &[0.0; 7], &mut [0.0; 8], &Sequential);
}

#[test]
#[should_panic(expected = "geglu_backward: d_up has 3 elements, dy has 8")]
fn geglu_backward_rejects_a_short_gradient() {
    let z = [0.0; 8];
    Kernels::best().geglu_backward(&z, &z, &z, &mut [0.0; 8], &mut [0.0; 3], &Sequential);
}
