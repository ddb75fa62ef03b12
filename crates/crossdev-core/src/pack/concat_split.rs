//! `ConcatAndSplitPacker`: concatenate all of a device's gradients and split the result into
//! `num_packs` nearly equal packs (the remainder goes to the last; packs may be empty).

use super::layout::{shared_dtype, Layout};
use super::check_isomorphic;
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::tensor::{num_elements, Tensor};

/// Packs every gradient of a device into `num_packs` flat tensors.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConcatAndSplitPacker {
    num_packs: usize,
}

/// What [`ConcatAndSplitPacker::unpack`] needs: each device's original shapes.
#[derive(Clone, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ConcatSplitInfo {
    /// Per device, the original shapes in order.
    pub shapes: Vec<Vec<Vec<usize>>>,
}

impl ConcatAndSplitPacker {
    /// `num_packs` must be positive.
    pub fn new(num_packs: i64) -> Result<Self> {
        if num_packs <= 0 {
            return fail(ErrorCode::InvalidArgument, "num_packs must be greater than zero.");
        }
        Ok(ConcatAndSplitPacker { num_packs: num_packs as usize })
    }

    /// The number of packs per device.
    pub fn num_packs(&self) -> usize {
        self.num_packs
    }

    /// The packs of gradients of `counts` elements: their concatenation cut into `num_packs`
    /// sizes `[total/k]·(k-1) + [total - (k-1)·(total/k)]`.
    pub fn layout_of(&self, counts: &[usize]) -> Layout {
        let (k, total) = (self.num_packs, counts.iter().sum::<usize>());
        let sizes: Vec<usize> = (0..k).map(|i| if i + 1 < k { total / k } else { total - (k - 1) * (total / k) }).collect();
        Layout::split(counts, &sizes)
    }

    /// The layout of one device's `grads`, which must share a dtype (they are concatenated).
    pub fn layout(&self, grads: &[Tensor]) -> Result<Layout> {
        self.checked_layout_of(&grads.iter().map(|g| g.num_elements()).collect::<Vec<_>>(), &grads.iter().map(|g| g.dtype()).collect::<Vec<_>>())
    }

    /// [`Self::layout`] of gradients of `counts` elements of `dtypes`.
    pub fn checked_layout_of(&self, counts: &[usize], dtypes: &[DType]) -> Result<Layout> {
        if shared_dtype(dtypes.iter().copied())?.is_none() {
            return fail(ErrorCode::InvalidArgument, "nothing to pack");
        }
        Ok(self.layout_of(counts))
    }

    /// Per device: the concrete packs of [`Self::layout`].
    pub fn pack(&self, device_grads: &[Vec<Tensor>]) -> Result<(Vec<Vec<Tensor<'static>>>, ConcatSplitInfo)> {
        check_isomorphic(device_grads)?;
        let packed = device_grads.iter().map(|grads| self.layout(grads)?.concat(grads)).collect::<Result<_>>()?;
        let shapes = device_grads.iter().map(|grads| grads.iter().map(|g| g.shape.clone()).collect()).collect();
        Ok((packed, ConcatSplitInfo { shapes }))
    }

    /// Per device: the packs concatenated and split back into the original shapes.
    pub fn unpack(&self, reduced: &[Vec<Tensor>], info: &ConcatSplitInfo) -> Result<Vec<Vec<Tensor<'static>>>> {
        reduced
            .iter()
            .zip(&info.shapes)
            .map(|(packs, shapes)| self.layout_of(&shapes.iter().map(|s| num_elements(s)).collect::<Vec<_>>()).scatter(packs, shapes))
            .collect()
    }
}
