//! All-reduce specs of `MultiWorkerAllReduce` (SPEC §5.9, §1.12, §1.13): which algorithm reduces
//! which gradients across workers, and the plan each spec builds for one gradient.

use crate::algo::ring::{ring, ring_permutations};
use crate::algo::shuffle::shuffle;
use crate::algo::two_level::{split_by_task, two_level, FirstLevel, UpperLevel};
use crate::algo::{invalid, start};
use crate::device::canonicalize;
use crate::dtype::DType;
use crate::error::{fail, ErrorCode, Result};
use crate::plan::Plan;

/// The algorithms a spec may name.
pub const ALGORITHMS: [&str; 8] = ["nccl", "xring", "nccl/xring", "nccl/rechd", "nccl/pscpu", "pscpu/pscpu", "pscpu", "psgpu"];

/// `AllReduceSpecTuple(alg, shards, limit)`: gradients of at most `limit` elements (all that
/// remain, when `limit` is negative) are reduced with `alg` in `shards` shards.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AllReduceSpec {
    /// One of [`ALGORITHMS`].
    pub alg: String,
    /// Shards (gather devices, or ring subchunks).
    pub shards: usize,
    /// Largest gradient, in elements, this spec takes; negative: every remaining one.
    pub limit: i64,
}

/// A spec as a caller wrote it (a string, a tuple, or a list of tuples).
#[derive(Clone, Debug, PartialEq)]
pub enum RawSpec {
    /// `"alg"`.
    Name(String),
    /// `(alg, shards?, limit?)`; each element as written (strings or numbers), and its printed form.
    Tuple(Vec<serde_json::Value>, String),
    /// A list of specs, with its printed form.
    List(Vec<RawSpec>, String),
    /// Anything else, printed.
    Other(String),
}

impl RawSpec {
    /// The spec a JSON value stands for: a string is a name; an array of arrays a list of
    /// tuples; any other array a tuple (JavaScript has no tuples).
    pub fn from_json(v: &serde_json::Value) -> RawSpec {
        match v {
            serde_json::Value::String(s) => RawSpec::Name(s.clone()),
            serde_json::Value::Array(items) if !items.is_empty() && items.iter().all(|i| i.is_array()) => {
                RawSpec::List(items.iter().map(RawSpec::from_json).collect(), v.to_string())
            }
            serde_json::Value::Array(items) => RawSpec::Tuple(items.clone(), v.to_string()),
            other => RawSpec::Other(other.to_string()),
        }
    }
}

fn tuple(items: &[serde_json::Value], repr: &str) -> Result<AllReduceSpec> {
    if items.is_empty() || items.len() > 3 {
        return fail(ErrorCode::InvalidArgument, format!("Too many elements in the all-reduce spec tuple: {repr}"));
    }
    let alg = items[0].as_str().map(str::to_string);
    let shards = items.get(1).map_or(Some(1), |v| v.as_u64().map(|n| n as usize));
    let limit = items.get(2).map_or(Some(-1), serde_json::Value::as_i64);
    match (alg, shards, limit) {
        (Some(alg), Some(shards), Some(limit)) => checked(AllReduceSpec { alg, shards, limit }),
        _ => fail(
            ErrorCode::InvalidArgument,
            format!("An all-reduce spec tuple is (algorithm: string, shards: integer ≥ 0, limit: integer), got {repr}"),
        ),
    }
}

fn unsupported<T>(alg: &str) -> Result<T> {
    fail(ErrorCode::InvalidArgument, format!("unsupported all_reduce alg: {alg:?}; expected one of {}", ALGORITHMS.join(", ")))
}

fn checked(spec: AllReduceSpec) -> Result<AllReduceSpec> {
    if !ALGORITHMS.contains(&spec.alg.as_str()) {
        return unsupported(&spec.alg);
    }
    Ok(spec)
}

/// Parses a spec: a string is `(alg, 1, -1)`; a tuple one spec; a list one spec per element,
/// each a tuple.
pub fn parse_spec(raw: &RawSpec) -> Result<Vec<AllReduceSpec>> {
    match raw {
        RawSpec::Name(alg) => Ok(vec![checked(AllReduceSpec { alg: alg.clone(), shards: 1, limit: -1 })?]),
        RawSpec::Tuple(items, repr) => Ok(vec![tuple(items, repr)?]),
        RawSpec::List(items, repr) => items
            .iter()
            .map(|item| match item {
                RawSpec::Tuple(t, r) => tuple(t, r),
                _ => fail(ErrorCode::InvalidArgument, format!("A tuple is expected for all-reduce spec: {repr}")),
            })
            .collect(),
        RawSpec::Other(repr) => fail(ErrorCode::InvalidArgument, format!("A tuple is expected for all-reduce spec: {repr}")),
    }
}

/// `group_device_names`: `devices` dealt round-robin into `ceil(n / group_size)` groups of
/// `group_size`, wrapping around (so some devices repeat).
pub fn group_device_names(devices: &[String], group_size: usize) -> Result<Vec<Vec<String>>> {
    if group_size > devices.len() || group_size == 0 {
        return invalid(format!("only {} devices, but group_size={group_size}", devices.len()));
    }
    let n = devices.len();
    let groups = n.div_ceil(group_size);
    let mut out = vec![Vec::new(); groups];
    for i in 0..groups * group_size {
        out[i % groups].push(devices[i % n].clone());
    }
    Ok(out)
}

/// The auxiliary (gather) devices of `alg` for workers named by `prefixes` (§1.13).
pub fn aux_devices(alg: &str, prefixes: &[String], num_gpus: usize) -> Vec<String> {
    if alg.contains("pscpu") {
        prefixes.iter().map(|p| format!("{p}/cpu:0")).collect()
    } else if alg.contains("psgpu") {
        (0..num_gpus).flat_map(|i| prefixes.iter().map(move |p| format!("{p}/gpu:{i}"))).collect()
    } else {
        vec!["/job:localhost/cpu:0".to_string()]
    }
}

/// The second level of `alg` when its first is NCCL's (`nccl/xring`, `nccl/rechd`, `nccl/pscpu`).
fn nccl_upper_level(alg: &str, aux: &[String], num_shards: usize) -> Option<UpperLevel> {
    match alg {
        "nccl/xring" => Some(UpperLevel::Ring(num_shards)),
        "nccl/rechd" => Some(UpperLevel::RecursiveHd),
        "nccl/pscpu" => Some(UpperLevel::Shuffle(aux.to_vec())),
        _ => None,
    }
}

/// What is left of [`sum_grad_plan`]'s plan for `alg` once NCCL has all-reduced within each
/// worker (the second level and the copies back, over devices holding their worker's partial
/// result); `None` when `alg` does not start with NCCL.
pub fn after_nccl_plan(devices: &[String], elements: usize, dtype: DType, alg: &str, aux: &[String], num_shards: usize) -> Result<Option<Plan>> {
    let Some(level) = nccl_upper_level(alg, aux, num_shards) else { return Ok(None) };
    let (mut b, srcs) = start(alg, devices, dtype, elements)?;
    let placed = two_level(&mut b, &srcs, &split_by_task(devices)?, &FirstLevel::Done, &level, 0)?;
    b.finish(placed.outputs).map(Some)
}

/// `sum_grad_and_var_all_reduce` as a plan: the all-reduce of one gradient over `devices` (all
/// devices of all workers, worker-major) with `alg`.
pub fn sum_grad_plan(devices: &[String], elements: usize, dtype: DType, alg: &str, num_workers: usize, gpu_indices: &[usize], aux: &[String], num_shards: usize) -> Result<Plan> {
    let (mut b, srcs) = start(alg, devices, dtype, elements)?;
    let workers = || split_by_task(devices);
    let gather = |b: &mut crate::plan::Builder, names: &[String]| names.iter().map(|g| Ok(b.device(&canonicalize(g, None)?))).collect::<Result<Vec<_>>>();
    let placed = match alg {
        "nccl" => {
            let (pred, rank) = ring_permutations(1, 1, &(0..srcs.len()).collect::<Vec<_>>())?;
            ring(&mut b, &srcs, 1, &pred, &rank, 0, true)
        }
        "xring" => {
            if srcs.len() < 2 {
                return invalid("input_tensors must be length 2 or longer");
            }
            let (pred, rank) = ring_permutations(num_workers, num_shards, gpu_indices)?;
            if pred.first().map_or(0, Vec::len) != srcs.len() {
                return invalid(format!(
                    "xring needs num_workers × num_gpus_per_worker = {} devices, got {}",
                    num_workers * gpu_indices.len(),
                    srcs.len()
                ));
            }
            ring(&mut b, &srcs, num_shards, &pred, &rank, 0, true)
        }
        "pscpu/pscpu" => {
            let second = aux[..num_shards.min(aux.len())].to_vec();
            two_level(&mut b, &srcs, &workers()?, &FirstLevel::Gather(aux.to_vec()), &UpperLevel::Shuffle(second), 0)?
        }
        "pscpu" | "psgpu" => {
            let g = gather(&mut b, aux)?;
            shuffle(&mut b, &srcs, &g, 0, true)?
        }
        other => match nccl_upper_level(other, aux, num_shards) {
            Some(level) => two_level(&mut b, &srcs, &workers()?, &FirstLevel::Nccl, &level, 0)?,
            None => return unsupported(other),
        },
    };
    b.finish(placed.outputs)
}
