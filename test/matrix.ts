/**
 * SPEC §6.1 `_testReductionAndBroadcast`, shared by the tests of every CrossDeviceOps: per-device
 * values float(d) and d+1 on the given devices, every kind of destination, reduce (MEAN, SUM,
 * Promise and Sync forms), batchReduce over every ordered pair of destinations, broadcast.
 */
import test from 'ava';
import { CrossDeviceOps, Mirrored, PerDevice, ReduceOp, tensor, type Destinations } from '../ts/index.js';
import { assertMirroredDense, B, canonAll, cpu } from './helpers.js';

export const CPU_DEVICE = '/device:CPU:0';

/** Scalars float(d) (TF's test) or the vector d·[1, 2, 3]: both exact in float32. */
export const SHAPES: { name: string; shape: number[]; of: (x: number) => number[] }[] = [
  { name: 'scalar', shape: [], of: (x) => [x] },
  { name: 'vector[3]', shape: [3], of: (x) => [x, 2 * x, 3 * x] },
];

export type Shape = (typeof SHAPES)[number];

export interface Dest {
  name: string;
  make: (devices: string[], pd: PerDevice) => Destinations;
  /** Canonical devices the result must be on. */
  expect: (devices: string[]) => string[];
}

/** §6.1's destinations (Mirrored on the devices, Mirrored on CPU:0, the string, the list), and the value itself. */
export const DESTINATIONS: Dest[] = [
  { name: 'the PerDevice value', make: (_ds, pd) => pd, expect: (ds) => canonAll(ds) },
  { name: 'Mirrored on the devices', make: (ds) => new Mirrored(ds.map((d) => [d, tensor(1, undefined, { device: d })] as const)), expect: (ds) => canonAll(ds) },
  { name: "Mirrored on '/device:CPU:0'", make: () => new Mirrored({ [CPU_DEVICE]: tensor(1) }), expect: () => [cpu(0)] },
  { name: "the string '/device:CPU:0'", make: () => CPU_DEVICE, expect: () => [cpu(0)] },
  { name: 'the array of devices', make: (ds) => [...ds], expect: (ds) => canonAll(ds) },
];

export function perDevice(devices: readonly string[], shape: Shape, value: (d: number) => number): PerDevice {
  return new PerDevice(devices.map((dev, d) => [dev, tensor(shape.of(value(d)), shape.shape, { device: dev })] as const));
}

/** The expected MEAN/SUM of per_device (values d) and per_device_2 (values d+1) over n devices. */
export function expectations(n: number): Record<'MEAN' | 'SUM', [number, number]> {
  const mean = (n - 1) / 2;
  return { MEAN: [mean, mean + 1], SUM: [mean * n, (mean + 1) * n] };
}


/**
 * `_testReductionAndBroadcast`: for each destination reduce MEAN/SUM of both values (Promise
 * and Sync forms), batchReduce over every ordered pair of destinations, broadcast(1.0, d).
 */
export function reductionAndBroadcastTests(title: string, makeOps: () => CrossDeviceOps, devices: string[], shapes: Shape[], dests: Dest[] = DESTINATIONS): void {
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
