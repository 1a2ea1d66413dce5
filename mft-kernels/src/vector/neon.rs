//! aarch64 NEON vector kernels: 4 lanes, two accumulators for `dot`, scalar tails.

use core::arch::aarch64::*;

/// # Safety
/// The CPU must support NEON; `a` and `b` must have equal lengths.
#[target_feature(enable = "neon")]
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = vdupq_n_f32(0.0);
    let mut acc1 = vdupq_n_f32(0.0);
    let mut i = 0;
    while i + 8 <= n {
        // SAFETY: `i + 8 <= n`, so both 4-lane loads at `i` and `i + 4` are in bounds.
        unsafe {
            acc0 = vfmaq_f32(acc0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            acc1 = vfmaq_f32(acc1, vld1q_f32(pa.add(i + 4)), vld1q_f32(pb.add(i + 4)));
        }
        i += 8;
    }
    if i + 4 <= n {
        // SAFETY: `i + 4 <= n`.
        unsafe { acc0 = vfmaq_f32(acc0, vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i))) };
        i += 4;
    }
    let mut sum = vaddvq_f32(vaddq_f32(acc0, acc1));
    for j in i..n {
        sum = libm::fmaf(a[j], b[j], sum);
    }
    sum
}

/// # Safety
/// The CPU must support NEON; `x` and `y` must have equal lengths.
#[target_feature(enable = "neon")]
pub(super) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let mut i = 0;
    while i + 4 <= n {
        // SAFETY: `i + 4 <= n` for both slices.
        unsafe {
            let r = vfmaq_n_f32(vld1q_f32(py.add(i)), vld1q_f32(px.add(i)), alpha);
            vst1q_f32(py.add(i), r);
        }
        i += 4;
    }
    for j in i..n {
        y[j] = libm::fmaf(alpha, x[j], y[j]);
    }
}
