//! Reducing packs in place ("virtual packs"): a pack is never built. Its plan reads every
//! device's gradients where they are, as the segments of one pack-long input, and writes each
//! result straight into the gradient's own result allocation
//! ([`host::run_in_place`]). Packing then costs no pass over
//! memory, where concatenating and splitting cost two (and the page faults of two pack-sized
//! buffers per device), and the results are bit-identical to reducing the concrete packs: element
//! `i` of a pack is combined in the order its plan gives it, whichever memory holds it.
//!
//! Plans that are not column-separable (shuffle), and transports that need one flat tensor
//! (another process), reduce a concrete pack instead ([`Pack::reduce_flat`]); a pack that is one
//! whole gradient is never copied either way.

use super::layout::{concat_pieces, pack_dtype, pick_mut, result_slice, scatter_pieces, Layout, Piece};
use super::check_isomorphic;
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::kernels::cast::Element;
use crate::plan::{host, Plan};
use crate::reduce_op::ReduceOp;
use crate::tensor::{Buffer, Scalar, Tensor};

/// One pack of every device's gradients, handed to the reduction of [`reduce_packs`], which
/// must write its results with [`Pack::run`] or [`Pack::reduce_flat`].
pub struct Pack<'p, 'g> {
    index: usize,
    pieces: &'p [Piece],
    grads: &'p [Vec<Tensor<'g>>],
    counts: &'p [usize],
    results: &'p mut [Vec<Option<Buffer<'static>>>],
    dtype: DType,
    elements: usize,
    written: bool,
}

impl Pack<'_, '_> {
    /// The pack's position in the layout (algorithms such as hierarchical copy rotate roots by it).
    pub fn index(&self) -> usize {
        self.index
    }

    /// The element type of the pack's gradients.
    pub fn dtype(&self) -> DType {
        self.dtype
    }

    /// Elements of the pack on each device.
    pub fn elements(&self) -> usize {
        self.elements
    }

    /// Whether the pack is one gradient, whole.
    fn whole(&self) -> bool {
        matches!(self.pieces, [x] if x.whole(self.counts))
    }

    /// Reduces the pack with `plan` (built over the pack's devices, in order, for
    /// [`Self::elements`] elements of [`Self::dtype`]), in place when the plan allows it (see the
    /// module documentation), else over a concrete pack.
    pub fn run(&mut self, plan: &Plan, op: ReduceOp) -> Result<()> {
        crate::log::note(|| {
            let pieces = if self.pieces.len() > 1 { format!(", a pack of {} pieces", self.pieces.len()) } else { String::new() };
            format!("{}{pieces}", plan.describe_run(op))
        });
        if plan.elements != self.elements || plan.dtype != self.dtype {
            return fail(ErrorCode::Internal, format!("a plan of {} {} elements for a pack of {} {}", plan.elements, plan.dtype.name(), self.elements, self.dtype.name()));
        }
        if self.pieces.len() > 1 && !host::column_separable(plan) {
            return self.reduce_flat(|across| {
                let outs = host::run(plan, op, &across.iter().map(|t| &t.data).collect::<Vec<_>>())?;
                outs.into_iter().map(|b| Tensor::new(vec![b.len()], b)).collect()
            });
        }
        crate::for_dtype!(self.dtype, T => self.run_typed::<T>(plan, op))?;
        self.written = true;
        Ok(())
    }

    fn run_typed<T: Element + Scalar>(&mut self, plan: &Plan, op: ReduceOp) -> Result<()> {
        let (pieces, counts) = (self.pieces, self.counts);
        let inputs: Vec<Vec<&[T]>> = self
            .grads
            .iter()
            .map(|g| pieces.iter().map(|x| &T::slice(&g[x.tensor].data).expect("dtype checked")[x.offset..x.offset + x.len]).collect())
            .collect();
        let tensors: Vec<usize> = pieces.iter().map(|x| x.tensor).collect();
        let mut outputs: Vec<Vec<&mut [T]>> = self
            .results
            .iter_mut()
            .map(|row| {
                pick_mut(row, &tensors)
                    .into_iter()
                    .zip(pieces)
                    .map(|(slot, x)| &mut result_slice::<T>(slot, counts[x.tensor])[x.offset..x.offset + x.len])
                    .collect()
            })
            .collect();
        host::run_in_place(plan, op, &inputs, &mut outputs)
    }

    /// Reduces a concrete pack: `reduce` gets one flat tensor per device (the gradient itself,
    /// not a copy, when the pack is one whole gradient) and returns one reduced tensor per
    /// device, which is split into the gradients' results.
    pub fn reduce_flat(&mut self, reduce: impl FnOnce(&[&Tensor]) -> Result<Vec<Tensor<'static>>>) -> Result<()> {
        let whole = self.whole();
        let packs: Vec<Tensor> = self
            .grads
            .iter()
            .map(|g| match self.pieces {
                [x] if whole => g[x.tensor].view(),
                _ => Tensor { shape: vec![self.elements], data: concat_pieces(self.pieces, g, self.dtype) },
            })
            .collect();
        let reduced = reduce(&packs.iter().collect::<Vec<_>>())?;
        drop(packs);
        if reduced.len() != self.grads.len() || reduced.iter().any(|t| t.num_elements() != self.elements || t.dtype() != self.dtype) {
            return fail(ErrorCode::Internal, format!("the reduction of a pack of {} {} elements over {} devices returned something else", self.elements, self.dtype.name(), self.grads.len()));
        }
        for (row, t) in self.results.iter_mut().zip(reduced) {
            match self.pieces {
                [x] if whole => row[x.tensor] = Some(t.data),
                _ => scatter_pieces(self.pieces, &t.data, row, self.counts),
            }
        }
        self.written = true;
        Ok(())
    }
}

/// Checks that every device has the gradients of device 0: as many, each of the same dtype and
/// element count (what an all-reduce of each gradient, packed or not, needs).
fn check_across(grads: &[Vec<Tensor>]) -> Result<()> {
    check_isomorphic(grads)?;
    let Some(first) = grads.first() else { return Ok(()) };
    for g in &grads[1..] {
        if let Some((a, b)) = first.iter().zip(g).find(|(a, b)| a.dtype() != b.dtype() || a.num_elements() != b.num_elements()) {
            return fail(
                ErrorCode::ShapeMismatch,
                format!("all-reduce needs the same dtype and size on every device: {} {:?} and {} {:?}", a.dtype().name(), a.shape, b.dtype().name(), b.shape),
            );
        }
    }
    Ok(())
}

/// All-reduces `grads` (`grads[device][gradient]`) pack by pack through `layout` (made for
/// device 0's gradients): `reduce` is called once per non-empty pack, in order, and writes the
/// pack's results ([`Pack::run`] or [`Pack::reduce_flat`]). Returns each device's results, in the
/// gradients' order and shapes.
pub fn reduce_packs(grads: &[Vec<Tensor>], layout: &Layout, mut reduce: impl FnMut(&mut Pack) -> Result<()>) -> Result<Vec<Vec<Tensor<'static>>>> {
    check_layout(grads, layout)?;
    let results = reduce_slots(grads, layout, 0, &mut reduce)?;
    assemble(grads, results)
}

/// [`reduce_packs`] with the packs reduced concurrently where there are threads: a small
/// pack's plan keeps one core busy for less time than it takes to hand work to another, and
/// packs reduced one after another wait for the slowest thread of each. Packs are independent
/// when each holds whole gradients (no packing, small-tensor aggregation), and then results are
/// the same as one after another; other layouts, and calls whose diagnostics are collected (on
/// the calling thread), run in order. So does WebAssembly, whose calls allocate on the calling
/// thread only: that is where running out of its memory is caught, leaving nothing behind.
pub fn reduce_packs_concurrently(grads: &[Vec<Tensor>], layout: &Layout, reduce: impl Fn(&mut Pack) -> Result<()> + Sync) -> Result<Vec<Vec<Tensor<'static>>>> {
    #[cfg(all(feature = "parallel", not(target_arch = "wasm32")))]
    if layout.packs().len() > 1 && !crate::log::enabled() && layout.packs().iter().flatten().all(|x| x.whole(layout.counts())) {
        use rayon::prelude::*;
        check_layout(grads, layout)?;
        // Each pack alone: its gradients, as the only pack of a layout of their own.
        let per_pack: Vec<Result<Vec<Vec<Option<Buffer<'static>>>>>> = layout
            .packs()
            .par_iter()
            .enumerate()
            .map(|(index, pieces)| {
                let own: Vec<Vec<Tensor>> = grads.iter().map(|g| pieces.iter().map(|x| g[x.tensor].view()).collect()).collect();
                let counts: Vec<usize> = pieces.iter().map(|x| x.len).collect();
                reduce_slots(&own, &Layout::groups(&counts, &[(0..pieces.len()).collect()]), index, &mut |pack: &mut Pack| reduce(pack))
            })
            .collect();
        let mut results: Vec<Vec<Option<Buffer<'static>>>> = grads.iter().map(|g| vec![None; g.len()]).collect();
        for (pieces, slots) in layout.packs().iter().zip(per_pack) {
            for (row, own) in results.iter_mut().zip(slots?) {
                for (x, slot) in pieces.iter().zip(own) {
                    row[x.tensor] = slot;
                }
            }
        }
        return assemble(grads, results);
    }
    reduce_packs(grads, layout, reduce)
}

/// Checks `grads` against `layout` (see [`check_across`]).
fn check_layout(grads: &[Vec<Tensor>], layout: &Layout) -> Result<()> {
    check_across(grads)?;
    let Some(first) = grads.first() else { return Ok(()) };
    if layout.counts().len() != first.len() || first.iter().zip(layout.counts()).any(|(g, &n)| g.num_elements() != n) {
        return fail(ErrorCode::Internal, "a pack layout made for other gradients");
    }
    Ok(())
}

/// Runs `reduce` over the non-empty packs of `layout`, in order, pack `i` numbered `first + i`;
/// returns the result slots, `[device][gradient]`.
fn reduce_slots(grads: &[Vec<Tensor>], layout: &Layout, first: usize, reduce: &mut dyn FnMut(&mut Pack) -> Result<()>) -> Result<Vec<Vec<Option<Buffer<'static>>>>> {
    let mut results: Vec<Vec<Option<Buffer<'static>>>> = grads.iter().map(|g| vec![None; g.len()]).collect();
    let Some(device0) = grads.first() else { return Ok(results) };
    for (i, pieces) in layout.packs().iter().enumerate() {
        let index = first + i;
        let Some(dtype) = pack_dtype(pieces, device0)? else { continue };
        let mut pack = Pack { index, pieces, grads, counts: layout.counts(), results: &mut results, dtype, elements: pieces.iter().map(|x| x.len).sum(), written: false };
        reduce(&mut pack)?;
        if !pack.written {
            return fail(ErrorCode::Internal, format!("the reduction of pack {index} wrote no result"));
        }
    }
    Ok(results)
}

/// Each device's results, in the gradients' order and shapes, from the slots the packs wrote.
fn assemble(grads: &[Vec<Tensor>], results: Vec<Vec<Option<Buffer<'static>>>>) -> Result<Vec<Vec<Tensor<'static>>>> {
    grads
        .iter()
        .zip(results)
        .map(|(g, row)| {
            g.iter()
                .zip(row)
                .map(|(t, slot)| match slot {
                    Some(data) => Tensor::new(t.shape.clone(), data),
                    None if t.num_elements() == 0 => Ok(Tensor { shape: t.shape.clone(), data: Buffer::zeros(t.dtype(), 0) }),
                    None => fail(ErrorCode::Internal, "a gradient in no pack"),
                })
                .collect()
        })
        .collect()
}
