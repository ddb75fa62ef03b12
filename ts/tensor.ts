/**
 * Host tensors and IndexedSlices: typed data plus shape. On the native backend a tensor wraps
 * the caller's TypedArray without copying it; on the WebAssembly backend `tensor()` copies it
 * into WebAssembly memory once, so that operations read it in place.
 */
import { call, intoCoreMemory, withLifetimeOf } from './backend.js';
import { CrossDeviceError } from './errors.js';
import { GpuTensor, upload } from './gpu_tensor.js';

/** Element types. `float16` and `bfloat16` are stored as their bits in a `Uint16Array`. */
export type DType = 'float32' | 'float64' | 'float16' | 'bfloat16' | 'int32' | 'int64';

/** The TypedArray that stores each dtype. */
export type TypedArray = Float32Array | Float64Array | Uint16Array | Int32Array | BigInt64Array;

/** The device a tensor is on when none is given: TensorFlow's eager default. */
export const DEFAULT_DEVICE = '/job:localhost/replica:0/task:0/device:CPU:0';

const STORAGE: Record<DType, { new (buffer: ArrayBufferLike, byteOffset?: number, length?: number): TypedArray; BYTES_PER_ELEMENT: number }> = {
  float32: Float32Array,
  float64: Float64Array,
  float16: Uint16Array,
  bfloat16: Uint16Array,
  int32: Int32Array,
  int64: BigInt64Array,
};

/** Options of {@link tensor}. */
export interface TensorOptions {
  /** Element type; by default inferred from the TypedArray, `float32` for plain numbers. */
  dtype?: DType;
  /**
   * The device the tensor is on (any TensorFlow spelling); default `/cpu:0`, or `/gpu:0` with
   * `resident`. Without `resident` the elements stay in host memory whatever the device says
   * (a host tensor labelled `/gpu:1` runs the same everywhere).
   */
  device?: string;
  /**
   * Upload the elements to the GPU `device` names and return a {@link GpuTensor}:
   * `ERR_NO_CUDA` where there is no GPU (or no GPU support: the WebAssembly backend),
   * `ERR_INVALID_DEVICE` when `device` is not a GPU.
   */
  resident?: boolean;
}

/**
 * A TensorFlow.js tensor, as far as crossdev needs one (crossdev does not depend on the
 * package): float32 and int32 tensors are accepted wherever a tensor is.
 */
export interface TfjsTensor {
  readonly shape: number[];
  readonly dtype: string;
  dataSync(): ArrayBufferView;
}

/** Whether `x` looks like a TensorFlow.js tensor. */
export function isTfjsTensor(x: unknown): x is TfjsTensor {
  const t = x as TfjsTensor;
  return typeof x === 'object' && x !== null && typeof t.dataSync === 'function' && Array.isArray(t.shape) && typeof t.dtype === 'string';
}

/** The TensorFlow.js functions {@link Tensor.toTfjs} uses (pass the `@tensorflow/tfjs` module). */
export interface TfjsModule<T> {
  tensor(values: Float32Array | Int32Array, shape: number[], dtype: 'float32' | 'int32'): T;
}

/** Data a tensor can be made from. */
export type TensorLike = TypedArray | TfjsTensor | number | bigint | readonly (number | bigint)[] | readonly unknown[];

/**
 * Views the bytes of `bytes` as the TypedArray of `dtype` (no copy). The view keeps memory that
 * `bytes` keeps allocated (a result in WebAssembly memory) allocated as long as it lives.
 */
export function typedView(dtype: DType, bytes: ArrayBufferView): TypedArray {
  const C = STORAGE[dtype];
  return withLifetimeOf(new C(bytes.buffer, bytes.byteOffset, bytes.byteLength / C.BYTES_PER_ELEMENT), bytes);
}

function inferDType(data: unknown): DType | undefined {
  if (data instanceof Float32Array) return 'float32';
  if (data instanceof Float64Array) return 'float64';
  if (data instanceof Int32Array) return 'int32';
  if (data instanceof BigInt64Array) return 'int64';
  return undefined;
}

function flatten(x: unknown, shape: number[], depth: number, out: unknown[]): void {
  if (Array.isArray(x)) {
    if (shape.length === depth) shape.push(x.length);
    else if (shape[depth] !== x.length) {
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `Ragged nested arrays cannot form a tensor (lengths ${shape[depth]} and ${x.length} at depth ${depth})`);
    }
    for (const y of x) flatten(y, shape, depth + 1, out);
  } else {
    out.push(x);
  }
}

/** Throws unless every element is a number (or, for int64, a bigint or an integer number). */
function checkElements(values: unknown[], dtype: DType): void {
  for (const x of values) {
    const ok = dtype === 'int64' ? typeof x === 'bigint' || Number.isInteger(x) : typeof x === 'number';
    if (!ok) {
      const what =
        typeof x === 'object' && x !== null ? (x.constructor?.name ?? 'Object') : typeof x === 'string' ? JSON.stringify(x) : typeof x === 'bigint' ? `${x}n` : String(x);
      const allowed = dtype === 'int64' ? 'integer numbers or bigints' : 'numbers';
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `The elements of a ${dtype} tensor must be ${allowed}, got ${what}`);
    }
  }
}

/** Throws unless `shape` is a list of non-negative integers (the core's own message). */
export function checkShape(shape: readonly number[]): void {
  let valid = Array.isArray(shape);
  for (let i = 0; valid && i < shape.length; i++) valid = Number.isSafeInteger(shape[i]) && shape[i] >= 0;
  if (!valid) {
    const dims = Array.isArray(shape) ? shape.map((d) => String(d)).join(', ') : String(shape);
    throw new CrossDeviceError('ERR_INVALID_TENSOR', `Shape dimensions must be non-negative integers, got [${dims}]`);
  }
}

function fromNumbers(values: unknown[], dtype: DType): TypedArray {
  checkElements(values, dtype);
  switch (dtype) {
    case 'float32':
      return Float32Array.from(values as number[]);
    case 'float64':
      return Float64Array.from(values as number[]);
    case 'int32':
      return Int32Array.from(values as number[]);
    case 'int64':
      return BigInt64Array.from(values.map((v) => BigInt(v as number)));
    default: {
      // Rounding to a half type happens in the core, once. The shape is checked afterwards, with
      // the caller's dtype in the message.
      const reply = call().execute(JSON.stringify({ call: 'fromNumbers', buf: 0, dtype, shape: [values.length] }), [Float64Array.from(values as number[])]);
      return typedView(dtype, reply.buffers[0]);
    }
  }
}

/**
 * A dense host tensor: a TypedArray of elements in row-major order and a shape.
 *
 * Where `data` lives depends on the backend. On the native one it is JavaScript memory: the
 * caller's own array for `tensor()` and `new Tensor()`; for results, an ArrayBuffer of its own
 * for each result larger than 4 KiB, one shared by the smaller results of one call (each in its
 * own range of it: use `data`, not the whole of `data.buffer`). On
 * the WebAssembly one, results and the tensors `tensor()` makes live in WebAssembly memory while
 * it has room (README: "The WebAssembly backend"), where operations read and write them without
 * copying (a tensor made with `new Tensor()`, or by `tensor()` when there is no room, keeps the
 * caller's array, and is copied in at each operation). For a tensor in WebAssembly memory:
 * - `data` is a view into WebAssembly memory. It stays valid, across any later calls and the
 *   memory's growth, for as long as `data` (or the tensor) is reachable; once neither is, its
 *   memory is freed after garbage collection.
 * - Views you make of it yourself (`data.subarray()`, `new Float32Array(data.buffer, …)`) do not
 *   keep it allocated: keep `data` or the tensor too, or copy with `data.slice()`.
 * - `data.buffer` is the whole of WebAssembly's memory (a SharedArrayBuffer): use only `data`'s
 *   own range of it, and do not post it to a worker (that would share the memory, not copy it).
 * - Writes to the array given to `tensor()` after the call do not reach the tensor: write to
 *   `data`, which is the caller's array on the native backend and the copy on this one.
 */
export class Tensor {
  /** The elements: see the class's description for whose memory they are in. */
  readonly data: TypedArray;
  /** Dimensions, outermost first; `[]` for a scalar. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** The device this tensor is on. */
  readonly device: string;

  /** Wraps `data`; the core checks that it fits `shape` and `dtype`. */
  constructor(data: TypedArray, shape: readonly number[], dtype: DType, device: string = DEFAULT_DEVICE) {
    checkShape(shape);
    this.data = data;
    // A frozen shape (a result's, from the core) cannot change under the tensor: no copy.
    this.shape = Object.isFrozen(shape) ? shape : Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = device;
  }

  /** Number of elements. */
  get size(): number {
    return this.data.length;
  }

  /** The elements as numbers (`bigint` for int64), half types decoded. */
  toArray(): number[] | bigint[] {
    if (this.dtype === 'float16' || this.dtype === 'bfloat16') {
      const reply = call().execute(JSON.stringify({ call: 'toNumbers', tensor: { buf: 0, dtype: this.dtype, shape: this.shape } }), [this.data]);
      return Array.from(typedView('float64', reply.buffers[0]) as Float64Array);
    }
    return Array.from(this.data as ArrayLike<number | bigint>) as number[] | bigint[];
  }

  /**
   * This tensor as a TensorFlow.js tensor, over the same memory where TensorFlow.js's backend
   * allows (its CPU backend does). Pass the module: `t.toTfjs(tf)`. float32 and int32 only.
   */
  toTfjs<T>(tf: TfjsModule<T>): T {
    if (this.dtype !== 'float32' && this.dtype !== 'int32') {
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `TensorFlow.js has no ${this.dtype} tensors; it takes float32 and int32 ones`);
    }
    return tf.tensor(this.data as Float32Array | Int32Array, [...this.shape], this.dtype);
  }

  /** This tensor: it is in host memory already (so that code reading results treats host and GPU tensors alike). */
  async toHost(): Promise<Tensor> {
    return this;
  }

  /** This tensor (see {@link toHost}). */
  toHostSync(): Tensor {
    return this;
  }

  /** A short description: dtype, shape and device. */
  toString(): string {
    return `Tensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device})`;
  }
}

/**
 * Makes a tensor. TypedArrays are wrapped without copying on the native backend (float16/bfloat16
 * data is a `Uint16Array` of bits and needs `dtype`); on the WebAssembly backend they are copied
 * into WebAssembly memory, once (see {@link Tensor} for what that means). Numbers and (nested)
 * arrays are converted. `shape` defaults to the array's own shape (a 1-D length, a nested
 * array's dimensions, `[]` for a number).
 */
export function tensor(data: TensorLike, shape: readonly number[] | undefined, options: TensorOptions & { resident: true }): GpuTensor;
export function tensor(data: TensorLike, shape: readonly number[] | undefined, options: TensorOptions & { resident: boolean }): Tensor | GpuTensor;
export function tensor(data: TensorLike, shape?: readonly number[], options?: TensorOptions & { resident?: false }): Tensor;
export function tensor(data: TensorLike, shape?: readonly number[], options: TensorOptions = {}): Tensor | GpuTensor {
  if (isTfjsTensor(data)) {
    // TensorFlow.js's CPU backend hands out its own storage: no copy (but the one into
    // WebAssembly memory on that backend, below).
    if (data.dtype !== 'float32' && data.dtype !== 'int32') {
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `TensorFlow.js tensors of dtype ${data.dtype} cannot be reduced; crossdev takes float32 and int32 ones`);
    }
    return tensor(data.dataSync() as TypedArray, shape ?? data.shape, { ...options, dtype: data.dtype, resident: options.resident ?? false });
  }
  const inferred = inferDType(data);
  let dtype = options.dtype ?? inferred;
  let typed: TypedArray;
  let own: number[];
  if (ArrayBuffer.isView(data)) {
    if (dtype === undefined) {
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `A ${data.constructor.name} needs an explicit dtype (float16 and bfloat16 data is a Uint16Array of bits); allowed: float32, float64, float16, bfloat16, int32, int64`);
    }
    if (inferred !== undefined && inferred !== dtype) {
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `A ${data.constructor.name} holds ${inferred}, not ${dtype}`);
    }
    if (STORAGE[dtype] !== undefined && !(data instanceof STORAGE[dtype])) {
      throw new CrossDeviceError('ERR_INVALID_TENSOR', `${dtype} data must be a ${STORAGE[dtype].name}, got a ${data.constructor.name}`);
    }
    typed = data as TypedArray;
    own = [typed.length];
  } else {
    dtype ??= typeof data === 'bigint' ? 'int64' : 'float32';
    const values: unknown[] = [];
    own = [];
    flatten(data, own, 0, values);
    if (shape) checkShape(shape);
    typed = fromNumbers(values, dtype);
  }
  // The core checks the shape and the device, then copies the elements to the GPU.
  if (options.resident) return upload(typed, shape ?? own, dtype, options.device ?? '/gpu:0');
  // On the WebAssembly backend the elements move into its memory now, once, so that operations
  // (and the check below) read them in place.
  const placed = STORAGE[dtype] === undefined ? undefined : intoCoreMemory(typed);
  if (placed) typed = typedView(dtype, placed);
  const t = new Tensor(typed, shape ?? own, dtype, options.device);
  call().execute(JSON.stringify({ call: 'checkTensor', tensor: { buf: 0, dtype, shape: t.shape } }), [typed]);
  return t;
}

/**
 * Sparse rows of a dense tensor of shape `denseShape`: row `indices[k]` is `values[k]`.
 * Values and indices are host tensors, or GPU tensors (`T`).
 * Gradients of embedding lookups have this form. Reducing slices concatenates them.
 */
export class IndexedSlices<T extends Tensor | GpuTensor = Tensor> {
  /** The rows, shape `[k, ...denseShape.slice(1)]`. */
  readonly values: T;
  /** Row numbers, an int32 or int64 tensor of length k. */
  readonly indices: T;
  /** Shape of the dense tensor. */
  readonly denseShape: readonly number[];
  /** The device the slices are on (that of `values`). */
  readonly device: string;

  /** Values and indices may be GPU tensors (checking them reads them to the host once). */
  constructor(values: T, indices: T, denseShape: readonly number[]) {
    checkShape(denseShape);
    this.values = values;
    this.indices = indices;
    this.denseShape = Object.freeze([...denseShape]);
    this.device = values.device;
    const inputs: ArrayBufferView[] = [];
    call().execute(`{"call":"checkValue","value":${encodeSlices(this, inputs)}}`, inputs);
  }

  /** The dense tensor, in host memory: zeros with each row added at its index (duplicate indices sum). */
  densify(): Tensor {
    const inputs: ArrayBufferView[] = [];
    const reply = call().execute(`{"call":"densify","value":${encodeSlices(this, inputs)}}`, inputs);
    const d = reply.meta.value.dense;
    return new Tensor(typedView(d.dtype, reply.buffers[d.buf]), d.shape, d.dtype, this.device);
  }

  /** A short description: dtype, rows, dense shape and device. */
  toString(): string {
    return `IndexedSlices(${this.values.dtype}, ${this.indices.size} rows of [${this.denseShape.join(', ')}], ${this.device})`;
  }
}

/**
 * The JSON text of `t` in a request: its handle for a GPU tensor, else its elements appended to
 * `inputs` and named by their index. Requests are built as text, from parts each tensor keeps
 * (see {@link wireShape}), because a small op's request is rebuilt at every call.
 */
export function encodeTensor(t: Tensor | GpuTensor, inputs: ArrayBufferView[]): string {
  if (t instanceof GpuTensor) return t.wire();
  inputs.push(t.data);
  return `{"buf":${inputs.length - 1},${wireShape(t)}}`;
}

/** The JSON text of slices in a request, host elements appended to `inputs`. */
export function encodeSlices(s: IndexedSlices<Tensor | GpuTensor>, inputs: ArrayBufferView[]): string {
  const values = encodeTensor(s.values, inputs);
  return `{"sparse":{"values":${values},"indices":${encodeTensor(s.indices, inputs)},"denseShape":${JSON.stringify(s.denseShape)}}}`;
}

/** `"dtype":…,"shape":[…]` of each tensor, made once (dtype and shape never change). */
const wireShapes = new WeakMap<Tensor | GpuTensor, string>();

/** The `"dtype":…,"shape":[…]` members of `t`'s wire form. */
export function wireShape(t: Tensor | GpuTensor): string {
  let text = wireShapes.get(t);
  if (text === undefined) {
    text = `"dtype":${JSON.stringify(t.dtype)},"shape":[${t.shape.join(',')}]`;
    wireShapes.set(t, text);
  }
  return text;
}
