//! RoPE: the cos/sin table against exact f64 angles and against transformers' float32 recipe
//! (re-derived here), the rotation against an f64 reference over odd shapes and unordered
//! positions, the backward against finite differences and as the inverse of the forward,
//! threaded runs against sequential ones, and the shape and position checks. Every test runs on
//! every ISA the CPU has.

mod common;

use common::{ScopedThreads, assert_close, every_isa, finite_difference, values, widen};
use mft_kernels::{Kernels, Parallel, Sequential};
use proptest::prelude::*;

const F32_ULP: f64 = 1.0 / (1u64 << 24) as f64;

fn table(head_dim: usize, max_positions: usize, base: f32, factor: f32) -> Vec<f32> {
    let mut t = vec![f32::NAN; Kernels::rope_table_len(head_dim, max_positions)];
    Kernels::rope_fill_table(&mut t, head_dim, base, factor);
    t
}

/// The rotate-half RoPE in f64, with `(cos, sin)` of pair `i` at position `pos` from `angle`.
fn rope_ref(
    x: &[f64],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    inverse: bool,
    cos_sin: impl Fn(u32, usize) -> (f64, f64),
) -> Vec<f64> {
    let half = head_dim / 2;
    let mut y = x.to_vec();
    for (t, &pos) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let head = (t * n_heads + h) * head_dim;
            for i in 0..half {
                let (c, s) = cos_sin(pos, i);
                let s = if inverse { -s } else { s };
                let (a, b) = (x[head + i], x[head + half + i]);
                y[head + i] = a * c - b * s;
                y[head + half + i] = b * c + a * s;
            }
        }
    }
    y
}

/// `(cos, sin)` read from a filled table, widened.
fn from_table(table: &[f32], head_dim: usize) -> impl Fn(u32, usize) -> (f64, f64) + '_ {
    move |pos, i| {
        let row = &table[pos as usize * head_dim..];
        (row[i] as f64, row[head_dim / 2 + i] as f64)
    }
}

#[allow(clippy::too_many_arguments)] // the kernel's operands plus the direction and kernels
fn apply(
    k: &Kernels,
    x: &[f32],
    positions: &[u32],
    n_heads: usize,
    head_dim: usize,
    table: &[f32],
    inverse: bool,
    par: &dyn Parallel,
) -> Vec<f32> {
    let mut y = x.to_vec();
    if inverse {
        k.rope_backward(&mut y, positions, n_heads, head_dim, table, par);
    } else {
        k.rope_forward(&mut y, positions, n_heads, head_dim, table, par);
    }
    y
}

/// Positions in `0..max`, in no particular order and with repeats.
fn positions(seed: u64, tokens: usize, max: usize) -> Vec<u32> {
    values(seed, tokens, 1.0)
        .iter()
        .map(|v| ((v + 1.0) / 2.0 * max as f32) as u32 % max as u32)
        .collect()
}

fn head_dims() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![2usize, 4, 6, 18, 64, 130])
}

fn bases() -> impl Strategy<Value = f32> {
    prop::sample::select(vec![10_000.0f32, 1_000_000.0, 500.0])
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(32))]

    /// Against exact angles `pos·base^(−2i/d)/factor` in f64. The allowed error is what float32
    /// angles cost (the exponent, the power, the divisions and the product each round once, and
    /// transformers rounds the same way); a wrong frequency, layout or sign is far outside it.
    #[test]
    fn table_matches_exact_angles(
        head_dim in head_dims(),
        base in bases(),
        factor in prop::sample::select(vec![1.0f32, 8.0]),
    ) {
        let max_positions = 128;
        let t = table(head_dim, max_positions, base, factor);
        let half = head_dim / 2;
        let (mut got, mut want, mut allowed) = (Vec::new(), Vec::new(), Vec::new());
        for pos in 0..max_positions {
            for i in 0..half {
                let inv = (base as f64).powf(-(2.0 * i as f64) / head_dim as f64) / factor as f64;
                let angle = pos as f64 * inv;
                let err = angle * ((base as f64).ln() + 4.0) * F32_ULP + F32_ULP;
                got.extend([t[pos * head_dim + i], t[pos * head_dim + half + i]]);
                want.extend([angle.cos(), angle.sin()]);
                allowed.extend([err, err]);
            }
        }
        for (j, ((&g, &w), &e)) in got.iter().zip(&want).zip(&allowed).enumerate() {
            prop_assert!((g as f64 - w).abs() <= e, "entry {j}: got {g}, want {w}, allowed {e:e}");
        }
    }

    #[test]
    fn forward_matches_f64(
        head_dim in head_dims(),
        n_heads in 1usize..4,
        tokens in 0usize..6,
        base in bases(),
        seed: u64,
    ) {
        let max_positions = 300;
        let t = table(head_dim, max_positions, base, 1.0);
        let pos = positions(seed, tokens, max_positions);
        let x = values(seed ^ 1, tokens * n_heads * head_dim, 2.0);
        let want = rope_ref(&widen(&x), &pos, n_heads, head_dim, false, from_table(&t, head_dim));
        for k in every_isa() {
            let y = apply(&k, &x, &pos, n_heads, head_dim, &t, false, &Sequential);
            assert_close(&format!("{} rope", k.isa()), &y, &want, 1e-6, 0.0);
        }
    }

    #[test]
    fn backward_matches_finite_differences(
        head_dim in prop::sample::select(vec![2usize, 4, 6, 10]),
        n_heads in 1usize..3,
        tokens in 1usize..4,
        seed: u64,
    ) {
        let max_positions = 50;
        let t = table(head_dim, max_positions, 10_000.0, 1.0);
        let pos = positions(seed, tokens, max_positions);
        let x = values(seed ^ 1, tokens * n_heads * head_dim, 2.0);
        let r = values(seed ^ 2, x.len(), 1.0);
        let rd = widen(&r);
        let want = finite_difference(&widen(&x), 1e-3, |x| {
            let y = rope_ref(x, &pos, n_heads, head_dim, false, from_table(&t, head_dim));
            y.iter().zip(&rd).map(|(y, r)| y * r).sum()
        });
        for k in every_isa() {
            let dx = apply(&k, &r, &pos, n_heads, head_dim, &t, true, &Sequential);
            assert_close(&format!("{} rope dx", k.isa()), &dx, &want, 1e-6, 1e-6);
        }
    }

    /// The backward undoes the forward (rotations are orthogonal), to rounding.
    #[test]
    fn backward_inverts_forward(
        head_dim in head_dims(),
        n_heads in 1usize..4,
        tokens in 1usize..6,
        seed: u64,
    ) {
        let t = table(head_dim, 5000, 1_000_000.0, 1.0);
        let pos = positions(seed, tokens, 5000);
        let x = values(seed ^ 1, tokens * n_heads * head_dim, 2.0);
        for k in every_isa() {
            let y = apply(&k, &x, &pos, n_heads, head_dim, &t, false, &Sequential);
            let back = apply(&k, &y, &pos, n_heads, head_dim, &t, true, &Sequential);
            assert_close(&format!("{} rope⁻¹∘rope", k.isa()), &back, &widen(&x), 1e-6, 0.0);
        }
    }
}

/// Transformers' recipe, step by step in float32 (`inv_freq = 1 / base ** (arange(0, d, 2) / d)`,
/// `/ factor`, `θ = pos · inv_freq`, then cos and sin of the float32 `θ`), at positions where
/// rounding `θ` to float32 moves cos and sin by up to ~1e-3: the table must follow the float32
/// angle, as transformers does, not the exact one.
#[test]
fn table_follows_transformers_float32_angles() {
    let positions = [0u32, 1, 2, 4095, 4096, 4097, 10_001, 20_000, 32_767];
    let max = 32_768;
    for (head_dim, base, factor) in [(64, 10_000.0f32, 1.0f32), (16, 1_000_000.0, 8.0)] {
        let t = table(head_dim, max, base, factor);
        let half = head_dim / 2;
        let (mut got, mut want, mut exact) = (Vec::new(), Vec::new(), Vec::new());
        for &pos in &positions {
            for i in 0..half {
                let exponent = (2 * i) as f32 / head_dim as f32;
                let power = (base as f64).powf(exponent as f64) as f32;
                let inv_freq = (1.0f32 / power) / factor;
                let angle = (pos as f32 * inv_freq) as f64;
                let row = pos as usize * head_dim;
                got.extend([t[row + i], t[row + half + i]]);
                want.extend([angle.cos(), angle.sin()]);
                let exact_angle = pos as f64
                    * (base as f64).powf(-(2.0 * i as f64) / head_dim as f64)
                    / factor as f64;
                exact.extend([exact_angle.cos(), exact_angle.sin()]);
            }
        }
        assert_close(&format!("d={head_dim} base={base}"), &got, &want, F32_ULP, 0.0);
        // The float32 angle is a real difference here, which the check above resolves.
        let off = got.iter().zip(&exact).map(|(&g, e)| (g as f64 - e).abs()).fold(0.0, f64::max);
        assert!(off > 1e-6, "d={head_dim}: exact and float32 angles agree to {off:e}");
    }
}

/// Position 0 is the identity, exactly (cos 0 = 1, sin 0 = 0).
#[test]
fn position_zero_is_the_identity() {
    let (n_heads, head_dim) = (3, 18);
    let t = table(head_dim, 4, 10_000.0, 1.0);
    let x = values(91, 2 * n_heads * head_dim, 2.0);
    for k in every_isa() {
        assert_eq!(apply(&k, &x, &[0, 0], n_heads, head_dim, &t, false, &Sequential), x);
        assert_eq!(apply(&k, &x, &[0, 0], n_heads, head_dim, &t, true, &Sequential), x);
    }
}

/// Local (θ = 10 000) and global (θ = 1 000 000) tables, as Gemma 3 alternates them, rotate
/// differently, and each matches its own exact angles at a small position.
#[test]
fn different_bases_give_different_rotations() {
    let head_dim = 8;
    let local = table(head_dim, 8, 10_000.0, 1.0);
    let global = table(head_dim, 8, 1_000_000.0, 1.0);
    let pos = 7usize;
    for (t, base) in [(&local, 1e4f64), (&global, 1e6)] {
        for i in 0..4 {
            let angle = pos as f64 * base.powf(-(2.0 * i as f64) / 8.0);
            assert!((t[pos * 8 + i] as f64 - angle.cos()).abs() < 1e-6);
            assert!((t[pos * 8 + 4 + i] as f64 - angle.sin()).abs() < 1e-6);
        }
    }
    assert_eq!(local[pos * 8..pos * 8 + 1], global[pos * 8..pos * 8 + 1], "pair 0 is base-free");
    assert_ne!(local[pos * 8 + 1], global[pos * 8 + 1]);
}

/// Tokens split across tasks: each is rotated alone, so results are bit-identical.
#[test]
fn threaded_runs_match_sequential() {
    let (tokens, n_heads, head_dim) = (400, 4, 64);
    let t = table(head_dim, 1024, 10_000.0, 1.0);
    let pos = positions(95, tokens, 1024);
    let x = values(96, tokens * n_heads * head_dim, 2.0);
    for k in every_isa() {
        for inverse in [false, true] {
            let seq = apply(&k, &x, &pos, n_heads, head_dim, &t, inverse, &Sequential);
            for threads in [2, 3] {
                let thr =
                    apply(&k, &x, &pos, n_heads, head_dim, &t, inverse, &ScopedThreads(threads));
                assert_eq!(seq, thr, "{} inverse={inverse}", k.isa());
            }
        }
    }
}

#[test]
#[should_panic(expected = "rope_forward: position 16 out of range for a table of 16 positions")]
fn forward_rejects_a_position_beyond_the_table() {
    let t = table(4, 16, 10_000.0, 1.0);
    let mut x = vec![0.0; 2 * 4];
    Kernels::best().rope_forward(&mut x, &[3, 16], 1, 4, &t, &Sequential);
}

#[test]
#[should_panic(
    expected = "rope_backward: x has 12 elements, 2 positions × 2 heads × head_dim 4 is 16"
)]
fn backward_rejects_a_wrong_layout() {
    let t = table(4, 16, 10_000.0, 1.0);
    let mut dx = vec![0.0; 12];
    Kernels::best().rope_backward(&mut dx, &[3, 1], 2, 4, &t, &Sequential);
}

#[test]
#[should_panic(expected = "rope_fill_table: head_dim 5 is not positive and even")]
fn table_rejects_an_odd_head_dim() {
    let mut t = vec![0.0; 10];
    Kernels::rope_fill_table(&mut t, 5, 10_000.0, 1.0);
}
