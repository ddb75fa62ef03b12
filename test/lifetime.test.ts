/**
 * Where tensors and results live, and for how long. On the WebAssembly backend they are views
 * into WebAssembly memory: they must stay valid across later calls and the memory's growth, be
 * freed once dropped, and stay within CROSSDEV_WASM_HELD_BYTES in loops that never yield; memory
 * running out must be an error that leaves everything as it was. The tests run one at a time:
 * they watch the size of that memory.
 */
import test, { type ExecutionContext } from 'ava';
import { createRequire } from 'node:module';
import { AllReduceCrossDeviceOps, CollectiveAllReduce, CrossDeviceError, type CrossDeviceOps, PerDevice, ReduceOp, ReductionToOneDevice, Tensor, tensor } from '../ts/index.js';
import { B, anyOverlap, elems } from './helpers.js';
import { firstDifference, reduceReference, type Data, type DType, type Op } from './reference.js';

const ops = new ReductionToOneDevice();
const devices = ['/cpu:0', '/cpu:1'];

/** The WebAssembly module backend.ts uses (the same instance: Node caches it), for its memory's size and use. */
const wasmModule = (): { heap(): WebAssembly.Memory; allocated(): number } => createRequire(import.meta.url)('../wasm/crossdev_wasm.js');
const wasmBytes = (): number => wasmModule().heap().buffer.byteLength;

/** A float32 value on `devices` with `n` elements that differ per device and element. */
function value(n: number, seed: number): PerDevice {
  return new PerDevice(devices.map((d, k) => [d, tensor(Float32Array.from({ length: n }, (_, i) => ((i * 7 + seed * 13 + k) % 1000) / 8), [n], { device: d })] as const));
}

const yieldToEventLoop = () => new Promise((resolve) => setImmediate(resolve));

/**
 * A serial test of what only `backend` has (its memory management): registered on that backend,
 * and on the other one as a skip that says why.
 */
function only(backend: 'native' | 'wasm', title: string, body: (t: ExecutionContext) => void | Promise<void>): void {
  if (B === backend) test.serial(title, body);
  else test.serial.skip(`${title} (skipped: it tests the ${backend} backend's memory, and this is the ${B} backend)`, () => {});
}

test.serial(`[${B}] results stay valid and unchanged across later calls, memory growth, and writes to other results`, async (t) => {
  const inputs = value(1000, 1);
  const first = ops.reduceSync(ReduceOp.SUM, inputs, devices);
  const want = reduceReference('float32', 'SUM', inputs.values.map((v) => (v as Tensor).data as Data));
  const kept = first.values.map((v) => (v as Tensor).data);
  const sizeBefore = B === 'wasm' ? wasmBytes() : 0;
  // Later results kept alive (so that they need new memory), and each overwritten.
  const later = [];
  for (let i = 0; i < 12; i++) {
    const m = await ops.reduce(ReduceOp.MEAN, value(1 << 20, i + 2), devices);
    for (const v of m.values) ((v as Tensor).data as Float32Array).fill(-1);
    later.push(m);
    // Finalizers of whatever has been collected run between tasks: memory freed too early would be reused.
    await yieldToEventLoop();
  }
  if (B === 'wasm') t.true(wasmBytes() > sizeBefore + (64 << 20), `WebAssembly memory grew (${sizeBefore} → ${wasmBytes()} bytes)`);
  for (const data of kept) t.is(firstDifference('float32', data as Data, want), -1, 'an early result is unchanged');
  t.false(anyOverlap([...kept, ...later.flatMap((m) => m.values.map((v) => (v as Tensor).data))]), 'no two results share memory');
});

test.serial(`[${B}] writes to a tensor's data reach the next operation; on WebAssembly, tensor() copied the caller's array`, (t) => {
  const mine = new Float32Array([1, 2, 3]);
  const x = tensor(mine, [3], { device: '/cpu:0' });
  const y = tensor(new Float32Array([10, 20, 30]), [3], { device: '/cpu:1' });
  x.data[0] = 5;
  const pd = new PerDevice([['/cpu:0', x], ['/cpu:1', y]]);
  t.deepEqual(elems(ops.reduceSync(ReduceOp.SUM, pd, '/cpu:0').get() as Tensor), [15, 22, 33]);
  if (B === 'native') {
    t.is(x.data, mine);
  } else {
    t.true(x.data.buffer instanceof SharedArrayBuffer);
    mine[1] = 100;
    t.deepEqual(elems(ops.reduceSync(ReduceOp.SUM, pd, '/cpu:0').get() as Tensor), [15, 22, 33]);
  }
});

test.serial(`[${B}] one call's small and large results of every dtype are each right, aligned for their type, and apart`, (t) => {
  // On the native backend, results of at most 4 KiB share one ArrayBuffer and larger ones have their own.
  const sizes = [1, 3, 1023, 1024, 1025, 5000, 0, 7];
  const dtypes: DType[] = ['float32', 'float64', 'float16', 'int32', 'int64', 'bfloat16', 'float32', 'float64'];
  const datas = sizes.map((n, g) => devices.map((_, k) => {
    const xs = Array.from({ length: n }, (_, i) => (i * 3 + g * 5 + k) % 61);
    return dtypes[g] === 'int64' ? BigInt64Array.from(xs.map(BigInt)) : xs;
  }));
  const pairs = sizes.map((n, g) => [new PerDevice(devices.map((d, k) => [d, tensor(datas[g][k] as never, [n], { device: d, dtype: dtypes[g] })] as const)), devices] as const);
  const inputs = pairs.map(([pd]) => pd.values.map((v) => (v as Tensor).data as Data));
  const results = ops.batchReduceSync(ReduceOp.SUM, pairs);
  const all: ArrayBufferView[] = [];
  results.forEach((m, g) => {
    const want = reduceReference(dtypes[g], 'SUM', inputs[g]);
    for (const v of m.values) {
      const data = (v as Tensor).data;
      t.is(firstDifference(dtypes[g], data as Data, want), -1, `${dtypes[g]}[${sizes[g]}] on ${(v as Tensor).device}`);
      t.is(data.byteOffset % data.BYTES_PER_ELEMENT, 0, 'aligned for its element type');
      all.push(data);
    }
  });
  t.false(anyOverlap(all), 'no two results share bytes');
  // Writing one result leaves every other as it was.
  const before = all.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice());
  new Uint8Array(all[0].buffer, all[0].byteOffset, all[0].byteLength).fill(0xff);
  all.slice(1).forEach((a, i) => t.deepEqual(new Uint8Array(a.buffer, a.byteOffset, a.byteLength), before[i + 1]));
});

test.serial(`[${B}] a reduction large enough to be split over threads equals the left-to-right reference bit for bit`, (t) => {
  // Three and a bit parallel chunks of 65536 elements; magnitudes that make the order of the sum matter.
  const n = 3 * 65536 + 123;
  const names = Array.from({ length: 8 }, (_, d) => `/cpu:${d}`);
  const datas = names.map((_, d) => Float32Array.from({ length: n }, (_, i) => Math.fround(Math.sin(i * 0.37 + d) * 10 ** ((i + d) % 9))));
  const pd = new PerDevice(names.map((d, k) => [d, tensor(datas[k], [n], { device: d })] as const));
  for (const op of ['SUM', 'MEAN', 'MAX', 'PRODUCT'] as Op[]) {
    const want = reduceReference('float32' as DType, op, datas);
    const m = ops.reduceSync(ReduceOp[op], pd, names);
    for (const v of m.values) t.is(firstDifference('float32', (v as Tensor).data as Data, want), -1, `${op} on ${(v as Tensor).device}`);
  }
});

only('wasm', `[${B}] 1000 calls of 1 MB whose results are dropped leave WebAssembly memory bounded`, async (t) => {
  const pd = value(1 << 18, 3);
  let at100 = 0;
  for (let i = 1; i <= 1000; i++) {
    await ops.reduce(ReduceOp.SUM, pd, pd);
    // As a training loop does between steps: finalizers run between tasks.
    await yieldToEventLoop();
    if (i === 100) at100 = wasmBytes();
  }
  // Had the results (2 MB a call) been kept, the memory would have grown by 1800 MB since.
  t.true(wasmBytes() <= at100 + (64 << 20), `memory ${at100} bytes after 100 calls, ${wasmBytes()} after 1000`);
});

only('native', `[${B}] a loop of …Sync calls that never yields stays within CROSSDEV_NATIVE_HELD_BYTES: later results are copied`, async (t) => {
  await yieldToEventLoop();
  const limit = 32 << 20;
  process.env.CROSSDEV_NATIVE_HELD_BYTES = String(limit);
  try {
    const pd = value(1 << 18, 5);
    const start = process.memoryUsage().rss;
    let last = ops.reduceSync(ReduceOp.SUM, pd, pd);
    for (let i = 0; i < 300; i++) last = ops.reduceSync(ReduceOp.SUM, pd, pd);
    const grown = process.memoryUsage().rss - start;
    // Unbounded, the 600 MB of dropped results would all still be held (measured: 633 MB).
    t.true(grown <= limit + (128 << 20), `the process grew by ${grown} bytes`);
    const want = reduceReference('float32', 'SUM', pd.values.map((v) => (v as Tensor).data as Data));
    for (const v of last.values) t.is(firstDifference('float32', (v as Tensor).data as Data, want), -1);
  } finally {
    delete process.env.CROSSDEV_NATIVE_HELD_BYTES;
  }
});

only('native', `[${B}] a loop of awaited calls frees the results it drops: V8 counts the memory of the results' ArrayBuffers`, async (t) => {
  // 8 devices × 2 MiB: each call returns 16 MiB of results, 4.8 GB over the loop.
  const names = Array.from({ length: 8 }, (_, d) => `/cpu:${d}`);
  const datas = names.map((_, d) => Float32Array.from({ length: 1 << 19 }, (_, i) => ((i + d) % 16) / 4));
  const pd = new PerDevice(names.map((d, k) => [d, tensor(datas[k], [1 << 19], { device: d })] as const));
  const all = new AllReduceCrossDeviceOps('nccl', { numPacks: 0 });
  let last = await all.reduce(ReduceOp.SUM, pd, pd);
  const start = process.memoryUsage().rss;
  for (let i = 0; i < 300; i++) last = await all.reduce(ReduceOp.SUM, pd, pd);
  const grown = process.memoryUsage().rss - start;
  t.true(grown <= 1 << 30, `the process grew by ${grown} bytes`);
  const want = reduceReference('float32', 'SUM', datas);
  for (const v of last.values) t.is(firstDifference('float32', (v as Tensor).data as Data, want), -1);
});

only('wasm', `[${B}] a loop of …Sync calls that never yields stays within CROSSDEV_WASM_HELD_BYTES: later results are copied out`, (t) => {
  const limit = 32 << 20;
  process.env.CROSSDEV_WASM_HELD_BYTES = String(limit);
  try {
    const pd = value(1 << 18, 4);
    const start = wasmBytes();
    let last = ops.reduceSync(ReduceOp.SUM, pd, pd);
    for (let i = 0; i < 300; i++) last = ops.reduceSync(ReduceOp.SUM, pd, pd);
    // Unbounded, 600 MB of results would have stayed in WebAssembly memory.
    t.true(wasmBytes() <= start + limit + (16 << 20), `memory ${start} → ${wasmBytes()} bytes`);
    const want = reduceReference('float32', 'SUM', pd.values.map((v) => (v as Tensor).data as Data));
    for (const v of last.values) {
      const data = (v as Tensor).data;
      t.false(data.buffer instanceof SharedArrayBuffer, 'the last results were copied out');
      t.is(firstDifference('float32', data as Data, want), -1);
    }
  } finally {
    delete process.env.CROSSDEV_WASM_HELD_BYTES;
  }
});

only('wasm', `[${B}] memory running out (CROSSDEV_WASM_MEMORY_BYTES) is ERR_OUT_OF_MEMORY wherever a call stands: nothing changed, nothing lost, the next call right`, (t) => {
  // 8 devices of 256 KiB, in WebAssembly memory, reduced on the worker threads too; the limit
  // rises 256 KiB at a time, so that calls run out at each of their allocations in turn.
  const n = 1 << 16;
  const names = Array.from({ length: 8 }, (_, d) => `/cpu:${d}`);
  const datas = names.map((_, d) => Float32Array.from({ length: n }, (_, i) => ((i * 5 + d * 3) % 64) / 4));
  const pd = new PerDevice(names.map((d, k) => [d, tensor(datas[k], [n], { device: d })] as const));
  const inputs = pd.values.map((v) => (v as Tensor).data);
  t.true(inputs.every((a) => a.buffer instanceof SharedArrayBuffer), 'the inputs are in WebAssembly memory');
  const want = reduceReference('float32', 'SUM', datas);
  const all: [string, CrossDeviceOps][] = [
    ['ReductionToOneDevice', new ReductionToOneDevice()],
    ["AllReduceCrossDeviceOps('nccl', { numPacks: 2 })", new AllReduceCrossDeviceOps('nccl', { numPacks: 2 })],
    ['CollectiveAllReduce({ bytesPerPack: 256 KiB })', new CollectiveAllReduce({ communicationOptions: { bytesPerPack: 1 << 18 } })],
  ];
  const batch = [[pd, pd], [pd, pd]] as const;
  const w = wasmModule();
  const outcomes = { failed: 0, done: 0 };
  try {
    for (const [name, op] of all) {
      // A call with room, and one without: what the core makes once and keeps (caches, the
      // panic machinery's state) is made then.
      delete process.env.CROSSDEV_WASM_MEMORY_BYTES;
      op.batchReduceSync(ReduceOp.SUM, batch);
      process.env.CROSSDEV_WASM_MEMORY_BYTES = String(w.allocated());
      t.throws(() => op.batchReduceSync(ReduceOp.SUM, batch), { code: 'ERR_OUT_OF_MEMORY' });
      for (let extra = 0; extra <= 40 << 20; extra += 1 << 18) {
        const before = w.allocated();
        process.env.CROSSDEV_WASM_MEMORY_BYTES = String(before + extra);
        let results;
        try {
          results = op.batchReduceSync(ReduceOp.SUM, batch);
        } catch (e) {
          outcomes.failed++;
          t.true(e instanceof CrossDeviceError && e.code === 'ERR_OUT_OF_MEMORY', `${name} with ${extra} bytes free: ${e}`);
          t.regex((e as Error).message, /exhausted.*Drop tensors and results you no longer need/s);
          t.is(w.allocated(), before, `${name} with ${extra} bytes free: what the failed call took is freed`);
          continue;
        }
        outcomes.done++;
        for (const v of results.flatMap((m) => m.values)) t.is(firstDifference('float32', (v as Tensor).data as Data, want), -1, `${name} with ${extra} bytes free`);
        break;
      }
    }
  } finally {
    delete process.env.CROSSDEV_WASM_MEMORY_BYTES;
  }
  t.is(outcomes.done, all.length, 'each op ran once the limit left it room');
  t.true(outcomes.failed > 3 * all.length, `calls ran out of memory (${outcomes.failed})`);
  for (let d = 0; d < names.length; d++) t.is(firstDifference('float32', inputs[d] as Data, datas[d]), -1, `the input on ${names[d]} is unchanged`);
});
