//! Portable micro-kernel: a 4×4 tile in plain Rust, the fallback on every target.

use super::MicroKernel;

const MR: usize = 4;
const NR: usize = 4;

pub(super) const KERNEL: MicroKernel =
    MicroKernel { mr: MR, nr: NR, kc: 256, mc: 256, nc: 256, run: kernel, short: None };

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
