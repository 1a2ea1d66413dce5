//! aarch64 NEON micro-kernel: an 8×12 tile (24 q-register accumulators, three B vectors, two A
//! vectors used lane by lane with `fmla (by element)`), 24 FMAs per depth step.

use core::arch::aarch64::*;

use super::MicroKernel;

const MR: usize = 8;
const NR: usize = 12;

pub(super) const KERNEL: MicroKernel =
    MicroKernel { mr: MR, nr: NR, kc: 256, mc: 1024, nc: 384, run: kernel, short: None };

/// # Safety
/// See [`super::MicroKernelFn`]; the CPU must support NEON.
#[target_feature(enable = "neon")]
unsafe fn kernel(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
) {
    let mut acc = [[vdupq_n_f32(0.0); 3]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads MR floats of the A panel and NR of the B panel (kc steps).
        unsafe {
            let bv = [vld1q_f32(b), vld1q_f32(b.add(4)), vld1q_f32(b.add(8))];
            let a_lo = vld1q_f32(a);
            let a_hi = vld1q_f32(a.add(4));
            for h in 0..3 {
                acc[0][h] = vfmaq_laneq_f32::<0>(acc[0][h], bv[h], a_lo);
                acc[1][h] = vfmaq_laneq_f32::<1>(acc[1][h], bv[h], a_lo);
                acc[2][h] = vfmaq_laneq_f32::<2>(acc[2][h], bv[h], a_lo);
                acc[3][h] = vfmaq_laneq_f32::<3>(acc[3][h], bv[h], a_lo);
                acc[4][h] = vfmaq_laneq_f32::<0>(acc[4][h], bv[h], a_hi);
                acc[5][h] = vfmaq_laneq_f32::<1>(acc[5][h], bv[h], a_hi);
                acc[6][h] = vfmaq_laneq_f32::<2>(acc[6][h], bv[h], a_hi);
                acc[7][h] = vfmaq_laneq_f32::<3>(acc[7][h], bv[h], a_hi);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
    }
    for (i, row) in acc.iter().enumerate() {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i, columns 4h..4h+4 lie inside the tile.
            unsafe {
                let out = c.add(i * ldc + 4 * h);
                let scaled = vmulq_n_f32(v, alpha);
                let r =
                    if beta == 0.0 { scaled } else { vfmaq_n_f32(scaled, vld1q_f32(out), beta) };
                vst1q_f32(out, r);
            }
        }
    }
}
