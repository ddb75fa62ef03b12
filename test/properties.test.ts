/**
 * Property tests: the backend against test/reference.ts over random dtypes, shapes (scalars and
 * zero-size dimensions included), 1-8 devices, every reduce op and every kind of destination.
 * The core folds contributions in device order exactly as the reference does, so results must be
 * bit-identical (any NaN equals any NaN; +0 and -0 differ), floats included, NaN/Inf inputs
 * included.
 */
import test from 'ava';
import fc from 'fast-check';
import {
  IndexedSlices,
  MapOutput,
  Mirrored,
  PerDevice,
  ReductionToOneDevice,
  Tensor,
  canonicalizeDevice,
  tensor,
  type Destinations,
} from '../ts/index.js';
import { B, bytesCopy, sameBytes } from './helpers.js';
import {
  DTYPES,
  OPS,
  concatData,
  decodeBF16,
  decodeF16,
  densifyReference,
  divideReference,
  encodeBF16,
  encodeF16,
  f32Bits,
  firstDifference,
  makeData,
  reduceListsReference,
  reduceReference,
  show,
  type Data,
  type DType,
  type Op,
} from './reference.js';

const RUNS = 150;
const ops = new ReductionToOneDevice();

/** Devices values and destinations are drawn from, in several spellings. */
const POOL = ['/cpu:0', '/cpu:1', '/cpu:2', '/cpu:3', '/cpu:4', '/cpu:5', '/cpu:6', '/cpu:7', '/gpu:0', '/job:worker/task:1/cpu:0', 'CPU:3', '/device:GPU:1'];
const canon = (d: string) => canonicalizeDevice(d);
const distinct = (ds: string[]) => [...new Set(ds)];

// ---- element arbitraries -------------------------------------------------------------------

const F32_SPECIALS = [NaN, Infinity, -Infinity, 0, -0, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38, 16777216, 16777217 - 2];
const HALF_SPECIAL_BITS = [0x7c00, 0xfc00, 0x7e00, 0xfe01, 0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x3c00, 0x3c01];
const BF16_SPECIAL_BITS = [0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x7f7f, 0xff7f, 0x3f80, 0x3f81];
const small = fc.integer({ min: -16, max: 16 }).map((x) => x / 4);

function elementArb(dtype: DType): fc.Arbitrary<number | bigint> {
  switch (dtype) {
    case 'float32':
      return fc.oneof(fc.float(), small, fc.constantFrom(...F32_SPECIALS));
    case 'float64':
      return fc.oneof(fc.double(), small, fc.constantFrom(NaN, Infinity, -Infinity, 0, -0, Number.MAX_VALUE, Number.MIN_VALUE, 2 ** 53));
    case 'float16':
      return fc.oneof(fc.integer({ min: 0, max: 0xffff }), small.map(encodeF16), fc.constantFrom(...HALF_SPECIAL_BITS));
    case 'bfloat16':
      return fc.oneof(fc.integer({ min: 0, max: 0xffff }), small.map(encodeBF16), fc.constantFrom(...BF16_SPECIAL_BITS));
    case 'int32':
      return fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -10, max: 10 }), fc.constantFrom(-(2 ** 31), 2 ** 31 - 1));
    case 'int64':
      return fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.bigInt({ min: -10n, max: 10n }), fc.constantFrom(-(2n ** 63n), 2n ** 63n - 1n));
  }
}

function toData(dtype: DType, xs: readonly (number | bigint)[]): Data {
  const out = makeData(dtype, xs.length);
  xs.forEach((x, i) => ((out as any)[i] = x));
  return out;
}

const size = (shape: readonly number[]) => shape.reduce((a, b) => a * b, 1);
const shapeArb = fc.array(fc.integer({ min: 0, max: 4 }), { maxLength: 3 });

/** `count` arrays of `n` random elements of `dtype`. */
const datasArb = (dtype: DType, n: number, count: number) =>
  fc.array(fc.array(elementArb(dtype), { minLength: n, maxLength: n }).map((xs) => toData(dtype, xs)), { minLength: count, maxLength: count });

// ---- destinations --------------------------------------------------------------------------

type DestKind = 'string' | 'array' | 'perDevice' | 'mirrored' | 'variable' | 'tensor';
const destArb = fc.record({
  kind: fc.constantFrom<DestKind>('string', 'array', 'perDevice', 'mirrored', 'variable', 'tensor'),
  devices: fc.array(fc.constantFrom(...POOL), { minLength: 1, maxLength: 4 }),
});

/** The destinations object and the canonical devices the result must be on. */
function makeDest(d: { kind: DestKind; devices: string[] }, value: PerDevice): [Destinations, string[]] {
  switch (d.kind) {
    case 'string':
      return [d.devices[0], [canon(d.devices[0])]];
    case 'array':
      return [d.devices, distinct(d.devices.map(canon))];
    case 'perDevice':
      return [value, value.devices];
    case 'mirrored': {
      const m = new Mirrored(d.devices.map((x) => [x, tensor(0)] as const));
      return [m, m.devices];
    }
    case 'variable':
      return [{ device: d.devices[0] }, [canon(d.devices[0])]];
    case 'tensor':
      return [tensor(1, undefined, { device: d.devices[0] }), [canon(d.devices[0])]];
  }
}

// ---- comparison ----------------------------------------------------------------------------

function checkDense(m: Mirrored, devices: string[], dtype: DType, shape: readonly number[], expected: Data, what: string): void {
  const fail = (msg: string) => {
    throw new Error(`${what}: ${msg}`);
  };
  if (JSON.stringify(m.devices) !== JSON.stringify(devices)) fail(`devices ${JSON.stringify(m.devices)} != ${JSON.stringify(devices)}`);
  for (const [d, v] of m) {
    if (!(v instanceof Tensor)) fail(`value on ${d} is not a Tensor`);
    const x = v as Tensor;
    if (x.dtype !== dtype) fail(`dtype ${x.dtype} != ${dtype}`);
    if (x.device !== d) fail(`tensor device ${x.device} != ${d}`);
    if (JSON.stringify(x.shape) !== JSON.stringify(shape)) fail(`shape ${JSON.stringify(x.shape)} != ${JSON.stringify(shape)}`);
    const i = firstDifference(dtype, x.data as Data, expected);
    if (i >= 0) {
      fail(`on ${d}, element ${i} of ${expected.length}: got ${show(dtype, (x.data as Data)[i])}, expected ${show(dtype, expected[i])}`);
    }
  }
}

// ---- reduce ----------------------------------------------------------------------------------

const reduceCase = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: shapeArb,
    devices: fc.uniqueArray(fc.constantFrom(...POOL), { minLength: 1, maxLength: 8, selector: canon }),
    op: fc.constantFrom(...OPS),
    dest: destArb,
    mode: fc.constantFrom('sync', 'async', 'batch', 'batchSync'),
  })
  .chain((c) => datasArb(c.dtype, size(c.shape), c.devices.length).map((datas) => ({ ...c, datas })));

test(`[${B}] property: reduce equals the sequential reference bit for bit (all dtypes, ops, destinations)`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.asyncProperty(reduceCase, async ({ dtype, shape, devices, op, dest, mode, datas }) => {
      const value = new PerDevice(devices.map((d, i) => [d, tensor(datas[i], shape, { dtype, device: d })] as const));
      const copies = datas.map(bytesCopy);
      const [destinations, want] = makeDest(dest, value);
      const expected = reduceReference(dtype, op, datas);
      let m: Mirrored;
      if (mode === 'sync') m = ops.reduceSync(op, value, destinations);
      else if (mode === 'async') m = await ops.reduce(op, value, destinations);
      else {
        // A second pair, reduced to other devices, must not disturb the first.
        const pairs = [[value, destinations], [value, '/cpu:7']] as const;
        const results = mode === 'batch' ? await ops.batchReduce(op, pairs) : ops.batchReduceSync(op, pairs);
        if (results.length !== 2) throw new Error(`batchReduce gave ${results.length} results`);
        checkDense(results[1], [canon('/cpu:7')], dtype, shape, expected, `${op} ${dtype} second pair`);
        m = results[0];
      }
      checkDense(m, want, dtype, shape, expected, `${op} ${dtype} ${JSON.stringify(shape)} on ${devices.length} device(s)`);
      if (!datas.every((d, i) => sameBytes(d, copies[i]))) throw new Error('an input buffer changed');
    }),
    { numRuns: RUNS * 2 },
  ));
});

test(`[${B}] property: a single tensor reduces to itself (MEAN/SUM/MAX/MIN/PRODUCT of one contribution)`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.asyncProperty(
      fc.record({ dtype: fc.constantFrom(...DTYPES), shape: shapeArb, op: fc.constantFrom(...OPS), device: fc.constantFrom(...POOL) }).chain((c) =>
        datasArb(c.dtype, size(c.shape), 1).map((datas) => ({ ...c, data: datas[0] })),
      ),
      async ({ dtype, shape, op, device, data }) => {
        const m = await ops.reduce(op, tensor(data, shape, { dtype, device }), device);
        // One contribution: the value itself (MEAN divides by 1), up to NaN payloads of half types.
        checkDense(m, [canon(device)], dtype, shape, data, `${op} ${dtype}`);
      },
    ),
    { numRuns: RUNS },
  ));
});

// ---- MapOutput -------------------------------------------------------------------------------

const listsCase = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    shape: shapeArb,
    counts: fc.array(fc.integer({ min: 0, max: 3 }), { minLength: 1, maxLength: 5 }).filter((cs) => cs.some((c) => c > 0)),
    op: fc.constantFrom(...OPS),
    plain: fc.boolean(),
  })
  .chain((c) =>
    datasArb(c.dtype, size(c.shape), c.counts.reduce((a, b) => a + b, 0)).map((flat) => {
      const lists: Data[][] = [];
      let k = 0;
      for (const n of c.counts) lists.push(flat.slice(k, (k += n)));
      return { ...c, lists };
    }),
  );

test(`[${B}] property: MapOutput lists reduce locally, then across devices; MEAN counts every element`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.asyncProperty(listsCase, async ({ dtype, shape, op, lists, plain }) => {
      const entries = lists.map((list, i) => {
        const device = `/cpu:${i}`;
        const ts = list.map((d) => tensor(d, shape, { dtype, device }));
        // A one-element list may also be passed as the plain tensor: the same contribution.
        return [device, plain && ts.length === 1 ? ts[0] : new MapOutput(ts)] as const;
      });
      const m = ops.reduceSync(op, new PerDevice(entries), '/cpu:0');
      checkDense(m, [canon('/cpu:0')], dtype, shape, reduceListsReference(dtype, op, lists), `${op} ${dtype} lists ${lists.map((l) => l.length)}`);
    }),
    { numRuns: RUNS },
  ));
});

// ---- IndexedSlices ---------------------------------------------------------------------------

const slicesCase = fc
  .record({
    dtype: fc.constantFrom(...DTYPES),
    rows: fc.integer({ min: 1, max: 5 }),
    width: fc.array(fc.integer({ min: 0, max: 3 }), { maxLength: 2 }),
    parts: fc.array(fc.record({ k: fc.integer({ min: 0, max: 4 }), int64: fc.boolean() }), { minLength: 1, maxLength: 5 }),
    op: fc.constantFrom<Op>('SUM', 'MEAN'),
    destDevices: fc.uniqueArray(fc.constantFrom(...POOL), { minLength: 1, maxLength: 3, selector: canon }),
  })
  .chain((c) =>
    fc.tuple(
      fc.tuple(...c.parts.map((p) => datasArb(c.dtype, p.k * size(c.width), 1).map((d) => d[0]))),
      fc.tuple(...c.parts.map((p) => fc.array(fc.integer({ min: 0, max: c.rows - 1 }), { minLength: p.k, maxLength: p.k }))),
    ).map(([values, indices]) => ({ ...c, values, indices })),
  );

test(`[${B}] property: reducing IndexedSlices concatenates rows (MEAN divides them); densify sums duplicates in order`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.asyncProperty(slicesCase, async ({ dtype, rows, width, parts, op, destDevices, values, indices }) => {
      const denseShape = [rows, ...width];
      const entries = parts.map((p, i) => {
        const device = `/cpu:${i}`;
        const idx = p.int64 ? tensor(BigInt64Array.from(indices[i].map(BigInt)), [p.k], { device }) : tensor(Int32Array.from(indices[i]), [p.k], { device });
        return [device, new IndexedSlices(tensor(values[i], [p.k, ...width], { dtype, device }), idx, denseShape)] as const;
      });
      const m = await ops.reduce(op, new PerDevice(entries), destDevices);
      const want = destDevices.map(canon);
      const n = parts.length;
      const sum = n === 1 ? values[0] : concatData(dtype, values);
      const expValues = op === 'MEAN' ? divideReference(dtype, sum, n) : sum;
      const expIndices = indices.flat();
      const expIndexDtype = n === 1 ? (parts[0].int64 ? 'int64' : 'int32') : parts.every((p) => !p.int64) ? 'int32' : 'int64';
      const what = `${op} ${dtype} ${n} part(s)`;
      if (JSON.stringify(m.devices) !== JSON.stringify(want)) throw new Error(`${what}: devices ${m.devices}`);
      for (const [d, v] of m) {
        if (!(v instanceof IndexedSlices)) throw new Error(`${what}: not IndexedSlices on ${d}`);
        if (!(v.values instanceof Tensor && v.indices instanceof Tensor)) throw new Error(`${what}: GPU tensors from host inputs on ${d}`);
        if (v.device !== d || JSON.stringify(v.denseShape) !== JSON.stringify(denseShape)) throw new Error(`${what}: device/dense shape`);
        const k = expIndices.length;
        if (JSON.stringify(v.values.shape) !== JSON.stringify([k, ...width])) throw new Error(`${what}: values shape ${v.values.shape}`);
        if (v.values.dtype !== dtype || v.indices.dtype !== expIndexDtype) throw new Error(`${what}: dtypes ${v.values.dtype}/${v.indices.dtype}`);
        if (JSON.stringify(Array.from(v.indices.data as ArrayLike<number | bigint>, Number)) !== JSON.stringify(expIndices)) throw new Error(`${what}: indices`);
        const i = firstDifference(dtype, v.values.data as Data, expValues);
        if (i >= 0) throw new Error(`${what}: value ${i}: got ${show(dtype, (v.values.data as Data)[i])}, expected ${show(dtype, expValues[i])}`);
        const dense = v.densify();
        const expDense = densifyReference(dtype, expValues, expIndices, denseShape);
        const j = firstDifference(dtype, dense.data as Data, expDense);
        if (j >= 0) throw new Error(`${what}: dense ${j}: got ${show(dtype, (dense.data as Data)[j])}, expected ${show(dtype, expDense[j])}`);
      }
    }),
    { numRuns: RUNS },
  ));
});

// ---- broadcast -------------------------------------------------------------------------------

test(`[${B}] property: broadcast puts a byte-exact copy on every destination device`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.asyncProperty(
      fc.record({ dtype: fc.constantFrom(...DTYPES), shape: shapeArb, dest: destArb, sync: fc.boolean() }).chain((c) =>
        datasArb(c.dtype, size(c.shape), 1).map((d) => ({ ...c, data: d[0] })),
      ),
      async ({ dtype, shape, dest, sync, data }) => {
        const value = tensor(data, shape, { dtype, device: '/cpu:5' });
        const [destinations, want] = makeDest(dest, new PerDevice({ '/cpu:5': value }));
        const copy = bytesCopy(data);
        const m = sync ? ops.broadcastSync(value, destinations) : await ops.broadcast(value, destinations);
        if (JSON.stringify(m.devices) !== JSON.stringify(want)) throw new Error(`devices ${m.devices} != ${want}`);
        for (const v of m.values) {
          const x = v as Tensor;
          if (x.dtype !== dtype || JSON.stringify(x.shape) !== JSON.stringify(shape)) throw new Error('dtype/shape');
          if (!sameBytes(x.data, copy)) throw new Error('bytes differ');
        }
        if (!sameBytes(data, copy)) throw new Error('input changed');
      },
    ),
    { numRuns: RUNS },
  ));
});

// ---- the reference's own half-precision conversions ----------------------------------------

/** An independent float32-bits → float16-bits encoder (integer arithmetic only). */
function f16FromF32Bits(x: number): number {
  const sign = (x >>> 16) & 0x8000;
  const e = (x >>> 23) & 0xff;
  let m = x & 0x7fffff;
  if (e === 0xff) return sign | 0x7c00 | (m ? 0x200 : 0);
  const E = e - 127 + 15;
  if (E >= 31) return sign | 0x7c00;
  if (E <= 0) {
    if (e === 0) return sign; // float32 subnormals are far below half's smallest subnormal
    m |= 0x800000;
    const shift = 14 - E;
    if (shift > 24) return sign;
    let k = m >>> shift;
    const rem = m & ((1 << shift) - 1);
    const half = 1 << (shift - 1);
    if (rem > half || (rem === half && k & 1)) k++;
    return sign | k;
  }
  let k = (E << 10) | (m >>> 13);
  const rem = m & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && k & 1)) k++;
  return sign | k;
}

/** An independent float32-bits → bfloat16-bits encoder (the usual rounding-bias trick). */
function bf16FromF32Bits(x: number): number {
  if ((x & 0x7fffffff) > 0x7f800000) return ((x >>> 16) & 0x8000) | 0x7fc0;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}

const isNaNHalf = (b: number, expMask: number) => (b & expMask) === expMask && (b & ~expMask & 0x7fff) !== 0;

test(`[${B}] reference: half-precision encoders on known values`, (t) => {
  const f16: [number, number][] = [
    [1, 0x3c00], [-2, 0xc000], [65504, 0x7bff], [65519, 0x7bff], [65520, 0x7c00], [1e6, 0x7c00], [-Infinity, 0xfc00],
    [2 ** -24, 0x0001], [2 ** -25, 0x0000], [3 * 2 ** -25, 0x0002], [2 ** -14, 0x0400], [2 ** -14 - 2 ** -25, 0x0400],
    [-0, 0x8000], [1 + 2 ** -11, 0x3c00], [1 + 3 * 2 ** -11, 0x3c02], [1 + 2 ** -11 + 2 ** -20, 0x3c01], [0.1, 0x2e66],
  ];
  for (const [x, bits] of f16) {
    t.is(encodeF16(x), bits, `encodeF16(${x})`);
    if (bits !== 0x7c00 || x === Infinity) t.true(Object.is(decodeF16(bits), x) || encodeF16(decodeF16(bits)) === bits);
  }
  t.is(encodeF16(NaN), 0x7e00);
  t.true(Number.isNaN(decodeF16(0x7e00)) && Number.isNaN(decodeF16(0xfc01)));
  t.is(decodeF16(0x0001), 2 ** -24);
  t.is(decodeF16(0x7bff), 65504);
  const bf16: [number, number][] = [
    [1, 0x3f80], [-2, 0xc000], [3.3895313892515355e38, 0x7f7f], [3.4028234663852886e38, 0x7f80], [2 ** -133, 0x0001],
    [2 ** -134, 0x0000], [2 ** -126, 0x0080], [1 + 2 ** -8, 0x3f80], [1 + 3 * 2 ** -8, 0x3f82], [-0, 0x8000], [0.1, 0x3dcd],
  ];
  for (const [x, bits] of bf16) t.is(encodeBF16(x), bits, `encodeBF16(${x})`);
  t.is(encodeBF16(NaN), 0x7fc0);
  t.is(decodeBF16(0x3f80), 1);
  t.true(Number.isNaN(decodeBF16(0xffc1)));
});

test(`[${B}] property: reference encoders agree with independent bit-level encoders and with the core on float32 values`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.property(fc.oneof(fc.float(), fc.float({ min: -70000, max: 70000 }), fc.float({ min: Math.fround(-1e-4), max: Math.fround(1e-4) })), (x) => {
      const bits = f32Bits(x);
      const h = encodeF16(x);
      const b = encodeBF16(x);
      if (!(h === f16FromF32Bits(bits) || (isNaNHalf(h, 0x7c00) && isNaNHalf(f16FromF32Bits(bits), 0x7c00)))) throw new Error(`f16 ${x}`);
      if (!(b === bf16FromF32Bits(bits) || (isNaNHalf(b, 0x7f80) && isNaNHalf(bf16FromF32Bits(bits), 0x7f80)))) throw new Error(`bf16 ${x}`);
      // The core rounds numbers to half types when a tensor is made from them, and decodes them back.
      const th = tensor([x], undefined, { dtype: 'float16' });
      const tb = tensor([x], undefined, { dtype: 'bfloat16' });
      if (firstDifference('float16', th.data as Data, Uint16Array.of(h)) >= 0) throw new Error(`core f16 of ${x}: ${show('float16', th.data[0] as number)} != ${show('float16', h)}`);
      if (firstDifference('bfloat16', tb.data as Data, Uint16Array.of(b)) >= 0) throw new Error(`core bf16 of ${x}: ${show('bfloat16', tb.data[0] as number)}`);
      const back = [th.toArray()[0] as number, tb.toArray()[0] as number];
      if (!Object.is(back[0], decodeF16(h)) || !Object.is(back[1], decodeBF16(b))) throw new Error(`toArray of ${x}: ${back}`);
    }),
    { numRuns: RUNS * 3 },
  ));
});

// Known core bug (reported, not fixed here): making a half tensor from a number that is not a float32
// value rounds wrongly when it is just above a tie. half's f16::from_f64 / bf16::from_f64 (used by
// crossdev-core's kernels/cast.rs `Numeric::from_f64`) drop the low 32 bits of the f64 mantissa
// before rounding, so the sticky bits are lost and "tie + tiny" rounds to even instead of up.
test(`[${B}] tensor() rounds doubles just above a half-way point up (correct rounding from float64)`, (t) => {
  const f16x = 1 + 2 ** -11 + 2 ** -40; // just above the tie between 0x3c00 and 0x3c01
  const bf16x = 1 + 2 ** -8 + 2 ** -40; // just above the tie between 0x3f80 and 0x3f81
  t.is(encodeF16(f16x), 0x3c01);
  t.is(encodeBF16(bf16x), 0x3f81);
  t.is(tensor([f16x], undefined, { dtype: 'float16' }).data[0], 0x3c01);
  t.is(tensor([bf16x], undefined, { dtype: 'bfloat16' }).data[0], 0x3f81);
});

// ---- large tensors, concurrency, views ----------------------------------------------------

/** Deterministic pseudo-random elements of `dtype` (NaNs and infinities included for floats). */
function pseudoRandom(dtype: DType, n: number, seed: number): Data {
  let s = seed >>> 0 || 1;
  const next = () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return s | 0;
  };
  const out = makeData(dtype, n);
  for (let i = 0; i < n; i++) {
    const r = next();
    switch (dtype) {
      case 'float32':
      case 'float64':
        (out as any)[i] = i % 997 === 0 ? [NaN, Infinity, -Infinity, -0][(i / 997) % 4] : r / 65536;
        break;
      case 'float16':
      case 'bfloat16':
        (out as any)[i] = r & 0xffff;
        break;
      case 'int32':
        (out as any)[i] = r;
        break;
      case 'int64':
        (out as any)[i] = BigInt(r) * BigInt(next()) * 7n;
        break;
    }
  }
  return out;
}

test(`[${B}] large tensors (multi-block, multi-threaded kernels) match the reference for every dtype and op`, async (t) => {
  // 2^17 + 2^16 + 123 elements: several parallel chunks of 2^16 and a ragged tail.
  const n = (1 << 17) + (1 << 16) + 123;
  for (const dtype of DTYPES) {
    const datas = [1, 2, 3].map((seed) => pseudoRandom(dtype, n, seed * 7919 + DTYPES.indexOf(dtype)));
    const value = new PerDevice(datas.map((d, i) => [`/cpu:${i}`, tensor(d, [n], { dtype, device: `/cpu:${i}` })] as const));
    for (const op of OPS) {
      const m = await ops.reduce(op, value, ['/cpu:0', '/cpu:2']);
      const x = m.values[1] as Tensor;
      const i = firstDifference(dtype, x.data as Data, reduceReference(dtype, op, datas));
      t.is(i, -1, `${dtype} ${op}: first difference at ${i}`);
    }
    const b = ops.broadcastSync(value.values[0] as Tensor, ['/cpu:1', '/cpu:3']);
    t.true(b.values.every((v) => sameBytes((v as Tensor).data, bytesCopy(datas[0]))), `${dtype} broadcast`);
  }
});

test(`[${B}] many concurrent reductions each get their own result`, async (t) => {
  const jobs = Array.from({ length: 64 }, (_, j) => {
    const dtype = DTYPES[j % DTYPES.length];
    const n = 1 + ((j * 37) % 3000);
    const datas = [0, 1, 2, 3].slice(0, 1 + (j % 4)).map((k) => pseudoRandom(dtype, n, j * 31 + k + 1));
    const op = OPS[j % OPS.length];
    const value = new PerDevice(datas.map((d, i) => [`/cpu:${i}`, tensor(d, [n], { dtype, device: `/cpu:${i}` })] as const));
    return { dtype, op, datas, promise: ops.reduce(op, value, `/cpu:${j % 8}`) };
  });
  const results = await Promise.all(jobs.map((j) => j.promise));
  results.forEach((m, j) => {
    const { dtype, op, datas } = jobs[j];
    t.deepEqual(m.devices, [canon(`/cpu:${j % 8}`)]);
    t.is(firstDifference(dtype, (m.values[0] as Tensor).data as Data, reduceReference(dtype, op, datas)), -1, `job ${j}: ${op} ${dtype}`);
  });
});

test(`[${B}] TypedArray views at an offset into a larger buffer are read in place, and the rest is untouched`, async (t) => {
  for (const dtype of DTYPES) {
    const whole = pseudoRandom(dtype, 64, 99);
    const before = bytesCopy(whole);
    const a = whole.subarray(8, 20) as Data;
    const b = whole.subarray(30, 42) as Data;
    const value = new PerDevice({ '/cpu:0': tensor(a, [3, 4], { dtype }), '/cpu:1': tensor(b, [3, 4], { dtype, device: '/cpu:1' }) });
    for (const op of OPS) {
      const m = await ops.reduce(op, value, ['/cpu:1', '/cpu:0']);
      for (const v of m.values) t.is(firstDifference(dtype, (v as Tensor).data as Data, reduceReference(dtype, op, [a, b])), -1, `${dtype} ${op}`);
    }
    t.true(sameBytes(whole, before), `${dtype}: buffer untouched`);
  }
});
