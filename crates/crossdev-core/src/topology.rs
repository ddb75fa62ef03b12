//! Topology and algorithm choice (SPEC §5.11): DGX-1-like NVLink sets get hierarchical copy
//! with one pack per GPU, other GPU sets NCCL, anything else reduction to one device.

use crate::device::{canonicalize, DeviceSpec};
use crate::error::Result;

/// DGX-1's NVLink neighbours of each GPU: two fully connected quads, GPU i linked to i±4.
pub const DGX1_LINKS: [[usize; 4]; 8] =
    [[1, 2, 3, 4], [0, 2, 3, 5], [0, 1, 3, 6], [0, 1, 2, 7], [0, 5, 6, 7], [1, 4, 6, 7], [2, 4, 5, 7], [3, 4, 5, 6]];

/// `_has_dgx1_like_links`: at least 8 rows, and each of the first 8 equals DGX-1's as a set,
/// optionally with the GPU itself.
pub fn has_dgx1_like_links(links: &[Vec<usize>]) -> bool {
    if links.len() < 8 {
        return false;
    }
    links.iter().zip(DGX1_LINKS.iter()).enumerate().all(|(i, (row, dgx))| {
        let mut got: Vec<usize> = row.clone();
        got.sort_unstable();
        got.dedup();
        let mut plain: Vec<usize> = dgx.to_vec();
        plain.sort_unstable();
        let mut with_self = plain.clone();
        with_self.push(i);
        with_self.sort_unstable();
        got == plain || got == with_self
    })
}

/// What [`choose_the_best`] picked, with the reason (the log line TensorFlow printed).
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Choice {
    /// `ReductionToOneDevice()`.
    ReductionToOneDevice {
        /// Why the all-reduce paths were not taken.
        reason: String,
    },
    /// `AllReduceCrossDeviceOps(algorithm, num_packs)`.
    AllReduce {
        /// `"hierarchical_copy"` or `"nccl"`.
        algorithm: &'static str,
        /// Packs per all-reduce.
        num_packs: usize,
    },
}

/// `_choose_all_reduce_algorithm`: hierarchical copy with one pack per GPU on DGX-1-like links,
/// else NCCL with one pack.
pub fn choose_all_reduce_algorithm(links: &[Vec<usize>]) -> Choice {
    if has_dgx1_like_links(links) {
        crate::log::note(|| format!("Configured hierarchical_copy with num_packs={}", links.len()));
        Choice::AllReduce { algorithm: "hierarchical_copy", num_packs: links.len() }
    } else {
        crate::log::note(|| "Configured nccl all-reduce.".into());
        Choice::AllReduce { algorithm: "nccl", num_packs: 1 }
    }
}

/// `choose_the_best`: `links` are the requested GPUs' peer links (by GPU index), as discovered
/// on this machine or described by the caller; `visible_gpus` how many GPUs this process sees.
/// Non-GPU or invisible devices get reduction to one device.
pub fn choose_the_best(devices: &[String], links: Option<&[Vec<usize>]>, visible_gpus: usize) -> Result<Choice> {
    let specs = devices
        .iter()
        .map(|d| DeviceSpec::parse(&canonicalize(d, None)?))
        .collect::<Result<Vec<_>>>()?;
    let is_gpu = |s: &DeviceSpec| s.device_type.as_deref().is_some_and(|t| t.to_uppercase().contains("GPU"));
    if !specs.iter().all(is_gpu) {
        crate::log::note(|| "warning: Not all devices in DistributionStrategy are visible to TensorFlow session.".into());
        return Ok(Choice::ReductionToOneDevice {
            reason: "Not all devices in DistributionStrategy are visible to TensorFlow session.".into(),
        });
    }
    let invisible = specs.iter().any(|s| s.device_index.is_some_and(|i| i < 0 || i as usize >= visible_gpus));
    match links {
        Some(links) => Ok(choose_all_reduce_algorithm(links)),
        None if invisible => {
            let reason = "Not all devices in distribute strategy are visible by TensorFlow sessions.";
            crate::log::note(|| format!("warning: {reason}"));
            Ok(Choice::ReductionToOneDevice { reason: reason.into() })
        }
        None => Ok(choose_all_reduce_algorithm(&[])),
    }
}

/// `choose_the_best` for the GPUs this machine has: `visible_gpus` GPUs, `machine_links[i]` the
/// GPUs that GPU `i` reaches over NVLink (as `nvidia-smi topo -m` reports). The requested GPUs'
/// rows are taken from it, renumbered by their position among the requested devices; a
/// requested GPU the machine lacks gets reduction to one device, as in TensorFlow.
pub fn choose_on_machine(devices: &[String], visible_gpus: usize, machine_links: &[Vec<usize>]) -> Result<Choice> {
    let specs = devices.iter().map(|d| DeviceSpec::parse(&canonicalize(d, None)?)).collect::<Result<Vec<_>>>()?;
    let indices: Option<Vec<usize>> = specs
        .iter()
        .map(|s| {
            let gpu = s.device_type.as_deref().is_some_and(|t| t.to_uppercase().contains("GPU"));
            s.device_index.filter(|&i| gpu && i >= 0 && (i as usize) < visible_gpus).map(|i| i as usize)
        })
        .collect();
    let Some(indices) = indices else {
        // Not all GPUs, or some not on this machine: TensorFlow's fallbacks and messages.
        return choose_the_best(devices, None, visible_gpus);
    };
    let links: Vec<Vec<usize>> = indices
        .iter()
        .map(|&g| machine_links.get(g).map_or_else(Vec::new, |peers| peers.iter().filter_map(|p| indices.iter().position(|x| x == p)).collect()))
        .collect();
    choose_the_best(devices, Some(&links), visible_gpus)
}
