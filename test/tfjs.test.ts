/** TensorFlow.js interop: tf.Tensor in wherever a tensor is (no copy on its CPU backend with crossdev's native one), toTfjs() out. */
import test from 'ava';
import * as tf from '@tensorflow/tfjs';
import { backend, CrossDeviceError, NcclAllReduce, PerDevice, ReduceOp, ReductionToOneDevice, tensor } from '../ts/index.js';

const B = backend();

test.before(async () => {
  await tf.setBackend('cpu');
});

test(`[${B}] a tf.Tensor becomes a crossdev tensor (over the same memory on native, copied into WebAssembly memory on wasm)`, (t) => {
  const x = tf.tensor([[1, 2], [3, 4]]);
  const c = tensor(x);
  if (B === 'native') t.is(c.data as unknown, x.dataSync() as unknown);
  else t.true(c.data.buffer instanceof SharedArrayBuffer);
  t.deepEqual(Array.from(c.data as Float32Array), [1, 2, 3, 4]);
  t.deepEqual(c.shape, [2, 2]);
  t.is(c.dtype, 'float32');
  t.is(tensor(tf.tensor([1, 2], undefined, 'int32')).dtype, 'int32');
});

test(`[${B}] tf.Tensors reduce like crossdev tensors and come back with toTfjs() (equal to tf.addN)`, async (t) => {
  const xs = [0, 1, 2, 3].map((d) => tf.tensor([d, 2 * d, 3 * d + 0.5], [3]));
  const pd = new PerDevice(xs.map((x, d) => [`/cpu:${d}`, x] as const));
  for (const ops of [new ReductionToOneDevice(), new NcclAllReduce()]) {
    const m = await ops.reduce(ReduceOp.SUM, pd, pd);
    const back = m.get('/cpu:2') as ReturnType<typeof tensor>;
    const y = back.toTfjs(tf);
    t.true(y instanceof tf.Tensor);
    t.deepEqual(Array.from(y.dataSync()), Array.from(tf.addN(xs).dataSync()));
    t.deepEqual(y.shape, [3]);
  }
  // A lone tf.Tensor is a value on /cpu:0, and broadcast takes one too.
  const single = new ReductionToOneDevice().reduceSync(ReduceOp.MEAN, xs[3], ['/cpu:0', '/cpu:1']);
  t.deepEqual((single.get('/cpu:1') as ReturnType<typeof tensor>).toArray(), [3, 6, 9.5]);
  t.deepEqual((new ReductionToOneDevice().broadcastSync(xs[1], '/cpu:4').get() as ReturnType<typeof tensor>).toArray(), [1, 2, 3.5]);
});

test(`[${B}] dtypes TensorFlow.js lacks are refused both ways`, (t) => {
  const e = t.throws(() => tensor(tf.tensor([true, false], undefined, 'bool')), { instanceOf: CrossDeviceError });
  t.is(e?.message, 'TensorFlow.js tensors of dtype bool cannot be reduced; crossdev takes float32 and int32 ones');
  const f = t.throws(() => tensor([1, 2], undefined, { dtype: 'float64' }).toTfjs(tf), { instanceOf: CrossDeviceError });
  t.is(f?.message, 'TensorFlow.js has no float64 tensors; it takes float32 and int32 ones');
});
