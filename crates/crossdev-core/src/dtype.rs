//! Element types of tensors.

use crate::error::{fail, ErrorCode, Result};

/// The element types crossdev reduces. Half types (`Float16`, `BFloat16`) accumulate in `f32`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum DType {
    /// IEEE binary32.
    Float32,
    /// IEEE binary64.
    Float64,
    /// IEEE binary16.
    Float16,
    /// bfloat16 (8-bit exponent, 7-bit mantissa).
    BFloat16,
    /// Two's-complement 32-bit integer; sums wrap.
    Int32,
    /// Two's-complement 64-bit integer; sums wrap.
    Int64,
}

impl DType {
    /// Every dtype, in the order of the public documentation.
    pub const ALL: [DType; 6] =
        [DType::Float32, DType::Float64, DType::Float16, DType::BFloat16, DType::Int32, DType::Int64];

    /// The public name (`"float32"`, …), as TensorFlow spells it.
    pub fn name(self) -> &'static str {
        match self {
            DType::Float32 => "float32",
            DType::Float64 => "float64",
            DType::Float16 => "float16",
            DType::BFloat16 => "bfloat16",
            DType::Int32 => "int32",
            DType::Int64 => "int64",
        }
    }

    /// Bytes per element.
    pub fn size(self) -> usize {
        match self {
            DType::Float16 | DType::BFloat16 => 2,
            DType::Float32 | DType::Int32 => 4,
            DType::Float64 | DType::Int64 => 8,
        }
    }

    /// Parses a public name; unknown names are an `ERR_INVALID_TENSOR` listing the valid ones.
    pub fn parse(name: &str) -> Result<DType> {
        match DType::ALL.iter().find(|d| d.name() == name) {
            Some(d) => Ok(*d),
            None => fail(
                ErrorCode::InvalidTensor,
                format!(
                    "Unknown dtype '{name}'; expected one of {}",
                    DType::ALL.map(|d| d.name()).join(", ")
                ),
            ),
        }
    }
}
