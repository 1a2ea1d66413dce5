//! Packing: copying blocks of A and B into the panel layout the micro-kernels read, zero-padded
//! to whole tiles, widening half-precision B elements to f32 on the way.

use mft_core::{Element, bf16, f16};

use super::Mat;
use super::offload::{OffloadRhs, RhsData};
use super::prefetch::{Level, prefetch_line};
use crate::isa::Isa;

/// An element type B may have. f16 and bf16 are widened to f32 while packing.
pub trait GemmRhs: Element + Sync {
    /// The value as f32 (exact). Written branch-free so packing loops vectorize.
    fn widen(self) -> f32;

    /// The operand as an offload backend sees it.
    fn offload_rhs(b: Mat<'_, Self>) -> OffloadRhs<'_>;

    /// A slice as an offload backend sees it.
    fn rhs_data(data: &[Self]) -> RhsData<'_>;

    /// The slice as f32 when the elements are f32 (packing them needs no widening, so it may
    /// take a SIMD transpose).
    #[inline(always)]
    fn as_f32(_values: &[Self]) -> Option<&[f32]> {
        None
    }
}

impl GemmRhs for f32 {
    #[inline(always)]
    fn widen(self) -> f32 {
        self
    }

    fn offload_rhs(b: Mat<'_, f32>) -> OffloadRhs<'_> {
        OffloadRhs::F32(b)
    }

    fn rhs_data(data: &[f32]) -> RhsData<'_> {
        RhsData::F32(data)
    }

    #[inline(always)]
    fn as_f32(values: &[f32]) -> Option<&[f32]> {
        Some(values)
    }
}

impl GemmRhs for bf16 {
    #[inline(always)]
    fn widen(self) -> f32 {
        f32::from_bits((self.to_bits() as u32) << 16)
    }

    fn offload_rhs(b: Mat<'_, bf16>) -> OffloadRhs<'_> {
        OffloadRhs::Bf16(b)
    }

    fn rhs_data(data: &[bf16]) -> RhsData<'_> {
        RhsData::Bf16(data)
    }
}

impl GemmRhs for f16 {
    fn offload_rhs(b: Mat<'_, f16>) -> OffloadRhs<'_> {
        OffloadRhs::F16(b)
    }

    fn rhs_data(data: &[f16]) -> RhsData<'_> {
        RhsData::F16(data)
    }

    /// Written out rather than calling `half`: without `std` or a compile-time `f16c` target
    /// feature, `half` converts element by element through branches, which does not vectorize.
    #[inline(always)]
    fn widen(self) -> f32 {
        let h = self.to_bits() as u32;
        let sign = (h & 0x8000) << 16;
        let magnitude = h & 0x7fff;
        // Exponent and mantissa moved to f32 positions, then rescaled by 2^(127-15): exact for
        // normal and subnormal halves alike.
        let rescaled = f32::from_bits(magnitude << 13) * f32::from_bits(0x7780_0000);
        // Exponent 31 (infinity, NaN) becomes exponent 255, keeping the mantissa.
        let bits =
            if magnitude >= 0x7c00 { (magnitude << 13) | 0x7f80_0000 } else { rescaled.to_bits() };
        f32::from_bits(bits | sign)
    }
}

/// Pack rows `i0..i0 + mc` and columns `p0..p0 + kc` of A into `mr`-row panels: panel `q`
/// holds, for each `k`, the `mr` values of rows `i0 + q·mr ..`, zero past the last row.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the block, the panel width, the output and the ISA
pub(super) fn pack_a(
    isa: Isa,
    a: &Mat<'_, f32>,
    i0: usize,
    mc: usize,
    p0: usize,
    kc: usize,
    mr: usize,
    dst: &mut [f32],
) {
    for (q, panel) in dst[..mc.div_ceil(mr) * mr * kc].chunks_exact_mut(mr * kc).enumerate() {
        let rows = mr.min(mc - q * mr);
        let r0 = i0 + q * mr;
        if a.col_stride == 1 {
            let start = r0 * a.row_stride + p0;
            transpose_rows(isa, &a.data[start..], a.row_stride, rows, kc, panel, mr);
            continue;
        }
        if a.row_stride == 1 {
            // A seen transposed: each k copies one run of `rows` values.
            let first = r0 + p0 * a.col_stride;
            copy_runs(panel, mr, &a.data[first..], a.col_stride, rows);
        } else {
            for k in 0..kc {
                for i in 0..rows {
                    panel[k * mr + i] = a.at(r0 + i, p0 + k);
                }
            }
        }
        if rows < mr {
            for k in 0..kc {
                panel[k * mr + rows..(k + 1) * mr].fill(0.0);
            }
        }
    }
}

/// For each `mr`-float step of `panel`, its first `rows` floats from `src`, `stride` apart.
/// The usual run lengths (12, 8, 6, 4) are copied with the length known at compile time: a few
/// vector moves, where `copy_from_slice` of a runtime length calls `memcpy`, which costs more
/// than the 48 bytes of a 12-row run.
#[inline(always)]
fn copy_runs(panel: &mut [f32], mr: usize, src: &[f32], stride: usize, rows: usize) {
    #[inline(always)]
    fn fixed<const N: usize>(panel: &mut [f32], mr: usize, src: &[f32], stride: usize) {
        for (k, out) in panel.chunks_exact_mut(mr).enumerate() {
            out[..N].copy_from_slice(&src[k * stride..k * stride + N]);
        }
    }
    match rows {
        12 => fixed::<12>(panel, mr, src, stride),
        8 => fixed::<8>(panel, mr, src, stride),
        6 => fixed::<6>(panel, mr, src, stride),
        4 => fixed::<4>(panel, mr, src, stride),
        _ => {
            for (k, out) in panel.chunks_exact_mut(mr).enumerate() {
                out[..rows].copy_from_slice(&src[k * stride..k * stride + rows]);
            }
        }
    }
}

/// Pack rows `p0..p0 + kc` and columns `j0..j0 + nc` of B into `nr`-column panels: panel `q`
/// holds, for each `k`, the `nr` values of columns `j0 + q·nr ..`, zero past the last column.
#[inline(always)]
#[allow(clippy::too_many_arguments)] // the block, the panel width, the output and the ISA
pub(super) fn pack_b<T: GemmRhs>(
    isa: Isa,
    b: &Mat<'_, T>,
    p0: usize,
    kc: usize,
    j0: usize,
    nc: usize,
    nr: usize,
    dst: &mut [f32],
) {
    for (q, panel) in dst[..nc.div_ceil(nr) * nr * kc].chunks_exact_mut(nr * kc).enumerate() {
        let cols = nr.min(nc - q * nr);
        let c0 = j0 + q * nr;
        if b.col_stride == 1 {
            // Rows are contiguous in j: each k copies (and widens) one run of `cols` values.
            for (k, out) in panel.chunks_exact_mut(nr).enumerate() {
                let start = (p0 + k) * b.row_stride + c0;
                // The same row of the next panel, which the hardware prefetcher (one run per
                // row, rows a stride apart) does not fetch ahead.
                if cols == nr {
                    let next: *const u8 = b.data.as_ptr().wrapping_add(start + nr).cast();
                    prefetch_line(next, Level::L1);
                    prefetch_line(next.wrapping_add(64), Level::L1);
                }
                for (o, &v) in out[..cols].iter_mut().zip(&b.data[start..start + cols]) {
                    *o = v.widen();
                }
                out[cols..].fill(0.0);
            }
        } else {
            // B seen transposed.
            if b.row_stride == 1 {
                let start = c0 * b.col_stride + p0;
                transpose_rows(isa, &b.data[start..], b.col_stride, cols, kc, panel, nr);
                continue;
            }
            for j in 0..cols {
                for k in 0..kc {
                    panel[k * nr + j] = b.at(p0 + k, c0 + j).widen();
                }
            }
            if cols < nr {
                for k in 0..kc {
                    panel[k * nr + cols..(k + 1) * nr].fill(0.0);
                }
            }
        }
    }
}

/// `dst[k·width + t] = src[t·stride + k]` (widened) for `t < rows`, `k < kc`, and zero for
/// `rows ≤ t < width`: `rows` source rows interleaved into a panel.
///
/// Source rows are read eight at a time (then four), side by side, so every read is a sequential
/// stream and every write a contiguous run; one row at a time would write with a stride of
/// `width`. A 12-row AVX-512 panel is one group of eight and one of four.
#[inline(always)]
fn transpose_rows<T: GemmRhs>(
    isa: Isa,
    src: &[T],
    stride: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) {
    const GROUP: usize = 8;
    let dst = &mut dst[..kc * width];
    let mut t0 = 0;
    while t0 + GROUP <= rows {
        let lanes: [&[T]; GROUP] = core::array::from_fn(|u| &src[(t0 + u) * stride..][..kc]);
        if let Some(f32s) = T::as_f32(&src[t0 * stride..])
            && transpose_rows_simd::<GROUP>(isa, f32s, stride, kc, &mut dst[t0..], width)
        {
            t0 += GROUP;
            continue;
        }
        for (k, out) in dst.chunks_exact_mut(width).enumerate() {
            let out = &mut out[t0..t0 + GROUP];
            for u in 0..GROUP {
                out[u] = lanes[u][k].widen();
            }
        }
        t0 += GROUP;
    }
    if t0 + 4 <= rows
        && let Some(f32s) = T::as_f32(&src[t0 * stride..])
        && transpose_rows_simd::<4>(isa, f32s, stride, kc, &mut dst[t0..], width)
    {
        t0 += 4;
    }
    for t in t0..rows {
        let lane = &src[t * stride..][..kc];
        for (k, out) in dst.chunks_exact_mut(width).enumerate() {
            out[t] = lane[k].widen();
        }
    }
    if rows < width {
        for out in dst.chunks_exact_mut(width) {
            out[rows..].fill(0.0);
        }
    }
}

/// `dst[k·width + u] = src[u·stride + k]` for `u < ROWS` (8 or 4), `k < kc` with the SIMD
/// transpose of this architecture, when `isa` has one: returns whether it ran.
///
/// # Panics
/// If `src` holds fewer than `ROWS` rows of `kc` values `stride` apart, or `dst` fewer than `kc`
/// runs of `ROWS` values `width` apart.
#[inline(always)]
fn transpose_rows_simd<const ROWS: usize>(
    isa: Isa,
    src: &[f32],
    stride: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) -> bool {
    if kc == 0 {
        return true;
    }
    const { assert!(ROWS == 8 || ROWS == 4) };
    assert!(
        src.len() >= (ROWS - 1) * stride + kc
            && width >= ROWS
            && dst.len() >= (kc - 1) * width + ROWS
    );
    let (from, to) = (src.as_ptr(), dst.as_mut_ptr());
    #[allow(unused_mut)] // no SIMD transpose on other architectures
    let mut done: Option<usize> = None;
    #[cfg(target_arch = "x86_64")]
    if matches!(isa, Isa::Avx2 | Isa::Avx512) {
        // SAFETY: AVX2 is supported (the ISA was probed); the extents were checked above.
        done = Some(unsafe {
            if ROWS == 8 {
                x86::transpose_8_rows(from, stride, kc, to, width)
            } else {
                x86::transpose_4_rows(from, stride, kc, to, width)
            }
        });
    }
    #[cfg(target_arch = "aarch64")]
    // (aarch64 panels are 8 rows: no group of four to speed up.)
    if ROWS == 8 && matches!(isa, Isa::Neon | Isa::Sve) {
        // SAFETY: NEON is part of every aarch64 CPU; the extents were checked above.
        done = Some(unsafe { aarch64::transpose_8_rows(from, stride, kc, to, width) });
    }
    let _ = (isa, from, to);
    let Some(done) = done else { return false };
    // The depth left over after the whole SIMD blocks.
    for k in done..kc {
        for u in 0..ROWS {
            dst[k * width + u] = src[u * stride + k];
        }
    }
    true
}

/// The 8-row transpose of [`transpose_rows`] with AVX2 shuffles: the scalar loop moves one
/// value per instruction, which makes packing a transposed operand a tenth of flash attention's
/// time.
#[cfg(target_arch = "x86_64")]
mod x86 {
    use core::arch::x86_64::*;

    /// `dst[k·width + u] = src[u·stride + k]` for `u < 8` and `k` below the returned count (the
    /// whole blocks of `kc`).
    ///
    /// # Safety
    /// AVX2 is supported; `src` is valid for reads of 8 rows of `kc` values `stride` apart;
    /// `dst` is valid for writes of 8 values at each `k·width`, `k < kc`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_8_rows(
        src: *const f32,
        stride: usize,
        kc: usize,
        dst: *mut f32,
        width: usize,
    ) -> usize {
        let mut k0 = 0;
        // SAFETY: every access below is within the rows and runs the caller vouches for.
        unsafe {
            while k0 + 8 <= kc {
                let r: [__m256; 8] =
                    core::array::from_fn(|u| _mm256_loadu_ps(src.add(u * stride + k0)));
                // Pairs of rows interleaved, then pairs of pairs, then the 128-bit halves.
                let t0 = _mm256_unpacklo_ps(r[0], r[1]);
                let t1 = _mm256_unpackhi_ps(r[0], r[1]);
                let t2 = _mm256_unpacklo_ps(r[2], r[3]);
                let t3 = _mm256_unpackhi_ps(r[2], r[3]);
                let t4 = _mm256_unpacklo_ps(r[4], r[5]);
                let t5 = _mm256_unpackhi_ps(r[4], r[5]);
                let t6 = _mm256_unpacklo_ps(r[6], r[7]);
                let t7 = _mm256_unpackhi_ps(r[6], r[7]);
                let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
                let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
                let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
                let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
                let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
                let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
                let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
                let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
                let out = [
                    _mm256_permute2f128_ps::<0x20>(u0, u4),
                    _mm256_permute2f128_ps::<0x20>(u1, u5),
                    _mm256_permute2f128_ps::<0x20>(u2, u6),
                    _mm256_permute2f128_ps::<0x20>(u3, u7),
                    _mm256_permute2f128_ps::<0x31>(u0, u4),
                    _mm256_permute2f128_ps::<0x31>(u1, u5),
                    _mm256_permute2f128_ps::<0x31>(u2, u6),
                    _mm256_permute2f128_ps::<0x31>(u3, u7),
                ];
                for (k, v) in out.into_iter().enumerate() {
                    _mm256_storeu_ps(dst.add((k0 + k) * width), v);
                }
                k0 += 8;
            }
        }
        k0
    }

    /// [`transpose_8_rows`] for 4 rows, with SSE shuffles (4×4 blocks).
    ///
    /// # Safety
    /// As [`transpose_8_rows`], for 4 rows and runs of 4 values.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn transpose_4_rows(
        src: *const f32,
        stride: usize,
        kc: usize,
        dst: *mut f32,
        width: usize,
    ) -> usize {
        let mut k0 = 0;
        // SAFETY: every access below is within the rows and runs the caller vouches for.
        unsafe {
            while k0 + 4 <= kc {
                let r: [__m128; 4] =
                    core::array::from_fn(|u| _mm_loadu_ps(src.add(u * stride + k0)));
                let t0 = _mm_unpacklo_ps(r[0], r[1]);
                let t1 = _mm_unpackhi_ps(r[0], r[1]);
                let t2 = _mm_unpacklo_ps(r[2], r[3]);
                let t3 = _mm_unpackhi_ps(r[2], r[3]);
                let out = [
                    _mm_movelh_ps(t0, t2),
                    _mm_movehl_ps(t2, t0),
                    _mm_movelh_ps(t1, t3),
                    _mm_movehl_ps(t3, t1),
                ];
                for (k, v) in out.into_iter().enumerate() {
                    _mm_storeu_ps(dst.add((k0 + k) * width), v);
                }
                k0 += 4;
            }
        }
        k0
    }
}

/// The 8-row transpose of [`transpose_rows`] with NEON: two 4×4 transposes (`trn1`/`trn2` on
/// 32-bit, then on 64-bit lanes) per 4 values of depth.
#[cfg(target_arch = "aarch64")]
mod aarch64 {
    use core::arch::aarch64::*;

    /// `dst[k·width + u] = src[u·stride + k]` for `u < 8` and `k` below the returned count (the
    /// whole blocks of `kc`).
    ///
    /// # Safety
    /// `src` is valid for reads of 8 rows of `kc` values `stride` apart; `dst` is valid for
    /// writes of 8 values at each `k·width`, `k < kc`.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn transpose_8_rows(
        src: *const f32,
        stride: usize,
        kc: usize,
        dst: *mut f32,
        width: usize,
    ) -> usize {
        let mut k0 = 0;
        // SAFETY: every access below is within the rows and runs the caller vouches for.
        unsafe {
            while k0 + 4 <= kc {
                for half in 0..2 {
                    let row = |u: usize| vld1q_f32(src.add((4 * half + u) * stride + k0));
                    let (r0, r1, r2, r3) = (row(0), row(1), row(2), row(3));
                    let t0 = vreinterpretq_f64_f32(vtrn1q_f32(r0, r1));
                    let t1 = vreinterpretq_f64_f32(vtrn2q_f32(r0, r1));
                    let t2 = vreinterpretq_f64_f32(vtrn1q_f32(r2, r3));
                    let t3 = vreinterpretq_f64_f32(vtrn2q_f32(r2, r3));
                    let out = [
                        vtrn1q_f64(t0, t2),
                        vtrn1q_f64(t1, t3),
                        vtrn2q_f64(t0, t2),
                        vtrn2q_f64(t1, t3),
                    ];
                    for (k, v) in out.into_iter().enumerate() {
                        vst1q_f32(dst.add((k0 + k) * width + 4 * half), vreinterpretq_f32_f64(v));
                    }
                }
                k0 += 4;
            }
        }
        k0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_widening_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = f16::from_bits(bits);
            let (got, want) = (h.widen(), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}: {got} vs {want}"
            );
        }
    }

    #[test]
    fn bf16_widening_is_exact_for_every_value() {
        for bits in 0..=u16::MAX {
            let h = bf16::from_bits(bits);
            let (got, want) = (h.widen(), h.to_f32());
            assert!(
                got.to_bits() == want.to_bits() || (got.is_nan() && want.is_nan()),
                "{bits:#06x}"
            );
        }
    }

    #[test]
    fn packed_panels_are_k_major_and_zero_padded() {
        // A is 3×2: [[1,2],[3,4],[5,6]]; panels of 2 rows.
        let data = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0];
        let a = Mat::row_major(&data, 3, 2, 2);
        let mut dst = [f32::NAN; 8];
        pack_a(Isa::Scalar, &a, 0, 3, 0, 2, 2, &mut dst);
        assert_eq!(dst, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
        // The same matrix as B (3×2) transposed to 2×3, columns in panels of 2.
        let mut dst = [f32::NAN; 8];
        pack_b(Isa::Scalar, &a.t(), 0, 2, 0, 3, 2, &mut dst);
        assert_eq!(dst, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
        let mut dst = [f32::NAN; 4];
        pack_b(Isa::Scalar, &a, 1, 2, 0, 2, 2, &mut dst);
        assert_eq!(dst, [3.0, 4.0, 5.0, 6.0]);
    }

    #[test]
    fn every_isa_transposes_rows_as_the_scalar_loop() {
        let (stride, width) = (37, 29);
        let src: std::vec::Vec<f32> = (0..40 * stride).map(|i| i as f32).collect();
        for isa in [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::Sve] {
            if !isa.is_supported() {
                continue;
            }
            for (rows, kc) in [
                (1, 1),
                (4, 5),
                (6, 9),
                (7, 9),
                (8, 8),
                (8, 17),
                (12, 20),
                (17, 3),
                (24, 33),
                (29, 16),
            ] {
                let mut got = std::vec![f32::NAN; kc * width];
                transpose_rows(isa, &src, stride, rows, kc, &mut got, width);
                for k in 0..kc {
                    for t in 0..width {
                        let want = if t < rows { src[t * stride + k] } else { 0.0 };
                        assert_eq!(got[k * width + t], want, "{isa:?} {rows}×{kc} at ({k}, {t})");
                    }
                }
            }
        }
    }
}
