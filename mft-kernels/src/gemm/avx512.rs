//! x86_64 AVX-512F micro-kernel: a 12×32 tile (24 zmm accumulators, two B vectors, A values
//! broadcast from memory), 24 FMAs per depth step, and the same tile cut to 4 or 8 rows for the
//! last rows of a product whose row count is not a multiple of 12 (a head dimension of 64 ends
//! in 4 rows: the full tile would spend two thirds of that panel's FMAs on zero padding). The
//! same tile, with A's row and depth strides as parameters, reads an A in place (the strided-A
//! kernel).

use core::arch::x86_64::*;

use super::MicroKernel;

const MR: usize = 12;
const NR: usize = 32;

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
/// See [`super::MicroKernelFn`]; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
/// See [`super::ShortKernelFn`]; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
            0..=4 => tile::<4, false>(rows, kc, a, 1, MR, b, c, ldc, alpha, beta),
            5..=8 => tile::<8, false>(rows, kc, a, 1, MR, b, c, ldc, alpha, beta),
            _ => tile::<MR, false>(rows, kc, a, 1, MR, b, c, ldc, alpha, beta),
        }
    }
}

/// # Safety
/// See [`super::StridedAKernelFn`]; the CPU must support AVX-512F.
#[target_feature(enable = "avx512f")]
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
            1..=4 => tile::<4, true>(rows, kc, a, a_row, a_step, b, c, ldc, alpha, beta),
            5..=8 => tile::<8, true>(rows, kc, a, a_row, a_step, b, c, ldc, alpha, beta),
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
#[target_feature(enable = "avx512f")]
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
    // Start fetching the C tile now; it is needed only after the depth loop.
    for i in 0..rows {
        let row = c.wrapping_add(i * ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; R];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads R ≤ MR floats of A (the first `rows` with CLAMP) and NR of the
        // B panel (kc steps).
        unsafe {
            let b0 = _mm512_load_ps(b);
            let b1 = _mm512_load_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(a_row * if CLAMP { i.min(rows - 1) } else { i }));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            // Past the last step this points past A (never read): wrapping, not `add`.
            a = a.wrapping_add(a_step);
            b = b.add(NR);
        }
    }
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i < rows, columns 16h..16h+16 lie inside the tile.
            unsafe {
                let out = c.add(i * ldc + 16 * h);
                let r = if beta == 0.0 {
                    _mm512_mul_ps(va, v)
                } else {
                    _mm512_fmadd_ps(vb, _mm512_loadu_ps(out), _mm512_mul_ps(va, v))
                };
                _mm512_storeu_ps(out, r);
            }
        }
    }
}
