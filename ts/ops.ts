/**
 * Cross-device ops: reduce per-device values and broadcast values to devices. Each op class only
 * names its configuration; the core validates arguments, picks the algorithm and runs it.
 */
import { call, type Reply } from './backend.js';
import { probeGpus } from './gpus.js';
import { CrossDeviceError } from './errors.js';
import { GpuTensor } from './gpu_tensor.js';
import { encodeSlices, encodeTensor, IndexedSlices, isTfjsTensor, Tensor, tensor, typedView, type TensorLike, type TfjsTensor } from './tensor.js';
import { CANONICAL, deviceJson, devicesJson, DistributedValues, MapOutput, Mirrored, PerDevice, type DeviceValue } from './values.js';

/** How values from several devices combine. MEAN divides the sum by the number of contributions. */
export const ReduceOp = {
  SUM: 'SUM',
  MEAN: 'MEAN',
  MAX: 'MAX',
  MIN: 'MIN',
  PRODUCT: 'PRODUCT',
} as const;
/** One of {@link ReduceOp}'s values. */
export type ReduceOp = (typeof ReduceOp)[keyof typeof ReduceOp];

/**
 * Where results go: a `PerDevice`/`Mirrored` value (its devices), a device string, a list of
 * device strings, or any object with a `device` (a variable, a tensor).
 */
export type Destinations = DistributedValues | string | readonly string[] | { readonly device: string };

/** A reduce input: a `PerDevice` value, or one tensor/slices on its device (a TensorFlow.js tensor is on /cpu:0). */
export type ReduceInput = PerDevice | Tensor | GpuTensor | IndexedSlices | TfjsTensor;

/**
 * Collects the TypedArrays a request refers to and writes arguments as the JSON text of the wire
 * format (GPU tensors by handle). The text is built directly, from parts that values keep,
 * rather than through objects and `JSON.stringify`: a small op's request is rebuilt at every
 * call, and that was a third of its cost.
 */
export class Encoder {
  readonly inputs: ArrayBufferView[] = [];
  /** Whether a GPU tensor is among the arguments (the request then runs off the JavaScript thread). */
  resident = false;

  value(v: unknown): string {
    if (v instanceof Tensor || v instanceof GpuTensor) {
      this.resident ||= v instanceof GpuTensor;
      return `{"dense":${encodeTensor(v, this.inputs)}}`;
    }
    if (v instanceof IndexedSlices) {
      this.resident ||= v.values instanceof GpuTensor || v.indices instanceof GpuTensor;
      return encodeSlices(v, this.inputs);
    }
    if (v instanceof MapOutput) return `{"many":[${v.values.map((x) => this.value(x)).join(',')}]}`;
    if (isTfjsTensor(v)) return this.value(tensor(v));
    throw new CrossDeviceError('ERR_INVALID_INPUT', `A device's value must be a Tensor, IndexedSlices or MapOutput, got ${describe(v)}`);
  }

  input(x: unknown): string {
    if (x instanceof DistributedValues) {
      let entries = '';
      for (const [d, v] of x.entries()) entries += `${entries === '' ? '' : ','}[${deviceJson(d)},${this.value(v)}]`;
      return `{"perDevice":[${entries}]}`;
    }
    if (Array.isArray(x)) return `{"sequence":${JSON.stringify(describe(x))}}`;
    if (x instanceof Tensor || x instanceof GpuTensor || x instanceof IndexedSlices) {
      return `{"located":{"device":${JSON.stringify(x.device)},"value":${this.value(x)}}}`;
    }
    if (isTfjsTensor(x)) return this.input(tensor(x));
    return `{"other":${JSON.stringify(describe(x))}}`;
  }

  destinations(d: unknown): string {
    if (d instanceof DistributedValues) return `{"values":${devicesJson(d)}}`;
    if (typeof d === 'string') return `{"device":${JSON.stringify(d)}}`;
    if (Array.isArray(d)) return d.every((x) => typeof x === 'string') ? `{"devices":${JSON.stringify(d)}}` : `{"invalid":${JSON.stringify(describe(d))}}`;
    if (d !== null && typeof d === 'object' && 'device' in d && typeof d.device === 'string') return `{"variable":${JSON.stringify(d.device)}}`;
    return `{"invalid":${JSON.stringify(describe(d))}}`;
  }

  pairs(pairs: unknown): string {
    if (!Array.isArray(pairs)) return 'null';
    const each = pairs.map((p) => {
      if (!Array.isArray(p)) return '"notTuple"';
      if (p.length !== 2) return `{"arity":${p.length}}`;
      return `{"pair":[${this.input(p[0])},${this.destinations(p[1])}]}`;
    });
    return `[${each.join(',')}]`;
  }
}

function describe(x: unknown): string {
  if (Array.isArray(x)) return `[${x.map(describe).join(', ')}]`;
  if (x === null || x === undefined) return String(x);
  if (typeof x === 'object') return x.toString === Object.prototype.toString ? (x.constructor?.name ?? 'Object') : String(x);
  return typeof x === 'string' ? JSON.stringify(x) : String(x);
}

function decodeTensor(w: any, buffers: ArrayBufferView[], device: string): Tensor | GpuTensor {
  if (w.buf === undefined) return new GpuTensor(w.gpu, w.shape, w.dtype, device);
  return new Tensor(typedView(w.dtype, buffers[w.buf]), w.shape, w.dtype, device);
}

function decodeValue(v: any, buffers: ArrayBufferView[], device: string): Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor> {
  if (v.dense !== undefined) return decodeTensor(v.dense, buffers, device);
  return new IndexedSlices(decodeTensor(v.sparse.values, buffers, device), decodeTensor(v.sparse.indices, buffers, device), v.sparse.denseShape);
}

/** Mirrored values from a `{"results": …}` reply. */
export function decodeResults(reply: Reply): Mirrored[] {
  const results: [string, any][][] = reply.meta.results;
  const out = new Array<Mirrored>(results.length);
  for (let r = 0; r < results.length; r++) {
    const entries = results[r];
    const values = new Array<[string, Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor>]>(entries.length);
    for (let i = 0; i < entries.length; i++) values[i] = [entries[i][0], decodeValue(entries[i][1], reply.buffers, entries[i][0])];
    out[r] = new Mirrored(values, CANONICAL);
  }
  return out;
}

function asValue(x: BroadcastValue): Tensor | GpuTensor | IndexedSlices | MapOutput {
  // A MapOutput goes to the core as it is, which refuses to broadcast it.
  return x instanceof Tensor || x instanceof GpuTensor || x instanceof IndexedSlices || x instanceof MapOutput ? x : tensor(x as TensorLike);
}

/** What {@link CrossDeviceOps.broadcast} copies: a host or GPU tensor, slices, or data for a host tensor. */
export type BroadcastValue = Tensor | GpuTensor | IndexedSlices | TensorLike;

/**
 * Reduces per-device values and broadcasts values to devices (`tf.distribute.CrossDeviceOps`).
 * Every operation has a Promise form (work runs off the JavaScript thread on the native backend)
 * and a `…Sync` form. Values may be GPU tensors: an operation with any among its inputs returns
 * GPU tensors for its results on GPU devices (host tensors elsewhere).
 */
export abstract class CrossDeviceOps {
  /** The op's configuration as the core reads it. */
  protected abstract readonly spec: object;

  #specJson: string | undefined;

  /** The JSON text of {@link spec} (made once: the configuration never changes). */
  private get specJson(): string {
    this.#specJson ??= JSON.stringify(this.spec);
    return this.#specJson;
  }

  /** Checks the configuration in the core, so a bad option fails at construction. */
  protected checked(): void {
    call().execute(`{"call":"checkOps","ops":${this.specJson}}`, []);
  }

  private reduceRequest(op: ReduceOp, value: ReduceInput, destinations: Destinations): [string, ArrayBufferView[], boolean] {
    const enc = new Encoder();
    const v = enc.input(value);
    const req = `{"call":"reduce","ops":${this.specJson},"op":${JSON.stringify(op) ?? null},"value":${v},"destinations":${enc.destinations(destinations)}}`;
    return [req, enc.inputs, enc.resident];
  }

  private batchRequest(op: ReduceOp, pairs: readonly (readonly [ReduceInput, Destinations])[]): [string, ArrayBufferView[], boolean] {
    const enc = new Encoder();
    return [`{"call":"batchReduce","ops":${this.specJson},"op":${JSON.stringify(op) ?? null},"pairs":${enc.pairs(pairs)}}`, enc.inputs, enc.resident];
  }

  private broadcastRequest(value: BroadcastValue, destinations: Destinations): [string, ArrayBufferView[], boolean] {
    const enc = new Encoder();
    const v = enc.value(asValue(value));
    return [`{"call":"broadcast","ops":${this.specJson},"value":${v},"destinations":${enc.destinations(destinations)}}`, enc.inputs, enc.resident];
  }

  /** Reduces `value` with `op` and puts the result on every device of `destinations`. */
  async reduce(op: ReduceOp, value: ReduceInput, destinations: Destinations): Promise<Mirrored> {
    return decodeResults(await call().executeAsync(...this.reduceRequest(op, value, destinations)))[0];
  }

  /** {@link reduce}, on the calling thread. */
  reduceSync(op: ReduceOp, value: ReduceInput, destinations: Destinations): Mirrored {
    const [req, inputs] = this.reduceRequest(op, value, destinations);
    return decodeResults(call().execute(req, inputs))[0];
  }

  /** Reduces each `[value, destinations]` pair; results in the order of the pairs. */
  async batchReduce(op: ReduceOp, pairs: readonly (readonly [ReduceInput, Destinations])[]): Promise<Mirrored[]> {
    return decodeResults(await call().executeAsync(...this.batchRequest(op, pairs)));
  }

  /** {@link batchReduce}, on the calling thread. */
  batchReduceSync(op: ReduceOp, pairs: readonly (readonly [ReduceInput, Destinations])[]): Mirrored[] {
    const [req, inputs] = this.batchRequest(op, pairs);
    return decodeResults(call().execute(req, inputs));
  }

  /** Copies `value` to every device of `destinations`. */
  async broadcast(value: BroadcastValue, destinations: Destinations): Promise<Mirrored> {
    return decodeResults(await call().executeAsync(...this.broadcastRequest(value, destinations)))[0];
  }

  /** {@link broadcast}, on the calling thread. */
  broadcastSync(value: BroadcastValue, destinations: Destinations): Mirrored {
    const [req, inputs] = this.broadcastRequest(value, destinations);
    return decodeResults(call().execute(req, inputs))[0];
  }
}

/** Options of {@link ReductionToOneDevice}. */
export interface ReductionToOneDeviceOptions {
  /** Where the reduction runs; default: the first destination device. */
  reduceToDevice?: string;
  /** TensorFlow's accumulation function; both sum in one pass here. Default `'add_n'`. */
  accumulation?: 'add_n' | 'accumulate_n';
}

/**
 * Reduces everything on one device, then copies the result to the destinations. Works for any
 * devices, dense or sparse values and any destinations: the universal fallback.
 */
export class ReductionToOneDevice extends CrossDeviceOps {
  protected readonly spec: object;

  constructor(options: ReductionToOneDeviceOptions = {}) {
    super();
    this.spec = {
      kind: 'ReductionToOneDevice',
      reduceToDevice: options.reduceToDevice ?? null,
      accumulation: options.accumulation ?? null,
    };
    this.checked();
  }
}

/** Options of {@link AllReduceCrossDeviceOps}. */
export interface AllReduceOptions {
  /** Concatenate each device's gradients and split them into this many packs (0: don't). Default 1. */
  numPacks?: number;
  /** With `numPacks` 0: pack runs of float32 gradients of at most this many bytes. Default 0 (off). */
  aggSmallGradsMaxBytes?: number;
  /** With `numPacks` 0: runs of at most this many (+2) small gradients. Default 10. */
  aggSmallGradsMaxGroup?: number;
}

/**
 * All-reduce across the values' own devices with NCCL's ring (`'nccl'`) or DGX-1 style
 * hierarchical copy (`'hierarchical_copy'`), after optional packing. When destinations differ
 * from the values' devices, or a value is IndexedSlices, it reduces to the first destination
 * device and broadcasts instead.
 */
export class AllReduceCrossDeviceOps extends CrossDeviceOps {
  protected readonly spec: object;

  constructor(allReduceAlg: 'nccl' | 'hierarchical_copy' = 'nccl', options: AllReduceOptions = {}) {
    super();
    this.spec = {
      kind: 'AllReduce',
      algorithm: allReduceAlg,
      numPacks: options.numPacks ?? 1,
      aggSmallGradsMaxBytes: options.aggSmallGradsMaxBytes ?? 0,
      aggSmallGradsMaxGroup: options.aggSmallGradsMaxGroup ?? 10,
    };
    this.checked();
  }
}

/** TF 2's all-reduce classes: one algorithm, `numPacks` packs (0: no packing; negative is an error). */
abstract class PackedAllReduce extends CrossDeviceOps {
  protected readonly spec: object;

  protected constructor(kind: string, options: { numPacks?: number }) {
    super();
    this.spec = { kind, numPacks: options.numPacks ?? 1 };
    this.checked();
  }
}

/** TF 2's `NcclAllReduce`: NCCL's ring with `numPacks` packs. */
export class NcclAllReduce extends PackedAllReduce {
  constructor(options: { numPacks?: number } = {}) {
    super('NcclAllReduce', options);
  }
}

/** TF 2's `HierarchicalCopyAllReduce`: hierarchical copy with `numPacks` packs. */
export class HierarchicalCopyAllReduce extends PackedAllReduce {
  constructor(options: { numPacks?: number } = {}) {
    super('HierarchicalCopyAllReduce', options);
  }
}

/** An all-reduce spec: an algorithm name, `[alg, shards?, limit?]`, or a list of such tuples. */
export type AllReduceSpec = string | readonly [string, number?, number?] | readonly (readonly [string, number?, number?])[];

/**
 * All-reduce across the devices of several workers (`MultiWorkerAllReduce`): gradients of at
 * most `limit` elements go to the first spec whose limit admits them, each spec reduces its
 * share with its algorithm (`nccl`, `xring`, `nccl/xring`, `nccl/rechd`, `nccl/pscpu`,
 * `pscpu/pscpu`, `pscpu`, `psgpu`) in `shards` shards. `workerDevices` are the workers' device
 * prefixes (`/job:worker/replica:0/task:1`); in one process the values live on the virtual
 * devices of all workers.
 */
export class MultiWorkerAllReduce extends CrossDeviceOps {
  protected readonly spec: object;

  constructor(
    workerDevices: readonly string[],
    numGpusPerWorker: number,
    allReduceSpec: AllReduceSpec = ['pscpu/pscpu', 2, -1],
    options: MultiWorkerAllReduceOptions = {},
  ) {
    super();
    this.spec = {
      kind: 'MultiWorkerAllReduce',
      workerDevices,
      numGpusPerWorker,
      allReduceSpec,
      numPacks: options.numPacks ?? 0,
      aggSmallGradsMaxBytes: options.aggSmallGradsMaxBytes ?? 0,
      aggSmallGradsMaxGroup: options.aggSmallGradsMaxGroup ?? 10,
      timeoutSeconds: options.communicationOptions?.timeoutSeconds ?? null,
    };
    this.checked();
  }
}

/** Options of {@link MultiWorkerAllReduce}: packing, and timeouts across processes. */
export interface MultiWorkerAllReduceOptions extends AllReduceOptions {
  /** Timeouts across processes. */
  communicationOptions?: CommunicationOptions;
}

/**
 * TensorFlow 2's `CommunicationOptions` for ops across processes (after `init({ backend: 'mpi' })`).
 */
export interface CommunicationOptions {
  /**
   * How long an all-reduce waits for the other ranks before failing with `ERR_TIMEOUT` (naming
   * the ranks that did not arrive) instead of hanging. Default 600.
   */
  timeoutSeconds?: number;
  /**
   * `CollectiveAllReduce` only: above 0, the dense values of a batch (last first, as backprop
   * produces them) are grouped into packs that close once they hold more than this many bytes,
   * and each pack is all-reduced as one flat tensor (TensorFlow 2's graph mode). 0 (default):
   * each value on its own (its eager mode).
   */
  bytesPerPack?: number;
}

/** Options of {@link CollectiveAllReduce}. */
export interface CollectiveAllReduceOptions {
  /** Workers taking part (default 1; across processes, the number of ranks). */
  numWorkers?: number;
  /** GPUs per worker, 0 for CPU workers (default 0). */
  numGpusPerWorker?: number;
  /** Variables launched together (default 32). */
  allReduceMergeScope?: number;
  /** Timeouts across processes. */
  communicationOptions?: CommunicationOptions;
}

/**
 * One collective all-reduce per variable across the devices of all workers. IndexedSlices are
 * rejected. In one process the workers' devices are virtual (`/job:worker/task:1/device:CPU:0`).
 */
export class CollectiveAllReduce extends CrossDeviceOps {
  protected readonly spec: object;

  constructor(options: CollectiveAllReduceOptions = {}) {
    super();
    this.spec = {
      kind: 'CollectiveAllReduce',
      numWorkers: options.numWorkers ?? 1,
      numGpusPerWorker: options.numGpusPerWorker ?? 0,
      allReduceMergeScope: options.allReduceMergeScope ?? 32,
      timeoutSeconds: options.communicationOptions?.timeoutSeconds ?? null,
      bytesPerPack: options.communicationOptions?.bytesPerPack ?? null,
    };
    this.checked();
  }
}

/**
 * The best cross-device ops for `devices`: hierarchical copy with 8 packs on DGX-1-like GPU
 * links, NCCL otherwise, and reduction to one device when a device is not a GPU of this machine.
 * Without `links`, the machine's GPUs and their NVLink peers come from `nvidia-smi` (as
 * `crossdev devices` shows them); `links[i]` lists the GPUs linked to requested GPU i, and when
 * given the devices are taken as present.
 */
export function chooseTheBest(devices: readonly string[], options: { links?: number[][] } = {}): CrossDeviceOps {
  const gpus = options.links ? undefined : probeGpus();
  const machine = gpus && { visibleGpus: gpus.devices.length, links: gpus.links };
  const choice = call().execute(JSON.stringify({ call: 'chooseTheBest', devices, links: options.links ?? null, machine: machine ?? null }), []).meta.choice;
  if (choice.kind === 'AllReduce') return new AllReduceCrossDeviceOps(choice.algorithm, { numPacks: choice.numPacks });
  return new ReductionToOneDevice();
}

/** TensorFlow 1.x name of {@link AllReduceCrossDeviceOps}. */
export const AllReduceCrossTowerOps = AllReduceCrossDeviceOps;
/** TensorFlow 1.x name of {@link CrossDeviceOps}. */
export const CrossTowerOps = CrossDeviceOps;
/** TensorFlow 1.x name of {@link ReductionToOneDevice}. */
export const ReductionToOneDeviceCrossTowerOps = ReductionToOneDevice;

export type { DeviceValue };
