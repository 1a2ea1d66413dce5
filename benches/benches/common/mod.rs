//! Shared by the benchmarks (`gemm`, `kernels`, `attention`, `loss`): the GEMM shapes of GPT-2
//! small, the problems built from them, one runner per implementation (ours and the peers `gemm`,
//! `matrixmultiply`, `faer`), sample statistics, the input generator, and the
//! training-primitive problems (`primitives.rs`). The FMA-peak loop lives in the library
//! (`mft_benches::peak`) so that the phone benchmark `mft-bench` shares it.
//!
//! Each bench target includes this file with `#[path = "common/mod.rs"] mod common;`: it uses the
//! peers, which are dev-dependencies and so out of reach of the `mft-benches` library target.
// Each bench target uses a different part of this module.
#![allow(dead_code)]

pub mod primitives;

use mft_kernels::{Gemm, GemmRhs, Mat, MatMut, Parallel, Sequential};
use mft_std::ThreadPool;
use serde_json::{Value, json};

/// Tokens per batch (M of the forward GEMMs).
pub const TOKENS: usize = 512;

/// The linear layers of GPT-2 small, `(in features K, out features N, name)`.
pub const LAYERS: [(usize, usize, &str); 5] = [
    (768, 2304, "attn.c_attn"),
    (768, 768, "attn.c_proj"),
    (768, 3072, "mlp.c_fc"),
    (3072, 768, "mlp.c_proj"),
    (768, 50257, "lm_head"),
];

/// The vocabulary size: shapes with it are the largest (~40 GFLOP a call).
pub const VOCAB: usize = 50257;

/// Which product of a linear layer `Y = X·W` (X: tokens × K, W: K × N, both row-major).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layout {
    /// Forward, `Y = X·W`: an A·B product, m = tokens, k = K, n = N.
    Forward,
    /// Backward to the input, `dX = dY·Wᵀ`: an A·Bᵀ product, m = tokens, k = N, n = K.
    BackwardData,
    /// Backward to the weight, `dW = Xᵀ·dY`: an Aᵀ·B product, m = K, k = tokens, n = N.
    BackwardWeight,
}

impl Layout {
    /// Every layout, in the order the tables list them.
    pub const ALL: [Layout; 3] = [Layout::Forward, Layout::BackwardData, Layout::BackwardWeight];

    /// The product in the layer's terms (`X·W`, `dY·Wᵀ`, `Xᵀ·dY`).
    pub fn formula(self) -> &'static str {
        match self {
            Layout::Forward => "X·W",
            Layout::BackwardData => "dY·Wᵀ",
            Layout::BackwardWeight => "Xᵀ·dY",
        }
    }

    /// The operand layout (`A·B`, `A·Bᵀ`, `Aᵀ·B`).
    pub fn op(self) -> &'static str {
        match self {
            Layout::Forward => "A·B",
            Layout::BackwardData => "A·Bᵀ",
            Layout::BackwardWeight => "Aᵀ·B",
        }
    }

    /// ASCII tag for benchmark ids (`fwd`, `dx`, `dw`).
    pub fn tag(self) -> &'static str {
        match self {
            Layout::Forward => "fwd",
            Layout::BackwardData => "dx",
            Layout::BackwardWeight => "dw",
        }
    }
}

/// One GEMM: a layer's `(K, N)` and which of its products.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Shape {
    /// The layer's input features.
    pub k_in: usize,
    /// The layer's output features.
    pub n_out: usize,
    /// Which product.
    pub layout: Layout,
}

impl Shape {
    /// Every shape, layer by layer, each layer's three products together; without the
    /// vocabulary-sized (LM head) ones when `with_vocab` is false.
    pub fn all(with_vocab: bool) -> Vec<Shape> {
        LAYERS
            .iter()
            .filter(|&&(_, n, _)| with_vocab || n != VOCAB)
            .flat_map(|&(k_in, n_out, _)| {
                Layout::ALL.into_iter().map(move |layout| Shape { k_in, n_out, layout })
            })
            .collect()
    }

    /// `(m, n, k)` of the product: C is m×n, the inner dimension is k.
    pub fn mnk(&self) -> (usize, usize, usize) {
        match self.layout {
            Layout::Forward => (TOKENS, self.n_out, self.k_in),
            Layout::BackwardData => (TOKENS, self.k_in, self.n_out),
            Layout::BackwardWeight => (self.k_in, self.n_out, TOKENS),
        }
    }

    /// Floating-point operations of one product, `2·m·n·k`.
    pub fn flops(&self) -> f64 {
        let (m, n, k) = self.mnk();
        2.0 * m as f64 * n as f64 * k as f64
    }

    /// The layer, `K→N`.
    pub fn layer(&self) -> String {
        format!("{}→{}", self.k_in, self.n_out)
    }

    /// `m×n×k`.
    pub fn dims(&self) -> String {
        let (m, n, k) = self.mnk();
        format!("{m}×{n}×{k}")
    }

    /// ASCII id for criterion (`fwd_768x2304`).
    pub fn id(&self) -> String {
        format!("{}_{}x{}", self.layout.tag(), self.k_in, self.n_out)
    }

    /// `(row stride, column stride)` of A (m×k) as stored: X or dY row-major, or Xᵀ as a view
    /// of X (tokens × K).
    pub fn a_strides(&self) -> (usize, usize) {
        let (m, _, k) = self.mnk();
        match self.layout {
            Layout::Forward | Layout::BackwardData => (k, 1),
            Layout::BackwardWeight => (1, m),
        }
    }

    /// `(row stride, column stride)` of B (k×n) as stored: W or dY row-major, or Wᵀ as a view
    /// of W (K × N).
    pub fn b_strides(&self) -> (usize, usize) {
        let (_, n, k) = self.mnk();
        match self.layout {
            Layout::Forward | Layout::BackwardWeight => (n, 1),
            Layout::BackwardData => (1, k),
        }
    }
}

/// A shape's operands, filled with reproducible values in [-1, 1), and its output.
pub struct Problem {
    /// The shape.
    pub shape: Shape,
    /// A's storage (m·k floats, laid out per [`Shape::a_strides`]).
    pub a: Vec<f32>,
    /// B's storage (k·n floats, laid out per [`Shape::b_strides`]).
    pub b: Vec<f32>,
    /// C, m×n row-major.
    pub c: Vec<f32>,
}

impl Problem {
    /// Operands for `shape`; C starts as NaN (every implementation runs with beta = 0).
    pub fn new(shape: Shape) -> Self {
        let (m, n, k) = shape.mnk();
        Problem {
            shape,
            a: random_values(m * k, 0x9e37_79b9_7f4a_7c15),
            b: random_values(k * n, 0xd1b5_4a32_d192_ed03),
            c: vec![f32::NAN; m * n],
        }
    }
}

pub use mft_benches::random_values;

/// `max |got − want| / max |want|`: the error relative to the output's scale.
pub fn relative_error(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len());
    let scale = want.iter().fold(0f64, |s, &w| s.max(f64::from(w).abs()));
    let mut worst = 0f64;
    for (&g, &w) in got.iter().zip(want) {
        let d = (f64::from(g) - f64::from(w)).abs();
        // NaN (C's initial contents leaking through) is the worst error of all.
        worst = if d.is_nan() { f64::INFINITY } else { worst.max(d) };
        if worst.is_infinite() {
            break;
        }
    }
    if scale == 0.0 { worst } else { worst / scale }
}

/// Largest [`relative_error`] accepted against a reference: f32 products whose sums differ only
/// in order stay far below it.
pub const TOLERANCE: f64 = 1e-4;

/// A strided view for our GEMM: one of the strides must be 1 (a row-major matrix or the
/// transpose of one).
pub fn ours_view<T>(data: &[T], rows: usize, cols: usize, strides: (usize, usize)) -> Mat<'_, T> {
    match strides {
        (row_stride, 1) => Mat::row_major(data, rows, cols, row_stride),
        (1, col_stride) => Mat::row_major(data, cols, rows, col_stride).t(),
        other => panic!("unsupported strides {other:?}"),
    }
}

/// A GEMM implementation under test.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Impl {
    /// mft-kernels' [`Gemm::best`].
    Ours,
    /// The `gemm` crate.
    Gemm,
    /// `matrixmultiply::sgemm`.
    MatrixMultiply,
    /// `faer::linalg::matmul::matmul`.
    Faer,
}

impl Impl {
    /// Ours first, then the peers.
    pub const ALL: [Impl; 4] = [Impl::Ours, Impl::Gemm, Impl::MatrixMultiply, Impl::Faer];
    /// The peers.
    pub const PEERS: [Impl; 3] = [Impl::Gemm, Impl::MatrixMultiply, Impl::Faer];

    /// The crate's name (`ours` for mft).
    pub fn name(self) -> &'static str {
        match self {
            Impl::Ours => "ours",
            Impl::Gemm => "gemm",
            Impl::MatrixMultiply => "matrixmultiply",
            Impl::Faer => "faer",
        }
    }
}

/// The number of threads `matrixmultiply` uses: it reads `MATMUL_NUM_THREADS` once per process
/// (default: the physical cores, at most 4), so it cannot change between measurements.
/// `None` when the variable is unset or unreadable.
pub fn matrixmultiply_threads() -> Option<usize> {
    std::env::var("MATMUL_NUM_THREADS").ok()?.trim().parse::<usize>().ok().map(|t| t.clamp(1, 4))
}

/// Median, least and greatest of some samples.
#[derive(Debug, Clone, Copy)]
pub struct Stats {
    /// The median.
    pub median: f64,
    /// The least.
    pub min: f64,
    /// The greatest.
    pub max: f64,
}

impl Stats {
    /// The statistics of `samples` (at least one).
    pub fn of(samples: &[f64]) -> Stats {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        assert!(n > 0, "no samples");
        let median =
            if n % 2 == 1 { sorted[n / 2] } else { (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0 };
        Stats { median, min: sorted[0], max: sorted[n - 1] }
    }

    /// As JSON, with the samples.
    pub fn json(&self, samples: &[f64]) -> Value {
        json!({ "median": self.median, "min": self.min, "max": self.max, "samples": samples })
    }

    /// Back from [`Stats::json`]'s output.
    pub fn from_json(value: &Value) -> Option<Stats> {
        Some(Stats {
            median: value.get("median")?.as_f64()?,
            min: value.get("min")?.as_f64()?,
            max: value.get("max")?.as_f64()?,
        })
    }
}

/// Runs every implementation on one thread count: holds our thread pool and GEMM scratch.
pub struct Runner {
    threads: usize,
    gemm: Gemm,
    pool: Option<ThreadPool>,
    scratch: Vec<f32>,
}

impl Runner {
    /// A runner for `threads` threads (1: everything on the calling thread).
    pub fn new(threads: usize) -> Self {
        let threads = threads.max(1);
        let pool = (threads > 1).then(|| ThreadPool::new(threads).expect("thread pool"));
        Runner { threads, gemm: Gemm::best(), pool, scratch: Vec::new() }
    }

    /// The thread count.
    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The `Parallel` our kernels run on: the pool, or the calling thread.
    pub fn parallel(&self) -> &dyn Parallel {
        match &self.pool {
            Some(pool) => pool,
            None => &Sequential,
        }
    }

    /// Our GEMM.
    pub fn gemm(&self) -> &Gemm {
        &self.gemm
    }

    /// `c = A·B` with `which`; `a`, `b` laid out per `shape`, `c` m×n row-major.
    pub fn run(&mut self, which: Impl, shape: &Shape, a: &[f32], b: &[f32], c: &mut [f32]) {
        let (m, n, k) = shape.mnk();
        let (a_rs, a_cs) = shape.a_strides();
        let (b_rs, b_cs) = shape.b_strides();
        assert!(a.len() >= m * k && b.len() >= k * n && c.len() >= m * n);
        match which {
            Impl::Ours => self.run_ours(shape, a, b, c),
            Impl::Gemm => {
                let parallelism = if self.threads == 1 {
                    gemm::Parallelism::None
                } else {
                    gemm::Parallelism::Rayon(self.threads)
                };
                // SAFETY: A, B and C hold m·k, k·n and m·n elements, and the strides of each
                // (from `shape`) address exactly those (asserted above); C is a distinct slice
                // from A and B. `read_dst` is false, so C's old contents are never read, and
                // the gemm crate computes `dst = alpha·dst + beta·lhs·rhs`: beta = 1 is a plain
                // product.
                unsafe {
                    gemm::gemm(
                        m,
                        n,
                        k,
                        c.as_mut_ptr(),
                        1,
                        n as isize,
                        false,
                        a.as_ptr(),
                        a_cs as isize,
                        a_rs as isize,
                        b.as_ptr(),
                        b_cs as isize,
                        b_rs as isize,
                        0.0,
                        1.0,
                        false,
                        false,
                        false,
                        parallelism,
                    )
                }
            }
            Impl::MatrixMultiply => {
                // SAFETY: as for the gemm crate above: each pointer with its strides addresses
                // only its own slice, C does not overlap A or B, and beta = 0 means C is only
                // written.
                unsafe {
                    matrixmultiply::sgemm(
                        m,
                        k,
                        n,
                        1.0,
                        a.as_ptr(),
                        a_rs as isize,
                        a_cs as isize,
                        b.as_ptr(),
                        b_rs as isize,
                        b_cs as isize,
                        0.0,
                        c.as_mut_ptr(),
                        n as isize,
                        1,
                    )
                }
            }
            Impl::Faer => {
                let par =
                    if self.threads == 1 { faer::Par::Seq } else { faer::Par::rayon(self.threads) };
                let lhs = faer_view(a, m, k, (a_rs, a_cs));
                let rhs = faer_view(b, k, n, (b_rs, b_cs));
                let dst = faer::MatMut::from_row_major_slice_mut(&mut c[..m * n], m, n);
                faer::linalg::matmul::matmul(dst, faer::Accum::Replace, lhs, rhs, 1.0f32, par);
            }
        }
    }

    /// `c = A·B` with our GEMM and a B of any element type it takes (f32, f16, bf16).
    pub fn run_ours<T: GemmRhs>(&mut self, shape: &Shape, a: &[f32], b: &[T], c: &mut [f32]) {
        let (m, n, k) = shape.mnk();
        let needed = self.gemm.scratch_len(m, n, k, self.threads);
        if self.scratch.len() < needed {
            self.scratch.resize(needed, 0.0);
        }
        let parallel: &dyn Parallel = match &self.pool {
            Some(pool) => pool,
            None => &Sequential,
        };
        self.gemm.run(
            1.0,
            ours_view(a, m, k, shape.a_strides()),
            ours_view(b, k, n, shape.b_strides()),
            0.0,
            MatMut::row_major(c, m, n, n),
            &mut self.scratch,
            parallel,
        );
    }
}

/// A faer view of a row-major matrix or of the transpose of one.
fn faer_view(
    data: &[f32],
    rows: usize,
    cols: usize,
    strides: (usize, usize),
) -> faer::MatRef<'_, f32> {
    match strides {
        (row_stride, 1) => {
            faer::MatRef::from_row_major_slice_with_stride(data, rows, cols, row_stride)
        }
        (1, col_stride) => {
            faer::MatRef::from_row_major_slice_with_stride(data, cols, rows, col_stride).transpose()
        }
        other => panic!("unsupported strides {other:?}"),
    }
}
