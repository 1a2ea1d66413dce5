//! mft-core: the `no_std`, allocation-free foundation of mft.
//!
//! - [`Arena`]: bump allocation over memory the caller provides, with scoped rewind and exact
//!   high-water reporting. The core never calls a global allocator.
//! - [`DType`] and [`Element`]: f32, f16 and bf16 elements.
//! - [`Layout`], [`TensorView`], [`TensorViewMut`], [`DynTensorView`]: shapes and strides up to
//!   rank [`MAX_RANK`] over borrowed buffers, with checked byte reinterpretation.
//! - [`Pager`] and [`ShardStore`]: shards read into two fixed slots in the order a step needs
//!   them, one ahead.
//! - [`Error`]: the one error type, implementing `core::error::Error`.
#![no_std]

#[cfg(test)]
extern crate std;

pub mod arena;
pub mod dtype;
pub mod error;
pub mod paging;
pub mod tensor;

pub use arena::{Arena, DEFAULT_ALIGN, Mark, Scope};
pub use dtype::{DType, Element, bf16, f16};
pub use error::{CastFailure, Error, Result};
pub use paging::{Pager, PagerError, ShardStore};
pub use tensor::{DynTensorView, Layout, MAX_RANK, TensorView, TensorViewMut, for_each_offset};
