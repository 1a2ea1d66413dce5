//! Instruction sets the kernels are written for, and which of them this CPU can run.
//!
//! Without the `std` feature, support is what the build targets (`cfg(target_feature)`): a
//! bare-metal aarch64 build gets NEON, and SVE only if built with `-C target-feature=+sve`.
//! With `std`, the CPU is probed at run time and the best ISA is cached after the first call.

use core::fmt;

/// An instruction set with its own kernel implementations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Isa {
    /// Portable Rust, any target.
    Scalar,
    /// x86_64 AVX2 with FMA3.
    Avx2,
    /// x86_64 AVX-512F.
    Avx512,
    /// aarch64 Advanced SIMD (128-bit).
    Neon,
    /// aarch64 Scalable Vector Extension, any vector length from 128 to 2048 bits.
    Sve,
}

impl Isa {
    /// Every ISA, from least to most preferred within each architecture.
    pub const ALL: [Isa; 5] = [Isa::Scalar, Isa::Avx2, Isa::Avx512, Isa::Neon, Isa::Sve];

    /// Lower-case name (`scalar`, `avx2`, `avx512`, `neon`, `sve`).
    pub const fn name(self) -> &'static str {
        match self {
            Isa::Scalar => "scalar",
            Isa::Avx2 => "avx2",
            Isa::Avx512 => "avx512",
            Isa::Neon => "neon",
            Isa::Sve => "sve",
        }
    }

    /// Whether this build can run this ISA's kernels on this CPU.
    pub fn is_supported(self) -> bool {
        match self {
            Isa::Scalar => true,
            Isa::Avx2 => x86_has_avx2_fma(),
            Isa::Avx512 => x86_has_avx512f(),
            Isa::Neon => aarch64_has_neon(),
            Isa::Sve => aarch64_has_sve(),
        }
    }

    /// The ISAs this CPU supports, in [`Isa::ALL`] order.
    pub fn supported() -> impl Iterator<Item = Isa> {
        Isa::ALL.into_iter().filter(|isa| isa.is_supported())
    }

    /// The preferred supported ISA (the last of [`Isa::supported`]).
    pub fn best() -> Isa {
        #[cfg(feature = "std")]
        {
            use core::sync::atomic::{AtomicU8, Ordering};
            const UNKNOWN: u8 = u8::MAX;
            static BEST: AtomicU8 = AtomicU8::new(UNKNOWN);
            let cached = BEST.load(Ordering::Relaxed);
            if let Some(&isa) = Isa::ALL.get(cached as usize) {
                return isa;
            }
            let best = Isa::supported().last().unwrap_or(Isa::Scalar);
            BEST.store(best as u8, Ordering::Relaxed);
            best
        }
        #[cfg(not(feature = "std"))]
        Isa::supported().last().unwrap_or(Isa::Scalar)
    }
}

impl fmt::Display for Isa {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

fn x86_has_avx2_fma() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        std::arch::is_x86_feature_detected!("avx2") && std::arch::is_x86_feature_detected!("fma")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    {
        cfg!(all(target_arch = "x86_64", target_feature = "avx2", target_feature = "fma"))
    }
}

fn x86_has_avx512f() -> bool {
    #[cfg(all(target_arch = "x86_64", feature = "std"))]
    {
        std::arch::is_x86_feature_detected!("avx512f")
    }
    #[cfg(not(all(target_arch = "x86_64", feature = "std")))]
    {
        cfg!(all(target_arch = "x86_64", target_feature = "avx512f"))
    }
}

fn aarch64_has_neon() -> bool {
    #[cfg(all(target_arch = "aarch64", feature = "std"))]
    {
        std::arch::is_aarch64_feature_detected!("neon")
    }
    #[cfg(not(all(target_arch = "aarch64", feature = "std")))]
    {
        cfg!(all(target_arch = "aarch64", target_feature = "neon"))
    }
}

fn aarch64_has_sve() -> bool {
    #[cfg(all(target_arch = "aarch64", feature = "std"))]
    {
        std::arch::is_aarch64_feature_detected!("sve")
    }
    #[cfg(not(all(target_arch = "aarch64", feature = "std")))]
    {
        cfg!(all(target_arch = "aarch64", target_feature = "sve"))
    }
}

/// The SVE vector length in bits, or `None` where SVE is not supported.
pub fn sve_vector_bits() -> Option<usize> {
    #[cfg(target_arch = "aarch64")]
    if Isa::Sve.is_supported() {
        // SAFETY: SVE support was just checked.
        return Some(unsafe { crate::vector::sve::vector_bytes() } * 8);
    }
    None
}
