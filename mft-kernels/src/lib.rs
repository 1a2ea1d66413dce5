//! mft-kernels: the compute kernels of mft, `no_std` and allocation-free (callers pass outputs
//! and scratch).
//!
//! Each kernel has a portable scalar version and hand-written SIMD versions per ISA: x86_64
//! AVX2+FMA and AVX-512F, aarch64 NEON and SVE (vector-length agnostic). [`Isa`] says which of
//! them this build can run on this CPU: without the `std` feature the choice is fixed at compile
//! time from `cfg(target_feature)`; with it, the CPU is probed once and the answer cached.
//!
//! Today the crate holds GEMM ([`gemm`]) and the vector primitives ([`vector`]); work is split
//! across threads through [`Parallel`], which the caller implements (mft-std has a pool).
#![no_std]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod activation;
pub mod attention;
pub mod bias;
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

pub use gemm::{Gemm, GemmRhs, Mat, MatMut, gemm, gemm_scratch_len};
pub use isa::{Isa, sve_vector_bits};
pub use kernels::Kernels;
pub use mft_core::{bf16, f16};
pub use parallel::{Parallel, Sequential, SharedSlice, for_each_range};
pub use vector::VectorKernels;
