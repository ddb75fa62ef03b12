//! The N-way reduce: `out[i] = in_0[i] ⊕ in_1[i] ⊕ … ⊕ in_{n-1}[i]` (optionally divided by a count).
//!
//! One pass over memory: each input is read once and the output written once. The output is
//! produced block by block; a block's accumulators stay in L1 while every input's matching block
//! is folded into them, left to right (so results are bit-identical to a sequential loop), then
//! MEAN's divide is applied and the block is stored. Blocks are spread over threads on native
//! builds; inner loops are plain slices that the compiler vectorises (SSE/AVX, or simd128 on wasm).

use super::cast::{Accumulator, Element};
use crate::map_buffer;
use crate::reduce_op::ReduceOp;
use crate::tensor::{Buffer, Scalar};

/// Elements per L1-resident block.
const BLOCK: usize = 2048;

#[inline(always)]
fn fold<A: Accumulator>(acc: &mut [A], x: &[A], f: impl Fn(A, A) -> A) {
    for (a, &b) in acc.iter_mut().zip(x) {
        *a = f(*a, b);
    }
}

/// One loop per op, each compiled (and vectorised) with its combiner inlined.
#[inline(always)]
fn fold_dispatch<A: Accumulator>(op: ReduceOp, acc: &mut [A], x: &[A]) {
    match op {
        ReduceOp::Sum | ReduceOp::Mean => fold(acc, x, A::add),
        ReduceOp::Product => fold(acc, x, A::mul),
        ReduceOp::Max => fold(acc, x, A::max),
        ReduceOp::Min => fold(acc, x, A::min),
    }
}

fn reduce_serial<T: Element>(
    op: ReduceOp,
    inputs: &[&[T]],
    divide_by: Option<usize>,
    offset: usize,
    out: &mut [T],
) {
    let mut acc = [T::Acc::default(); BLOCK];
    let mut scratch = [T::Acc::default(); BLOCK];
    for (b, out_block) in out.chunks_mut(BLOCK).enumerate() {
        let start = offset + b * BLOCK;
        let end = start + out_block.len();
        let acc = &mut acc[..out_block.len()];
        T::widen(&inputs[0][start..end], acc);
        for input in &inputs[1..] {
            fold_dispatch(op, acc, T::as_acc(&input[start..end], &mut scratch));
        }
        if let Some(n) = divide_by {
            for a in acc.iter_mut() {
                *a = T::Acc::div_count(*a, n);
            }
        }
        T::narrow(acc, out_block);
    }
}

/// Reduces `inputs` (all of `out.len()` elements, at least one) into `out` with `op`'s combiner,
/// dividing by `divide_by` when given (MEAN). Integer arithmetic wraps; half types accumulate in f32.
pub fn reduce_n<T: Element>(op: ReduceOp, inputs: &[&[T]], divide_by: Option<usize>, out: &mut [T]) {
    assert!(!inputs.is_empty(), "reduce_n needs at least one input");
    assert!(inputs.iter().all(|x| x.len() == out.len()), "reduce_n inputs differ in length");
    #[cfg(feature = "parallel")]
    if out.len() >= 2 * super::PAR_CHUNK {
        use rayon::prelude::*;
        out.par_chunks_mut(super::PAR_CHUNK).enumerate().for_each(|(i, chunk)| {
            reduce_serial(op, inputs, divide_by, i * super::PAR_CHUNK, chunk)
        });
        return;
    }
    reduce_serial(op, inputs, divide_by, 0, out);
}

fn reduce_typed<T: Element + Scalar>(op: ReduceOp, inputs: &[&Buffer], divide_by: Option<usize>) -> Vec<T> {
    let xs: Vec<&[T]> = inputs.iter().map(|b| T::slice(b).expect("dtypes checked")).collect();
    let mut out = bytemuck::zeroed_vec(xs[0].len());
    reduce_n(op, &xs, divide_by, &mut out);
    out
}

/// [`reduce_n`] over buffers of one dtype and length (checked by the caller), into a new buffer.
pub fn reduce_buffers(op: ReduceOp, inputs: &[&Buffer], divide_by: Option<usize>) -> Buffer<'static> {
    map_buffer!(inputs[0], _first => reduce_typed(op, inputs, divide_by))
}

#[cfg(test)]
mod tests {
    use super::*;
    use half::f16;

    #[test]
    fn sums_left_to_right_like_a_loop() {
        let a: Vec<f32> = (0..10_000).map(|i| i as f32 * 0.1).collect();
        let b: Vec<f32> = (0..10_000).map(|i| 1e8 + i as f32).collect();
        let c: Vec<f32> = (0..10_000).map(|i| -1e8 - i as f32 * 0.3).collect();
        let mut out = vec![0.0; a.len()];
        reduce_n(ReduceOp::Sum, &[&a, &b, &c], None, &mut out);
        for i in 0..a.len() {
            assert_eq!(out[i].to_bits(), ((a[i] + b[i]) + c[i]).to_bits());
        }
    }

    #[test]
    fn mean_divides_and_halves_accumulate_in_f32() {
        let x = vec![f16::from_f32(2048.0); 3];
        let y = vec![f16::from_f32(1.0); 3];
        let mut out = vec![f16::ZERO; 3];
        // Summed in f16, 2048 + 1 would round back to 2048; in f32 the sum is 2050 and the mean 1025.
        reduce_n(ReduceOp::Mean, &[&x, &y, &y], Some(2), &mut out);
        assert_eq!(out[0].to_f32(), 1025.0);
    }

    #[test]
    fn integers_wrap_and_mean_truncates() {
        let a = vec![i32::MAX, -7];
        let b = vec![1, 0];
        let mut out = vec![0; 2];
        reduce_n(ReduceOp::Sum, &[&a, &b], None, &mut out);
        assert_eq!(out, vec![i32::MIN, -7]);
        reduce_n(ReduceOp::Mean, &[&a[1..], &b[1..]], Some(2), &mut out[1..]);
        assert_eq!(out[1], -3);
    }

    #[test]
    fn max_and_min_propagate_nan() {
        let a = vec![1.0f64, f64::NAN, 3.0];
        let b = vec![f64::NAN, 2.0, -1.0];
        let mut out = vec![0.0; 3];
        reduce_n(ReduceOp::Max, &[&a, &b], None, &mut out);
        assert!(out[0].is_nan() && out[1].is_nan() && out[2] == 3.0);
        reduce_n(ReduceOp::Min, &[&a, &b], None, &mut out);
        assert!(out[0].is_nan() && out[1].is_nan() && out[2] == -1.0);
    }

    #[test]
    fn parallel_blocks_cover_every_element() {
        let n = 5 * (1 << 16) + 123;
        let a: Vec<i64> = (0..n as i64).collect();
        let b: Vec<i64> = (0..n as i64).map(|i| 3 * i).collect();
        let mut out = vec![0; n];
        reduce_n(ReduceOp::Product, &[&a, &b], None, &mut out);
        assert!(out.iter().enumerate().all(|(i, &v)| v == (i as i64) * (3 * i as i64)));
    }
}
