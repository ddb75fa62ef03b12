/**
 * The all-reduce ops and their building blocks through the TypeScript API:
 * 1. SPEC §6.1 `_testReductionAndBroadcast` for AllReduceCrossDeviceOps (the four seed
 *    configurations), NcclAllReduce and HierarchicalCopyAllReduce on 2, 3, 4 and 8 virtual CPUs
 *    (the all-reduce really runs on them, Part A.5), plus batches that go through the packers;
 * 2. the §6.1 multi-worker matrix for MultiWorkerAllReduce (every algorithm), input order and
 *    device labels (Part A.3), CPU-only workers, spec errors (§5.9);
 * 3. CollectiveAllReduce over 3 workers (§6.1 MultiWorkerCollectiveAllReduceTest, §5.10);
 * 4. chooseTheBest on testChooseAlgorithm's link sets (§5.11);
 * 5. utils vectors: extractRanges (§1.4), ringPermutations (§2.2), groupDeviceNames (§1.10),
 *    CollectiveKeys (§1.14), parseAllReduceSpec (§5.9);
 * 6. plans: byte counts against theory (§1.3, §2.3, §2.5), results against test/reference.ts,
 *    the two-level builders (§2.7).
 */
import test, { type ExecutionContext } from 'ava';
import {
  AllReduceCrossDeviceOps,
  chooseTheBest,
  CollectiveAllReduce,
  CrossDeviceError,
  CrossDeviceOps,
  HierarchicalCopyAllReduce,
  IndexedSlices,
  MultiWorkerAllReduce,
  NcclAllReduce,
  PerDevice,
  Plan,
  ReduceOp,
  ReductionToOneDevice,
  tensor,
  Tensor,
  utils,
  type AllReduceSpec,
} from '../ts/index.js';
import { assertMirroredDense, B, canonAll, elems } from './helpers.js';
import { DESTINATIONS, expectations, perDevice, reductionAndBroadcastTests, SHAPES, type Dest } from './matrix.js';
import { firstDifference, reduceReference, type Data } from './reference.js';

const cpus = (n: number): string[] => Array.from({ length: n }, (_, i) => `/cpu:${i}`);

const ONE_D = { name: '1-D [1]', shape: [1], of: (x: number) => [x] };
/** Even lengths, for recursive halving-doubling across 2 workers (odd ones fail as in TF). */
const EVEN_SHAPES = [
  { name: 'vector[2]', shape: [2], of: (x: number) => [x, 2 * x] },
  { name: 'matrix[2,3]', shape: [2, 3], of: (x: number) => [x, 2 * x, 3 * x, 4 * x, 5 * x, 6 * x] },
];

/** Asserts that `f` throws a CrossDeviceError whose message is `message` (or matches it). */
function throwsCde(t: ExecutionContext, f: () => unknown, message: string | RegExp, what?: string): CrossDeviceError | undefined {
  const e = t.throws(f, { instanceOf: CrossDeviceError }, what);
  if (!e) return undefined;
  if (typeof message === 'string') t.is(e.message, message, what);
  else t.regex(e.message, message, what);
  return e as CrossDeviceError;
}

async function throwsCdeAsync(t: ExecutionContext, f: () => Promise<unknown>, message: string, what?: string): Promise<void> {
  const e = await t.throwsAsync(f, { instanceOf: CrossDeviceError }, what);
  if (e) t.is(e.message, message, what);
}


/**
 * Gradients of several shapes (scalars, empty, 1-D, 2-D, > 100 elements): element i of
 * gradient v on device d is 100·v + d + i/4, exact in float32, so each sum is exact.
 */
const GRAD_SHAPES: number[][] = [[], [3], [0], [2, 2], [150], [1], [10, 11], [100], [101], [5]];
/** The same mix with even element counts only. */
const EVEN_GRAD_SHAPES: number[][] = [[2], [4], [0], [2, 2], [150], [10, 10], [100], [102], [6]];
/** The gradients an algorithm can reduce across 2 workers. */
const gradShapesFor = (spec: AllReduceSpec) => (JSON.stringify(spec).includes('rechd') ? EVEN_GRAD_SHAPES : GRAD_SHAPES);
const numel = (s: readonly number[]) => s.reduce((a, b) => a * b, 1);
const gradValue = (v: number, d: number, i: number) => 100 * v + d + i / 4;

function gradients(devices: readonly string[], shapes: readonly number[][] = GRAD_SHAPES): PerDevice[] {
  return shapes.map((shape, v) => new PerDevice(devices.map((dev, d) => [dev, tensor(Array.from({ length: numel(shape) }, (_, i) => gradValue(v, d, i)), shape, { device: dev })] as const)));
}

function expectedGradient(n: number, v: number, shape: readonly number[], op: 'SUM' | 'MEAN'): number[] {
  return Array.from({ length: numel(shape) }, (_, i) => {
    let s = 0;
    for (let d = 0; d < n; d++) s += gradValue(v, d, i);
    return op === 'MEAN' ? Math.fround(s / n) : s;
  });
}

/** batchReduce of all GRAD_SHAPES with every destination the value itself: the packed all-reduce path. */
async function checkGradientBatch(t: ExecutionContext, ops: CrossDeviceOps, devices: string[], shapes: readonly number[][] = GRAD_SHAPES): Promise<void> {
  const grads = gradients(devices, shapes);
  for (const op of [ReduceOp.SUM, ReduceOp.MEAN] as const) {
    const pairs = grads.map((g) => [g, g] as const);
    for (const results of [await ops.batchReduce(op, pairs), ops.batchReduceSync(op, pairs)]) {
      t.is(results.length, shapes.length);
      results.forEach((m, v) => assertMirroredDense(t, m, canonAll(devices), { dtype: 'float32', shape: shapes[v], data: expectedGradient(devices.length, v, shapes[v], op) }));
    }
  }
}

// =============================================================================================
// 1. Single worker: AllReduceCrossDeviceOps and TF 2's classes (§6.1)
// =============================================================================================

const SINGLE_WORKER_OPS: [string, () => CrossDeviceOps][] = [
  ["AllReduceCrossDeviceOps('nccl', 1 pack)", () => new AllReduceCrossDeviceOps('nccl', { numPacks: 1, aggSmallGradsMaxBytes: 0, aggSmallGradsMaxGroup: 0 })],
  ["AllReduceCrossDeviceOps('hierarchical_copy', 8 packs)", () => new AllReduceCrossDeviceOps('hierarchical_copy', { numPacks: 8, aggSmallGradsMaxBytes: 0, aggSmallGradsMaxGroup: 0 })],
  ["AllReduceCrossDeviceOps('nccl', no packing)", () => new AllReduceCrossDeviceOps('nccl', { numPacks: 0, aggSmallGradsMaxBytes: 0, aggSmallGradsMaxGroup: 0 })],
  ["AllReduceCrossDeviceOps('hierarchical_copy', small-tensor packing 100/10)", () => new AllReduceCrossDeviceOps('hierarchical_copy', { numPacks: 0, aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 })],
  ['NcclAllReduce()', () => new NcclAllReduce()],
  ['HierarchicalCopyAllReduce()', () => new HierarchicalCopyAllReduce()],
];

const SINGLE_WORKER_DEVICES: string[][] = [['/cpu:0', '/cpu:1'], cpus(3), cpus(4), cpus(8), ['/cpu:0']];

for (const [name, makeOps] of SINGLE_WORKER_OPS) {
  for (const devices of SINGLE_WORKER_DEVICES) {
    reductionAndBroadcastTests(name, makeOps, devices, SHAPES);
    test(`[${B}] batchReduce of ${GRAD_SHAPES.length} gradients of mixed sizes (packing path): ${name}, ${devices.length} devices`, async (t) => {
      await checkGradientBatch(t, makeOps(), devices);
    });
  }
}

test(`[${B}] the all-reduce path gives MAX/MIN/PRODUCT and every dtype on 3 devices (hierarchical copy, odd count keeps every device)`, async (t) => {
  const devices = cpus(3);
  for (const ops of [new HierarchicalCopyAllReduce({ numPacks: 0 }), new NcclAllReduce({ numPacks: 2 }), new AllReduceCrossDeviceOps('hierarchical_copy', { numPacks: 0, aggSmallGradsMaxBytes: 64, aggSmallGradsMaxGroup: 4 })]) {
    for (const dtype of ['float32', 'float64', 'int32', 'int64'] as const) {
      const big = dtype === 'int64';
      const pd = new PerDevice(devices.map((dev, d) => [dev, tensor(big ? [BigInt(d + 1), BigInt(-d - 2)] : [d + 1, -d - 2], [2], { dtype, device: dev })] as const));
      const cases: [ReduceOp, number[]][] = [
        [ReduceOp.SUM, [6, -9]],
        [ReduceOp.MAX, [3, -2]],
        [ReduceOp.MIN, [1, -4]],
        [ReduceOp.PRODUCT, [6, -24]],
      ];
      for (const [op, want] of cases) {
        const data = big ? want.map(BigInt) : want;
        assertMirroredDense(t, await ops.reduce(op, pd, pd), canonAll(devices), { dtype, shape: [2], data });
      }
    }
  }
});

test(`[${B}] all-reduce ops raise _simple_reduce's error for a reduce op they do not support (Part A.3)`, async (t) => {
  const devices = workerDevices(2);
  const pd = perDevice(devices, SHAPES[1], (d) => d);
  const all: CrossDeviceOps[] = [
    new AllReduceCrossDeviceOps('nccl'),
    new AllReduceCrossDeviceOps('hierarchical_copy', { numPacks: 0, aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 }),
    new NcclAllReduce(),
    new HierarchicalCopyAllReduce({ numPacks: 0 }),
    new MultiWorkerAllReduce(WORKERS, 2, [['pscpu/pscpu', 2, 100], ['xring', 2, -1]]),
    new CollectiveAllReduce({ numWorkers: 2, numGpusPerWorker: 2 }),
  ];
  for (const ops of all) {
    for (const op of ['AVERAGE', 'sum', 'ONLY_FIRST_REPLICA'] as unknown as ReduceOp[]) {
      const e = t.throws(() => ops.reduceSync(op, pd, pd), { instanceOf: CrossDeviceError });
      t.is(e?.code, 'ERR_INVALID_REDUCE_OP');
      t.true(e?.message.startsWith('`aggregation` must be VariableAggregation.SUM or VariableAggregation.MEAN.'), e?.message);
      const b = await t.throwsAsync(() => ops.batchReduce(op, [[pd, pd]]), { instanceOf: CrossDeviceError });
      t.is(b?.code, 'ERR_INVALID_REDUCE_OP');
    }
  }
});

test(`[${B}] all-reduce ops: a batch mixing dtypes (small float32 runs packed, the rest reduced one by one)`, async (t) => {
  const devices = workerDevices(2);
  const n = devices.length;
  const make = (dtype: 'float32' | 'float64' | 'int32' | 'int64', shape: number[], v: number) =>
    new PerDevice(
      devices.map((dev, d) => {
        const xs = Array.from({ length: numel(shape) }, (_, i) => v * 10 + d + i);
        return [dev, tensor(dtype === 'int64' ? xs.map(BigInt) : xs, shape, { dtype, device: dev })] as const;
      }),
    );
  const layout: ['float32' | 'float64' | 'int32' | 'int64', number[]][] = [
    ['float32', [2]], ['float32', [3]], ['int32', [2]], ['float32', []], ['float32', [1]], ['float64', [4]], ['int64', [3]], ['float32', [200]], ['float32', [5]],
  ];
  const values = layout.map(([dtype, shape], v) => make(dtype, shape, v));
  const ops: CrossDeviceOps[] = [
    new AllReduceCrossDeviceOps('nccl', { numPacks: 0, aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 }),
    new AllReduceCrossDeviceOps('hierarchical_copy', { numPacks: 0, aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 1 }),
    new NcclAllReduce({ numPacks: 0 }),
    new MultiWorkerAllReduce(WORKERS, 2, [['pscpu/pscpu', 2, 4], ['xring', 2, -1]], { aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 }),
    new CollectiveAllReduce({ numWorkers: 2, numGpusPerWorker: 2 }),
  ];
  for (const o of ops) {
    const results = await o.batchReduce(ReduceOp.SUM, values.map((v) => [v, v] as const));
    results.forEach((m, v) => {
      const [dtype, shape] = layout[v];
      const data = Array.from({ length: numel(shape) }, (_, i) => n * (v * 10 + i) + (n * (n - 1)) / 2);
      assertMirroredDense(t, m, canonAll(devices), { dtype, shape, data: dtype === 'int64' ? data.map(BigInt) : data });
    });
  }
  // Concatenating packs needs one dtype.
  const mixed = [values[0], values[2]].map((v) => [v, v] as const);
  t.throws(() => new NcclAllReduce({ numPacks: 1 }).batchReduceSync(ReduceOp.SUM, mixed), { instanceOf: CrossDeviceError, message: /^Cannot pack tensors of different dtypes: float32 and int32/ });
});

test(`[${B}] all-reduce ops: a batch of values on different device sets is reduced pair by pair`, async (t) => {
  for (const [, makeOps] of SINGLE_WORKER_OPS) {
    const ops = makeOps();
    const a = perDevice(cpus(2), SHAPES[1], (d) => d + 1);
    const b = perDevice(['/cpu:5', '/cpu:6', '/cpu:7'], SHAPES[1], (d) => d + 1);
    const sum = await ops.batchReduce(ReduceOp.SUM, [[a, a], [b, b]]);
    assertMirroredDense(t, sum[0], canonAll(cpus(2)), { dtype: 'float32', shape: [3], data: [3, 6, 9] });
    assertMirroredDense(t, sum[1], canonAll(['/cpu:5', '/cpu:6', '/cpu:7']), { dtype: 'float32', shape: [3], data: [6, 12, 18] });
    const mean = ops.batchReduceSync(ReduceOp.MEAN, [[a, cpus(2)], [b, b]]);
    assertMirroredDense(t, mean[0], canonAll(cpus(2)), { dtype: 'float32', shape: [3], data: [1.5, 3, 4.5] });
    assertMirroredDense(t, mean[1], canonAll(['/cpu:5', '/cpu:6', '/cpu:7']), { dtype: 'float32', shape: [3], data: [2, 4, 6] });
  }
});

test(`[${B}] all-reduce ops: IndexedSlices fall back to reduction to one device`, (t) => {
  const devices = ['/cpu:0', '/cpu:1'];
  const slices = (rows: number[][], idx: number[], dev: string) =>
    new IndexedSlices(tensor(rows, undefined, { device: dev }), tensor(Int32Array.from(idx), [idx.length], { device: dev }), [5, 2]);
  const pd = new PerDevice([
    ['/cpu:0', slices([[1, 2]], [1], '/cpu:0')],
    ['/cpu:1', slices([[3, 4], [5, 6]], [1, 3], '/cpu:1')],
  ]);
  for (const ops of [new AllReduceCrossDeviceOps(), new NcclAllReduce(), new HierarchicalCopyAllReduce()]) {
    const m = ops.reduceSync(ReduceOp.SUM, pd, devices);
    t.deepEqual(m.devices, canonAll(devices));
    for (const v of m.values) {
      t.true(v instanceof IndexedSlices);
      t.deepEqual(elems((v as IndexedSlices).densify()), [0, 0, 4, 6, 0, 0, 5, 6, 0, 0]);
    }
  }
});

test(`[${B}] NcclAllReduce/HierarchicalCopyAllReduce reject negative numPacks; AllReduceCrossDeviceOps rejects unknown algorithms`, (t) => {
  throwsCde(t, () => new NcclAllReduce({ numPacks: -1 }), 'NCCL all-reduce requires num_packs >= 0, but -1 is specified');
  throwsCde(t, () => new HierarchicalCopyAllReduce({ numPacks: -2 }), 'HierarchicalCopy requires num_packs >= 0, but -2 is specified');
  // `_pack_tensors`: small-tensor packing only when both limits are positive, else none (no error).
  t.notThrows(() => new AllReduceCrossDeviceOps('nccl', { numPacks: 0, aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 0 }));
  t.notThrows(() => new AllReduceCrossDeviceOps('nccl', { numPacks: 0, aggSmallGradsMaxBytes: 0, aggSmallGradsMaxGroup: 0 }));
  throwsCde(t, () => new AllReduceCrossDeviceOps('ring' as 'nccl'), /unsupported all_reduce_alg "ring"/);
});

// =============================================================================================
// 2. Multi-worker: MultiWorkerAllReduce (§6.1, §5.9, Part A.3)
// =============================================================================================

const WORKERS = ['/job:worker/replica:0/task:0', '/job:worker/replica:0/task:1'];
/** Virtual device K of worker W. */
const wdev = (w: number, k: number, type = 'CPU') => `/job:worker/replica:0/task:${w}/device:${type}:${k}`;
/** Worker-major devices: G per worker (CPU:0 alone when G = 0, the CPU-only workers). */
const workerDevices = (g: number): string[] => [0, 1].flatMap((w) => (g === 0 ? [wdev(w, 0)] : Array.from({ length: g }, (_, k) => wdev(w, k))));

const ALGORITHMS = ['nccl', 'xring', 'nccl/xring', 'nccl/rechd', 'nccl/pscpu', 'pscpu/pscpu', 'pscpu', 'psgpu'] as const;

/** §6.1's four MultiWorkerAllReduce configurations. */
const SEED_MULTI_WORKER: [string, (g: number) => CrossDeviceOps][] = [
  ["('pscpu/pscpu', 2, -1), no packing", (g) => new MultiWorkerAllReduce(WORKERS, g, ['pscpu/pscpu', 2, -1], { numPacks: 0, aggSmallGradsMaxBytes: 0, aggSmallGradsMaxGroup: 0 })],
  ["('pscpu/pscpu', 2, -1), 1 pack", (g) => new MultiWorkerAllReduce(WORKERS, g, ['pscpu/pscpu', 2, -1], { numPacks: 1, aggSmallGradsMaxBytes: 0, aggSmallGradsMaxGroup: 0 })],
  ["('pscpu/pscpu', 2, -1), small-tensor packing 100/10", (g) => new MultiWorkerAllReduce(WORKERS, g, ['pscpu/pscpu', 2, -1], { numPacks: 0, aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 })],
  ["[('pscpu/pscpu', 2, 100), ('xring', 2, -1)]", (g) => new MultiWorkerAllReduce(WORKERS, g, [['pscpu/pscpu', 2, 100], ['xring', 2, -1]])],
];

/** Every algorithm by name (shards 1), and as a tuple with 2 shards where that is valid. */
const ALGORITHM_OPS: [string, AllReduceSpec][] = [
  ...ALGORITHMS.map((a): [string, AllReduceSpec] => [`'${a}'`, a]),
  ...ALGORITHMS.filter((a) => a !== 'nccl/xring').map((a): [string, AllReduceSpec] => [`('${a}', 2, -1)`, [a, 2, -1]]),
];

for (const [name, make] of SEED_MULTI_WORKER) {
  reductionAndBroadcastTests(`MultiWorkerAllReduce${name}, 2 workers × 2 devices`, () => make(2), workerDevices(2), SHAPES);
  reductionAndBroadcastTests(`MultiWorkerAllReduce${name}, 2 workers × 1 device`, () => make(1), workerDevices(1), [SHAPES[0]]);
}
for (const [name, spec] of ALGORITHM_OPS) {
  const shapes = JSON.stringify(spec).includes('rechd') ? EVEN_SHAPES : SHAPES;
  reductionAndBroadcastTests(`MultiWorkerAllReduce(${name}), 2 workers × 2 devices`, () => new MultiWorkerAllReduce(WORKERS, 2, spec), workerDevices(2), shapes);
}

test(`[${B}] MultiWorkerAllReduce('nccl/rechd'): the upper level halves each tensor, so odd lengths fail as in TensorFlow`, (t) => {
  const devices = workerDevices(2);
  for (const shape of SHAPES) {
    const pd = perDevice(devices, shape, (d) => d);
    throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, 'nccl/rechd').reduceSync(ReduceOp.SUM, pd, pd), /^recursive halving-doubling over 2 devices needs a length divisible by 2, got [13]$/);
  }
});

/** Devices of both workers in an order that is neither worker-major nor sorted. */
const SHUFFLED = [wdev(1, 1), wdev(0, 0), wdev(1, 0), wdev(0, 1)];

for (const [name, spec] of [...ALGORITHM_OPS, ["[('pscpu/pscpu', 2, 100), ('xring', 2, -1)]", [['pscpu/pscpu', 2, 100], ['xring', 2, -1]]] as [string, AllReduceSpec]]) {
  test(`[${B}] MultiWorkerAllReduce(${name}): a batch of small (≤100) and large gradients comes back in input order, each result on its own device`, async (t) => {
    for (const options of [{}, { numPacks: 1 }, { numPacks: 3 }, { aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 }]) {
      const ops = new MultiWorkerAllReduce(WORKERS, 2, spec, options);
      await checkGradientBatch(t, ops, workerDevices(2), gradShapesFor(spec));
      await checkGradientBatch(t, ops, SHUFFLED, gradShapesFor(spec));
    }
  });
}

test(`[${B}] MultiWorkerAllReduce with several specs: each spec takes the gradients within its limit, results in input order`, async (t) => {
  // Limits in elements (split_grads_by_size): [1], [8] go to 'pscpu'; [9], [3,3] to 'nccl/pscpu'; the rest to 'xring'.
  const shapes = [[200], [1], [9], [300], [8], [3, 3], [40]];
  const ops = new MultiWorkerAllReduce(WORKERS, 2, [['pscpu', 2, 8], ['nccl/pscpu', 1, 20], ['xring', 1, -1]]);
  await checkGradientBatch(t, ops, workerDevices(2), shapes);
  await checkGradientBatch(t, ops, SHUFFLED, shapes);
  // Four specs, recursive halving-doubling for the mid-sized (even) ones.
  const even = [[200], [2], [10], [300], [8], [4, 4], [40]];
  const four = new MultiWorkerAllReduce(WORKERS, 2, [['pscpu/pscpu', 2, 2], ['psgpu', 2, 8], ['nccl/rechd', 1, 20], ['nccl/xring', 1, -1]], { aggSmallGradsMaxBytes: 100, aggSmallGradsMaxGroup: 10 });
  await checkGradientBatch(t, four, workerDevices(2), even);
  await checkGradientBatch(t, four, SHUFFLED, even);
  // The MEAN divides by every device of every worker.
  const m = ops.reduceSync(ReduceOp.MEAN, perDevice(SHUFFLED, SHAPES[1], (d) => 4 * d), SHUFFLED);
  assertMirroredDense(t, m, canonAll(SHUFFLED), { dtype: 'float32', shape: [3], data: [6, 12, 18] });
});

test(`[${B}] MultiWorkerAllReduce on CPU-only workers (0 GPUs, one device each) with pscpu/pscpu`, async (t) => {
  const devices = workerDevices(0);
  t.deepEqual(canonAll(['/job:worker/task:0', '/job:worker/task:1']), canonAll(devices));
  for (const [, make] of SEED_MULTI_WORKER) {
    const ops = make(0);
    const pd = perDevice(devices, SHAPES[1], (d) => d + 1);
    assertMirroredDense(t, await ops.reduce(ReduceOp.SUM, pd, pd), canonAll(devices), { dtype: 'float32', shape: [3], data: [3, 6, 9] });
    assertMirroredDense(t, ops.reduceSync(ReduceOp.MEAN, pd, ['/job:worker/task:0', '/job:worker/task:1']), canonAll(devices), { dtype: 'float32', shape: [3], data: [1.5, 3, 4.5] });
  }
  for (const spec of [['pscpu/pscpu', 2, -1], ['pscpu/pscpu', 1, -1], 'pscpu', ['pscpu', 2, -1], 'nccl', 'nccl/pscpu', 'nccl/rechd', 'nccl/xring'] as AllReduceSpec[]) {
    await checkGradientBatch(t, new MultiWorkerAllReduce(WORKERS, 0, spec), devices, gradShapesFor(spec));
  }
  // The CPU-only distribution with the seed's spec list: scalars all go to pscpu/pscpu.
  const list = new MultiWorkerAllReduce(WORKERS, 0, [['pscpu/pscpu', 2, 100], ['xring', 2, -1]]);
  reductionChecks(t, list, devices);
});

/** The §6.1 reduce assertions for one ops object on `devices`, Sync forms only. */
function reductionChecks(t: ExecutionContext, ops: CrossDeviceOps, devices: string[]): void {
  const expected = expectations(devices.length);
  const pd = perDevice(devices, SHAPES[0], (d) => d);
  const pd2 = perDevice(devices, SHAPES[0], (d) => d + 1);
  for (const dest of DESTINATIONS) {
    for (const op of [ReduceOp.MEAN, ReduceOp.SUM] as const) {
      for (const [i, value] of [pd, pd2].entries()) {
        assertMirroredDense(t, ops.reduceSync(op, value, dest.make(devices, pd)), dest.expect(devices), { dtype: 'float32', shape: [], data: [expected[op][i]] });
      }
    }
  }
}

test(`[${B}] MultiWorkerAllReduce: ring algorithms need GPUs or enough of them`, (t) => {
  const big = (devices: string[]) => perDevice(devices, { name: '', shape: [200], of: (x) => Array(200).fill(x) }, (d) => d);
  // xring over CPU-only workers: no GPU permutation to build the ring from (§1.13).
  const cpuOnly = workerDevices(0);
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 0, [['pscpu/pscpu', 2, 100], ['xring', 2, -1]]).reduceSync(ReduceOp.SUM, big(cpuOnly), cpuOnly), /xring needs/);
  // More ring subchunks than GPUs per worker.
  const one = workerDevices(1);
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 1, ['xring', 2, -1]).reduceSync(ReduceOp.SUM, big(one), one), 'num_subchunks 2 must be <= num_gpus 1');
  // nccl/xring's upper ring has gpu_perm [0]: any subdiv > 1 fails (§2.7).
  const two = workerDevices(2);
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, ['nccl/xring', 2, -1]).reduceSync(ReduceOp.SUM, big(two), two), 'num_subchunks 2 must be <= num_gpus 1');
});

test(`[${B}] MultiWorkerAllReduce spec errors (§5.9)`, (t) => {
  const unknown = throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, 'foo'), /^unsupported all_reduce alg: "foo"/);
  for (const alg of ALGORITHMS) t.true(unknown?.message.includes(alg), `the message lists ${alg}`);
  t.is(unknown?.code, 'ERR_INVALID_ARGUMENT');
  for (const bad of ['psgpu/psgpu', 'xring/pscpu', 'NCCL', 'hierarchical_copy', '']) {
    throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, bad), /^unsupported all_reduce alg: /, bad);
    throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, [bad, 2, -1]), /^unsupported all_reduce alg: /, bad);
  }
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, [['pscpu', 2, 10], ['bogus', 1, -1]]), /^unsupported all_reduce alg: "bogus"/);
  const four = throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, ['pscpu', 2, -1, 5] as unknown as AllReduceSpec), /^Too many elements in the all-reduce spec tuple: /);
  t.true(four?.message.includes('pscpu'));
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, [] as unknown as AllReduceSpec), /^Too many elements in the all-reduce spec tuple: /);
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, [['xring', 2, 10], ['pscpu', 1, -1, 0]] as unknown as AllReduceSpec), /^Too many elements in the all-reduce spec tuple: /);
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, 5 as unknown as AllReduceSpec), 'A tuple is expected for all-reduce spec: 5');
  // The last spec must take every remaining gradient.
  throwsCde(t, () => new MultiWorkerAllReduce(WORKERS, 2, [['pscpu', 2, 100]]), /the last must be -1/);
  // Packing arguments are checked too.
  t.notThrows(() => new MultiWorkerAllReduce(WORKERS, 2, ['pscpu', 2, -1], { numPacks: 2 }));
});

// =============================================================================================
// 3. CollectiveAllReduce (§6.1 MultiWorkerCollectiveAllReduceTest, §5.10, §1.15)
// =============================================================================================

/** `"/job:worker/task:i/device:GPU:k"` for 3 workers, or `"/job:worker/task:i"` when g = 0. */
const collectiveDevices = (g: number, workers = 3): string[] =>
  Array.from({ length: workers }, (_, i) => (g === 0 ? [`/job:worker/task:${i}`] : Array.from({ length: g }, (_, k) => `/job:worker/task:${i}/device:GPU:${k}`))).flat();

const COLLECTIVE_DESTINATIONS: Dest[] = [
  ...DESTINATIONS,
  { name: 'a list overlapping the devices in one place', make: (ds) => [ds[1], '/cpu:5'], expect: (ds) => canonAll([ds[1], '/cpu:5']) },
  { name: 'a variable-like object on another device', make: () => ({ device: '/job:worker/task:2/device:CPU:3' }), expect: () => ['/job:worker/replica:0/task:2/device:CPU:3'] },
];

for (const g of [0, 1, 2]) {
  reductionAndBroadcastTests(`CollectiveAllReduce({numWorkers: 3, numGpusPerWorker: ${g}})`, () => new CollectiveAllReduce({ numWorkers: 3, numGpusPerWorker: g }), collectiveDevices(g), [ONE_D], COLLECTIVE_DESTINATIONS);
}
reductionAndBroadcastTests(
  'CollectiveAllReduce({numWorkers: 1, numGpusPerWorker: 2}) (local)',
  () => new CollectiveAllReduce({ numWorkers: 1, numGpusPerWorker: 2 }),
  ['/device:GPU:0', '/device:GPU:1'],
  [ONE_D],
  COLLECTIVE_DESTINATIONS,
);

test(`[${B}] CollectiveAllReduce: a batch of gradients of mixed sizes, and merge scopes smaller than the batch`, async (t) => {
  for (const scope of [1, 3, 32]) {
    const ops = new CollectiveAllReduce({ numWorkers: 3, numGpusPerWorker: 2, allReduceMergeScope: scope });
    await checkGradientBatch(t, ops, collectiveDevices(2));
  }
});

test(`[${B}] CollectiveAllReduce with communicationOptions.bytesPerPack packs by size and gives the same sums`, async (t) => {
  for (const bytesPerPack of [1, 64, 4096, 1 << 24]) {
    const ops = new CollectiveAllReduce({ numWorkers: 3, numGpusPerWorker: 2, communicationOptions: { bytesPerPack } });
    await checkGradientBatch(t, ops, collectiveDevices(2));
  }
  for (const bad of [-1, 1.5]) {
    throwsCde(t, () => new CollectiveAllReduce({ numWorkers: 3, communicationOptions: { bytesPerPack: bad } }), `Argument \`bytes_per_pack\` must be >=0, Received ${bad}.`);
  }
});

test(`[${B}] CollectiveAllReduce rejects IndexedSlices`, async (t) => {
  const devices = collectiveDevices(0);
  const slices = (dev: string) => new IndexedSlices(tensor([[1, 2]], undefined, { device: dev }), tensor(Int32Array.of(1), [1], { device: dev }), [5, 2]);
  const sparse = new PerDevice(devices.map((d) => [d, slices(d)] as const));
  const dense = perDevice(devices, ONE_D, (d) => d);
  const ops = new CollectiveAllReduce({ numWorkers: 3 });
  const message = '`IndexSlices` is not supported for Collective All-Reduce.';
  throwsCde(t, () => ops.reduceSync(ReduceOp.SUM, sparse, sparse), message);
  throwsCde(t, () => ops.reduceSync(ReduceOp.MEAN, sparse, '/cpu:0'), message);
  await throwsCdeAsync(t, () => ops.reduce(ReduceOp.SUM, sparse, devices), message);
  throwsCde(t, () => ops.batchReduceSync(ReduceOp.SUM, [[dense, dense], [sparse, sparse]]), message);
  await throwsCdeAsync(t, () => ops.batchReduce(ReduceOp.SUM, [[sparse, '/cpu:0']]), message);
});

test(`[${B}] CollectiveAllReduce: one device and one worker is a group of 1`, async (t) => {
  const message = 'num_workers * len(input_tensors) must be 2 or greater';
  const ops = new CollectiveAllReduce({ numWorkers: 1, numGpusPerWorker: 0 });
  const one = new PerDevice([['/cpu:0', tensor([1], [1])]]);
  throwsCde(t, () => ops.reduceSync(ReduceOp.SUM, one, '/cpu:0'), message);
  throwsCde(t, () => ops.reduceSync(ReduceOp.SUM, tensor([1], [1], { device: '/gpu:0' }), '/gpu:0'), message);
  await throwsCdeAsync(t, () => ops.batchReduce(ReduceOp.MEAN, [[one, one]]), message);
  // The devices must belong to the workers the op was made for.
  throwsCde(t, () => new CollectiveAllReduce({ numWorkers: 3 }).reduceSync(ReduceOp.SUM, perDevice(collectiveDevices(0, 2), ONE_D, (d) => d), '/cpu:0'), /^CollectiveAllReduce over 3 workers/);
});

// =============================================================================================
// 4. chooseTheBest (§5.11, testChooseAlgorithm)
// =============================================================================================

const DGX1 = [[1, 2, 3, 4], [0, 2, 3, 5], [0, 1, 3, 6], [0, 1, 2, 7], [0, 5, 6, 7], [1, 4, 6, 7], [2, 4, 5, 7], [3, 4, 5, 6]];
const GPUS = Array.from({ length: 8 }, (_, i) => `/gpu:${i}`);

/** The configuration an ops object hands the core (kind, algorithm, numPacks); not public API. */
const configOf = (ops: CrossDeviceOps) => (ops as unknown as { spec: { kind: string; algorithm?: string; numPacks?: number } }).spec;

async function checkRuns(t: ExecutionContext, ops: CrossDeviceOps, devices: string[]): Promise<void> {
  await checkGradientBatch(t, ops, devices, [[], [3], [17], [2, 5]]);
}

const CHOOSE_CASES: [string, number[][], 'hierarchical_copy' | 'nccl', number][] = [
  ['the DGX-1 links', DGX1, 'hierarchical_copy', 8],
  ['only the first 4 rows', DGX1.slice(0, 4), 'nccl', 1],
  ['DGX-1 rows each with its own index', DGX1.map((row, i) => [...row, i].sort((a, b) => a - b)), 'hierarchical_copy', 8],
  ['rows rotated by one', [[0, 2, 3, 5], [0, 1, 3, 6], [0, 1, 2, 7], [0, 5, 6, 7], [1, 4, 6, 7], [2, 4, 5, 7], [3, 4, 5, 6], [1, 2, 3, 4]], 'nccl', 1],
  ['DGX-1 rows in another order within each row', DGX1.map((row) => [...row].reverse()), 'hierarchical_copy', 8],
  ['DGX-1 plus a ninth row (only the first 8 compared; packs = rows)', [...DGX1, [0]], 'hierarchical_copy', 9],
  ['no links', [], 'nccl', 1],
];

for (const [name, links, algorithm, numPacks] of CHOOSE_CASES) {
  test(`[${B}] chooseTheBest on 8 GPUs with ${name} → ${algorithm}, ${numPacks} pack(s)`, async (t) => {
    const ops = chooseTheBest(GPUS, { links });
    t.true(ops instanceof AllReduceCrossDeviceOps);
    t.like(configOf(ops), { kind: 'AllReduce', algorithm, numPacks });
    await checkRuns(t, ops, GPUS);
  });
}

test(`[${B}] chooseTheBest falls back to ReductionToOneDevice for CPUs and for GPUs this machine cannot see`, async (t) => {
  for (const [devices, links] of [
    [['/gpu:0', '/cpu:0'], DGX1],
    [[...GPUS.slice(0, 7), '/cpu:0'], DGX1],
    [['/cpu:0', '/cpu:1'], undefined],
    [['/cpu:0'], DGX1],
    [GPUS, undefined],
    [['/gpu:0', '/gpu:1'], undefined],
  ] as [string[], number[][] | undefined][]) {
    const ops = chooseTheBest(devices, links ? { links } : {});
    t.true(ops instanceof ReductionToOneDevice, `${devices} with${links ? '' : 'out'} links`);
    t.false(ops instanceof AllReduceCrossDeviceOps);
    await checkRuns(t, ops, devices);
  }
});

// =============================================================================================
// 5. utils vectors
// =============================================================================================

test(`[${B}] utils.extractRanges: SPEC §1.4 vectors, runs of up to limit + 2`, (t) => {
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  t.deepEqual(utils.extractRanges(range(10), 2), { ranges: [[0, 3], [4, 7], [8, 9]], singles: [] });
  t.deepEqual(utils.extractRanges([1, 3, 4, 6, 7, 8, 9]), { ranges: [[3, 4], [6, 9]], singles: [1] });
  t.deepEqual(utils.extractRanges([1, 2, 3, 4, 6, 7, 8, 9]), { ranges: [[1, 4], [6, 9]], singles: [] });
  t.deepEqual(utils.extractRanges([1, 3, 4, 6, 7, 9]), { ranges: [[3, 4], [6, 7]], singles: [1, 9] });
  t.deepEqual(utils.extractRanges([1, 3, 6, 9]), { ranges: [], singles: [1, 3, 6, 9] });
  t.deepEqual(utils.extractRanges([]), { ranges: [], singles: [] });
  t.deepEqual(utils.extractRanges([7]), { ranges: [], singles: [7] });
  t.deepEqual(utils.extractRanges(range(40)), { ranges: [[0, 33], [34, 39]], singles: [] });
  t.deepEqual(utils.extractRanges(range(5), 0), { ranges: [[0, 1], [2, 3]], singles: [4] });
  t.deepEqual(utils.extractRanges(range(4), 1), { ranges: [[0, 2]], singles: [3] });
});

test(`[${B}] utils.ringPermutations: every SPEC §2.2 vector and the subchunk error`, (t) => {
  const r = (n: number) => Array.from({ length: n }, (_, i) => i);
  const cases: [number, number, number[], number[][], number[][]][] = [
    [1, 0, [], [], []],
    [1, 1, [0], [[0]], [[0]]],
    [1, 1, [0, 1, 2], [[2, 0, 1]], [[0, 1, 2]]],
    [2, 1, [0, 1, 2], [[5, 0, 1, 2, 3, 4]], [r(6)]],
    [3, 1, [0, 1, 2], [[8, 0, 1, 2, 3, 4, 5, 6, 7]], [r(9)]],
    [2, 1, [2, 1, 0], [[1, 2, 3, 4, 5, 0]], [[2, 1, 0, 5, 4, 3]]],
    [1, 2, [0, 1, 2, 3], [[3, 0, 1, 2], [3, 0, 1, 2]], [[0, 1, 2, 3], [2, 3, 0, 1]]],
    [1, 4, [0, 1, 2, 3], Array(4).fill([3, 0, 1, 2]), [[0, 1, 2, 3], [3, 0, 1, 2], [2, 3, 0, 1], [1, 2, 3, 0]]],
    [2, 2, [0, 1, 2, 3], [[7, 0, 1, 2, 3, 4, 5, 6], [3, 0, 5, 2, 7, 4, 1, 6]], [r(8), [2, 3, 0, 1, 6, 7, 4, 5]]],
  ];
  for (const [w, s, perm, pred, rank] of cases) {
    t.deepEqual(utils.ringPermutations(w, s, perm), { pred, rank }, `(${w}, ${s}, [${perm}])`);
  }
  throwsCde(t, () => utils.ringPermutations(1, 2, [0]), 'num_subchunks 2 must be <= num_gpus 1');
  throwsCde(t, () => utils.ringPermutations(2, 5, [0, 1, 2, 3]), 'num_subchunks 5 must be <= num_gpus 4');
  // n == 0 is checked before the subchunk count.
  t.deepEqual(utils.ringPermutations(0, 3, [0, 1]), { pred: [], rank: [] });
});

test(`[${B}] utils.groupDeviceNames: SPEC §1.10 examples and error`, (t) => {
  t.deepEqual(utils.groupDeviceNames(['a', 'b', 'c'], 2), [['a', 'c'], ['b', 'a']]);
  t.deepEqual(utils.groupDeviceNames(['a', 'b', 'c', 'd'], 2), [['a', 'c'], ['b', 'd']]);
  t.deepEqual(utils.groupDeviceNames(['a', 'b', 'c', 'd'], 1), [['a'], ['b'], ['c'], ['d']]);
  t.deepEqual(utils.groupDeviceNames(['a', 'b', 'c'], 3), [['a', 'b', 'c']]);
  // §1.13's psgpu example: gpu0 of every worker, then gpu1 of every worker, in groups of 2.
  t.deepEqual(utils.groupDeviceNames(['P0/gpu:0', 'P1/gpu:0', 'P0/gpu:1', 'P1/gpu:1'], 2), [['P0/gpu:0', 'P0/gpu:1'], ['P1/gpu:0', 'P1/gpu:1']]);
  const e = throwsCde(t, () => utils.groupDeviceNames(['a', 'b', 'c'], 4), 'only 3 devices, but group_size=4');
  t.is(e?.code, 'ERR_INVALID_ARGUMENT');
});

test(`[${B}] utils.CollectiveKeys: group keys ignore job, task and order; instance keys count from 100; id keys from 10001, stable`, (t) => {
  const keys = new utils.CollectiveKeys();
  // §1.14: key id "GPU:0,GPU:1".
  t.is(keys.getGroupKey(['/job:w/task:1/device:GPU:1', '/job:w/task:1/device:GPU:0']), 1);
  t.is(keys.getGroupKey(['/job:worker/task:0/device:GPU:0', '/job:worker/task:3/device:GPU:1']), 1);
  t.is(keys.getGroupKey(['/job:w/task:1/device:GPU:0']), 2);
  t.is(keys.getGroupKey(['/job:w/task:1/device:CPU:0', '/job:w/task:1/device:GPU:0']), 3);
  t.is(keys.getGroupKey(['/job:w/task:1/device:GPU:1', '/job:w/task:1/device:GPU:0']), 1);
  t.deepEqual([keys.getInstanceKey(), keys.getInstanceKey(), keys.getInstanceKey()], [100, 101, 102]);
  t.is(keys.getInstanceKey('var_a'), 10001);
  t.is(keys.getInstanceKey('var_b'), 10002);
  t.is(keys.getInstanceKey('var_a'), 10001);
  t.is(keys.getInstanceKey(), 103, 'id keys do not advance the plain counter');
  const other = new utils.CollectiveKeys({ groupKeyStart: 10, instanceKeyStart: 200, instanceKeyWithIdStart: 20000 });
  t.is(other.getGroupKey(['/gpu:0', '/gpu:1']), 10);
  t.is(other.getGroupKey(['/gpu:2']), 11);
  t.is(other.getInstanceKey(), 200);
  t.is(other.getInstanceKey('x'), 20001);
  // A device without a type and index cannot be named in a group.
  t.throws(() => keys.getGroupKey(['/job:w/task:1']), { instanceOf: CrossDeviceError });
});

test(`[${B}] utils.parseAllReduceSpec: strings, tuples of 1-3 elements, lists; errors`, (t) => {
  t.deepEqual(utils.parseAllReduceSpec('xring'), [['xring', 1, -1]]);
  t.deepEqual(utils.parseAllReduceSpec(['pscpu']), [['pscpu', 1, -1]]);
  t.deepEqual(utils.parseAllReduceSpec(['pscpu', 2]), [['pscpu', 2, -1]]);
  t.deepEqual(utils.parseAllReduceSpec(['pscpu/pscpu', 2, -1]), [['pscpu/pscpu', 2, -1]]);
  t.deepEqual(utils.parseAllReduceSpec([['pscpu/pscpu', 2, 100], ['xring', 2, -1]]), [['pscpu/pscpu', 2, 100], ['xring', 2, -1]]);
  t.deepEqual(utils.parseAllReduceSpec([['nccl'], ['psgpu', 4]]), [['nccl', 1, -1], ['psgpu', 4, -1]]);
  for (const alg of ALGORITHMS) t.deepEqual(utils.parseAllReduceSpec(alg), [[alg, 1, -1]]);
  throwsCde(t, () => utils.parseAllReduceSpec(['pscpu', 1, 2, 3]), 'Too many elements in the all-reduce spec tuple: ["pscpu",1,2,3]');
  throwsCde(t, () => utils.parseAllReduceSpec([]), 'Too many elements in the all-reduce spec tuple: []');
  throwsCde(t, () => utils.parseAllReduceSpec(5), 'A tuple is expected for all-reduce spec: 5');
  throwsCde(t, () => utils.parseAllReduceSpec(null), 'A tuple is expected for all-reduce spec: null');
  throwsCde(t, () => utils.parseAllReduceSpec('ring'), /^unsupported all_reduce alg: "ring"; expected one of nccl, xring, nccl\/xring, nccl\/rechd, nccl\/pscpu, pscpu\/pscpu, pscpu, psgpu$/);
  throwsCde(t, () => utils.parseAllReduceSpec([['xring', 2, 100], ['ring', 1, -1]]), /^unsupported all_reduce alg: "ring"/);
});

// =============================================================================================
// 6. Plans: bytes moved, results, two-level builders
// =============================================================================================

/** Bytes each device sends and receives, from a plan's per-link counts. */
function traffic(plan: Plan): { sent: Map<string, number>; received: Map<string, number> } {
  const sent = new Map<string, number>();
  const received = new Map<string, number>();
  for (const [link, bytes] of Object.entries(plan.bytesMoved().byLink)) {
    const [from, to] = link.split('->');
    sent.set(from, (sent.get(from) ?? 0) + bytes);
    received.set(to, (received.get(to) ?? 0) + bytes);
  }
  return { sent, received };
}

/** Distinct int32 inputs per device (exact under every order), and the reference reduction. */
function intInputs(n: number, len: number): Int32Array[] {
  return Array.from({ length: n }, (_, d) => Int32Array.from({ length: len }, (_, i) => ((d + 1) * 7919 + i * 104729) % 2001 - 1000));
}

/**
 * Runs the plan `build(dtype)` on int32 and integer-valued float32 inputs with every op and checks
 * against the reference (exact: integer sums do not depend on the order).
 */
async function checkPlanRuns(t: ExecutionContext, build: (dtype: 'int32' | 'float32') => Plan, inputDevices: readonly string[], what: string): Promise<void> {
  const n = inputDevices.length;
  for (const dtype of ['int32', 'float32'] as const) {
    const plan = build(dtype);
    t.is(plan.dtype, dtype);
    const len = plan.elements;
    const ints = intInputs(n, len);
    const datas: Data[] = dtype === 'int32' ? ints : ints.map((a) => Float32Array.from(a, (x) => x % 8));
    const pd = new PerDevice(inputDevices.map((dev, d) => [dev, tensor(datas[d], [len], { dtype, device: dev })] as const));
    for (const op of ['SUM', 'MEAN', 'MAX', 'MIN', 'PRODUCT'] as const) {
      if (dtype === 'float32' && op === 'MEAN') continue; // order-dependent rounding; covered by the property tests
      if (dtype === 'float32' && op === 'PRODUCT' && n > 4) continue;
      const want = reduceReference(dtype, op, datas);
      const m = await plan.run(pd, op);
      t.deepEqual(m.devices, canonAll(inputDevices), `${what} ${op} ${dtype}: devices`);
      for (const [d, v] of m) {
        const x = v as Tensor;
        t.deepEqual([...x.shape], [len]);
        t.is(firstDifference(dtype, x.data as Data, want), -1, `${what} ${op} ${dtype} on ${d}`);
      }
      const s = plan.runSync(pd, op);
      t.is(firstDifference(dtype, (s.values[0] as Tensor).data as Data, want), -1, `${what} ${op} ${dtype} (sync)`);
    }
  }
}

test(`[${B}] ring plans: 2(n−1)/n·L·4 bytes per device, 2(n−1)·L·4 in all; results equal the reference`, async (t) => {
  for (let n = 2; n <= 8; n++) {
    for (const k of [1, 3]) {
      const L = n * k;
      const devices = cpus(n);
      const builders: [string, (dtype?: 'int32' | 'float32') => Plan][] = [
        ['ring', (dtype) => utils.buildRingAllReduce({ devices, elements: L, dtype })],
        ['nccl', (dtype) => utils.buildNcclAllReduce({ devices, elements: L, dtype })],
      ];
      for (const [name, build] of builders) {
        const plan = build();
        t.is(plan.algorithm, name);
        t.is(plan.dtype, 'float32');
        const { sent, received } = traffic(plan);
        const perDevice = ((2 * (n - 1)) / n) * L * 4;
        t.is(sent.size, n);
        t.is(received.size, n);
        for (const d of canonAll(devices)) {
          t.is(sent.get(d), perDevice, `n=${n} L=${L} ${name} sent by ${d}`);
          t.is(received.get(d), perDevice, `n=${n} L=${L} ${name} received by ${d}`);
        }
        t.is(plan.bytesMoved().total, 2 * (n - 1) * L * 4);
        t.is(plan.stages.length, 2 * (n - 1));
        t.is(plan.steps.length, 2 * (n - 1) * n);
        t.deepEqual(plan.devices, canonAll(devices));
        t.regex(plan.toString(), new RegExp(`^plan ${name}: ${n} inputs of ${L} float32 elements`));
        await checkPlanRuns(t, build, devices, `${name} n=${n} L=${L}`);
      }
    }
    // Lengths that do not divide: the last chunks are clipped, the total is the same.
    for (const L of [1, n + 1, 3 * n - 1]) {
      t.is(utils.buildRingAllReduce({ devices: cpus(n), elements: L, dtype: 'float64' }).bytesMoved().total, 2 * (n - 1) * L * 8, `n=${n} L=${L} float64`);
      await checkPlanRuns(t, (dtype) => utils.buildRingAllReduce({ devices: cpus(n), elements: L, dtype }), cpus(n), `ring n=${n} L=${L}`);
    }
  }
  // Subchunks across 2 workers: the same bytes.
  const devices = workerDevices(4);
  const ring = (dtype?: 'int32' | 'float32') => utils.buildRingAllReduce({ devices, elements: 64, dtype, numWorkers: 2, numSubchunks: 2, gpuPerm: [0, 1, 2, 3] });
  t.is(ring().bytesMoved().total, 2 * 7 * 64 * 4);
  for (const b of traffic(ring()).sent.values()) t.is(b, ((2 * 7) / 8) * 64 * 4);
  await checkPlanRuns(t, ring, devices, 'ring 2×4, 2 subchunks');
  throwsCde(t, () => utils.buildRingAllReduce({ devices: ['/cpu:0'], elements: 4 }), 'input_tensors must be length 2 or longer');
});

test(`[${B}] hierarchical copy plans: (2n−2)·L·4 bytes for every count and pack index; results equal the reference`, async (t) => {
  for (let n = 2; n <= 8; n++) {
    for (let index = 0; index < n + 2; index++) {
      const build = (dtype?: 'int32' | 'float32') => utils.buildHierarchicalCopy({ devices: cpus(n), elements: 6, dtype, index });
      t.is(build().bytesMoved().total, (2 * n - 2) * 6 * 4, `n=${n} index=${index}`);
      await checkPlanRuns(t, build, cpus(n), `hierarchical_copy n=${n} index=${index}`);
    }
  }
  t.is(utils.buildHierarchicalCopy({ devices: ['/cpu:0'], elements: 6 }).bytesMoved().total, 0);
});

test(`[${B}] shuffle plans with gather devices outside the inputs: d·L in, d·L out; results equal the reference`, async (t) => {
  for (let d = 1; d <= 8; d++) {
    for (let g = 1; g <= 3; g++) {
      for (const L of [12, 13, 2]) {
        const gatherDevices = Array.from({ length: g }, (_, j) => `/job:ps/task:${j}/device:CPU:0`);
        const build = (dtype?: 'int32' | 'float32') => utils.buildShuffleAllReduce({ devices: cpus(d), gatherDevices, elements: L, dtype });
        const plan = build();
        const gathers = canonAll(gatherDevices);
        const { sent, received } = traffic(plan);
        const into = gathers.reduce((s, x) => s + (received.get(x) ?? 0), 0);
        const out = gathers.reduce((s, x) => s + (sent.get(x) ?? 0), 0);
        t.is(into, d * L * 4, `d=${d} g=${g} L=${L}: into gather devices`);
        t.is(out, d * L * 4, `d=${d} g=${g} L=${L}: out of gather devices`);
        t.is(plan.bytesMoved().total, 2 * d * L * 4);
        for (const x of canonAll(cpus(d))) {
          t.is(sent.get(x), L * 4);
          t.is(received.get(x), L * 4);
        }
        t.deepEqual(plan.devices, [...canonAll(cpus(d)), ...gathers]);
        await checkPlanRuns(t, build, cpus(d), `shuffle d=${d} g=${g} L=${L}`);
      }
    }
  }
});

test(`[${B}] reduce-to-one and recursive halving-doubling plans: bytes and results`, async (t) => {
  for (let n = 1; n <= 8; n++) {
    const build = (dtype?: 'int32' | 'float32') => utils.buildReduceToOne({ devices: cpus(n), elements: 5, dtype });
    t.is(build().bytesMoved().total, 2 * (n - 1) * 5 * 4);
    await checkPlanRuns(t, build, cpus(n), `reduce_to_one n=${n}`);
  }
  for (const n of [1, 2, 4, 8]) {
    const L = 3 * n;
    const build = (dtype?: 'int32' | 'float32') => utils.buildRecursiveHdAllReduce({ devices: cpus(n), elements: L, dtype });
    // Each phase moves L(1 − 1/n) elements per device.
    t.is(build().bytesMoved().total, 2 * n * (L - L / n) * 4, `rechd n=${n}`);
    await checkPlanRuns(t, build, cpus(n), `rechd n=${n}`);
  }
  for (const n of [3, 5, 6, 7]) throwsCde(t, () => utils.buildRecursiveHdAllReduce({ devices: cpus(n), elements: 2 * n }), 'num_devices must be a power of 2');
});

test(`[${B}] two-level plans over 2 workers run and give the right results`, async (t) => {
  for (const [g0, g1] of [[1, 1], [2, 2], [3, 1], [1, 4]]) {
    const devices = [...Array.from({ length: g0 }, (_, k) => wdev(0, k)), ...Array.from({ length: g1 }, (_, k) => wdev(1, k))];
    const gather = [`${WORKERS[0]}/cpu:0`, `${WORKERS[1]}/cpu:0`];
    for (const elements of [0, 1, 6, 7]) {
      type D = 'int32' | 'float32' | undefined;
      const builders: [string, (dtype: D) => Plan][] = [
        ['nccl/xring', (dtype) => utils.buildNcclThenRing({ devices, elements, dtype })],
        ['nccl/pscpu', (dtype) => utils.buildNcclThenShuffle({ devices, elements, dtype, gatherDevices: gather })],
        ['nccl/pscpu', (dtype) => utils.buildNcclThenShuffle({ devices, elements, dtype, gatherDevices: ['/job:ps/task:0/cpu:0'] })],
        ['pscpu/pscpu', (dtype) => utils.buildShuffleThenShuffle({ devices, elements, dtype, gatherDevices: gather, secondGatherDevices: gather })],
        ['pscpu/pscpu', (dtype) => utils.buildShuffleThenShuffle({ devices, elements, dtype, gatherDevices: gather, secondGatherDevices: gather.slice(0, 1) })],
        ['pscpu/xring', (dtype) => utils.buildShuffleThenRing({ devices, elements, dtype, gatherDevices: gather })],
      ];
      if (elements % 2 === 0) builders.push(['nccl/rechd', (dtype) => utils.buildNcclThenRecursiveHd({ devices, elements, dtype })]);
      for (const [name, build] of builders) {
        const plan = build(undefined);
        t.is(plan.algorithm, name);
        t.deepEqual(plan.devices.slice(0, devices.length), canonAll(devices));
        await checkPlanRuns(t, build, devices, `${name} ${g0}+${g1} devices, ${elements} elements`);
      }
    }
    // The upper level of nccl/rechd over 2 workers halves the data: odd lengths fail.
    throwsCde(t, () => utils.buildNcclThenRecursiveHd({ devices, elements: 7 }), 'recursive halving-doubling over 2 devices needs a length divisible by 2, got 7');
  }
  // Devices interleaved between workers: each output is still its own device's.
  const mixed = [wdev(1, 0), wdev(0, 0), wdev(1, 1), wdev(0, 1)];
  await checkPlanRuns(t, (dtype) => utils.buildNcclThenRing({ devices: mixed, elements: 9, dtype }), mixed, 'nccl/xring interleaved');
  const gathers = [`${WORKERS[1]}/cpu:0`, `${WORKERS[0]}/cpu:0`];
  await checkPlanRuns(t, (dtype) => utils.buildShuffleThenShuffle({ devices: mixed, elements: 9, dtype, gatherDevices: gathers, secondGatherDevices: [gathers[1]] }), mixed, 'pscpu/pscpu interleaved');
  // Errors of §2.7.
  const devices = workerDevices(2);
  throwsCde(t, () => utils.buildShuffleThenShuffle({ devices, elements: 4, gatherDevices: ['/cpu:0'], secondGatherDevices: ['/cpu:0'] }), 'For shuffle hybrid, gather_devices must contain one device per worker. ');
  throwsCde(t, () => utils.buildNcclThenRing({ devices, elements: 4, numSubchunks: 2 }), 'num_subchunks 2 must be <= num_gpus 1');
});

test(`[${B}] pscpu/pscpu plan bytes follow §1.13's message count (GPU inputs, CPU gather devices)`, (t) => {
  // W = 2 workers × G = 2 GPUs: level 1 W·G·L, level 2 (shuffle of the W partial sums through
  // both CPUs, one half each) L in + L out, level 3 W·G·L.
  const devices = [wdev(0, 0, 'GPU'), wdev(0, 1, 'GPU'), wdev(1, 0, 'GPU'), wdev(1, 1, 'GPU')];
  const gather = [`${WORKERS[0]}/cpu:0`, `${WORKERS[1]}/cpu:0`];
  const L = 10;
  const plan = utils.buildShuffleThenShuffle({ devices, elements: L, gatherDevices: gather, secondGatherDevices: gather });
  t.is(plan.bytesMoved().total, (2 * 2 + 2 + 2 * 2) * L * 4);
  const { sent, received } = traffic(plan);
  for (const d of canonAll(devices)) {
    t.is(sent.get(d), L * 4);
    t.is(received.get(d), L * 4);
  }
});
