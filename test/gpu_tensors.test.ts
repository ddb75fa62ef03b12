/**
 * GPU tensors: what holds on every machine (host tensors labelled with a GPU keep running in host
 * memory, `resident` needs a GPU and says so, handles and dispose), and, where there is a GPU,
 * test/gpu/tensors.mjs (every op on GPU tensors against host tensors bit for bit, toHost,
 * dispose, the finalizer), which scripts/gpu-check.sh also runs on the GPU machine.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { B } from './helpers.js';
import { CrossDeviceError, GpuTensor, NcclAllReduce, PerDevice, ReduceOp, residentMemory, Tensor, tensor } from '../ts/index.js';

/** Why GPU tensors cannot be made here (undefined where they can). */
const noGpu: string | undefined = (() => {
  try {
    tensor([1], [1], { device: '/gpu:0', resident: true }).dispose();
    return undefined;
  } catch (e) {
    if (e instanceof CrossDeviceError && e.code === 'ERR_NO_CUDA') return e.message;
    throw e;
  }
})();

test(`[${B}] a tensor labelled with a GPU, without resident, is a host tensor and reduces in host memory`, async (t) => {
  const data = new Float32Array([1, 2, 3]);
  const a = tensor(data, [3], { device: '/gpu:0' });
  const b = tensor([4, 5, 6], [3], { device: '/gpu:1' });
  t.true(a instanceof Tensor);
  t.is(a.device, '/gpu:0');
  if (B === 'native') t.is(a.data, data, 'the caller’s array, not a copy');
  const m = await new NcclAllReduce().reduce(ReduceOp.SUM, new PerDevice({ '/gpu:0': a, '/gpu:1': b }), ['/gpu:0', '/gpu:1']);
  for (const v of m.values) {
    t.true(v instanceof Tensor, 'host inputs give host results, whatever their devices');
    t.deepEqual((v as Tensor).toArray(), [5, 7, 9]);
  }
  t.is(await a.toHost(), a, 'a host tensor is its own host copy');
  t.is(a.toHostSync(), a);
});

test(`[${B}] resident: true needs a GPU device, and a GPU (ERR_NO_CUDA without one)`, (t) => {
  const onCpu = t.throws(() => tensor([1, 2], [2], { device: '/cpu:0', resident: true }), { instanceOf: CrossDeviceError });
  t.is(onCpu?.code, 'ERR_INVALID_DEVICE');
  if (noGpu === undefined) {
    const g = tensor([1, 2], [2], { device: '/gpu:0', resident: true });
    t.true(g instanceof GpuTensor);
    g.dispose();
    return;
  }
  const e = t.throws(() => tensor(new Float32Array([1, 2]), [2], { device: '/gpu:0', resident: true }), { instanceOf: CrossDeviceError });
  t.is(e?.code, 'ERR_NO_CUDA');
  t.regex(e?.message ?? '', B === 'wasm' ? /no GPU support/ : /CUDA driver|GPU/);
  t.deepEqual(residentMemory(), { buffers: 0, bytes: 0 });
});

test(`[${B}] dispose is idempotent and a disposed GPU tensor is ERR_DISPOSED wherever it is used`, async (t) => {
  // A handle the store never made stands in for a tensor where there is no GPU.
  const g = noGpu === undefined ? tensor([1, 2, 3], [3], { device: '/gpu:1', resident: true }) : new GpuTensor(2 ** 40, [3], 'float32', '/gpu:1');
  t.is(String(g), 'GpuTensor(float32, [3], /gpu:1)');
  t.is(g.size, 3);
  t.false(g.disposed);
  g.dispose();
  g.dispose();
  t.true(g.disposed);
  t.is(String(g), 'GpuTensor(float32, [3], /gpu:1, disposed)');
  for (const use of [() => g.toHostSync(), () => g.toHost(), () => new NcclAllReduce().reduce(ReduceOp.SUM, g, '/gpu:1'), () => new NcclAllReduce().broadcastSync(g, '/gpu:0')]) {
    const e = await t.throwsAsync(async () => use(), { instanceOf: CrossDeviceError });
    t.is(e?.code, 'ERR_DISPOSED');
  }
});

test(`[${B}] a handle unknown to the core is ERR_DISPOSED natively, ERR_NO_CUDA in WebAssembly`, async (t) => {
  const g = new GpuTensor(2 ** 41, [2], 'float32', '/gpu:0');
  const e = await t.throwsAsync(() => g.toHost(), { instanceOf: CrossDeviceError });
  t.is(e?.code, B === 'native' ? 'ERR_DISPOSED' : 'ERR_NO_CUDA');
  g.dispose();
});

const script = new URL('./gpu/tensors.mjs', import.meta.url).pathname;
const title = `[${B}] test/gpu/tensors.mjs: every op on GPU tensors on 8 virtual GPUs equals the op on host tensors bit for bit; toHost, dispose, finalizer`;
if (noGpu !== undefined) {
  test.skip(`${title} (skipped: no GPU: ${noGpu})`, () => {});
} else {
  test(title, (t) => {
    t.true(existsSync(new URL('../dist/index.js', import.meta.url)), 'dist/ is built (npm run build:ts)');
    const run = spawnSync(process.execPath, ['--expose-gc', script], { env: { ...process.env, CROSSDEV_VIRTUAL_GPUS: '8' }, encoding: 'utf8', timeout: 240_000 });
    t.log(run.stdout.split('\n').slice(-4).join('\n'));
    t.is(run.status, 0, `${run.stdout}\n${run.stderr}`);
    const last = JSON.parse(run.stdout.trim().split('\n').at(-1) ?? '{}');
    t.is(last.gpuTensors?.failed, 0);
    t.true(last.gpuTensors?.passed > 1000);
  });
}
