//! The blocked GEMM loops around a micro-kernel, shared between threads.
//!
//! Loop order (outermost first): `mc` rows of A → `kc` depth (pack A: a large block that lives in
//! L3) → `nc` columns of B (pack B: a block sized for L2) → `mr` tile rows → `nr` tile columns →
//! micro-kernel. A packed A micro-panel (`mr × kc`) stays in L1 while the B micro-panels of one
//! block stream through it from L2. (This is the classic BLIS order applied to `Cᵀ = Bᵀ·Aᵀ`: with
//! M = 512 tokens, A is small enough to pack once.)
//!
//! Packing reads A and B from wherever they live; a weight larger than L2 comes from L3 or
//! memory, a block's rows a row stride apart. While the tiles of one block multiply, the rows
//! the next packing step reads are prefetched a slice per tile ([`super::prefetch`]). For that
//! to pay, the current and next blocks must fit in L2 together, so a deep product (K ≥ 3072)
//! uses half the kernel's depth block.
//!
//! With several threads, each thread usually takes a range of columns of B and C and runs the
//! whole loop nest on it, packing its own copy of each A block: one fork-join per call (waking
//! workers costs more than the duplicated A packing, which M = 512 keeps small), and threads write
//! disjoint columns of C. Two threads on a product at least twice as deep as it is wide split the
//! depth instead: each packs half of A and half of B, the second writes its product into scratch,
//! and a second fork-join adds it to C.

use core::ops::Range;

use super::pack::{GemmRhs, pack_a, pack_b};
use super::prefetch::{Lookahead, Region};
use super::{MAX_TILE, Mat, MatMut, MicroKernel, StridedAKernelFn, round_up};
use crate::isa::Isa;
use crate::parallel::Parallel;
use crate::vectorize::vectorized;

/// Floats of slack per packed buffer so each can start on a 64-byte boundary.
const ALIGN_SLACK: usize = 16;

/// How the threads share one GEMM call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Split {
    /// Each thread takes a range of C's columns (and packs its own copy of every A block).
    Columns,
    /// Two threads each take half of the depth over all of C; the second writes its product
    /// into scratch, added to C after both are done.
    Depth,
}

/// How the scratch of one GEMM call is laid out: an A block and a B block per thread, and with
/// [`Split::Depth`] the second thread's `m × n` product.
#[derive(Debug, Clone, Copy)]
pub(super) struct ScratchPlan {
    /// Threads that multiply.
    teams: usize,
    split: Split,
    /// Floats of one thread's packed A block (plus slack).
    a_len: usize,
    /// Floats of one thread's packed B block (plus slack).
    b_len: usize,
    /// Floats of the second thread's product ([`Split::Depth`] only).
    partial_len: usize,
}

impl ScratchPlan {
    pub(super) fn new(uk: &MicroKernel, m: usize, n: usize, k: usize, threads: usize) -> Self {
        let teams = threads.max(1).min(n.div_ceil(uk.nr)).max(1);
        // Two threads splitting the columns both pack all of A. When the depth is at least twice
        // the width, that duplicated packing (M·K floats each) costs more than adding a second
        // M×N product into C afterwards (3072→768 X·W at M = 512, 2 threads: about +1%).
        let split = if threads == 2 && teams == 2 && k >= 2 * n && k >= 2 * uk.kc {
            Split::Depth
        } else {
            Split::Columns
        };
        let cols_per_team =
            if split == Split::Depth { n } else { round_up(n.div_ceil(teams), uk.nr) };
        let kc = depth_block(uk, k).min(k);
        ScratchPlan {
            teams,
            split,
            a_len: round_up(uk.mc.min(m), uk.mr) * kc + ALIGN_SLACK,
            b_len: round_up(uk.nc.min(cols_per_team), uk.nr) * kc + ALIGN_SLACK,
            partial_len: if split == Split::Depth { m * n } else { 0 },
        }
    }

    pub(super) fn len(&self) -> usize {
        self.teams * (self.a_len + self.b_len) + self.partial_len
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
    let base = Shared(scratch.as_mut_ptr());
    let c_base = Shared(c.data.as_mut_ptr());
    let teams = plan.teams;
    // SAFETY: team t's packing blocks lie inside `scratch` (plan.len() floats, checked by the
    // caller), disjoint from every other team's; each team asks for its own once.
    let packs = |t: usize| unsafe {
        let own = core::slice::from_raw_parts_mut(
            base.get().add(t * (plan.a_len + plan.b_len)),
            plan.a_len + plan.b_len,
        );
        let (a_region, b_region) = own.split_at_mut(plan.a_len);
        (aligned(a_region), aligned(b_region))
    };
    if plan.split == Split::Depth {
        let partial = Shared(scratch[teams * (plan.a_len + plan.b_len)..].as_mut_ptr());
        let half = k / 2;
        let team = |t: usize| {
            let (a_pack, b_pack) = packs(t);
            let (out, ld, beta_t, depth) = match t {
                0 => (c_base.get(), ldc, beta, 0..half),
                _ => (partial.get(), n, 0.0, half..k),
            };
            // SAFETY: `out` holds m rows of n floats, `ld` apart, written by this team only.
            unsafe {
                multiply(isa, uk, alpha, &a, &b, beta_t, out, ld, 0..n, depth, a_pack, b_pack)
            };
        };
        parallel.run(teams, &team);
        let rows_per_team = m.div_ceil(teams);
        let add = |t: usize| {
            for i in t * rows_per_team..m.min((t + 1) * rows_per_team) {
                // SAFETY: row i of C and of the partial belong to this task; both hold n floats.
                let (row, part) = unsafe {
                    (
                        core::slice::from_raw_parts_mut(c_base.get().add(i * ldc), n),
                        core::slice::from_raw_parts(partial.get().add(i * n), n),
                    )
                };
                vectorized!(isa, row.iter_mut().zip(part).for_each(|(x, &p)| *x += p));
            }
        };
        parallel.run(teams, &add);
        return;
    }
    let cols_per_team = round_up(n.div_ceil(teams), uk.nr);
    let team = |t: usize| {
        let c0 = t * cols_per_team;
        let c1 = n.min(c0 + cols_per_team);
        let (a_pack, b_pack) = packs(t);
        // SAFETY: columns c0..c1 of C belong to team t.
        unsafe {
            multiply(isa, uk, alpha, &a, &b, beta, c_base.get(), ldc, c0..c1, 0..k, a_pack, b_pack)
        };
    };
    if teams == 1 { team(0) } else { parallel.run(teams, &team) }
}

/// The depth block for a product of depth `k`: the kernel's, halved for a deep product, whose
/// A and B blocks then fit in L2 beside the next ones, fetched while they multiply (3072→768
/// X·W: +2–3% at 1 thread). Shallower products keep the full block: halving it doubles the
/// passes over C, which cost more than the prefetch saves there (768→768 X·W, 2 threads: −4%).
fn depth_block(uk: &MicroKernel, k: usize) -> usize {
    if k >= 3072 { uk.kc / 2 } else { uk.kc }
}

/// `C[.., cols] = alpha·A[.., depth]·B[depth, cols] + beta·C[.., cols]` over all of A's rows:
/// the loop nest of one thread, packing into `a_pack` and `b_pack`.
///
/// # Safety
/// `c` is valid for reads and writes of A's rows of `cols.end` floats, `ldc` apart, and no other
/// thread touches columns `cols` of them.
#[allow(clippy::too_many_arguments)]
unsafe fn multiply<T: GemmRhs>(
    isa: Isa,
    uk: &MicroKernel,
    alpha: f32,
    a: &Mat<'_, f32>,
    b: &Mat<'_, T>,
    beta: f32,
    c: *mut f32,
    ldc: usize,
    cols: Range<usize>,
    depth: Range<usize>,
    a_pack: &mut [f32],
    b_pack: &mut [f32],
) {
    let (mr, nr, m) = (uk.mr, uk.nr, a.rows);
    let (c0, c1, k) = (cols.start, cols.end, depth.end);
    let block = depth_block(uk, a.cols);
    // The blocks packed after the one at (ic, pc, jc), fetched while it multiplies.
    let next_blocks = |ic: usize, pc: usize, jc: usize| {
        let next_jc = jc + uk.nc;
        if next_jc < c1 {
            let b_next = Region::of(b, pc, block.min(k - pc), next_jc, uk.nc.min(c1 - next_jc));
            return Lookahead::new(b_next, None);
        }
        let (ia, pa) = if pc + block < k {
            (ic, pc + block)
        } else if ic + uk.mc < m {
            (ic + uk.mc, depth.start)
        } else {
            return Lookahead::NONE;
        };
        let kc = block.min(k - pa);
        Lookahead::new(
            Region::of(b, pa, kc, c0, uk.nc.min(c1 - c0)),
            Region::of(a, ia, uk.mc.min(m - ia), pa, kc),
        )
    };
    for ic in (0..m).step_by(uk.mc) {
        let mc = uk.mc.min(m - ic);
        for pc in depth.clone().step_by(block) {
            let kc = block.min(depth.end - pc);
            vectorized!(isa, pack_a(isa, a, ic, mc, pc, kc, mr, a_pack));
            // The first depth block applies beta; later ones accumulate onto it.
            let beta_k = if pc == depth.start { beta } else { 1.0 };
            for jc in cols.clone().step_by(uk.nc) {
                let nc = uk.nc.min(cols.end - jc);
                vectorized!(isa, pack_b(isa, b, pc, kc, jc, nc, nr, b_pack));
                // SAFETY: rows ic..ic+mc, columns jc..jc+nc of C (caller).
                unsafe {
                    macro_kernel(
                        uk,
                        alpha,
                        beta_k,
                        kc,
                        mc,
                        nc,
                        Left::Packed { panels: a_pack, stride: kc * mr },
                        b_pack,
                        kc * nr,
                        c.add(ic * ldc + jc),
                        ldc,
                        &next_blocks(ic, pc, jc),
                    )
                };
            }
        }
    }
}

/// `C = tile + beta·C` over the first `rows × cols` of a tile computed into `tile` (rows `nr`
/// apart) with beta 0: the edge tiles the micro-kernels cannot write straight into C.
///
/// # Safety
/// `c` is valid for reads and writes of `rows` rows of `cols` floats, `ldc` apart.
pub(super) unsafe fn add_partial_tile(
    tile: &[f32],
    nr: usize,
    c: *mut f32,
    ldc: usize,
    rows: usize,
    cols: usize,
    beta: f32,
) {
    for i in 0..rows {
        for j in 0..cols {
            // SAFETY: (i, j) is inside the partial tile of C (the caller's contract).
            unsafe {
                let out = c.add(i * ldc + j);
                let v = tile[i * nr + j];
                *out = if beta == 0.0 { v } else { v + beta * *out };
            }
        }
    }
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

/// Where the macro-kernel's A lies.
#[derive(Clone, Copy)]
pub(super) enum Left<'a> {
    /// Packed `mr`-row panels, `stride` floats apart (`kc·mr` when packed here).
    Packed { panels: &'a [f32], stride: usize },
    /// Where it lies, unpacked: row `i`, depth step `p` at `data[i·row + p·step]`, read by the
    /// strided-A micro-kernel `kernel`.
    Strided { data: &'a [f32], row: usize, step: usize, kernel: StridedAKernelFn },
}

/// All tiles of an `mc × kc` A block (`a`) times one packed `kc × nc` B block, row panel by
/// row panel (the A micro-panel stays in L1). B panels lie `b_stride` floats apart (`kc·nr`
/// when packed here; longer for [`super::packed`]). Prefetches `ahead`, a slice per tile.
///
/// # Safety
/// `c` is valid for reads and writes of `mc` rows of `nc` floats, `ldc` apart, and no other
/// thread touches them; every panel is 64-byte aligned and holds `kc` steps; a strided A holds
/// its `mc` rows of `kc` steps.
#[allow(clippy::too_many_arguments)]
pub(super) unsafe fn macro_kernel(
    uk: &MicroKernel,
    alpha: f32,
    beta: f32,
    kc: usize,
    mc: usize,
    nc: usize,
    a: Left<'_>,
    b_pack: &[f32],
    b_stride: usize,
    c: *mut f32,
    ldc: usize,
    ahead: &Lookahead,
) {
    let (mr, nr) = (uk.mr, uk.nr);
    let mut tile = [0.0f32; MAX_TILE];
    let tiles = mc.div_ceil(mr) * nc.div_ceil(nr);
    let mut t = 0;
    for ir in (0..mc).step_by(mr) {
        let rows = mr.min(mc - ir);
        for jr in (0..nc).step_by(nr) {
            let cols = nr.min(nc - jr);
            ahead.fetch_slice(t, tiles);
            t += 1;
            let b_panel = b_pack[(jr / nr) * b_stride..].as_ptr();
            // SAFETY: the tile lies inside the block of C.
            let c_tile = unsafe { c.add(ir * ldc + jr) };
            let whole_cols = cols == nr;
            match a {
                Left::Packed { panels, stride } => {
                    let a_panel = panels[(ir / mr) * stride..].as_ptr();
                    if rows == mr && whole_cols {
                        // SAFETY: full tile; the panels hold kc·mr and kc·nr floats, aligned
                        // (caller).
                        unsafe { (uk.run)(kc, a_panel, b_panel, c_tile, ldc, alpha, beta) };
                    } else if let Some(short) = uk.short.filter(|_| whole_cols) {
                        // SAFETY: as above, for the tile's first `rows` rows, which lie in C.
                        unsafe { short(rows, kc, a_panel, b_panel, c_tile, ldc, alpha, beta) };
                    } else {
                        let out = tile.as_mut_ptr();
                        // SAFETY: the kernel writes the whole tile into `tile` (ldc = nr).
                        unsafe { (uk.run)(kc, a_panel, b_panel, out, nr, alpha, 0.0) };
                        // SAFETY: the tile's first `rows` rows and `cols` columns lie in C.
                        unsafe { add_partial_tile(&tile, nr, c_tile, ldc, rows, cols, beta) };
                    }
                }
                Left::Strided { data, row, step, kernel } => {
                    let a_rows = data[ir * row..].as_ptr();
                    if whole_cols {
                        // SAFETY: A holds `rows` rows of kc steps from `a_rows` (caller), B's
                        // panel kc·nr aligned floats, the tile's rows lie in C.
                        unsafe {
                            kernel(rows, kc, a_rows, row, step, b_panel, c_tile, ldc, alpha, beta)
                        };
                    } else {
                        let out = tile.as_mut_ptr();
                        // SAFETY: as above, into `tile` (mr·nr floats, ldc = nr).
                        unsafe {
                            kernel(rows, kc, a_rows, row, step, b_panel, out, nr, alpha, 0.0)
                        };
                        // SAFETY: the tile's first `rows` rows and `cols` columns lie in C.
                        unsafe { add_partial_tile(&tile, nr, c_tile, ldc, rows, cols, beta) };
                    }
                }
            }
        }
    }
}
