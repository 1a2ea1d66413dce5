//! aarch64 SVE micro-kernel (placeholder until the SVE kernel lands: uses the NEON tile).

use super::MicroKernel;

/// # Safety
/// The CPU must support SVE.
pub(super) unsafe fn kernel() -> MicroKernel {
    super::neon::KERNEL
}
