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
const COLUMN_BLOCK: usize = 1 << 14;

/// Where a buffer's element columns `[first, first + len)` live (`base` holds column `first`).
/// A whole buffer starts at column 0; a segment of a segmented buffer (see [`run_in_place`])
/// starts at the segment's first column.
pub(super) struct Region<T> {
    base: *mut T,
    first: usize,
    len: usize,
}

impl<T> Clone for Region<T> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<T> Copy for Region<T> {}

/// Where a plan's buffers live, by plan buffer index. Sound to share across threads because
/// [`Plan::validate`] guarantees that the steps of a stage write disjoint chunks that no other
/// step of the stage reads, and inputs are never written.
pub(super) struct Memory<T> {
    bufs: Vec<Region<T>>,
}

unsafe impl<T: Send> Send for Memory<T> {}
unsafe impl<T: Sync> Sync for Memory<T> {}

impl<T> Memory<T> {
    /// Whole buffers, `(base, len)` each, by plan buffer index.
    pub(super) fn whole(bufs: impl IntoIterator<Item = (*mut T, usize)>) -> Self {
        Memory { bufs: bufs.into_iter().map(|(base, len)| Region { base, first: 0, len }).collect() }
    }

    /// Where chunk `c` starts.
    ///
    /// # Safety
    /// `c` lies inside the region its buffer has here.
    pub(super) unsafe fn ptr(&self, c: &Chunk) -> *mut T {
        let r = self.bufs[c.buf];
        debug_assert!(c.offset >= r.first && c.offset + c.len <= r.first + r.len, "chunk {c:?} outside its region");
        r.base.add(c.offset - r.first)
    }

    /// # Safety
    /// `c` lies inside its buffer's region, and nothing writes it during the borrow.
    pub(super) unsafe fn read(&self, c: &Chunk) -> &[T] {
        std::slice::from_raw_parts(self.ptr(c), c.len)
    }

    /// # Safety
    /// `c` lies inside a non-input buffer's region, and nothing else reads or writes it during
    /// the borrow.
    #[allow(clippy::mut_from_ref)]
    pub(super) unsafe fn write(&self, c: &Chunk) -> &mut [T] {
        std::slice::from_raw_parts_mut(self.ptr(c), c.len)
    }
}

/// Runs `plan` with `op`, reading its inputs and writing its outputs in place, where each is
/// given as consecutive pieces of caller memory (segments): input `i` is the concatenation of
/// `inputs[i]`, and the result for input `i` is written across `outputs[i]`. Every input and
/// output is cut into segments of the same lengths (summing to the plan's `elements`); scratch
/// buffers are allocated here.
///
/// This is what makes packing free: a pack of gradients is the concatenation of (parts of)
/// the gradients, so its plan can read the gradients where they are and write each result
/// straight into its own allocation, with no concatenation before and no split after. With more
/// than one segment the plan must be [column-separable](column_separable): it runs in column
/// blocks that never cross a segment boundary, each block resolved to its segment's memory, so
/// element `i` is combined in exactly the order the plan gives it: the results are bit-identical
/// to running the plan over the concatenation. With one segment any plan runs.
pub fn run_in_place<T: Element + Scalar>(plan: &Plan, op: ReduceOp, inputs: &[Vec<&[T]>], outputs: &mut [Vec<&mut [T]>]) -> Result<()> {
    plan.validate()?;
    check_in_place(plan, inputs, outputs)?;
    run_checked(plan, op, inputs, outputs);
    Ok(())
}

/// Checks the arguments of [`run_in_place`] against a validated `plan`.
fn check_in_place<T: Scalar>(plan: &Plan, inputs: &[Vec<&[T]>], outputs: &[Vec<&mut [T]>]) -> Result<()> {
    let invalid = |what: String| fail(ErrorCode::InvalidArgument, format!("running the {} plan in place: {what}", plan.algorithm));
    if inputs.len() != plan.inputs || outputs.len() != plan.inputs {
        return invalid(format!("it takes {} inputs and outputs, got {} and {}", plan.inputs, inputs.len(), outputs.len()));
    }
    if T::owned(Vec::new()).dtype() != plan.dtype {
        return invalid(format!("it reduces {} elements", plan.dtype.name()));
    }
    let lens: Vec<usize> = inputs.first().map(|s| s.iter().map(|x| x.len()).collect()).unwrap_or_default();
    let same = |segs: &mut dyn Iterator<Item = usize>| segs.eq(lens.iter().copied());
    if !inputs.iter().all(|s| same(&mut s.iter().map(|x| x.len()))) || !outputs.iter().all(|s| same(&mut s.iter().map(|x| x.len()))) {
        return invalid("every input and output needs segments of the same lengths".into());
    }
    if lens.iter().sum::<usize>() != plan.elements {
        return invalid(format!("segments of {} elements in all for {} elements", lens.iter().sum::<usize>(), plan.elements));
    }
    if plan.outputs.iter().any(|&o| plan.buffers[o].len != plan.elements) {
        return fail(ErrorCode::Internal, format!("the {} plan has an output buffer longer than its elements", plan.algorithm));
    }
    if lens.iter().filter(|&&n| n > 0).count() > 1 && !column_separable(plan) {
        return fail(ErrorCode::Internal, format!("the {} plan is not column-separable, so it cannot run over segments", plan.algorithm));
    }
    Ok(())
}

/// [`run_in_place`] after its checks.
fn run_checked<T: Element + Scalar>(plan: &Plan, op: ReduceOp, inputs: &[Vec<&[T]>], outputs: &mut [Vec<&mut [T]>]) {
    // Segments by position: first column and length; empty ones hold nothing and are dropped.
    let lens: Vec<usize> = inputs.first().map(|s| s.iter().map(|x| x.len()).collect()).unwrap_or_default();
    let firsts: Vec<usize> = lens.iter().scan(0, |at, &n| Some(std::mem::replace(at, *at + n))).collect();
    let segments: Vec<usize> = (0..lens.len()).filter(|&k| lens[k] > 0).collect();
    if segments.is_empty() {
        return;
    }
    let mut output_of: Vec<Option<usize>> = vec![None; plan.buffers.len()];
    for (i, &o) in plan.outputs.iter().enumerate() {
        output_of[o] = Some(i);
    }
    // A validated plan writes every element of a scratch buffer before any step reads it.
    let mut scratch: Vec<Vec<T>> = (plan.inputs..plan.buffers.len())
        .map(|b| if output_of[b].is_some() { Vec::new() } else { output_vec(plan.buffers[b].len) })
        .collect();
    let memories: Vec<Memory<T>> = segments
        .iter()
        .map(|&k| {
            let (first, len) = (firsts[k], lens[k]);
            let bufs = (0..plan.buffers.len())
                .map(|b| match output_of[b] {
                    _ if b < plan.inputs => Region { base: inputs[b][k].as_ptr() as *mut T, first, len },
                    Some(i) => Region { base: outputs[i][k].as_mut_ptr(), first, len },
                    None => {
                        let s = &mut scratch[b - plan.inputs];
                        Region { base: s.as_mut_ptr(), first: 0, len: s.len() }
                    }
                })
                .collect();
            Memory { bufs }
        })
        .collect();
    let divide_by = (op == ReduceOp::Mean).then_some(plan.inputs);
    // SAFETY: the plan was validated (see `Memory`); inputs are never written; a column block
    // only narrows chunks, and lies within one segment, whose memory resolves its chunks.
    let run_step = |memory: &Memory<T>, step: &Step, columns: (usize, usize)| unsafe { run_step(memory, op, divide_by, step, columns) };
    let blocked = memories.len() > 1 || (cfg!(feature = "parallel") && plan.elements >= 2 * COLUMN_BLOCK && column_separable(plan));
    if !blocked {
        run_stages(plan, &|step: &Step| run_step(&memories[0], step, (0, usize::MAX)));
        return;
    }
    // Every block of columns is an independent copy of the plan: each runs through all stages
    // while its data sits in cache, blocks in parallel where there are threads.
    let blocks: Vec<(usize, usize, usize)> = segments
        .iter()
        .enumerate()
        .flat_map(|(m, &k)| {
            let end = firsts[k] + lens[k];
            (firsts[k]..end).step_by(COLUMN_BLOCK).map(move |from| (m, from, (from + COLUMN_BLOCK).min(end)))
        })
        .collect();
    let run_block = |&(m, from, to): &(usize, usize, usize)| plan.stages.iter().flatten().for_each(|step| run_step(&memories[m], step, (from, to)));
    #[cfg(feature = "parallel")]
    if plan.elements >= 2 * COLUMN_BLOCK {
        use rayon::prelude::*;
        blocks.par_iter().for_each(run_block);
        return;
    }
    blocks.iter().for_each(run_block);
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
pub fn column_separable(plan: &Plan) -> bool {
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
    Ok(crate::for_dtype!(plan.dtype, T => {
        let ins: Vec<Vec<&[T]>> = inputs.iter().map(|b| vec![T::slice(b).expect("dtype checked")]).collect();
        // Written in full by the plan (a validated plan writes every element of its outputs).
        let mut outs: Vec<Vec<T>> = (0..plan.inputs).map(|_| output_vec(plan.elements)).collect();
        let mut segs: Vec<Vec<&mut [T]>> = outs.iter_mut().map(|v| vec![v.as_mut_slice()]).collect();
        check_in_place(plan, &ins, &segs)?;
        run_checked(plan, op, &ins, &mut segs);
        outs.into_iter().map(T::owned).collect()
    }))
}
