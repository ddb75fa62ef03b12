//! Packers (SPEC §1.4–§1.11, §5.7): turn each device's list of gradients into fewer, larger
//! tensors before an all-reduce, and restore the original list after it. Fewer tensors mean fewer
//! collective launches; the reduced values are identical either way.
//!
//! `device_grads` is a list over devices of lists over variables (`Vec<Vec<Tensor>>`), every
//! device's list isomorphic to the first's.

pub mod by_size;
pub mod concat_split;
pub mod small_tensors;

pub use by_size::{group_by_size, split_grads_by_size};
pub use concat_split::ConcatAndSplitPacker;
pub use small_tensors::{extract_ranges, AggregateSmallTensorPacker};

use crate::error::{fail, ErrorCode, Result};
use crate::tensor::{num_elements, Buffer, Tensor};

/// The flat concatenation of `tensors` (one dtype required).
pub(crate) fn concat_flat(tensors: &[&Tensor]) -> Result<Tensor<'static>> {
    let Some(first) = tensors.first() else {
        return fail(ErrorCode::InvalidArgument, "nothing to pack");
    };
    if let Some(t) = tensors.iter().find(|t| t.dtype() != first.dtype()) {
        return fail(
            ErrorCode::DtypeMismatch,
            format!("Cannot pack tensors of different dtypes: {} and {}", first.dtype().name(), t.dtype().name()),
        );
    }
    let parts: Vec<&Buffer> = tensors.iter().map(|t| &t.data).collect();
    let data = crate::indexed_slices::concat_buffers(&parts);
    let len = data.len();
    Tensor::new(vec![len], data)
}

/// Splits flat `t` into tensors of `shapes` (their element counts must sum to its length).
pub(crate) fn split_flat(t: &Tensor, shapes: &[Vec<usize>]) -> Result<Vec<Tensor<'static>>> {
    let mut offset = 0;
    shapes
        .iter()
        .map(|shape| {
            let n = num_elements(shape);
            let data = crate::map_buffer!(&t.data, v => v[offset..offset + n].to_vec());
            offset += n;
            Tensor::new(shape.clone(), data)
        })
        .collect()
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
