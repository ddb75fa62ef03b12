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
  Mirrored,
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
  type Destinations,
} from '../ts/index.js';
import { assertMirroredDense, B, canonAll, cpu, elems } from './helpers.js';
import { firstDifference, reduceReference, type Data } from './reference.js';

const CPU_DEVICE = '/device:CPU:0';
const cpus = (n: number): string[] => Array.from({ length: n }, (_, i) => `/cpu:${i}`);

/** Scalars float(d) (TF's test) or the vector d·[1, 2, 3]: both exact in float32. */
const SHAPES: { name: string; shape: number[]; of: (x: number) => number[] }[] = [
  { name: 'scalar', shape: [], of: (x) => [x] },
  { name: 'vector[3]', shape: [3], of: (x) => [x, 2 * x, 3 * x] },
];
const ONE_D = { name: '1-D [1]', shape: [1], of: (x: number) => [x] };
type Shape = (typeof SHAPES)[number];

interface Dest {
  name: string;
  make: (devices: string[], pd: PerDevice) => Destinations;
  /** Canonical devices the result must be on. */
  expect: (devices: string[]) => string[];
}

/** §6.1's destinations (Mirrored on the devices, Mirrored on CPU:0, the string, the list), and the value itself. */
const DESTINATIONS: Dest[] = [
  { name: 'the PerDevice value', make: (_ds, pd) => pd, expect: (ds) => canonAll(ds) },
  { name: 'Mirrored on the devices', make: (ds) => new Mirrored(ds.map((d) => [d, tensor(1, undefined, { device: d })] as const)), expect: (ds) => canonAll(ds) },
  { name: "Mirrored on '/device:CPU:0'", make: () => new Mirrored({ [CPU_DEVICE]: tensor(1) }), expect: () => [cpu(0)] },
  { name: "the string '/device:CPU:0'", make: () => CPU_DEVICE, expect: () => [cpu(0)] },
  { name: 'the array of devices', make: (ds) => [...ds], expect: (ds) => canonAll(ds) },
];

function perDevice(devices: readonly string[], shape: Shape, value: (d: number) => number): PerDevice {
  return new PerDevice(devices.map((dev, d) => [dev, tensor(shape.of(value(d)), shape.shape, { device: dev })] as const));
}

/** The expected MEAN/SUM of per_device (values d) and per_device_2 (values d+1) over n devices. */
function expectations(n: number): Record<'MEAN' | 'SUM', [number, number]> {
  const mean = (n - 1) / 2;
  return { MEAN: [mean, mean + 1], SUM: [mean * n, (mean + 1) * n] };
}

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
 * `_testReductionAndBroadcast`: for each destination reduce MEAN/SUM of both values (Promise
 * and Sync forms), batchReduce over every ordered pair of destinations, broadcast(1.0, d).
 */
function reductionAndBroadcastTests(title: string, makeOps: () => CrossDeviceOps, devices: string[], shapes: Shape[], dests: Dest[] = DESTINATIONS): void {
  const n = devices.length;
  const expected = expectations(n);
  for (const shape of shapes) {
    const where = `${title}, ${n} device(s), ${shape.name}`;
    test(`[${B}] reduce MEAN/SUM to every destination: ${where}`, async (t) => {
      const ops = makeOps();
      const pd = perDevice(devices, shape, (d) => d);
      const pd2 = perDevice(devices, shape, (d) => d + 1);
      for (const dest of dests) {
        const destinations = dest.make(devices, pd);
        const want = dest.expect(devices);
        for (const op of [ReduceOp.MEAN, ReduceOp.SUM] as const) {
          for (const [i, value] of [pd, pd2].entries()) {
            const spec = { dtype: 'float32', shape: shape.shape, data: shape.of(expected[op][i]) };
            assertMirroredDense(t, await ops.reduce(op, value, destinations), want, spec);
            assertMirroredDense(t, ops.reduceSync(op, value, destinations), want, spec);
          }
        }
      }
    });

    test(`[${B}] batchReduce over every ordered pair of destinations: ${where}`, async (t) => {
      const ops = makeOps();
      const pd = perDevice(devices, shape, (d) => d);
      const pd2 = perDevice(devices, shape, (d) => d + 1);
      let checked = 0;
      for (const d1 of dests) {
        for (const d2 of dests) {
          for (const op of [ReduceOp.MEAN, ReduceOp.SUM] as const) {
            const pairs = [
              [pd, d1.make(devices, pd)],
              [pd2, d2.make(devices, pd)],
            ] as const;
            const e1 = { dtype: 'float32', shape: shape.shape, data: shape.of(expected[op][0]) };
            const e2 = { dtype: 'float32', shape: shape.shape, data: shape.of(expected[op][1]) };
            for (const results of [await ops.batchReduce(op, pairs), ops.batchReduceSync(op, pairs)]) {
              t.is(results.length, 2);
              assertMirroredDense(t, results[0], d1.expect(devices), e1);
              assertMirroredDense(t, results[1], d2.expect(devices), e2);
            }
            checked++;
          }
        }
      }
      t.is(checked, dests.length * dests.length * 2);
    });
  }

  test(`[${B}] broadcast(1.0, d) to every destination: ${title}, ${n} device(s)`, async (t) => {
    const ops = makeOps();
    const pd = perDevice(devices, SHAPES[0], (d) => d);
    for (const dest of dests) {
      const destinations = dest.make(devices, pd);
      const spec = { dtype: 'float32', shape: [], data: [1] };
      assertMirroredDense(t, await ops.broadcast(1.0, destinations), dest.expect(devices), spec);
      assertMirroredDense(t, ops.broadcastSync(tensor(1.0), destinations), dest.expect(devices), spec);
    }
  });
}

/**
 * Gradients of several shapes (scalars, empty, 1-D, 2-D, > 100 elements): element i of
 * gradient v on device d is 100·v + d + i/4, exact in float32, so each sum is exact.
 */
const GRAD_SHAPES: number[][] = [[], [3], [0], [2, 2], [150], [1], [10, 11], [100], [101], [5]];
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

const SINGLE_WORKER_DEVICES: string[][] = [['/cpu:0', '/cpu:1'], cpus(3), cpus(4), cpus(8)];

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
