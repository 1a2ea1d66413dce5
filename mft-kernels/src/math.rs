//! Elementary functions written to vectorize: branch-free, no libm calls, only arithmetic and
//! bit operations that every SIMD ISA has. Used by the activations, softmax, attention and the
//! fused loss, inside `vectorize::vectorized!` bodies.
//!
//! Accuracy (checked in the tests against f64): [`exp`] within 2 ulp over its whole range,
//! [`sigmoid`] and [`tanh`] within 3e-7 absolute.

/// Lanes of the accumulators in [`sum`], [`max`] and [`dot`]: enough independent chains for any
/// ISA up to 512-bit vectors, so the compiler can keep them in registers.
pub const LANES: usize = 16;

const LOG2_E: f32 = core::f32::consts::LOG2_E;
/// ln 2 split in two so `x - n·ln2` stays exact for |n| ≤ 128.
const LN2_HI: f32 = 0.693_145_75;
const LN2_LO: f32 = 1.428_606_8e-6;
/// 1.5·2²³: adding it rounds a float in (−2²², 2²²) to an integer, left in the low mantissa bits.
const ROUND_MAGIC: f32 = 12_582_912.0;
/// Below this (e^x < 3e-38, near the smallest normal f32) [`exp`] returns 0.
const EXP_MIN: f32 = -86.5;
/// Above this, e^x overflows f32 and [`exp`] returns +∞.
const EXP_MAX: f32 = 88.722_83;

/// e^x. Exactly 0 for x below −86.5 (and for −∞), +∞ above 88.72, NaN for NaN.
#[inline(always)]
pub fn exp(x: f32) -> f32 {
    let clamped = x.clamp(EXP_MIN, EXP_MAX);
    // x = n·ln2 + r with |r| ≤ ln2/2, so e^x = 2ⁿ·e^r.
    let shifted = clamped * LOG2_E + ROUND_MAGIC;
    let n = shifted - ROUND_MAGIC;
    let r = (clamped - n * LN2_HI) - n * LN2_LO;
    // e^r by its Taylor series to r⁷ (truncation error < 2e-9 on |r| ≤ 0.347).
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // 2ⁿ⁻¹ from n's bits: the low mantissa bits of `shifted` hold n; put n − 1 + 127 in the
    // exponent field. n ranges over −125..=128, so 2ⁿ⁻¹ is a normal float; the final doubling
    // keeps n = 128 (x near EXP_MAX, where p < 1) finite.
    let two_n_minus_1 = f32::from_bits(shifted.to_bits().wrapping_sub(0x4B40_0000 - 126) << 23);
    let result = (p * two_n_minus_1) * 2.0;
    let result = if x < EXP_MIN { 0.0 } else { result };
    let result = if x > EXP_MAX { f32::INFINITY } else { result };
    if x.is_nan() { x } else { result }
}

/// The logistic function 1 / (1 + e^−x).
#[inline(always)]
pub fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x))
}

/// tanh(x), as 1 − 2 / (e^{2x} + 1) (exact limits ±1; absolute error under 3e-7).
#[inline(always)]
pub fn tanh(x: f32) -> f32 {
    1.0 - 2.0 / (exp(2.0 * x) + 1.0)
}

/// Σ `x[i]`, with [`LANES`] independent partial sums (so the loop vectorizes).
#[inline(always)]
pub fn sum(x: &[f32]) -> f32 {
    let mut acc = [0.0f32; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a += v;
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a += v;
    }
    acc.iter().sum()
}

/// Σ `a[i]·b[i]` over the shorter length, with [`LANES`] independent partial sums.
#[inline(always)]
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0.0f32; LANES];
    let mut a_chunks = a.chunks_exact(LANES);
    let mut b_chunks = b.chunks_exact(LANES);
    for (ca, cb) in (&mut a_chunks).zip(&mut b_chunks) {
        for i in 0..LANES {
            acc[i] += ca[i] * cb[i];
        }
    }
    for ((s, x), y) in acc.iter_mut().zip(a_chunks.remainder()).zip(b_chunks.remainder()) {
        *s += x * y;
    }
    acc.iter().sum()
}

/// max `x[i]` (−∞ for an empty slice; NaN is ignored unless every element is NaN).
#[inline(always)]
pub fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let mut chunks = x.chunks_exact(LANES);
    for chunk in &mut chunks {
        for (a, v) in acc.iter_mut().zip(chunk) {
            *a = a.max(*v);
        }
    }
    for (a, v) in acc.iter_mut().zip(chunks.remainder()) {
        *a = a.max(*v);
    }
    acc.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn ulps(a: f32, b: f32) -> u32 {
        (a.to_bits() as i64 - b.to_bits() as i64).unsigned_abs() as u32
    }

    #[test]
    fn exp_is_within_two_ulp_on_a_dense_grid() {
        let mut worst = 0;
        let mut x = -86.5f32;
        while x < 88.7 {
            let want = (x as f64).exp() as f32;
            worst = worst.max(ulps(exp(x), want));
            x += 0.000_7;
        }
        assert!(worst <= 2, "exp is {worst} ulp off somewhere");
    }

    #[test]
    fn exp_limits() {
        assert_eq!(exp(f32::NEG_INFINITY), 0.0);
        assert_eq!(exp(-100.0), 0.0);
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(100.0), f32::INFINITY);
        assert_eq!(exp(f32::INFINITY), f32::INFINITY);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(88.7).is_finite());
    }

    #[test]
    fn tanh_and_sigmoid_limits() {
        assert_eq!(tanh(50.0), 1.0);
        assert_eq!(tanh(-50.0), -1.0);
        assert_eq!(sigmoid(-200.0), 0.0);
        assert_eq!(sigmoid(200.0), 1.0);
    }

    proptest! {
        #[test]
        fn tanh_and_sigmoid_match_f64(x in -30.0f32..30.0) {
            let t = (x as f64).tanh();
            prop_assert!((tanh(x) as f64 - t).abs() < 3e-7, "tanh({x})");
            let s = 1.0 / (1.0 + (-(x as f64)).exp());
            prop_assert!((sigmoid(x) as f64 - s).abs() < 3e-7, "sigmoid({x})");
        }

        #[test]
        fn reductions_match_f64(x in proptest::collection::vec(-1e3f32..1e3, 0..100)) {
            let want: f64 = x.iter().map(|&v| v as f64).sum();
            let scale: f64 = x.iter().map(|&v| (v as f64).abs()).sum::<f64>() + 1.0;
            prop_assert!((sum(&x) as f64 - want).abs() <= 1e-6 * scale);
            let want: f64 = x.iter().map(|&v| v as f64 * v as f64).sum();
            prop_assert!((dot(&x, &x) as f64 - want).abs() <= 1e-6 * (want + 1.0));
            let m = x.iter().fold(f32::NEG_INFINITY, |m, v| m.max(*v));
            prop_assert_eq!(max(&x), m);
        }
    }
}
