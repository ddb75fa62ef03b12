/**
 * IndexedSlices and MapOutput through the public API: SPEC §6.1 testSimpleReduceWithIndexedSlices
 * and testIndexedSlicesAllReduce (with /cpu:1 standing in for the GPU), §6.2 cases 1-4 (and the
 * contains_indexed_slices / copy cases 5-11 as observable behaviour), §1.16 and §5.3 (MapOutput
 * counting for MEAN).
 */
import test from 'ava';
import {
  CrossDeviceError,
  IndexedSlices,
  MapOutput,
  PerDevice,
  ReduceOp,
  ReductionToOneDevice,
  resolveDevice,
  tensor,
  type DType,
} from '../ts/index.js';
import { assertMirroredDense, assertMirroredSlices, B, cpu, elems } from './helpers.js';

const GPU0 = '/job:localhost/replica:0/task:0/device:GPU:0';

function slices(values: number[][], indices: number[], denseShape: number[], device = '/cpu:0', indexDtype: DType = 'int32'): IndexedSlices {
  const v = tensor(values, values.length === 0 ? [0, denseShape[1]] : undefined, { device });
  return new IndexedSlices(v, tensor(indices, [indices.length], { dtype: indexDtype, device }), denseShape);
}

// t0 = IS([[1,2]], [1], [5,2]) on /cpu:0, t1 = IS([[3,4],[5,6]], [1,3], [5,2]) on the second device.
const t0 = () => slices([[1, 2]], [1], [5, 2], '/cpu:0');
const t1 = () => slices([[3, 4], [5, 6]], [1, 3], [5, 2], '/cpu:1');
const DENSE_SUM = [0, 0, 4, 6, 0, 0, 5, 6, 0, 0];

test(`[${B}] testSimpleReduceWithIndexedSlices: SUM on /cpu:0 concatenates the rows`, async (t) => {
  const pd = new PerDevice({ '/cpu:0': t0(), '/cpu:1': t1() });
  const ops = new ReductionToOneDevice({ reduceToDevice: '/cpu:0' });
  const expected = { values: [1, 2, 3, 4, 5, 6], valuesShape: [3, 2], indices: [1, 1, 3], denseShape: [5, 2], dense: DENSE_SUM };
  assertMirroredSlices(t, await ops.reduce(ReduceOp.SUM, pd, '/cpu:0'), [cpu(0)], expected);
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.SUM, pd, '/cpu:0'), [cpu(0)], expected);
  // Equal (densified) to IS([[4,6],[5,6]], [1,3]).
  t.deepEqual(elems(slices([[4, 6], [5, 6]], [1, 3], [5, 2]).densify()), DENSE_SUM);
});

for (const op of [ReduceOp.SUM, ReduceOp.MEAN] as const) {
  const values = op === ReduceOp.SUM ? [1, 2, 3, 4, 5, 6] : [0.5, 1, 1.5, 2, 2.5, 3];
  const dense = op === ReduceOp.SUM ? DENSE_SUM : [0, 0, 2, 3, 0, 0, 2.5, 3, 0, 0];
  const expected = { values, valuesShape: [3, 2], indices: [1, 1, 3], denseShape: [5, 2], dense };
  const devices = ['/cpu:0', '/cpu:1'];
  const want = [cpu(0), cpu(1)];

  test(`[${B}] testIndexedSlicesAllReduce ${op}: reduce(pd, devices)`, async (t) => {
    const ops = new ReductionToOneDevice();
    const pd = new PerDevice({ '/cpu:0': t0(), '/cpu:1': t1() });
    assertMirroredSlices(t, await ops.reduce(op, pd, devices), want, expected);
    assertMirroredSlices(t, ops.reduceSync(op, pd, devices), want, expected);
    // Destinations as the PerDevice value itself.
    assertMirroredSlices(t, ops.reduceSync(op, pd, pd), want, expected);
  });

  test(`[${B}] testIndexedSlicesAllReduce ${op}: batchReduce([(pd, devices)])`, async (t) => {
    const ops = new ReductionToOneDevice();
    const pd = new PerDevice({ '/cpu:0': t0(), '/cpu:1': t1() });
    for (const results of [await ops.batchReduce(op, [[pd, devices]]), ops.batchReduceSync(op, [[pd, devices]])]) {
      t.is(results.length, 1);
      assertMirroredSlices(t, results[0], want, expected);
    }
  });
}

// ---- §6.2 cross_tower_utils_test ---------------------------------------------------------

const A = [[1, 2], [0, 0], [3, 4]];
const Bm = [[0, 0], [5, 6], [7, 8]];

test(`[${B}] §6.2.1 testAggregateTensors`, async (t) => {
  const pd = new PerDevice({ '/cpu:0': tensor(A, undefined, { device: '/cpu:0' }), '/cpu:1': tensor(Bm, undefined, { device: '/cpu:1' }) });
  const m = await new ReductionToOneDevice().reduce(ReduceOp.SUM, pd, '/cpu:0');
  assertMirroredDense(t, m, [cpu(0)], { dtype: 'float32', shape: [3, 2], data: [1, 2, 5, 6, 10, 12] });
});

test(`[${B}] §6.2.2 testAggregateIndexedSlices: an IS whose dense value is the sum`, async (t) => {
  const pd = new PerDevice({ '/cpu:0': slices(A, [0, 1, 2], [3, 2], '/cpu:0'), '/cpu:1': slices(Bm, [0, 1, 2], [3, 2], '/cpu:1') });
  const m = await new ReductionToOneDevice().reduce(ReduceOp.SUM, pd, '/cpu:0');
  assertMirroredSlices(t, m, [cpu(0)], {
    values: [1, 2, 0, 0, 3, 4, 0, 0, 5, 6, 7, 8],
    valuesShape: [6, 2],
    indices: [0, 1, 2, 0, 1, 2],
    denseShape: [3, 2],
    dense: [1, 2, 5, 6, 10, 12],
  });
});

test(`[${B}] §6.2.3 testDivideTensor: MEAN of two contributions divides by 2`, async (t) => {
  const pd = new PerDevice({ '/cpu:0': tensor(A), '/cpu:1': tensor([[0, 0], [0, 0], [0, 0]]) });
  const m = await new ReductionToOneDevice().reduce(ReduceOp.MEAN, pd, '/cpu:0');
  assertMirroredDense(t, m, [cpu(0)], { dtype: 'float32', shape: [3, 2], data: [0.5, 1, 0, 0, 1.5, 2] });
});

test(`[${B}] §6.2.4 testDivideIndexedSlices: the result stays IndexedSlices`, async (t) => {
  // The second device contributes slices with no rows: it still counts for MEAN.
  const pd = new PerDevice({ '/cpu:0': slices(A, [0, 1, 2], [3, 2]), '/cpu:1': slices([], [], [3, 2], '/cpu:1') });
  const m = await new ReductionToOneDevice().reduce(ReduceOp.MEAN, pd, '/cpu:0');
  assertMirroredSlices(t, m, [cpu(0)], {
    values: [0.5, 1, 0, 0, 1.5, 2],
    valuesShape: [3, 2],
    indices: [0, 1, 2],
    denseShape: [3, 2],
    dense: [0.5, 1, 0, 0, 1.5, 2],
  });
});

test(`[${B}] §6.2.5-9 contains_indexed_slices: IS anywhere (PerDevice, MapOutput) takes the IS path`, (t) => {
  const ops = new ReductionToOneDevice();
  // §6.2.8: PerDevice({"/gpu:0": IS, "/cpu:0": IS}), gpu first.
  const pd = new PerDevice({ '/gpu:0': slices([[1, 1]], [0], [2, 2], '/gpu:0'), '/cpu:0': slices([[2, 2]], [1], [2, 2]) });
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.SUM, pd, pd), [GPU0, cpu(0)], {
    values: [1, 1, 2, 2],
    valuesShape: [2, 2],
    indices: [0, 1],
    denseShape: [2, 2],
    dense: [1, 1, 2, 2],
  });
  // §6.2.9: PerDevice of MapOutput([IS]) per device.
  const pdm = new PerDevice({
    '/gpu:0': new MapOutput([slices([[1, 1]], [0], [2, 2], '/gpu:0')]),
    '/cpu:0': new MapOutput([slices([[2, 2]], [1], [2, 2])]),
  });
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.SUM, pdm, '/cpu:0'), [cpu(0)], {
    values: [1, 1, 2, 2],
    valuesShape: [2, 2],
    indices: [0, 1],
    denseShape: [2, 2],
    dense: [1, 1, 2, 2],
  });
  // A dense tensor next to slices is converted to slices of all its rows (indices 0..rows-1).
  const mixed = new PerDevice({ '/cpu:0': tensor([[1, 2], [3, 4]]), '/cpu:1': slices([[10, 20]], [1], [2, 2], '/cpu:1') });
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.SUM, mixed, '/cpu:1'), [cpu(1)], {
    values: [1, 2, 3, 4, 10, 20],
    valuesShape: [3, 2],
    indices: [0, 1, 1],
    denseShape: [2, 2],
    dense: [1, 2, 13, 24],
  });
});

test(`[${B}] §1.16 mixed int32 and int64 indices become int64; all int64 stay int64`, (t) => {
  const ops = new ReductionToOneDevice();
  const pd = new PerDevice({
    '/cpu:0': slices([[1, 2]], [2], [3, 2], '/cpu:0', 'int32'),
    '/cpu:1': slices([[3, 4]], [0], [3, 2], '/cpu:1', 'int64'),
  });
  const expected = { values: [1, 2, 3, 4], valuesShape: [2, 2], indices: [2, 0], indicesDtype: 'int64' as const, denseShape: [3, 2], dense: [3, 4, 0, 0, 1, 2] };
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.SUM, pd, '/cpu:0'), [cpu(0)], expected);
  const pd64 = new PerDevice({
    '/cpu:0': slices([[1, 2]], [2], [3, 2], '/cpu:0', 'int64'),
    '/cpu:1': slices([[3, 4]], [0], [3, 2], '/cpu:1', 'int64'),
  });
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.SUM, pd64, '/cpu:0'), [cpu(0)], expected);
});

test(`[${B}] §6.2.10-11 copy: broadcast of a tensor and of slices to /gpu:0`, async (t) => {
  const ops = new ReductionToOneDevice();
  const m = await ops.broadcast(tensor([[1, 2], [3, 4]]), '/gpu:0');
  t.is(m.devices[0], resolveDevice('/gpu:0'));
  assertMirroredDense(t, m, [GPU0], { dtype: 'float32', shape: [2, 2], data: [1, 2, 3, 4] });
  const s = ops.broadcastSync(t1(), ['/gpu:0', '/cpu:0']);
  assertMirroredSlices(t, s, [GPU0, cpu(0)], { values: [3, 4, 5, 6], valuesShape: [2, 2], indices: [1, 3], denseShape: [5, 2], dense: [0, 0, 3, 4, 0, 0, 5, 6, 0, 0] });
});

test(`[${B}] a single device's slices are returned as they are (no concatenation)`, async (t) => {
  const m = await new ReductionToOneDevice().reduce(ReduceOp.MEAN, t1(), ['/cpu:1', '/cpu:2']);
  assertMirroredSlices(t, m, [cpu(1), cpu(2)], { values: [3, 4, 5, 6], valuesShape: [2, 2], indices: [1, 3], denseShape: [5, 2], dense: [0, 0, 3, 4, 0, 0, 5, 6, 0, 0] });
});

test(`[${B}] densify sums duplicate indices; out-of-range indices are an error`, (t) => {
  const s = slices([[1, 2], [3, 4], [5, 6]], [2, 0, 2], [3, 2]);
  t.deepEqual(elems(s.densify()), [3, 4, 0, 0, 6, 8]);
  t.is(s.densify().device, '/cpu:0');
  const bad = slices([[1, 2]], [3], [3, 2]);
  t.throws(() => bad.densify(), { instanceOf: CrossDeviceError, code: 'ERR_INVALID_TENSOR', message: 'IndexedSlices index 3 is outside [0, 3)' });
  const negative = slices([[1, 2]], [-1], [3, 2], '/cpu:0', 'int64');
  t.throws(() => negative.densify(), { instanceOf: CrossDeviceError, code: 'ERR_INVALID_TENSOR', message: 'IndexedSlices index -1 is outside [0, 3)' });
});

// ---- MapOutput (§3, §5.3) ----------------------------------------------------------------

test(`[${B}] MapOutput: each element counts once for MEAN; empty lists are skipped`, async (t) => {
  const ops = new ReductionToOneDevice();
  const v = (x: number, device = '/cpu:0') => tensor([x, 10 * x], undefined, { device });
  const spec = (data: number[]) => ({ dtype: 'float32', shape: [2], data });
  // (1 + 2 + 6) / 3
  const pd = new PerDevice({ '/cpu:0': new MapOutput([v(1), v(2)]), '/cpu:1': v(6, '/cpu:1') });
  assertMirroredDense(t, await ops.reduce(ReduceOp.MEAN, pd, '/cpu:0'), [cpu(0)], spec([3, 30]));
  assertMirroredDense(t, ops.reduceSync(ReduceOp.SUM, pd, '/cpu:0'), [cpu(0)], spec([9, 90]));
  // An empty MapOutput contributes nothing and does not count.
  const withEmpty = new PerDevice({ '/cpu:0': new MapOutput([]), '/cpu:1': v(4, '/cpu:1'), '/cpu:2': new MapOutput([v(2, '/cpu:2')]) });
  assertMirroredDense(t, ops.reduceSync(ReduceOp.MEAN, withEmpty, '/cpu:0'), [cpu(0)], spec([3, 30]));
  // Three elements on one device, nothing elsewhere.
  const one = new PerDevice({ '/cpu:0': new MapOutput([v(1), v(2), v(6)]), '/cpu:1': new MapOutput([]) });
  assertMirroredDense(t, ops.reduceSync(ReduceOp.MEAN, one, ['/cpu:0', '/cpu:1']), [cpu(0), cpu(1)], spec([3, 30]));
  // MAX/MIN/PRODUCT see every element too.
  assertMirroredDense(t, ops.reduceSync(ReduceOp.MAX, pd, '/cpu:0'), [cpu(0)], spec([6, 60]));
  assertMirroredDense(t, ops.reduceSync(ReduceOp.MIN, pd, '/cpu:0'), [cpu(0)], spec([1, 10]));
  assertMirroredDense(t, ops.reduceSync(ReduceOp.PRODUCT, pd, '/cpu:0'), [cpu(0)], spec([12, 12000]));
});

test(`[${B}] MapOutput of IndexedSlices: MEAN divides the concatenated rows by the element count`, (t) => {
  const ops = new ReductionToOneDevice();
  const pd = new PerDevice({
    '/cpu:0': new MapOutput([slices([[3, 6]], [0], [2, 2]), slices([[9, 12]], [1], [2, 2])]),
    '/cpu:1': slices([[3, 3]], [1], [2, 2], '/cpu:1'),
  });
  assertMirroredSlices(t, ops.reduceSync(ReduceOp.MEAN, pd, '/cpu:1'), [cpu(1)], {
    values: [1, 2, 3, 4, 1, 1],
    valuesShape: [3, 2],
    indices: [0, 1, 1],
    denseShape: [2, 2],
    dense: [1, 2, 4, 5],
  });
});

test(`[${B}] MapOutput: all lists empty is ERR_EMPTY_VALUE`, async (t) => {
  const ops = new ReductionToOneDevice();
  const pd = new PerDevice({ '/cpu:0': new MapOutput([]), '/cpu:1': new MapOutput([]) });
  const expectation = { instanceOf: CrossDeviceError, code: 'ERR_EMPTY_VALUE', message: '`per_device_value` must be non-empty' };
  t.throws(() => ops.reduceSync(ReduceOp.MEAN, pd, '/cpu:0'), expectation);
  await t.throwsAsync(ops.reduce(ReduceOp.SUM, pd, '/cpu:0'), expectation);
  t.throws(() => ops.reduceSync(ReduceOp.SUM, new PerDevice({}), '/cpu:0'), expectation);
});
