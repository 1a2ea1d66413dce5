//! Fetching the operand blocks the next packing step reads while the current block multiplies.
//!
//! Packing reads its block of A or B from wherever the operand lives: a weight larger than L2
//! comes from L3 or memory, with a block's rows a row stride apart, and the core waits on it with
//! no multiplication to overlap. (At 3072→768 X·W, packing B from a block that stays in cache
//! instead of the real one was 6% faster at 1 thread.) So while the micro-kernels work through
//! one block, the driver spreads prefetches of the next blocks' source rows over its tiles: a
//! few lines per tile, into L2. The prefetch instruction itself ([`prefetch_line`], into L1 or
//! L2) lives here too; packing B uses it for the next panel's rows.

use super::Mat;

/// A block of an operand in memory: `runs` runs of `run_bytes` contiguous bytes, `stride_bytes`
/// apart (a row-major block's rows, or a transposed one's columns).
#[derive(Clone, Copy)]
pub(super) struct Region {
    start: *const u8,
    runs: usize,
    run_bytes: usize,
    stride_bytes: usize,
}

impl Region {
    /// Rows `r0..r0 + rows`, columns `c0..c0 + cols` of `m` (in bounds), or `None` when it is
    /// empty or neither its rows nor its columns are contiguous.
    pub(super) fn of<T>(
        m: &Mat<'_, T>,
        r0: usize,
        rows: usize,
        c0: usize,
        cols: usize,
    ) -> Option<Self> {
        let size = core::mem::size_of::<T>();
        let origin = m.data.as_ptr().wrapping_add(r0 * m.row_stride + c0 * m.col_stride).cast();
        let (runs, run, stride) = if m.col_stride == 1 {
            (rows, cols, m.row_stride)
        } else if m.row_stride == 1 {
            (cols, rows, m.col_stride)
        } else {
            return None;
        };
        if runs == 0 || run == 0 {
            return None;
        }
        Some(Region { start: origin, runs, run_bytes: run * size, stride_bytes: stride * size })
    }
}

/// Up to two regions (the next B block, and the next A block when the depth block changes),
/// prefetched a slice at a time: slice `t` of `slices` covers its share of all their runs.
#[derive(Clone, Copy)]
pub(super) struct Lookahead {
    regions: [Option<Region>; 2],
}

impl Lookahead {
    /// Nothing to fetch.
    pub(super) const NONE: Lookahead = Lookahead { regions: [None, None] };

    pub(super) fn new(b: Option<Region>, a: Option<Region>) -> Self {
        Lookahead { regions: [b, a] }
    }

    /// All of `next` (nothing for `None`): memory a caller of the packed products reads next.
    pub(super) fn of_whole(next: Option<Mat<'_, f32>>) -> Self {
        let region = next.and_then(|m| Region::of(&m, 0, m.rows, 0, m.cols));
        Lookahead::new(region, None)
    }

    fn runs(&self) -> usize {
        self.regions.iter().flatten().map(|r| r.runs).sum()
    }

    /// Prefetch runs `[t·R/slices, (t+1)·R/slices)` of the `R` runs of the regions, in order.
    #[inline]
    pub(super) fn fetch_slice(&self, t: usize, slices: usize) {
        let total = self.runs();
        if total == 0 {
            return;
        }
        let (mut from, mut to) = (t * total / slices, (t + 1) * total / slices);
        for region in self.regions.iter().flatten() {
            for run in from.min(region.runs)..to.min(region.runs) {
                let at = region.start.wrapping_add(run * region.stride_bytes);
                let mut offset = 0;
                while offset < region.run_bytes {
                    prefetch_line(at.wrapping_add(offset), Level::L2);
                    offset += 64;
                }
                prefetch_line(at.wrapping_add(region.run_bytes - 1), Level::L2);
            }
            from = from.saturating_sub(region.runs);
            to = to.saturating_sub(region.runs);
        }
    }
}

/// The cache a prefetch asks a line into.
#[derive(Clone, Copy)]
pub(super) enum Level {
    /// L1 (and the levels below it): data needed within a few hundred cycles.
    L1,
    /// L2: data needed after the current block, which must not push it out of L1.
    L2,
}

/// Asks for the cache line holding `at` into `level`; a hint, never a fault.
#[inline(always)]
pub(super) fn prefetch_line(at: *const u8, level: Level) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch does not fault, wherever it points.
    unsafe {
        use core::arch::x86_64::{_MM_HINT_T0, _MM_HINT_T1, _mm_prefetch};
        match level {
            Level::L1 => _mm_prefetch::<_MM_HINT_T0>(at.cast()),
            Level::L2 => _mm_prefetch::<_MM_HINT_T1>(at.cast()),
        }
    }
    #[cfg(target_arch = "aarch64")]
    // SAFETY: a prefetch does not fault, wherever it points.
    unsafe {
        match level {
            Level::L1 => core::arch::asm!(
                "prfm pldl1keep, [{at}]",
                at = in(reg) at,
                options(nostack, readonly, preserves_flags)
            ),
            Level::L2 => core::arch::asm!(
                "prfm pldl2keep, [{at}]",
                at = in(reg) at,
                options(nostack, readonly, preserves_flags)
            ),
        }
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let _ = (at, level);
}
