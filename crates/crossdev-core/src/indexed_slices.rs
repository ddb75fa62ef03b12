//! `IndexedSlices`: a sparse gradient, rows `values[k]` of a dense tensor at row `indices[k]`.
//!
//! Aggregating slices concatenates them (duplicate indices are kept; densifying sums them) and
//! MEAN divides the values (SPEC §1.16).

use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::kernels::reduce_n::{reduce_buffers, reduce_n};
use crate::reduce_op::ReduceOp;
use crate::kernels::cast::Element;
use crate::map_buffer;
use crate::tensor::{checked_num_elements, num_elements, Buffer, Scalar, Tensor};
use std::borrow::Cow;

/// Rows of a dense tensor of shape `dense_shape`: `values` has shape `[k, dense_shape[1..]]`,
/// `indices` is a 1-D `int32` or `int64` tensor of `k` row numbers.
#[derive(Clone, Debug, PartialEq)]
pub struct IndexedSlices<'a> {
    /// The rows.
    pub values: Tensor<'a>,
    /// Row numbers, `int32` or `int64`.
    pub indices: Tensor<'a>,
    /// Shape of the dense tensor the rows belong to.
    pub dense_shape: Vec<usize>,
}

impl<'a> IndexedSlices<'a> {
    /// Checks that values, indices and dense shape agree.
    pub fn new(values: Tensor<'a>, indices: Tensor<'a>, dense_shape: Vec<usize>) -> Result<Self> {
        if !matches!(indices.dtype(), DType::Int32 | DType::Int64) || indices.shape.len() != 1 {
            return fail(
                ErrorCode::InvalidTensor,
                format!(
                    "IndexedSlices indices must be a 1-D int32 or int64 tensor, got {} of shape {:?}",
                    indices.dtype().name(),
                    indices.shape
                ),
            );
        }
        let rows_ok = values.shape.first() == Some(&indices.shape[0]);
        if !rows_ok || dense_shape.is_empty() || values.shape[1..] != dense_shape[1..] {
            return fail(
                ErrorCode::ShapeMismatch,
                format!(
                    "IndexedSlices values of shape {:?} do not fit {} indices of a dense shape {:?}",
                    values.shape, indices.shape[0], dense_shape
                ),
            );
        }
        if checked_num_elements(&dense_shape).is_none() || checked_num_elements(&dense_shape[1..]).is_none() {
            return fail(
                ErrorCode::InvalidTensor,
                format!("IndexedSlices dense shape {dense_shape:?} has more elements than can be addressed"),
            );
        }
        Ok(IndexedSlices { values, indices, dense_shape })
    }

    /// A dense tensor seen as slices of all its rows (`indices = 0..rows`, int32).
    pub fn from_dense(t: Tensor<'a>) -> Result<Self> {
        let Some(&rows) = t.shape.first() else {
            return fail(ErrorCode::ShapeMismatch, "A scalar cannot be aggregated with IndexedSlices");
        };
        let indices = Tensor::new(vec![rows], Buffer::I32(Cow::Owned((0..rows as i32).collect())))?;
        let dense_shape = t.shape.clone();
        IndexedSlices::new(t, indices, dense_shape)
    }

    /// Row numbers as `i64`.
    pub fn row_indices(&self) -> Vec<i64> {
        match &self.indices.data {
            Buffer::I32(v) => v.iter().map(|&i| i as i64).collect(),
            Buffer::I64(v) => v.to_vec(),
            _ => unreachable!("checked in IndexedSlices::new"),
        }
    }

    /// The dense tensor: zeros, plus each row added at its index (duplicates sum).
    pub fn densify(&self) -> Result<Tensor<'static>> {
        let rows = self.dense_shape[0];
        let width: usize = num_elements(&self.dense_shape[1..]);
        let indices = self.row_indices();
        if let Some(bad) = indices.iter().find(|&&i| i < 0 || i as usize >= rows) {
            return fail(
                ErrorCode::InvalidTensor,
                format!("IndexedSlices index {bad} is outside [0, {rows})"),
            );
        }
        let len = num_elements(&self.dense_shape);
        let out = map_buffer!(&self.values.data, v => scatter_add(v, &indices, width, len));
        Tensor::new(self.dense_shape.clone(), out)
    }

    /// An owned copy (what arrives on another device).
    pub fn into_owned(self) -> IndexedSlices<'static> {
        IndexedSlices {
            values: self.values.into_owned(),
            indices: self.indices.into_owned(),
            dense_shape: self.dense_shape,
        }
    }
}

fn scatter_add<T: Element + Scalar>(values: &[T], idx: &[i64], width: usize, len: usize) -> Vec<T> {
    let mut out: Vec<T> = bytemuck::zeroed_vec(len);
    for (k, &i) in idx.iter().enumerate() {
        let dst = &mut out[i as usize * width..(i as usize + 1) * width];
        let acc = dst.to_vec();
        reduce_n(ReduceOp::Sum, &[&acc, &values[k * width..(k + 1) * width]], None, dst);
    }
    out
}

/// Concatenates buffers of one dtype (checked by the caller).
pub(crate) fn concat_buffers(parts: &[&Buffer]) -> Buffer<'static> {
    crate::pack::regroup_buffers(parts, &[parts.iter().map(|p| p.len()).sum()]).remove(0)
}

/// Concatenates slices (SPEC §1.16 `aggregate_tensors_or_indexed_slices`, IS branch): values and
/// indices in order, dense shape of the first; if int32 and int64 indices mix, all become int64.
pub fn concat(parts: &[IndexedSlices]) -> Result<IndexedSlices<'static>> {
    let first = &parts[0];
    for p in parts {
        if p.values.dtype() != first.values.dtype() {
            return fail(
                ErrorCode::DtypeMismatch,
                format!(
                    "Cannot aggregate IndexedSlices of {} with {}",
                    first.values.dtype().name(),
                    p.values.dtype().name()
                ),
            );
        }
        if p.values.shape[1..] != first.values.shape[1..] {
            return fail(
                ErrorCode::ShapeMismatch,
                format!(
                    "Cannot aggregate IndexedSlices with rows of shape {:?} and {:?}",
                    &first.values.shape[1..],
                    &p.values.shape[1..]
                ),
            );
        }
    }
    let rows: usize = parts.iter().map(|p| p.values.shape[0]).sum();
    let mut shape = first.values.shape.clone();
    shape[0] = rows;
    let values = Tensor::new(shape, concat_buffers(&parts.iter().map(|p| &p.values.data).collect::<Vec<_>>()))?;
    let all_i32 = parts.iter().all(|p| p.indices.dtype() == DType::Int32);
    let indices = if all_i32 {
        concat_buffers(&parts.iter().map(|p| &p.indices.data).collect::<Vec<_>>())
    } else {
        Buffer::I64(Cow::Owned(parts.iter().flat_map(|p| p.row_indices()).collect()))
    };
    IndexedSlices::new(values, Tensor::new(vec![rows], indices)?, first.dense_shape.clone())
}

/// The slices with every value divided by `n` (MEAN).
pub fn divide(s: &IndexedSlices, n: usize) -> Result<IndexedSlices<'static>> {
    let values = Tensor::new(s.values.shape.clone(), divide_buffer(&s.values.data, n))?;
    IndexedSlices::new(values, s.indices.clone().into_owned(), s.dense_shape.clone())
}

fn divide_buffer(b: &Buffer, n: usize) -> Buffer<'static> {
    reduce_buffers(ReduceOp::Mean, &[b], Some(n), 1).remove(0)
}
