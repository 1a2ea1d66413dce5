//! Every ISA's vector kernels against the scalar reference, over odd lengths, and a check that the
//! CPU offers the ISAs the test run expects (so an emulator misconfiguration cannot hide a path).
//!
//! Under `cargo xtask test --target aarch64` these run on qemu at SVE 128/256/512 bits and on a
//! NEON-only core; on x86_64 they cover AVX2 and AVX-512 where the CPU has them.

use mft_kernels::{Isa, VectorKernels, sve_vector_bits};
use proptest::prelude::*;

/// Kernels of every supported ISA except the scalar reference itself.
fn simd_kernels() -> Vec<VectorKernels> {
    Isa::supported().filter(|&isa| isa != Isa::Scalar).filter_map(VectorKernels::for_isa).collect()
}

fn scalar() -> VectorKernels {
    VectorKernels::for_isa(Isa::Scalar).unwrap()
}

/// Dot product in f64, the reference the f32 kernels are held to.
fn dot_f64(a: &[f32], b: &[f32]) -> (f64, f64) {
    let exact = a.iter().zip(b).map(|(&x, &y)| x as f64 * y as f64).sum();
    let magnitude = a.iter().zip(b).map(|(&x, &y)| (x as f64 * y as f64).abs()).sum();
    (exact, magnitude)
}

/// Pairs of equal-length vectors, lengths 0..300 (covering every tail of every vector width).
fn vector_pair(
    values: impl Strategy<Value = f32> + Clone,
) -> impl Strategy<Value = (Vec<f32>, Vec<f32>)> {
    (0usize..300).prop_flat_map(move |n| {
        (prop::collection::vec(values.clone(), n), prop::collection::vec(values.clone(), n))
    })
}

fn small_integers() -> impl Strategy<Value = f32> + Clone {
    (-8i32..=8).prop_map(|v| v as f32)
}

proptest! {
    /// With small integer inputs every product and partial sum is exact in f32, so any summation
    /// order gives the same result: each ISA must match the scalar kernel bit for bit.
    #[test]
    fn dot_is_exact_on_integer_inputs((a, b) in vector_pair(small_integers())) {
        let expected = scalar().dot(&a, &b);
        prop_assert_eq!(expected as f64, dot_f64(&a, &b).0);
        for k in simd_kernels() {
            prop_assert_eq!(k.dot(&a, &b), expected, "isa {}, n = {}", k.isa(), a.len());
        }
    }

    /// On real-valued inputs each ISA stays within the summation error bound of the exact result.
    #[test]
    fn dot_is_within_rounding_of_the_exact_sum((a, b) in vector_pair(-1.0f32..1.0)) {
        let (exact, magnitude) = dot_f64(&a, &b);
        let bound = (a.len() as f64 + 2.0) * f32::EPSILON as f64 * magnitude + 1e-30;
        for k in Isa::supported().filter_map(VectorKernels::for_isa) {
            let got = k.dot(&a, &b) as f64;
            prop_assert!((got - exact).abs() <= bound,
                "isa {}, n = {}: got {got}, exact {exact}, bound {bound}", k.isa(), a.len());
        }
    }

    /// axpy is one fused multiply-add per element everywhere: results are bit-identical.
    #[test]
    fn axpy_matches_scalar_bit_for_bit(
        (x, y) in vector_pair(-1e3f32..1e3),
        alpha in -10.0f32..10.0,
    ) {
        let mut expected = y.clone();
        scalar().axpy(alpha, &x, &mut expected);
        for k in simd_kernels() {
            let mut got = y.clone();
            k.axpy(alpha, &x, &mut got);
            let same = got.iter().zip(&expected).all(|(g, e)| g.to_bits() == e.to_bits());
            prop_assert!(same, "isa {}, n = {}: {:?} != {:?}", k.isa(), x.len(), got, expected);
        }
    }
}

/// Sub-slices at every offset: kernels must not assume alignment, nor touch memory past the end.
#[test]
fn kernels_accept_unaligned_slices_and_leave_neighbours_alone() {
    let x: Vec<f32> = (0..80).map(|i| (i % 9) as f32 - 4.0).collect();
    for k in simd_kernels() {
        for start in 0..17 {
            for len in [0, 1, 3, 4, 5, 15, 16, 17, 31, 33, 47] {
                let a = &x[start..start + len];
                assert_eq!(
                    k.dot(a, a),
                    scalar().dot(a, a),
                    "isa {} start {start} len {len}",
                    k.isa()
                );
                let mut y = vec![7.0f32; 80];
                k.axpy(2.0, a, &mut y[start..start + len]);
                for (i, &v) in y.iter().enumerate() {
                    let inside = (start..start + len).contains(&i);
                    let want = if inside { 7.0 + 2.0 * x[i] } else { 7.0 };
                    assert_eq!(v, want, "isa {} start {start} len {len} index {i}", k.isa());
                }
            }
        }
    }
}

/// The run's expectation of the CPU, set by `cargo xtask test --target aarch64` per qemu CPU:
/// `MFT_EXPECT_SVE_BITS` = the SVE vector length, or 0 for a core without SVE.
#[test]
fn cpu_offers_the_expected_isas() {
    let best = Isa::best();
    assert!(Isa::supported().any(|isa| isa == best), "best ISA {best} is not supported");
    assert_eq!(VectorKernels::best().isa(), best);
    if cfg!(target_arch = "aarch64") {
        assert!(Isa::Neon.is_supported(), "every aarch64 CPU mft targets has NEON");
    }
    match std::env::var("MFT_EXPECT_SVE_BITS") {
        Ok(value) => {
            let expected: usize = value.parse().expect("MFT_EXPECT_SVE_BITS is a number");
            let expected = (expected > 0).then_some(expected);
            assert_eq!(
                sve_vector_bits(),
                expected,
                "SVE vector length differs from the emulated CPU's"
            );
            let want_best = if expected.is_some() { Isa::Sve } else { Isa::Neon };
            assert_eq!(best, want_best);
            eprintln!("vector kernels: best ISA {best}, SVE bits {expected:?}");
        }
        Err(_) => assert_eq!(sve_vector_bits().is_some(), Isa::Sve.is_supported()),
    }
}

#[test]
#[should_panic(expected = "lengths differ")]
fn mismatched_lengths_are_a_programming_error() {
    VectorKernels::best().dot(&[1.0, 2.0], &[1.0]);
}
