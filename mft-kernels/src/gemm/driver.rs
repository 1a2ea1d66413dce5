//! The blocked GEMM loops around a micro-kernel, shared between threads.
//!
//! Loop order (outermost first): `mc` rows of A → `kc` depth (pack A: a large block that lives in
//! L3) → `nc` columns of B (pack B: a block sized for L2) → `mr` tile rows → `nr` tile columns →
//! micro-kernel. A packed A micro-panel (`mr × kc`) stays in L1 while the B micro-panels of one
//! block stream through it from L2. (This is the classic BLIS order applied to `Cᵀ = Bᵀ·Aᵀ`: with
//! M = 512 tokens, A is small enough to pack once.)
//!
//! With several threads, each thread takes a range of columns of B and C and runs the whole loop
//! nest on it, packing its own copy of each A block: one fork-join per call (waking workers costs
//! more than the duplicated A packing, which M = 512 keeps small), and threads write disjoint
//! columns of C.

use super::pack::{GemmRhs, pack_a, pack_b};
use super::{MAX_TILE, Mat, MatMut, MicroKernel, round_up};
use crate::isa::Isa;
use crate::parallel::Parallel;
use crate::vectorize::vectorized;

/// Floats of slack per packed buffer so each can start on a 64-byte boundary.
const ALIGN_SLACK: usize = 16;

/// How the scratch of one GEMM call is laid out: an A block and a B block per thread.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScratchPlan {
    /// Threads that multiply (each owns a range of columns).
    teams: usize,
    /// Floats of one thread's packed A block (plus slack).
    a_len: usize,
    /// Floats of one thread's packed B block (plus slack).
    b_len: usize,
}

impl ScratchPlan {
    pub(super) fn new(uk: &MicroKernel, m: usize, n: usize, k: usize, threads: usize) -> Self {
        let teams = threads.max(1).min(n.div_ceil(uk.nr)).max(1);
        let cols_per_team = round_up(n.div_ceil(teams), uk.nr);
        let kc = uk.kc.min(k);
        ScratchPlan {
            teams,
            a_len: round_up(uk.mc.min(m), uk.mr) * kc + ALIGN_SLACK,
            b_len: round_up(uk.nc.min(cols_per_team), uk.nr) * kc + ALIGN_SLACK,
        }
    }

    pub(super) fn len(&self) -> usize {
        self.teams * (self.a_len + self.b_len)
    }
}

/// A raw pointer shared with the tasks of a [`Parallel`] run. Each task touches a disjoint part.
#[derive(Clone, Copy)]
struct Shared(*mut f32);
// SAFETY: tasks only access disjoint regions (distinct B panels, A scratch blocks and C rows), and
// `Parallel` implementations run each task exactly once and join them all before returning.
unsafe impl Sync for Shared {}
// SAFETY: as for `Sync`.
unsafe impl Send for Shared {}

impl Shared {
    /// The pointer (a method, so closures capture the `Sync` wrapper, not the raw field).
    fn get(self) -> *mut f32 {
        self.0
    }
}

/// Validated operands in, `C = alpha·A·B + beta·C` out. `scratch` holds at least `plan.len()`.
/// Packing is compiled for `isa` (the micro-kernel's), so its copies and transposes use the
/// same vector width.
#[allow(clippy::too_many_arguments)]
pub(super) fn run<T: GemmRhs>(
    isa: Isa,
    uk: &MicroKernel,
    alpha: f32,
    a: Mat<'_, f32>,
    b: Mat<'_, T>,
    beta: f32,
    c: MatMut<'_>,
    scratch: &mut [f32],
    plan: ScratchPlan,
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
    let (mr, nr) = (uk.mr, uk.nr);
    let base = Shared(scratch.as_mut_ptr());
    let c_base = Shared(c.data.as_mut_ptr());
    let teams = plan.teams;
    let cols_per_team = round_up(n.div_ceil(teams), nr);
    let team = |t: usize| {
        let c0 = t * cols_per_team;
        let c1 = n.min(c0 + cols_per_team);
        // SAFETY: team t owns scratch blocks t (A, then B) and columns c0..c1 of C.
        let (a_pack, b_pack) = unsafe {
            let own = core::slice::from_raw_parts_mut(
                base.get().add(t * (plan.a_len + plan.b_len)),
                plan.a_len + plan.b_len,
            );
            let (a_region, b_region) = own.split_at_mut(plan.a_len);
            (aligned(a_region), aligned(b_region))
        };
        for ic in (0..m).step_by(uk.mc) {
            let mc = uk.mc.min(m - ic);
            for pc in (0..k).step_by(uk.kc) {
                let kc = uk.kc.min(k - pc);
                vectorized!(isa, pack_a(isa, &a, ic, mc, pc, kc, mr, a_pack));
                // The first depth block applies beta; later ones accumulate onto it.
                let beta_k = if pc == 0 { beta } else { 1.0 };
                for jc in (c0..c1).step_by(uk.nc) {
                    let nc = uk.nc.min(c1 - jc);
                    vectorized!(isa, pack_b(isa, &b, pc, kc, jc, nc, nr, b_pack));
                    // SAFETY: rows ic..ic+mc, columns jc..jc+nc of C belong to this team.
                    unsafe {
                        macro_kernel(
                            uk,
                            alpha,
                            beta_k,
                            kc,
                            mc,
                            nc,
                            a_pack,
                            kc * mr,
                            b_pack,
                            kc * nr,
                            c_base.get().add(ic * ldc + jc),
                            ldc,
                        )
                    };
                }
            }
        }
    };
    if teams == 1 { team(0) } else { parallel.run(teams, &team) }
}

/// The part of `region` starting at its first 64-byte boundary.
fn aligned(region: &mut [f32]) -> &mut [f32] {
    let skip = region.as_ptr().align_offset(64).min(ALIGN_SLACK);
    &mut region[skip..]
}

/// `C = beta·C` for an `m × n` block (`beta == 0` writes zeros without reading).
pub(super) fn scale_rows(c: &mut [f32], m: usize, n: usize, ldc: usize, beta: f32) {
    for i in 0..m {
        let row = &mut c[i * ldc..i * ldc + n];
        if beta == 0.0 {
            row.fill(0.0);
        } else if beta != 1.0 {
            row.iter_mut().for_each(|x| *x *= beta);
        }
    }
}

/// All tiles of one packed `mc × kc` A block times one packed `kc × nc` B block, row panel by
/// row panel (the A micro-panel stays in L1). A panels lie `a_stride` floats apart, B panels
/// `b_stride` (`kc·mr` and `kc·nr` when packed here; longer for [`super::packed`]).
///
/// # Safety
/// `c` is valid for reads and writes of `mc` rows of `nc` floats, `ldc` apart, and no other
/// thread touches them; every panel is 64-byte aligned and holds `kc` steps.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn macro_kernel(
    uk: &MicroKernel,
    alpha: f32,
    beta: f32,
    kc: usize,
    mc: usize,
    nc: usize,
    a_pack: &[f32],
    a_stride: usize,
    b_pack: &[f32],
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
) {
    let (mr, nr) = (uk.mr, uk.nr);
    let mut tile = [0.0f32; MAX_TILE];
    for ir in (0..mc).step_by(mr) {
        let rows = mr.min(mc - ir);
        let a_panel = a_pack[(ir / mr) * a_stride..].as_ptr();
        for jr in (0..nc).step_by(nr) {
            let cols = nr.min(nc - jr);
            let b_panel = b_pack[(jr / nr) * b_stride..].as_ptr();
            // SAFETY: the tile lies inside the block of C.
            let c_tile = unsafe { c.add(ir * ldc + jr) };
            if rows == mr && cols == nr {
                // SAFETY: full tile; the panels hold kc·mr and kc·nr floats, aligned (caller).
                unsafe { (uk.run)(kc, a_panel, b_panel, c_tile, ldc, alpha, beta) };
            } else if let Some(short) = uk.short.filter(|_| cols == nr) {
                // SAFETY: as above, for the tile's first `rows` rows, which lie inside C.
                unsafe { short(rows, kc, a_panel, b_panel, c_tile, ldc, alpha, beta) };
            } else {
                // SAFETY: the kernel writes the whole tile into `tile` (ldc = nr).
                unsafe { (uk.run)(kc, a_panel, b_panel, tile.as_mut_ptr(), nr, alpha, 0.0) };
                for i in 0..rows {
                    for j in 0..cols {
                        // SAFETY: (i, j) is inside the partial tile of C.
                        unsafe {
                            let out = c_tile.add(i * ldc + j);
                            let v = tile[i * nr + j];
                            *out = if beta == 0.0 { v } else { v + beta * *out };
                        }
                    }
                }
            }
        }
    }
}
