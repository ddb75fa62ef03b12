//! `AggregateSmallTensorPacker` (`pack_small_tensors` / `unpack_small_tensors`): runs of adjacent
//! small float32 gradients are concatenated into one tensor each; packed tensors come first, the
//! rest follow in their original order, and unpacking restores the exact original order.

use super::check_isomorphic;
use super::layout::Layout;
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

    /// The packs of one device's gradients and the runs packed (inclusive index ranges): each
    /// run of small float32 gradients one pack (decided here, on this device: float32 and
    /// `4·elements ≤ max_bytes`; an isolated small gradient is not packed), then every other
    /// gradient alone, in order.
    pub fn layout(&self, grads: &[Tensor]) -> (Layout, Vec<(usize, usize)>) {
        let counts: Vec<usize> = grads.iter().map(|t| t.num_elements()).collect();
        self.layout_of(&counts, &grads.iter().map(|t| t.dtype()).collect::<Vec<_>>())
    }

    /// [`Self::layout`] of gradients of `counts` elements of `dtypes`.
    pub fn layout_of(&self, counts: &[usize], dtypes: &[DType]) -> (Layout, Vec<(usize, usize)>) {
        let small: Vec<usize> = (0..counts.len()).filter(|&i| dtypes[i] == DType::Float32 && 4 * counts[i] <= self.max_bytes).collect();
        let (ranges, _) = extract_ranges(&small, self.max_group);
        (run_layout(counts, &ranges), ranges)
    }

    /// `pack_small_tensors`: the concrete packs of [`Self::layout`] (decided on device 0).
    /// `None` when nothing was packed.
    pub fn pack(&self, device_grads: &[Vec<Tensor>]) -> Result<(Vec<Vec<Tensor<'static>>>, Option<Vec<PackedRange>>)> {
        check_isomorphic(device_grads)?;
        let owned = || device_grads.iter().map(|g| g.iter().map(|t| t.clone().into_owned()).collect()).collect();
        let Some(first) = device_grads.first() else {
            return Ok((Vec::new(), None));
        };
        let (layout, ranges) = self.layout(first);
        if ranges.is_empty() {
            return Ok((owned(), None));
        }
        let packing = ranges
            .iter()
            .map(|&(a, z)| PackedRange { first: a, last: z, shapes: device_grads.iter().map(|g| g[a..=z].iter().map(|t| t.shape.clone()).collect()).collect() })
            .collect();
        // The packs of single gradients keep their gradients' shapes.
        let out = device_grads
            .iter()
            .map(|grads| {
                let mut packs = layout.concat(grads)?;
                let singles = ranges.len()..;
                for (pack, pieces) in packs[singles.clone()].iter_mut().zip(&layout.packs()[singles]) {
                    if let [x] = pieces.as_slice() {
                        pack.shape = grads[x.tensor].shape.clone();
                    }
                }
                Ok(packs)
            })
            .collect::<Result<_>>()?;
        Ok((out, Some(packing)))
    }

    /// `unpack_small_tensors`: splits the packed tensors and puts every piece back at its
    /// original position.
    pub fn unpack(&self, device_grads: &[Vec<Tensor>], packing: Option<&[PackedRange]>) -> Result<Vec<Vec<Tensor<'static>>>> {
        let Some(packing) = packing.filter(|p| !p.is_empty()) else {
            return Ok(device_grads.iter().map(|g| g.iter().map(|t| t.clone().into_owned()).collect()).collect());
        };
        let ranges: Vec<(usize, usize)> = packing.iter().map(|r| (r.first, r.last)).collect();
        device_grads
            .iter()
            .enumerate()
            .map(|(d, list)| {
                if list.len() < packing.len() {
                    return fail(ErrorCode::ShapeMismatch, format!("device {d} has fewer tensors than packs"));
                }
                // The original list: each run's shapes at its place, the other tensors in between.
                let mut rest = list[packing.len()..].iter();
                let mut shapes: Vec<Vec<usize>> = Vec::new();
                for r in packing {
                    while shapes.len() < r.first {
                        shapes.push(rest.next().map(|t| t.shape.clone()).ok_or_else(|| bad_packing(d))?);
                    }
                    shapes.extend(r.shapes.get(d).ok_or_else(|| bad_packing(d))?.iter().cloned());
                }
                shapes.extend(rest.map(|t| t.shape.clone()));
                let counts: Vec<usize> = shapes.iter().map(|s| crate::tensor::num_elements(s)).collect();
                if ranges.iter().any(|&(a, z)| a > z || z >= counts.len()) || ranges.windows(2).any(|w| w[1].0 <= w[0].1) {
                    return Err(bad_packing(d));
                }
                run_layout(&counts, &ranges).scatter(list, &shapes)
            })
            .collect()
    }
}

/// `ERR_SHAPE_MISMATCH`: device `d`'s tensors do not fit the packing information.
fn bad_packing(d: usize) -> crate::error::CrossDeviceError {
    crate::error::CrossDeviceError::new(ErrorCode::ShapeMismatch, format!("device {d}'s tensors do not match the packing information"))
}

/// Gradients of `counts` elements packed as `ranges` (increasing, disjoint): each run one pack,
/// then every other gradient alone, in order.
fn run_layout(counts: &[usize], ranges: &[(usize, usize)]) -> Layout {
    let mut packed = vec![false; counts.len()];
    let mut groups: Vec<Vec<usize>> = ranges
        .iter()
        .map(|&(a, z)| {
            packed[a..=z].iter_mut().for_each(|p| *p = true);
            (a..=z).collect()
        })
        .collect();
    groups.extend((0..counts.len()).filter(|&i| !packed[i]).map(|i| vec![i]));
    Layout::groups(counts, &groups)
}
