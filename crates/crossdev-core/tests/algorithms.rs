//! The all-reduce algorithms of SPEC §1.3 and §2 as plans: ring orders (§2.2), split helpers
//! (§2.1), every builder run on the host executor with every reduce op and dtype against a
//! sequential reduction, byte counts against theory, plan validation and printing.

mod common;

use common::*;
use crossdev_core::algo::hierarchical_copy::build_hierarchical_copy;
use crossdev_core::algo::recursive_hd::build_recursive_hd_all_reduce;
use crossdev_core::algo::reduce_to_one::build_reduce_to_one;
use crossdev_core::algo::ring::{build_ring_all_reduce, ring_permutations};
use crossdev_core::algo::shuffle::build_shuffle_all_reduce;
use crossdev_core::algo::{padded_piece, ragged_split};
use crossdev_core::kernels::cast::to_f64;
use crossdev_core::plan::{host, Builder, Chunk, Plan, Step};
use crossdev_core::{Buffer, DType, ErrorCode, ReduceOp};
use half::{bf16, f16};
use std::borrow::Cow;
use std::collections::BTreeMap;

// ---------------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------------

/// splitmix64: deterministic, dependency-free random numbers.
struct Rng(u64);

impl Rng {
    fn seeded(what: &str) -> Rng {
        Rng(what.bytes().fold(0x9E37_79B9_7F4A_7C15, |h, b| (h ^ b as u64).wrapping_mul(0x100_0000_01B3)))
    }

    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn pick(&mut self, xs: &[i64]) -> i64 {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    /// Uniform in [-1, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64 * 2.0 - 1.0
    }
}

/// `/cpu:0` … `/cpu:{n-1}`.
fn cpus(n: usize) -> Vec<String> {
    (0..n).map(|i| format!("/cpu:{i}")).collect()
}

/// Worker-major devices: index `w·g + i` is CPU `i` of worker `w`.
fn workers(w: usize, g: usize) -> Vec<String> {
    (0..w).flat_map(|w| (0..g).map(move |i| format!("/job:worker/replica:0/task:{w}/device:CPU:{i}"))).collect()
}

/// Distinct parameter-server devices, none of them an input of any test here.
fn ps_devices(g: usize) -> Vec<String> {
    (0..g).map(|j| format!("/job:ps/replica:0/task:0/device:CPU:{j}")).collect()
}

fn identity_perm(g: usize) -> Vec<usize> {
    (0..g).collect()
}

/// Logical input values for an exact test: integers of every dtype are full-range (wrapping
/// arithmetic makes any order give the same bits); floats are small integers (or ±2/±1/0 for
/// PRODUCT, with ±2 only on the first 8 devices) so that every partial result of any order is
/// exactly representable, even in bfloat16.
fn exact_inputs(dtype: DType, op: ReduceOp, n: usize, len: usize, rng: &mut Rng) -> Vec<Vec<i64>> {
    (0..n)
        .map(|d| {
            (0..len)
                .map(|_| match dtype {
                    DType::Int32 => rng.next() as i32 as i64,
                    DType::Int64 => rng.next() as i64,
                    _ if op == ReduceOp::Product && d < 8 => rng.pick(&[-2, -1, 0, 1, 2]),
                    _ if op == ReduceOp::Product => rng.pick(&[-1, 1]),
                    _ => rng.pick(&[-7, -6, -5, -4, -3, -2, -1, 0, 1, 2, 3, 4, 5, 6, 7]),
                })
                .collect()
        })
        .collect()
}

/// A buffer of `dtype` holding the logical values `xs` (exact: see [`exact_inputs`]).
fn to_buffer(dtype: DType, xs: &[i64]) -> Buffer<'static> {
    match dtype {
        DType::Float32 => Buffer::F32(Cow::Owned(xs.iter().map(|&x| x as f32).collect())),
        DType::Float64 => Buffer::F64(Cow::Owned(xs.iter().map(|&x| x as f64).collect())),
        DType::Float16 => Buffer::F16(Cow::Owned(xs.iter().map(|&x| f16::from_f32(x as f32)).collect())),
        DType::BFloat16 => Buffer::BF16(Cow::Owned(xs.iter().map(|&x| bf16::from_f32(x as f32)).collect())),
        DType::Int32 => Buffer::I32(Cow::Owned(xs.iter().map(|&x| x as i32).collect())),
        DType::Int64 => Buffer::I64(Cow::Owned(xs.to_vec())),
    }
}

macro_rules! int_fold {
    ($t:ty, $op:expr, $vals:expr, $len:expr) => {{
        let n = $vals.len();
        (0..$len)
            .map(|i| {
                let mut a = $vals[0][i] as $t;
                for v in &$vals[1..] {
                    let x = v[i] as $t;
                    a = match $op {
                        ReduceOp::Sum | ReduceOp::Mean => a.wrapping_add(x),
                        ReduceOp::Product => a.wrapping_mul(x),
                        ReduceOp::Max => a.max(x),
                        ReduceOp::Min => a.min(x),
                    };
                }
                if $op == ReduceOp::Mean {
                    a.wrapping_div(n as $t)
                } else {
                    a
                }
            })
            .collect::<Vec<$t>>()
    }};
}

/// The reduction of `vals` computed sequentially, as each dtype must give it: integers wrap and
/// MEAN truncates; floats reduce exactly (small integers) and MEAN divides once in the
/// accumulator type (f32 for the half types), then rounds to the dtype.
fn reference(dtype: DType, op: ReduceOp, vals: &[Vec<i64>], len: usize) -> Buffer<'static> {
    let n = vals.len();
    match dtype {
        DType::Int32 => return Buffer::I32(Cow::Owned(int_fold!(i32, op, vals, len))),
        DType::Int64 => return Buffer::I64(Cow::Owned(int_fold!(i64, op, vals, len))),
        _ => {}
    }
    let exact: Vec<i64> = (0..len)
        .map(|i| {
            let mut a = vals[0][i];
            for v in &vals[1..] {
                a = match op {
                    ReduceOp::Sum | ReduceOp::Mean => a + v[i],
                    ReduceOp::Product => a * v[i],
                    ReduceOp::Max => a.max(v[i]),
                    ReduceOp::Min => a.min(v[i]),
                };
            }
            a
        })
        .collect();
    let mean = op == ReduceOp::Mean;
    let f32s = || exact.iter().map(|&e| if mean { e as f32 / n as f32 } else { e as f32 });
    match dtype {
        DType::Float64 => {
            Buffer::F64(Cow::Owned(exact.iter().map(|&e| if mean { e as f64 / n as f64 } else { e as f64 }).collect()))
        }
        DType::Float32 => Buffer::F32(Cow::Owned(f32s().collect())),
        DType::Float16 => Buffer::F16(Cow::Owned(f32s().map(f16::from_f32).collect())),
        DType::BFloat16 => Buffer::BF16(Cow::Owned(f32s().map(bf16::from_f32).collect())),
        DType::Int32 | DType::Int64 => unreachable!(),
    }
}

/// `None` when equal (floats by value: -0 == +0), else where they first differ.
fn diff(got: &Buffer, want: &Buffer) -> Option<String> {
    if got == want {
        return None;
    }
    if got.dtype() != want.dtype() || got.len() != want.len() {
        return Some(format!("got {} {:?} elements, want {} {:?}", got.len(), got.dtype(), want.len(), want.dtype()));
    }
    if let (Buffer::I64(a), Buffer::I64(b)) = (got, want) {
        let i = (0..a.len()).find(|&i| a[i] != b[i]).unwrap();
        return Some(format!("element {i}: got {}, want {}", a[i], b[i]));
    }
    let (a, b) = (to_f64(got), to_f64(want));
    match (0..a.len()).find(|&i| a[i] != b[i]) {
        Some(i) => Some(format!("element {i}: got {}, want {}", a[i], b[i])),
        None => Some("buffers differ".into()),
    }
}

/// Runs the plan that `build` makes for each dtype with every op, on exact inputs, and demands
/// bitwise (by-value for float zeros) equality of every output with the sequential reduction,
/// and unchanged inputs; then random floats within a tolerance.
fn check_all(what: &str, build: impl Fn(DType) -> Plan) {
    let mut rng = Rng::seeded(what);
    for dtype in DType::ALL {
        let plan = build(dtype);
        plan.validate().unwrap_or_else(|e| panic!("{what} {dtype:?}: {e}"));
        assert_eq!(plan.dtype, dtype, "{what}");
        let (n, len) = (plan.inputs, plan.elements);
        assert_eq!(plan.outputs.len(), n, "{what}: one output per input");
        for op in ReduceOp::ALL {
            let vals = exact_inputs(dtype, op, n, len, &mut rng);
            let inputs: Vec<Buffer> = vals.iter().map(|v| to_buffer(dtype, v)).collect();
            let before = inputs.clone();
            let refs: Vec<&Buffer> = inputs.iter().collect();
            let outs = host::run(&plan, op, &refs).unwrap_or_else(|e| panic!("{what} {dtype:?} {op:?}: {e}"));
            assert_eq!(outs.len(), n, "{what} {dtype:?} {op:?}: outputs");
            let want = reference(dtype, op, &vals, len);
            for (i, out) in outs.iter().enumerate() {
                if let Some(d) = diff(out, &want) {
                    panic!("{what} {dtype:?} {op:?}: output {i} ({}): {d}\n{plan}", plan.devices[plan.buffers[i].device]);
                }
            }
            assert!(inputs == before, "{what} {dtype:?} {op:?}: an input changed");
        }
    }
    check_random_floats(what, &build, &mut rng);
}

/// Random floats in [-1, 1): SUM and MEAN within a tolerance relative to Σ|x| (any summation
/// order), PRODUCT relative to the result, MAX and MIN exactly.
fn check_random_floats(what: &str, build: &impl Fn(DType) -> Plan, rng: &mut Rng) {
    for dtype in [DType::Float32, DType::Float64] {
        let plan = build(dtype);
        let (n, len) = (plan.inputs, plan.elements);
        let eps = if dtype == DType::Float32 { f32::EPSILON as f64 } else { f64::EPSILON };
        let vals: Vec<Vec<f64>> = (0..n).map(|_| (0..len).map(|_| rng.unit()).collect()).collect();
        let inputs: Vec<Buffer> = vals
            .iter()
            .map(|v| match dtype {
                DType::Float32 => Buffer::F32(Cow::Owned(v.iter().map(|&x| x as f32).collect())),
                _ => Buffer::F64(Cow::Owned(v.clone())),
            })
            .collect();
        let before = inputs.clone();
        // What each input holds, exactly, as f64.
        let held: Vec<Vec<f64>> = inputs.iter().map(to_f64).collect();
        let refs: Vec<&Buffer> = inputs.iter().collect();
        for op in ReduceOp::ALL {
            let outs = host::run(&plan, op, &refs).unwrap_or_else(|e| panic!("{what} {dtype:?} {op:?}: {e}"));
            assert_eq!(outs.len(), n);
            for (o, out) in outs.iter().enumerate() {
                let got = to_f64(out);
                assert_eq!(got.len(), len);
                for i in 0..len {
                    let xs: Vec<f64> = held.iter().map(|v| v[i]).collect();
                    let abs: f64 = xs.iter().map(|x| x.abs()).sum();
                    let (want, tol) = match op {
                        ReduceOp::Sum => (xs.iter().sum::<f64>(), 2.0 * n as f64 * eps * abs),
                        ReduceOp::Mean => (xs.iter().sum::<f64>() / n as f64, 2.0 * n as f64 * eps * abs / n as f64 + eps),
                        ReduceOp::Product => {
                            let p: f64 = xs.iter().product();
                            (p, 2.0 * n as f64 * eps * p.abs() + f64::MIN_POSITIVE)
                        }
                        ReduceOp::Max => (xs.iter().cloned().fold(f64::NEG_INFINITY, f64::max), 0.0),
                        ReduceOp::Min => (xs.iter().cloned().fold(f64::INFINITY, f64::min), 0.0),
                    };
                    assert!(
                        (got[i] - want).abs() <= tol,
                        "{what} {dtype:?} {op:?} random: output {o} element {i}: got {}, want {want} ± {tol}",
                        got[i]
                    );
                }
            }
        }
        assert!(inputs == before, "{what} {dtype:?} random: an input changed");
    }
}

/// Bytes received by each device (by name).
fn received(plan: &Plan) -> BTreeMap<String, u64> {
    let mut r = BTreeMap::new();
    for ((_, to), b) in plan.bytes_moved().by_link {
        *r.entry(to).or_default() += b;
    }
    r
}

/// Bytes sent by each device (by name).
fn sent(plan: &Plan) -> BTreeMap<String, u64> {
    let mut r = BTreeMap::new();
    for ((from, _), b) in plan.bytes_moved().by_link {
        *r.entry(from).or_default() += b;
    }
    r
}

/// Every link key is a pair of distinct canonical device names of the plan, and the links add up.
fn assert_links_canonical(plan: &Plan) {
    let moved = plan.bytes_moved();
    for ((from, to), bytes) in &moved.by_link {
        assert_ne!(from, to, "{}: a link from a device to itself", plan.algorithm);
        for d in [from, to] {
            assert_eq!(&canon(d), d, "{}: link key {d} is not canonical", plan.algorithm);
            assert!(d.starts_with("/job:"), "{d}");
            assert!(plan.devices.contains(d), "{}: link key {d} is not a plan device", plan.algorithm);
        }
        assert!(*bytes > 0);
    }
    assert_eq!(moved.total, moved.by_link.values().sum::<u64>(), "{}: total", plan.algorithm);
}

// ---------------------------------------------------------------------------------------------
// §2.2 ring permutations
// ---------------------------------------------------------------------------------------------

#[test]
fn ring_permutations_match_every_spec_vector() {
    type V = Vec<Vec<usize>>;
    let r = |x: std::ops::Range<usize>| x.collect::<Vec<_>>();
    let cases: Vec<(usize, usize, Vec<usize>, V, V)> = vec![
        (1, 0, vec![], vec![], vec![]),
        (1, 1, vec![0], vec![vec![0]], vec![vec![0]]),
        (1, 1, vec![0, 1, 2], vec![vec![2, 0, 1]], vec![vec![0, 1, 2]]),
        (2, 1, vec![0, 1, 2], vec![vec![5, 0, 1, 2, 3, 4]], vec![r(0..6)]),
        (3, 1, vec![0, 1, 2], vec![vec![8, 0, 1, 2, 3, 4, 5, 6, 7]], vec![r(0..9)]),
        (2, 1, vec![2, 1, 0], vec![vec![1, 2, 3, 4, 5, 0]], vec![vec![2, 1, 0, 5, 4, 3]]),
        (1, 2, vec![0, 1, 2, 3], vec![vec![3, 0, 1, 2], vec![3, 0, 1, 2]], vec![vec![0, 1, 2, 3], vec![2, 3, 0, 1]]),
        (
            1,
            4,
            vec![0, 1, 2, 3],
            vec![vec![3, 0, 1, 2]; 4],
            vec![vec![0, 1, 2, 3], vec![3, 0, 1, 2], vec![2, 3, 0, 1], vec![1, 2, 3, 0]],
        ),
        (
            2,
            2,
            vec![0, 1, 2, 3],
            vec![vec![7, 0, 1, 2, 3, 4, 5, 6], vec![3, 0, 5, 2, 7, 4, 1, 6]],
            vec![r(0..8), vec![2, 3, 0, 1, 6, 7, 4, 5]],
        ),
    ];
    for (w, s, perm, pred, rank) in cases {
        let (p, k) = ring_permutations(w, s, &perm).unwrap_or_else(|e| panic!("({w},{s},{perm:?}): {e}"));
        assert_eq!(p, pred, "pred of ({w},{s},{perm:?})");
        assert_eq!(k, rank, "rank of ({w},{s},{perm:?})");
    }
}

#[test]
fn ring_permutations_are_consistent_rings() {
    // For any valid input: rank is a permutation, pred is the device one rank earlier.
    for w in 1..4 {
        for g in 1..6 {
            for s in 1..=g {
                let perm: Vec<usize> = (0..g).rev().collect();
                let (pred, rank) = ring_permutations(w, s, &perm).unwrap();
                let n = w * g;
                assert_eq!((pred.len(), rank.len()), (s, s));
                for sub in 0..s {
                    let mut sorted = rank[sub].clone();
                    sorted.sort_unstable();
                    assert_eq!(sorted, (0..n).collect::<Vec<_>>());
                    for d in 0..n {
                        assert_eq!((rank[sub][pred[sub][d]] + 1) % n, rank[sub][d], "({w},{s},{perm:?}) d={d}");
                    }
                }
            }
        }
    }
}

#[test]
fn ring_permutations_reject_more_subchunks_than_gpus() {
    let (code, msg) = err(ring_permutations(1, 3, &[0, 1]));
    assert_eq!(code, ErrorCode::InvalidArgument);
    assert_eq!(msg, "num_subchunks 3 must be <= num_gpus 2");
    let (_, msg) = err(ring_permutations(2, 5, &[0, 1, 2, 3]));
    assert_eq!(msg, "num_subchunks 5 must be <= num_gpus 4");
    let (_, msg) = err(ring_permutations(4, 2, &[0]));
    assert_eq!(msg, "num_subchunks 2 must be <= num_gpus 1");
    // n == 0 is checked first (SPEC §2.2).
    assert_eq!(ring_permutations(0, 9, &[0, 1]).unwrap(), (vec![], vec![]));
}

// ---------------------------------------------------------------------------------------------
// §2.1 split helpers
// ---------------------------------------------------------------------------------------------

#[test]
fn padded_piece_matches_spec_examples() {
    // (length, pieces) → piece length, pad_len.
    for (len, pieces, piece, pad) in [(10, 4, 3, 2), (5, 4, 2, 3), (3, 5, 1, 2), (15, 4, 4, 1), (8, 4, 2, 0), (16, 8, 2, 0), (0, 3, 0, 0)] {
        assert_eq!(padded_piece(len, pieces), piece, "_padded_split({len}, {pieces})");
        assert_eq!(pieces * piece - len, pad, "pad_len of ({len}, {pieces})");
        if len % pieces != 0 {
            assert_eq!(pieces * piece, pieces * (1 + len / pieces));
        }
    }
}

#[test]
fn ragged_split_gives_the_remainder_to_the_last_piece() {
    let sizes = |len, pieces| ragged_split(len, pieces).iter().map(|&(a, z)| z - a).collect::<Vec<_>>();
    assert_eq!(ragged_split(10, 4), vec![(0, 2), (2, 4), (4, 6), (6, 10)]);
    assert_eq!(sizes(10, 4), vec![2, 2, 2, 4]);
    assert_eq!(sizes(5, 4), vec![1, 1, 1, 2]);
    assert_eq!(sizes(3, 5), vec![0, 0, 0, 0, 3]); // pieces > L: the first pieces are empty
    assert_eq!(sizes(15, 4), vec![3, 3, 3, 6]);
    assert_eq!(sizes(8, 4), vec![2, 2, 2, 2]);
    assert_eq!(sizes(7, 1), vec![7]);
    for len in 0..40 {
        for pieces in 1..9 {
            let parts = ragged_split(len, pieces);
            assert_eq!(parts.len(), pieces);
            assert_eq!(parts[0].0, 0);
            assert_eq!(parts[pieces - 1].1, len);
            for w in parts.windows(2) {
                assert_eq!(w[0].1, w[1].0, "contiguous");
            }
            for &(a, z) in &parts[..pieces - 1] {
                assert_eq!(z - a, len / pieces);
            }
        }
    }
}

#[test]
fn chunk_range_clips_to_the_data() {
    assert_eq!(Chunk::range(3, 4, 6, 5), Chunk { buf: 3, offset: 4, len: 1 });
    assert_eq!(Chunk::range(3, 6, 8, 5).len, 0);
    assert_eq!(Chunk::range(3, 0, 2, 5), Chunk { buf: 3, offset: 0, len: 2 });
    assert_eq!(Chunk::whole(1, 7), Chunk { buf: 1, offset: 0, len: 7 });
}

// ---------------------------------------------------------------------------------------------
// Ring (§2.3)
// ---------------------------------------------------------------------------------------------

/// The SPEC §2.3 cases: (workers, gpus, shape → elements, subchunks).
const RING_SPEC_CASES: [(usize, usize, usize, usize); 8] =
    [(1, 2, 8, 1), (1, 2, 16, 1), (6, 1, 8, 1), (1, 8, 32, 1), (1, 8, 120, 1), (2, 8, 91, 1), (2, 8, 64, 2), (2, 8, 64, 4)];

fn ring_devices(w: usize, g: usize) -> Vec<String> {
    if w == 1 {
        cpus(g)
    } else {
        workers(w, g)
    }
}

#[test]
fn ring_spec_cases_reduce_exactly() {
    for (w, g, len, s) in RING_SPEC_CASES {
        let devices = ring_devices(w, g);
        let perm = identity_perm(g);
        check_all(&format!("ring ({w},{g},{len},{s})"), |dt| build_ring_all_reduce(&devices, len, dt, w, s, &perm).unwrap());
    }
}

#[test]
fn ring_odd_device_counts_and_ragged_lengths() {
    for n in [3usize, 5, 7] {
        let devices = cpus(n);
        let perms = [identity_perm(n), (0..n).rev().collect(), (0..n).map(|i| (i * 2) % n).collect()];
        for s in 1..=3.min(n) {
            for len in [1, 2, n - 1, n + 1, 2 * n * s + 3, 17, 100, 257] {
                for perm in &perms {
                    check_all(&format!("ring n={n} S={s} L={len} perm={perm:?}"), |dt| {
                        build_ring_all_reduce(&devices, len, dt, 1, s, perm).unwrap()
                    });
                }
            }
        }
    }
    // Several workers with an odd number of GPUs each, and permuted GPU orders.
    for (w, g, s, len) in [(3, 3, 2, 29), (2, 3, 3, 10), (3, 5, 2, 61), (5, 1, 1, 11)] {
        let devices = workers(w, g);
        let perm: Vec<usize> = (0..g).map(|i| (i + 1) % g).collect();
        check_all(&format!("ring ({w},{g}) S={s} L={len}"), |dt| build_ring_all_reduce(&devices, len, dt, w, s, &perm).unwrap());
    }
}

#[test]
fn ring_even_counts_every_subchunk_count() {
    for n in [2usize, 4, 6, 8] {
        let devices = cpus(n);
        for s in 1..=n {
            for len in [n * s, 3 * n * s, n * s + 1, 5] {
                check_all(&format!("ring n={n} S={s} L={len}"), |dt| {
                    build_ring_all_reduce(&devices, len, dt, 1, s, &identity_perm(n)).unwrap()
                });
            }
        }
    }
}

#[test]
fn ring_zero_length() {
    for n in [2, 3, 8] {
        let devices = cpus(n);
        for s in [1, 2] {
            check_all(&format!("ring n={n} S={s} L=0"), |dt| build_ring_all_reduce(&devices, 0, dt, 1, s, &identity_perm(n)).unwrap());
        }
    }
}

#[test]
fn ring_structure_of_spec_example() {
    // 1 worker, 4 devices, 2 subchunks, 16 elements: 8 chunks of 2 (pad_len 0), 2(n-1) stages of
    // n·S steps each.
    let plan = build_ring_all_reduce(&cpus(4), 16, DType::Float32, 1, 2, &identity_perm(4)).unwrap();
    assert_eq!(plan.stages.len(), 6);
    for stage in &plan.stages {
        assert_eq!(stage.len(), 8);
        for step in stage {
            let chunks = match step {
                Step::Copy { src, dst } => vec![*src, *dst],
                Step::Reduce { srcs, dst, .. } => srcs.iter().chain([dst]).cloned().collect(),
            };
            assert!(chunks.iter().all(|c| c.len == 2 && c.offset % 2 == 0), "{step:?}");
        }
    }
    assert_eq!(plan.outputs.len(), 4);
    // 2(n-1)·S messages per device, 2n(n-1)S in all.
    let steps_across: usize = plan
        .stages
        .iter()
        .flatten()
        .map(|s| match s {
            Step::Copy { .. } => 1,
            Step::Reduce { srcs, dst, .. } => {
                srcs.iter().filter(|c| plan.buffers[c.buf].device != plan.buffers[dst.buf].device).count()
            }
        })
        .sum();
    assert_eq!(steps_across, 2 * 4 * 3 * 2);
}

#[test]
fn ring_errors() {
    let (code, msg) = err(build_ring_all_reduce(&cpus(1), 8, DType::Float32, 1, 1, &[0]));
    assert_eq!((code, msg.as_str()), (ErrorCode::InvalidArgument, "input_tensors must be length 2 or longer"));
    let (_, msg) = err(build_ring_all_reduce(&[], 8, DType::Float32, 0, 1, &[]));
    assert_eq!(msg, "input_tensors must be length 2 or longer");
    let (_, msg) = err(build_ring_all_reduce(&cpus(4), 8, DType::Float32, 1, 5, &identity_perm(4)));
    assert_eq!(msg, "num_subchunks 5 must be <= num_gpus 4");
    // build_nccl_then_ring's trap (SPEC §2.7): gpu_perm [0] with subdiv 2.
    let (_, msg) = err(build_ring_all_reduce(&cpus(3), 8, DType::Float32, 3, 2, &[0]));
    assert_eq!(msg, "num_subchunks 2 must be <= num_gpus 1");
    // Device count must be workers × gpus.
    let (code, _) = err(build_ring_all_reduce(&cpus(4), 8, DType::Float32, 1, 1, &identity_perm(3)));
    assert_eq!(code, ErrorCode::InvalidArgument);
    let (code, _) = err(build_ring_all_reduce(&cpus(4), 8, DType::Float32, 1, 0, &identity_perm(4)));
    assert_eq!(code, ErrorCode::InvalidArgument);
    // A bad device string.
    assert!(build_ring_all_reduce(&["/cpu:0".into(), "/gpu:x".into()], 8, DType::Float32, 1, 1, &[0, 1]).is_err());
}

// ---------------------------------------------------------------------------------------------
// Recursive halving-doubling (§2.4)
// ---------------------------------------------------------------------------------------------

#[test]
fn recursive_hd_powers_of_two() {
    for n in [1usize, 2, 4, 8] {
        let devices = cpus(n);
        for len in [0, n, 2 * n, 8 * n, 40 * n] {
            check_all(&format!("rechd n={n} L={len}"), |dt| build_recursive_hd_all_reduce(&devices, len, dt).unwrap());
        }
    }
}

#[test]
fn recursive_hd_spec_cases() {
    // (workers, gpus, shape → elements).
    for (w, g, len) in [(1, 2, 8), (1, 2, 16), (1, 8, 32), (1, 8, 120), (2, 8, 64), (4, 8, 128)] {
        let devices = ring_devices(w, g);
        check_all(&format!("rechd ({w},{g},{len})"), |dt| build_recursive_hd_all_reduce(&devices, len, dt).unwrap());
    }
}

#[test]
fn recursive_hd_devices_own_bit_reversed_pieces() {
    // After the gather, device d holds the finished piece numbered by d's bits reversed.
    for n in [2usize, 4, 8] {
        let len = 4 * n;
        let plan = build_recursive_hd_all_reduce(&cpus(n), len, DType::Float32).unwrap();
        let bits = n.trailing_zeros();
        let mut owned = vec![None; n];
        for step in plan.stages.iter().flatten() {
            if let Step::Reduce { dst, last: true, .. } = step {
                let d = plan.buffers[dst.buf].device;
                assert_eq!(dst.len, len / n);
                assert!(owned[d].replace(dst.offset / (len / n)).is_none());
            }
        }
        for d in 0..n {
            let rev = (d.reverse_bits() >> (usize::BITS - bits)) as usize;
            assert_eq!(owned[d], Some(rev), "n={n} device {d}");
        }
        assert_eq!(plan.stages.len(), 2 * bits as usize);
    }
}

#[test]
fn recursive_hd_errors() {
    for n in [3, 5, 6, 7] {
        let (code, msg) = err(build_recursive_hd_all_reduce(&cpus(n), 6 * n, DType::Float32));
        assert_eq!((code, msg.as_str()), (ErrorCode::InvalidArgument, "num_devices must be a power of 2"), "n={n}");
    }
    for (n, len) in [(2, 7), (4, 6), (8, 12), (4, 2)] {
        let (code, msg) = err(build_recursive_hd_all_reduce(&cpus(n), len, DType::Float32));
        assert_eq!(code, ErrorCode::InvalidArgument, "n={n} L={len}");
        assert!(msg.contains("divisible"), "{msg}");
    }
}

// ---------------------------------------------------------------------------------------------
// Shuffle (§2.5)
// ---------------------------------------------------------------------------------------------

#[test]
fn shuffle_gather_counts_and_placements() {
    for n in 1..=8usize {
        let devices = cpus(n);
        for g in 1..=4usize {
            let gather_sets: Vec<(&str, Vec<String>)> = vec![
                ("inputs", cpus(g)),              // among the inputs (or partly beyond them)
                ("ps", ps_devices(g)),            // none of the inputs
                ("dup", vec!["/cpu:0".into(); g]), // one device, several shards
            ];
            for (kind, gather) in &gather_sets {
                for len in [0, 1, 3, 8, 17, 100] {
                    check_all(&format!("shuffle n={n} g={g} {kind} L={len}"), |dt| {
                        build_shuffle_all_reduce(&devices, gather, len, dt).unwrap()
                    });
                }
            }
        }
    }
}

#[test]
fn shuffle_gathers_on_a_device_that_is_no_input() {
    let gather = vec!["/job:localhost/replica:0/task:0/device:CPU:7".to_string()];
    check_all("shuffle via CPU:7", |dt| build_shuffle_all_reduce(&cpus(3), &gather, 10, dt).unwrap());
    let plan = build_shuffle_all_reduce(&cpus(3), &gather, 10, DType::Float32).unwrap();
    assert_eq!(plan.devices, canon_all(&["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:7"]));
    // Every input and every result crosses to / from CPU:7.
    assert_eq!(received(&plan)[&canon("/cpu:7")], 3 * 10 * 4);
    assert_eq!(sent(&plan)[&canon("/cpu:7")], 3 * 10 * 4);
}

#[test]
fn shuffle_spec_cases() {
    // (workers, gpus, shape → elements, gather shards), gather devices on the local CPU.
    for (w, g, len, shards) in
        [(1, 2, 8, 1), (1, 2, 16, 1), (1, 8, 32, 1), (1, 8, 120, 1), (2, 8, 91, 3), (2, 8, 64, 2), (2, 8, 64, 4), (4, 8, 128, 4)]
    {
        let devices = workers(w, g);
        let gather: Vec<String> = (0..shards).map(|j| format!("/job:localhost/replica:0/task:0/device:CPU:{j}")).collect();
        check_all(&format!("shuffle ({w},{g},{len},{shards})"), |dt| build_shuffle_all_reduce(&devices, &gather, len, dt).unwrap());
    }
}

#[test]
fn shuffle_needs_a_gather_device() {
    let (code, _) = err(build_shuffle_all_reduce(&cpus(2), &[], 4, DType::Float32));
    assert_eq!(code, ErrorCode::InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Hierarchical copy (§1.3, Part A.3)
// ---------------------------------------------------------------------------------------------

#[test]
fn hierarchical_copy_every_count_and_pack_index() {
    for n in 1..=8usize {
        let devices = cpus(n);
        for index in 0..10 {
            for len in [0, 5, 64] {
                check_all(&format!("hierarchical_copy n={n} index={index} L={len}"), |dt| {
                    build_hierarchical_copy(&devices, len, dt, index).unwrap()
                });
            }
        }
    }
}

#[test]
fn hierarchical_copy_odd_count_keeps_every_device() {
    // TF dropped tower 2h for odd n (Part A.3): here the sum includes it. Only the last device
    // contributes 1, so a dropped gradient would show as 0.
    for n in [3usize, 5, 7] {
        for index in 0..n {
            let plan = build_hierarchical_copy(&cpus(n), 4, DType::Float32, index).unwrap();
            let inputs: Vec<Buffer> =
                (0..n).map(|d| Buffer::F32(Cow::Owned(vec![if d == n - 1 { 1.0 } else { 0.0 }; 4]))).collect();
            let refs: Vec<&Buffer> = inputs.iter().collect();
            for out in host::run(&plan, ReduceOp::Sum, &refs).unwrap() {
                assert_eq!(out, Buffer::F32(Cow::Owned(vec![1.0; 4])), "n={n} index={index}");
            }
        }
    }
}

#[test]
fn hierarchical_copy_roots_follow_the_spec_table() {
    // For even n: the group sums live on i % n and (i % n + h) % n, the total on i % n, and each
    // device copies from the root of its own half.
    for n in [2usize, 4, 6, 8] {
        let h = n / 2;
        let devices = canon_all(&cpus(n).iter().map(|s| s.as_str()).collect::<Vec<_>>());
        for index in 0..12 {
            let plan = build_hierarchical_copy(&cpus(n), 8, DType::Float32, index).unwrap();
            assert_eq!(plan.devices, devices);
            let g0 = index % n;
            let g1 = (g0 + h) % n;
            let dev = |c: &Chunk| plan.buffers[c.buf].device;
            let mut group_roots = Vec::new();
            let mut total = None;
            for step in plan.stages.iter().flatten() {
                match step {
                    Step::Reduce { dst, last: false, srcs } => {
                        assert_eq!(srcs.len(), h);
                        group_roots.push(dev(dst));
                    }
                    Step::Reduce { dst, last: true, .. } => total = Some(dev(dst)),
                    Step::Copy { src, dst } => {
                        let j = dev(dst);
                        let root = if j == g1 { g0 } else if (j < h) == (g0 < h) { g0 } else { g1 };
                        assert_eq!(dev(src), root, "n={n} index={index}: device {j} copies from its half's root");
                    }
                }
            }
            group_roots.sort_unstable();
            let mut want = vec![g0, g1];
            want.sort_unstable();
            assert_eq!(group_roots, want, "n={n} index={index}");
            assert_eq!(total, Some(g0), "n={n} index={index}");
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Reduce to one
// ---------------------------------------------------------------------------------------------

#[test]
fn reduce_to_one_every_count() {
    for n in 1..=8usize {
        let devices = cpus(n);
        for len in [0, 1, 13, 100] {
            check_all(&format!("reduce_to_one n={n} L={len}"), |dt| build_reduce_to_one(&devices, len, dt).unwrap());
        }
    }
}

// ---------------------------------------------------------------------------------------------
// MEAN divides by the number of inputs
// ---------------------------------------------------------------------------------------------

#[test]
fn mean_divides_by_the_number_of_inputs() {
    // Every input holds n: the mean is n whatever the algorithm (a divide by the wrong count, or a
    // divide applied twice, would show).
    let plans: Vec<Plan> = vec![
        build_ring_all_reduce(&cpus(6), 12, DType::Float64, 1, 2, &identity_perm(6)).unwrap(),
        build_ring_all_reduce(&cpus(3), 12, DType::Float64, 1, 1, &identity_perm(3)).unwrap(),
        build_recursive_hd_all_reduce(&cpus(8), 16, DType::Float64).unwrap(),
        build_shuffle_all_reduce(&cpus(5), &ps_devices(3), 12, DType::Float64).unwrap(),
        build_hierarchical_copy(&cpus(7), 12, DType::Float64, 3).unwrap(),
        build_reduce_to_one(&cpus(4), 12, DType::Float64).unwrap(),
        build_reduce_to_one(&cpus(1), 12, DType::Float64).unwrap(),
    ];
    for plan in plans {
        let n = plan.inputs;
        let inputs: Vec<Buffer> = (0..n).map(|_| Buffer::F64(Cow::Owned(vec![n as f64; plan.elements]))).collect();
        let refs: Vec<&Buffer> = inputs.iter().collect();
        for out in host::run(&plan, ReduceOp::Mean, &refs).unwrap() {
            assert_eq!(out, Buffer::F64(Cow::Owned(vec![n as f64; plan.elements])), "{}", plan.algorithm);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Byte counts
// ---------------------------------------------------------------------------------------------

#[test]
fn ring_bytes_match_theory() {
    for dtype in DType::ALL {
        let size = dtype.size() as u64;
        for n in 2..=8usize {
            for s in 1..=n.min(4) {
                for k in [1, 3] {
                    let len = n * s * k;
                    let plan = build_ring_all_reduce(&cpus(n), len, dtype, 1, s, &identity_perm(n)).unwrap();
                    assert_links_canonical(&plan);
                    let per_device = (2 * (n - 1) * len / n) as u64 * size;
                    let got = received(&plan);
                    assert_eq!(got.len(), n, "n={n} S={s} L={len}");
                    assert!(got.values().all(|&b| b == per_device), "n={n} S={s} L={len}: {got:?}, want {per_device} each");
                    assert!(sent(&plan).values().all(|&b| b == per_device), "n={n} S={s} L={len}: sent");
                    assert_eq!(plan.bytes_moved().total, (2 * (n - 1) * len) as u64 * size);
                    assert_eq!(plan.stages.len(), 2 * (n - 1));
                }
            }
        }
    }
    // Several workers: the ring crosses worker boundaries, same totals.
    let plan = build_ring_all_reduce(&workers(2, 4), 64, DType::Float32, 2, 2, &identity_perm(4)).unwrap();
    assert_links_canonical(&plan);
    assert!(received(&plan).values().all(|&b| b == 2 * 7 * 8 * 4));
    assert_eq!(plan.bytes_moved().total, 2 * 7 * 64 * 4);
}

#[test]
fn hierarchical_copy_bytes_match_theory() {
    for dtype in DType::ALL {
        let size = dtype.size() as u64;
        for n in 2..=8usize {
            for index in 0..10 {
                let len = 24;
                let plan = build_hierarchical_copy(&cpus(n), len, dtype, index).unwrap();
                assert_links_canonical(&plan);
                // (2n-2) full transfers (SPEC §1.3 for even n; also for odd n with the odd device
                // in the second group).
                assert_eq!(plan.bytes_moved().total, (2 * n as u64 - 2) * len as u64 * size, "n={n} index={index}");
            }
        }
    }
    assert_eq!(build_hierarchical_copy(&cpus(1), 24, DType::Float32, 3).unwrap().bytes_moved().total, 0);
}

#[test]
fn shuffle_bytes_match_theory() {
    for dtype in DType::ALL {
        let size = dtype.size() as u64;
        for d in 1..=8usize {
            for g in 1..=4usize {
                for len in [12usize, 13, 3] {
                    let gather = ps_devices(g);
                    let plan = build_shuffle_all_reduce(&cpus(d), &gather, len, dtype).unwrap();
                    assert_links_canonical(&plan);
                    let total = (d * len) as u64 * size;
                    let into_gather: u64 = received(&plan).iter().filter(|(k, _)| k.starts_with("/job:ps")).map(|(_, v)| v).sum();
                    let out_of_gather: u64 = sent(&plan).iter().filter(|(k, _)| k.starts_with("/job:ps")).map(|(_, v)| v).sum();
                    assert_eq!(into_gather, total, "d={d} g={g} L={len}: in");
                    assert_eq!(out_of_gather, total, "d={d} g={g} L={len}: out");
                    assert_eq!(plan.bytes_moved().total, 2 * total, "d={d} g={g} L={len}");
                    // Each destination fetches exactly L elements.
                    for dev in canon_all(&cpus(d).iter().map(|s| s.as_str()).collect::<Vec<_>>()) {
                        assert_eq!(received(&plan)[&dev], len as u64 * size);
                    }
                }
            }
        }
    }
}

#[test]
fn reduce_to_one_bytes_match_theory() {
    for dtype in DType::ALL {
        let size = dtype.size() as u64;
        for n in 1..=8usize {
            let len = 10;
            let plan = build_reduce_to_one(&cpus(n), len, dtype).unwrap();
            assert_links_canonical(&plan);
            assert_eq!(plan.bytes_moved().total, 2 * (n as u64 - 1) * len as u64 * size, "n={n}");
            if n > 1 {
                assert_eq!(received(&plan)[&canon("/cpu:0")], (n as u64 - 1) * len as u64 * size);
            }
        }
    }
}

#[test]
fn recursive_hd_bytes_match_theory() {
    for dtype in DType::ALL {
        let size = dtype.size() as u64;
        for n in [1usize, 2, 4, 8, 16] {
            for k in [1, 3] {
                let len = n * k;
                let devices = if n <= 8 { cpus(n) } else { workers(2, 8) };
                let plan = build_recursive_hd_all_reduce(&devices, len, dtype).unwrap();
                assert_links_canonical(&plan);
                // L(1 - 1/n) per device per phase, two phases.
                let per_device = (2 * (len - len / n)) as u64 * size;
                let got = received(&plan);
                if n > 1 {
                    assert_eq!(got.len(), n);
                }
                assert!(got.values().all(|&b| b == per_device), "n={n} L={len}: {got:?}");
                assert!(sent(&plan).values().all(|&b| b == per_device), "n={n} L={len}: sent");
                assert_eq!(plan.bytes_moved().total, n as u64 * per_device);
            }
        }
    }
}

#[test]
fn plan_devices_are_canonical_and_deduplicated() {
    let devices: Vec<String> = ["/cpu:0", "/job:localhost/replica:0/task:0/device:CPU:1", "/device:CPU:2", "/cpu:3"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    let plan = build_ring_all_reduce(&devices, 8, DType::Float32, 1, 1, &identity_perm(4)).unwrap();
    assert_eq!(plan.devices, canon_all(&["/cpu:0", "/cpu:1", "/cpu:2", "/cpu:3"]));
    assert_links_canonical(&plan);
    // Two inputs on one device: nothing crosses between them.
    let same: Vec<String> = vec!["/cpu:0".into(), "/job:localhost/replica:0/task:0/device:CPU:0".into()];
    let plan = build_reduce_to_one(&same, 8, DType::Float32).unwrap();
    assert_eq!(plan.devices, canon_all(&["/cpu:0"]));
    assert_eq!(plan.bytes_moved().total, 0);
    check_all("reduce_to_one on one device twice", |dt| build_reduce_to_one(&same, 8, dt).unwrap());
    check_all("ring on one device twice", |dt| build_ring_all_reduce(&same, 9, dt, 1, 2, &[0, 1]).unwrap());
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

fn all_plans() -> Vec<Plan> {
    let mut plans = Vec::new();
    for (w, g, len, s) in RING_SPEC_CASES {
        plans.push(build_ring_all_reduce(&ring_devices(w, g), len, DType::Float32, w, s, &identity_perm(g)).unwrap());
    }
    for n in 1..=8 {
        plans.push(build_reduce_to_one(&cpus(n), 9, DType::Int64).unwrap());
        plans.push(build_hierarchical_copy(&cpus(n), 9, DType::Float16, n + 1).unwrap());
        plans.push(build_shuffle_all_reduce(&cpus(n), &ps_devices(3), 9, DType::BFloat16).unwrap());
        if n >= 2 {
            plans.push(build_ring_all_reduce(&cpus(n), 9, DType::Int32, 1, 2.min(n), &identity_perm(n)).unwrap());
        }
    }
    for n in [1, 2, 4, 8] {
        plans.push(build_recursive_hd_all_reduce(&cpus(n), 16, DType::Float64).unwrap());
    }
    plans
}

#[test]
fn validate_accepts_every_built_plan() {
    for plan in all_plans() {
        plan.validate().unwrap_or_else(|e| panic!("{}: {e}", plan.algorithm));
    }
}

fn two_device_builder() -> Builder {
    Builder::new("handmade", canon_all(&["/cpu:0", "/cpu:1"]), &[0, 1], DType::Float32, 4)
}

#[test]
fn validate_rejects_two_steps_writing_one_chunk() {
    let mut b = two_device_builder();
    let o0 = b.buffer(0, 4);
    let o1 = b.buffer(1, 4);
    b.push(0, Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(o0, 4) });
    b.push(0, Step::Copy { src: Chunk::whole(1, 4), dst: Chunk { buf: o0, offset: 2, len: 2 } });
    b.push(1, Step::Copy { src: Chunk::whole(o0, 4), dst: Chunk::whole(o1, 4) });
    let (code, msg) = err(b.finish(vec![o0, o1]));
    assert_eq!(code, ErrorCode::Internal);
    assert!(msg.contains("handmade") && msg.contains("stage 0"), "{msg}");
}

#[test]
fn validate_rejects_a_step_writing_an_input() {
    let mut b = two_device_builder();
    let o0 = b.buffer(0, 4);
    let o1 = b.buffer(1, 4);
    b.push(0, Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(o0, 4) });
    b.push(0, Step::Copy { src: Chunk::whole(o1, 4), dst: Chunk::whole(1, 4) });
    let (code, msg) = err(b.finish(vec![o0, o1]));
    assert_eq!(code, ErrorCode::Internal);
    assert!(msg.contains("writes an input"), "{msg}");
}

#[test]
fn validate_rejects_other_broken_plans() {
    // A step writing what another step of its stage reads.
    let mut b = two_device_builder();
    let (o0, o1) = (b.buffer(0, 4), b.buffer(1, 4));
    b.push(0, Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(o0, 4) });
    b.push(0, Step::Copy { src: Chunk::whole(o0, 4), dst: Chunk::whole(o1, 4) });
    assert_eq!(err(b.finish(vec![o0, o1])).0, ErrorCode::Internal);
    // Out of bounds.
    let mut b = two_device_builder();
    let (o0, o1) = (b.buffer(0, 4), b.buffer(1, 4));
    b.push(0, Step::Copy { src: Chunk { buf: 0, offset: 2, len: 4 }, dst: Chunk::whole(o0, 4) });
    assert!(err(b.finish(vec![o0, o1])).1.contains("out of bounds"));
    // Outputs: an input as output, a shared output, too few outputs.
    for outs in [vec![0, 2], vec![2, 2], vec![2]] {
        let mut b = two_device_builder();
        b.buffer(0, 4);
        b.buffer(1, 4);
        assert_eq!(err(b.finish(outs)).0, ErrorCode::Internal);
    }
    // An output shorter than the elements.
    let mut b = two_device_builder();
    let (o0, o1) = (b.buffer(0, 4), b.buffer(1, 3));
    assert_eq!(err(b.finish(vec![o0, o1])).0, ErrorCode::Internal);
    // A plan mutated after building is checked again by the executor.
    let mut plan = build_reduce_to_one(&cpus(2), 4, DType::Float32).unwrap();
    let out = plan.outputs[0];
    plan.stages[0].push(Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(out, 4) });
    assert!(plan.validate().is_err());
    let x = Buffer::F32(Cow::Owned(vec![1.0; 4]));
    assert_eq!(err(host::run(&plan, ReduceOp::Sum, &[&x, &x])).0, ErrorCode::Internal);
    // Valid hand-made plan: runs.
    let mut b = two_device_builder();
    let (o0, o1) = (b.buffer(0, 4), b.buffer(1, 4));
    b.push(0, Step::Reduce { srcs: vec![Chunk::whole(0, 4), Chunk::whole(1, 4)], dst: Chunk::whole(o0, 4), last: true });
    b.push(1, Step::Copy { src: Chunk::whole(o0, 4), dst: Chunk::whole(o1, 4) });
    let plan = b.finish(vec![o0, o1]).unwrap();
    let y = Buffer::F32(Cow::Owned(vec![2.0, 4.0, 6.0, 8.0]));
    let outs = host::run(&plan, ReduceOp::Mean, &[&x, &y]).unwrap();
    assert_eq!(outs, vec![Buffer::F32(Cow::Owned(vec![1.5, 2.5, 3.5, 4.5])); 2]);
}

#[test]
fn host_run_checks_its_inputs() {
    let plan = build_reduce_to_one(&cpus(2), 4, DType::Float32).unwrap();
    let x = Buffer::F32(Cow::Owned(vec![1.0; 4]));
    let (code, _) = err(host::run(&plan, ReduceOp::Sum, &[&x]));
    assert_eq!(code, ErrorCode::InvalidArgument);
    let short = Buffer::F32(Cow::Owned(vec![1.0; 3]));
    assert_eq!(err(host::run(&plan, ReduceOp::Sum, &[&x, &short])).0, ErrorCode::InvalidArgument);
    let wrong = Buffer::F64(Cow::Owned(vec![1.0; 4]));
    assert_eq!(err(host::run(&plan, ReduceOp::Sum, &[&x, &wrong])).0, ErrorCode::InvalidArgument);
}

// ---------------------------------------------------------------------------------------------
// Display
// ---------------------------------------------------------------------------------------------

#[test]
fn display_names_the_algorithm_and_stage_count() {
    let names = ["ring", "rechd", "shuffle", "hierarchical_copy", "reduce_to_one"];
    for plan in all_plans() {
        assert!(names.contains(&plan.algorithm.as_str()), "{}", plan.algorithm);
        let text = format!("{plan}");
        assert!(text.contains(&plan.algorithm), "{text}");
        assert!(text.contains(&format!("{} stages", plan.stages.len())), "{text}");
        assert!(text.contains(&format!("{} bytes across devices", plan.bytes_moved().total)), "{text}");
        assert!(text.contains(plan.dtype.name()), "{text}");
    }
    let plan = build_ring_all_reduce(&cpus(4), 16, DType::Float32, 1, 2, &identity_perm(4)).unwrap();
    let text = format!("{plan}");
    assert!(text.starts_with("plan ring: 4 inputs of 16 float32 elements, 6 stages"), "{text}");
    assert!(text.contains("(final)") && text.contains("copy") && text.contains("link /job:localhost"), "{text}");
    // Stage counts of the other algorithms.
    assert_eq!(build_recursive_hd_all_reduce(&cpus(8), 16, DType::Float32).unwrap().stages.len(), 6);
    assert_eq!(build_shuffle_all_reduce(&cpus(4), &ps_devices(2), 16, DType::Float32).unwrap().stages.len(), 2);
    assert_eq!(build_hierarchical_copy(&cpus(8), 16, DType::Float32, 5).unwrap().stages.len(), 4);
    assert_eq!(build_reduce_to_one(&cpus(8), 16, DType::Float32).unwrap().stages.len(), 2);
}

// ---------------------------------------------------------------------------------------------
// Large tensors (the kernels' multi-threaded path) and the harness itself
// ---------------------------------------------------------------------------------------------

#[test]
fn large_tensors_take_the_parallel_kernel_path() {
    // Chunks of at least 2 × 65 536 elements are reduced by several threads.
    check_all("ring large", |dt| build_ring_all_reduce(&cpus(2), 300_001, dt, 1, 1, &[0, 1]).unwrap());
    check_all("shuffle large", |dt| build_shuffle_all_reduce(&cpus(3), &ps_devices(1), 270_000, dt).unwrap());
    check_all("hierarchical_copy large", |dt| build_hierarchical_copy(&cpus(5), 140_000, dt, 3).unwrap());
}

/// A plan that forgets input 2 of 3.
fn dropping_plan(dtype: DType) -> Plan {
    let mut b = Builder::new("dropping", canon_all(&["/cpu:0", "/cpu:1", "/cpu:2"]), &[0, 1, 2], dtype, 6);
    let outs: Vec<usize> = (0..3).map(|d| b.buffer(d, 6)).collect();
    b.push(0, Step::Reduce { srcs: vec![Chunk::whole(0, 6), Chunk::whole(1, 6)], dst: Chunk::whole(outs[0], 6), last: true });
    for &o in &outs[1..] {
        b.push(1, Step::Copy { src: Chunk::whole(outs[0], 6), dst: Chunk::whole(o, 6) });
    }
    b.finish(outs).unwrap()
}

#[test]
#[should_panic(expected = "dropping")]
fn harness_catches_a_dropped_input() {
    check_all("dropping", dropping_plan);
}

#[test]
#[should_panic(expected = "output 2")]
fn harness_catches_a_wrong_broadcast() {
    // Device 2 gets a copy of its own input instead of the reduction.
    check_all("wrong broadcast to device 2", |dt| {
        let mut b = Builder::new("partial", canon_all(&["/cpu:0", "/cpu:1", "/cpu:2"]), &[0, 1, 2], dt, 6);
        let outs: Vec<usize> = (0..3).map(|d| b.buffer(d, 6)).collect();
        let all = (0..3).map(|i| Chunk::whole(i, 6)).collect();
        b.push(0, Step::Reduce { srcs: all, dst: Chunk::whole(outs[0], 6), last: true });
        b.push(0, Step::Copy { src: Chunk::whole(2, 6), dst: Chunk::whole(outs[2], 6) });
        b.push(1, Step::Copy { src: Chunk::whole(outs[0], 6), dst: Chunk::whole(outs[1], 6) });
        b.finish(outs).unwrap()
    });
}

#[test]
fn validate_rejects_reading_or_returning_unwritten_memory() {
    // Executors may leave scratch buffers uninitialised: a plan must write every element it
    // reads from a scratch buffer (in an earlier stage) and every element of every output.
    let mut b = two_device_builder();
    let (o0, o1) = (b.buffer(0, 4), b.buffer(1, 4));
    b.push(0, Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(o0, 4) });
    assert_eq!(err(b.finish(vec![o0, o1])).0, ErrorCode::Internal, "output 1 never written");
    let mut b = two_device_builder();
    let (o0, o1) = (b.buffer(0, 4), b.buffer(1, 4));
    b.push(0, Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(o0, 4) });
    b.push(0, Step::Copy { src: Chunk::whole(1, 3), dst: Chunk::whole(o1, 3) });
    assert_eq!(err(b.finish(vec![o0, o1])).0, ErrorCode::Internal, "output 1 written in part");
    let mut b = two_device_builder();
    let (o0, o1, t) = (b.buffer(0, 4), b.buffer(1, 4), b.buffer(1, 4));
    b.push(0, Step::Copy { src: Chunk::whole(t, 4), dst: Chunk::whole(o0, 4) });
    b.push(0, Step::Copy { src: Chunk::whole(1, 4), dst: Chunk::whole(o1, 4) });
    assert_eq!(err(b.finish(vec![o0, o1])).0, ErrorCode::Internal, "scratch read before written");
}
