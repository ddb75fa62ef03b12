//! The N-way reduce: `out[i] = in_0[i] ⊕ in_1[i] ⊕ … ⊕ in_{n-1}[i]` (optionally divided by a count).
//!
//! One pass over memory: each input is read once and the output written once. The output is
//! produced block by block; a block's accumulators stay in L1 while every input's matching block
//! is folded into them, left to right (so results are bit-identical to a sequential loop), then
//! MEAN's divide is applied and the block is stored. Blocks are spread over threads on native
//! builds; inner loops are plain slices that the compiler vectorises (SSE/AVX, or simd128 on wasm).

use super::cast::{Accumulator, Element};
use half::{bf16, f16};
use std::borrow::Cow;
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

/// Outputs of at least this many bytes in all are written with non-temporal stores: they will
/// not be read before they leave the cache, so reading their lines in first (what a plain store
/// does) would only add a third to the memory traffic.
const STREAM_BYTES: usize = 8 << 20;

fn reduce_serial<T: Element>(
    op: ReduceOp,
    inputs: &[&[T]],
    divide_by: Option<usize>,
    offset: usize,
    outs: &mut [&mut [T]],
    streaming: bool,
) {
    let mut acc = [T::Acc::default(); BLOCK];
    let mut scratch = [T::Acc::default(); BLOCK];
    let len = outs[0].len();
    // Where a streamed block is rounded before it is stored (any value: it is overwritten).
    let mut block: Vec<T> = match inputs[0].get(offset) {
        Some(&x) if streaming => vec![x; BLOCK.min(len)],
        _ => Vec::new(),
    };
    for start in (0..len).step_by(BLOCK) {
        let end = (start + BLOCK).min(len);
        let acc = &mut acc[..end - start];
        T::widen(&inputs[0][offset + start..offset + end], acc);
        for input in &inputs[1..] {
            fold_dispatch(op, acc, T::as_acc(&input[offset + start..offset + end], &mut scratch));
        }
        if let Some(n) = divide_by {
            for a in acc.iter_mut() {
                *a = T::Acc::div_count(*a, n);
            }
        }
        if streaming {
            // The block goes from L1 to every output, past the caches.
            let block = &mut block[..end - start];
            T::narrow(acc, block);
            for out in outs.iter_mut() {
                super::copy::stream(block, &mut out[start..end]);
            }
        } else {
            T::narrow(acc, &mut outs[0][start..end]);
        }
    }
    if streaming {
        super::copy::stream_fence();
        return;
    }
    // The other copies from the first while it is in cache (writing every copy block by block
    // would keep twice as many memory streams open, which measured slower).
    if let Some((first, rest)) = outs.split_first_mut() {
        for out in rest {
            out.copy_from_slice(first);
        }
    }
}

/// Reduces `inputs` (all of `out.len()` elements, at least one) into `out` with `op`'s combiner,
/// dividing by `divide_by` when given (MEAN). Integer arithmetic wraps; half types accumulate in
/// f32. `out` is only written, never read.
pub fn reduce_n<T: Element>(op: ReduceOp, inputs: &[&[T]], divide_by: Option<usize>, out: &mut [T]) {
    reduce_n_into(op, inputs, divide_by, &mut [out]);
}

/// [`reduce_n`] writing the result to every buffer of `outs`, chunk by chunk while the chunk is
/// in cache: a reduction and its broadcast then read each input once and write each output once,
/// the least memory traffic there is.
pub fn reduce_n_into<T: Element>(op: ReduceOp, inputs: &[&[T]], divide_by: Option<usize>, outs: &mut [&mut [T]]) {
    assert!(!inputs.is_empty() && !outs.is_empty(), "reduce_n needs an input and an output");
    let len = outs[0].len();
    assert!(
        inputs.iter().all(|x| x.len() == len) && outs.iter().all(|o| o.len() == len),
        "reduce_n buffers differ in length"
    );
    let streaming = len * outs.len() * std::mem::size_of::<T>() >= STREAM_BYTES;
    #[cfg(feature = "parallel")]
    if len >= 2 * super::PAR_CHUNK && super::outermost() {
        use rayon::prelude::*;
        // Chunk i of every output, together.
        let mut chunks: Vec<Vec<&mut [T]>> = (0..len.div_ceil(super::PAR_CHUNK)).map(|_| Vec::with_capacity(outs.len())).collect();
        for out in outs.iter_mut() {
            for (i, c) in out.chunks_mut(super::PAR_CHUNK).enumerate() {
                chunks[i].push(c);
            }
        }
        chunks.par_iter_mut().enumerate().for_each(|(i, group)| reduce_serial(op, inputs, divide_by, i * super::PAR_CHUNK, group, streaming));
        return;
    }
    reduce_serial(op, inputs, divide_by, 0, outs, streaming);
}

fn reduce_typed<T: Element + Scalar>(op: ReduceOp, inputs: &[&Buffer], divide_by: Option<usize>, copies: usize) -> Vec<Vec<T>> {
    let xs: Vec<&[T]> = inputs.iter().map(|b| T::slice(b).expect("dtypes checked")).collect();
    let mut outs: Vec<Vec<T>> = (0..copies).map(|_| super::output_vec(xs[0].len())).collect();
    reduce_n_into(op, &xs, divide_by, &mut outs.iter_mut().map(|o| o.as_mut_slice()).collect::<Vec<_>>());
    outs
}

/// [`reduce_n_into`] over buffers of one dtype and length (checked by the caller), into `copies`
/// new buffers.
pub fn reduce_buffers(op: ReduceOp, inputs: &[&Buffer], divide_by: Option<usize>, copies: usize) -> Vec<Buffer<'static>> {
    fn wrap<T>(outs: Vec<Vec<T>>, variant: fn(Cow<'static, [T]>) -> Buffer<'static>) -> Vec<Buffer<'static>>
    where
        [T]: ToOwned<Owned = Vec<T>>,
    {
        outs.into_iter().map(|v| variant(Cow::Owned(v))).collect()
    }
    match inputs[0] {
        Buffer::F32(_) => wrap(reduce_typed::<f32>(op, inputs, divide_by, copies), Buffer::F32),
        Buffer::F64(_) => wrap(reduce_typed::<f64>(op, inputs, divide_by, copies), Buffer::F64),
        Buffer::F16(_) => wrap(reduce_typed::<f16>(op, inputs, divide_by, copies), Buffer::F16),
        Buffer::BF16(_) => wrap(reduce_typed::<bf16>(op, inputs, divide_by, copies), Buffer::BF16),
        Buffer::I32(_) => wrap(reduce_typed::<i32>(op, inputs, divide_by, copies), Buffer::I32),
        Buffer::I64(_) => wrap(reduce_typed::<i64>(op, inputs, divide_by, copies), Buffer::I64),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
