//! The distributed executor: runs a [`Plan`] across the ranks of a [`ProcessGroup`], each rank
//! holding the buffers of its own devices. A step that reads a chunk of another rank's device
//! receives it first (into its destination for a copy, into a scratch chunk for a reduction);
//! the owner sends it. So the plan's cross-worker steps become exactly its messages, the
//! algorithm that runs is the one the plan wrote down, and every rank combines in the plan's
//! order: results are bit-identical to the one-process [`host`](super::host) executor.

use super::host::{run_stage, run_step, Memory};
use super::{Chunk, Plan, Step};
use crate::error::{fail, ErrorCode, Result};
use crate::group::{Incoming, Outgoing, ProcessGroup, Wait};
use crate::kernels::cast::Element;
use crate::kernels::output_vec;
use crate::reduce_op::ReduceOp;
use crate::tensor::{Buffer, Scalar};

/// Where each device of a plan lives: the rank owning it, by plan device index.
pub type Placement = [usize];

/// This rank's part of one stage: the messages it sends and receives, and the steps it runs
/// once they have arrived (rewritten to read received chunks from scratch buffers numbered
/// after the plan's own).
struct StagePart {
    sends: Vec<(usize, Chunk)>,
    recvs: Vec<(usize, Chunk)>,
    scratch: Vec<usize>,
    steps: Vec<Step>,
}

fn part(plan: &Plan, stage: &[Step], owner: &dyn Fn(usize) -> usize, me: usize) -> StagePart {
    let mut p = StagePart { sends: Vec::new(), recvs: Vec::new(), scratch: Vec::new(), steps: Vec::new() };
    let first_scratch = plan.buffers.len();
    // Sender and receiver walk the steps, and each step's sources, in the same order: the
    // messages between two ranks pair up in posting order.
    for step in stage {
        let dst = step.writes();
        let to = owner(dst.buf);
        if to != me {
            p.sends.extend(step.reads().into_iter().filter(|c| owner(c.buf) == me && c.len > 0).map(|c| (to, c)));
            continue;
        }
        match step {
            Step::Copy { src, dst } if owner(src.buf) != me => {
                if dst.len > 0 {
                    p.recvs.push((owner(src.buf), *dst));
                }
            }
            Step::Copy { .. } => p.steps.push(step.clone()),
            Step::Reduce { srcs, dst, last } => {
                let srcs = srcs
                    .iter()
                    .map(|c| {
                        let from = owner(c.buf);
                        if from == me {
                            return *c;
                        }
                        let local = Chunk { buf: first_scratch + p.scratch.len(), offset: 0, len: c.len };
                        p.scratch.push(c.len);
                        if c.len > 0 {
                            p.recvs.push((from, local));
                        }
                        local
                    })
                    .collect();
                p.steps.push(Step::Reduce { srcs, dst: *dst, last: *last });
            }
        }
    }
    p
}

fn run_typed<T: Element + Scalar>(group: &dyn ProcessGroup, plan: &Plan, op: ReduceOp, owner: &dyn Fn(usize) -> usize, inputs: &[Option<&Buffer>], wait: &Wait) -> Result<Vec<Option<Buffer<'static>>>> {
    let me = group.rank();
    // A validated plan writes every element of a non-input buffer before any step reads it.
    let mut own: Vec<Vec<T>> = (plan.inputs..plan.buffers.len()).map(|b| if owner(b) == me { output_vec(plan.buffers[b].len) } else { Vec::new() }).collect();
    let mut bufs: Vec<(*mut T, usize)> = inputs
        .iter()
        .map(|b| match b.map(|b| T::slice(b).expect("dtype checked")) {
            Some(s) => (s.as_ptr() as *mut T, s.len()),
            None => (std::ptr::null_mut(), 0),
        })
        .collect();
    bufs.extend(own.iter_mut().map(|v| (v.as_mut_ptr(), v.len())));
    let divide_by = (op == ReduceOp::Mean).then_some(plan.inputs);
    for (s, stage) in plan.stages.iter().enumerate() {
        let p = part(plan, stage, owner, me);
        let mut scratch: Vec<Vec<T>> = p.scratch.iter().map(|&len| output_vec(len)).collect();
        let memory = Memory::whole(bufs.iter().copied().chain(scratch.iter_mut().map(|v| (v.as_mut_ptr(), v.len()))));
        let bytes = |c: &Chunk| -> (*mut u8, usize) {
            // SAFETY: chunks of a validated plan lie inside their (local) buffers.
            (unsafe { memory.ptr(c) } as *mut u8, c.len * std::mem::size_of::<T>())
        };
        // SAFETY: within a stage, what is sent is only read, and what is received (copy
        // destinations, fresh scratch) is written by nothing else (Plan::validate).
        let sends: Vec<Outgoing> = p.sends.iter().map(|(peer, c)| { let (ptr, len) = bytes(c); Outgoing { peer: *peer, data: unsafe { std::slice::from_raw_parts(ptr, len) } } }).collect();
        let mut recvs: Vec<Incoming> = p.recvs.iter().map(|(peer, c)| { let (ptr, len) = bytes(c); Incoming { peer: *peer, data: unsafe { std::slice::from_raw_parts_mut(ptr, len) } } }).collect();
        let stage_wait = Wait { what: format!("{} (stage {s} of its {} plan)", wait.what, plan.algorithm), ..wait.clone() };
        group.exchange(&sends, &mut recvs, &stage_wait)?;
        drop((sends, recvs));
        // SAFETY: as for the host executor; received chunks are complete.
        run_stage(&p.steps, &|step: &Step| unsafe { run_step(&memory, op, divide_by, step, (0, usize::MAX)) });
    }
    Ok((0..plan.inputs)
        .map(|i| {
            (owner(i) == me).then(|| {
                let mut out = std::mem::take(&mut own[plan.outputs[i] - plan.inputs]);
                out.truncate(plan.elements);
                T::owned(out)
            })
        })
        .collect())
}

/// Runs `plan` with `op` across `group`: `placement[d]` is the rank owning plan device `d`, and
/// `inputs[i]` is this rank's buffer for plan input `i` (present exactly for the inputs on its
/// own devices). Returns this rank's results, at the same positions.
pub fn run(group: &dyn ProcessGroup, plan: &Plan, op: ReduceOp, placement: &Placement, inputs: &[Option<&Buffer>], wait: &Wait) -> Result<Vec<Option<Buffer<'static>>>> {
    plan.validate()?;
    if placement.len() != plan.devices.len() || placement.iter().any(|&r| r >= group.size()) {
        return fail(ErrorCode::InvalidArgument, format!("the placement names a rank for each of the plan's {} devices, below {}", plan.devices.len(), group.size()));
    }
    let owner = |buf: usize| placement[plan.buffers[buf].device];
    if inputs.len() != plan.inputs {
        return fail(ErrorCode::InvalidArgument, format!("the plan takes {} inputs, got {}", plan.inputs, inputs.len()));
    }
    for (i, b) in inputs.iter().enumerate() {
        match b {
            Some(b) => plan.check_input(b)?,
            None if owner(i) == group.rank() => {
                return fail(ErrorCode::InvalidArgument, format!("input {i} is on this rank's device {} but was not given", plan.devices[plan.buffers[i].device]))
            }
            None => {}
        }
    }
    crate::for_dtype!(plan.dtype, T => run_typed::<T>(group, plan, op, &owner, inputs, wait))
}
