/**
 * The building blocks of the cross-device ops (TensorFlow's `cross_tower_utils` and
 * `all_reduce`), for composing strategies, for Rust-parity tests and for study.
 */
import { call } from './backend.js';
import { Plan } from './plan.js';
import { Tensor, typedView, type DType } from './tensor.js';

export { packSmallTensors, splitGradsBySize, unpackSmallTensors } from './pack.js';

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
  return call().execute(JSON.stringify({ call: 'extractRanges', indices, rangeSizeLimit }), []).meta.ranges;
}

/**
 * TF 2's `group_by_size`: consecutive indices of `sizes` (bytes) grouped so that a new pack
 * starts once the current one holds more than `bytesPerPack`; 0 means one pack of everything.
 * (TF 2 applies it to the reversed gradient list.)
 */
export function groupBySize(sizes: readonly number[], bytesPerPack: number): number[][] {
  return call().execute(JSON.stringify({ call: 'groupBySize', sizes, bytesPerPack }), []).meta.packs;
}

/** Ring orders per subchunk: `pred[s][d]` precedes device `d` in ring `s`, at position `rank[s][d]`. */
export function ringPermutations(numWorkers: number, numSubchunks: number, gpuPerm: readonly number[]): { pred: number[][]; rank: number[][] } {
  return call().execute(JSON.stringify({ call: 'ringPermutations', numWorkers, numSubchunks, gpuPerm }), []).meta.permutations;
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

/** `devices` dealt round-robin into groups of `groupSize` (wrapping around, so some repeat). */
export function groupDeviceNames(devices: readonly string[], groupSize: number): string[][] {
  return call().execute(JSON.stringify({ call: 'groupDeviceNames', devices, groupSize }), []).meta.groups;
}

/** A multi-worker all-reduce spec parsed into `[alg, shards, limit]` tuples (errors list the valid algorithms). */
export function parseAllReduceSpec(spec: unknown): [string, number, number][] {
  return call().execute(JSON.stringify({ call: 'parseSpec', spec }), []).meta.specs;
}

/** Two-level all-reduce: NCCL inside each worker, a ring (`numSubchunks`) across workers. */
export function buildNcclThenRing(o: PlanOptions & { numSubchunks?: number }): Plan {
  return new Plan({ algorithm: 'nccl/xring', ...o });
}

/** Two-level all-reduce: NCCL inside each worker, recursive halving-doubling across workers. */
export function buildNcclThenRecursiveHd(o: PlanOptions): Plan {
  return new Plan({ algorithm: 'nccl/rechd', ...o });
}

/** Two-level all-reduce: NCCL inside each worker, a shuffle through `gatherDevices` across workers. */
export function buildNcclThenShuffle(o: PlanOptions & { gatherDevices: readonly string[] }): Plan {
  return new Plan({ algorithm: 'nccl/pscpu', ...o });
}

/** Two-level all-reduce: each worker gathers on `gatherDevices[w]`, then a shuffle through `secondGatherDevices`. */
export function buildShuffleThenShuffle(o: PlanOptions & { gatherDevices: readonly string[]; secondGatherDevices: readonly string[] }): Plan {
  return new Plan({ algorithm: 'pscpu/pscpu', ...o });
}

/** Two-level all-reduce: each worker gathers on `gatherDevices[w]`, then a ring across workers. */
export function buildShuffleThenRing(o: PlanOptions & { gatherDevices: readonly string[]; numSubchunks?: number }): Plan {
  return new Plan({ algorithm: 'pscpu/xring', ...o });
}

/**
 * Keys that name collectives consistently on every worker (TensorFlow 1.x `CollectiveKeys`):
 * a group key per set of devices (by type and index, job and task ignored), an instance key per
 * collective (a counter, or stable per `keyId`).
 */
export class CollectiveKeys {
  #nextGroup: number;
  #nextInstance: number;
  #withId: number;
  readonly #groups = new Map<string, number>();
  readonly #ids = new Map<string, number>();

  constructor(options: { groupKeyStart?: number; instanceKeyStart?: number; instanceKeyWithIdStart?: number } = {}) {
    this.#nextGroup = options.groupKeyStart ?? 1;
    this.#nextInstance = options.instanceKeyStart ?? 100;
    this.#withId = options.instanceKeyWithIdStart ?? 10000;
  }

  /** The group key of a set of devices (the same for any order, job or task). */
  getGroupKey(devices: readonly string[]): number {
    const id: string = call().execute(JSON.stringify({ call: 'groupKeyId', devices }), []).meta.keyId;
    if (!this.#groups.has(id)) this.#groups.set(id, this.#nextGroup++);
    return this.#groups.get(id)!;
  }

  /** A fresh instance key, or the stable key of `keyId` (the first is `instanceKeyWithIdStart + 1`). */
  getInstanceKey(keyId?: string): number {
    if (keyId) {
      if (!this.#ids.has(keyId)) this.#ids.set(keyId, ++this.#withId);
      return this.#ids.get(keyId)!;
    }
    return this.#nextInstance++;
  }
}

function parts(call_: string, body: object, tensors: readonly Tensor[]): { tensors: Tensor[]; padLen: number } {
  const reply = call().execute(JSON.stringify({ call: call_, ...body }), tensors.map((t) => t.data));
  const p = reply.meta.parts;
  const device = tensors[0]?.device;
  return { tensors: p.tensors.map((w: any) => new Tensor(typedView(w.dtype, reply.buffers[w.buf]), w.shape, w.dtype, device)), padLen: p.padLen };
}

const wire = (t: Tensor, buf: number) => ({ buf, dtype: t.dtype, shape: t.shape });

/** `_padded_split`: a 1-D tensor in `pieces` equal parts, zero-padded at the end when needed. */
export function paddedSplit(tensor: Tensor, pieces: number): { parts: Tensor[]; padLen: number } {
  const r = parts('paddedSplit', { tensor: wire(tensor, 0), pieces }, [tensor]);
  return { parts: r.tensors, padLen: r.padLen };
}

/** `_ragged_split`: a 1-D tensor in `pieces` parts, the remainder in the last. */
export function raggedSplit(tensor: Tensor, pieces: number): Tensor[] {
  return parts('raggedSplit', { tensor: wire(tensor, 0), pieces }, [tensor]).tensors;
}

/** `_strip_padding`: each 1-D tensor without its last `padLen` elements. */
export function stripPadding(tensors: readonly Tensor[], padLen: number): Tensor[] {
  return parts('stripPadding', { tensors: tensors.map(wire), padLen }, tensors).tensors;
}
