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
 * as JavaScript buffers of that size (the native addon tells V8 the same through
 * `napi_adjust_external_memory`).
 *
 * Blocks not yet freed are bounded (`CROSSDEV_WASM_HELD_BYTES`, default 2 GiB of WebAssembly's
 * 4 GiB): past the bound, results are copied out into JavaScript memory and tensors are not
 * copied in. A loop of `…Sync` calls that never yields gets there, since finalizers only run
 * between tasks.
 */
import { Buffer } from 'node:buffer';

/** The default bound on bytes of blocks not yet freed. */
const DEFAULT_HELD_BYTES = 2 ** 31;

/** The bound on bytes of blocks not yet freed (`CROSSDEV_WASM_HELD_BYTES`, read at each check). */
function heldLimit(): number {
  const v = Number(process.env.CROSSDEV_WASM_HELD_BYTES);
  return Number.isSafeInteger(v) && v >= 0 ? v : DEFAULT_HELD_BYTES;
}

/** Blocks of a WebAssembly module's shared memory, freed when no view of them is left. */
export class WasmMemory {
  private readonly memory: WebAssembly.Memory;
  /** Every buffer the memory has had (it gets a new one each time it grows): views over any of them are views of it. */
  private readonly buffers = new WeakSet<ArrayBufferLike>();
  /** The owner of the block each view is of. */
  private readonly owners = new WeakMap<ArrayBufferView, ArrayBuffer>();
  private readonly finalizer = new FinalizationRegistry<() => void>((free) => free());
  private held = 0;

  /** Hands out blocks of `memory`, which must be shared. */
  constructor(memory: WebAssembly.Memory) {
    if (!(memory.buffer instanceof SharedArrayBuffer)) throw new Error('the WebAssembly memory is not shared');
    this.memory = memory;
  }

  /** Bytes of blocks not yet freed (those dropped but not yet collected included). */
  get heldBytes(): number {
    return this.held;
  }

  /** Whether `a` is a view of this memory, which the module can read in place. */
  holds(a: ArrayBufferView): boolean {
    return this.buffers.has(a.buffer);
  }

  /** Whether a block of `bytes` more stays within the bound. */
  fits(bytes: number): boolean {
    return this.held + bytes <= heldLimit();
  }

  /** A view of the `len` bytes at `ptr`, which must stay allocated for as long as it is used. */
  view(ptr: number, len: number): Uint8Array {
    const buffer = this.memory.buffer;
    this.buffers.add(buffer);
    return new Uint8Array(buffer, ptr, len);
  }

  /**
   * The block of `len` bytes at `ptr` as a view; `free` is called once that view, and every view
   * given the same lifetime by {@link adopt}, has been collected.
   */
  block(ptr: number, len: number, free: () => void): Uint8Array {
    const view = this.view(ptr, len);
    const owner = Buffer.allocUnsafeSlow(len).buffer as ArrayBuffer;
    this.owners.set(view, owner);
    this.held += len;
    this.finalizer.register(owner, () => {
      this.held -= len;
      free();
    });
    return view;
  }

  /** Makes `view` (of the same bytes as `source`) keep `source`'s block allocated, if it is of one. */
  adopt(view: ArrayBufferView, source: ArrayBufferView): void {
    const owner = this.owners.get(source);
    if (owner !== undefined) this.owners.set(view, owner);
  }

  /** A copy of the `len` bytes at `ptr` in a new (JavaScript) ArrayBuffer. */
  copyOut(ptr: number, len: number): Uint8Array {
    const copy = new Uint8Array(len);
    copy.set(this.view(ptr, len));
    return copy;
  }
}
