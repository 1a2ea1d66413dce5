//! The GEMM each CPU gets: under `cargo xtask test --target aarch64`, the SVE kernel with a tile
//! as wide as the emulated vector length, or NEON on a core without SVE.

use mft_kernels::Isa;
use mft_kernels::gemm::Gemm;

/// `MFT_EXPECT_SVE_BITS` (set per qemu CPU by the xtask) is the SVE vector length, or 0 for a
/// core without SVE; unset on host runs.
#[test]
fn gemm_isa_and_tile_follow_the_cpu() {
    let best = Gemm::best();
    match std::env::var("MFT_EXPECT_SVE_BITS") {
        Ok(value) => {
            let bits: usize = value.parse().expect("MFT_EXPECT_SVE_BITS is a number");
            if bits > 0 {
                let sve = Gemm::for_isa(Isa::Sve).expect("the CPU has SVE, so does the GEMM");
                assert_eq!(sve.isa(), Isa::Sve);
                assert_eq!(sve.tile(), (8, 2 * bits / 32), "SVE tile at {bits} bits");
                assert_eq!(best.isa(), Isa::Sve, "SVE is preferred where the CPU has it");
            } else {
                assert!(Gemm::for_isa(Isa::Sve).is_none(), "no SVE GEMM on a core without SVE");
                assert_eq!(best.isa(), Isa::Neon);
            }
        }
        Err(_) => {
            assert!(
                Isa::supported().any(|isa| isa == best.isa()),
                "best GEMM ISA {} is not supported",
                best.isa()
            );
        }
    }
}
