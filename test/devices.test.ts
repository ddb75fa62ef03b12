/**
 * SPEC §4 (device_util / DeviceSpec) and §6.5 (device_util_test) through canonicalizeDevice and
 * resolveDevice, plus how PerDevice keys use them (§3).
 */
import test from 'ava';
import { CrossDeviceError, PerDevice, canonicalizeDevice, resolveDevice, tensor } from '../ts/index.js';
import { B } from './helpers.js';

const LOCAL = '/job:localhost/replica:0/task:0';

test(`[${B}] §4.2 canonicalize without a default`, (t) => {
  const cases: [string, string][] = [
    ['/gpu:0', `${LOCAL}/device:GPU:0`],
    ['GPU:1', `${LOCAL}/device:GPU:1`],
    ['/cpu:0', `${LOCAL}/device:CPU:0`],
    ['/job:worker/task:1', '/job:worker/replica:0/task:1/device:CPU:0'],
    ['', `${LOCAL}/device:CPU:0`],
    ['/job:worker/cpu:0', '/job:worker/replica:0/task:0/device:CPU:0'],
    ['/device:CPU:0', `${LOCAL}/device:CPU:0`],
    ['/device:XLA_GPU:2', `${LOCAL}/device:XLA_GPU:2`],
    ['/gpu', `${LOCAL}/device:GPU:0`],
    ['/Cpu:3', `${LOCAL}/device:CPU:3`],
    ['cpu:*', `${LOCAL}/device:CPU:0`],
    ['//job:a///task:3/', '/job:a/replica:0/task:3/device:CPU:0'],
    ['/task:1/job:w', '/job:w/replica:0/task:1/device:CPU:0'],
    ['/replica:4/gpu:7', '/job:localhost/replica:4/task:0/device:GPU:7'],
    ['/job:worker/replica:1/task:2/device:TPU:3', '/job:worker/replica:1/task:2/device:TPU:3'],
  ];
  for (const [d, want] of cases) {
    t.is(canonicalizeDevice(d), want, `canonicalize(${JSON.stringify(d)})`);
    // An empty default is the same as none; canonical forms are fixed points.
    t.is(canonicalizeDevice(d, ''), want);
    t.is(canonicalizeDevice(want), want);
  }
});

test(`[${B}] §4.2 canonicalize with a default`, (t) => {
  t.is(canonicalizeDevice('/job:worker/task:1/cpu:0', '/gpu:0'), '/job:worker/replica:0/task:1/device:CPU:0');
  t.is(canonicalizeDevice('/job:worker/task:1', '/gpu:0'), '/job:worker/replica:0/task:1/device:GPU:0');
  t.is(canonicalizeDevice('/cpu:0', '/job:worker'), '/job:worker/replica:0/task:0/device:CPU:0');
  // Quirk: the index merges independently of the type.
  t.is(canonicalizeDevice('/gpu', '/cpu:3'), `${LOCAL}/device:GPU:3`);
  t.is(canonicalizeDevice('/device:GPU:*', '/cpu:3'), `${LOCAL}/device:GPU:3`);
  // Only the device itself must have an all-caps type, as in TensorFlow.
  t.is(canonicalizeDevice('/cpu:1', '/device:gpu:0'), `${LOCAL}/device:CPU:1`);
});

test(`[${B}] §4.3 resolve: the current device scope completes the device`, (t) => {
  // Under `with device("/gpu:0")`, current() is "/device:GPU:0".
  t.is(resolveDevice('/job:worker/task:1/cpu:0', '/device:GPU:0'), '/job:worker/replica:0/task:1/device:CPU:0');
  t.is(resolveDevice('/job:worker/task:1', '/device:GPU:0'), '/job:worker/replica:0/task:1/device:GPU:0');
  t.is(resolveDevice('', '/device:GPU:0'), `${LOCAL}/device:GPU:0`);
  // Under `with device("/job:worker")`.
  t.is(resolveDevice('/cpu:0', '/job:worker'), '/job:worker/replica:0/task:0/device:CPU:0');
  // Nested `/job:worker` + `/cpu:0` scopes: current() is "/job:worker/device:CPU:0".
  t.is(resolveDevice('/task:2', '/job:worker/device:CPU:0'), '/job:worker/replica:0/task:2/device:CPU:0');
  t.is(resolveDevice('/gpu:1', '/job:worker/device:CPU:0'), '/job:worker/replica:0/task:0/device:GPU:1');
  // Eager under "/cpu:0": current() is already canonical.
  t.is(resolveDevice('', `${LOCAL}/device:CPU:0`), `${LOCAL}/device:CPU:0`);
});

test(`[${B}] §4.3 resolve without a scope is canonicalize`, (t) => {
  for (const d of ['/gpu:0', 'GPU:1', '/cpu:0', '/job:worker/task:1', '', '/job:worker/cpu:0', '/device:XLA_GPU:2']) {
    t.is(resolveDevice(d), canonicalizeDevice(d));
    t.is(resolveDevice(d, ''), canonicalizeDevice(d));
  }
});

test(`[${B}] §4.1 parse errors`, (t) => {
  const cases: [() => unknown, string][] = [
    [() => canonicalizeDevice('TPU:0'), "Unknown attribute: 'TPU' in 'TPU:0'"],
    [() => canonicalizeDevice('/job:foo/bar:1'), "Unknown attribute: 'bar' in '/job:foo/bar:1'"],
    [() => canonicalizeDevice('/device:GPU'), "Unknown attribute: 'device' in '/device:GPU'"],
    [() => canonicalizeDevice('/cpu:0/gpu:1'), 'Cannot specify multiple device types: /cpu:0/gpu:1'],
    [() => canonicalizeDevice('/device:CPU:0/device:GPU:0'), 'Cannot specify multiple device types: /device:CPU:0/device:GPU:0'],
    [() => canonicalizeDevice('/job:w/gpu/device:TPU:0'), 'Cannot specify multiple device types: /job:w/gpu/device:TPU:0'],
    [() => canonicalizeDevice('/replica:x'), "invalid literal for int() with base 10: 'x'"],
    [() => canonicalizeDevice('/gpu:one'), "invalid literal for int() with base 10: 'one'"],
    [() => canonicalizeDevice('/device:gpu:0'), "Device type 'gpu' must be all-caps."],
    [() => canonicalizeDevice('/job:w/device:Tpu:1', '/cpu:0'), "Device type 'Tpu' must be all-caps."],
    [() => canonicalizeDevice('/cpu:0', '/bogus:1'), "Unknown attribute: 'bogus' in '/bogus:1'"],
    [() => resolveDevice('/device:gpu:0', '/gpu:0'), "Device type 'gpu' must be all-caps."],
    [() => resolveDevice('/cpu:0/gpu:0'), 'Cannot specify multiple device types: /cpu:0/gpu:0'],
  ];
  for (const [f, message] of cases) {
    t.throws(f, { instanceOf: CrossDeviceError, code: 'ERR_INVALID_DEVICE', message });
  }
});

test(`[${B}] §3 PerDevice keys are canonical, insertion-ordered; duplicates collapse (last wins, first position)`, (t) => {
  const pd = new PerDevice([
    ['/cpu:1', tensor(1)],
    ['/gpu:0', tensor(2)],
    ['CPU:0', tensor(3)],
    ['/job:localhost/replica:0/task:0/device:CPU:1', tensor(4)],
  ]);
  t.deepEqual(pd.devices, [`${LOCAL}/device:CPU:1`, `${LOCAL}/device:GPU:0`, `${LOCAL}/device:CPU:0`]);
  t.deepEqual(pd.values.map((v) => (v as ReturnType<typeof tensor>).data[0]), [4, 2, 3]);
  // Plain objects and Maps work the same way.
  t.deepEqual(new PerDevice(new Map([['/gpu:1', tensor(1)]])).devices, [`${LOCAL}/device:GPU:1`]);
  t.deepEqual(new PerDevice({ '': tensor(1) }).devices, [`${LOCAL}/device:CPU:0`]);
});
