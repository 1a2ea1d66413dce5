//! Row-major strided products as cuBLAS calls: pure arithmetic, testable without a GPU.
//!
//! mft's matrices are row-major views with two strides; cuBLAS is column-major with one leading
//! dimension per operand and an optional transpose. A row-major `m × n` matrix `C` with row
//! stride `ldc` is, read column-major, the `n × m` matrix `Cᵀ` with leading dimension `ldc`. So
//! `C = A·B` is computed as `Cᵀ = Bᵀ·Aᵀ`: cuBLAS's first operand is our `B` and its second our
//! `A`, each passed with the transpose flag and leading dimension that make cuBLAS read `Bᵀ`
//! (`n × k`) and `Aᵀ` (`k × m`). An operand with unit column stride is read as stored (no
//! transpose, leading dimension = its row stride); one with unit row stride (a transposed
//! view) is read transposed (leading dimension = its column stride); anything else (both
//! strides above one) cannot be expressed and the product is declined.

/// A strided view's shape: `rows × cols`, element `(i, j)` at `i·row_stride + j·col_stride`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct View {
    /// Rows.
    pub rows: usize,
    /// Columns.
    pub cols: usize,
    /// Elements from one row to the next.
    pub row_stride: usize,
    /// Elements from one column to the next.
    pub col_stride: usize,
}

impl View {
    /// One past the largest element index the view reaches (0 when empty), or `None` on
    /// overflow.
    pub fn extent(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return Some(0);
        }
        let last_row = (self.rows - 1).checked_mul(self.row_stride)?;
        let last_col = (self.cols - 1).checked_mul(self.col_stride)?;
        last_row.checked_add(last_col)?.checked_add(1)
    }
}

/// Why a product stays on the CPU.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decline {
    /// A dimension is zero, or `k == 0` / `alpha == 0` (nothing to multiply).
    Empty,
    /// `m·n·k` is below the backend's threshold: the transfers would cost more than the product.
    TooSmall,
    /// An operand has no unit stride, which cuBLAS cannot read.
    Strides,
    /// A dimension or leading dimension does not fit cuBLAS's 32-bit integers.
    TooLarge,
}

/// The arguments of one column-major cuBLAS GEMM, `C₁ = op(X)·op(Y)` with `X` our `B` and `Y`
/// our `A` (see the module documentation).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CublasGemm {
    /// Whether cuBLAS transposes its first operand (our `B`).
    pub trans_x: bool,
    /// Whether cuBLAS transposes its second operand (our `A`).
    pub trans_y: bool,
    /// cuBLAS `m`: our `n`.
    pub m: i32,
    /// cuBLAS `n`: our `m`.
    pub n: i32,
    /// cuBLAS `k`: our `k`.
    pub k: i32,
    /// Leading dimension of the first operand (our `B`).
    pub ld_x: i32,
    /// Leading dimension of the second operand (our `A`).
    pub ld_y: i32,
    /// Leading dimension of `C` (our row stride).
    pub ldc: i32,
    /// Elements of `A` to transfer, from its first element.
    pub a_len: usize,
    /// Elements of `B` to transfer, from its first element.
    pub b_len: usize,
    /// Elements of `C` to transfer, from its first element.
    pub c_len: usize,
}

/// How cuBLAS reads `Xᵀ` for a view `X`: `(transpose, leading dimension)`, or `None`.
fn transposed(x: &View) -> Option<(bool, usize)> {
    let (r, c) = (x.rows, x.cols);
    // As stored, column-major `c × r`: element (j, i) at j + i·row_stride.
    if c == 1 || x.col_stride == 1 {
        let ld = if r <= 1 { c.max(1) } else { x.row_stride };
        if ld >= c.max(1) {
            return Some((false, ld));
        }
    }
    // Transposed: `X` is column-major `r × c` with leading dimension col_stride.
    if r == 1 || x.row_stride == 1 {
        let ld = if c <= 1 { r.max(1) } else { x.col_stride };
        if ld >= r.max(1) {
            return Some((true, ld));
        }
    }
    None
}

/// The cuBLAS call for `C (m × n, row stride ldc) = alpha·A (m × k)·B (k × n) + beta·C`, or why
/// the product should stay on the CPU. `min_work` is the smallest `m·n·k` worth offloading.
pub fn plan(
    a: View,
    b: View,
    c_row_stride: usize,
    alpha: f32,
    min_work: u64,
) -> Result<CublasGemm, Decline> {
    let (m, n, k) = (a.rows, b.cols, a.cols);
    debug_assert_eq!(b.rows, k, "validated by Gemm::run");
    if m == 0 || n == 0 || k == 0 || alpha == 0.0 {
        return Err(Decline::Empty);
    }
    let work = (m as u64).saturating_mul(n as u64).saturating_mul(k as u64);
    if work < min_work {
        return Err(Decline::TooSmall);
    }
    let (trans_x, ld_x) = transposed(&b).ok_or(Decline::Strides)?;
    let (trans_y, ld_y) = transposed(&a).ok_or(Decline::Strides)?;
    let ldc = if m == 1 { n } else { c_row_stride };
    if ldc < n {
        return Err(Decline::Strides);
    }
    let c = View { rows: m, cols: n, row_stride: c_row_stride, col_stride: 1 };
    let int = |v: usize| i32::try_from(v).map_err(|_| Decline::TooLarge);
    Ok(CublasGemm {
        trans_x,
        trans_y,
        m: int(n)?,
        n: int(m)?,
        k: int(k)?,
        ld_x: int(ld_x)?,
        ld_y: int(ld_y)?,
        ldc: int(ldc)?,
        a_len: a.extent().ok_or(Decline::TooLarge)?,
        b_len: b.extent().ok_or(Decline::TooLarge)?,
        c_len: c.extent().ok_or(Decline::TooLarge)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::vec::Vec;

    /// cuBLAS's GEMM as its documentation defines it, column-major:
    /// `C = alpha·op(X)·op(Y) + beta·C`, `op(X)` `m × k`, `op(Y)` `k × n`, element `(i, j)` of
    /// a column-major matrix with leading dimension `ld` at `i + j·ld`.
    #[allow(clippy::too_many_arguments)]
    fn cublas_reference(
        call: &CublasGemm,
        alpha: f32,
        x: &[f32],
        y: &[f32],
        beta: f32,
        c: &mut [f32],
    ) {
        let (m, n, k) = (call.m as usize, call.n as usize, call.k as usize);
        let (ldx, ldy, ldc) = (call.ld_x as usize, call.ld_y as usize, call.ldc as usize);
        let op_x = |i: usize, p: usize| if call.trans_x { x[p + i * ldx] } else { x[i + p * ldx] };
        let op_y = |p: usize, j: usize| if call.trans_y { y[j + p * ldy] } else { y[p + j * ldy] };
        for j in 0..n {
            for i in 0..m {
                let sum: f64 = (0..k).map(|p| op_x(i, p) as f64 * op_y(p, j) as f64).sum();
                let out = &mut c[i + j * ldc];
                *out =
                    if beta == 0.0 { alpha * sum as f32 } else { alpha * sum as f32 + beta * *out };
            }
        }
    }

    fn values(len: usize, seed: u32) -> Vec<f32> {
        (0..len)
            .map(|i| (((i as u32).wrapping_mul(2_654_435_761) ^ seed) % 991) as f32 / 495.0 - 1.0)
            .collect()
    }

    /// A `rows × cols` view over fresh data: row-major with `pad` extra elements per row, or
    /// (when `transposed`) the transpose of a row-major `cols × rows` matrix.
    fn view(rows: usize, cols: usize, pad: usize, transposed: bool, seed: u32) -> (View, Vec<f32>) {
        let v = if transposed {
            View { rows, cols, row_stride: 1, col_stride: rows + pad }
        } else {
            View { rows, cols, row_stride: cols + pad, col_stride: 1 }
        };
        (v, values(v.extent().unwrap(), seed))
    }

    fn at(v: &View, data: &[f32], i: usize, j: usize) -> f32 {
        data[i * v.row_stride + j * v.col_stride]
    }

    #[test]
    fn planned_calls_compute_the_row_major_product() {
        let shapes = [(1, 1, 1), (3, 5, 7), (8, 1, 4), (1, 9, 2), (6, 4, 1), (17, 33, 12)];
        let mut checked = 0;
        for (m, n, k) in shapes {
            for (ta, tb, pad_a, pad_b, pad_c) in [
                (false, false, 0, 0, 0),
                (true, false, 2, 0, 3),
                (false, true, 1, 4, 0),
                (true, true, 3, 1, 1),
            ] {
                let (a, ad) = view(m, k, pad_a, ta, 1);
                let (b, bd) = view(k, n, pad_b, tb, 2);
                let ldc = n + pad_c;
                let call = plan(a, b, ldc, 0.75, 0).unwrap();
                assert_eq!(call.a_len, ad.len());
                assert_eq!(call.b_len, bd.len());
                let c0 = values((m - 1) * ldc + n, 3);
                for beta in [0.0, 1.5] {
                    let mut c = c0.clone();
                    cublas_reference(&call, 0.75, &bd, &ad, beta, &mut c);
                    for i in 0..m {
                        for j in 0..n {
                            let dot: f64 = (0..k)
                                .map(|p| at(&a, &ad, i, p) as f64 * at(&b, &bd, p, j) as f64)
                                .sum();
                            let want = 0.75 * dot + beta as f64 * c0[i * ldc + j] as f64;
                            let got = c[i * ldc + j] as f64;
                            assert!(
                                (got - want).abs() < 1e-4,
                                "{m}×{n}×{k} ta={ta} tb={tb} beta={beta} ({i},{j}): {got} vs {want}"
                            );
                        }
                        for j in n..ldc.min(c.len() - i * ldc) {
                            assert_eq!(c[i * ldc + j], c0[i * ldc + j], "padding of row {i}");
                        }
                    }
                    checked += 1;
                }
            }
        }
        assert_eq!(checked, shapes.len() * 8);
    }

    #[test]
    fn layouts_cublas_cannot_read_are_declined() {
        let a = View { rows: 4, cols: 4, row_stride: 8, col_stride: 2 };
        let b = View { rows: 4, cols: 4, row_stride: 4, col_stride: 1 };
        assert_eq!(plan(a, b, 4, 1.0, 0), Err(Decline::Strides));
        assert_eq!(plan(b, a, 4, 1.0, 0), Err(Decline::Strides));
        // Rows of C overlapping (row stride below the column count).
        assert_eq!(plan(b, b, 3, 1.0, 0), Err(Decline::Strides));
        // A row stride below the row length cannot be a leading dimension.
        let short = View { rows: 4, cols: 4, row_stride: 2, col_stride: 1 };
        assert_eq!(plan(short, b, 4, 1.0, 0), Err(Decline::Strides));
    }

    #[test]
    fn small_empty_and_huge_products_are_declined() {
        let v = |r, c| View { rows: r, cols: c, row_stride: c, col_stride: 1 };
        assert_eq!(plan(v(8, 8), v(8, 8), 8, 1.0, 513), Err(Decline::TooSmall));
        assert!(plan(v(8, 8), v(8, 8), 8, 1.0, 512).is_ok());
        assert_eq!(plan(v(0, 8), v(8, 8), 8, 1.0, 0), Err(Decline::Empty));
        assert_eq!(plan(v(8, 0), v(0, 8), 8, 1.0, 0), Err(Decline::Empty));
        assert_eq!(plan(v(8, 8), v(8, 8), 8, 0.0, 0), Err(Decline::Empty));
        let wide = 1usize << 31;
        assert_eq!(plan(v(2, wide), v(wide, 2), 2, 1.0, 0), Err(Decline::TooLarge));
    }
}
