//! Vector primitives over f32 slices: `dot` (inner product) and `axpy` (`y += alpha·x`), one
//! implementation per [`Isa`], chosen through a [`VectorKernels`] table.
//!
//! `axpy` is a fused multiply-add per element in every implementation, so all of them give
//! bit-identical results. `dot` sums in a different order per ISA, so results agree to rounding
//! (exactly, when every partial sum is representable).

use crate::isa::Isa;

pub(crate) mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "aarch64")]
pub(crate) mod sve;

type DotFn = unsafe fn(&[f32], &[f32]) -> f32;
type AxpyFn = unsafe fn(f32, &[f32], &mut [f32]);

/// The vector kernels of one ISA. Only built for an ISA the CPU supports, which is what makes
/// calling its `unsafe` (target-feature) functions sound.
#[derive(Clone, Copy)]
pub struct VectorKernels {
    isa: Isa,
    dot: DotFn,
    axpy: AxpyFn,
}

impl VectorKernels {
    /// The kernels of `isa`, or `None` if this build or CPU cannot run them.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        if !isa.is_supported() {
            return None;
        }
        let (dot, axpy): (DotFn, AxpyFn) = match isa {
            Isa::Scalar => (scalar::dot, scalar::axpy),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx2 => (avx2::dot, avx2::axpy),
            #[cfg(target_arch = "x86_64")]
            Isa::Avx512 => (avx512::dot, avx512::axpy),
            #[cfg(target_arch = "aarch64")]
            Isa::Neon => (neon::dot, neon::axpy),
            #[cfg(target_arch = "aarch64")]
            Isa::Sve => (sve::dot, sve::axpy),
            #[allow(unreachable_patterns)] // ISAs of other architectures are never supported
            _ => return None,
        };
        Some(VectorKernels { isa, dot, axpy })
    }

    /// The kernels of [`Isa::best`].
    pub fn best() -> Self {
        VectorKernels::for_isa(Isa::best())
            .or_else(|| VectorKernels::for_isa(Isa::Scalar))
            .expect("scalar kernels are always supported")
    }

    /// Which ISA these kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// `Σ a[i]·b[i]`. Panics if the lengths differ.
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        assert_eq!(a.len(), b.len(), "dot: operand lengths differ");
        // SAFETY: `self` exists only for an ISA the CPU supports; lengths are equal.
        unsafe { (self.dot)(a, b) }
    }

    /// `y[i] += alpha·x[i]`, fused. Panics if the lengths differ.
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        assert_eq!(x.len(), y.len(), "axpy: operand lengths differ");
        // SAFETY: `self` exists only for an ISA the CPU supports; lengths are equal.
        unsafe { (self.axpy)(alpha, x, y) }
    }
}

impl core::fmt::Debug for VectorKernels {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("VectorKernels").field("isa", &self.isa).finish()
    }
}

/// `Σ a[i]·b[i]` with the best kernels for this CPU.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    VectorKernels::best().dot(a, b)
}

/// `y[i] += alpha·x[i]` with the best kernels for this CPU.
pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    VectorKernels::best().axpy(alpha, x, y)
}
