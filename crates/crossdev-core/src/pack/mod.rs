//! Packers (SPEC §1.4–§1.11, §5.7): turn each device's list of gradients into fewer, larger
//! tensors before an all-reduce, and restore the original list after it. Fewer tensors mean fewer
//! collective launches; the reduced values are identical either way.
//!
//! `device_grads` is a list over devices of lists over variables (`Vec<Vec<Tensor>>`), every
//! device's list isomorphic to the first's.
//!
//! A packer only decides a [`Layout`] (which elements of which gradients each pack holds); the
//! all-reduce ops reduce packs in place through it ([`reduce_packs`]: no pack is ever built), and
//! the packers' `pack` / `unpack` make and undo concrete packs for callers that want them.

pub mod by_size;
pub mod concat_split;
pub mod in_place;
pub mod layout;
pub mod small_tensors;

pub use by_size::{group_by_size, split_grads_by_size};
pub use concat_split::ConcatAndSplitPacker;
pub use in_place::{reduce_packs, reduce_packs_concurrently, Pack};
pub use layout::{Layout, Piece};
pub use small_tensors::{extract_ranges, AggregateSmallTensorPacker};

use crate::error::{fail, ErrorCode, Result};
use crate::tensor::{Buffer, Scalar, Tensor};

/// `parts` (one dtype) end to end, regrouped into buffers of `sizes` elements.
pub(crate) fn regroup_buffers(parts: &[&Buffer], sizes: &[usize]) -> Vec<Buffer<'static>> {
    crate::for_dtype!(parts[0].dtype(), T => {
        let srcs: Vec<&[T]> = parts.iter().map(|p| T::slice(p).expect("dtypes checked")).collect();
        let mut outs: Vec<Vec<T>> = sizes.iter().map(|&n| crate::kernels::output_vec(n)).collect();
        crate::kernels::copy::regroup(&srcs, &mut outs.iter_mut().map(|v| v.as_mut_slice()).collect::<Vec<_>>());
        outs.into_iter().map(T::owned).collect()
    })
}

/// Gives each flat buffer its shape.
pub fn shaped(bufs: Vec<Buffer<'static>>, shapes: &[Vec<usize>]) -> Result<Vec<Tensor<'static>>> {
    bufs.into_iter().zip(shapes).map(|(b, s)| Tensor::new(s.clone(), b)).collect()
}

/// Checks that every device lists as many gradients as the first.
pub(crate) fn check_isomorphic(device_grads: &[Vec<Tensor>]) -> Result<()> {
    if let Some(first) = device_grads.first() {
        if let Some((d, g)) = device_grads.iter().enumerate().find(|(_, g)| g.len() != first.len()) {
            return fail(
                ErrorCode::ShapeMismatch,
                format!("device {d} has {} gradients but device 0 has {}", g.len(), first.len()),
            );
        }
    }
    Ok(())
}
