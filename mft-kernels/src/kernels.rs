//! [`Kernels`]: the training primitives of one ISA, and the GEMM they are built on.
//!
//! Each primitive lives in its own module (`norm`, `activation`, `attention`, `loss`, `optim`,
//! …) as methods on [`Kernels`]; every method takes its outputs and scratch from the caller and
//! splits row-wise work through a [`crate::Parallel`].

use crate::gemm::{Gemm, GemmOffload};
use crate::isa::Isa;

/// The primitives of one ISA. Only built for an ISA the CPU supports.
///
/// ```
/// use mft_kernels::{Kernels, LmHeadLoss, Sequential};
///
/// let k = Kernels::best();
/// let (tokens, hidden, vocab) = (4, 8, 50);
/// let x = vec![0.1f32; tokens * hidden];
/// let head = vec![0.02f32; vocab * hidden]; // [vocab, hidden]: a tied embedding or lm_head
/// let labels = [3, 7, -100, 1]; // -100 is ignored, as in transformers
/// let shape = LmHeadLoss::new(tokens, hidden, vocab);
/// let mut scratch = vec![0.0f32; shape.scratch_len(&k, 1)];
/// let mut d_x = vec![0.0f32; tokens * hidden];
/// // Loss and d(hidden) without ever holding tokens × vocab logits (LoRA: the head is frozen).
/// let loss = k.lm_head_loss_forward_backward(
///     &shape, &x, &head, &labels, 1.0, &mut d_x, None, &mut scratch, &Sequential,
/// );
/// assert_eq!(loss.valid_tokens, 3);
/// assert!((loss.loss - (vocab as f32).ln()).abs() < 1e-5); // equal logits: ln(vocab)
/// ```
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

    /// The same kernels with every GEMM offered to `offload` first (`None`: the CPU only).
    /// Every product built on [`Kernels::gemm`] (the models' linear layers and adapters, the
    /// fused LM head) goes through it; the attention's packed products stay on the CPU.
    pub fn with_gemm_offload(self, offload: Option<&'static dyn GemmOffload>) -> Self {
        Kernels { gemm: self.gemm.with_offload(offload), ..self }
    }
}
