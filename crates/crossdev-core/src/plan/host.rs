//! The host executor: runs a [`Plan`] over buffers in host memory, one buffer per logical device,
//! the steps of a stage in parallel (natively) and the stages in order.

use super::{Chunk, Plan, Step};
use std::borrow::Cow;
use crate::error::{fail, ErrorCode, Result};
use crate::kernels::cast::Element;
use crate::kernels::copy::copy;
use crate::kernels::output_vec;
use crate::kernels::reduce_n::reduce_n;
use crate::dtype::DType;
use crate::reduce_op::ReduceOp;
use crate::tensor::{Buffer, Scalar};

/// Elements a stage must write before its steps are spread over threads.
#[cfg(feature = "parallel")]
const PARALLEL_STAGE: usize = 1 << 16;

/// Base addresses and lengths of a plan's buffers. Sound to share across threads because
/// [`Plan::validate`] guarantees that the steps of a stage write disjoint chunks that no other
/// step of the stage reads, and inputs are never written.
struct Memory<T> {
    bufs: Vec<(*mut T, usize)>,
}

unsafe impl<T: Send> Send for Memory<T> {}
unsafe impl<T: Sync> Sync for Memory<T> {}

impl<T> Memory<T> {
    /// # Safety
    /// `c` lies inside its buffer, and nothing writes it during the borrow.
    unsafe fn read(&self, c: &Chunk) -> &[T] {
        let (base, len) = self.bufs[c.buf];
        debug_assert!(c.offset + c.len <= len);
        std::slice::from_raw_parts(base.add(c.offset), c.len)
    }

    /// # Safety
    /// `c` lies inside a non-input buffer, and nothing else reads or writes it during the borrow.
    #[allow(clippy::mut_from_ref)]
    unsafe fn write(&self, c: &Chunk) -> &mut [T] {
        let (base, len) = self.bufs[c.buf];
        debug_assert!(c.offset + c.len <= len);
        std::slice::from_raw_parts_mut(base.add(c.offset), c.len)
    }
}

fn run_typed<T: Element + Scalar>(plan: &Plan, op: ReduceOp, inputs: &[&Buffer]) -> Vec<Vec<T>> {
    // A validated plan writes every element of a non-input buffer before any step reads it.
    let mut scratch: Vec<Vec<T>> = plan.buffers[plan.inputs..].iter().map(|b| output_vec(b.len)).collect();
    let mut bufs: Vec<(*mut T, usize)> = inputs
        .iter()
        .map(|b| {
            let s = T::slice(b).expect("dtype checked");
            (s.as_ptr() as *mut T, s.len())
        })
        .collect();
    bufs.extend(scratch.iter_mut().map(|v| (v.as_mut_ptr(), v.len())));
    let memory = Memory { bufs };
    let divide_by = (op == ReduceOp::Mean).then_some(plan.inputs);
    let run_step = |step: &Step| unsafe {
        // SAFETY: the plan was validated (see `Memory`).
        match step {
            Step::Copy { src, dst } => copy(memory.read(src), memory.write(dst)),
            Step::Reduce { srcs, dst, last } => {
                let xs: Vec<&[T]> = srcs.iter().map(|c| memory.read(c)).collect();
                reduce_n(op.combiner(), &xs, if *last { divide_by } else { None }, memory.write(dst));
            }
        }
    };
    for stage in &plan.stages {
        #[cfg(feature = "parallel")]
        if stage.len() > 1 && stage.iter().map(|s| s.writes().len).sum::<usize>() >= PARALLEL_STAGE {
            use rayon::prelude::*;
            stage.par_iter().for_each(run_step);
            continue;
        }
        stage.iter().for_each(run_step);
    }
    drop(memory);
    plan.outputs
        .iter()
        .map(|&o| {
            let mut out = std::mem::take(&mut scratch[o - plan.inputs]);
            out.truncate(plan.elements);
            out
        })
        .collect()
}

/// Runs `plan` with `op` over `inputs` (one per plan input, all of the plan's dtype and
/// length); returns one result per input.
pub fn run(plan: &Plan, op: ReduceOp, inputs: &[&Buffer]) -> Result<Vec<Buffer<'static>>> {
    plan.validate()?;
    if inputs.len() != plan.inputs {
        return fail(ErrorCode::InvalidArgument, format!("the plan takes {} inputs, got {}", plan.inputs, inputs.len()));
    }
    for b in inputs {
        if b.dtype() != plan.dtype || b.len() != plan.elements {
            return fail(
                ErrorCode::InvalidArgument,
                format!(
                    "the plan takes {} {} elements per input, got {} {}",
                    plan.elements,
                    plan.dtype.name(),
                    b.len(),
                    b.dtype().name()
                ),
            );
        }
    }
    fn wrap<T>(outs: Vec<Vec<T>>, variant: fn(Cow<'static, [T]>) -> Buffer<'static>) -> Vec<Buffer<'static>>
    where
        [T]: ToOwned<Owned = Vec<T>>,
    {
        outs.into_iter().map(|v| variant(Cow::Owned(v))).collect()
    }
    Ok(match plan.dtype {
        DType::Float32 => wrap(run_typed::<f32>(plan, op, inputs), Buffer::F32),
        DType::Float64 => wrap(run_typed::<f64>(plan, op, inputs), Buffer::F64),
        DType::Float16 => wrap(run_typed::<half::f16>(plan, op, inputs), Buffer::F16),
        DType::BFloat16 => wrap(run_typed::<half::bf16>(plan, op, inputs), Buffer::BF16),
        DType::Int32 => wrap(run_typed::<i32>(plan, op, inputs), Buffer::I32),
        DType::Int64 => wrap(run_typed::<i64>(plan, op, inputs), Buffer::I64),
    })
}
