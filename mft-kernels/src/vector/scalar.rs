//! Portable vector kernels: the fallback on every target and the reference the SIMD versions are
//! tested against.

/// `Σ a[i]·b[i]`, accumulated in order with fused multiply-adds.
///
/// # Safety
/// None beyond equal lengths (checked by the caller); `unsafe` only to share the table type.
pub(crate) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).fold(0.0, |acc, (&x, &y)| libm::fmaf(x, y, acc))
}

/// `y[i] = fma(alpha, x[i], y[i])`.
///
/// # Safety
/// None beyond equal lengths (checked by the caller); `unsafe` only to share the table type.
pub(crate) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi = libm::fmaf(alpha, xi, *yi);
    }
}
