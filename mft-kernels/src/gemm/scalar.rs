//! Portable micro-kernel: a 4×4 tile in plain Rust, the fallback on every target.

use super::MicroKernel;

const MR: usize = 4;
const NR: usize = 4;

pub(super) const KERNEL: MicroKernel = MicroKernel {
    mr: MR,
    nr: NR,
    kc: 256,
    mc: 256,
    nc: 256,
    run: kernel,
    short: None,
    strided_a: Some(strided_a_kernel),
};

/// # Safety
/// See [`super::MicroKernelFn`].
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    // SAFETY: the caller passes panels of kc·MR and kc·NR floats.
    let (a, b) = unsafe {
        (core::slice::from_raw_parts(a, kc * MR), core::slice::from_raw_parts(b, kc * NR))
    };
    let mut acc = [[0.0f32; NR]; MR];
    for (ak, bk) in a.chunks_exact(MR).zip(b.chunks_exact(NR)) {
        for i in 0..MR {
            for j in 0..NR {
                acc[i][j] = libm::fmaf(ak[i], bk[j], acc[i][j]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: (i, j) is inside the tile the caller made valid.
            unsafe {
                let out = c.add(i * ldc + j);
                *out = if beta == 0.0 { alpha * v } else { alpha * v + beta * *out };
            }
        }
    }
}

/// # Safety
/// See [`super::StridedAKernelFn`].
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
    // SAFETY: the caller passes a B panel of kc·NR floats.
    let b = unsafe { core::slice::from_raw_parts(b, kc * NR) };
    let mut acc = [[0.0f32; NR]; MR];
    for (p, bk) in b.chunks_exact(NR).enumerate() {
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            // SAFETY: row i < rows at step p < kc is readable (the caller's contract).
            let ai = unsafe { *a.add(i * a_row + p * a_step) };
            for (x, &bj) in row.iter_mut().zip(bk) {
                *x = libm::fmaf(ai, bj, *x);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (j, &v) in row.iter().enumerate() {
            // SAFETY: (i, j) is inside the tile's first `rows` rows, which the caller made valid.
            unsafe {
                let out = c.add(i * ldc + j);
                *out = if beta == 0.0 { alpha * v } else { alpha * v + beta * *out };
            }
        }
    }
}
