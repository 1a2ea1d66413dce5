//! GEMM of every supported ISA against a plain f64 reference: odd sizes, all four transpose
//! combinations, padded row strides, alpha and beta, f32/f16/bf16 B, one and several threads.
//! Under `cargo xtask test --target aarch64` this covers NEON and SVE at 128/256/512 bits.

use mft_kernels::gemm::{Gemm, GemmRhs, Mat, MatMut};
use mft_kernels::{Isa, Parallel, Sequential, bf16, f16};
use proptest::prelude::*;

/// Runs each task on its own scoped thread: a second `Parallel` implementation for the tests.
struct ScopedThreads(usize);

// SAFETY: every index is spawned once and the scope joins all threads before returning.
unsafe impl Parallel for ScopedThreads {
    fn threads(&self) -> usize {
        self.0
    }
    fn run(&self, tasks: usize, task: &(dyn Fn(usize) + Sync)) {
        std::thread::scope(|s| {
            for i in 0..tasks {
                s.spawn(move || task(i));
            }
        });
    }
}

/// One GEMM problem: op(A) is m×k, op(B) is k×n, stored with extra row padding.
#[derive(Debug, Clone)]
struct Problem {
    m: usize,
    n: usize,
    k: usize,
    a_transposed: bool,
    b_transposed: bool,
    pad: usize,
    alpha: f32,
    beta: f32,
    seed: u64,
}

/// Deterministic values in [-1, 1).
fn values(len: usize, seed: u64) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        })
        .collect()
}

/// Storage for an r×c operand (transposed or not) with padded rows, and its row stride.
fn storage(
    rows: usize,
    cols: usize,
    transposed: bool,
    pad: usize,
    seed: u64,
) -> (Vec<f32>, usize, usize, usize) {
    let (sr, sc) = if transposed { (cols, rows) } else { (rows, cols) };
    let stride = sc + pad;
    (values(sr * stride, seed), sr, sc, stride)
}

fn view<'a, T>(data: &'a [T], sr: usize, sc: usize, stride: usize, transposed: bool) -> Mat<'a, T> {
    let m = Mat::row_major(data, sr, sc, stride);
    if transposed { m.t() } else { m }
}

/// Run the problem with `gemm` and `B` elements of type `T`; compare with the f64 reference.
fn check<T: GemmRhs>(
    gemm: &Gemm,
    p: &Problem,
    parallel: &dyn Parallel,
    to_t: fn(f32) -> T,
) -> Result<(), TestCaseError> {
    let (a_data, a_sr, a_sc, lda) = storage(p.m, p.k, p.a_transposed, p.pad, p.seed);
    let (b_f32, b_sr, b_sc, ldb) = storage(p.k, p.n, p.b_transposed, p.pad, p.seed + 1);
    let b_data: Vec<T> = b_f32.iter().map(|&v| to_t(v)).collect();
    let ldc = p.n + p.pad;
    let c0 = values(p.m.max(1) * ldc, p.seed + 2);
    let a = view(&a_data, a_sr, a_sc, lda, p.a_transposed);
    let b = view(&b_data, b_sr, b_sc, ldb, p.b_transposed);

    // Reference in f64 from the exact (already rounded) B values.
    let mut expected = vec![0f64; p.m * p.n];
    let mut bound = vec![0f64; p.m * p.n];
    for i in 0..p.m {
        for j in 0..p.n {
            let (mut sum, mut mag) = (0f64, 0f64);
            for l in 0..p.k {
                let av =
                    if p.a_transposed { a_data[l * lda + i] } else { a_data[i * lda + l] } as f64;
                let bv = if p.b_transposed { b_data[j * ldb + l] } else { b_data[l * ldb + j] }
                    .to_f32() as f64;
                sum += av * bv;
                mag += (av * bv).abs();
            }
            let old = if p.beta == 0.0 { 0.0 } else { c0[i * ldc + j] as f64 };
            expected[i * p.n + j] = p.alpha as f64 * sum + p.beta as f64 * old;
            bound[i * p.n + j] = (p.k as f64 + 4.0)
                * f32::EPSILON as f64
                * (p.alpha.abs() as f64 * mag + (p.beta as f64 * old).abs())
                + 1e-6;
        }
    }

    let mut c = c0.clone();
    if p.beta == 0.0 {
        // beta = 0 must ignore C entirely, NaN included.
        for i in 0..p.m {
            c[i * ldc..i * ldc + p.n].fill(f32::NAN);
        }
    }
    // Scratch starts as NaN: whatever a caller's arena held before must not reach C.
    let mut scratch = vec![f32::NAN; gemm.scratch_len(p.m, p.n, p.k, parallel.threads())];
    gemm.run(
        p.alpha,
        a,
        b,
        p.beta,
        MatMut::row_major(&mut c, p.m, p.n, ldc),
        &mut scratch,
        parallel,
    );

    for i in 0..p.m {
        for j in 0..p.n {
            let got = c[i * ldc + j] as f64;
            let (want, tol) = (expected[i * p.n + j], bound[i * p.n + j]);
            prop_assert!(
                (got - want).abs() <= tol,
                "{} {:?}: C[{i}][{j}] = {got}, expected {want} (tolerance {tol})",
                gemm.isa(),
                p
            );
        }
        // Padding between rows is never written.
        for j in p.n..ldc {
            prop_assert_eq!(c[i * ldc + j].to_bits(), c0[i * ldc + j].to_bits(), "padding written");
        }
    }
    Ok(())
}

fn gemms() -> Vec<Gemm> {
    let all: Vec<Gemm> = Isa::supported().filter_map(Gemm::for_isa).collect();
    assert!(!all.is_empty());
    all
}

/// Sizes that hit every edge: below, at and past tile and block boundaries.
fn size() -> impl Strategy<Value = usize> {
    prop::sample::select(vec![
        1usize, 2, 3, 5, 7, 8, 12, 13, 16, 17, 31, 32, 33, 48, 63, 65, 97, 129, 257, 300,
    ])
}

fn problem() -> impl Strategy<Value = Problem> {
    (size(), size(), size(), any::<bool>(), any::<bool>(), 0usize..3, any::<u64>())
        .prop_filter("keep the f64 reference fast", |&(m, n, k, ..)| m * n * k <= 1 << 21)
        .prop_flat_map(|(m, n, k, at, bt, pad, seed)| {
            let scalars = prop::sample::select(vec![
                (1.0f32, 0.0f32),
                (1.0, 1.0),
                (-0.5, 2.0),
                (2.0, 0.0),
                (0.75, -1.0),
            ]);
            scalars.prop_map(move |(alpha, beta)| Problem {
                m,
                n,
                k,
                a_transposed: at,
                b_transposed: bt,
                pad,
                alpha,
                beta,
                seed,
            })
        })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn f32_gemm_matches_reference(p in problem()) {
        for g in gemms() {
            check::<f32>(&g, &p, &Sequential, |v| v)?;
        }
    }

    #[test]
    fn half_precision_b_matches_reference(p in problem()) {
        for g in gemms() {
            check::<f16>(&g, &p, &Sequential, f16::from_f32)?;
            check::<bf16>(&g, &p, &Sequential, bf16::from_f32)?;
        }
    }

    #[test]
    fn threaded_gemm_matches_reference(p in problem(), threads in 2usize..5) {
        for g in gemms() {
            check::<f32>(&g, &p, &ScopedThreads(threads), |v| v)?;
        }
    }
}

/// The listed odd sizes, every transpose combination, on every ISA.
#[test]
fn odd_sizes_in_every_layout() {
    for g in gemms() {
        for &(m, n, k) in
            &[(1, 1, 1), (3, 17, 63), (65, 3, 17), (17, 65, 257), (63, 257, 3), (257, 65, 65)]
        {
            for layout in 0..4 {
                let p = Problem {
                    m,
                    n,
                    k,
                    a_transposed: layout & 1 != 0,
                    b_transposed: layout & 2 != 0,
                    pad: 1,
                    alpha: 1.5,
                    beta: 0.5,
                    seed: (m * n * k + layout) as u64,
                };
                check::<f32>(&g, &p, &Sequential, |v| v).unwrap();
            }
        }
    }
}

/// Products at least twice as deep as they are wide, which two threads split by depth (the
/// second thread's product added to C afterwards), and one deep enough (K ≥ 3072) for the
/// halved depth block: every layout, alpha and beta, on one and two threads.
#[test]
fn deep_products_on_one_and_two_threads() {
    for g in gemms() {
        for &(m, n, k, beta) in &[(29, 45, 1031, 0.5f32), (13, 70, 3101, 0.0), (40, 3, 777, -1.0)] {
            for layout in 0..4 {
                let p = Problem {
                    m,
                    n,
                    k,
                    a_transposed: layout & 1 != 0,
                    b_transposed: layout & 2 != 0,
                    pad: 3,
                    alpha: -0.75,
                    beta,
                    seed: (m + n + k + layout) as u64,
                };
                check::<f32>(&g, &p, &Sequential, |v| v).unwrap();
                check::<f32>(&g, &p, &ScopedThreads(2), |v| v).unwrap();
                check::<bf16>(&g, &p, &ScopedThreads(2), bf16::from_f32).unwrap();
            }
        }
    }
}

/// Every row count from 1 to past two tiles, on every ISA: the last row panel of such a product
/// runs the kernel's short tiles where it has them (rows written straight to C) or a whole tile
/// into a buffer. The rows of the buffer past C's last row are never touched.
#[test]
fn every_row_count_at_a_tile_edge() {
    for g in gemms() {
        let (mr, nr) = g.tile();
        for m in 1..=2 * mr + 1 {
            for (n, beta) in [(2 * nr, 0.5f32), (nr + 3, 0.0), (nr, -1.0)] {
                let k = 37;
                let ldc = n + 1;
                let a_data = values(m * k, m as u64);
                let b_data = values(k * n, n as u64);
                let c0 = values((m + mr) * ldc, 7);
                let mut c = c0.clone();
                let mut scratch = vec![0f32; g.scratch_len(m, n, k, 1)];
                g.run(
                    1.5,
                    Mat::row_major(&a_data, m, k, k),
                    Mat::row_major(&b_data, k, n, n),
                    beta,
                    MatMut::row_major(&mut c, m, n, ldc),
                    &mut scratch,
                    &Sequential,
                );
                for i in 0..m {
                    for j in 0..n {
                        let dot: f64 = (0..k)
                            .map(|l| a_data[i * k + l] as f64 * b_data[l * n + j] as f64)
                            .sum();
                        let want = 1.5 * dot + beta as f64 * c0[i * ldc + j] as f64;
                        let got = c[i * ldc + j] as f64;
                        assert!(
                            (got - want).abs() <= 1e-4,
                            "{} m={m} n={n}: C[{i}][{j}] = {got}, expected {want}",
                            g.isa()
                        );
                    }
                }
                let past = (m - 1) * ldc + n;
                assert!(
                    c[past..].iter().zip(&c0[past..]).all(|(x, y)| x.to_bits() == y.to_bits()),
                    "{} m={m} n={n}: written past C",
                    g.isa()
                );
            }
        }
    }
}

/// Depth 0 and alpha 0 leave `beta·C`; empty outputs touch nothing.
#[test]
fn degenerate_products() {
    for g in gemms() {
        let a: [f32; 0] = [];
        let mut c = vec![2.0f32; 6];
        let mut scratch = vec![0f32; g.scratch_len(2, 3, 3, 1)];
        g.run(
            1.0,
            Mat::row_major(&a, 2, 0, 0),
            Mat::row_major(&a, 0, 3, 3),
            0.5,
            MatMut::row_major(&mut c, 2, 3, 3),
            &mut scratch,
            &Sequential,
        );
        assert_eq!(c, vec![1.0; 6]);
        let ones = [1.0f32; 6];
        g.run(
            0.0,
            Mat::row_major(&ones, 2, 3, 3),
            Mat::row_major(&ones, 3, 2, 2),
            0.0,
            MatMut::row_major(&mut c[..4], 2, 2, 2),
            &mut scratch,
            &Sequential,
        );
        assert_eq!(&c[..4], &[0.0; 4]);
        g.run(
            1.0,
            Mat::row_major(&ones, 0, 3, 3),
            Mat::row_major(&ones, 3, 2, 2),
            0.0,
            MatMut::row_major(&mut [], 0, 2, 2),
            &mut scratch,
            &Sequential,
        );
    }
}

fn run_bad(
    a: Mat<'_, f32>,
    b: Mat<'_, f32>,
    c_len: usize,
    c_rows: usize,
    c_cols: usize,
    ldc: usize,
    scratch_len: usize,
) {
    let mut c = vec![0f32; c_len];
    let mut scratch = vec![0f32; scratch_len];
    Gemm::best().run(
        1.0,
        a,
        b,
        0.0,
        MatMut::row_major(&mut c, c_rows, c_cols, ldc),
        &mut scratch,
        &Sequential,
    );
}

const DATA: [f32; 64] = [1.0; 64];

#[test]
#[should_panic(expected = "gemm: inner dimensions differ: A is 2×3, B is 4×2")]
fn inner_dimension_mismatch_names_the_operands() {
    run_bad(Mat::row_major(&DATA, 2, 3, 3), Mat::row_major(&DATA, 4, 2, 2), 4, 2, 2, 2, 1 << 16);
}

#[test]
#[should_panic(expected = "gemm: C is 3×2 but A·B is 2×2")]
fn output_shape_mismatch_names_c() {
    run_bad(Mat::row_major(&DATA, 2, 3, 3), Mat::row_major(&DATA, 3, 2, 2), 6, 3, 2, 2, 1 << 16);
}

#[test]
#[should_panic(
    expected = "gemm: B is 3×2 with strides (40, 1), which reaches past its slice of 64 elements"
)]
fn out_of_bounds_stride_is_refused() {
    run_bad(Mat::row_major(&DATA, 2, 3, 3), Mat::row_major(&DATA, 3, 2, 40), 4, 2, 2, 2, 1 << 16);
}

#[test]
#[should_panic(expected = "gemm: A is 3×4 with strides (1, 30)")]
fn out_of_bounds_transposed_view_is_refused() {
    run_bad(
        Mat::row_major(&DATA, 4, 3, 30).t(),
        Mat::row_major(&DATA, 4, 2, 2),
        6,
        3,
        2,
        2,
        1 << 16,
    );
}

#[test]
#[should_panic(
    expected = "gemm: C is 2×2 with strides (2, 1), which reaches past its slice of 3 elements"
)]
fn short_output_is_refused() {
    run_bad(Mat::row_major(&DATA, 2, 3, 3), Mat::row_major(&DATA, 3, 2, 2), 3, 2, 2, 2, 1 << 16);
}

#[test]
#[should_panic(expected = "gemm: C's row stride 1 is less than its 2 columns")]
fn overlapping_output_rows_are_refused() {
    run_bad(Mat::row_major(&DATA, 2, 3, 3), Mat::row_major(&DATA, 3, 2, 2), 4, 2, 2, 1, 1 << 16);
}

#[test]
#[should_panic(expected = "gemm: scratch holds 3 floats, needs")]
fn short_scratch_is_refused() {
    run_bad(Mat::row_major(&DATA, 2, 3, 3), Mat::row_major(&DATA, 3, 2, 2), 4, 2, 2, 2, 3);
}
