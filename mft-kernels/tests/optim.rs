//! The optimizers and gradient utilities of every supported ISA against hand-written f64
//! reference loops: AdamW (PyTorch's `torch.optim.AdamW`: decoupled decay, bias correction at
//! step 1 and later), SGD (momentum, dampening, Nesterov, L2 decay), the global gradient norm
//! and clipping; threads against one thread; the vectorizable square root against the correctly
//! rounded one; and the panics on mismatched lengths.

mod common;

use common::{ScopedThreads, assert_close, every_isa, values, widen};
use mft_kernels::optim::{AdamW, Sgd, sqrt};
use mft_kernels::{Kernels, Parallel, Sequential};

/// AdamW on f64 state, written from the formulas of `torch.optim.AdamW`'s documentation.
struct AdamRef {
    p: Vec<f64>,
    m: Vec<f64>,
    v: Vec<f64>,
}

impl AdamRef {
    fn step(&mut self, h: &AdamW, t: u64, g: &[f32]) {
        let (lr, b1, b2) = (h.lr as f64, h.beta1 as f64, h.beta2 as f64);
        let (eps, wd) = (h.eps as f64, h.weight_decay as f64);
        for i in 0..self.p.len() {
            let g = g[i] as f64;
            self.p[i] -= lr * wd * self.p[i];
            self.m[i] = b1 * self.m[i] + (1.0 - b1) * g;
            self.v[i] = b2 * self.v[i] + (1.0 - b2) * g * g;
            let m_hat = self.m[i] / (1.0 - b1.powi(t as i32));
            let v_hat = self.v[i] / (1.0 - b2.powi(t as i32));
            self.p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
    }
}

const ADAMW_SETTINGS: [AdamW; 3] = [
    AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.01 },
    AdamW { lr: 1e-3, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 },
    AdamW { lr: 0.05, beta1: 0.5, beta2: 0.9, eps: 1e-3, weight_decay: 0.1 },
];

#[test]
fn adamw_defaults_are_pytorchs() {
    assert_eq!(ADAMW_SETTINGS[0], AdamW::default());
}

#[test]
fn adamw_matches_the_f64_reference_over_several_steps() {
    // Odd length (vector remainders), steps 1..=4 then a jump to step 1000 (bias correction
    // nearly gone), gradients of different scales each step.
    let n = 1037;
    for k in every_isa() {
        for h in ADAMW_SETTINGS {
            let mut p = values(1, n, 1.0);
            let (mut m, mut v) = (vec![0.0f32; n], vec![0.0f32; n]);
            let mut want = AdamRef { p: widen(&p), m: vec![0.0; n], v: vec![0.0; n] };
            for (round, t) in [1u64, 2, 3, 4, 1000].into_iter().enumerate() {
                let g = values(10 + round as u64, n, 0.1 * (round + 1) as f32);
                k.adamw_step(&h, t, &mut p, &g, &mut m, &mut v, &Sequential);
                want.step(&h, t, &g);
                let what = format!("{} {h:?} step {t}", k.isa());
                assert_close(&format!("{what}: params"), &p, &want.p, 1e-6, 1e-6);
                assert_close(&format!("{what}: exp_avg"), &m, &want.m, 1e-7, 1e-5);
                assert_close(&format!("{what}: exp_avg_sq"), &v, &want.v, 1e-9, 1e-5);
            }
        }
    }
}

#[test]
fn adamw_first_step_moves_each_parameter_by_about_lr() {
    // At t = 1 with zero state, m̂ = g and v̂ = g²: the update is lr·g/(|g| + eps), about
    // ±lr whatever the gradient's scale (bias correction undone, it would be 0.1·g/(0.03·|g|)).
    let h = AdamW { weight_decay: 0.0, ..AdamW::default() };
    for k in every_isa() {
        for scale in [1e-3f32, 1.0, 1e3] {
            let mut p = vec![0.5f32; 64];
            let g = values(3, 64, scale);
            let (mut m, mut v) = (vec![0.0; 64], vec![0.0; 64]);
            k.adamw_step(&h, 1, &mut p, &g, &mut m, &mut v, &Sequential);
            let want: Vec<f64> =
                g.iter().map(|&g| 0.5 - 1e-3 * g as f64 / ((g as f64).abs() + 1e-8)).collect();
            assert_close(&format!("{} scale {scale}", k.isa()), &p, &want, 1e-7, 1e-6);
        }
    }
}

#[test]
fn adamw_weight_decay_is_decoupled() {
    // A zero gradient leaves the moments at zero: only p·(1 − lr·wd) remains.
    let h = AdamW { lr: 0.1, weight_decay: 0.5, ..AdamW::default() };
    for k in every_isa() {
        let mut p = values(4, 100, 2.0);
        let want: Vec<f64> = p.iter().map(|&p| p as f64 * (1.0 - 0.1 * 0.5)).collect();
        let (mut m, mut v) = (vec![0.0; 100], vec![0.0; 100]);
        k.adamw_step(&h, 7, &mut p, &vec![0.0; 100], &mut m, &mut v, &Sequential);
        assert_close(&format!("{}", k.isa()), &p, &want, 0.0, 1e-7);
    }
}

/// SGD on f64 state, written from `torch.optim.SGD`'s documented algorithm.
fn sgd_reference(h: &Sgd, t: u64, p: &mut [f64], buf: &mut [f64], g: &[f32]) {
    let (lr, mu, damp, wd) =
        (h.lr as f64, h.momentum as f64, h.dampening as f64, h.weight_decay as f64);
    for i in 0..p.len() {
        let mut d = g[i] as f64 + wd * p[i];
        if mu != 0.0 {
            buf[i] = if t == 1 { d } else { mu * buf[i] + (1.0 - damp) * d };
            d = if h.nesterov { d + mu * buf[i] } else { buf[i] };
        }
        p[i] -= lr * d;
    }
}

#[test]
fn sgd_matches_the_f64_reference_over_several_steps() {
    let n = 999;
    let settings = [
        Sgd::default(),
        Sgd { lr: 0.1, weight_decay: 0.01, ..Sgd::default() },
        Sgd { lr: 0.1, momentum: 0.9, ..Sgd::default() },
        Sgd { lr: 0.05, momentum: 0.9, dampening: 0.1, weight_decay: 0.02, nesterov: false },
        Sgd { lr: 0.05, momentum: 0.8, dampening: 0.0, weight_decay: 0.02, nesterov: true },
    ];
    for k in every_isa() {
        for h in settings {
            let mut p = values(5, n, 1.0);
            let mut b = if h.momentum != 0.0 { vec![f32::NAN; n] } else { Vec::new() };
            let (mut want_p, mut want_b) = (widen(&p), vec![0.0; n]);
            for t in 1..=4 {
                let g = values(20 + t, n, 0.5);
                k.sgd_step(&h, t, &mut p, &g, &mut b, &Sequential);
                sgd_reference(&h, t, &mut want_p, &mut want_b, &g);
                let what = format!("{} {h:?} step {t}", k.isa());
                assert_close(&format!("{what}: params"), &p, &want_p, 1e-6, 1e-6);
                if h.momentum != 0.0 {
                    assert_close(&format!("{what}: buffer"), &b, &want_b, 1e-6, 1e-6);
                }
            }
        }
    }
}

#[test]
fn sgd_defaults_are_pytorchs() {
    let h = Sgd::default();
    assert_eq!(
        (h.lr, h.momentum, h.dampening, h.weight_decay, h.nesterov),
        (1e-3, 0.0, 0.0, 0.0, false)
    );
}

#[test]
fn threads_give_the_same_results_as_one_thread() {
    let n = 70_001;
    let adam = AdamW { lr: 0.01, ..AdamW::default() };
    let sgd = Sgd { lr: 0.1, momentum: 0.9, weight_decay: 0.01, ..Sgd::default() };
    for k in every_isa() {
        let run = |parallel: &dyn Parallel| {
            let mut p = values(6, n, 1.0);
            let (mut m, mut v) = (vec![0.0; n], vec![0.0; n]);
            let mut q = p.clone();
            let mut b = vec![0.0; n];
            for t in 1..=3 {
                let g = values(30 + t, n, 0.1);
                k.adamw_step(&adam, t, &mut p, &g, &mut m, &mut v, parallel);
                k.sgd_step(&sgd, t, &mut q, &g, &mut b, parallel);
            }
            let g1 = values(40, n, 1.0);
            let g2 = values(41, 1000, 1.0);
            let norm = k.grad_norm(&[&g1[..], &g2[..]], parallel);
            (p, m, v, q, b, norm)
        };
        let one = run(&Sequential);
        for threads in [2, 3] {
            let many = run(&ScopedThreads(threads));
            assert!(one.0 == many.0 && one.1 == many.1 && one.2 == many.2, "{}: adamw", k.isa());
            assert!(one.3 == many.3 && one.4 == many.4, "{}: sgd", k.isa());
            // Partial sums in f64 differ in order only: equal after rounding to f32, or one ulp.
            let (a, b) = (one.5, many.5);
            assert!((a - b).abs() <= f32::EPSILON * a, "{}: norm {a} vs {b}", k.isa());
        }
    }
}

/// The L2 norm of all slices together, in f64.
fn norm_f64(slices: &[Vec<f32>]) -> f64 {
    slices.iter().flatten().map(|&x| x as f64 * x as f64).sum::<f64>().sqrt()
}

fn gradient_set() -> Vec<Vec<f32>> {
    // Lengths around the task split (16384), an empty one, and values of mixed scales.
    vec![
        values(50, 40_000, 1.0),
        Vec::new(),
        values(51, 17, 100.0),
        values(52, 16_385, 1e-3),
        values(53, 3, 0.5),
    ]
}

#[test]
fn grad_norm_is_the_f64_norm() {
    let grads = gradient_set();
    let want = norm_f64(&grads);
    for k in every_isa() {
        for parallel in [&Sequential as &dyn Parallel, &ScopedThreads(2), &ScopedThreads(5)] {
            let refs: Vec<&[f32]> = grads.iter().map(|g| &g[..]).collect();
            let got = k.grad_norm(&refs, parallel);
            assert_close(&format!("{} norm", k.isa()), &[got], &[want], 0.0, 1e-7);
            // Any slice-like type works, too.
            assert_eq!(k.grad_norm(&grads, parallel), got);
        }
        assert_eq!(k.grad_norm::<&[f32]>(&[], &Sequential), 0.0);
    }
}

#[test]
fn clipping_scales_to_the_target_norm_and_returns_the_norm_before() {
    let original = gradient_set();
    let norm = norm_f64(&original);
    for k in every_isa() {
        for parallel in [&Sequential as &dyn Parallel, &ScopedThreads(3)] {
            let max_norm = (norm / 4.0) as f32;
            let mut grads = original.clone();
            let mut refs: Vec<&mut [f32]> = grads.iter_mut().map(|g| &mut g[..]).collect();
            let returned = k.clip_grad_norm(&mut refs, max_norm, parallel);
            assert_close("returned norm", &[returned], &[norm], 0.0, 1e-7);
            let after = norm_f64(&grads);
            assert!(
                (after - max_norm as f64).abs() <= 1e-6 * max_norm as f64,
                "{}: norm after clipping {after}, target {max_norm}",
                k.isa()
            );
            // Every element scaled by the same coefficient, max_norm / (norm + 1e-6).
            let coefficient = max_norm as f64 / (norm + 1e-6);
            for (g, o) in grads.iter().zip(&original) {
                let want: Vec<f64> = o.iter().map(|&x| x as f64 * coefficient).collect();
                assert_close("clipped", g, &want, 1e-12, 1e-6);
            }
        }
    }
}

#[test]
fn clipping_leaves_gradients_below_the_threshold_alone() {
    let original = gradient_set();
    let norm = norm_f64(&original);
    for k in every_isa() {
        // A threshold above the norm: the coefficient would be 1.5, nothing is scaled.
        let mut grads = original.clone();
        let returned = k.clip_grad_norm(&mut grads, (norm * 1.5) as f32, &ScopedThreads(2));
        assert_close("returned norm", &[returned], &[norm], 0.0, 1e-7);
        assert_eq!(grads, original, "{}: gradients changed below the threshold", k.isa());
    }
}

#[test]
fn sqrt_is_within_one_ulp_of_the_correctly_rounded_root() {
    // A dense sample of every non-negative finite float (every 997th bit pattern, so each
    // exponent and many mantissas), plus the edges. (All 2³¹ were checked once in release.)
    let mut worst = 0;
    let mut check = |x: f32| {
        let want = (x as f64).sqrt() as f32; // double rounding is exact for sqrt
        let got = sqrt(x);
        let ulps = (got.to_bits() as i64 - want.to_bits() as i64).unsigned_abs();
        assert!(ulps <= 1, "sqrt({x:e}) = {got:e}, want {want:e}");
        worst = worst.max(ulps);
    };
    for bits in (0..0x7f80_0000u32).step_by(997) {
        check(f32::from_bits(bits));
    }
    for x in [0.0, 1e-45, f32::MIN_POSITIVE, 0.25, 1.0, 2.0, 3.0, 1e30, f32::MAX] {
        check(x);
    }
    assert_eq!(sqrt(f32::INFINITY), f32::INFINITY);
    assert_eq!(sqrt(-0.0).to_bits(), (-0.0f32).to_bits());
    assert!(sqrt(-1.0).is_nan() && sqrt(f32::NEG_INFINITY).is_nan() && sqrt(f32::NAN).is_nan());
}

/// The panic message of `f`, which must panic.
fn panic_message(f: impl FnOnce()) -> String {
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).expect_err("no panic");
    err.downcast_ref::<String>()
        .cloned()
        .or_else(|| err.downcast_ref::<&str>().map(|s| s.to_string()))
        .unwrap_or_default()
}

#[test]
fn mismatched_lengths_and_step_zero_panic_naming_them() {
    let k = Kernels::best();
    let h = AdamW::default();
    let (mut p, g, mut m, mut v) = (vec![0.0; 8], vec![0.0; 8], vec![0.0; 8], vec![0.0; 8]);
    let msg = panic_message(|| k.adamw_step(&h, 1, &mut p, &g[1..], &mut m, &mut v, &Sequential));
    assert!(msg.contains("grads has 7 elements, params has 8"), "{msg}");
    let msg = panic_message(|| k.adamw_step(&h, 1, &mut p, &g, &mut m[1..], &mut v, &Sequential));
    assert!(msg.contains("exp_avg has 7 elements"), "{msg}");
    let msg = panic_message(|| k.adamw_step(&h, 1, &mut p, &g, &mut m, &mut v[2..], &Sequential));
    assert!(msg.contains("exp_avg_sq has 6 elements"), "{msg}");
    let msg = panic_message(|| k.adamw_step(&h, 0, &mut p, &g, &mut m, &mut v, &Sequential));
    assert!(msg.contains("counted from 1"), "{msg}");
    let sgd = Sgd { momentum: 0.9, ..Sgd::default() };
    let msg = panic_message(|| k.sgd_step(&sgd, 1, &mut p, &g, &mut m[1..], &Sequential));
    assert!(msg.contains("momentum_buffer has 7 elements"), "{msg}");
    let msg = panic_message(|| k.sgd_step(&sgd, 0, &mut p, &g, &mut m, &Sequential));
    assert!(msg.contains("counted from 1"), "{msg}");
    // Without momentum the buffer is not needed.
    k.sgd_step(&Sgd::default(), 1, &mut p, &g, &mut [], &Sequential);
}
