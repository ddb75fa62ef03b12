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
