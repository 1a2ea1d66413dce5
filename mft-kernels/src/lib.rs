//! mft-kernels: the compute kernels of mft, `no_std` and allocation-free (callers pass outputs
//! and scratch).
//!
//! Each kernel has a portable scalar version and hand-written SIMD versions per ISA: x86_64
//! AVX2+FMA and AVX-512F, aarch64 NEON and SVE (vector-length agnostic). [`Isa`] says which of
//! them this build can run on this CPU: without the `std` feature the choice is fixed at compile
//! time from `cfg(target_feature)`; with it, the CPU is probed once and the answer cached.
//!
//! The crate holds GEMM ([`mod@gemm`]), the vector primitives ([`vector`]) and every training
//! primitive, forward and backward, as methods on [`Kernels`] (one module each): embeddings
//! ([`embedding`]), LayerNorm and RMSNorm ([`norm`]), GELU/SiLU and the GeGLU/SwiGLU gates
//! ([`activation`]), bias add and its gradient ([`bias`]), RoPE ([`rope`]), softmax
//! ([`softmax`]), flash-style causal attention ([`attention`]), the fused LM head +
//! cross-entropy ([`loss`]) and the optimizers with gradient clipping ([`optim`]). The row-wise
//! kernels are one portable source compiled per ISA (see `vectorize.rs`), with vectorizable
//! elementary functions from [`math`]. Work is split across threads through [`Parallel`], which
//! the caller implements (mft-std has a pool).
//!
//! Every GEMM can be offered to an offload backend first ([`GemmOffload`],
//! [`Kernels::with_gemm_offload`]); with the `cuda` feature (which needs `std`), the `cuda`
//! module is one that runs them through cuBLAS on an NVIDIA GPU.
#![no_std]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod activation;
pub mod attention;
pub mod bias;
#[cfg(feature = "cuda")]
pub mod cuda;
pub mod embedding;
pub mod gemm;
pub mod isa;
pub mod kernels;
pub mod loss;
pub mod math;
pub mod norm;
pub mod optim;
pub mod parallel;
pub mod rope;
pub mod softmax;
pub mod vector;
mod vectorize;

pub use attention::{AttentionGrads, AttentionInputs, AttentionShape};
pub use embedding::WriteMode;
pub use gemm::{
    Gemm, GemmOffload, GemmRhs, Mat, MatMut, OffloadRhs, RhsData, gemm, gemm_scratch_len,
};
pub use isa::{Isa, sve_vector_bits};
pub use kernels::Kernels;
pub use loss::{HeadRows, IGNORE_INDEX, LmHeadLoss, LossValue};
pub use mft_core::{bf16, f16};
pub use norm::RmsNormForm;
pub use optim::{AdamW, Sgd};
pub use parallel::{Parallel, Sequential, SharedSlice, for_each_range};
pub use vector::VectorKernels;
