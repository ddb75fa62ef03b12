/**
 * The WebAssembly backend's memory, where tensors and results live so that an operation copies
 * neither its inputs in nor its results out.
 *
 * The module's memory is shared (its buffer is a `SharedArrayBuffer`), so growing it never
 * detaches a view: a view into it stays valid for as long as the bytes it covers are not freed.
 * Those bytes are handed out in blocks. Each block has an owner: an `ArrayBuffer` of the block's
 * size, allocated uninitialised and never touched (it takes address space, not memory), which
 * every view made of the block keeps alive (through a `WeakMap`). When the last of them has been
 * collected, so has the owner, and a `FinalizationRegistry` frees the block. The owner's size
 * makes V8 count the block as external memory, so that it collects dropped results as promptly
 * as JavaScript buffers of that size (as V8 counts the native addon's results, which are
 * `ArrayBuffer`s over the addon's memory).
 *
 * WebAssembly addresses 4 GiB at most, which the blocks held between calls share with each
 * call's working memory (inputs copied in, results, scratch). A call that finds too little left
 * fails (`ERR_OUT_OF_MEMORY`), so blocks are held within bounds, past which results are copied
 * out into JavaScript memory and `tensor()` wraps arrays rather than copying them in:
 * - a call's results stay (all of them, or none: kept blocks scattered among freed ones would
 *   fragment the memory) only while what is then allocated leaves room for another call like it
 *   within the capacity: 3.25 GiB, the 4 GiB less room for the allocator's fragmentation, or
 *   `CROSSDEV_WASM_MEMORY_BYTES` where that is less (the most the module may allocate at all).
 *   Room for a call is the more of its measured working memory and three times its inputs,
 *   crossdev's most (a packed all-reduce holds the packs, their sums and the unpacked results),
 *   so that a bigger call over the same inputs finds room too;
 * - `tensor()` copies in only while a quarter of the capacity is enough for what is allocated,
 *   leaving the rest to calls and their results;
 * - blocks beyond `CROSSDEV_WASM_HELD_BYTES` (default 2 GiB) are never held. A loop of `…Sync`
 *   calls that never yields gets there: finalizers only run between tasks.
 */
import { Buffer } from 'node:buffer';

/** The default bound on bytes of blocks not yet freed. */
const DEFAULT_HELD_BYTES = 2 ** 31;
/** WebAssembly's addresses: 4 GiB. */
const ADDRESSES = 2 ** 32;
/**
 * What the module may allocate and still expect the next allocation to succeed: 4 GiB less
 * room for the allocator's fragmentation, the threads' stacks and the module's data. (When
 * calls kept some of their results and copied out the rest, ResNet-50's flat all-reduce over 8
 * devices ran out with 3.25 GiB allocated in 3.9 GiB of memory; kept all together or not at
 * all, they leave the memory in few pieces.)
 */
const CAPACITY = 3.25 * 2 ** 30;
/** The share of the capacity within which `tensor()` copies arrays in. */
const TENSOR_SHARE = 1 / 4;
/** The working memory a call may need per byte of its inputs (see the module's description). */
const WORK_PER_INPUT_BYTE = 3;

/** A whole number of bytes from the environment variable `name`, else `fallback` (read at each check). */
function bytesFromEnv(name: string, fallback: number): number {
  const v = Number(process.env[name]);
  return process.env[name] !== '' && Number.isSafeInteger(v) && v >= 0 ? v : fallback;
}

/** The bound on bytes of blocks not yet freed (`CROSSDEV_WASM_HELD_BYTES`). */
function heldLimit(): number {
  return bytesFromEnv('CROSSDEV_WASM_HELD_BYTES', DEFAULT_HELD_BYTES);
}

/** The most the module may allocate at all (`CROSSDEV_WASM_MEMORY_BYTES`, else its 4 GiB). */
export function memoryLimit(): number {
  return Math.min(bytesFromEnv('CROSSDEV_WASM_MEMORY_BYTES', ADDRESSES), ADDRESSES);
}

/** A block to free once its owner has been collected, and how. */
interface Freed {
  readonly ptr: number;
  readonly len: number;
  readonly free: (ptr: number, len: number) => void;
}

/** Blocks of a WebAssembly module's shared memory, freed when no view of them is left. */
export class WasmMemory {
  private readonly memory: WebAssembly.Memory;
  /** Bytes the module has allocated now (its allocator's count). */
  private readonly allocated: () => number;
  /** Every buffer the memory has had (it gets a new one each time it grows): views over any of them are views of it. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  /** The owner of the block each view is of. */
  private readonly owners = new WeakMap<ArrayBufferView, ArrayBuffer>();
  /**
   * Frees a block once its owner has been collected. What it holds is a record, not a closure:
   * a closure would keep the scope it was made in alive, views of the block included.
   */
  private readonly finalizer = new FinalizationRegistry<Freed>(({ ptr, len, free }) => {
    this.held -= len;
    free(ptr, len);
  });
  private held = 0;

  /** Hands out blocks of `memory`, which must be shared; `allocated` tells what the module has allocated. */
  constructor(memory: WebAssembly.Memory, allocated: () => number) {
    if (!(memory.buffer instanceof SharedArrayBuffer)) throw new Error('the WebAssembly memory is not shared');
    this.memory = memory;
    this.allocated = allocated;
  }

  /** Bytes of blocks not yet freed (those dropped but not yet collected included). */
  get heldBytes(): number {
    return this.held;
  }

  /** Whether `a` is a view of this memory, which the module can read in place. */
  holds(a: ArrayBufferView): boolean {
    return this.buffers.has(a.buffer);
  }

  /** Whether a tensor of `bytes` may be copied in (see the module's description). */
  fitsTensor(bytes: number): boolean {
    return this.held + bytes <= heldLimit() && this.allocated() + bytes <= Math.min(CAPACITY, memoryLimit()) * TENSOR_SHARE;
  }

  /** A view of the `len` bytes at `ptr`, which must stay allocated for as long as it is used. */
  view(ptr: number, len: number): Uint8Array {
    const buffer = this.memory.buffer;
    this.buffers.add(buffer);
    return new Uint8Array(buffer, ptr, len);
  }

  /**
   * The block of `len` bytes at `ptr` as a view; `free(ptr, len)` is called once that view, and
   * every view given the same lifetime by {@link adopt}, has been collected.
   */
  block(ptr: number, len: number, free: (ptr: number, len: number) => void): Uint8Array {
    const view = this.view(ptr, len);
    const owner = Buffer.allocUnsafeSlow(len).buffer as ArrayBuffer;
    this.owners.set(view, owner);
    this.held += len;
    this.finalizer.register(owner, { ptr, len, free });
    return view;
  }

  /**
   * A call's result buffers at `places` (`[address, bytes]`, allocated by the module): views
   * where they lie if, with all of them, what stays allocated leaves room for another call like
   * it within the capacity (and the blocks held stay within `CROSSDEV_WASM_HELD_BYTES`); else
   * copies in JavaScript memory, whose blocks are freed at once. The call had `inputBytes` of
   * inputs and `work` bytes of working memory; `free(ptr, len)` frees a result's block.
   */
  results(places: readonly (readonly [number, number])[], inputBytes: number, work: number, free: (ptr: number, len: number) => void): Uint8Array[] {
    const total = places.reduce((sum, [, len]) => sum + len, 0);
    const next = Math.max(work, WORK_PER_INPUT_BYTE * inputBytes);
    const stay = this.allocated() + next <= Math.min(CAPACITY, memoryLimit()) && this.held + total <= heldLimit();
    return places.map(([ptr, len]) => {
      if (len === 0) return new Uint8Array(0);
      if (stay) return this.block(ptr, len, free);
      const copy = new Uint8Array(len);
      copy.set(this.view(ptr, len));
      free(ptr, len);
      return copy;
    });
  }

  /** Makes `view` (of the same bytes as `source`) keep `source`'s block allocated, if it is of one. */
  adopt(view: ArrayBufferView, source: ArrayBufferView): void {
    const owner = this.owners.get(source);
    if (owner !== undefined) this.owners.set(view, owner);
  }
}
