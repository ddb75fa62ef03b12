//! Widening of element types to the type they accumulate in, and narrowing back.
//!
//! `float16` and `bfloat16` accumulate in `f32` (SPEC Part A.4) so that a sum of many half values
//! rounds once, at the end; the other types accumulate in themselves.

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

/// Arithmetic of an accumulator type. Integer sums and products wrap (two's complement), MAX and
/// MIN propagate NaN, MEAN's divide truncates integers toward zero.
pub trait Accumulator: Copy + Default + Send + Sync + 'static {
    /// `a + b`.
    fn add(a: Self, b: Self) -> Self;
    /// `a * b`.
    fn mul(a: Self, b: Self) -> Self;
    /// The larger of `a` and `b`; NaN if either is NaN.
    fn max(a: Self, b: Self) -> Self;
    /// The smaller of `a` and `b`; NaN if either is NaN.
    fn min(a: Self, b: Self) -> Self;
    /// `a / n`.
    fn div_count(a: Self, n: usize) -> Self;
}

macro_rules! float_accumulator {
    ($t:ty) => {
        impl Accumulator for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a + b
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a * b
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                if a > b || a.is_nan() { a } else { b }
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                if a < b || a.is_nan() { a } else { b }
            }
            #[inline(always)]
            fn div_count(a: Self, n: usize) -> Self {
                a / (n as $t)
            }
        }
    };
}
float_accumulator!(f32);
float_accumulator!(f64);

macro_rules! int_accumulator {
    ($t:ty) => {
        impl Accumulator for $t {
            #[inline(always)]
            fn add(a: Self, b: Self) -> Self {
                a.wrapping_add(b)
            }
            #[inline(always)]
            fn mul(a: Self, b: Self) -> Self {
                a.wrapping_mul(b)
            }
            #[inline(always)]
            fn max(a: Self, b: Self) -> Self {
                Ord::max(a, b)
            }
            #[inline(always)]
            fn min(a: Self, b: Self) -> Self {
                Ord::min(a, b)
            }
            #[inline(always)]
            fn div_count(a: Self, n: usize) -> Self {
                a.wrapping_div(n as $t)
            }
        }
    };
}
int_accumulator!(i32);
int_accumulator!(i64);

/// An element type and the accumulator it is reduced in.
pub trait Element: Copy + Send + Sync + 'static {
    /// The type sums are carried in.
    type Acc: Accumulator;
    /// Converts `src` into accumulators.
    fn widen(src: &[Self], dst: &mut [Self::Acc]);
    /// Rounds accumulators back to elements.
    fn narrow(src: &[Self::Acc], dst: &mut [Self]);
    /// `src` as accumulators: in place when they are the same type, else widened into `scratch`.
    fn as_acc<'s>(src: &'s [Self], scratch: &'s mut [Self::Acc]) -> &'s [Self::Acc];
}

macro_rules! self_accumulating {
    ($t:ty) => {
        impl Element for $t {
            type Acc = $t;
            #[inline(always)]
            fn widen(src: &[Self], dst: &mut [Self]) {
                dst.copy_from_slice(src)
            }
            #[inline(always)]
            fn narrow(src: &[Self], dst: &mut [Self]) {
                dst.copy_from_slice(src)
            }
            #[inline(always)]
            fn as_acc<'s>(src: &'s [Self], _scratch: &'s mut [Self]) -> &'s [Self] {
                src
            }
        }
    };
}
self_accumulating!(f32);
self_accumulating!(f64);
self_accumulating!(i32);
self_accumulating!(i64);

macro_rules! half_element {
    ($t:ty) => {
        impl Element for $t {
            type Acc = f32;
            #[inline(always)]
            fn widen(src: &[Self], dst: &mut [f32]) {
                src.convert_to_f32_slice(dst)
            }
            #[inline(always)]
            fn narrow(src: &[f32], dst: &mut [Self]) {
                dst.convert_from_f32_slice(src)
            }
            #[inline(always)]
            fn as_acc<'s>(src: &'s [Self], scratch: &'s mut [f32]) -> &'s [f32] {
                let scratch = &mut scratch[..src.len()];
                src.convert_to_f32_slice(scratch);
                scratch
            }
        }
    };
}
half_element!(f16);
half_element!(bf16);

/// Elements convertible to and from `f64` (JavaScript numbers): half types round to nearest
/// even, integers truncate toward zero and saturate.
pub trait Numeric: crate::tensor::Scalar {
    /// The value as an `f64`.
    fn to_f64(self) -> f64;
    /// The nearest value of this type.
    fn from_f64(x: f64) -> Self;
}

macro_rules! numeric {
    ($t:ty, $to:expr, $from:expr) => {
        impl Numeric for $t {
            fn to_f64(self) -> f64 {
                $to(self)
            }
            fn from_f64(x: f64) -> Self {
                $from(x)
            }
        }
    };
}
numeric!(f32, |v: f32| v as f64, |x: f64| x as f32);
numeric!(f64, |v: f64| v, |x: f64| x);
numeric!(f16, f16::to_f64, |x: f64| f16::from_f32(to_f32_round_to_odd(x)));
numeric!(bf16, bf16::to_f64, |x: f64| bf16::from_f32(to_f32_round_to_odd(x)));

/// `x` as an `f32` rounded to odd: truncated toward zero, with the last bit set when inexact.
/// Rounding that to a half type (nearest, ties to even) rounds `x` correctly, because `f32`
/// carries more than two extra bits; converting `f64` to a half type directly, or through a
/// nearest-rounded `f32`, can be off by one unit just above a tie.
fn to_f32_round_to_odd(x: f64) -> f32 {
    let nearest = x as f32;
    if !x.is_finite() || nearest.is_infinite() || nearest as f64 == x {
        return nearest;
    }
    let toward_zero = if (nearest as f64).abs() > x.abs() { f32::from_bits(nearest.to_bits() - 1) } else { nearest };
    f32::from_bits(toward_zero.to_bits() | 1)
}
numeric!(i32, |v: i32| v as f64, |x: f64| x as i32);
numeric!(i64, |v: i64| v as f64, |x: f64| x as i64);

/// `src` as `f64`s.
pub fn to_f64(src: &crate::tensor::Buffer) -> Vec<f64> {
    crate::with_buffer!(src, v => v.iter().map(|x| x.to_f64()).collect())
}

/// `src` converted to `dtype`.
pub fn from_f64(src: &[f64], dtype: crate::dtype::DType) -> crate::tensor::Buffer<'static> {
    fn conv<T: Numeric>(src: &[f64]) -> Vec<T> {
        src.iter().map(|&x| T::from_f64(x)).collect()
    }
    let zeros = crate::tensor::Buffer::zeros(dtype, 0);
    crate::map_buffer!(&zeros, _z => conv(src))
}
