//! `ConcatAndSplitPacker`: concatenate all of a device's gradients and split the result into
//! `num_packs` nearly equal packs (the remainder goes to the last; packs may be empty).

use super::{check_isomorphic, regroup_flat, shaped};
use crate::tensor::num_elements;
use crate::error::{fail, ErrorCode, Result};
use crate::tensor::Tensor;

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

    /// Per device: the flat concatenation split into `num_packs` sizes
    /// `[total/k]·(k-1) + [total - (k-1)·(total/k)]`.
    pub fn pack(&self, device_grads: &[Vec<Tensor>]) -> Result<(Vec<Vec<Tensor<'static>>>, ConcatSplitInfo)> {
        check_isomorphic(device_grads)?;
        let k = self.num_packs;
        let mut packed = Vec::with_capacity(device_grads.len());
        let mut shapes = Vec::with_capacity(device_grads.len());
        for grads in device_grads {
            let total: usize = grads.iter().map(|g| g.num_elements()).sum();
            let sizes: Vec<usize> = (0..k).map(|i| if i + 1 < k { total / k } else { total - (k - 1) * (total / k) }).collect();
            let packs = regroup_flat(&grads.iter().collect::<Vec<_>>(), &sizes)?;
            packed.push(shaped(packs, &sizes.iter().map(|&n| vec![n]).collect::<Vec<_>>())?);
            shapes.push(grads.iter().map(|g| g.shape.clone()).collect());
        }
        Ok((packed, ConcatSplitInfo { shapes }))
    }

    /// Per device: the packs concatenated and split back into the original shapes.
    pub fn unpack(&self, reduced: &[Vec<Tensor>], info: &ConcatSplitInfo) -> Result<Vec<Vec<Tensor<'static>>>> {
        reduced
            .iter()
            .zip(&info.shapes)
            .map(|(packs, shapes)| {
                let sizes: Vec<usize> = shapes.iter().map(|s| num_elements(s)).collect();
                shaped(regroup_flat(&packs.iter().collect::<Vec<_>>(), &sizes)?, shapes)
            })
            .collect()
    }
}
