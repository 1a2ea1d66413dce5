//! One portable kernel body, compiled once per ISA.
//!
//! The row-wise kernels (norms, activations, softmax, RoPE, the optimizers, …) are plain loops
//! over slices, written so that LLVM can vectorize them: fixed-width lane accumulators instead of
//! a serial sum, [`crate::math`]'s branch-free `exp` instead of a libm call. [`vectorized!`] runs
//! such a body inside a function compiled with an ISA's target features, so the same source
//! becomes AVX-512, AVX2+FMA, NEON or SVE code at run time. The compute-bound kernel (GEMM) is
//! hand-written per ISA instead; these loops are memory-bound, and the compiler's SIMD for them
//! is as good as hand-written intrinsics while one source keeps every ISA's results in step.
//!
//! The body and everything it calls must be inlined into the wrapper to get its features. Kernel
//! bodies live in `#[inline(always)]` functions, and the [`vectorized!`] macro wraps the call in
//! an `#[inline(always)]` closure: one plain closure called from the three wrappers of an ISA
//! family is, once large, not inlined by LLVM and so silently runs without the features.

use crate::isa::Isa;

/// Runs `$body` (an expression) compiled for the target features of `$isa` (an [`Isa`]). The
/// expression is evaluated once; `return` and `?` inside it act on a closure, so do not use them.
macro_rules! vectorized {
    ($isa:expr, $body:expr $(,)?) => {
        $crate::vectorize::run_on(
            $isa,
            #[inline(always)]
            || $body,
        )
    };
}
pub(crate) use vectorized;

/// Runs `body` compiled for `isa`'s target features. Call it through [`vectorized!`], which
/// makes sure the body is inlined into the wrapper.
///
/// # Panics
/// If `isa` is not supported by this build and CPU (a programming error: callers hold an ISA
/// from a table that was built only for supported ones).
#[inline(always)]
pub(crate) fn run_on<R>(isa: Isa, body: impl FnOnce() -> R) -> R {
    assert!(isa.is_supported(), "kernel for {isa} called on a CPU without it");
    match isa {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX-512F support was checked above (the kernels also use AVX2 and FMA, which
        // every AVX-512F CPU has).
        Isa::Avx512 => unsafe { on_avx512(body) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: AVX2 and FMA support was checked above.
        Isa::Avx2 => unsafe { on_avx2(body) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: NEON support was checked above.
        Isa::Neon => unsafe { on_neon(body) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: SVE support was checked above.
        Isa::Sve => unsafe { on_sve(body) },
        _ => body(),
    }
}

/// # Safety
/// The CPU supports AVX-512F, AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn on_avx512<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// # Safety
/// The CPU supports AVX2 and FMA.
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2,fma")]
unsafe fn on_avx2<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// # Safety
/// The CPU supports NEON.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "neon")]
unsafe fn on_neon<R>(body: impl FnOnce() -> R) -> R {
    body()
}

/// # Safety
/// The CPU supports SVE.
#[cfg(target_arch = "aarch64")]
#[target_feature(enable = "sve")]
unsafe fn on_sve<R>(body: impl FnOnce() -> R) -> R {
    body()
}
