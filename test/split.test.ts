import test from 'ava';
import { backend, CrossDeviceError, tensor, utils } from '../ts/index.js';

const B = backend();

test(`[${B}] paddedSplit pads the tail and stripPadding removes it (SPEC §2.1)`, (t) => {
  const x = tensor([1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
  const { parts, padLen } = utils.paddedSplit(x, 4);
  t.is(padLen, 2);
  t.deepEqual(parts.map((p) => p.shape), [[3], [3], [3], [3]]);
  t.deepEqual(parts.flatMap((p) => p.toArray() as number[]), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 0, 0]);
  const joined = tensor(parts.flatMap((p) => p.toArray() as number[]));
  t.deepEqual(utils.stripPadding([joined], padLen)[0].toArray(), [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]);
});

test(`[${B}] raggedSplit gives the remainder to the last piece`, (t) => {
  const parts = utils.raggedSplit(tensor(new Int32Array([0, 1, 2, 3, 4, 5, 6, 7, 8, 9])), 3);
  t.deepEqual(parts.map((p) => p.toArray()), [[0, 1, 2], [3, 4, 5], [6, 7, 8, 9]]);
  t.is(parts[2].dtype, 'int32');
});

test(`[${B}] split helpers raise TensorFlow's errors`, (t) => {
  const twoD = tensor([[1, 2], [3, 4]]);
  const check = (f: () => unknown, message: string) => {
    const e = t.throws(f, { instanceOf: CrossDeviceError });
    t.is(e?.message, message);
    t.is((e as CrossDeviceError).code, 'ERR_INVALID_ARGUMENT');
  };
  check(() => utils.paddedSplit(twoD, 2), 'input tensor must be 1D');
  check(() => utils.raggedSplit(twoD, 2), 'input tensor must be 1D');
  check(() => utils.stripPadding([], 1), 'tensors cannot be empty');
  check(() => utils.stripPadding([twoD], 1), 'tensors must be 1D');
  check(() => utils.stripPadding([tensor([1])], 2), 'pad_len longer than tensor');
});
