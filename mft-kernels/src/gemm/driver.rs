//! The blocked GEMM loops around a micro-kernel, and the split of C into per-thread strips.
//!
//! Loop order (outermost first): `nc` columns of B → `kc` depth (pack B) → `mc` rows of A (pack A)
//! → `nr` tile columns → `mr` tile rows → micro-kernel. A packed B micro-panel (`kc × nr`) stays in
//! L1 while the A panels of one `mc` block stream through it from L2.

use super::pack::{GemmRhs, pack_a, pack_b};
use super::{MAX_TILE, Mat, MatMut, MicroKernel};
use crate::parallel::Parallel;

/// A raw pointer shared with the tasks of a [`Parallel`] run. Each task touches a disjoint part.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: tasks only access disjoint regions (distinct C strips and scratch chunks), and
// `Parallel` implementations run each task exactly once.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`.
unsafe impl Send for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Validated operands in, `C = alpha·A·B + beta·C` out.
#[allow(clippy::too_many_arguments)]
pub(super) fn run<T: GemmRhs>(
    uk: &MicroKernel,
    alpha: f32,
    a: Mat<'_, f32>,
    b: Mat<'_, T>,
    beta: f32,
    c: MatMut<'_>,
    scratch: &mut [f32],
    per_thread: usize,
    parallel: &dyn Parallel,
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    if m == 0 || n == 0 {
        return;
    }
    let ldc = c.row_stride;
    if k == 0 || alpha == 0.0 {
        scale_rows(c.data, m, n, ldc, beta);
        return;
    }
    // Split the longer side of C into one strip per thread, in whole tiles.
    let split_columns = n >= m;
    let (len, tile) = if split_columns { (n, uk.nr) } else { (m, uk.mr) };
    let strips = parallel.threads().max(1).min(len.div_ceil(tile));
    let strip = len.div_ceil(strips).div_ceil(tile) * tile;
    let strips = len.div_ceil(strip);
    let c_ptr = Shared(c.data.as_mut_ptr());
    let scratch_ptr = Shared(scratch.as_mut_ptr());
    let task = |s: usize| {
        let start = s * strip;
        let end = len.min(start + strip);
        let (a_part, b_part, c_offset) = if split_columns {
            (a, Mat { cols: end - start, data: &b.data[start * b.col_stride..], ..b }, start)
        } else {
            (Mat { rows: end - start, data: &a.data[start * a.row_stride..], ..a }, b, start * ldc)
        };
        // SAFETY: strip `s` owns scratch chunk `s` and the C elements of its rows or columns,
        // disjoint from every other strip's; the caller checked that both fit.
        unsafe {
            let chunk =
                core::slice::from_raw_parts_mut(scratch_ptr.get().add(s * per_thread), per_thread);
            gemm_strip(uk, alpha, &a_part, &b_part, beta, c_ptr.get().add(c_offset), ldc, chunk);
        }
    };
    if strips == 1 {
        task(0);
    } else {
        parallel.run(strips, &task);
    }
}

/// `C = beta·C` for an `m × n` block (`beta == 0` writes zeros without reading).
fn scale_rows(c: &mut [f32], m: usize, n: usize, ldc: usize, beta: f32) {
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if beta == 0.0 {
            row.fill(0.0);
        } else if beta != 1.0 {
            row.iter_mut().for_each(|x| *x *= beta);
        }
    }
}

/// Split `scratch` into the A and B packing buffers, each starting on a 64-byte boundary.
fn packing_buffers(scratch: &mut [f32], a_len: usize) -> (&mut [f32], &mut [f32]) {
    let skip = scratch.as_ptr().align_offset(64).min(16);
    let (a_buf, rest) = scratch[skip..].split_at_mut(a_len);
    let skip = rest.as_ptr().align_offset(64).min(16);
    (a_buf, &mut rest[skip..])
}

/// One strip, single-threaded: the full blocked loop nest.
///
/// # Safety
/// `c` is valid for reads and writes of `a.rows` rows of `b.cols` floats, `ldc` apart, and no
/// other thread touches them.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_strip<T: GemmRhs>(
    uk: &MicroKernel,
    alpha: f32,
    a: &Mat<'_, f32>,
    b: &Mat<'_, T>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    scratch: &mut [f32],
) {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    let (mr, nr) = (uk.mr, uk.nr);
    let kc_max = uk.kc.min(k);
    let a_len = uk.mc.min(m).div_ceil(mr) * mr * kc_max;
    let (a_pack, b_pack) = packing_buffers(scratch, a_len);
    let mut tile = [0.0f32; MAX_TILE];

    for jc in (0..n).step_by(uk.nc) {
        let nc = uk.nc.min(n - jc);
        for pc in (0..k).step_by(uk.kc) {
            let kc = uk.kc.min(k - pc);
            pack_b(b, pc, kc, jc, nc, nr, b_pack);
            // The first depth block applies beta; later ones accumulate onto it.
            let beta_k = if pc == 0 { beta } else { 1.0 };
            for ic in (0..m).step_by(uk.mc) {
                let mc = uk.mc.min(m - ic);
                pack_a(a, ic, mc, pc, kc, mr, a_pack);
                for jr in (0..nc).step_by(nr) {
                    let cols = nr.min(nc - jr);
                    let b_panel = b_pack[jr * kc..].as_ptr();
                    for ir in (0..mc).step_by(mr) {
                        let rows = mr.min(mc - ir);
                        let a_panel = a_pack[ir * kc..].as_ptr();
                        // SAFETY: the tile lies inside this strip's block of C.
                        let c_tile = unsafe { c.add((ic + ir) * ldc + jc + jr) };
                        if rows == mr && cols == nr {
                            // SAFETY: full tile; panels hold kc·mr and kc·nr floats, 64-byte
                            // aligned (panel sizes are multiples of 16 floats when mr, nr are).
                            unsafe { (uk.run)(kc, a_panel, b_panel, c_tile, ldc, alpha, beta_k) };
                        } else {
                            // SAFETY: the kernel writes the whole tile into `tile` (ldc = nr).
                            unsafe {
                                (uk.run)(kc, a_panel, b_panel, tile.as_mut_ptr(), nr, alpha, 0.0)
                            };
                            for i in 0..rows {
                                for j in 0..cols {
                                    // SAFETY: (i, j) is inside the partial tile of C.
                                    unsafe {
                                        let out = c_tile.add(i * ldc + j);
                                        let v = tile[i * nr + j];
                                        *out = if beta_k == 0.0 { v } else { v + beta_k * *out };
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
