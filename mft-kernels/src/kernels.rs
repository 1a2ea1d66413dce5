//! [`Kernels`]: the training primitives of one ISA, and the GEMM they are built on.
//!
//! Each primitive lives in its own module (`norm`, `activation`, `attention`, `loss`, `optim`,
//! …) as methods on [`Kernels`]; every method takes its outputs and scratch from the caller and
//! splits row-wise work through a [`crate::Parallel`].

use crate::gemm::Gemm;
use crate::isa::Isa;

/// The primitives of one ISA. Only built for an ISA the CPU supports.
#[derive(Debug, Clone, Copy)]
pub struct Kernels {
    isa: Isa,
    gemm: Gemm,
}

impl Kernels {
    /// The kernels of `isa`, or `None` if this build or CPU cannot run them.
    pub fn for_isa(isa: Isa) -> Option<Self> {
        Some(Kernels { isa, gemm: Gemm::for_isa(isa)? })
    }

    /// The kernels of [`Isa::best`].
    pub fn best() -> Self {
        Kernels::for_isa(Isa::best())
            .or_else(|| Kernels::for_isa(Isa::Scalar))
            .expect("scalar kernels are always supported")
    }

    /// Which ISA these kernels use.
    pub fn isa(&self) -> Isa {
        self.isa
    }

    /// The GEMM of the same ISA.
    pub fn gemm(&self) -> &Gemm {
        &self.gemm
    }
}
