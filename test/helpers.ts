/** Shared helpers of the test suite (not a test file itself). */
import type { ExecutionContext } from 'ava';
import { backend, canonicalizeDevice, IndexedSlices, Mirrored, Tensor } from '../ts/index.js';

/** The backend every test file runs on (CROSSDEV_BACKEND=native|wasm), for test titles. */
export const B = backend();

/** The canonical name of CPU `i` of the local job. */
export const cpu = (i: number): string => `/job:localhost/replica:0/task:0/device:CPU:${i}`;

/** `canonicalizeDevice` over a list. */
export const canonAll = (ds: readonly string[]): string[] => ds.map((d) => canonicalizeDevice(d));

/** Elements of a tensor as plain numbers/bigints. */
export const elems = (t: Tensor): (number | bigint)[] => Array.from(t.data as ArrayLike<number | bigint>);

/**
 * Checks that `m` is a Mirrored of dense tensors on exactly `devices` (in order), each equal to
 * `expected` (dtype, shape, elements) and each in its own buffer.
 */
export function assertMirroredDense(
  t: ExecutionContext,
  m: Mirrored,
  devices: readonly string[],
  expected: { dtype: string; shape: readonly number[]; data: readonly (number | bigint)[] },
): void {
  t.true(m instanceof Mirrored, 'result is a Mirrored');
  t.deepEqual(m.devices, [...devices]);
  const datas: ArrayBufferView[] = [];
  for (const [d, v] of m) {
    t.true(v instanceof Tensor, `value on ${d} is a Tensor`);
    const x = v as Tensor;
    t.is(x.device, d);
    t.is(x.dtype as string, expected.dtype);
    t.deepEqual([...x.shape], [...expected.shape]);
    t.deepEqual(elems(x), [...expected.data], `value on ${d}`);
    datas.push(x.data);
  }
  if (expected.data.length > 0) t.false(anyOverlap(datas), 'every device holds its own copy');
}

/**
 * Whether two of `views` share bytes. Views of SharedArrayBuffers count as views of one memory
 * (WebAssembly's, which shows itself through a new SharedArrayBuffer each time it grows).
 */
export function anyOverlap(views: readonly ArrayBufferView[]): boolean {
  const memory = (v: ArrayBufferView) => (v.buffer instanceof SharedArrayBuffer ? SharedArrayBuffer : v.buffer);
  const nonEmpty = views.filter((v) => v.byteLength > 0);
  return nonEmpty.some((a, i) =>
    nonEmpty.slice(i + 1).some((b) => memory(a) === memory(b) && a.byteOffset < b.byteOffset + b.byteLength && b.byteOffset < a.byteOffset + a.byteLength),
  );
}

/**
 * Checks that `m` is a Mirrored of IndexedSlices on `devices`, each with exactly the given values,
 * indices and dense shape, and each densifying to `dense`.
 */
export function assertMirroredSlices(
  t: ExecutionContext,
  m: Mirrored,
  devices: readonly string[],
  expected: {
    values: readonly number[];
    valuesShape: readonly number[];
    indices: readonly (number | bigint)[];
    indicesDtype?: 'int32' | 'int64';
    denseShape: readonly number[];
    dense: readonly number[];
    dtype?: string;
  },
): void {
  t.true(m instanceof Mirrored, 'result is a Mirrored');
  t.deepEqual(m.devices, [...devices]);
  for (const [d, v] of m) {
    t.true(v instanceof IndexedSlices, `value on ${d} is IndexedSlices`);
    const s = v as IndexedSlices;
    t.is(s.device, d);
    t.is(s.values.dtype as string, expected.dtype ?? "float32");
    t.deepEqual([...s.values.shape], [...expected.valuesShape]);
    t.deepEqual(elems(s.values), [...expected.values]);
    t.is(s.indices.dtype, expected.indicesDtype ?? 'int32');
    t.deepEqual(elems(s.indices).map(Number), expected.indices.map(Number));
    t.deepEqual([...s.denseShape], [...expected.denseShape]);
    const dense = s.densify();
    t.deepEqual([...dense.shape], [...expected.denseShape]);
    t.deepEqual(elems(dense), [...expected.dense]);
  }
}

/** A copy of a TypedArray's bytes. */
export function bytesCopy(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength).slice();
}

/** Whether a TypedArray's bytes equal `copy`. */
export function sameBytes(a: ArrayBufferView, copy: Uint8Array): boolean {
  const now = new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  return now.length === copy.length && now.every((b, i) => b === copy[i]);
}
