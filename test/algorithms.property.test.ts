/**
 * Property tests of every all-reduce plan builder (SPEC §1.3, §2, §2.7) against the sequential
 * reference of test/reference.ts: ring, recursive halving-doubling, shuffle, hierarchical copy,
 * reduce-to-one, NCCL's ring, and the two-level builders over devices of 2 workers, × every reduce
 * op × every dtype × 1–8 devices × 0 and more elements (lengths that do not divide included).
 *
 * An all-reduce combines contributions in its own order, so:
 * - integer dtypes (wrapping SUM/PRODUCT, truncating MEAN) must equal the reference bit for bit;
 * - MAX/MIN must equal it exactly (as values: +0 and -0 may swap with the order, NaN wins);
 * - float SUM/MEAN/PRODUCT must lie within a reordered-rounding bound, computed in float64:
 *   |got − want| ≤ 2(n+3)·(u·Σ|x| + tiny) for SUM (÷n, plus the divide's rounding, for MEAN) and
 *   2(n+3)·u·|Πx| + 2·tiny for PRODUCT, where u is the dtype's unit roundoff (half types store
 *   partial results in the half type between steps) and tiny its smallest subnormal;
 * - NaN anywhere gives NaN; +Inf with -Inf gives NaN for SUM/MEAN; one infinity survives.
 * Builders that must refuse a case are checked for their exact message instead (recursive
 * halving-doubling: "num_devices must be a power of 2", lengths not divisible by the device or
 * worker count; a ring needs 2 devices and no more subchunks than devices).
 */
import test from 'ava';
import fc from 'fast-check';
import { canonicalizeDevice, CrossDeviceError, PerDevice, Tensor, tensor, utils, type Plan } from '../ts/index.js';
import { B } from './helpers.js';
import { decodeBF16, decodeF16, DTYPES, encodeBF16, encodeF16, firstDifference, makeData, OPS, reduceReference, show, type Data, type DType, type Op } from './reference.js';

const RUNS = 100;

const cpus = (n: number): string[] => Array.from({ length: n }, (_, i) => `/cpu:${i}`);
const workerPrefix = (w: number) => `/job:worker/replica:0/task:${w}`;
const GATHER_POOL = ['/cpu:0', '/cpu:3', '/cpu:7', '/job:ps/task:0/device:CPU:0', '/job:ps/task:1/device:CPU:0', '/gpu:0'];
const isFloat = (d: DType) => d === 'float32' || d === 'float64' || d === 'float16' || d === 'bfloat16';

/** Unit roundoff and smallest positive subnormal of each float dtype. */
const ROUNDOFF: Record<string, { u: number; tiny: number }> = {
  float64: { u: 2 ** -53, tiny: 2 ** -1074 },
  float32: { u: 2 ** -24, tiny: 2 ** -149 },
  float16: { u: 2 ** -11, tiny: 2 ** -24 },
  bfloat16: { u: 2 ** -8, tiny: 2 ** -133 },
};

/** The number an element stands for (half types are stored as bits). */
function valueOf(dtype: DType, x: number | bigint): number {
  if (dtype === 'float16') return decodeF16(x as number);
  if (dtype === 'bfloat16') return decodeBF16(x as number);
  return Number(x);
}

/** A float in the dtype's storage form. */
function store(dtype: DType, x: number): number {
  if (dtype === 'float16') return encodeF16(x);
  if (dtype === 'bfloat16') return encodeBF16(x);
  if (dtype === 'float32') return Math.fround(x);
  return x;
}

// ---- inputs ----------------------------------------------------------------------------------

const F32_SPECIALS = [NaN, Infinity, -Infinity, 0, -0, 3.4028234663852886e38, -3.4028234663852886e38, 1.401298464324817e-45, 1.1754943508222875e-38];
const HALF_SPECIAL_BITS = [0x7c00, 0xfc00, 0x7e00, 0x0000, 0x8000, 0x0001, 0x8001, 0x03ff, 0x0400, 0x7bff, 0xfbff, 0x3c00];
const BF16_SPECIAL_BITS = [0x7f80, 0xff80, 0x7fc0, 0x0000, 0x8000, 0x0001, 0x8001, 0x007f, 0x0080, 0x7f7f, 0xff7f, 0x3f80];
const quarters = fc.integer({ min: -40, max: 40 }).map((x) => x / 4);

/** Largest magnitude of SUM/MEAN inputs: the sum of 8 stays finite in every order. */
const SUM_RANGE: Record<string, number> = { float64: 1e12, float32: 1e6, float16: 1000, bfloat16: 1e4 };

/**
 * Elements of `dtype` for `op`: integers over their whole range; floats over everything
 * (specials included) for MAX/MIN, bounded for SUM/MEAN, magnitudes in [0.5, 2] or 0 for PRODUCT
 * (no overflow or underflow in any order).
 */
function elementArb(dtype: DType, op: Op): fc.Arbitrary<number | bigint> {
  switch (dtype) {
    case 'int32':
      return fc.oneof(fc.integer({ min: -(2 ** 31), max: 2 ** 31 - 1 }), fc.integer({ min: -10, max: 10 }), fc.constantFrom(-(2 ** 31), 2 ** 31 - 1));
    case 'int64':
      return fc.oneof(fc.bigInt({ min: -(2n ** 63n), max: 2n ** 63n - 1n }), fc.bigInt({ min: -10n, max: 10n }), fc.constantFrom(-(2n ** 63n), 2n ** 63n - 1n));
  }
  if (op === 'MAX' || op === 'MIN') {
    switch (dtype) {
      case 'float32':
        return fc.oneof(fc.float(), quarters, fc.constantFrom(...F32_SPECIALS));
      case 'float64':
        return fc.oneof(fc.double(), quarters, fc.constantFrom(NaN, Infinity, -Infinity, 0, -0, Number.MAX_VALUE, Number.MIN_VALUE));
      case 'float16':
        return fc.oneof(fc.integer({ min: 0, max: 0xffff }), quarters.map(encodeF16), fc.constantFrom(...HALF_SPECIAL_BITS));
      case 'bfloat16':
        return fc.oneof(fc.integer({ min: 0, max: 0xffff }), quarters.map(encodeBF16), fc.constantFrom(...BF16_SPECIAL_BITS));
    }
  }
  if (op === 'PRODUCT') {
    const magnitude = fc.double({ min: 0.5, max: 2, noNaN: true });
    return fc.oneof(
      { arbitrary: fc.tuple(fc.boolean(), magnitude).map(([neg, m]) => store(dtype, neg ? -m : m)), weight: 8 },
      { arbitrary: fc.constantFrom(store(dtype, 0), store(dtype, 1), store(dtype, -1)), weight: 1 },
    );
  }
  const r = SUM_RANGE[dtype];
  return fc.oneof(fc.double({ min: -r, max: r, noNaN: true }).map((x) => store(dtype, x)), quarters.map((x) => store(dtype, x)), fc.constant(store(dtype, 0)));
}

function toData(dtype: DType, xs: readonly (number | bigint)[]): Data {
  const out = makeData(dtype, xs.length);
  xs.forEach((x, i) => ((out as any)[i] = x));
  return out;
}

const datasArb = (dtype: DType, op: Op, n: number, len: number): fc.Arbitrary<Data[]> =>
  fc.array(fc.array(elementArb(dtype, op), { minLength: len, maxLength: len }).map((xs) => toData(dtype, xs)), { minLength: n, maxLength: n });

// ---- algorithms --------------------------------------------------------------------------------

interface Case {
  op: Op;
  dtype: DType;
  n: number;
  len: number;
  /** Input layout of the 1-D data: [len], [len, 1] or [1, len]. */
  layout: number;
  /** For the two-level builders: the worker (0/1) of each device. */
  workerOf: number[];
  /** Gather devices for shuffle and nccl/pscpu. */
  gather: string[];
  /** Second-level gather devices of pscpu/pscpu (1 or 2, at most the workers). */
  second: number;
  /** Pack index of hierarchical copy. */
  index: number;
  /** Ring subchunks. */
  subchunks: number;
}

/** Devices of the two workers; device k of a worker is its CPU k. */
function workerDevices(workerOf: readonly number[]): string[] {
  const seen = [0, 0];
  return workerOf.map((w) => `${workerPrefix(w)}/device:CPU:${seen[w]++}`);
}

/** Each worker's CPU:0, in order of first appearance (the order `_split_by_task` finds workers). */
function workerGathers(workerOf: readonly number[]): string[] {
  return [...new Set(workerOf)].map((w) => `${workerPrefix(w)}/cpu:0`);
}

interface Algorithm {
  name: string;
  twoLevel: boolean;
  inputs: (c: Case) => string[];
  build: (c: Case) => Plan;
  /** The message building must fail with, or null. */
  error: (c: Case) => string | null;
}

const isPow2 = (n: number) => (n & (n - 1)) === 0;
const rechdError = (n: number, len: number) =>
  !isPow2(n) ? 'num_devices must be a power of 2' : len % n !== 0 ? `recursive halving-doubling over ${n} devices needs a length divisible by ${n}, got ${len}` : null;

const ALGORITHMS: Algorithm[] = [
  {
    name: 'buildRingAllReduce',
    twoLevel: false,
    inputs: (c) => cpus(c.n),
    build: (c) => utils.buildRingAllReduce({ devices: cpus(c.n), elements: c.len, dtype: c.dtype, numSubchunks: c.subchunks }),
    error: (c) => (c.n < 2 ? 'input_tensors must be length 2 or longer' : c.subchunks > c.n ? `num_subchunks ${c.subchunks} must be <= num_gpus ${c.n}` : null),
  },
  {
    name: 'buildRecursiveHdAllReduce',
    twoLevel: false,
    inputs: (c) => cpus(c.n),
    build: (c) => utils.buildRecursiveHdAllReduce({ devices: cpus(c.n), elements: c.len, dtype: c.dtype }),
    error: (c) => rechdError(c.n, c.len),
  },
  {
    name: 'buildShuffleAllReduce',
    twoLevel: false,
    inputs: (c) => cpus(c.n),
    build: (c) => utils.buildShuffleAllReduce({ devices: cpus(c.n), elements: c.len, dtype: c.dtype, gatherDevices: c.gather }),
    error: () => null,
  },
  {
    name: 'buildHierarchicalCopy',
    twoLevel: false,
    inputs: (c) => cpus(c.n),
    build: (c) => utils.buildHierarchicalCopy({ devices: cpus(c.n), elements: c.len, dtype: c.dtype, index: c.index }),
    error: () => null,
  },
  {
    name: 'buildReduceToOne',
    twoLevel: false,
    inputs: (c) => cpus(c.n),
    build: (c) => utils.buildReduceToOne({ devices: cpus(c.n), elements: c.len, dtype: c.dtype }),
    error: () => null,
  },
  {
    name: 'buildNcclAllReduce',
    twoLevel: false,
    inputs: (c) => cpus(c.n),
    build: (c) => utils.buildNcclAllReduce({ devices: cpus(c.n), elements: c.len, dtype: c.dtype }),
    error: () => null,
  },
  {
    name: 'buildNcclThenRing',
    twoLevel: true,
    inputs: (c) => workerDevices(c.workerOf),
    build: (c) => utils.buildNcclThenRing({ devices: workerDevices(c.workerOf), elements: c.len, dtype: c.dtype }),
    error: () => null,
  },
  {
    name: 'buildNcclThenRecursiveHd',
    twoLevel: true,
    inputs: (c) => workerDevices(c.workerOf),
    build: (c) => utils.buildNcclThenRecursiveHd({ devices: workerDevices(c.workerOf), elements: c.len, dtype: c.dtype }),
    error: (c) => rechdError(new Set(c.workerOf).size, c.len),
  },
  {
    name: 'buildNcclThenShuffle',
    twoLevel: true,
    inputs: (c) => workerDevices(c.workerOf),
    build: (c) => utils.buildNcclThenShuffle({ devices: workerDevices(c.workerOf), elements: c.len, dtype: c.dtype, gatherDevices: c.gather }),
    error: () => null,
  },
  {
    name: 'buildShuffleThenShuffle',
    twoLevel: true,
    inputs: (c) => workerDevices(c.workerOf),
    build: (c) => {
      const gather = workerGathers(c.workerOf);
      return utils.buildShuffleThenShuffle({ devices: workerDevices(c.workerOf), elements: c.len, dtype: c.dtype, gatherDevices: gather, secondGatherDevices: gather.slice(0, c.second) });
    },
    error: () => null,
  },
  {
    name: 'buildShuffleThenRing',
    twoLevel: true,
    inputs: (c) => workerDevices(c.workerOf),
    build: (c) => utils.buildShuffleThenRing({ devices: workerDevices(c.workerOf), elements: c.len, dtype: c.dtype, gatherDevices: workerGathers(c.workerOf) }),
    error: () => null,
  },
];

// ---- cases -----------------------------------------------------------------------------------

const lenArb = fc.oneof(fc.constant(0), fc.integer({ min: 1, max: 12 }), fc.integer({ min: 13, max: 64 }));

function caseArb(alg: Algorithm): fc.Arbitrary<Case> {
  return fc
    .record({
      op: fc.constantFrom(...OPS),
      dtype: fc.constantFrom(...DTYPES),
      // Recursive halving-doubling mostly on powers of two, so that it runs more often than it refuses.
      n: alg.name === 'buildRecursiveHdAllReduce' ? fc.oneof(fc.constantFrom(1, 2, 4, 8), fc.integer({ min: 1, max: 8 })) : fc.integer({ min: 1, max: 8 }),
      len: lenArb,
      layout: fc.integer({ min: 0, max: 2 }),
      workers: fc.array(fc.integer({ min: 0, max: 1 }), { minLength: 8, maxLength: 8 }),
      gather: fc.uniqueArray(fc.constantFrom(...GATHER_POOL), { minLength: 1, maxLength: 3 }),
      second: fc.integer({ min: 1, max: 2 }),
      index: fc.integer({ min: 0, max: 9 }),
      subchunks: fc.integer({ min: 1, max: 3 }),
    })
    .map(({ workers, ...c }) => {
      const workerOf = workers.slice(0, c.n);
      // Devices on 2 workers whenever there are at least 2 devices.
      if (c.n >= 2 && new Set(workerOf).size === 1) workerOf[c.n - 1] = 1 - workerOf[0];
      const len = alg.name === 'buildRecursiveHdAllReduce' && isPow2(c.n) && c.len % c.n !== 0 && c.len % 3 !== 0 ? c.len - (c.len % c.n) : c.len;
      return { ...c, len, workerOf, second: Math.min(c.second, new Set(workerOf).size) };
    });
}

const shapeOf = (c: Case) => [[c.len], [c.len, 1], [1, c.len]][c.layout];

// ---- comparison ------------------------------------------------------------------------------

function fail(what: string, msg: string): never {
  throw new Error(`${what}: ${msg}`);
}

/** Checks one output against the reference as the file's header describes. */
function checkOutput(c: Case, datas: readonly Data[], got: Data, want: Data, what: string): void {
  const { dtype, op, n } = c;
  if (got.length !== want.length) fail(what, `length ${got.length} != ${want.length}`);
  if (!isFloat(dtype)) {
    const i = firstDifference(dtype, got, want);
    if (i >= 0) fail(what, `element ${i}: got ${show(dtype, got[i])}, want ${show(dtype, want[i])}`);
    return;
  }
  const { u, tiny } = ROUNDOFF[dtype];
  for (let i = 0; i < got.length; i++) {
    const g = valueOf(dtype, got[i]);
    const w = valueOf(dtype, want[i]);
    if (Number.isNaN(w) || Number.isNaN(g)) {
      if (Number.isNaN(w) !== Number.isNaN(g)) fail(what, `element ${i}: got ${show(dtype, got[i])}, want ${show(dtype, want[i])}`);
      continue;
    }
    if (op === 'MAX' || op === 'MIN' || !Number.isFinite(w) || !Number.isFinite(g)) {
      // Exact (as values: +0 equals -0); infinities only ever equal themselves.
      if (g !== w) fail(what, `element ${i}: got ${show(dtype, got[i])}, want exactly ${show(dtype, want[i])}`);
      continue;
    }
    const xs = datas.map((d) => valueOf(dtype, d[i]));
    let tol: number;
    if (op === 'PRODUCT') {
      tol = 2 * (n + 3) * u * Math.abs(xs.reduce((a, b) => a * b, 1)) + 2 * tiny;
    } else {
      const absSum = xs.reduce((a, b) => a + Math.abs(b), 0);
      const sumTol = 2 * (n + 3) * (u * absSum + tiny);
      tol = op === 'SUM' ? sumTol : sumTol / n + 2 * (u * Math.abs(w) + tiny);
    }
    if (!(Math.abs(g - w) <= tol)) fail(what, `element ${i}: got ${show(dtype, got[i])}, want ${show(dtype, want[i])} ± ${tol} (inputs ${xs.join(', ')})`);
  }
}

/** Runs the plan of `c` on `datas` (Promise and Sync forms) and checks every device's output. */
async function runAndCheck(alg: Algorithm, c: Case, datas: readonly Data[], check: (got: Data, what: string) => void): Promise<void> {
  const what = `${alg.name} ${c.op} ${c.dtype} n=${c.n} len=${c.len}`;
  const expected = alg.error(c);
  if (expected !== null) {
    let thrown: unknown;
    try {
      alg.build(c);
    } catch (e) {
      thrown = e;
    }
    if (!(thrown instanceof CrossDeviceError)) fail(what, `expected the error "${expected}", got ${thrown === undefined ? 'a plan' : String(thrown)}`);
    if (thrown.message !== expected) fail(what, `error "${thrown.message}", expected "${expected}"`);
    return;
  }
  const plan = alg.build(c);
  const devices = alg.inputs(c);
  const canonical = devices.map((d) => canonicalizeDevice(d));
  if (plan.elements !== c.len || plan.dtype !== c.dtype) fail(what, `plan of ${plan.elements} ${plan.dtype}`);
  if (JSON.stringify(plan.devices.slice(0, c.n)) !== JSON.stringify(canonical)) fail(what, `plan devices ${plan.devices}`);
  const shape = shapeOf(c);
  const pd = new PerDevice(devices.map((d, i) => [d, tensor(datas[i], shape, { dtype: c.dtype, device: d })] as const));
  for (const m of [await plan.run(pd, c.op), plan.runSync(pd, c.op)]) {
    if (JSON.stringify(m.devices) !== JSON.stringify(canonical)) fail(what, `result devices ${m.devices}`);
    for (const [d, v] of m) {
      if (!(v instanceof Tensor)) fail(what, `not a tensor on ${d}`);
      if (v.dtype !== c.dtype || v.device !== d || JSON.stringify(v.shape) !== JSON.stringify(shape)) fail(what, `on ${d}: ${v}`);
      check(v.data as Data, `${what} on ${d}`);
    }
  }
}

// ---- properties ------------------------------------------------------------------------------

for (const alg of ALGORITHMS) {
  test(`[${B}] property: ${alg.name} equals the reference (integers bitwise, MAX/MIN exactly, floats within the reordering bound)${alg.twoLevel ? ', devices on 2 workers' : ''}`, async (t) => {
    await t.notThrowsAsync(async () => fc.assert(
      fc.asyncProperty(
        caseArb(alg).chain((c) => datasArb(c.dtype, c.op, c.n, c.len).map((datas) => ({ c, datas }))),
        async ({ c, datas }) => {
          const want = reduceReference(c.dtype, c.op, datas);
          await runAndCheck(alg, c, datas, (got, what) => checkOutput(c, datas, got, want, what));
        },
      ),
      { numRuns: RUNS },
    ));
  });
}

const FLOAT_DTYPES = ['float32', 'float64', 'float16', 'bfloat16'] as const;

/** A case with NaN/Inf put in: the kind, and the devices and element they are put at. */
const specialCase = fc
  .integer({ min: 0, max: ALGORITHMS.length - 1 })
  .chain((k) =>
    fc.record({
      algorithm: fc.constant(ALGORITHMS[k]),
      c: caseArb(ALGORITHMS[k]),
      dtype: fc.constantFrom(...FLOAT_DTYPES),
      kind: fc.constantFrom('nan', 'inf-pair', 'one-inf'),
      at: fc.nat(),
      d1: fc.nat(),
      d2: fc.nat(),
      negative: fc.boolean(),
    }),
  )
  .filter(({ algorithm, c, kind }) => c.len > 0 && algorithm.error(c) === null && (kind !== 'inf-pair' || c.n >= 2))
  .chain((s) => {
    // NaN: any op. +Inf with -Inf: SUM or MEAN. One infinity: SUM, MEAN, MAX or MIN.
    const op: Op = s.kind === 'nan' ? s.c.op : s.kind === 'inf-pair' ? (s.c.op === 'MEAN' ? 'MEAN' : 'SUM') : s.c.op === 'PRODUCT' ? 'SUM' : s.c.op;
    const c: Case = { ...s.c, dtype: s.dtype, op };
    // Finite, bounded values around the special ones.
    return datasArb(c.dtype, op === 'MAX' || op === 'MIN' ? 'SUM' : op, c.n, c.len).map((datas) => ({ ...s, c, datas }));
  });

test(`[${B}] property: every algorithm propagates NaN, +Inf with -Inf gives NaN for SUM/MEAN, one infinity survives`, async (t) => {
  await t.notThrowsAsync(async () => fc.assert(
    fc.asyncProperty(specialCase, async ({ algorithm, c, datas, kind, at, d1, d2, negative }) => {
      const i = at % c.len;
      const a = d1 % c.n;
      const b = (a + 1 + (d2 % Math.max(1, c.n - 1))) % c.n;
      const inputs = datas.map((d) => d.slice() as Data);
      const inf = store(c.dtype, negative ? -Infinity : Infinity);
      // What element i must be: NaN, an infinity, or (MAX of -Inf, MIN of +Inf) just the reference.
      let expect: 'nan' | number | null;
      if (kind === 'nan') {
        (inputs[a] as any)[i] = store(c.dtype, NaN);
        expect = 'nan';
      } else if (kind === 'inf-pair') {
        (inputs[a] as any)[i] = store(c.dtype, Infinity);
        (inputs[b] as any)[i] = store(c.dtype, -Infinity);
        expect = 'nan';
      } else {
        (inputs[a] as any)[i] = inf;
        expect = (c.op === 'MAX' && negative) || (c.op === 'MIN' && !negative) ? null : negative ? -Infinity : Infinity;
      }
      const want = reduceReference(c.dtype, c.op, inputs);
      await runAndCheck(algorithm, c, inputs, (got, what) => {
        const g = valueOf(c.dtype, got[i]);
        if (expect === 'nan' && !Number.isNaN(g)) fail(what, `${kind} at element ${i}: got ${show(c.dtype, got[i])}, want NaN`);
        if (typeof expect === 'number' && g !== expect) fail(what, `${kind} at element ${i}: got ${show(c.dtype, got[i])}, want ${expect}`);
        // Every element, the special one included, as in the main property.
        checkOutput(c, inputs, got, want, what);
      });
    }),
    { numRuns: 4 * RUNS },
  ));
});
