/**
 * A slow, obviously right reference of what the core computes, in plain TypeScript.
 *
 * Semantics reproduced exactly (crossdev-core's `kernels/reduce_n.rs` and `kernels/cast.rs`):
 * - contributions combine left to right in device order: ((x0 ⊕ x1) ⊕ x2) ⊕ …;
 * - MEAN is SUM, then a divide by the number of contributions;
 * - float32 arithmetic is emulated with Math.fround after every operation;
 * - float16/bfloat16 are decoded to float32 values, accumulated in float32 and rounded back to the
 *   half type once, at the end, with round-to-nearest-even;
 * - int32 and int64 wrap (two's complement); MEAN truncates toward zero;
 * - MAX(a, b) = (a > b || isNaN(a)) ? a : b and MIN(a, b) = (a < b || isNaN(a)) ? a : b (NaN wins).
 */

export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int32' | 'int64';
export type Op = 'SUM' | 'MEAN' | 'MAX' | 'MIN' | 'PRODUCT';
export type Data = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array;

export const DTYPES: readonly DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64'];
export const OPS: readonly Op[] = ['SUM', 'MEAN', 'MAX', 'MIN', 'PRODUCT'];
export const FLOAT_DTYPES: readonly DType[] = ['float32', 'float64', 'float16', 'bfloat16'];

// ---- IEEE helpers ---------------------------------------------------------------------------

/** 2^e as a number, exactly, for any e in [-1074, 1023]. */
function pow2(e: number): number {
  // Math.pow(2, e) is exact in V8, but build it from two factors so that no step underflows.
  if (e < -1000) return Math.pow(2, e + 200) * Math.pow(2, -200);
  return Math.pow(2, e);
}

/** floor(log2(a)) for a finite a > 0, exactly. */
function exponentOf(a: number): number {
  let e = Math.floor(Math.log2(a));
  while (pow2(e) > a) e--;
  while (pow2(e + 1) <= a) e++;
  return e;
}

/** q rounded to an integer, ties to even. q must be non-negative and exactly representable. */
function roundHalfEven(q: number): number {
  const f = Math.floor(q);
  const d = q - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

/**
 * The bits of the binary floating-point format with `mantBits` stored mantissa bits and exponent
 * bias `bias` (max biased exponent 2·bias+1 = Inf/NaN) nearest to `x`, ties to even. Works for any
 * double `x` (the rounding is done on the exact value, so there is no double rounding).
 */
function encodeBinary(x: number, mantBits: number, bias: number): number {
  const expMax = 2 * bias + 1; // all-ones exponent field
  const totalBits = 1 + Math.log2(expMax + 1) + mantBits;
  const signBit = 2 ** (totalBits - 1);
  const infBits = expMax * 2 ** mantBits;
  const sign = x < 0 || Object.is(x, -0) ? signBit : 0;
  if (Number.isNaN(x)) return infBits + 2 ** (mantBits - 1); // a quiet NaN (payloads are not compared)
  const a = Math.abs(x);
  if (a === Infinity) return sign + infBits;
  if (a === 0) return sign;
  const minNormalExp = 1 - bias;
  let e = exponentOf(a);
  let biased: number;
  let m: number;
  if (e < minNormalExp) {
    // Subnormal: a multiple of 2^(minNormalExp - mantBits).
    m = roundHalfEven(a / pow2(minNormalExp - mantBits));
    // m == 2^mantBits rounds up into the smallest normal, whose bits are exactly m.
    return sign + m;
  }
  m = roundHalfEven(a / pow2(e - mantBits)); // in [2^mantBits, 2^(mantBits+1)]
  if (m === 2 ** (mantBits + 1)) {
    m = 2 ** mantBits;
    e++;
  }
  biased = e + bias;
  if (biased >= expMax) return sign + infBits; // overflow
  return sign + biased * 2 ** mantBits + (m - 2 ** mantBits);
}

function decodeBinary(bits: number, mantBits: number, bias: number): number {
  const expMax = 2 * bias + 1;
  const totalBits = 1 + Math.log2(expMax + 1) + mantBits;
  const negative = bits >= 2 ** (totalBits - 1);
  const rest = negative ? bits - 2 ** (totalBits - 1) : bits;
  const exp = Math.floor(rest / 2 ** mantBits);
  const man = rest % 2 ** mantBits;
  let v: number;
  if (exp === 0) v = man * pow2(1 - bias - mantBits);
  else if (exp === expMax) v = man === 0 ? Infinity : NaN;
  else v = (2 ** mantBits + man) * pow2(exp - bias - mantBits);
  return negative ? -v : v;
}

/** float16 bits nearest to `x` (round to nearest, ties to even; overflow → ±Inf; NaN → 0x7E00). */
export function encodeF16(x: number): number {
  return encodeBinary(x, 10, 15);
}
/** The value of float16 bits. */
export function decodeF16(bits: number): number {
  return decodeBinary(bits, 10, 15);
}
/** bfloat16 bits nearest to `x` (round to nearest, ties to even; overflow → ±Inf; NaN → 0x7FC0). */
export function encodeBF16(x: number): number {
  return encodeBinary(x, 7, 127);
}
/** The value of bfloat16 bits. */
export function decodeBF16(bits: number): number {
  return decodeBinary(bits, 7, 127);
}
/** The float32 bits of `x` (x is rounded to float32 first). */
export function f32Bits(x: number): number {
  const f = new Float32Array([x]);
  return new Uint32Array(f.buffer)[0];
}

// ---- elementwise arithmetic -----------------------------------------------------------------

interface Arith<T> {
  add(a: T, b: T): T;
  mul(a: T, b: T): T;
  max(a: T, b: T): T;
  min(a: T, b: T): T;
  divCount(a: T, n: number): T;
}

const fmax = (a: number, b: number) => (a > b || Number.isNaN(a) ? a : b);
const fmin = (a: number, b: number) => (a < b || Number.isNaN(a) ? a : b);

const F64: Arith<number> = {
  add: (a, b) => a + b,
  mul: (a, b) => a * b,
  max: fmax,
  min: fmin,
  divCount: (a, n) => a / n,
};

const F32: Arith<number> = {
  add: (a, b) => Math.fround(a + b),
  mul: (a, b) => Math.fround(a * b),
  max: fmax,
  min: fmin,
  divCount: (a, n) => Math.fround(a / n),
};

const I32: Arith<number> = {
  add: (a, b) => (a + b) | 0,
  mul: (a, b) => Math.imul(a, b),
  max: (a, b) => (a > b ? a : b),
  min: (a, b) => (a < b ? a : b),
  divCount: (a, n) => Math.trunc(a / n) | 0,
};

const I64: Arith<bigint> = {
  add: (a, b) => BigInt.asIntN(64, a + b),
  mul: (a, b) => BigInt.asIntN(64, a * b),
  max: (a, b) => (a > b ? a : b),
  min: (a, b) => (a < b ? a : b),
  divCount: (a, n) => BigInt.asIntN(64, a / BigInt(n)),
};

/** How a dtype's elements become accumulators and back. */
interface Kind<E, A> {
  arith: Arith<A>;
  widen(e: E): A;
  narrow(a: A): E;
  make(n: number): Data;
}

const KINDS: Record<DType, Kind<any, any>> = {
  float64: { arith: F64, widen: (e: number) => e, narrow: (a: number) => a, make: (n) => new Float64Array(n) },
  float32: { arith: F32, widen: (e: number) => e, narrow: (a: number) => a, make: (n) => new Float32Array(n) },
  float16: { arith: F32, widen: decodeF16, narrow: encodeF16, make: (n) => new Uint16Array(n) },
  bfloat16: { arith: F32, widen: decodeBF16, narrow: encodeBF16, make: (n) => new Uint16Array(n) },
  int32: { arith: I32, widen: (e: number) => e, narrow: (a: number) => a, make: (n) => new Int32Array(n) },
  int64: { arith: I64, widen: (e: bigint) => e, narrow: (a: bigint) => a, make: (n) => new BigInt64Array(n) },
};

function combinerOf<A>(arith: Arith<A>, op: Op): (a: A, b: A) => A {
  switch (op) {
    case 'SUM':
    case 'MEAN':
      return arith.add;
    case 'PRODUCT':
      return arith.mul;
    case 'MAX':
      return arith.max;
    case 'MIN':
      return arith.min;
  }
}

/** A new, empty array of `dtype`'s storage type. */
export function makeData(dtype: DType, n: number): Data {
  return KINDS[dtype].make(n);
}

/**
 * Elementwise `op` over `inputs` (one array per contribution, all the same length, at least one),
 * sequentially in the given order; MEAN divides by `count` (default: the number of inputs).
 */
export function reduceReference(dtype: DType, op: Op, inputs: readonly Data[], count: number = inputs.length): Data {
  if (inputs.length === 0) throw new Error('reduceReference needs at least one input');
  const k = KINDS[dtype];
  const f = combinerOf(k.arith, op);
  const len = inputs[0].length;
  const out = k.make(len);
  for (let i = 0; i < len; i++) {
    let acc = k.widen(inputs[0][i]);
    for (let j = 1; j < inputs.length; j++) acc = f(acc, k.widen(inputs[j][i]));
    if (op === 'MEAN') acc = k.arith.divCount(acc, count);
    (out as any)[i] = k.narrow(acc);
  }
  return out;
}

/**
 * `_simple_reduce` with `MapOutput`s: each device contributes a list of arrays (a plain value is a
 * one-element list; an empty list is skipped). A list is first reduced on its device (rounded to
 * the dtype), then all devices are reduced; MEAN divides by the total number of arrays.
 */
export function reduceListsReference(dtype: DType, op: Op, perDevice: readonly (readonly Data[])[]): Data {
  const combine: Op = op === 'MEAN' ? 'SUM' : op;
  const locals: Data[] = [];
  let count = 0;
  for (const list of perDevice) {
    if (list.length === 0) continue;
    count += list.length;
    locals.push(list.length === 1 ? list[0] : reduceReference(dtype, combine, list));
  }
  return reduceReference(dtype, op, locals, count);
}

/** Elements of `data` divided by `n` in the dtype's accumulator (IndexedSlices MEAN). */
export function divideReference(dtype: DType, data: Data, n: number): Data {
  return reduceReference(dtype, 'MEAN', [data], n);
}

/** Concatenation of arrays of one dtype. */
export function concatData(dtype: DType, parts: readonly Data[]): Data {
  const out = makeData(dtype, parts.reduce((s, p) => s + p.length, 0));
  let o = 0;
  for (const p of parts) {
    (out as any).set(p, o);
    o += p.length;
  }
  return out;
}

/**
 * IndexedSlices densified: zeros of `denseShape`, then row `indices[k]` gets `values` row k added,
 * in order of k (duplicates sum, in the dtype's accumulator, rounded after each row).
 */
export function densifyReference(
  dtype: DType,
  values: Data,
  indices: readonly (number | bigint)[],
  denseShape: readonly number[],
): Data {
  const rows = denseShape[0];
  const width = denseShape.slice(1).reduce((a, b) => a * b, 1);
  const k = KINDS[dtype];
  const out = k.make(rows * width);
  for (let r = 0; r < indices.length; r++) {
    const row = Number(indices[r]);
    if (row < 0 || row >= rows) throw new Error(`index ${row} outside [0, ${rows})`);
    for (let c = 0; c < width; c++) {
      const at = row * width + c;
      (out as any)[at] = k.narrow(k.arith.add(k.widen(out[at]), k.widen(values[r * width + c])));
    }
  }
  return out;
}

// ---- comparison ------------------------------------------------------------------------------

function isNaNBits(dtype: DType, bits: number): boolean {
  if (dtype === 'float16') return (bits & 0x7c00) === 0x7c00 && (bits & 0x3ff) !== 0;
  if (dtype === 'bfloat16') return (bits & 0x7f80) === 0x7f80 && (bits & 0x7f) !== 0;
  return false;
}

/**
 * Index of the first element where `actual` and `expected` differ bitwise (any NaN equals any
 * NaN; +0 and -0 differ), or -1. Lengths must match.
 */
export function firstDifference(dtype: DType, actual: Data, expected: Data): number {
  if (actual.length !== expected.length) return Math.min(actual.length, expected.length);
  for (let i = 0; i < actual.length; i++) {
    const a = actual[i];
    const e = expected[i];
    if (dtype === 'float16' || dtype === 'bfloat16') {
      if (a !== e && !(isNaNBits(dtype, a as number) && isNaNBits(dtype, e as number))) return i;
    } else if (dtype === 'float32' || dtype === 'float64') {
      if (!Object.is(a, e)) return i; // Object.is: NaN equals NaN, +0 differs from -0
    } else if (a !== e) {
      return i;
    }
  }
  return -1;
}

/** A readable form of an element, with its bits for half types. */
export function show(dtype: DType, x: number | bigint): string {
  if (dtype === 'float16') return `0x${(x as number).toString(16).padStart(4, '0')} (${decodeF16(x as number)})`;
  if (dtype === 'bfloat16') return `0x${(x as number).toString(16).padStart(4, '0')} (${decodeBF16(x as number)})`;
  if (typeof x === 'number' && Object.is(x, -0)) return '-0';
  return String(x);
}
