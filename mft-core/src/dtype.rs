//! Element types of tensors: the [`DType`] tag and the [`Element`] trait that ties each tag to its
//! Rust type (`f32`, `half::f16`, `half::bf16`).

use core::fmt;

pub use half::{bf16, f16};

/// The element type of a tensor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE 754 binary32.
    F32,
    /// IEEE 754 binary16.
    F16,
    /// bfloat16: the upper half of a binary32.
    BF16,
}

impl DType {
    /// Size of one element in bytes.
    pub const fn size_bytes(self) -> usize {
        match self {
            DType::F32 => 4,
            DType::F16 | DType::BF16 => 2,
        }
    }

    /// The name used in safetensors headers and Hugging Face configs (`F32`, `F16`, `BF16`).
    pub const fn name(self) -> &'static str {
        match self {
            DType::F32 => "F32",
            DType::F16 => "F16",
            DType::BF16 => "BF16",
        }
    }
}

impl fmt::Display for DType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

mod sealed {
    pub trait Sealed {}
    impl Sealed for f32 {}
    impl Sealed for half::f16 {}
    impl Sealed for half::bf16 {}
}

/// A Rust type that can be a tensor element. Implemented for `f32`, [`struct@f16`] and [`struct@bf16`] only.
pub trait Element: bytemuck::Pod + Default + PartialEq + fmt::Debug + sealed::Sealed {
    /// The tag of this type.
    const DTYPE: DType;
    /// Widen to f32 (exact for every implementor).
    fn to_f32(self) -> f32;
    /// Narrow from f32, rounding to nearest even.
    fn from_f32(value: f32) -> Self;
}

impl Element for f32 {
    const DTYPE: DType = DType::F32;
    fn to_f32(self) -> f32 {
        self
    }
    fn from_f32(value: f32) -> Self {
        value
    }
}

impl Element for f16 {
    const DTYPE: DType = DType::F16;
    fn to_f32(self) -> f32 {
        f16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        f16::from_f32(value)
    }
}

impl Element for bf16 {
    const DTYPE: DType = DType::BF16;
    fn to_f32(self) -> f32 {
        bf16::to_f32(self)
    }
    fn from_f32(value: f32) -> Self {
        bf16::from_f32(value)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_match_rust_types() {
        assert_eq!(DType::F32.size_bytes(), core::mem::size_of::<f32>());
        assert_eq!(DType::F16.size_bytes(), core::mem::size_of::<f16>());
        assert_eq!(DType::BF16.size_bytes(), core::mem::size_of::<bf16>());
    }

    #[test]
    fn half_types_round_trip_representable_values() {
        for v in [0.0f32, 1.0, -2.5, 65504.0, 0.099975586] {
            assert_eq!(<f16 as Element>::from_f32(v).to_f32(), v, "f16 {v}");
        }
        for v in [0.0f32, 1.0, -2.5, 3.3895314e38] {
            assert_eq!(<bf16 as Element>::from_f32(v).to_f32(), v, "bf16 {v}");
        }
        // bf16 keeps 8 significant bits: 1 + 2^-9 rounds to 1.
        assert_eq!(<bf16 as Element>::from_f32(1.0 + 1.0 / 512.0).to_f32(), 1.0);
    }
}
