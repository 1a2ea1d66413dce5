//! x86_64 AVX-512F vector kernels: 16 lanes, the tail handled with a masked load and store.

use core::arch::x86_64::*;

/// Mask selecting the first `lanes` (at most 16) lanes.
fn lane_mask(lanes: usize) -> __mmask16 {
    ((1u32 << lanes) - 1) as __mmask16
}

/// # Safety
/// The CPU must support AVX-512F; `a` and `b` must have equal lengths.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len();
    let (pa, pb) = (a.as_ptr(), b.as_ptr());
    let mut acc0 = _mm512_setzero_ps();
    let mut acc1 = _mm512_setzero_ps();
    let mut i = 0;
    while i + 32 <= n {
        // SAFETY: `i + 32 <= n`, so both 16-lane loads are in bounds.
        unsafe {
            acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), acc0);
            let (a1, b1) = (_mm512_loadu_ps(pa.add(i + 16)), _mm512_loadu_ps(pb.add(i + 16)));
            acc1 = _mm512_fmadd_ps(a1, b1, acc1);
        }
        i += 32;
    }
    while i < n {
        let m = lane_mask((n - i).min(16));
        // SAFETY: masked-off lanes are not accessed; active lanes are below `n`.
        unsafe {
            let (va, vb) =
                (_mm512_maskz_loadu_ps(m, pa.add(i)), _mm512_maskz_loadu_ps(m, pb.add(i)));
            acc0 = _mm512_fmadd_ps(va, vb, acc0);
        }
        i += 16;
    }
    _mm512_reduce_add_ps(_mm512_add_ps(acc0, acc1))
}

/// # Safety
/// The CPU must support AVX-512F; `x` and `y` must have equal lengths.
#[target_feature(enable = "avx512f")]
pub(super) unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len();
    let (px, py) = (x.as_ptr(), y.as_mut_ptr());
    let va = _mm512_set1_ps(alpha);
    let mut i = 0;
    while i < n {
        let m = lane_mask((n - i).min(16));
        // SAFETY: masked-off lanes are neither loaded nor stored; active lanes are below `n`.
        unsafe {
            let (vx, vy) =
                (_mm512_maskz_loadu_ps(m, px.add(i)), _mm512_maskz_loadu_ps(m, py.add(i)));
            _mm512_mask_storeu_ps(py.add(i), m, _mm512_fmadd_ps(va, vx, vy));
        }
        i += 16;
    }
}
