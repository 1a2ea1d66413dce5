//! The GEMM offload hook: a backend (a GPU, an accelerator, a test double) that [`super::Gemm`]
//! asks first, before running a product on the CPU.
//!
//! The hook needs no `std` and no allocator: a backend is a `&'static dyn GemmOffload` carried by
//! [`super::Gemm`] (and so by [`crate::Kernels`], which every training primitive and model layer
//! takes). [`super::Gemm::run`] hands it the validated operands; the backend computes the
//! product and returns `true`, or declines (a product too small to be worth a transfer, a stride
//! layout it cannot express, a device error) and returns `false` with `C` untouched, and the CPU
//! runs the product exactly as it would without a backend.
//!
//! A backend may keep frozen weights on its device ([`GemmOffload::keep_resident`]); the caller
//! registers only memory it knows will not change while registered, and releases it
//! ([`GemmOffload::release`]) before the memory is freed or written.

use mft_core::{bf16, f16};

use super::{Mat, MatMut};

/// The `B` operand of an offloaded product, by element type (the trait stays object-safe).
#[derive(Debug, Clone, Copy)]
pub enum OffloadRhs<'a> {
    /// f32 elements.
    F32(Mat<'a, f32>),
    /// IEEE half-precision elements (frozen weights).
    F16(Mat<'a, f16>),
    /// bfloat16 elements (frozen weights).
    Bf16(Mat<'a, bf16>),
}

impl OffloadRhs<'_> {
    /// Rows of the operand.
    pub fn rows(&self) -> usize {
        match self {
            OffloadRhs::F32(m) => m.rows(),
            OffloadRhs::F16(m) => m.rows(),
            OffloadRhs::Bf16(m) => m.rows(),
        }
    }

    /// Columns of the operand.
    pub fn cols(&self) -> usize {
        match self {
            OffloadRhs::F32(m) => m.cols(),
            OffloadRhs::F16(m) => m.cols(),
            OffloadRhs::Bf16(m) => m.cols(),
        }
    }

    /// `(row_stride, col_stride)` in elements.
    pub fn strides(&self) -> (usize, usize) {
        match self {
            OffloadRhs::F32(m) => (m.row_stride(), m.col_stride()),
            OffloadRhs::F16(m) => (m.row_stride(), m.col_stride()),
            OffloadRhs::Bf16(m) => (m.row_stride(), m.col_stride()),
        }
    }

    /// Address of the first element of the operand's slice.
    pub fn addr(&self) -> usize {
        match self {
            OffloadRhs::F32(m) => m.data().as_ptr() as usize,
            OffloadRhs::F16(m) => m.data().as_ptr() as usize,
            OffloadRhs::Bf16(m) => m.data().as_ptr() as usize,
        }
    }
}

/// A whole slice of `B` elements, by element type: what [`GemmOffload::keep_resident`] copies.
#[derive(Debug, Clone, Copy)]
pub enum RhsData<'a> {
    /// f32 elements.
    F32(&'a [f32]),
    /// IEEE half-precision elements.
    F16(&'a [f16]),
    /// bfloat16 elements.
    Bf16(&'a [bf16]),
}

impl RhsData<'_> {
    /// Address of the first element.
    pub fn addr(&self) -> usize {
        match self {
            RhsData::F32(s) => s.as_ptr() as usize,
            RhsData::F16(s) => s.as_ptr() as usize,
            RhsData::Bf16(s) => s.as_ptr() as usize,
        }
    }

    /// Length in bytes.
    pub fn bytes(&self) -> usize {
        match self {
            RhsData::F32(s) => core::mem::size_of_val(*s),
            RhsData::F16(s) => core::mem::size_of_val(*s),
            RhsData::Bf16(s) => core::mem::size_of_val(*s),
        }
    }
}

/// A backend that may run `C = alpha·A·B + beta·C` in place of the CPU.
///
/// Implementations must be callable from any thread (the trait is `Sync`); calls may come from
/// several threads at once.
pub trait GemmOffload: Sync + core::fmt::Debug {
    /// A short name for messages ("cuda", "test").
    fn name(&self) -> &str;

    /// Computes `C = alpha·A·B + beta·C` and returns `true`, or declines and returns `false`
    /// leaving `C` exactly as it was. With `beta == 0`, C's old contents must be ignored (they
    /// may be NaN). The operands were validated by [`super::Gemm::run`]: `A` is `m × k`, `B` is
    /// `k × n`, `C` is `m × n`, and every view lies inside its slice.
    fn gemm(
        &self,
        alpha: f32,
        a: Mat<'_, f32>,
        b: OffloadRhs<'_>,
        beta: f32,
        c: &mut MatMut<'_>,
    ) -> bool;

    /// Copies `data` to the backend's memory and keeps it there, so products whose `B` lies
    /// inside it need not transfer it again; returns whether it is resident (a backend without
    /// memory of its own, or one that is full, says `false`). The caller promises that `data`
    /// is neither written nor freed until it calls [`GemmOffload::release`] with the same
    /// address: the backend recognises `B` by its address and cannot see later changes.
    fn keep_resident(&self, data: RhsData<'_>) -> bool {
        let _ = data;
        false
    }

    /// Forgets the resident copy registered at address `addr` (nothing if there is none).
    fn release(&self, addr: usize) {
        let _ = addr;
    }
}
