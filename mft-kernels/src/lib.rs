//! mft-kernels: the compute kernels of mft, `no_std` and allocation-free (callers pass outputs
//! and scratch).
//!
//! Each kernel has a portable scalar version and hand-written SIMD versions per ISA: x86_64
//! AVX2+FMA and AVX-512F, aarch64 NEON and SVE (vector-length agnostic). [`Isa`] says which of
//! them this build can run on this CPU: without the `std` feature the choice is fixed at compile
//! time from `cfg(target_feature)`; with it, the CPU is probed once and the answer cached.
//!
//! Today the crate holds the vector primitives ([`vector`]); GEMM and the training primitives
//! build on the same dispatch.
#![no_std]

#[cfg(any(test, feature = "std"))]
extern crate std;

pub mod isa;
pub mod vector;

pub use isa::{Isa, sve_vector_bits};
pub use vector::VectorKernels;
