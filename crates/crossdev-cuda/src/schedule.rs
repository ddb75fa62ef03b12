//! A plan as work for CUDA streams: one stream per logical device of the plan, each step on the
//! stream of the device it writes to, and the events each stream must wait for so that every
//! step sees what earlier stages wrote and no step overwrites what an earlier stage still reads.
//! Pure bookkeeping (no CUDA), so that it is tested on any machine.
//!
//! Tracking is per buffer and per stage, which is coarse but sound: every write of a buffer
//! happens on its device's stream, so "the last stage that wrote the buffer" (an event on that
//! stream) covers every write before it; and the last stage in which each other stream read the
//! buffer covers every earlier read on that stream.

use crossdev_core::plan::{Chunk, Plan, Step};
use std::collections::BTreeMap;

/// The chunks `step` reads, in combination order.
pub(crate) fn reads(step: &Step) -> &[Chunk] {
    match step {
        Step::Copy { src, .. } => std::slice::from_ref(src),
        Step::Reduce { srcs, .. } => srcs,
    }
}

/// The chunk `step` writes.
pub(crate) fn writes(step: &Step) -> Chunk {
    match step {
        Step::Copy { dst, .. } | Step::Reduce { dst, .. } => *dst,
    }
}

/// An event recorded on `stream` after its work of schedule stage `stage`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Event {
    /// The stream (= the plan's device index).
    pub stream: usize,
    /// Schedule stage: 0 is the arrival of the inputs, `s + 1` is plan stage `s`.
    pub stage: usize,
}

/// What one stream does in one schedule stage: wait for `waits`, run `steps` (indices into the
/// plan stage), then record its event if a later block waits for it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Block {
    /// The stream (= the plan's device index).
    pub stream: usize,
    /// Events of other streams to wait for first.
    pub waits: Vec<Event>,
    /// Steps of the plan stage, in plan order.
    pub steps: Vec<usize>,
    /// Whether to record `Event { stream, stage }` afterwards.
    pub record: bool,
}

/// The blocks of every schedule stage, issued stage after stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Schedule {
    /// `stages[0]`: one block without steps per stream holding an input (where the executor
    /// makes the stream wait until its inputs are ready); `stages[s + 1]`: plan stage `s`.
    pub stages: Vec<Vec<Block>>,
}

impl Schedule {
    /// The schedule of a validated `plan`.
    pub fn of(plan: &Plan) -> Schedule {
        let buffers = plan.buffers.len();
        let streams = plan.devices.len();
        // Per buffer: the event after its last write, and per stream the last stage reading it
        // since then.
        let mut last_write: Vec<Option<Event>> = vec![None; buffers];
        let mut readers: Vec<BTreeMap<usize, usize>> = vec![BTreeMap::new(); buffers];
        // Per stream, per other stream: the latest stage of it already waited for.
        let mut waited: Vec<Vec<Option<usize>>> = vec![vec![None; streams]; streams];

        let mut arrival: Vec<usize> = (0..plan.inputs).map(|i| plan.buffers[i].device).collect();
        for (i, &d) in arrival.iter().enumerate() {
            last_write[i] = Some(Event { stream: d, stage: 0 });
        }
        arrival.sort_unstable();
        arrival.dedup();
        let mut stages = vec![arrival.into_iter().map(|stream| Block { stream, waits: Vec::new(), steps: Vec::new(), record: false }).collect::<Vec<_>>()];

        for (s, steps) in plan.stages.iter().enumerate() {
            let stage = s + 1;
            let mut by_stream: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
            for (i, step) in steps.iter().enumerate() {
                by_stream.entry(plan.buffers[writes(step).buf].device).or_default().push(i);
            }
            let mut blocks = Vec::with_capacity(by_stream.len());
            for (&d, indices) in &by_stream {
                let mut needs: BTreeMap<usize, usize> = BTreeMap::new();
                let mut need = |e: Event| {
                    if e.stream != d {
                        let latest = needs.entry(e.stream).or_insert(e.stage);
                        *latest = (*latest).max(e.stage);
                    }
                };
                for &i in indices {
                    let step = &steps[i];
                    // Read after write: the writers of what it reads.
                    reads(step).iter().filter_map(|r| last_write[r.buf]).for_each(&mut need);
                    // Write after read and after write: whoever read or wrote what it writes.
                    let w = writes(step).buf;
                    readers[w].iter().for_each(|(&stream, &stage)| need(Event { stream, stage }));
                    last_write[w].into_iter().for_each(&mut need);
                }
                let mut waits = Vec::new();
                for (stream, stage) in needs {
                    // Already waited for this stage of that stream, or a later one.
                    if waited[d][stream].is_none_or(|seen| seen < stage) {
                        waited[d][stream] = Some(stage);
                        waits.push(Event { stream, stage });
                    }
                }
                blocks.push(Block { stream: d, waits, steps: indices.clone(), record: false });
            }
            // Writes first: a write forgets the reads before it (its stream waited for them),
            // never the reads of its own stage by other steps.
            for block in &blocks {
                for &i in &block.steps {
                    let w = writes(&steps[i]).buf;
                    last_write[w] = Some(Event { stream: block.stream, stage });
                    readers[w].clear();
                }
            }
            for block in &blocks {
                for &i in &block.steps {
                    for r in reads(&steps[i]) {
                        readers[r.buf].insert(block.stream, stage);
                    }
                }
            }
            stages.push(blocks);
        }

        let awaited: Vec<Event> = stages.iter().flatten().flat_map(|b| b.waits.iter().copied()).collect();
        for (stage, blocks) in stages.iter_mut().enumerate() {
            for block in blocks {
                block.record = awaited.contains(&Event { stream: block.stream, stage });
            }
        }
        Schedule { stages }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crossdev_core::algo::hierarchical_copy::build_hierarchical_copy;
    use crossdev_core::algo::recursive_hd::build_recursive_hd_all_reduce;
    use crossdev_core::algo::reduce_to_one::build_reduce_to_one;
    use crossdev_core::algo::ring::build_ring_all_reduce;
    use crossdev_core::algo::shuffle::build_shuffle_all_reduce;
    use crossdev_core::algo::two_level::{build_two_level, FirstLevel, UpperLevel};
    use crossdev_core::ops::AllReduceAlgorithm;
    use crossdev_core::DType;

    fn gpus(n: usize) -> Vec<String> {
        (0..n).map(|d| format!("/gpu:{d}")).collect()
    }

    fn plans() -> Vec<Plan> {
        let mut plans = Vec::new();
        for n in [2usize, 3, 4, 8] {
            let devices = gpus(n);
            for elements in [n * 64, n * 64 + 5] {
                let perm: Vec<usize> = (0..n).rev().collect();
                for subchunks in 1..=n.min(3) {
                    plans.push(build_ring_all_reduce(&devices, elements, DType::Float32, 1, subchunks, &perm).unwrap());
                }
                plans.push(build_shuffle_all_reduce(&devices, &devices[..2], elements, DType::Float32).unwrap());
                plans.push(build_hierarchical_copy(&devices, elements, DType::Float32, 3).unwrap());
                plans.push(build_reduce_to_one(&devices, elements, DType::Float32).unwrap());
                plans.push(std::sync::Arc::unwrap_or_clone(AllReduceAlgorithm::Nccl.plan(&devices, DType::Float32, elements, 0).unwrap()));
                if n.is_power_of_two() && elements.is_multiple_of(n) {
                    plans.push(build_recursive_hd_all_reduce(&devices, elements, DType::Float32).unwrap());
                }
            }
        }
        let workers: Vec<String> = (0..2).flat_map(|t| (0..4).map(move |g| format!("/job:worker/replica:0/task:{t}/device:GPU:{g}"))).collect();
        let gather = vec![workers[0].clone(), workers[4].clone()];
        for level in [UpperLevel::Ring(1), UpperLevel::RecursiveHd, UpperLevel::Shuffle(gather.clone())] {
            plans.push(build_two_level(&workers, 800, DType::Float32, &FirstLevel::Nccl, &level).unwrap());
            plans.push(build_two_level(&workers, 800, DType::Float32, &FirstLevel::Gather(gather.clone()), &level).unwrap());
        }
        plans
    }

    /// Checks the schedule against the plan: every step scheduled once, on the stream of the
    /// device it writes; every awaited event recorded; and, with vector clocks over the
    /// blocks, every pair of conflicting steps of different stages (one writes what the other
    /// reads or writes, the inputs' arrival counting as their write) ordered.
    fn check(plan: &Plan, schedule: &Schedule) {
        let name = &plan.algorithm;
        let streams = plan.devices.len();
        assert_eq!(schedule.stages.len(), plan.stages.len() + 1, "{name}");
        // Accesses: (stage, stream, chunk, is write).
        let mut accesses: Vec<(usize, usize, Chunk, bool)> = (0..plan.inputs).map(|i| (0, plan.buffers[i].device, Chunk::whole(i, plan.buffers[i].len), true)).collect();
        for (stage, blocks) in schedule.stages.iter().enumerate().skip(1) {
            let mut seen: Vec<usize> = blocks.iter().flat_map(|b| b.steps.iter().copied()).collect();
            seen.sort_unstable();
            assert_eq!(seen, (0..plan.stages[stage - 1].len()).collect::<Vec<_>>(), "{name}: stage {stage} runs each step once");
            for block in blocks {
                for &i in &block.steps {
                    let step = &plan.stages[stage - 1][i];
                    assert_eq!(plan.buffers[writes(step).buf].device, block.stream, "{name}: a step runs where it writes");
                    accesses.push((stage, block.stream, writes(step), true));
                    accesses.extend(reads(step).iter().map(|&r| (stage, block.stream, r, false)));
                }
            }
        }
        // clock[(stage, stream)][other] = the latest stage of `other` complete before the
        // block starts (None: nothing).
        let mut clock: BTreeMap<(usize, usize), Vec<Option<usize>>> = BTreeMap::new();
        let mut current: Vec<Vec<Option<usize>>> = vec![vec![None; streams]; streams];
        for (stage, blocks) in schedule.stages.iter().enumerate() {
            for block in blocks {
                let mut c = current[block.stream].clone();
                for e in &block.waits {
                    let recorded = schedule.stages[e.stage].iter().find(|b| b.stream == e.stream).unwrap_or_else(|| panic!("{name}: {e:?} awaited, never recorded"));
                    assert!(recorded.record && e.stage < stage, "{name}: {e:?} awaited at stage {stage}");
                    let mut after = clock[&(e.stage, e.stream)].clone();
                    after[e.stream] = Some(e.stage);
                    for (x, y) in c.iter_mut().zip(after) {
                        *x = (*x).max(y);
                    }
                }
                clock.insert((stage, block.stream), c.clone());
                c[block.stream] = Some(stage);
                current[block.stream] = c;
            }
        }
        let overlap = |a: &Chunk, b: &Chunk| a.buf == b.buf && a.len > 0 && b.len > 0 && a.offset < b.offset + b.len && b.offset < a.offset + a.len;
        for &(sa, da, ca, wa) in &accesses {
            for &(sb, db, cb, wb) in &accesses {
                if sa < sb && (wa || wb) && overlap(&ca, &cb) {
                    let ordered = da == db || clock[&(sb, db)][da].is_some_and(|done| done >= sa);
                    assert!(ordered, "{name}: stage {sb} on stream {db} is not ordered after stage {sa} on stream {da} ({ca:?} / {cb:?})");
                }
            }
        }
    }

    #[test]
    fn every_conflicting_pair_of_steps_is_ordered_by_stream_order_or_events() {
        for plan in plans() {
            check(&plan, &Schedule::of(&plan));
        }
    }

    #[test]
    fn streams_wait_only_where_data_crosses_devices() {
        // A ring over 8 devices: each stream waits for its predecessor only, once per stage
        // (what it reads and the reader of what it overwrites are the same neighbours).
        let plan = build_ring_all_reduce(&gpus(8), 8 * 100, DType::Float32, 1, 1, &(0..8).collect::<Vec<_>>()).unwrap();
        let schedule = Schedule::of(&plan);
        for blocks in &schedule.stages[1..] {
            assert_eq!(blocks.len(), 8);
            for block in blocks {
                assert!(block.waits.len() <= 2, "{block:?}");
                assert!(block.waits.iter().all(|e| e.stream != block.stream), "{block:?}");
            }
        }
        // Every stream records something that another waits for, and the last stage nothing.
        assert!(schedule.stages[1].iter().all(|b| b.record));
        assert!(schedule.stages.last().unwrap().iter().all(|b| !b.record));
    }

    #[test]
    fn a_step_overwriting_what_another_stream_read_waits_for_that_read() {
        // Hand-made: stage 0 device 1 reads buffer 2 (on device 0); stage 1 device 0 overwrites it.
        use crossdev_core::plan::{Builder, Step};
        let mut b = Builder::new("war", gpus(2).iter().map(|d| crossdev_core::device::canonicalize(d, None).unwrap()).collect(), &[0, 1], DType::Int32, 4);
        let (x, y) = (b.buffer(0, 4), b.buffer(1, 4));
        b.push(0, Step::Copy { src: Chunk::whole(0, 4), dst: Chunk::whole(x, 4) });
        b.push(1, Step::Copy { src: Chunk::whole(x, 4), dst: Chunk::whole(y, 4) });
        b.push(2, Step::Copy { src: Chunk::whole(1, 4), dst: Chunk::whole(x, 4) });
        let plan = b.finish(vec![x, y]).unwrap();
        let schedule = Schedule::of(&plan);
        check(&plan, &schedule);
        assert_eq!(schedule.stages[3], vec![Block { stream: 0, waits: vec![Event { stream: 1, stage: 2 }], steps: vec![0], record: false }]);
        assert_eq!(schedule.stages[2], vec![Block { stream: 1, waits: vec![Event { stream: 0, stage: 1 }], steps: vec![0], record: true }]);
    }
}
