//! `AggregateSmallTensorPacker` (`pack_small_tensors` / `unpack_small_tensors`): runs of adjacent
//! small float32 gradients are concatenated into one tensor each; packed tensors come first, the
//! rest follow in their original order, and unpacking restores the exact original order.

use super::{check_isomorphic, concat_flat, split_flat};
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::tensor::Tensor;

/// `extract_ranges`: runs of consecutive indices in a strictly increasing list, as inclusive
/// `[first, last]` ranges (of 2 to `limit + 2` indices: TensorFlow's bound, kept as is) and the
/// indices left single.
pub fn extract_ranges(indices: &[usize], range_size_limit: usize) -> (Vec<(usize, usize)>, Vec<usize>) {
    let (mut ranges, mut singles) = (Vec::new(), Vec::new());
    let Some(&start) = indices.first() else {
        return (ranges, singles);
    };
    let (mut first, mut last) = (start, start);
    let mut close = |first: usize, last: usize| {
        if last > first {
            ranges.push((first, last));
        } else {
            singles.push(first);
        }
    };
    for &i in &indices[1..] {
        if i == last + 1 && last - first <= range_size_limit {
            last = i;
        } else {
            close(first, last);
            first = i;
            last = i;
        }
    }
    close(first, last);
    (ranges, singles)
}

/// Packs runs of small float32 gradients (at most `max_bytes` each, runs of at most
/// `max_group + 2`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AggregateSmallTensorPacker {
    max_bytes: usize,
    max_group: usize,
}

/// One packed run: the original positions `first..=last` and their shapes, per device.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct PackedRange {
    /// First original index.
    pub first: usize,
    /// Last original index (inclusive).
    pub last: usize,
    /// Per device, the shapes of the packed gradients.
    pub shapes: Vec<Vec<Vec<usize>>>,
}

impl AggregateSmallTensorPacker {
    /// Both limits must be positive.
    pub fn new(max_bytes: i64, max_group: i64) -> Result<Self> {
        if max_bytes <= 0 || max_group <= 0 {
            return fail(
                ErrorCode::InvalidArgument,
                "agg_small_grads_max_bytes and agg_small_grads_max_group should both be greater than zero.",
            );
        }
        Ok(AggregateSmallTensorPacker { max_bytes: max_bytes as usize, max_group: max_group as usize })
    }

    /// `pack_small_tensors`: "small" is decided on device 0 (float32 and `4·elements ≤
    /// max_bytes`); an isolated small gradient is not packed. `None` when nothing was packed.
    pub fn pack(&self, device_grads: &[Vec<Tensor>]) -> Result<(Vec<Vec<Tensor<'static>>>, Option<Vec<PackedRange>>)> {
        check_isomorphic(device_grads)?;
        let owned = || device_grads.iter().map(|g| g.iter().map(|t| t.clone().into_owned()).collect()).collect();
        let Some(first) = device_grads.first() else {
            return Ok((Vec::new(), None));
        };
        let is_small = |t: &Tensor| t.dtype() == DType::Float32 && 4 * t.num_elements() <= self.max_bytes;
        let small: Vec<usize> = (0..first.len()).filter(|&i| is_small(&first[i])).collect();
        let (ranges, singles) = extract_ranges(&small, self.max_group);
        if ranges.is_empty() {
            return Ok((owned(), None));
        }
        let mut large: Vec<usize> = (0..first.len()).filter(|&i| !is_small(&first[i])).chain(singles).collect();
        large.sort_unstable();
        let mut packing: Vec<PackedRange> = ranges
            .iter()
            .map(|&(first, last)| PackedRange { first, last, shapes: Vec::new() })
            .collect();
        let mut out = Vec::with_capacity(device_grads.len());
        for grads in device_grads {
            let mut list = Vec::with_capacity(ranges.len() + large.len());
            for (r, &(a, z)) in packing.iter_mut().zip(&ranges) {
                list.push(concat_flat(&grads[a..=z].iter().collect::<Vec<_>>())?);
                r.shapes.push(grads[a..=z].iter().map(|t| t.shape.clone()).collect());
            }
            list.extend(large.iter().map(|&i| grads[i].clone().into_owned()));
            out.push(list);
        }
        Ok((out, Some(packing)))
    }

    /// `unpack_small_tensors`: splits the packed tensors and puts every piece back at its
    /// original position.
    pub fn unpack(&self, device_grads: &[Vec<Tensor>], packing: Option<&[PackedRange]>) -> Result<Vec<Vec<Tensor<'static>>>> {
        let Some(packing) = packing.filter(|p| !p.is_empty()) else {
            return Ok(device_grads.iter().map(|g| g.iter().map(|t| t.clone().into_owned()).collect()).collect());
        };
        device_grads
            .iter()
            .enumerate()
            .map(|(d, list)| {
                if list.len() < packing.len() {
                    return fail(ErrorCode::ShapeMismatch, format!("device {d} has fewer tensors than packs"));
                }
                let mut rest: Vec<Tensor<'static>> = list[packing.len()..].iter().map(|t| t.clone().into_owned()).collect();
                for (i, r) in packing.iter().enumerate() {
                    for (k, piece) in split_flat(&list[i], &r.shapes[d])?.into_iter().enumerate() {
                        rest.insert(r.first + k, piece);
                    }
                }
                Ok(rest)
            })
            .collect()
    }
}
