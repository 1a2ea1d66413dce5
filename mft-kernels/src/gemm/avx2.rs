//! x86_64 AVX2+FMA micro-kernel: a 6×16 tile (12 ymm accumulators, two B vectors, one A
//! broadcast), 12 FMAs per depth step.

use core::arch::x86_64::*;

use super::MicroKernel;

const MR: usize = 6;
const NR: usize = 16;

pub(super) const KERNEL: MicroKernel =
    MicroKernel { mr: MR, nr: NR, kc: 384, mc: 1008, nc: 384, run: kernel };

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
    let mut acc = [[_mm256_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads MR floats of the A panel and NR of the B panel (kc steps).
        unsafe {
            let b0 = _mm256_load_ps(b);
            let b1 = _mm256_load_ps(b.add(8));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let va = _mm256_set1_ps(alpha);
    let vb = _mm256_set1_ps(beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i, columns 8h..8h+8 lie inside the tile.
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
