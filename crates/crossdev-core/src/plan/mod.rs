//! Plans: an all-reduce algorithm written down once, as data, before any tensor exists.
//!
//! A [`Plan`] is a list of stages; a stage is a list of [`Step`]s over [`Chunk`]s of buffers that
//! live on logical devices: copy a chunk, or reduce several chunks into one. Steps of one stage
//! never touch what another step of that stage writes, so an executor may run them in parallel;
//! stages run in order. The same plan runs on host memory ([`host`]), and can be counted
//! ([`Plan::bytes_moved`]) and printed, so an algorithm is tested on the CPU and its data movement
//! compared with theory.

pub mod distributed;
pub mod host;

use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use std::collections::BTreeMap;
use std::fmt;

/// A buffer of a plan. Buffers `0..inputs` are the inputs (read-only); the rest are allocated by
/// the executor, zero-filled.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BufferSpec {
    /// Index into [`Plan::devices`].
    pub device: usize,
    /// Elements.
    pub len: usize,
}

/// `len` elements of buffer `buf` from `offset`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Chunk {
    /// Buffer index.
    pub buf: usize,
    /// First element.
    pub offset: usize,
    /// Number of elements.
    pub len: usize,
}

impl Chunk {
    /// The whole of buffer `buf`, `len` elements.
    pub fn whole(buf: usize, len: usize) -> Chunk {
        Chunk { buf, offset: 0, len }
    }

    /// Elements `[start, end)` of buffer `buf`, clipped to its first `limit` elements.
    pub fn range(buf: usize, start: usize, end: usize, limit: usize) -> Chunk {
        let s = start.min(limit);
        Chunk { buf, offset: s, len: end.min(limit).saturating_sub(s) }
    }

    fn overlaps(&self, other: &Chunk) -> bool {
        self.buf == other.buf
            && self.len > 0
            && other.len > 0
            && self.offset < other.offset + other.len
            && other.offset < self.offset + self.len
    }
}

/// One operation of a plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Step {
    /// `dst = src`.
    Copy {
        /// What is read.
        src: Chunk,
        /// What is written.
        dst: Chunk,
    },
    /// `dst = srcs[0] ⊕ srcs[1] ⊕ …`, left to right; when `last`, the result is complete and MEAN
    /// divides it by the number of inputs in the same pass.
    Reduce {
        /// What is read, in combination order.
        srcs: Vec<Chunk>,
        /// What is written.
        dst: Chunk,
        /// Whether this reduction completes its elements.
        last: bool,
    },
}

impl Step {
    pub(crate) fn reads(&self) -> Vec<Chunk> {
        match self {
            Step::Copy { src, .. } => vec![*src],
            Step::Reduce { srcs, .. } => srcs.clone(),
        }
    }

    pub(crate) fn writes(&self) -> Chunk {
        match self {
            Step::Copy { dst, .. } | Step::Reduce { dst, .. } => *dst,
        }
    }
}

/// An all-reduce over `inputs` buffers of `elements` elements: after the stages, `outputs[i]`
/// holds the reduction for the device of input `i`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Plan {
    /// Which algorithm built the plan (for printing and logs).
    pub algorithm: String,
    /// Canonical names of the logical devices.
    pub devices: Vec<String>,
    /// Element type (for byte counts).
    pub dtype: DType,
    /// Elements per input.
    pub elements: usize,
    /// Number of input buffers (buffers `0..inputs`).
    pub inputs: usize,
    /// Every buffer.
    pub buffers: Vec<BufferSpec>,
    /// Stages in order; the steps of a stage are independent.
    pub stages: Vec<Vec<Step>>,
    /// For each input, the buffer (not an input, not shared) holding its result in its first
    /// `elements` elements.
    pub outputs: Vec<usize>,
}

/// Bytes a plan moves between devices.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BytesMoved {
    /// Sum over links.
    pub total: u64,
    /// Bytes per `(source device, destination device)` link, by device name.
    pub by_link: BTreeMap<(String, String), u64>,
}

impl Plan {
    /// Checks that `input` has the plan's dtype and element count.
    pub(crate) fn check_input(&self, input: &crate::tensor::Buffer) -> Result<()> {
        if input.dtype() != self.dtype || input.len() != self.elements {
            return fail(
                ErrorCode::InvalidArgument,
                format!(
                    "the plan takes {} {} elements per input, got {} {}",
                    self.elements,
                    self.dtype.name(),
                    input.len(),
                    input.dtype().name()
                ),
            );
        }
        Ok(())
    }

    /// One line saying what running the plan with `op` does (for `CROSSDEV_DEBUG`'s log).
    pub fn describe_run(&self, op: crate::reduce_op::ReduceOp) -> String {
        format!(
            "plan {}: {} of {} {} elements over {} devices, {} stages, {} bytes across devices",
            self.algorithm,
            op.name(),
            self.elements,
            self.dtype.name(),
            self.inputs,
            self.stages.len(),
            self.bytes_moved().total
        )
    }

    /// Bytes read across devices: each chunk a step reads from a device other than the one it
    /// writes to crosses the link between them once.
    pub fn bytes_moved(&self) -> BytesMoved {
        let mut moved = BytesMoved::default();
        for step in self.stages.iter().flatten() {
            let to = self.buffers[step.writes().buf].device;
            for src in step.reads() {
                let from = self.buffers[src.buf].device;
                if from != to && src.len > 0 {
                    let bytes = (src.len * self.dtype.size()) as u64;
                    moved.total += bytes;
                    *moved
                        .by_link
                        .entry((self.devices[from].clone(), self.devices[to].clone()))
                        .or_default() += bytes;
                }
            }
        }
        moved
    }

    /// Checks the invariants executors rely on: chunks inside their buffers; inputs never
    /// written; within a stage, no step writes what another step reads or writes; every element
    /// read from a non-input buffer written by an earlier stage; every output fully written. So
    /// an executor may run a stage's steps in parallel and need not initialise its buffers.
    pub fn validate(&self) -> Result<()> {
        let broken = |what: String| fail(ErrorCode::Internal, format!("invalid {} plan: {what}", self.algorithm));
        let in_bounds = |c: &Chunk| c.buf < self.buffers.len() && c.offset + c.len <= self.buffers[c.buf].len;
        let mut written: Vec<Coverage> = vec![Coverage::default(); self.buffers.len()];
        for (s, stage) in self.stages.iter().enumerate() {
            for (i, step) in stage.iter().enumerate() {
                let w = step.writes();
                if !in_bounds(&w) || step.reads().iter().any(|r| !in_bounds(r)) {
                    return broken(format!("stage {s} step {i} is out of bounds"));
                }
                if w.buf < self.inputs {
                    return broken(format!("stage {s} step {i} writes an input"));
                }
                if step.reads().iter().any(|r| r.buf >= self.inputs && !written[r.buf].covers(r.offset, r.offset + r.len)) {
                    return broken(format!("stage {s} step {i} reads what no earlier stage wrote"));
                }
                for (j, other) in stage.iter().enumerate() {
                    let clash = other.reads().iter().any(|r| r.overlaps(&w)) || (i != j && other.writes().overlaps(&w));
                    if clash {
                        return broken(format!("stage {s}: step {i} writes what step {j} uses"));
                    }
                }
            }
            for step in stage {
                let w = step.writes();
                written[w.buf].add(w.offset, w.offset + w.len);
            }
        }
        let mut outs = self.outputs.clone();
        outs.sort_unstable();
        outs.dedup();
        let bad = |&o: &usize| o < self.inputs || o >= self.buffers.len() || !written[o].covers(0, self.elements);
        if self.outputs.len() != self.inputs || outs.len() != self.inputs || outs.iter().any(bad) {
            return broken("each input needs an output buffer of its own, fully written".into());
        }
        Ok(())
    }
}

/// The written part of a buffer: disjoint sorted `[start, end)` intervals.
#[derive(Clone, Debug, Default)]
struct Coverage(Vec<(usize, usize)>);

impl Coverage {
    fn add(&mut self, start: usize, end: usize) {
        if start >= end {
            return;
        }
        self.0.push((start, end));
        self.0.sort_unstable();
        let mut merged: Vec<(usize, usize)> = Vec::with_capacity(self.0.len());
        for &(a, z) in &self.0 {
            match merged.last_mut() {
                Some(last) if a <= last.1 => last.1 = last.1.max(z),
                _ => merged.push((a, z)),
            }
        }
        self.0 = merged;
    }

    fn covers(&self, start: usize, end: usize) -> bool {
        start >= end || self.0.iter().any(|&(a, z)| a <= start && end <= z)
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let moved = self.bytes_moved();
        writeln!(
            f,
            "plan {}: {} inputs of {} {} elements, {} stages, {} bytes across devices",
            self.algorithm,
            self.inputs,
            self.elements,
            self.dtype.name(),
            self.stages.len(),
            moved.total
        )?;
        let chunk = |c: &Chunk| format!("{}#{}[{}..{}]", self.devices[self.buffers[c.buf].device], c.buf, c.offset, c.offset + c.len);
        for (s, stage) in self.stages.iter().enumerate() {
            writeln!(f, "  stage {s}:")?;
            for step in stage {
                match step {
                    Step::Copy { src, dst } => writeln!(f, "    copy   {} -> {}", chunk(src), chunk(dst))?,
                    Step::Reduce { srcs, dst, last } => writeln!(
                        f,
                        "    reduce {} -> {}{}",
                        srcs.iter().map(chunk).collect::<Vec<_>>().join(" + "),
                        chunk(dst),
                        if *last { " (final)" } else { "" }
                    )?,
                }
            }
        }
        for ((from, to), bytes) in &moved.by_link {
            writeln!(f, "  link {from} -> {to}: {bytes} bytes")?;
        }
        Ok(())
    }
}

/// Builds plans: declares buffers and appends steps to stages. Algorithms take a first stage
/// index, so that independent sub-algorithms (one per worker, say) share stages and run together.
#[derive(Debug)]
pub struct Builder {
    plan: Plan,
}

impl Builder {
    /// A plan over `devices` whose first `inputs.len()` buffers are the inputs, input `i` on
    /// device `inputs[i]`.
    pub fn new(algorithm: &str, devices: Vec<String>, inputs: &[usize], dtype: DType, elements: usize) -> Builder {
        let buffers = inputs.iter().map(|&device| BufferSpec { device, len: elements }).collect();
        Builder {
            plan: Plan {
                algorithm: algorithm.to_string(),
                devices,
                dtype,
                elements,
                inputs: inputs.len(),
                buffers,
                stages: Vec::new(),
                outputs: Vec::new(),
            },
        }
    }

    /// Elements per input.
    pub fn elements(&self) -> usize {
        self.plan.elements
    }

    /// The device of buffer `buf`.
    pub fn device_of(&self, buf: usize) -> usize {
        self.plan.buffers[buf].device
    }

    /// The index of the device named `canonical`, adding it if the plan has none such.
    pub fn device(&mut self, canonical: &str) -> usize {
        match self.plan.devices.iter().position(|d| d == canonical) {
            Some(i) => i,
            None => {
                self.plan.devices.push(canonical.to_string());
                self.plan.devices.len() - 1
            }
        }
    }

    /// A new zero-filled buffer of `len` elements on `device`.
    pub fn buffer(&mut self, device: usize, len: usize) -> usize {
        self.plan.buffers.push(BufferSpec { device, len });
        self.plan.buffers.len() - 1
    }

    /// Appends `step` to stage `stage`, skipping steps over empty chunks.
    pub fn push(&mut self, stage: usize, step: Step) {
        if step.writes().len == 0 {
            return;
        }
        while self.plan.stages.len() <= stage {
            self.plan.stages.push(Vec::new());
        }
        self.plan.stages[stage].push(step);
    }

    /// The finished plan with `outputs`, validated.
    pub fn finish(mut self, outputs: Vec<usize>) -> Result<Plan> {
        self.plan.outputs = outputs;
        self.plan.stages.retain(|s| !s.is_empty());
        self.plan.validate()?;
        Ok(self.plan)
    }
}
