// GPU tensors end to end, through the built package (dist/ and the native addon): a plain Node
// script, so that it runs on a GPU machine with nothing but a node binary (scripts/gpu-check.sh
// runs it there with CROSSDEV_VIRTUAL_GPUS=8; test/gpu_tensors.test.ts runs it here).
//
//   node --expose-gc test/gpu/tensors.mjs
//
// Every op class with each algorithm and packing, over 8 (virtual) GPUs, several dtypes and every
// ReduceOp: the op on GPU tensors must give the op on host tensors bit for bit, with GPU tensors
// exactly for the results on GPUs (toHost and toHostSync), and free every handle it made. Then
// toHost, dispose and ERR_DISPOSED, the FinalizationRegistry freeing dropped tensors, and errors.
// Without a GPU it prints "skipped: no GPU (<reason>)" and exits 0. Its last line is a JSON
// summary: {"gpuTensors": {"passed": n, "failed": n, "skipped"?: reason}}. Exit status 1 when a
// check failed.
import {
  AllReduceCrossDeviceOps,
  chooseTheBest,
  CollectiveAllReduce,
  CrossDeviceError,
  GpuTensor,
  HierarchicalCopyAllReduce,
  IndexedSlices,
  MultiWorkerAllReduce,
  NcclAllReduce,
  PerDevice,
  ReductionToOneDevice,
  residentMemory,
  Tensor,
  backend,
  tensor,
} from '../../dist/index.js';

let passed = 0;
let failed = 0;
const summary = (extra = {}) => console.log(JSON.stringify({ gpuTensors: { passed, failed, ...extra } }));

function check(ok, what) {
  if (ok) passed++;
  else {
    failed++;
    console.log(`FAIL ${what}`);
  }
}

async function expectError(code, what, f) {
  try {
    await f();
    check(false, `${what}: no error, expected ${code}`);
  } catch (e) {
    check(e instanceof CrossDeviceError && e.code === code, `${what}: got ${e?.code ?? e}, expected ${code}`);
  }
}

console.log(`backend ${backend()}, CROSSDEV_VIRTUAL_GPUS=${process.env.CROSSDEV_VIRTUAL_GPUS ?? '(unset)'}`);
try {
  tensor([1], [1], { device: '/gpu:0', resident: true }).dispose();
} catch (e) {
  if (e instanceof CrossDeviceError && e.code === 'ERR_NO_CUDA') {
    console.log(`skipped: no GPU (${e.message})`);
    summary({ skipped: `no GPU: ${e.message}` });
    process.exit(0);
  }
  throw e;
}
if (typeof globalThis.gc !== 'function') {
  console.log('FAIL run with node --expose-gc (the finalizer check forces garbage collection)');
  failed++;
}

const gpus = Array.from({ length: 8 }, (_, i) => `/job:localhost/replica:0/task:0/device:GPU:${i}`);
const workerGpus = [0, 1].flatMap((w) => [0, 1, 2, 3].map((g) => `/job:worker/replica:0/task:${w}/device:GPU:${g}`));
const workers = ['/job:worker/replica:0/task:0', '/job:worker/replica:0/task:1'];
const isGpu = (d) => d.includes('device:GPU:');

/** Every op class with its algorithms and packings, and the devices its values live on. */
function opClasses() {
  const ops = [
    ['ReductionToOneDevice()', new ReductionToOneDevice(), gpus],
    ["ReductionToOneDevice('/gpu:3')", new ReductionToOneDevice({ reduceToDevice: '/gpu:3' }), gpus],
    ['NcclAllReduce(0)', new NcclAllReduce({ numPacks: 0 }), gpus],
    ['NcclAllReduce(2)', new NcclAllReduce({ numPacks: 2 }), gpus],
    ['HierarchicalCopyAllReduce(0)', new HierarchicalCopyAllReduce({ numPacks: 0 }), gpus],
    ['HierarchicalCopyAllReduce(3)', new HierarchicalCopyAllReduce({ numPacks: 3 }), gpus],
    ['chooseTheBest', chooseTheBest(gpus), gpus],
  ];
  for (const alg of ['nccl', 'hierarchical_copy']) {
    for (const o of [{ numPacks: 0 }, { numPacks: 1 }, { numPacks: 4 }, { numPacks: 0, aggSmallGradsMaxBytes: 64, aggSmallGradsMaxGroup: 3 }]) {
      ops.push([`AllReduceCrossDeviceOps(${alg}, ${JSON.stringify(o)})`, new AllReduceCrossDeviceOps(alg, o), gpus]);
    }
  }
  for (const spec of ['nccl', 'xring', 'nccl/xring', 'nccl/rechd', 'nccl/pscpu', 'pscpu/pscpu', ['pscpu', 2, -1], ['psgpu', 2, -1], [['pscpu', 2, 20], ['xring', 2, -1]]]) {
    for (const numPacks of [0, 2]) {
      ops.push([`MultiWorkerAllReduce(${JSON.stringify(spec)}, ${numPacks})`, new MultiWorkerAllReduce(workers, 4, spec, { numPacks }), workerGpus]);
    }
  }
  for (const bytesPerPack of [0, 100]) {
    ops.push([`CollectiveAllReduce(${bytesPerPack})`, new CollectiveAllReduce({ numWorkers: 2, numGpusPerWorker: 4, communicationOptions: { bytesPerPack } }), workerGpus]);
  }
  return ops;
}

const SHAPES = [[3, 5], [7], [2, 2, 3], [1]];

/** A host tensor of `dtype` and `shape` on `device`, its elements made from `seed`. */
function hostTensor(device, dtype, shape, seed) {
  const n = shape.reduce((a, b) => a * b, 1);
  const scale = dtype.startsWith('int') ? 1 : 0.75;
  const xs = Array.from({ length: n }, (_, i) => (((i * 7 + seed * 13) % 11) - 5) * scale);
  return tensor(dtype === 'int64' ? xs.map(BigInt) : xs, shape, { dtype, device });
}

/** `t` (a host tensor) uploaded to its GPU. */
const upload = (t) => tensor(t.data, t.shape, { dtype: t.dtype, device: t.device, resident: true });

const bytes = (t) => new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
const same = (a, b) => a.dtype === b.dtype && JSON.stringify(a.shape) === JSON.stringify(b.shape) && Buffer.compare(bytes(a), bytes(b)) === 0;

let reads = 0;
/** A host copy of a result tensor that must be a GPU tensor (`onGpu`) or a host one; frees it. */
async function read(x, onGpu, what) {
  if (!onGpu) {
    check(x instanceof Tensor, `${what}: a host tensor`);
    return x;
  }
  check(x instanceof GpuTensor, `${what}: a GPU tensor`);
  if (!(x instanceof GpuTensor)) return x;
  // Both forms of reading, in turn.
  const host = reads++ % 2 ? await x.toHost() : x.toHostSync();
  x.dispose();
  return host;
}

/** Checks the results of the op on GPU tensors against those on host tensors. */
async function compare(what, hostResults, gpuResults) {
  check(hostResults.length === gpuResults.length, `${what}: result count`);
  for (let i = 0; i < hostResults.length; i++) {
    const h = hostResults[i];
    const g = gpuResults[i];
    check(JSON.stringify(h.devices) === JSON.stringify(g.devices), `${what}: devices of result ${i}`);
    for (const d of h.devices) {
      const hv = h.get(d);
      const gv = g.get(d);
      if (hv instanceof IndexedSlices) {
        check(gv instanceof IndexedSlices, `${what}: slices on ${d}`);
        check(same(hv.values, await read(gv.values, isGpu(d), `${what} values on ${d}`)), `${what}: slice values on ${d} bit for bit`);
        check(same(hv.indices, await read(gv.indices, isGpu(d), `${what} indices on ${d}`)), `${what}: slice indices on ${d} bit for bit`);
      } else {
        check(same(hv, await read(gv, isGpu(d), `${what} on ${d}`)), `${what}: ${d} bit for bit`);
      }
    }
  }
}

/** Runs `run(values)` on host values and on the same values as GPU tensors, and compares. */
async function both(what, hostValues, run) {
  const before = residentMemory().buffers;
  const gpuValues = hostValues.map((t) => (isGpu(t.device) ? upload(t) : t));
  let host;
  let gpu;
  try {
    host = { ok: await run(hostValues, false) };
  } catch (e) {
    host = { error: e.code ?? String(e) };
  }
  try {
    gpu = { ok: await run(gpuValues, true) };
  } catch (e) {
    gpu = { error: e.code ?? String(e) };
  }
  if (host.ok && gpu.ok) await compare(what, host.ok, gpu.ok);
  else check(host.error !== undefined && host.error === gpu.error, `${what}: host ${host.error ?? 'ok'}, GPU tensors ${gpu.error ?? 'ok'}`);
  for (const t of gpuValues) if (t instanceof GpuTensor) t.dispose();
  check(residentMemory().buffers === before, `${what}: every GPU tensor freed`);
}

const DTYPE_OPS = [
  ['float32', ['SUM', 'MEAN', 'MAX', 'MIN', 'PRODUCT']],
  ['float16', ['SUM', 'MEAN']],
  ['bfloat16', ['MAX']],
  ['float64', ['MEAN']],
  ['int32', ['SUM', 'MIN']],
  ['int64', ['PRODUCT']],
];

const started = Date.now();
let call = 0;
for (const [name, ops, devices] of opClasses()) {
  for (const [dtype, reduceOps] of DTYPE_OPS) {
    for (const op of reduceOps) {
      const values = SHAPES.flatMap((shape, v) => devices.map((d, k) => hostTensor(d, dtype, shape, v * 31 + k)));
      // batchReduce onto the values' own devices (the all-reduce path), async and sync in turn.
      await both(`${name} batchReduce ${op} ${dtype}`, values, async (vs) => {
        const pairs = SHAPES.map((_, v) => {
          const pd = new PerDevice(devices.map((d, k) => [d, vs[v * devices.length + k]]));
          return [pd, pd];
        });
        return call++ % 2 ? await ops.batchReduce(op, pairs) : ops.batchReduceSync(op, pairs);
      });
    }
  }
  const dense = devices.map((d, k) => hostTensor(d, 'float32', [4, 3], k));
  await both(`${name} reduce MEAN to a GPU and a CPU`, dense, async (vs) => [await ops.reduce('MEAN', new PerDevice(devices.map((d, k) => [d, vs[k]])), [devices[1], '/cpu:0'])]);
  await both(`${name} reduceSync SUM of one GPU tensor`, [dense[2]], async ([v]) => [ops.reduceSync('SUM', v, [devices[2], devices[6]])]);
  await both(`${name} broadcast`, [dense[2]], async ([v]) => [await ops.broadcast(v, [devices[0], devices[5], '/cpu:1'])]);
  await both(`${name} broadcastSync`, [dense[3]], async ([v]) => [ops.broadcastSync(v, devices[4])]);
  for (const op of ['SUM', 'MEAN', 'MAX']) {
    const rows = devices.slice(0, 3).map((d, k) => hostTensor(d, 'float32', [2, 3], k));
    await both(`${name} IndexedSlices ${op}`, rows, async (vs) => {
      const pd = new PerDevice(vs.map((v, k) => [devices[k], new IndexedSlices(v, tensor(new Int32Array([k, 4]), [2], { device: devices[k] }), [6, 3])]));
      return [await ops.reduce(op, pd, [devices[0], '/cpu:0'])];
    });
  }
}
console.log(`op matrix: ${passed} checks passed, ${failed} failed in ${((Date.now() - started) / 1000).toFixed(1)} s`);

// toHost, dispose, ERR_DISPOSED.
{
  const base = residentMemory();
  const data = Float32Array.from({ length: 1000 }, (_, i) => i * 0.5 - 7);
  const g = tensor(data, [10, 100], { device: '/gpu:5', resident: true });
  check(g instanceof GpuTensor && g.device === '/gpu:5' && g.size === 1000 && !g.disposed, 'a GPU tensor describes itself');
  check(residentMemory().buffers === base.buffers + 1 && residentMemory().bytes === base.bytes + 4000, 'the store counts it');
  const back = await g.toHost();
  check(back instanceof Tensor && back.device === '/gpu:5' && Buffer.compare(bytes(back), Buffer.from(data.buffer)) === 0, 'toHost gives the elements bit for bit');
  check(Buffer.compare(bytes(g.toHostSync()), Buffer.from(data.buffer)) === 0, 'toHostSync gives the elements bit for bit');
  g.dispose();
  g.dispose();
  check(g.disposed && residentMemory().buffers === base.buffers, 'dispose frees it, twice is fine');
  await expectError('ERR_DISPOSED', 'toHost after dispose', () => g.toHost());
  await expectError('ERR_DISPOSED', 'toHostSync after dispose', () => g.toHostSync());
  await expectError('ERR_DISPOSED', 'reduce after dispose', () => new NcclAllReduce().reduce('SUM', g, g.device));
  await expectError('ERR_DISPOSED', 'broadcastSync after dispose', () => new ReductionToOneDevice().broadcastSync(g, '/gpu:1'));
  await expectError('ERR_INVALID_DEVICE', 'resident on a CPU', () => tensor([1, 2], [2], { device: '/cpu:0', resident: true }));
  await expectError('ERR_NO_CUDA', 'a GPU beyond the logical ones', () => tensor([1, 2], [2], { device: '/gpu:8', resident: true }));
  await expectError('ERR_INVALID_TENSOR', 'a shape that does not fit', () => tensor([1, 2], [3], { device: '/gpu:0', resident: true }));
  const h = tensor(new Uint16Array([0x3c00, 0xc000]), [2], { dtype: 'float16', device: '/gpu:7', resident: true });
  check(JSON.stringify(h.toHostSync().toArray()) === '[1,-2]', 'float16 round trip');
  h.dispose();
  check(residentMemory().buffers === base.buffers, 'failed uploads leave nothing behind');
}

// The FinalizationRegistry frees GPU tensors that were dropped without dispose().
if (typeof globalThis.gc === 'function') {
  const base = residentMemory().buffers;
  (() => {
    for (let i = 0; i < 64; i++) tensor(new Float32Array(1 << 18), [1 << 18], { device: `/gpu:${i % 8}`, resident: true });
  })();
  check(residentMemory().buffers >= base, 'dropped tensors are held until collected');
  for (let i = 0; i < 20 && residentMemory().buffers > base; i++) {
    globalThis.gc();
    await new Promise((r) => setTimeout(r, 10));
  }
  check(residentMemory().buffers === base, `the finalizer frees dropped GPU tensors (${residentMemory().buffers - base} left)`);
}

console.log(`${passed} passed, ${failed} failed`);
summary();
process.exit(failed ? 1 : 0);
