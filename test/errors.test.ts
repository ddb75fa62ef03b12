/**
 * Every error of SPEC §5.1 (destinations), §5.2 (input normalisation) and §5.3 (`_simple_reduce`),
 * plus crossdev's own argument errors, through the public API: each is a `CrossDeviceError` with
 * the exact `code` and `message`, thrown by the Sync forms and rejected by the Promise forms.
 * Also: errors never take the process down, and reduce/batchReduce/broadcast never modify the
 * caller's input buffers.
 */
import test, { type ExecutionContext } from 'ava';
import {
  CrossDeviceError,
  IndexedSlices,
  MapOutput,
  Mirrored,
  PerDevice,
  ReduceOp,
  ReductionToOneDevice,
  Tensor,
  canonicalizeDevice,
  resolveDevice,
  tensor,
  type DType,
} from '../ts/index.js';
import { assertMirroredDense, B, bytesCopy, cpu, sameBytes } from './helpers.js';

const DEST_KIND =
  'destinations must be one of a `DistributedValues` object, a tf.Variable object, a device string, a list of device strings';
const DEST_EMPTY = 'destinations can not be empty';
const NO_DEVICE = "Cannot convert `input_tensor` to a `PerDevice` object because it doesn't have device set.";
const seqMsg = (repr: string) =>
  `Cannot convert \`input_tensor\` to a \`PerDevice\` object, got ${repr} but expected a object that is not a tuple or list.`;
const PAIRS_LIST = '`value_destination_pairs` should be a list or tuple';
const PAIRS_TUPLE = 'Each element of `value_destination_pairs` should be a tuple.';
const PAIRS_ARITY = 'Each element of `value_destination_pairs` should be a tuple of size 2.';
const opMsg = (got: string) =>
  `\`aggregation\` must be VariableAggregation.SUM or VariableAggregation.MEAN. (crossdev accepts ReduceOp SUM, MEAN, MAX, MIN, PRODUCT; got ${got})`;

type Expect = { code: string; message: string };
const ops = new ReductionToOneDevice();
const pd = () => new PerDevice({ '/cpu:0': tensor([1, 2]), '/cpu:1': tensor([3, 4], undefined, { device: '/cpu:1' }) });

/** `f` throws exactly `e` (as a CrossDeviceError). */
function throwsExactly(t: ExecutionContext, f: () => unknown, e: Expect, what = ''): void {
  t.throws(f, { instanceOf: CrossDeviceError, code: e.code, message: e.message }, what);
}
/** `f()` rejects with exactly `e`, and does not throw synchronously. */
async function rejectsExactly(t: ExecutionContext, f: () => Promise<unknown>, e: Expect, what = ''): Promise<void> {
  let p: Promise<unknown> | undefined;
  t.notThrows(() => {
    p = f();
  }, `${what}: the Promise form rejects rather than throws`);
  await t.throwsAsync(p!, { instanceOf: CrossDeviceError, code: e.code, message: e.message }, what);
}

/** Every public operation taking destinations, in all forms, fails with `e` for `d`. */
async function allFormsReject(t: ExecutionContext, d: unknown, e: Expect): Promise<void> {
  const dest = d as any;
  const label = `destinations ${String(JSON.stringify(d))}`;
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, pd(), dest), e, `reduceSync, ${label}`);
  await rejectsExactly(t, () => ops.reduce(ReduceOp.MEAN, pd(), dest), e, `reduce, ${label}`);
  throwsExactly(t, () => ops.batchReduceSync(ReduceOp.SUM, [[pd(), '/cpu:0'], [pd(), dest]]), e, `batchReduceSync, ${label}`);
  await rejectsExactly(t, () => ops.batchReduce(ReduceOp.SUM, [[pd(), dest]]), e, `batchReduce, ${label}`);
  throwsExactly(t, () => ops.broadcastSync(tensor(1), dest), e, `broadcastSync, ${label}`);
  await rejectsExactly(t, () => ops.broadcast(1, dest), e, `broadcast, ${label}`);
}

// ---- §5.1 destinations ---------------------------------------------------------------------

test(`[${B}] §5.1 empty destinations: '' / [] / {device: ''} → ERR_EMPTY_DESTINATIONS`, async (t) => {
  const e = { code: 'ERR_EMPTY_DESTINATIONS', message: DEST_EMPTY };
  for (const d of ['', [], { device: '' }, Object.freeze([]), tensor(1, undefined, { device: '' })]) {
    await allFormsReject(t, d, e);
  }
});

test(`[${B}] §5.1 destinations of the wrong kind → ERR_INVALID_DESTINATIONS`, async (t) => {
  const e = { code: 'ERR_INVALID_DESTINATIONS', message: DEST_KIND };
  for (const d of [null, undefined, 42, [1, 2], ['/cpu:0', 3], {}, { device: 5 }, true, new MapOutput([]), Symbol.iterator]) {
    await allFormsReject(t, d, e);
  }
});

test(`[${B}] §5.1 a DistributedValues destination is never "empty" (like TF's objects without truthiness)`, (t) => {
  // TF: check_destinations is True for any DistributedValues; crossdev places the result on no device.
  const m = ops.reduceSync(ReduceOp.SUM, pd(), new Mirrored({}));
  t.true(m instanceof Mirrored);
  t.deepEqual(m.devices, []);
});

test(`[${B}] §4 bad device strings in destinations, values and options → ERR_INVALID_DEVICE`, async (t) => {
  const cases: [unknown, string][] = [
    ['/cpu:0/gpu:1', 'Cannot specify multiple device types: /cpu:0/gpu:1'],
    ['TPU:0', "Unknown attribute: 'TPU' in 'TPU:0'"],
    [['/cpu:0', '/replica:x'], "invalid literal for int() with base 10: 'x'"],
    [{ device: '/device:gpu:0' }, "Device type 'gpu' must be all-caps."],
    ['/job:foo/bar:1', "Unknown attribute: 'bar' in '/job:foo/bar:1'"],
  ];
  for (const [d, message] of cases) {
    const e = { code: 'ERR_INVALID_DEVICE', message };
    throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, pd(), d as any), e);
    await rejectsExactly(t, () => ops.reduce(ReduceOp.SUM, pd(), d as any), e);
    throwsExactly(t, () => ops.batchReduceSync(ReduceOp.SUM, [[pd(), d as any]]), e);
    throwsExactly(t, () => ops.broadcastSync(tensor(1), d as any), e);
  }
  // PerDevice / Mirrored keys.
  throwsExactly(t, () => new PerDevice({ '/gpu:0/cpu:0': tensor(1) }), { code: 'ERR_INVALID_DEVICE', message: 'Cannot specify multiple device types: /gpu:0/cpu:0' });
  throwsExactly(t, () => new Mirrored([['/device:Tpu:1', tensor(1)]]), { code: 'ERR_INVALID_DEVICE', message: "Device type 'Tpu' must be all-caps." });
  // The device of a single tensor being reduced.
  const e = { code: 'ERR_INVALID_DEVICE', message: "Unknown attribute: 'bogus' in 'bogus:1'" };
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, tensor(1, undefined, { device: 'bogus:1' }), '/cpu:0'), e);
  await rejectsExactly(t, () => ops.batchReduce(ReduceOp.SUM, [[tensor(1, undefined, { device: 'bogus:1' }), '/cpu:0']]), e);
  // reduceToDevice is checked when the op is made.
  throwsExactly(t, () => new ReductionToOneDevice({ reduceToDevice: '/device:gpu:0' }), { code: 'ERR_INVALID_DEVICE', message: "Device type 'gpu' must be all-caps." });
  // canonicalizeDevice / resolveDevice, including a bad default.
  throwsExactly(t, () => canonicalizeDevice('/gpu:one'), { code: 'ERR_INVALID_DEVICE', message: "invalid literal for int() with base 10: 'one'" });
  throwsExactly(t, () => canonicalizeDevice('/cpu:0', '/bogus:1'), { code: 'ERR_INVALID_DEVICE', message: "Unknown attribute: 'bogus' in '/bogus:1'" });
  throwsExactly(t, () => resolveDevice('/device:gpu:0', '/gpu:0'), { code: 'ERR_INVALID_DEVICE', message: "Device type 'gpu' must be all-caps." });
});

test(`[${B}] §3 get of a missing device → ERR_DEVICE_NOT_FOUND`, (t) => {
  const m = new Mirrored({ '/cpu:0': tensor(1), '/cpu:1': tensor(2) });
  throwsExactly(t, () => m.get('/gpu:0'), {
    code: 'ERR_DEVICE_NOT_FOUND',
    message:
      'Device /job:localhost/replica:0/task:0/device:GPU:0 not found in ["/job:localhost/replica:0/task:0/device:CPU:0", "/job:localhost/replica:0/task:0/device:CPU:1"] (current device None)',
  });
  throwsExactly(t, () => new PerDevice({}).get('/cpu:0'), {
    code: 'ERR_DEVICE_NOT_FOUND',
    message: 'Device /job:localhost/replica:0/task:0/device:CPU:0 not found in [] (current device None)',
  });
});

// ---- §5.2 input normalisation ------------------------------------------------------------

test(`[${B}] §5.2 reduce value: an array, a plain number, a TypedArray, null → ERR_INVALID_INPUT`, async (t) => {
  const cases: [unknown, string][] = [
    [[tensor(1), tensor(2)], seqMsg('[Tensor(float32, [], /job:localhost/replica:0/task:0/device:CPU:0), Tensor(float32, [], /job:localhost/replica:0/task:0/device:CPU:0)]')],
    [[1, 2], seqMsg('[1, 2]')],
    [[], seqMsg('[]')],
    [['a', [null]], seqMsg('["a", [null]]')],
    [3, NO_DEVICE],
    [new Float32Array([1, 2]), NO_DEVICE],
    [null, NO_DEVICE],
    [undefined, NO_DEVICE],
    ['/cpu:0', NO_DEVICE],
    [{ device: '/cpu:0' }, NO_DEVICE],
    [new MapOutput([tensor(1)]), NO_DEVICE],
  ];
  for (const [value, message] of cases) {
    const e = { code: 'ERR_INVALID_INPUT', message };
    throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, value as any, '/cpu:0'), e);
    await rejectsExactly(t, () => ops.reduce(ReduceOp.MEAN, value as any, '/cpu:0'), e);
    // The same value as the first element of a pair.
    throwsExactly(t, () => ops.batchReduceSync(ReduceOp.SUM, [[value as any, '/cpu:0']]), e);
    await rejectsExactly(t, () => ops.batchReduce(ReduceOp.SUM, [[pd(), '/cpu:0'], [value as any, '/cpu:0']]), e);
  }
});

test(`[${B}] §5.2 batchReduce pairs: not a list / element not a tuple / wrong arity → ERR_INVALID_PAIRS`, async (t) => {
  const cases: [unknown, string][] = [
    ['pairs', PAIRS_LIST],
    [null, PAIRS_LIST],
    [undefined, PAIRS_LIST],
    [{ length: 1, 0: [pd(), '/cpu:0'] }, PAIRS_LIST],
    [new Map([[pd(), '/cpu:0']]), PAIRS_LIST],
    [[pd()], PAIRS_TUPLE],
    [[[pd(), '/cpu:0'], 'x'], PAIRS_TUPLE],
    [[[pd(), '/cpu:0'], { 0: pd(), 1: '/cpu:0' }], PAIRS_TUPLE],
    [[[pd(), '/cpu:0', '/cpu:1']], PAIRS_ARITY],
    [[[pd()]], PAIRS_ARITY],
    [[[]], PAIRS_ARITY],
    // Normalisation (element shapes) happens before destinations are validated, as in TF.
    [[[pd(), ''], 7], PAIRS_TUPLE],
  ];
  for (const [pairs, message] of cases) {
    const e = { code: 'ERR_INVALID_PAIRS', message };
    throwsExactly(t, () => ops.batchReduceSync(ReduceOp.SUM, pairs as any), e);
    await rejectsExactly(t, () => ops.batchReduce(ReduceOp.MEAN, pairs as any), e);
  }
});

// ---- reduce ops and options ----------------------------------------------------------------

test(`[${B}] an invalid reduce op string → ERR_INVALID_REDUCE_OP`, async (t) => {
  for (const [op, got] of [['sum', '"sum"'], ['', '""'], ['ADD', '"ADD"'], ['Mean', '"Mean"'], ['a"b', '"a\\"b"']]) {
    const e = { code: 'ERR_INVALID_REDUCE_OP', message: opMsg(got) };
    throwsExactly(t, () => ops.reduceSync(op as any, pd(), '/cpu:0'), e);
    await rejectsExactly(t, () => ops.reduce(op as any, pd(), '/cpu:0'), e);
    throwsExactly(t, () => ops.batchReduceSync(op as any, [[pd(), '/cpu:0']]), e);
    await rejectsExactly(t, () => ops.batchReduce(op as any, []), e);
  }
});

test(`[${B}] IndexedSlices can only be summed or averaged → ERR_INVALID_REDUCE_OP`, async (t) => {
  const s = (device: string) => new IndexedSlices(tensor([[1, 2]], undefined, { device }), tensor([0], [1], { dtype: 'int32', device }), [2, 2]);
  const value = new PerDevice({ '/cpu:0': s('/cpu:0'), '/cpu:1': s('/cpu:1') });
  for (const op of [ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT]) {
    const e = { code: 'ERR_INVALID_REDUCE_OP', message: `IndexedSlices can only be reduced with SUM or MEAN, not ${op}` };
    throwsExactly(t, () => ops.reduceSync(op, value, '/cpu:0'), e);
    await rejectsExactly(t, () => ops.reduce(op, s('/cpu:0'), '/cpu:0'), e);
  }
});

test(`[${B}] an invalid accumulation → ERR_INVALID_ARGUMENT when the op is made`, (t) => {
  for (const [acc, got] of [['foo', '"foo"'], ['', '""'], ['ADD_N', '"ADD_N"']]) {
    throwsExactly(t, () => new ReductionToOneDevice({ accumulation: acc as any }), {
      code: 'ERR_INVALID_ARGUMENT',
      message: `accumulation must be 'add_n' or 'accumulate_n', got ${got}`,
    });
  }
});

// ---- shapes, dtypes and tensor data --------------------------------------------------------

test(`[${B}] reducing tensors of different shapes or dtypes → ERR_SHAPE_MISMATCH / ERR_DTYPE_MISMATCH`, async (t) => {
  const shapes = new PerDevice({ '/cpu:0': tensor([1, 2]), '/cpu:1': tensor([1, 2, 3]) });
  const e1 = { code: 'ERR_SHAPE_MISMATCH', message: 'Shapes of all inputs must match: [2] != [3]' };
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, shapes, '/cpu:0'), e1);
  await rejectsExactly(t, () => ops.reduce(ReduceOp.MAX, shapes, '/cpu:0'), e1);
  const ranks = new PerDevice({ '/cpu:0': tensor([[1, 2], [3, 4]]), '/cpu:1': tensor([1, 2, 3, 4]), '/cpu:2': tensor([[1, 2], [3, 4]]) });
  throwsExactly(t, () => ops.reduceSync(ReduceOp.MEAN, ranks, '/cpu:0'), { code: 'ERR_SHAPE_MISMATCH', message: 'Shapes of all inputs must match: [2, 2] != [4]' });
  const scalar = new PerDevice({ '/cpu:0': tensor(1), '/cpu:1': tensor([1]) });
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, scalar, '/cpu:0'), { code: 'ERR_SHAPE_MISMATCH', message: 'Shapes of all inputs must match: [] != [1]' });

  const dtypes = new PerDevice({ '/cpu:0': tensor([1, 2]), '/cpu:1': tensor(new Float64Array([1, 2])) });
  const e2 = { code: 'ERR_DTYPE_MISMATCH', message: 'Cannot reduce tensors of different dtypes: float32 and float64' };
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, dtypes, '/cpu:0'), e2);
  await rejectsExactly(t, () => ops.batchReduce(ReduceOp.SUM, [[dtypes, '/cpu:0']]), e2);
  const ints = new PerDevice({ '/cpu:0': tensor([1, 2], undefined, { dtype: 'int32' }), '/cpu:1': tensor([1n, 2n], undefined, { dtype: 'int64' }) });
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, ints, '/cpu:0'), { code: 'ERR_DTYPE_MISMATCH', message: 'Cannot reduce tensors of different dtypes: int32 and int64' });
  const halves = new PerDevice({ '/cpu:0': tensor([1], undefined, { dtype: 'float16' }), '/cpu:1': tensor([1], undefined, { dtype: 'bfloat16' }) });
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, halves, '/cpu:0'), { code: 'ERR_DTYPE_MISMATCH', message: 'Cannot reduce tensors of different dtypes: float16 and bfloat16' });
  // Inside a MapOutput, too.
  const inList = new PerDevice({ '/cpu:0': new MapOutput([tensor([1, 2]), tensor([1, 2, 3])]) });
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, inList, '/cpu:0'), e1);
});

test(`[${B}] IndexedSlices that cannot be aggregated → ERR_DTYPE_MISMATCH / ERR_SHAPE_MISMATCH`, async (t) => {
  const s = (values: Tensor, rows: number, denseShape: number[]) =>
    new IndexedSlices(values, tensor(Array.from({ length: rows }, (_, i) => i), [rows], { dtype: 'int32' }), denseShape);
  const f32 = s(tensor([[1, 2]]), 1, [3, 2]);
  const f64 = s(tensor(new Float64Array([1, 2]), [1, 2]), 1, [3, 2]);
  const wide = s(tensor([[1, 2, 3]]), 1, [3, 3]);
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, new PerDevice({ '/cpu:0': f32, '/cpu:1': f64 }), '/cpu:0'), {
    code: 'ERR_DTYPE_MISMATCH',
    message: 'Cannot aggregate IndexedSlices of float32 with float64',
  });
  await rejectsExactly(t, () => ops.reduce(ReduceOp.MEAN, new PerDevice({ '/cpu:0': f32, '/cpu:1': wide }), '/cpu:0'), {
    code: 'ERR_SHAPE_MISMATCH',
    message: 'Cannot aggregate IndexedSlices with rows of shape [2] and [3]',
  });
  // A scalar has no rows to become slices of.
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, new PerDevice({ '/cpu:0': tensor(1), '/cpu:1': f32 }), '/cpu:0'), {
    code: 'ERR_SHAPE_MISMATCH',
    message: 'A scalar cannot be aggregated with IndexedSlices',
  });
});

test(`[${B}] IndexedSlices construction errors`, (t) => {
  throwsExactly(t, () => new IndexedSlices(tensor([[1, 2]]), tensor([0]), [3, 2]), {
    code: 'ERR_INVALID_TENSOR',
    message: 'IndexedSlices indices must be a 1-D int32 or int64 tensor, got float32 of shape [1]',
  });
  throwsExactly(t, () => new IndexedSlices(tensor([[1, 2]]), tensor([[0]], undefined, { dtype: 'int32' }), [3, 2]), {
    code: 'ERR_INVALID_TENSOR',
    message: 'IndexedSlices indices must be a 1-D int32 or int64 tensor, got int32 of shape [1, 1]',
  });
  throwsExactly(t, () => new IndexedSlices(tensor([[1, 2], [3, 4]]), tensor([0], undefined, { dtype: 'int32' }), [5, 2]), {
    code: 'ERR_SHAPE_MISMATCH',
    message: 'IndexedSlices values of shape [2, 2] do not fit 1 indices of a dense shape [5, 2]',
  });
  throwsExactly(t, () => new IndexedSlices(tensor([[1, 2]]), tensor([0], undefined, { dtype: 'int32' }), [5, 3]), {
    code: 'ERR_SHAPE_MISMATCH',
    message: 'IndexedSlices values of shape [1, 2] do not fit 1 indices of a dense shape [5, 3]',
  });
  throwsExactly(t, () => new IndexedSlices(tensor([[1, 2]]), tensor([0], undefined, { dtype: 'int32' }), [-5, 2]), {
    code: 'ERR_INVALID_TENSOR',
    message: 'Shape dimensions must be non-negative integers, got [-5, 2]',
  });
});

test(`[${B}] tensor data that does not match its shape or dtype → ERR_INVALID_TENSOR`, async (t) => {
  const bad = (f: () => unknown, message: string) => throwsExactly(t, f, { code: 'ERR_INVALID_TENSOR', message });
  bad(() => tensor(new Float32Array(3), [2]), 'A tensor of shape [2] needs 2 elements, but its float32 data has 3');
  bad(() => tensor([1, 2, 3], [2, 2]), 'A tensor of shape [2, 2] needs 4 elements, but its float32 data has 3');
  bad(() => tensor([1, 2, 3], [2], { dtype: 'float16' }), 'A tensor of shape [2] needs 2 elements, but its float16 data has 3');
  bad(() => tensor([1, 2, 3], [4], { dtype: 'bfloat16' }), 'A tensor of shape [4] needs 4 elements, but its bfloat16 data has 3');
  bad(() => tensor(new BigInt64Array(2), []), 'A tensor of shape [] needs 1 elements, but its int64 data has 2');
  bad(() => tensor(5, [2]), 'A tensor of shape [2] needs 2 elements, but its float32 data has 1');
  bad(() => tensor([[1, 2], [3]]), 'Ragged nested arrays cannot form a tensor (lengths 2 and 1 at depth 1)');
  bad(() => tensor(new Float32Array(2), undefined, { dtype: 'float64' }), 'A Float32Array holds float32, not float64');
  bad(() => tensor(new Uint16Array(2)), 'A Uint16Array needs an explicit dtype (float16 and bfloat16 data is a Uint16Array of bits); allowed: float32, float64, float16, bfloat16, int32, int64');
  bad(() => tensor(new Uint16Array(4), [2], { dtype: 'float32' }), 'float32 data must be a Float32Array, got a Uint16Array');
  bad(() => tensor(new Uint8Array(8) as any, [2], { dtype: 'float32' }), 'float32 data must be a Float32Array, got a Uint8Array');
  bad(() => tensor([1], undefined, { dtype: 'float8' as DType }), "Unknown dtype 'float8'; expected one of float32, float64, float16, bfloat16, int32, int64");
  bad(() => tensor([1], [1.5]), 'Shape dimensions must be non-negative integers, got [1.5]');
  bad(() => tensor([], [-1]), 'Shape dimensions must be non-negative integers, got [-1]');
  bad(() => tensor(new Float32Array(0), [NaN]), 'Shape dimensions must be non-negative integers, got [NaN]');
  bad(() => tensor(['a'] as any), 'The elements of a float32 tensor must be numbers, got "a"');
  bad(() => tensor([1n] as any), 'The elements of a float32 tensor must be numbers, got 1n');
  bad(() => tensor([1.5], undefined, { dtype: 'int64' }), 'The elements of a int64 tensor must be integer numbers or bigints, got 1.5');
  // A Tensor made directly is checked when it is used.
  const direct = new Tensor(new Float32Array(3), [2], 'float32');
  const e = { code: 'ERR_INVALID_TENSOR', message: 'A tensor of shape [2] needs 2 elements, but its float32 data has 3' };
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, direct, '/cpu:0'), e);
  await rejectsExactly(t, () => ops.broadcast(direct, '/cpu:0'), e);
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, new Tensor(new Float32Array(3), [3], 'float64'), '/cpu:0'), {
    code: 'ERR_INVALID_TENSOR',
    message: '12 bytes are not a whole number of float64 elements',
  });
  throwsExactly(t, () => new Tensor(new Float32Array(1), [0.5], 'float32'), { code: 'ERR_INVALID_TENSOR', message: 'Shape dimensions must be non-negative integers, got [0.5]' });
});

test(`[${B}] values that are not tensors → ERR_INVALID_INPUT`, async (t) => {
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, new PerDevice({ '/cpu:0': 3 as any }), '/cpu:0'), {
    code: 'ERR_INVALID_INPUT',
    message: "A device's value must be a Tensor, IndexedSlices or MapOutput, got 3",
  });
  throwsExactly(t, () => ops.reduceSync(ReduceOp.SUM, new PerDevice({ '/cpu:0': new MapOutput([new MapOutput([tensor(1)]) as any]) }), '/cpu:0'), {
    code: 'ERR_INVALID_INPUT',
    message: 'A list of values (MapOutput) cannot contain another list',
  });
  await rejectsExactly(t, () => ops.broadcast(new MapOutput([tensor(1)]) as any, '/cpu:0'), {
    code: 'ERR_INVALID_INPUT',
    message: 'Cannot broadcast a list of values (MapOutput): broadcast a tensor or IndexedSlices',
  });
  // A PerDevice is not a broadcast value (it used to become a NaN scalar).
  throwsExactly(t, () => ops.broadcastSync(pd() as any, '/cpu:0'), {
    code: 'ERR_INVALID_TENSOR',
    message: 'The elements of a float32 tensor must be numbers, got PerDevice',
  });
});

// ---- robustness ----------------------------------------------------------------------------

test(`[${B}] errors never take the process down; the core keeps working after many of them`, async (t) => {
  const failures: Promise<unknown>[] = [];
  for (let i = 0; i < 200; i++) {
    t.throws(() => ops.reduceSync(ReduceOp.SUM, new PerDevice({ '/cpu:0': tensor([1, 2]), '/cpu:1': tensor([1]) }), '/cpu:0'), { instanceOf: CrossDeviceError });
    t.throws(() => ops.broadcastSync(tensor(1), ''), { instanceOf: CrossDeviceError });
    t.throws(() => new IndexedSlices(tensor([[1, 2]]), tensor([7], undefined, { dtype: 'int32' }), [3, 2]).densify(), { instanceOf: CrossDeviceError });
    failures.push(ops.batchReduce('nope' as any, [[pd(), '/cpu:0']]));
  }
  const settled = await Promise.allSettled(failures);
  t.true(settled.every((s) => s.status === 'rejected' && s.reason instanceof CrossDeviceError));
  assertMirroredDense(t, await ops.reduce(ReduceOp.SUM, pd(), ['/cpu:0', '/cpu:1']), [cpu(0), cpu(1)], { dtype: 'float32', shape: [2], data: [4, 6] });
  assertMirroredDense(t, ops.reduceSync(ReduceOp.MEAN, pd(), '/cpu:1'), [cpu(1)], { dtype: 'float32', shape: [2], data: [2, 3] });
});

// ---- inputs are never modified ---------------------------------------------------------

/** Overwrites a result with zeros. */
function zero(a: Tensor['data']): void {
  if (a instanceof BigInt64Array) a.fill(0n);
  else a.fill(0);
}

function randomTensor(dtype: DType, n: number, device: string, seed: number): Tensor {
  let x = seed * 2654435761;
  const next = () => {
    x = (Math.imul(x ^ (x >>> 15), 0x2c1b3c6d) + 0x6d2b79f5) | 0;
    return x;
  };
  const nums = Array.from({ length: n }, () => next());
  switch (dtype) {
    case 'float32':
      return tensor(Float32Array.from(nums, (v) => v / 1e6), [n], { device });
    case 'float64':
      return tensor(Float64Array.from(nums, (v) => v / 1e7), [n], { device });
    case 'float16':
    case 'bfloat16':
      // Any bits, NaNs included.
      return tensor(Uint16Array.from(nums, (v) => v & 0xffff), [n], { dtype, device });
    case 'int32':
      return tensor(Int32Array.from(nums), [n], { device });
    case 'int64':
      return tensor(BigInt64Array.from(nums, (v) => BigInt(v) * 4294967311n), [n], { device });
  }
}

test(`[${B}] reduce, batchReduce and broadcast never modify the caller's buffers; results do not alias them`, async (t) => {
  const dtypes: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64'];
  for (const dtype of dtypes) {
    const devices = ['/cpu:0', '/cpu:1', '/cpu:2'];
    const inputs = devices.map((d, i) => randomTensor(dtype, 37, d, i + 1));
    const copies = inputs.map((x) => bytesCopy(x.data));
    const value = new PerDevice(devices.map((d, i) => [d, inputs[i]] as const));
    const listValue = new PerDevice({ '/cpu:0': new MapOutput([inputs[0], inputs[1]]), '/cpu:1': inputs[2] });
    const intact = (what: string) => inputs.forEach((x, i) => t.true(sameBytes(x.data, copies[i]), `${dtype}: input ${i} intact after ${what}`));
    for (const op of [ReduceOp.SUM, ReduceOp.MEAN, ReduceOp.MAX, ReduceOp.MIN, ReduceOp.PRODUCT]) {
      const results = [
        ops.reduceSync(op, value, devices),
        await ops.reduce(op, value, value),
        ops.reduceSync(op, listValue, '/cpu:0'),
        ...ops.batchReduceSync(op, [[value, '/cpu:1'], [listValue, devices]]),
        ...(await ops.batchReduce(op, [[value, devices]])),
        // One device: the result is a copy, not the input itself.
        ops.reduceSync(op, inputs[0], ['/cpu:0', '/cpu:1']),
      ];
      intact(`${op}`);
      // Writing to every result leaves the inputs alone.
      for (const m of results) for (const v of m.values) zero((v as Tensor).data);
      intact(`writing to ${op}'s results`);
    }
    const b = [ops.broadcastSync(inputs[1], devices), await ops.broadcast(inputs[2], ['/cpu:5'])];
    intact('broadcast');
    for (const m of b) for (const v of m.values) zero((v as Tensor).data);
    intact("writing to broadcast's results");
  }
  // IndexedSlices: values and indices.
  const sv = tensor([[1, 2], [3, 4]], undefined, { device: '/cpu:1' });
  const si = tensor([2, 0], undefined, { dtype: 'int64', device: '/cpu:1' });
  const svCopy = bytesCopy(sv.data);
  const siCopy = bytesCopy(si.data);
  const s = new IndexedSlices(sv, si, [3, 2]);
  const dense = tensor([[1, 1], [1, 1], [1, 1]]);
  const denseCopy = bytesCopy(dense.data);
  const r = [
    ops.reduceSync(ReduceOp.MEAN, new PerDevice({ '/cpu:0': dense, '/cpu:1': s }), ['/cpu:0', '/cpu:1']),
    await ops.reduce(ReduceOp.SUM, s, '/cpu:0'),
    ops.broadcastSync(s, ['/cpu:0', '/cpu:2']),
  ];
  s.densify();
  for (const m of r) {
    for (const v of m.values) {
      const x = v as IndexedSlices;
      zero(x.values.data);
      zero(x.indices.data);
    }
  }
  t.true(sameBytes(sv.data, svCopy) && sameBytes(si.data, siCopy) && sameBytes(dense.data, denseCopy), 'slices intact');
});
