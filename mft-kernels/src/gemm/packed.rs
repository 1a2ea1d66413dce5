//! Products of operands packed once and reused, for crate-internal callers (the attention) whose
//! operands outlive one product: `K` and `V` of a head are packed once for all its query tiles,
//! and elementwise passes write their results straight into the panel layout the next product
//! reads, instead of [`super::Gemm::run`] packing both operands again on every call.
//!
//! Also here: products whose A is read where it lies, unpacked, with any row and depth strides
//! ([`run_strided_a`], for the fused loss, whose thin products would spend a quarter of their
//! time packing the LM head): the ISAs with a strided-A micro-kernel (AVX-512 and AVX2 broadcast
//! A's values, NEON loads them lane by lane, scalar) read it directly; SVE packs A first.
//!
//! Layouts are the micro-kernel's: a packed A (`m × k`) is `⌈m/mr⌉` panels, panel `q` holding,
//! for each `p < k`, the `mr` values `A[q·mr + i, p]` (k-major, zero past row `m`); a packed B
//! (`k × n`) is `⌈n/nr⌉` panels, panel `q` holding for each `p` the `nr` values `B[p, q·nr + j]`.
//! Panels lie [`Packed::stride`] floats apart, a multiple of 16 (64 bytes) at least `k·width`,
//! so a buffer that starts on a 64-byte boundary has every panel aligned as the micro-kernels
//! require; a panel may be longer than one product's depth (a packed head of `seq` keys read by
//! blocks of them: [`Packed::skip`] starts the panels `p` steps of depth later).

use super::driver::Left;
use super::pack::{pack_a, pack_b};
use super::prefetch::Lookahead;
use super::{Gemm, Mat, MatMut, round_up};

/// Floats between panels of depth `k` and width `width`: `k·width` rounded up to 16 floats.
pub(crate) fn panel_stride(k: usize, width: usize) -> usize {
    round_up(k * width, 16)
}

/// Floats a packed operand of `count` rows (A) or columns (B) takes in panels of `width`,
/// `stride` apart.
pub(crate) fn packed_len(count: usize, width: usize, stride: usize) -> usize {
    count.div_ceil(width) * stride
}

/// The part of `buf` from its first 64-byte boundary (at most 15 floats skipped).
pub(crate) fn align64(buf: &mut [f32]) -> &mut [f32] {
    let skip = buf.as_ptr().align_offset(64).min(15.min(buf.len()));
    &mut buf[skip..]
}

/// Splits `len` floats starting on a 64-byte boundary off the front of `buf` (which holds
/// `len + 16`), returning them and the rest.
pub(crate) fn take_aligned(buf: &mut [f32], len: usize) -> (&mut [f32], &mut [f32]) {
    let (region, rest) = buf.split_at_mut(len + 16);
    (&mut align64(region)[..len], rest)
}

/// Whether `len` floats hold `count` rows or columns in panels of `width`, `stride` apart, of
/// depth `k`.
fn fits(len: usize, count: usize, width: usize, stride: usize, k: usize) -> bool {
    let panels = count.div_ceil(width);
    panels == 0 || len >= (panels - 1) * stride + k * width
}

/// A packed operand: panels `stride` floats apart in `data`.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packed<'a> {
    /// The panels; the first starts at `data[0]`.
    pub data: &'a [f32],
    /// Floats from the start of one panel to the next (a multiple of 16).
    pub stride: usize,
}

impl<'a> Packed<'a> {
    /// Panels `stride` apart in `data`.
    pub(crate) fn new(data: &'a [f32], stride: usize) -> Self {
        Packed { data, stride }
    }

    /// The same panels from depth step `p` on (each panel starts `p·width` floats later).
    pub(crate) fn skip(self, p: usize, width: usize) -> Self {
        Packed { data: &self.data[p * width..], stride: self.stride }
    }

    /// The panels from panel `q` on.
    pub(crate) fn panels_from(self, q: usize) -> Self {
        Packed { data: &self.data[q * self.stride..], stride: self.stride }
    }

    /// Asserts `count` rows or columns of depth `k` in panels of `width` are readable and every
    /// panel is 64-byte aligned.
    #[track_caller]
    fn check(&self, what: &str, count: usize, width: usize, k: usize) {
        let panels = count.div_ceil(width);
        assert!(
            self.stride >= k * width && self.stride.is_multiple_of(16),
            "gemm packed: {what} panel stride {} is not a multiple of 16 of at least {k}·{width}",
            self.stride
        );
        assert!(
            fits(self.data.len(), count, width, self.stride, k),
            "gemm packed: {what} holds {} floats, {panels} panels of {k}·{width} need more",
            self.data.len()
        );
        assert!(
            self.data.as_ptr().align_offset(64) == 0,
            "gemm packed: {what} panels do not start on a 64-byte boundary"
        );
    }
}

impl Gemm {
    /// Rows of the micro-kernel's tile (the width of A panels).
    pub(crate) fn mr(&self) -> usize {
        self.kernel.mr
    }

    /// Columns of the micro-kernel's tile (the width of B panels).
    pub(crate) fn nr(&self) -> usize {
        self.kernel.nr
    }
}

/// Packs all of `a` (`m × k`) into `mr`-row panels `stride` apart in `dst` (zero past row `m`),
/// as [`run_packed`] reads them. Compiled for the caller's ISA when inlined into a
/// [`crate::vectorize::vectorized!`] body.
///
/// # Panics
/// If `stride < k·mr` or `dst` cannot hold the panels (the last needs only `k·mr` floats).
#[inline(always)]
pub(crate) fn pack_a_full(gemm: &Gemm, a: Mat<'_, f32>, dst: &mut [f32], stride: usize) {
    let (m, k, mr) = (a.rows, a.cols, gemm.kernel.mr);
    assert!(stride >= k * mr && fits(dst.len(), m, mr, stride, k), "gemm: pack_a_full");
    for q in 0..m.div_ceil(mr) {
        pack_a(gemm.isa, &a, q * mr, mr.min(m - q * mr), 0, k, mr, &mut dst[q * stride..]);
    }
}

/// Packs all of `b` (`k × n`) into `nr`-column panels `stride` apart in `dst` (zero past column
/// `n`), as [`run_packed`] reads them.
///
/// # Panics
/// If `stride < k·nr` or `dst` cannot hold the panels (the last needs only `k·nr` floats).
#[inline(always)]
pub(crate) fn pack_b_full(gemm: &Gemm, b: Mat<'_, f32>, dst: &mut [f32], stride: usize) {
    let (k, n, nr) = (b.rows, b.cols, gemm.kernel.nr);
    assert!(stride >= k * nr && fits(dst.len(), n, nr, stride, k), "gemm: pack_b_full");
    for q in 0..n.div_ceil(nr) {
        pack_b(gemm.isa, &b, 0, k, q * nr, nr.min(n - q * nr), nr, &mut dst[q * stride..]);
    }
}

/// `C = alpha·A·B + beta·C` for packed `A` (`C.rows × k`) and `B` (`k × C.cols`), on the
/// calling thread. With `beta == 0`, C's old contents are ignored.
///
/// # Panics
/// If a packed operand is too short for its panels, a panel stride is not a multiple of 16 at
/// least `k` steps long, the panels are not 64-byte aligned, or C's view reaches past its slice.
#[allow(clippy::too_many_arguments)] // the BLAS signature with packed operands
pub(crate) fn run_packed(
    gemm: &Gemm,
    alpha: f32,
    a: Packed<'_>,
    b: Packed<'_>,
    k: usize,
    beta: f32,
    c: MatMut<'_>,
) {
    run_packed_ahead(gemm, alpha, a, b, k, beta, c, None);
}

/// [`run_packed`] that also prefetches `next` (memory the caller touches next: the operand it
/// packs or multiplies next) into L2, spread over the product's tiles, so that the caller does
/// not then wait on memory.
#[allow(clippy::too_many_arguments)] // the BLAS signature with packed operands
pub(crate) fn run_packed_ahead(
    gemm: &Gemm,
    alpha: f32,
    a: Packed<'_>,
    b: Packed<'_>,
    k: usize,
    beta: f32,
    mut c: MatMut<'_>,
    next: Option<Mat<'_, f32>>,
) {
    let uk = &gemm.kernel;
    let (m, n, ldc) = (c.rows, c.cols, c.row_stride);
    a.check("A", m, uk.mr, k);
    b.check("B", n, uk.nr, k);
    if !c_needs_product(&mut c, k, alpha, beta) {
        return;
    }
    let ahead = Lookahead::of_whole(next);
    // SAFETY: C holds `m` rows of `n` floats, `ldc` apart (checked above) and is borrowed
    // mutably; the panels hold `k` steps each, 64-byte aligned (checked above).
    unsafe {
        super::driver::macro_kernel(
            uk,
            alpha,
            beta,
            k,
            m,
            n,
            Left::Packed { panels: a.data, stride: a.stride },
            b.data,
            b.stride,
            c.data.as_mut_ptr(),
            ldc,
            &ahead,
        )
    };
}

/// Checks that C's view holds its rows, and settles the products that multiply nothing (an
/// empty C; `k = 0` or `alpha = 0`: C is only scaled by `beta`). Returns whether the product
/// still has to run.
///
/// # Panics
/// If C's view reaches past its slice.
fn c_needs_product(c: &mut MatMut<'_>, k: usize, alpha: f32, beta: f32) -> bool {
    let (m, n, ldc) = (c.rows, c.cols, c.row_stride);
    assert!(
        m == 0 || n == 0 || (ldc >= n && c.data.len() >= (m - 1) * ldc + n),
        "gemm packed: C is {m}×{n} with row stride {ldc} in {} floats",
        c.data.len()
    );
    if m == 0 || n == 0 {
        return false;
    }
    if k == 0 || alpha == 0.0 {
        super::driver::scale_rows(c.data, m, n, ldc, beta);
        return false;
    }
    true
}

/// Floats of A packing [`run_strided_a`] needs for a `m × k` A (0 where the micro-kernel
/// reads such an A in place).
pub(crate) fn strided_a_pack_len(gemm: &Gemm, m: usize, k: usize) -> usize {
    match gemm.kernel.strided_a {
        Some(_) => 0,
        None => packed_len(m, gemm.kernel.mr, panel_stride(k, gemm.kernel.mr)),
    }
}

/// `C = alpha·A·B + beta·C` for a packed `B` (`k × C.cols`) and an `A` (`C.rows × k`, any
/// strides) read where it lies, on the calling thread; also prefetches `next` (memory the
/// caller touches next) into L2, spread over the tiles. Where the micro-kernel reads A in place
/// ([`super::StridedAKernelFn`]) nothing is packed; elsewhere A is packed into `a_pack`
/// ([`strided_a_pack_len`] floats, starting on a 64-byte boundary) first.
///
/// # Panics
/// If A does not match C or reaches past its slice, `a_pack` is too short or misaligned, B is
/// too short for its panels, or C's view reaches past its slice.
#[allow(clippy::too_many_arguments)] // the BLAS signature with a packed B and A's scratch
pub(crate) fn run_strided_a(
    gemm: &Gemm,
    alpha: f32,
    a: Mat<'_, f32>,
    b: Packed<'_>,
    beta: f32,
    mut c: MatMut<'_>,
    a_pack: &mut [f32],
    next: Option<Mat<'_, f32>>,
) {
    let uk = &gemm.kernel;
    let (m, n, k, ldc) = (c.rows, c.cols, a.cols, c.row_stride);
    assert!(a.rows == m, "gemm packed: A in place has {} rows, C has {m}", a.rows);
    let Some(kernel) = uk.strided_a else {
        let stride = panel_stride(k, uk.mr);
        pack_a_full(gemm, a, a_pack, stride);
        run_packed_ahead(gemm, alpha, Packed::new(a_pack, stride), b, k, beta, c, next);
        return;
    };
    b.check("B", n, uk.nr, k);
    if !c_needs_product(&mut c, k, alpha, beta) {
        return;
    }
    assert!(
        (m - 1) * a.row_stride + (k - 1) * a.col_stride < a.data.len(),
        "gemm packed: A in place reaches past its {} floats",
        a.data.len()
    );
    let ahead = Lookahead::of_whole(next);
    let left = Left::Strided { data: a.data, row: a.row_stride, step: a.col_stride, kernel };
    // SAFETY: C holds `m` rows of `n` floats, `ldc` apart (checked above) and is borrowed
    // mutably; A holds its `m` rows of `k` steps (checked above); B's panels hold `k` steps,
    // 64-byte aligned (checked above).
    unsafe {
        super::driver::macro_kernel(
            uk,
            alpha,
            beta,
            k,
            m,
            n,
            left,
            b.data,
            b.stride,
            c.data.as_mut_ptr(),
            ldc,
            &ahead,
        )
    };
}

/// `C = alpha·A·B` for packed `A` (`m × k`) and `B` (`k × n`), written as a packed B operand of
/// depth `m` (for a product that contracts over C's rows): panel `q` (columns `q·nr ..`) at
/// `dst[q·dst_stride ..]`, row `i` of it at `i·nr`. Whole tiles are written: rows past `m` (up
/// to a multiple of `mr`) hold zeros (the product of A's zero padding, or zeros written by a
/// kernel that skips those rows), and columns past `n` (up to a multiple of `nr`) the product of
/// B's padding.
///
/// # Panics
/// As [`run_packed`], and if `dst_stride < round_up(m, mr)·nr` or `dst` is too short.
#[allow(clippy::too_many_arguments)] // the BLAS signature with packed operands
pub(crate) fn run_packed_to_panels(
    gemm: &Gemm,
    alpha: f32,
    a: Packed<'_>,
    b: Packed<'_>,
    m: usize,
    n: usize,
    k: usize,
    dst: &mut [f32],
    dst_stride: usize,
) {
    let uk = &gemm.kernel;
    let (mr, nr) = (uk.mr, uk.nr);
    a.check("A", m, mr, k);
    b.check("B", n, nr, k);
    let rows = round_up(m, mr);
    let panels = n.div_ceil(nr);
    assert!(
        dst_stride >= rows * nr
            && (panels == 0 || dst.len() >= (panels - 1) * dst_stride + rows * nr),
        "gemm packed: {m}×{n} panels of stride {dst_stride} do not fit in {} floats",
        dst.len()
    );
    for q in 0..panels {
        let b_panel = b.data[q * b.stride..].as_ptr();
        for ir in (0..m).step_by(mr) {
            let a_panel = a.data[(ir / mr) * a.stride..].as_ptr();
            let tile = &mut dst[q * dst_stride + ir * nr..][..mr * nr];
            let out = tile.as_mut_ptr();
            let rows = mr.min(m - ir);
            if let Some(short) = uk.short.filter(|_| rows < mr) {
                // SAFETY: as below, for the tile's first `rows` rows.
                unsafe { short(rows, k, a_panel, b_panel, out, nr, alpha, 0.0) };
                // The padding rows' product, as the whole tile would have written it.
                tile[rows * nr..].fill(0.0);
                continue;
            }
            // SAFETY: the panels hold `k` steps (checked above); `out` is a whole `mr × nr`
            // tile with rows `nr` apart inside `dst`.
            unsafe { (uk.run)(k, a_panel, b_panel, out, nr, alpha, 0.0) };
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::isa::Isa;
    use std::vec;
    use std::vec::Vec;

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 997) as f32 / 499.0 - 1.0)
            .collect()
    }

    /// A 64-byte aligned buffer of `len` floats (and its backing vector).
    fn aligned_buf(len: usize) -> (Vec<f32>, usize) {
        let v = vec![f32::NAN; len + 16];
        let skip = v.as_ptr().align_offset(64);
        (v, skip)
    }

    fn reference(a: &Mat<'_, f32>, b: &Mat<'_, f32>, i: usize, j: usize) -> f64 {
        (0..a.cols).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum()
    }

    #[test]
    fn packed_products_match_a_plain_product() {
        for isa in Isa::supported() {
            let gemm = Gemm::for_isa(isa).unwrap();
            let (mr, nr) = gemm.tile();
            for (m, n, k) in
                [(1, 1, 1), (5, 7, 3), (13, 33, 64), (64, 70, 129), (2 * mr + 1, 3 * nr - 1, 17)]
            {
                let ad = values(m * k, 1);
                let bd = values(n * k, 2);
                // A row-major, B seen transposed (the attention's Q·Kᵀ).
                let a = Mat::row_major(&ad, m, k, k);
                let b = Mat::row_major(&bd, n, k, k).t();
                let (sa, sb) = (panel_stride(k, mr), panel_stride(k, nr));
                let (mut abuf, oa) = aligned_buf(packed_len(m, mr, sa));
                let (mut bbuf, ob) = aligned_buf(packed_len(n, nr, sb));
                pack_a_full(&gemm, a, &mut abuf[oa..], sa);
                pack_b_full(&gemm, b, &mut bbuf[ob..], sb);
                let (pa, pb) = (Packed::new(&abuf[oa..], sa), Packed::new(&bbuf[ob..], sb));
                let ldc = n + 3;
                let c0 = values(m * ldc, 3);
                let mut c = c0.clone();
                run_packed(&gemm, 0.5, pa, pb, k, 2.0, MatMut::row_major(&mut c, m, n, ldc));
                let rows = round_up(m, mr);
                let ds = panel_stride(rows, nr);
                let mut panels = vec![0.0; packed_len(n, nr, ds)];
                run_packed_to_panels(&gemm, 0.5, pa, pb, m, n, k, &mut panels, ds);
                for i in 0..m {
                    for j in 0..n {
                        let want = 0.5 * reference(&a, &b, i, j);
                        let got = c[i * ldc + j] as f64 - 2.0 * c0[i * ldc + j] as f64;
                        let tol = 1e-5 * (k as f64).sqrt() + 1e-6;
                        assert!(
                            (got - want).abs() < tol,
                            "{isa} {m}×{n}×{k} ({i},{j}): {got} vs {want}"
                        );
                        let got = panels[(j / nr) * ds + i * nr + j % nr] as f64;
                        assert!((got - want).abs() < tol, "{isa} panels {m}×{n}×{k} ({i},{j})");
                    }
                    for j in n..ldc {
                        assert_eq!(c[i * ldc + j], c0[i * ldc + j], "{isa}: column {j} untouched");
                    }
                }
                // A depth range of longer panels: columns 2.. of A times rows 2.. of B.
                if k > 2 {
                    let mut c = vec![0.0; m * n];
                    let (pa2, pb2) = (pa.skip(2, mr), pb.skip(2, nr));
                    if (2 * mr).is_multiple_of(16) && (2 * nr).is_multiple_of(16) {
                        run_packed(
                            &gemm,
                            1.0,
                            pa2,
                            pb2,
                            k - 2,
                            0.0,
                            MatMut::row_major(&mut c, m, n, n),
                        );
                        for i in 0..m {
                            for j in 0..n {
                                let want: f64 =
                                    (2..k).map(|p| a.at(i, p) as f64 * b.at(p, j) as f64).sum();
                                assert!((c[i * n + j] as f64 - want).abs() < 1e-4, "{isa} skip");
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn products_with_a_in_place_match_a_plain_product() {
        for isa in Isa::supported() {
            let with_kernel = Gemm::for_isa(isa).unwrap();
            // The same ISA without its in-place kernel: A is packed first.
            let mut packing = with_kernel;
            packing.kernel.strided_a = None;
            for gemm in [with_kernel, packing] {
                let (mr, nr) = gemm.tile();
                // Every row count up to two tiles and one more (each short-tile variant), a
                // partial column tile, and a product of whole tiles.
                let shapes = (1..=2 * mr + 1).map(|m| (m, 3 * nr - 1, 17));
                for (m, n, k) in shapes.chain([(1, 1, 1), (5, 7, 3), (24, 64, 40)]) {
                    let bd = values(k * n, 2);
                    let b = Mat::row_major(&bd, k, n, n);
                    let sb = panel_stride(k, nr);
                    let (mut bbuf, ob) = aligned_buf(packed_len(n, nr, sb));
                    pack_b_full(&gemm, b, &mut bbuf[ob..], sb);
                    let pb = Packed::new(&bbuf[ob..], sb);
                    // A row-major with padded rows (the loss's head chunk), and A the transpose of
                    // a row-major matrix (its transpose); each slice ends at A's last element.
                    let row_major = values((m - 1) * (k + 3) + k, 5);
                    let transposed = values((k - 1) * (m + 2) + m, 6);
                    let a_views = [
                        Mat::row_major(&row_major, m, k, k + 3),
                        Mat::row_major(&transposed, k, m, m + 2).t(),
                    ];
                    for a in a_views {
                        let ldc = n + 3;
                        let c0 = values(m * ldc, 3);
                        for (alpha, beta) in [(0.5, 2.0), (1.0, 0.0)] {
                            let mut c = c0.clone();
                            if beta == 0.0 {
                                c.iter_mut().for_each(|x| *x = f32::NAN);
                            }
                            let (mut a_buf, oa) = aligned_buf(strided_a_pack_len(&gemm, m, k));
                            let a_pack = &mut a_buf[oa..];
                            let out = MatMut::row_major(&mut c, m, n, ldc);
                            run_strided_a(&gemm, alpha, a, pb, beta, out, a_pack, Some(b));
                            let what = std::format!(
                                "{isa} (in place: {}) {m}×{n}×{k} strides {:?}",
                                gemm.kernel.strided_a.is_some(),
                                (a.row_stride, a.col_stride)
                            );
                            for i in 0..m {
                                for j in 0..n {
                                    let old = if beta == 0.0 { 0.0 } else { c0[i * ldc + j] };
                                    let want = alpha as f64 * reference(&a, &b, i, j)
                                        + beta as f64 * old as f64;
                                    let got = c[i * ldc + j] as f64;
                                    let tol = 1e-5 * (k as f64).sqrt() + 1e-5;
                                    assert!(
                                        (got - want).abs() < tol,
                                        "{what} ({i},{j}): {got} vs {want}"
                                    );
                                }
                                for j in n..ldc {
                                    let (got, old) = (c[i * ldc + j], c0[i * ldc + j]);
                                    let untouched =
                                        if beta == 0.0 { got.is_nan() } else { got == old };
                                    assert!(untouched, "{what}: column {j} past C's written");
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    #[test]
    #[should_panic(expected = "64-byte boundary")]
    fn misaligned_panels_panic() {
        let gemm = Gemm::for_isa(Isa::Scalar).unwrap();
        let (buf, o) = aligned_buf(64);
        let pa = Packed::new(&buf[o + 1..], 16);
        let mut c = [0.0; 16];
        run_packed(&gemm, 1.0, pa, pa, 4, 0.0, MatMut::row_major(&mut c, 4, 4, 4));
    }
}
