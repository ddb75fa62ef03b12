/**
 * SPEC §6.1 `_testReductionAndBroadcast`, translated: ReductionToOneDevice (three configurations)
 * × device lists of 1, 2 and 4 virtual CPUs × every kind of destination, with reduce (MEAN, SUM,
 * Promise and Sync forms), batchReduce over every ordered pair of destinations, and broadcast.
 */
import test from 'ava';
import { CrossDeviceOps, ReduceOp, ReductionToOneDevice, ReductionToOneDeviceCrossTowerOps, tensor } from '../ts/index.js';
import { assertMirroredDense, B, canonAll, cpu } from './helpers.js';
import { CPU_DEVICE, perDevice, reductionAndBroadcastTests, SHAPES } from './matrix.js';

const OPS: [string, () => CrossDeviceOps][] = [
  ['ReductionToOneDevice()', () => new ReductionToOneDevice()],
  ["ReductionToOneDevice({reduceToDevice: '/device:CPU:0'})", () => new ReductionToOneDevice({ reduceToDevice: CPU_DEVICE })],
  ["ReductionToOneDevice({accumulation: 'accumulate_n'})", () => new ReductionToOneDevice({ accumulation: 'accumulate_n' })],
];

const DEVICE_LISTS: string[][] = [['/cpu:0'], ['/cpu:0', '/cpu:1'], ['/cpu:0', '/cpu:1', '/cpu:2', '/cpu:3']];

for (const [name, makeOps] of OPS) {
  for (const devices of DEVICE_LISTS) reductionAndBroadcastTests(name, makeOps, devices, SHAPES);
}

test(`[${B}] batchReduce of no pairs gives no results`, async (t) => {
  const ops = new ReductionToOneDevice();
  t.deepEqual(await ops.batchReduce(ReduceOp.SUM, []), []);
  t.deepEqual(ops.batchReduceSync(ReduceOp.MEAN, []), []);
});

test(`[${B}] the TF 1.x name is the same class`, (t) => {
  t.is(ReductionToOneDeviceCrossTowerOps, ReductionToOneDevice);
  const m = new ReductionToOneDeviceCrossTowerOps().reduceSync(ReduceOp.SUM, perDevice(['/cpu:0', '/cpu:1'], SHAPES[0], (d) => d + 2), '/cpu:1');
  assertMirroredDense(t, m, [cpu(1)], { dtype: 'float32', shape: [], data: [5] });
});

test(`[${B}] a single tensor is reduced as a PerDevice on its own device`, async (t) => {
  const ops = new ReductionToOneDevice();
  const x = tensor([1, 2], undefined, { device: '/cpu:3' });
  assertMirroredDense(t, await ops.reduce(ReduceOp.MEAN, x, ['/cpu:0', '/cpu:1']), [cpu(0), cpu(1)], { dtype: 'float32', shape: [2], data: [1, 2] });
  // A tensor made without a device is on /cpu:0 (TensorFlow's eager default).
  assertMirroredDense(t, ops.reduceSync(ReduceOp.SUM, tensor(7), { device: '/cpu:2' }), [cpu(2)], { dtype: 'float32', shape: [], data: [7] });
});

test(`[${B}] destinations: duplicates collapse, a variable-like object is one device, spellings meet`, async (t) => {
  const ops = new ReductionToOneDevice();
  const pd = perDevice(['/cpu:0', '/cpu:1'], SHAPES[0], (d) => d + 1);
  const spec = { dtype: 'float32', shape: [], data: [3] };
  assertMirroredDense(t, ops.reduceSync(ReduceOp.SUM, pd, ['/cpu:1', 'CPU:1', '/device:CPU:1', '/cpu:0']), [cpu(1), cpu(0)], spec);
  assertMirroredDense(t, await ops.reduce(ReduceOp.SUM, pd, { device: '/job:localhost/cpu:1' }), [cpu(1)], spec);
  // A tensor (or slices) is a destination too: its device.
  assertMirroredDense(t, ops.reduceSync(ReduceOp.SUM, pd, tensor(0, undefined, { device: '/gpu:0' })), ['/job:localhost/replica:0/task:0/device:GPU:0'], spec);
  // A tuple-like readonly array (Part A.6).
  const tuple = Object.freeze(['/job:worker/task:1', '/cpu:2'] as const);
  assertMirroredDense(t, ops.reduceSync(ReduceOp.SUM, pd, tuple), ['/job:worker/replica:0/task:1/device:CPU:0', cpu(2)], spec);
});

test(`[${B}] results keep the insertion order of the value's devices, not sorted order`, (t) => {
  const ops = new ReductionToOneDevice();
  const devices = ['/cpu:3', '/gpu:1', '/cpu:0', '/job:worker/task:2/cpu:0'];
  const pd = perDevice(devices, SHAPES[1], (d) => d);
  const m = ops.reduceSync(ReduceOp.MEAN, pd, pd);
  assertMirroredDense(t, m, canonAll(devices), { dtype: 'float32', shape: [3], data: [1.5, 3, 4.5] });
  t.deepEqual(canonAll(devices), [cpu(3), '/job:localhost/replica:0/task:0/device:GPU:1', cpu(0), '/job:worker/replica:0/task:2/device:CPU:0']);
});

test(`[${B}] the new reduce ops on the §6.1 values`, async (t) => {
  const ops = new ReductionToOneDevice();
  const devices = ['/cpu:0', '/cpu:1', '/cpu:2', '/cpu:3'];
  const pd2 = perDevice(devices, SHAPES[0], (d) => d + 1); // 1, 2, 3, 4
  const cases: [ReduceOp, number][] = [
    [ReduceOp.MAX, 4],
    [ReduceOp.MIN, 1],
    [ReduceOp.PRODUCT, 24],
  ];
  for (const [op, want] of cases) {
    assertMirroredDense(t, await ops.reduce(op, pd2, devices), canonAll(devices), { dtype: 'float32', shape: [], data: [want] });
  }
});

test(`[${B}] Mirrored.get and PerDevice.get accept any spelling`, (t) => {
  const ops = new ReductionToOneDevice();
  const pd = perDevice(['/cpu:0', '/cpu:1'], SHAPES[0], (d) => d + 1);
  t.is(pd.get('CPU:1'), pd.values[1]);
  t.is(pd.get('/job:localhost/replica:0/task:0/device:CPU:0'), pd.values[0]);
  const m = ops.broadcastSync(tensor([4, 5]), ['/cpu:0', '/cpu:1']);
  t.is(m.get('/device:CPU:1'), m.values[1]);
  t.is(m.get(), m.values[0]);
  t.is(m.size, 2);
});
