//! Packing: copying blocks of A and B into the panel layout the micro-kernels read, zero-padded
//! to whole tiles, widening half-precision B elements to f32 on the way.

use mft_core::{Element, bf16, f16};

use super::Mat;
use super::offload::{OffloadRhs, RhsData};

/// An element type B may have. f16 and bf16 are widened to f32 while packing.
pub trait GemmRhs: Element + Sync {
    /// The value as f32 (exact). Written branch-free so packing loops vectorize.
    fn widen(self) -> f32;

    /// The operand as an offload backend sees it.
    fn offload_rhs(b: Mat<'_, Self>) -> OffloadRhs<'_>;

    /// A slice as an offload backend sees it.
    fn rhs_data(data: &[Self]) -> RhsData<'_>;
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
pub(super) fn pack_a(
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
            transpose_rows(&a.data[start..], a.row_stride, rows, kc, panel, mr);
            continue;
        }
        if a.row_stride == 1 {
            // A seen transposed: each k copies one run of `rows` values.
            for (k, out) in panel.chunks_exact_mut(mr).enumerate() {
                let start = r0 + (p0 + k) * a.col_stride;
                out[..rows].copy_from_slice(&a.data[start..start + rows]);
            }
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

/// Pack rows `p0..p0 + kc` and columns `j0..j0 + nc` of B into `nr`-column panels: panel `q`
/// holds, for each `k`, the `nr` values of columns `j0 + q·nr ..`, zero past the last column.
#[inline(always)]
pub(super) fn pack_b<T: GemmRhs>(
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
                for (o, &v) in out[..cols].iter_mut().zip(&b.data[start..start + cols]) {
                    *o = v.widen();
                }
                out[cols..].fill(0.0);
            }
        } else {
            // B seen transposed.
            if b.row_stride == 1 {
                let start = c0 * b.col_stride + p0;
                transpose_rows(&b.data[start..], b.col_stride, cols, kc, panel, nr);
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
/// Source rows are read eight at a time, side by side, so every read is a sequential stream and
/// every write a contiguous run of eight; one row at a time would write with a stride of `width`.
#[inline(always)]
fn transpose_rows<T: GemmRhs>(
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
        for (k, out) in dst.chunks_exact_mut(width).enumerate() {
            let out = &mut out[t0..t0 + GROUP];
            for u in 0..GROUP {
                out[u] = lanes[u][k].widen();
            }
        }
        t0 += GROUP;
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
        pack_a(&a, 0, 3, 0, 2, 2, &mut dst);
        assert_eq!(dst, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
        // The same matrix as B (3×2) transposed to 2×3, columns in panels of 2.
        let mut dst = [f32::NAN; 8];
        pack_b(&a.t(), 0, 2, 0, 3, 2, &mut dst);
        assert_eq!(dst, [1.0, 3.0, 2.0, 4.0, 5.0, 0.0, 6.0, 0.0]);
        let mut dst = [f32::NAN; 4];
        pack_b(&a, 1, 2, 0, 2, 2, &mut dst);
        assert_eq!(dst, [3.0, 4.0, 5.0, 6.0]);
    }
}
