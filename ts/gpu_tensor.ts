/**
 * GPU tensors: tensors whose elements stay in GPU memory between operations. JavaScript holds a
 * handle; the memory belongs to the native addon (crossdev-cuda's store). Made by
 * `tensor(data, shape, { device: '/gpu:0', resident: true })` and returned by every operation
 * that had GPU tensors among its inputs, for its results on GPU devices.
 */
import { call } from './backend.js';
import { CrossDeviceError } from './errors.js';
import { Tensor, typedView, wireShape, type DType, type TypedArray } from './tensor.js';

function release(handle: number): void {
  call().execute(JSON.stringify({ call: 'release', handle }), []);
}

/**
 * Frees the GPU memory of tensors that were dropped without {@link GpuTensor.dispose}: a safety
 * net, run whenever the garbage collector gets to them. V8 does not see GPU memory, so it may
 * get to them late: dispose what you no longer need.
 */
const finalizer = new FinalizationRegistry<number>(release);

/**
 * A tensor in GPU memory: a handle, its dtype, shape and device. Read it with
 * {@link toHost}/{@link toHostSync}; free it with {@link dispose} (else it is freed after garbage
 * collection). Operations take it wherever they take a tensor.
 */
export class GpuTensor {
  /** Dimensions, outermost first; `[]` for a scalar. */
  readonly shape: readonly number[];
  /** Element type. */
  readonly dtype: DType;
  /** The GPU this tensor is on. */
  readonly device: string;
  #handle: number | undefined;

  /** Wraps handle `handle` of the core's store (tensors are made by `tensor()` and by operations). */
  constructor(handle: number, shape: readonly number[], dtype: DType, device: string) {
    this.shape = Object.freeze([...shape]);
    this.dtype = dtype;
    this.device = device;
    this.#handle = handle;
    finalizer.register(this, handle, this);
  }

  /** Number of elements. */
  get size(): number {
    return this.shape.reduce((n, d) => n * d, 1);
  }

  /** Whether {@link dispose} has freed this tensor. */
  get disposed(): boolean {
    return this.#handle === undefined;
  }

  /** The JSON text of the tensor in a request: its handle. `ERR_DISPOSED` after {@link dispose}. */
  wire(): string {
    if (this.#handle === undefined) {
      throw new CrossDeviceError('ERR_DISPOSED', `${this} was disposed: it can no longer be read or reduced`);
    }
    return `{"gpu":${this.#handle},${wireShape(this)}}`;
  }

  private request(): string {
    return `{"call":"download","tensor":${this.wire()}}`;
  }

  private host(reply: { meta: any; buffers: ArrayBufferView[] }): Tensor {
    const d = reply.meta.value.dense;
    return new Tensor(typedView(d.dtype, reply.buffers[d.buf]) as TypedArray, d.shape, d.dtype, this.device);
  }

  /** A host copy of the elements (labelled with this tensor's device); the copy runs off the JavaScript thread. */
  async toHost(): Promise<Tensor> {
    return this.host(await call().executeAsync(this.request(), [], true));
  }

  /** {@link toHost}, on the calling thread. */
  toHostSync(): Tensor {
    return this.host(call().execute(this.request(), []));
  }

  /** Frees the GPU memory now. Idempotent; any later use is an `ERR_DISPOSED` error. */
  dispose(): void {
    if (this.#handle === undefined) return;
    finalizer.unregister(this);
    release(this.#handle);
    this.#handle = undefined;
  }

  /** A short description: dtype, shape and device. */
  toString(): string {
    return `GpuTensor(${this.dtype}, [${this.shape.join(', ')}], ${this.device}${this.disposed ? ', disposed' : ''})`;
  }
}

/** Copies `data` (of `dtype` and `shape`) into new memory of GPU `device`. */
export function upload(data: TypedArray, shape: readonly number[], dtype: DType, device: string): GpuTensor {
  const reply = call().execute(JSON.stringify({ call: 'upload', tensor: { buf: 0, dtype, shape }, device }), [data]);
  const d = reply.meta.value.dense;
  return new GpuTensor(d.gpu, d.shape, d.dtype, device);
}

/** GPU memory that GPU tensors hold now in this process: live tensors and their bytes (0 without GPU support). */
export function residentMemory(): { buffers: number; bytes: number } {
  return call().execute(JSON.stringify({ call: 'residentUsage' }), []).meta.usage;
}
