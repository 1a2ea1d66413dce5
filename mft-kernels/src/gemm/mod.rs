//! General matrix multiply, `C = alpha·A·B + beta·C`, for f32 `A` and `C` and an f32, f16 or bf16
//! `B` (frozen weights kept in half the memory, widened while packing).
//!
//! Operands are strided views ([`Mat`]); a transposed operand is the same memory seen through
//! [`Mat::t`], so the layouts training needs (A·B, A·Bᵀ, Aᵀ·B) are all one call. The algorithm is
//! the classic packed, cache-blocked one: A is packed in `mc × kc` blocks, B in `kc × nc` blocks,
//! both into panels laid out for a register-tiled micro-kernel written per ISA. Packing buffers come
//! from the caller ([`Gemm::scratch_len`] says how much); nothing is allocated.
//!
//! Work is split across threads through [`Parallel`]: each thread takes a range of columns of B
//! and C, or, for two threads on a product at least twice as deep as it is wide, half of the depth
//! (the second half's product is added into C afterwards, from scratch).
//!
//! A [`Gemm`] may carry an offload backend ([`GemmOffload`], see [`Gemm::with_offload`]): each
//! product is offered to it first, and runs on the CPU only when it declines.
//!
//! ```
//! use mft_kernels::{Gemm, Mat, MatMut, Sequential};
//!
//! let (m, k, n) = (4, 3, 2);
//! let x = vec![1.0f32; m * k];                 // activations, row-major m×k
//! let w = vec![mft_kernels::bf16::ONE; n * k]; // frozen weight stored [out, in] in bf16
//! let mut y = vec![0.0f32; m * n];
//! let g = Gemm::best();                        // AVX-512, AVX2, NEON, SVE or scalar, probed once
//! let mut scratch = vec![0.0f32; g.scratch_len(m, n, k, 1)];
//! // y = x · wᵀ: the transpose is a view, not a copy.
//! g.run(1.0, Mat::row_major(&x, m, k, k), Mat::row_major(&w, n, k, k).t(), 0.0,
//!       MatMut::row_major(&mut y, m, n, n), &mut scratch, &Sequential);
//! assert_eq!(y, vec![3.0; m * n]);
//! ```

mod driver;
mod offload;
mod pack;
pub(crate) mod packed;
mod prefetch;
mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
mod sve;

pub use offload::{GemmOffload, OffloadRhs, RhsData};
pub use pack::GemmRhs;

use crate::isa::Isa;
use crate::parallel::Parallel;

/// A read-only matrix: `rows × cols`, element `(i, j)` at `data[i·row_stride + j·col_stride]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a, T> {
    data: &'a [T],
    rows: usize,
    cols: usize,
    row_stride: usize,
    col_stride: usize,
}

impl<'a, T> Mat<'a, T> {
    /// A row-major matrix whose rows start `row_stride` elements apart (`row_stride ≥ cols` for
    /// a plain matrix; a sub-matrix of a wider one has the wider one's stride).
    pub fn row_major(data: &'a [T], rows: usize, cols: usize, row_stride: usize) -> Self {
        Mat { data, rows, cols, row_stride, col_stride: 1 }
    }

    /// The transpose: the same elements, rows and columns swapped.
    pub fn t(self) -> Self {
        Mat {
            data: self.data,
            rows: self.cols,
            cols: self.rows,
            row_stride: self.col_stride,
            col_stride: self.row_stride,
        }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The slice the view reads.
    pub fn data(&self) -> &'a [T] {
        self.data
    }

    /// Elements from one row to the next.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// Elements from one column to the next.
    pub fn col_stride(&self) -> usize {
        self.col_stride
    }

    /// One past the largest index the view reaches (0 when empty), or `None` on overflow.
    fn extent(&self) -> Option<usize> {
        if self.rows == 0 || self.cols == 0 {
            return Some(0);
        }
        let last_row = (self.rows - 1).checked_mul(self.row_stride)?;
        let last_col = (self.cols - 1).checked_mul(self.col_stride)?;
        last_row.checked_add(last_col)?.checked_add(1)
    }

    /// The element at `(i, j)`; the caller keeps `i < rows`, `j < cols`.
    #[inline(always)]
    fn at(&self, i: usize, j: usize) -> T
    where
        T: Copy,
    {
        self.data[i * self.row_stride + j * self.col_stride]
    }
}

/// The output matrix: row-major, `rows × cols`, rows `row_stride` elements apart.
#[derive(Debug)]
pub struct MatMut<'a> {
    data: &'a mut [f32],
    rows: usize,
    cols: usize,
    row_stride: usize,
}

impl<'a> MatMut<'a> {
    /// A row-major output matrix (`row_stride ≥ cols`, so rows never overlap).
    pub fn row_major(data: &'a mut [f32], rows: usize, cols: usize, row_stride: usize) -> Self {
        MatMut { data, rows, cols, row_stride }
    }

    /// Number of rows.
    pub fn rows(&self) -> usize {
        self.rows
    }

    /// Number of columns.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// Elements from one row to the next.
    pub fn row_stride(&self) -> usize {
        self.row_stride
    }

    /// The slice the view writes (elements between rows, past the columns, belong to others).
    pub fn data_mut(&mut self) -> &mut [f32] {
        self.data
    }
}

/// Computes a full `mr × nr` tile: `C[i·ldc + j] = alpha·Σₖ a[k·mr + i]·b[k·nr + j] + beta·C[i·ldc + j]`
/// for `k < kc`, where `a` and `b` are packed panels. With `beta == 0`, C is written without
/// being read (it may hold NaN or garbage).
///
/// # Safety
/// `a` holds `kc·mr` floats, `b` holds `kc·nr` floats, both 64-byte aligned; `c` is valid for
/// reads and writes of the whole tile; the CPU supports the kernel's ISA.
pub(crate) type MicroKernelFn = unsafe fn(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
);

/// Computes the first `rows` rows (`rows < mr`) of a tile, all `nr` columns, and writes only
/// them: [`MicroKernelFn`] for the last row panel of a product whose row count is not a multiple
/// of `mr`, without spending FMAs on the panel's zero padding. The A panel keeps its layout (`mr`
/// floats per depth step).
///
/// # Safety
/// As [`MicroKernelFn`], with `c` valid for reads and writes of the first `rows` rows only.
#[allow(clippy::too_many_arguments)] // the micro-kernel signature and the row count
pub(crate) type ShortKernelFn = unsafe fn(
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    alpha: f32,
    beta: f32,
);

/// Computes the first `rows` (`1 ≤ rows ≤ mr`) rows of a tile, all `nr` columns, with A read in place
/// instead of from a packed panel: row `i` at depth step `p` is `a[i·a_row + p·a_step]` (a
/// packed panel is `a_row = 1`, `a_step = mr`). Reads only those `rows` rows, so A needs no
/// padding. B is a packed panel as for [`MicroKernelFn`].
///
/// # Safety
/// `a` is valid for reads at every `i·a_row + p·a_step` with `i < rows`, `p < kc`; `b` holds
/// `kc·nr` floats, 64-byte aligned; `c` is valid for reads and writes of the first `rows` rows;
/// the CPU supports the kernel's ISA.
#[allow(clippy::too_many_arguments)] // the micro-kernel signature, the rows and A's strides
pub(crate) type StridedAKernelFn = unsafe fn(
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
);

/// A micro-kernel with its tile and the cache blocking that suits it.
#[derive(Debug, Clone, Copy)]
pub(crate) struct MicroKernel {
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile.
    pub nr: usize,
    /// Depth of one packed block (A panels and B panels share it).
    pub kc: usize,
    /// Rows of A packed at once (a multiple of `mr`; sized for L3, so M = 512 is one block).
    pub mc: usize,
    /// Columns of B packed at once (a multiple of `nr`; sized for L2).
    pub nc: usize,
    /// The tile routine.
    pub run: MicroKernelFn,
    /// The routine for a tile's first rows, where the ISA has one (else edge tiles run `run`
    /// into a buffer).
    pub short: Option<ShortKernelFn>,
    /// The routine for an A read in place, where the ISA has one (else such an A is packed).
    pub strided_a: Option<StridedAKernelFn>,
}

/// The largest tile (`mr·nr`) any kernel uses: edge tiles are computed into a buffer this size.
pub(crate) const MAX_TILE: usize = 2048;

/// The GEMM of one ISA. Only built for an ISA the CPU supports.
#[derive(Debug, Clone, Copy)]
pub struct Gemm {
    isa: Isa,
    kernel: MicroKernel,
    /// The backend asked first ([`Gemm::with_offload`]).
    offload: Option<&'static dyn GemmOffload>,
}

impl Gemm {
    /// The GEMM of `isa`, or `None` if this build or CPU cannot run it.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.is_supported() {
            return None;
        }
        let kernel = match isa {
            Isa::Scalar => scalar::KERNEL,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => avx2::KERNEL,
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => avx512::KERNEL,
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => neon::KERNEL,
            #[cfg(target_arch = "aarch64")]
            // SAFETY: SVE support was checked above.
            Isa::Sve => unsafe { sve::kernel() },
            #[allow(unreachable_patterns)] // ISAs of other architectures are never supported
            _ => return None,
        };
        debug_assert!(kernel.mr * kernel.nr <= MAX_TILE);
        Some(Gemm { isa, kernel, offload: None })
    }

    /// The GEMM of [`Isa::best`].
    pub fn best() -> Self {
        Gemm::for_isa(Isa::best())
            .or_else(|| Gemm::for_isa(Isa::Scalar))
            .expect("the scalar GEMM is always supported")
    }

    /// The ISA of the micro-kernel.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The same GEMM, offering each product to `offload` first (`None`: the CPU only).
    pub fn with_offload(self, offload: Option<&'static dyn GemmOffload>) -> Self {
        Gemm { offload, ..self }
    }

    /// The offload backend, if one is set.
    pub fn offload(&self) -> Option<&'static dyn GemmOffload> {
        self.offload
    }

    /// Offers `C = alpha·A·B + beta·C` to the offload backend alone; returns whether it ran
    /// (`false` without a backend, or when it declines, with C untouched). For callers that
    /// split a product into pieces for the CPU and would rather offload it whole.
    ///
    /// # Panics
    /// On inconsistent operands, as [`Gemm::run`].
    pub fn try_offload<T: GemmRhs>(
        &self,
        alpha: f32,
        a: Mat<'_, f32>,
        b: Mat<'_, T>,
        beta: f32,
        c: &mut MatMut<'_>,
    ) -> bool {
        let Some(offload) = self.offload else {
            return false;
        };
        check_operands(&a, &b, c);
        offload.gemm(alpha, a, T::offload_rhs(b), beta, c)
    }

    /// The register tile, `(mr, nr)`.
    pub fn tile(&self) -> (usize, usize) {
        (self.kernel.mr, self.kernel.nr)
    }

    /// Floats of scratch [`Gemm::run`] needs for `C (m×n) = A (m×k) · B (k×n)` with up to
    /// `threads` threads.
    pub fn scratch_len(&self, m: usize, n: usize, k: usize, threads: usize) -> usize {
        driver::ScratchPlan::new(&self.kernel, m, n, k, threads).len()
    }

    /// `C = alpha·A·B + beta·C`. With `beta == 0`, C's old contents are ignored (even NaN).
    /// With an offload backend ([`Gemm::with_offload`]) the product is offered to it first.
    ///
    /// # Panics
    /// These are programming errors, reported before any memory is touched:
    /// - `A.cols ≠ B.rows`, or C is not `A.rows × B.cols`;
    /// - a view reaches past its slice (rows, columns and strides exceed the data);
    /// - C's row stride is smaller than its column count (rows would overlap);
    /// - `scratch` is shorter than [`Gemm::scratch_len`] for `parallel.threads()`.
    #[allow(clippy::too_many_arguments)] // the BLAS signature: scalars, operands, scratch, threads
    pub fn run<T: GemmRhs>(
        &self,
        alpha: f32,
        a: Mat<'_, f32>,
        b: Mat<'_, T>,
        beta: f32,
        mut c: MatMut<'_>,
        scratch: &mut [f32],
        parallel: &dyn Parallel,
    ) {
        check_operands(&a, &b, &c);
        let (m, n, k) = (a.rows, b.cols, a.cols);
        let threads = parallel.threads().max(1);
        let plan = driver::ScratchPlan::new(&self.kernel, m, n, k, threads);
        let needed = plan.len();
        assert!(
            scratch.len() >= needed,
            "gemm: scratch holds {} floats, needs {needed} for {m}×{n}×{k} on {threads} threads \
             (see Gemm::scratch_len)",
            scratch.len()
        );
        if let Some(offload) = self.offload
            && offload.gemm(alpha, a, T::offload_rhs(b), beta, &mut c)
        {
            return;
        }
        driver::run(self.isa, &self.kernel, alpha, a, b, beta, c, scratch, plan, parallel);
    }
}

/// `C = alpha·A·B + beta·C` with [`Gemm::best`]. See [`Gemm::run`].
#[allow(clippy::too_many_arguments)] // the BLAS signature: scalars, operands, scratch, threads
pub fn gemm<T: GemmRhs>(
    alpha: f32,
    a: Mat<'_, f32>,
    b: Mat<'_, T>,
    beta: f32,
    c: MatMut<'_>,
    scratch: &mut [f32],
    parallel: &dyn Parallel,
) {
    Gemm::best().run(alpha, a, b, beta, c, scratch, parallel)
}

/// Scratch floats [`gemm`] needs; see [`Gemm::scratch_len`].
pub fn gemm_scratch_len(m: usize, n: usize, k: usize, threads: usize) -> usize {
    Gemm::best().scratch_len(m, n, k, threads)
}

fn check_operands<T>(a: &Mat<'_, f32>, b: &Mat<'_, T>, c: &MatMut<'_>) {
    assert!(
        a.cols == b.rows,
        "gemm: inner dimensions differ: A is {}×{}, B is {}×{}",
        a.rows,
        a.cols,
        b.rows,
        b.cols
    );
    assert!(
        c.rows == a.rows && c.cols == b.cols,
        "gemm: C is {}×{} but A·B is {}×{}",
        c.rows,
        c.cols,
        a.rows,
        b.cols
    );
    check_extent("A", a.extent(), a.data.len(), a);
    check_extent("B", b.extent(), b.data.len(), b);
    assert!(
        c.rows <= 1 || c.row_stride >= c.cols,
        "gemm: C's row stride {} is less than its {} columns (rows would overlap)",
        c.row_stride,
        c.cols
    );
    let c_view = Mat {
        data: &c.data[..],
        rows: c.rows,
        cols: c.cols,
        row_stride: c.row_stride,
        col_stride: 1,
    };
    check_extent("C", c_view.extent(), c.data.len(), &c_view);
}

fn check_extent<T>(name: &str, extent: Option<usize>, len: usize, m: &Mat<'_, T>) {
    let fits = extent.is_some_and(|e| e <= len);
    assert!(
        fits,
        "gemm: {name} is {}×{} with strides ({}, {}), which reaches past its slice of {len} elements",
        m.rows, m.cols, m.row_stride, m.col_stride
    );
}

pub(crate) fn round_up(x: usize, to: usize) -> usize {
    x.div_ceil(to) * to
}
