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

pub mod gemm;
pub mod isa;
pub mod parallel;
pub mod vector;

pub use gemm::{Gemm, GemmRhs, Mat, MatMut, gemm, gemm_scratch_len};
pub use isa::{Isa, sve_vector_bits};
pub use mft_core::{bf16, f16};
pub use parallel::{Parallel, Sequential};
pub use vector::VectorKernels;
