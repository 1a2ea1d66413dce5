//! x86_64 AVX2+FMA micro-kernel: a 6×16 tile (12 ymm accumulators, two B vectors, one A
//! broadcast), 12 FMAs per depth step, and the same tile cut to 2 or 4 rows for the last rows of
//! a product whose row count is not a multiple of 6. The same tile, with A's row and depth
//! strides as parameters, reads an A in place (the strided-A kernel).

use core::arch::x86_64::*;

use super::MicroKernel;

const MR: usize = 6;
const NR: usize = 16;

pub(super) const KERNEL: MicroKernel = MicroKernel {
    mr: MR,
    nr: NR,
    kc: 384,
    mc: 1008,
    nc: 384,
    run: kernel,
    short: Some(short_kernel),
    strided_a: Some(strided_a_kernel),
};

/// # Safety
/// See [`super::MicroKernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    // SAFETY: as for this function.
    unsafe { tile::<MR, false>(MR, kc, a, 1, MR, b, c, ldc, alpha, beta) }
}

/// # Safety
/// See [`super::ShortKernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)] // the micro-kernel signature and the row count
unsafe fn short_kernel(
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    // SAFETY: as for this function; each variant computes at least `rows` rows.
    unsafe {
        match rows {
            0..=2 => tile::<2, false>(rows, kc, a, 1, MR, b, c, ldc, alpha, beta),
            3..=4 => tile::<4, false>(rows, kc, a, 1, MR, b, c, ldc, alpha, beta),
            _ => tile::<MR, false>(rows, kc, a, 1, MR, b, c, ldc, alpha, beta),
        }
    }
}

/// # Safety
/// See [`super::StridedAKernelFn`]; the CPU must support AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)] // the micro-kernel signature, the rows and A's strides
unsafe fn strided_a_kernel(
    rows: usize,
    kc: usize,
    a: *const f32,
    a_row: usize,
    a_step: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    debug_assert!((1..=MR).contains(&rows), "strided-A tile of {rows} rows");
    // SAFETY: as for this function; a full tile reads its `MR` rows, a short one reads rows
    // below `rows` only (the clamped variants repeat the last row for the rest).
    unsafe {
        match rows {
            MR => tile::<MR, false>(MR, kc, a, a_row, a_step, b, c, ldc, alpha, beta),
            1..=2 => tile::<2, true>(rows, kc, a, a_row, a_step, b, c, ldc, alpha, beta),
            3..=4 => tile::<4, true>(rows, kc, a, a_row, a_step, b, c, ldc, alpha, beta),
            _ => tile::<MR, true>(rows, kc, a, a_row, a_step, b, c, ldc, alpha, beta),
        }
    }
}

/// The first `R` rows of the tile, of which the first `rows ≤ R` are written; A's rows lie
/// `a_row` floats apart and its depth steps `a_step` (1 and `MR` in a packed panel). With
/// `CLAMP`, rows from `rows` on read row `rows − 1` instead (an A in place has no padding).
///
/// # Safety
/// As [`super::ShortKernelFn`] (packed A) or [`super::StridedAKernelFn`]; `R ≤ MR`.
#[inline]
#[target_feature(enable = "avx2,fma")]
#[allow(clippy::too_many_arguments)] // the micro-kernel signature and the row count
unsafe fn tile<const R: usize, const CLAMP: bool>(
    rows: usize,
    kc: usize,
    a: *const f32,
    a_row: usize,
    a_step: usize,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [[_mm256_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads R ≤ MR floats of A (the first `rows` with CLAMP) and NR of the
        // B panel (kc steps).
        unsafe {
            let b0 = _mm256_load_ps(b);
            let b1 = _mm256_load_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai =
                    _mm256_broadcast_ss(&*a.add(a_row * if CLAMP { i.min(rows - 1) } else { i }));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            // Past the last step this points past A (never read): wrapping, not `add`.
            a = a.wrapping_add(a_step);
            b = b.add(NR);
        }
    }
    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i < rows, columns 8h..8h+8 lie inside the tile.
            unsafe {
                let out = c.add(i * ldc + 8 * h);
                let r = if beta == 0.0 {
                    _mm256_mul_ps(va, v)
                } else {
                    _mm256_fmadd_ps(vb, _mm256_loadu_ps(out), _mm256_mul_ps(va, v))
                };
                _mm256_storeu_ps(out, r);
            }
        }
    }
}
