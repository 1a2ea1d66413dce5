//! aarch64 NEON micro-kernel: an 8×12 tile (24 q-register accumulators, three B vectors, two A
//! vectors used lane by lane with `fmla (by element)`), 24 FMAs per depth step. The strided-A
//! variant (an A read in place) fills the two A vectors lane by lane from its rows.

use core::arch::aarch64::*;

use super::MicroKernel;

const MR: usize = 8;
const NR: usize = 12;

pub(super) const KERNEL: MicroKernel = MicroKernel {
    mr: MR,
    nr: NR,
    kc: 256,
    mc: 1024,
    nc: 384,
    run: kernel,
    short: None,
    strided_a: Some(strided_a_kernel),
};

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
    // SAFETY: as for this function.
    unsafe { tile::<false>(MR, kc, a, 1, MR, b, c, ldc, alpha, beta) }
}

/// # Safety
/// See [`super::StridedAKernelFn`]; the CPU must support NEON.
#[target_feature(enable = "neon")]
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
    // SAFETY: as for this function.
    unsafe { tile::<true>(rows, kc, a, a_row, a_step, b, c, ldc, alpha, beta) }
}

/// The tile's first `rows` rows (all `MR` of a packed panel, whose rows are contiguous). With
/// `IN_PLACE`, A's rows lie `a_row` floats apart and are loaded lane by lane, rows from `rows` on
/// repeating row `rows − 1` (an A in place has no padding to read).
///
/// # Safety
/// As [`super::MicroKernelFn`] (packed A: `a_row = 1`, `a_step = MR`, `rows = MR`) or
/// [`super::StridedAKernelFn`].
#[inline]
#[target_feature(enable = "neon")]
#[allow(clippy::too_many_arguments)] // the micro-kernel signature, the rows and A's strides
unsafe fn tile<const IN_PLACE: bool>(
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
    let offset: [usize; MR] = core::array::from_fn(|i| i.min(rows.max(1) - 1) * a_row);
    let mut acc = [[vdupq_n_f32(0.0); 3]; MR];
    let (mut a, mut b) = (a, b);
    for _ in 0..kc {
        // SAFETY: each step reads rows < `rows` of A (all MR of a packed panel) and NR floats of
        // the B panel (kc steps).
        unsafe {
            let bv = [vld1q_f32(b), vld1q_f32(b.add(4)), vld1q_f32(b.add(8))];
            let (a_lo, a_hi) = if IN_PLACE {
                let mut lo = vdupq_n_f32(0.0);
                let mut hi = vdupq_n_f32(0.0);
                lo = vld1q_lane_f32::<0>(a.add(offset[0]), lo);
                lo = vld1q_lane_f32::<1>(a.add(offset[1]), lo);
                lo = vld1q_lane_f32::<2>(a.add(offset[2]), lo);
                lo = vld1q_lane_f32::<3>(a.add(offset[3]), lo);
                hi = vld1q_lane_f32::<0>(a.add(offset[4]), hi);
                hi = vld1q_lane_f32::<1>(a.add(offset[5]), hi);
                hi = vld1q_lane_f32::<2>(a.add(offset[6]), hi);
                hi = vld1q_lane_f32::<3>(a.add(offset[7]), hi);
                (lo, hi)
            } else {
                (vld1q_f32(a), vld1q_f32(a.add(4)))
            };
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
            // Past the last step this points past A (never read): wrapping, not `add`.
            a = a.wrapping_add(a_step);
            b = b.add(NR);
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (h, &v) in row.iter().enumerate() {
            // SAFETY: row i < rows, columns 4h..4h+4 lie inside the tile.
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
