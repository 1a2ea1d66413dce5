//! x86_64 AVX-512F micro-kernel: a 12×32 tile (24 zmm accumulators, two B vectors, A values
//! broadcast from memory), 24 FMAs per depth step.

use core::arch::x86_64::*;

use super::MicroKernel;

const MR: usize = 12;
const NR: usize = 32;

pub(super) const KERNEL: MicroKernel =
    MicroKernel { mr: MR, nr: NR, kc: 384, mc: 1008, nc: 384, run: kernel };

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
    // Start fetching the C tile now; it is needed only after the depth loop.
    for i in 0..MR {
        let row = c.wrapping_add(i * ldc) as *const i8;
        _mm_prefetch::<_MM_HINT_T0>(row);
        _mm_prefetch::<_MM_HINT_T0>(row.wrapping_add(64));
    }
    let mut acc = [[_mm512_setzero_ps(); 2]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads MR floats of the A panel and NR of the B panel (kc steps).
        unsafe {
            let b0 = _mm512_load_ps(b);
            let b1 = _mm512_load_ps(b.add(16));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    let va = _mm512_set1_ps(alpha);
    let vb = _mm512_set1_ps(beta);
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i, columns 16h..16h+16 lie inside the tile.
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
