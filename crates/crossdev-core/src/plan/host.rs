//! The host executor: runs a [`Plan`] over buffers in host memory, one buffer per logical device,
//! the steps of a stage in parallel (natively) and the stages in order.

use super::{Chunk, Plan, Step};
use crate::error::{fail, ErrorCode, Result};
use crate::kernels::cast::Element;
use crate::kernels::copy::copy;
use crate::kernels::output_vec;
use crate::kernels::reduce_n::reduce_n;
use crate::reduce_op::ReduceOp;
use crate::tensor::{Buffer, Scalar};

/// Elements a stage must write before its steps are spread over threads.
#[cfg(feature = "parallel")]
const PARALLEL_STAGE: usize = 1 << 16;

/// Elements per column block of a column-separable plan: a block of every buffer of an
/// 8-device plan stays within a core's L2 cache through all the stages.
#[cfg(feature = "parallel")]
const COLUMN_BLOCK: usize = 1 << 14;

/// Base addresses and lengths of a plan's buffers. Sound to share across threads because
/// [`Plan::validate`] guarantees that the steps of a stage write disjoint chunks that no other
/// step of the stage reads, and inputs are never written.
pub(super) struct Memory<T> {
    /// `(base, len)` of each buffer, by plan buffer index.
    pub(super) bufs: Vec<(*mut T, usize)>,
}

unsafe impl<T: Send> Send for Memory<T> {}
unsafe impl<T: Sync> Sync for Memory<T> {}

impl<T> Memory<T> {
    /// # Safety
    /// `c` lies inside its buffer, and nothing writes it during the borrow.
    pub(super) unsafe fn read(&self, c: &Chunk) -> &[T] {
        let (base, len) = self.bufs[c.buf];
        debug_assert!(c.offset + c.len <= len);
        std::slice::from_raw_parts(base.add(c.offset), c.len)
    }

    /// # Safety
    /// `c` lies inside a non-input buffer, and nothing else reads or writes it during the borrow.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn write(&self, c: &Chunk) -> &mut [T] {
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
    // SAFETY: the plan was validated (see `Memory`); a column block only narrows chunks.
    let run_step = |step: &Step, columns: (usize, usize)| unsafe { run_step(&memory, op, divide_by, step, columns) };
    let whole = (0, usize::MAX);
    #[cfg(feature = "parallel")]
    if plan.elements >= 2 * COLUMN_BLOCK && column_separable(plan) {
        // Every block of columns is an independent copy of the plan: run blocks in parallel,
        // each through all stages while its data sits in cache.
        use rayon::prelude::*;
        (0..plan.elements.div_ceil(COLUMN_BLOCK)).into_par_iter().for_each(|k| {
            let block = (k * COLUMN_BLOCK, ((k + 1) * COLUMN_BLOCK).min(plan.elements));
            plan.stages.iter().flatten().for_each(|step| run_step(step, block));
        });
    } else {
        run_stages(plan, &|step: &Step| run_step(step, whole));
    }
    #[cfg(not(feature = "parallel"))]
    run_stages(plan, &|step: &Step| run_step(step, whole));
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

/// Runs `step` over `memory`, restricted to the element columns `[from, to)` of its destination
/// (a column block), or whole with `(0, usize::MAX)`. MEAN's last reductions divide by
/// `divide_by`.
///
/// # Safety
/// The step's chunks lie inside `memory`'s buffers, and no other thread writes what it reads or
/// touches what it writes while it runs (what [`Plan::validate`] proves for a stage's steps).
pub(super) unsafe fn run_step<T: Element>(memory: &Memory<T>, op: ReduceOp, divide_by: Option<usize>, step: &Step, (from, to): (usize, usize)) {
    let w = step.writes();
    let (lo, hi) = (w.offset.max(from), (w.offset + w.len).min(to));
    if lo >= hi {
        return;
    }
    let narrow = |c: &Chunk| Chunk { buf: c.buf, offset: c.offset + (lo - w.offset), len: hi - lo };
    match step {
        Step::Copy { src, dst } => copy(memory.read(&narrow(src)), memory.write(&narrow(dst))),
        Step::Reduce { srcs, dst, last } => {
            let xs: Vec<&[T]> = srcs.iter().map(|c| memory.read(&narrow(c))).collect();
            reduce_n(op.combiner(), &xs, if *last { divide_by } else { None }, memory.write(&narrow(dst)));
        }
    }
}

/// Runs the stages in order.
fn run_stages(plan: &Plan, run_step: &(dyn Fn(&Step) + Sync)) {
    for stage in &plan.stages {
        run_stage(stage, run_step);
    }
}

/// Runs the steps of one stage, in parallel when the stage is large.
pub(super) fn run_stage(stage: &[Step], run_step: &(dyn Fn(&Step) + Sync)) {
    #[cfg(feature = "parallel")]
    if stage.len() > 1 && stage.iter().map(|s| s.writes().len).sum::<usize>() >= PARALLEL_STAGE {
        use rayon::prelude::*;
        stage.par_iter().for_each(run_step);
        return;
    }
    stage.iter().for_each(run_step);
}

/// Whether every step reads and writes the same element columns (the chunks of a step all
/// start at the same offset and have the same length). Then element `i` of every buffer depends
/// only on elements `i` of other buffers, and a plan can run one block of columns at a time with
/// bit-identical results. Ring, recursive halving-doubling, hierarchical copy, reduce-to-one
/// and the NCCL-first two-level plans are; shuffle (shards gathered at offset 0) is not.
#[cfg(feature = "parallel")]
fn column_separable(plan: &Plan) -> bool {
    plan.stages.iter().flatten().all(|step| {
        let w = step.writes();
        step.reads().iter().all(|r| r.offset == w.offset && r.len == w.len)
    })
}

/// Runs `plan` with `op` over `inputs` (one per plan input, all of the plan's dtype and
/// length); returns one result per input.
pub fn run(plan: &Plan, op: ReduceOp, inputs: &[&Buffer]) -> Result<Vec<Buffer<'static>>> {
    plan.validate()?;
    if inputs.len() != plan.inputs {
        return fail(ErrorCode::InvalidArgument, format!("the plan takes {} inputs, got {}", plan.inputs, inputs.len()));
    }
    inputs.iter().try_for_each(|b| plan.check_input(b))?;
    Ok(crate::for_dtype!(plan.dtype, T => run_typed::<T>(plan, op, inputs).into_iter().map(T::owned).collect()))
}
