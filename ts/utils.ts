/**
 * The building blocks of the cross-device ops (TensorFlow's `cross_tower_utils` and
 * `all_reduce`), for composing strategies, for Rust-parity tests and for study.
 */
import { core } from './backend.js';
import { Plan } from './plan.js';
import type { DType } from './tensor.js';

/** Common options of the plan builders. */
export interface PlanOptions {
  /** Devices, one input each (any spelling). */
  devices: readonly string[];
  /** Elements per input. */
  elements: number;
  /** Element type (default float32). */
  dtype?: DType;
}

/**
 * Runs of consecutive indices of a strictly increasing list as inclusive ranges (2 to
 * `rangeSizeLimit + 2` indices each, TensorFlow's bound) and the indices left single.
 */
export function extractRanges(indices: readonly number[], rangeSizeLimit = 32): { ranges: [number, number][]; singles: number[] } {
  return core().execute(JSON.stringify({ call: 'extractRanges', indices, rangeSizeLimit }), []).meta.ranges;
}

/** Ring orders per subchunk: `pred[s][d]` precedes device `d` in ring `s`, at position `rank[s][d]`. */
export function ringPermutations(numWorkers: number, numSubchunks: number, gpuPerm: readonly number[]): { pred: number[][]; rank: number[][] } {
  return core().execute(JSON.stringify({ call: 'ringPermutations', numWorkers, numSubchunks, gpuPerm }), []).meta.permutations;
}

/** Ring all-reduce: reduce-scatter then all-gather around `numSubchunks` rings ordered by `gpuPerm`. */
export function buildRingAllReduce(o: PlanOptions & { numWorkers?: number; numSubchunks?: number; gpuPerm?: readonly number[] }): Plan {
  return new Plan({ algorithm: 'ring', ...o });
}

/** Recursive halving-doubling (power-of-two device count, length divisible by it). */
export function buildRecursiveHdAllReduce(o: PlanOptions): Plan {
  return new Plan({ algorithm: 'rechd', ...o });
}

/** Shuffle all-reduce through `gatherDevices` (parameter-server style). */
export function buildShuffleAllReduce(o: PlanOptions & { gatherDevices: readonly string[] }): Plan {
  return new Plan({ algorithm: 'shuffle', ...o });
}

/** Hierarchical copy (DGX-1 style) for pack number `index`. */
export function buildHierarchicalCopy(o: PlanOptions & { index?: number }): Plan {
  return new Plan({ algorithm: 'hierarchical_copy', ...o });
}

/** Reduce on the first device, then copy out. */
export function buildReduceToOne(o: PlanOptions): Plan {
  return new Plan({ algorithm: 'reduce_to_one', ...o });
}

/** NCCL's all-reduce schedule on host devices: one ring over the devices in order. */
export function buildNcclAllReduce(o: PlanOptions): Plan {
  return new Plan({ algorithm: 'nccl', ...o });
}
