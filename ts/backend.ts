/**
 * Loads the Rust core: the native addon when it loads, else the WebAssembly module.
 * `CROSSDEV_BACKEND=native|wasm` forces one and fails clearly when it cannot load.
 * Both speak the same request protocol (crossdev-core's `wire` module); this file only moves
 * bytes across the boundary.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Worker } from 'node:worker_threads';
import { CrossDeviceError } from './errors.js';
import { memoryLimit, WasmMemory } from './wasm_memory.js';

/** Which implementation of the core is running. */
export type BackendName = 'native' | 'wasm';

/** A decoded response: parsed metadata and the result buffers it refers to by index. */
export interface Reply {
  meta: any;
  buffers: ArrayBufferView[];
}

interface Backend {
  name: BackendName;
  execute(request: string, inputs: ArrayBufferView[]): Reply;
  /** `offThread`: never run inline, whatever the size of `inputs` (they are GPU tensors' handles). */
  executeAsync(request: string, inputs: ArrayBufferView[], offThread?: boolean): Promise<Reply>;
  /** A copy of `a` in the core's own memory, or undefined where `a` stays where it is. */
  place(a: ArrayBufferView): Uint8Array | undefined;
  /** Makes `view`, of the same bytes as `source`, keep them allocated as long as `source` does. */
  adopt(view: ArrayBufferView, source: ArrayBufferView): void;
}

/** The package's root folder (the nearest one above this file with a package.json). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return `${dir}/`;
}

const root = packageRoot();
const requireHere = createRequire(import.meta.url);

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

/**
 * Whether `CROSSDEV_DEBUG` asks for per-call diagnostics: read at the first call (reading
 * `process.env` at every call cost a tenth of a small op).
 */
let debugging: boolean | undefined;

/** Adds `"debug":true` to a request (a JSON object) when diagnostics are on. */
function withDebug(request: string): string {
  if (debugging === undefined) {
    const d = process.env.CROSSDEV_DEBUG;
    debugging = d !== undefined && d !== '' && d !== '0';
  }
  return debugging ? `${request.slice(0, -1)},"debug":true}` : request;
}

/** Parsed `{"results": …}` metadata by its text: see {@link parseMeta}. */
const parsedResults = new Map<string, unknown>();
/** Characters of metadata {@link parsedResults} holds; past {@link PARSED_CHARS} it starts over. */
let parsedChars = 0;
const PARSED_CHARS = 1 << 22;
/** The texts {@link parseMeta} parsed or found last, newest first: at most {@link RECENT}. */
const recentMeta: [string, unknown][] = [];
const RECENT = 4;

/** `x`, and every object in it, frozen. */
function deepFreeze<T>(x: T): T {
  if (x !== null && typeof x === 'object' && !Object.isFrozen(x)) {
    for (const v of Object.values(x)) deepFreeze(v);
    Object.freeze(x);
  }
  return x;
}

/**
 * `meta` parsed. The results of a training step describe the same devices, dtypes, shapes and
 * buffer indices step after step, so results metadata is parsed once per distinct text and
 * shared, frozen (its readers only read it). Results on GPUs name new handles every time: they
 * are parsed anew.
 */
function parseMeta(meta: string): any {
  // The last few texts are compared first: comparing strings is cheaper than hashing a new one.
  for (let i = 0; i < recentMeta.length; i++) if (recentMeta[i][0] === meta) return recentMeta[i][1];
  let parsed = parsedResults.get(meta);
  if (parsed === undefined) {
    if (!meta.startsWith('{"results":') || meta.includes('"gpu":')) return JSON.parse(meta);
    parsed = deepFreeze(JSON.parse(meta));
    if (parsedChars + meta.length > PARSED_CHARS) {
      parsedResults.clear();
      parsedChars = 0;
    }
    if (meta.length <= PARSED_CHARS) {
      parsedResults.set(meta, parsed);
      parsedChars += meta.length;
    }
  }
  recentMeta.unshift([meta, parsed]);
  recentMeta.length = Math.min(recentMeta.length, RECENT);
  return parsed;
}

function decode(meta: string, buffers: ArrayBufferView[]): Reply {
  const parsed = parseMeta(meta);
  if (parsed && typeof parsed === 'object' && Array.isArray(parsed.log)) {
    for (const line of parsed.log) console.error(`crossdev: ${line}`);
  }
  if (parsed && typeof parsed === 'object' && 'error' in parsed) {
    throw new CrossDeviceError(parsed.error.code, parsed.error.message);
  }
  return { meta: parsed, buffers };
}

/** A native reply: the metadata's text, then the ArrayBuffers holding the result buffers. */
type NativeReply = [string, ...ArrayBuffer[]];

interface NativeAddon {
  /** Reads the inputs, TypedArrays of any type, in place. */
  execute(request: string, inputs: ArrayBufferView[]): NativeReply;
  /** Holds references to the inputs, which must be Uint8Arrays, while it runs. */
  executeAsync(request: string, inputs: Uint8Array[]): Promise<NativeReply>;
}

/**
 * A native reply decoded. Its result buffers are the `[arrayBuffer, byteOffset, byteLength]`
 * triples of the metadata's `spans` (small results share one ArrayBuffer), else one per
 * ArrayBuffer.
 */
function decodeNative(r: NativeReply): Reply {
  const reply = decode(r[0], []);
  const spans: number[] | undefined = reply.meta?.spans;
  if (spans === undefined) {
    for (let i = 1; i < r.length; i++) reply.buffers.push(new Uint8Array(r[i] as ArrayBuffer));
  } else {
    for (let i = 0; i < spans.length; i += 3) reply.buffers.push(new Uint8Array(r[1 + spans[i]] as ArrayBuffer, spans[i + 1], spans[i + 2]));
  }
  return reply;
}

/** napi-rs's name for this platform (`linux-x64-gnu`): the addon's file suffix and the platform package's. */
const triple = `${process.platform}-${process.arch}${process.platform === 'linux' ? '-gnu' : ''}`;
/** The platform package that carries the prebuilt addon (an optional dependency of the published package). */
const platformPackage = `crossdev-${triple}`;

/** This package's version, from its package.json. */
function ownVersion(): string {
  return (requireHere(`${root}package.json`) as { version: string }).version;
}

/**
 * Requires the platform package's addon, refusing one published for another crossdev version (the
 * request protocol between this file and the addon is internal, so only matching versions talk).
 */
function requirePlatformPackage(): NativeAddon {
  const version = (requireHere(`${platformPackage}/package.json`) as { version: string }).version;
  if (version !== ownVersion()) {
    throw new Error(`version ${version} does not match crossdev ${ownVersion()}; reinstall so that both match`);
  }
  return requireHere(platformPackage) as NativeAddon;
}

/**
 * Requests whose inputs hold fewer bytes run on the JavaScript thread even in their Promise form:
 * they take microseconds, less than the hand-over to libuv's pool and back.
 */
const INLINE_BYTES = 1 << 16;

function nativeBackend(addon: NativeAddon, processGroup = false): Backend {
  const execute = (req: string, inputs: ArrayBufferView[]): Reply => {
    return decodeNative(addon.execute(req, inputs));
  };
  return {
    name: 'native',
    execute,
    executeAsync: async (req, inputs, offThread = false) => {
      // Across processes a small op may still wait for other ranks: it never blocks this thread.
      if (!processGroup && !offThread && inputs.reduce((n, a) => n + a.byteLength, 0) < INLINE_BYTES) return execute(req, inputs);
      return decodeNative(await addon.executeAsync(req, inputs.map(bytesOf)));
    },
    // The addon reads JavaScript memory in place, and its results are ArrayBuffers of their own.
    place: () => undefined,
    adopt: () => undefined,
  };
}

/** The MPI build of the native addon (`native/crossdev-mpi.<platform>.node`, built by setup). */
export interface MpiAddon extends NativeAddon {
  mpiInit(options?: { nccl?: boolean; gpu?: number; timeoutSeconds?: number }): { rank: number; size: number; worker: string };
  mpiFinalize(): void;
}

/**
 * Loads the MPI build of the addon and makes it the core every later call uses (it is the native
 * addon plus MPI's process group).
 */
export function loadMpiAddon(): MpiAddon {
  const path = `${root}native/crossdev-mpi.${triple}.node`;
  let addon: MpiAddon;
  try {
    addon = requireHere(path) as MpiAddon;
  } catch (e) {
    throw new CrossDeviceError(
      'ERR_BACKEND',
      `crossdev's MPI addon could not be loaded (${path}: ${(e as Error).message.split('\n')[0]}). ` +
        'It is built from source by `npm run setup` where Open MPI is installed (Debian: openmpi-bin libopenmpi-dev).',
    );
  }
  loaded = nativeBackend(addon, true);
  return addon;
}

function loadNative(): Backend {
  // The addon built in this tree (`npm run setup`), then the platform package (an installed crossdev).
  const candidates: [string, () => NativeAddon][] = [
    [`${root}native/crossdev.${triple}.node`, () => requireHere(`${root}native/crossdev.${triple}.node`) as NativeAddon],
    [platformPackage, requirePlatformPackage],
  ];
  const reasons: string[] = [];
  for (const [c, requireAddon] of candidates) {
    try {
      return nativeBackend(requireAddon());
    } catch (e) {
      reasons.push(`${c}: ${(e as Error).message.split('\n')[0]}`);
    }
  }
  throw new Error(reasons.join('; '));
}

interface WasmModule {
  initSync(options?: { module: WebAssembly.Module; memory: WebAssembly.Memory }): unknown;
  __wbg_wasm_module: WebAssembly.Module;
  start_threads(threads: number): boolean;
  alloc(len: number): number;
  dealloc(ptr: number, len: number): void;
  heap(): WebAssembly.Memory;
  execute(request: string, ptrs: Uint32Array, lens: Uint32Array): string;
  release(ptr: number): void;
  allocated(): number;
  take_peak(): number;
  set_limit(bytes: number): void;
}

/** The error of an input that could not be copied into WebAssembly memory (the module's own says the same of a call). */
function outOfMemory(bytes: number, allocated: number): CrossDeviceError {
  return new CrossDeviceError(
    'ERR_OUT_OF_MEMORY',
    `WebAssembly memory is exhausted: an input of ${bytes} bytes could not be copied in (${allocated} bytes of at most ${memoryLimit()} ` +
      'are taken by tensors and results still held, or dropped but not yet garbage-collected). Nothing was changed. ' +
      'Drop tensors and results you no longer need and let the event loop turn (await) before the next call, ' +
      'reduce fewer or smaller tensors per call, or use the native addon.',
  );
}

/**
 * A worker thread of the WebAssembly core: the module over the same memory, running a thread of
 * its pool. A trap there (a bug) would leave the calling thread waiting for good, so it ends the
 * process instead, saying why.
 */
const WASM_WORKER = `
const { workerData } = require('node:worker_threads');
const w = require(workerData.glue);
try {
  w.initSync({ module: workerData.module, memory: workerData.memory });
  w.worker_run();
} catch (e) {
  require('node:fs').writeSync(2, 'crossdev: internal error in a WebAssembly worker thread (please report): ' + (e && e.stack || e) + '\\n');
  process.kill(process.pid, 'SIGABRT');
}`;

/** Worker threads of the WebAssembly core: `CROSSDEV_WASM_THREADS`, else one per core; 0 or 1 runs on the calling thread alone. */
function wasmThreads(): number {
  const v = process.env.CROSSDEV_WASM_THREADS;
  if (v === undefined || v === '') return availableParallelism();
  const n = Number(v);
  if (!Number.isSafeInteger(n) || n < 0) {
    throw new CrossDeviceError('ERR_BACKEND', `CROSSDEV_WASM_THREADS must be a whole number of threads, got '${v}'`);
  }
  return n;
}

/**
 * Starts `threads` worker threads over the module and its memory and makes them its pool
 * (waiting until each has started). They do not keep the process alive.
 */
function startWasmThreads(w: WasmModule, glue: string, threads: number): void {
  const workerData = { glue, module: w.__wbg_wasm_module, memory: w.heap() };
  for (let i = 0; i < threads; i++) new Worker(WASM_WORKER, { eval: true, workerData, execArgv: [] }).unref();
  if (!w.start_threads(threads)) throw new Error('the WebAssembly thread pool was started twice');
}

/**
 * The WebAssembly core. Tensors and results live in its memory (see wasm_memory.ts): an input
 * already there is read in place, any other is copied in for the call; results stay where the
 * core wrote them, as views, while that leaves room for another call like the one that made
 * them, and are copied out otherwise.
 */
function loadWasm(): Backend {
  const glue = `${root}wasm/crossdev_wasm.js`;
  const threads = wasmThreads();
  const w = requireHere(glue) as WasmModule;
  // wasm-bindgen instantiates the module when it is required on the main thread only.
  w.initSync();
  if (threads > 1) startWasmThreads(w, glue, threads);
  const memory = new WasmMemory(w.heap(), () => w.allocated());
  // How blocks are freed: functions made once, here, for the finalizer to hold.
  const release = (ptr: number) => w.release(ptr);
  const dealloc = (ptr: number, len: number) => w.dealloc(ptr, len);
  let limit = -1;
  /** Passes CROSSDEV_WASM_MEMORY_BYTES on to the module where it has changed. */
  const applyLimit = () => {
    const l = memoryLimit();
    if (l !== limit) w.set_limit(Math.min(l, 2 ** 32 - 1));
    limit = l;
  };
  const execute = (req: string, inputs: ArrayBufferView[]): Reply => {
    applyLimit();
    const ptrs = new Uint32Array(inputs.length);
    const lens = new Uint32Array(inputs.length);
    const copied: number[] = [];
    const before = w.allocated();
    w.take_peak();
    let out: string;
    try {
      inputs.forEach((a, i) => {
        lens[i] = a.byteLength;
        if (memory.holds(a)) {
          ptrs[i] = a.byteOffset;
          return;
        }
        ptrs[i] = w.alloc(a.byteLength);
        if (ptrs[i] === 0) throw outOfMemory(a.byteLength, w.allocated());
        copied.push(i);
        memory.view(ptrs[i], a.byteLength).set(bytesOf(a));
      });
      try {
        out = w.execute(req, ptrs, lens);
      } catch (e) {
        throw new CrossDeviceError('ERR_INTERNAL', `internal error in the WebAssembly core (please report): ${(e as Error).message}`);
      }
    } finally {
      for (const i of copied) w.dealloc(ptrs[i], lens[i]);
    }
    // What the call worked in (inputs copied in, results, scratch): what one like it needs next.
    const work = w.take_peak() - before;
    const newline = out.indexOf('\n');
    const places = JSON.parse(out.slice(newline + 1)) as [number, number][];
    const buffers = memory.results(places, lens.reduce((sum, l) => sum + l, 0), work, release);
    return decode(out.slice(0, newline), buffers);
  };
  const place = (a: ArrayBufferView): Uint8Array | undefined => {
    applyLimit();
    const len = a.byteLength;
    if (len === 0 || memory.holds(a) || !memory.fitsTensor(len)) return undefined;
    const ptr = w.alloc(len);
    if (ptr === 0) return undefined;
    const block = memory.block(ptr, len, dealloc);
    block.set(bytesOf(a));
    return block;
  };
  return {
    name: 'wasm',
    execute,
    executeAsync: async (req, inputs) => execute(req, inputs),
    place,
    adopt: (view, source) => memory.adopt(view, source),
  };
}

let loaded: Backend | undefined;

function load(): Backend {
  const forced = process.env.CROSSDEV_BACKEND;
  if (forced !== undefined && forced !== '' && forced !== 'native' && forced !== 'wasm') {
    throw new CrossDeviceError('ERR_BACKEND', `CROSSDEV_BACKEND must be 'native' or 'wasm', got '${forced}'`);
  }
  const order: BackendName[] = forced ? [forced as BackendName] : ['native', 'wasm'];
  const reasons: string[] = [];
  for (const name of order) {
    try {
      return name === 'native' ? loadNative() : loadWasm();
    } catch (e) {
      reasons.push(`${name}: ${(e as Error).message}`);
    }
  }
  throw new CrossDeviceError(
    'ERR_BACKEND',
    `crossdev could not load its ${order.join(' or ')} backend (${reasons.join('; ')}). ` +
      `Build it with \`npm run setup\`, or install the platform package ${platformPackage}.`,
  );
}

/** The loaded core (loading it on first use). */
export function core(): Backend {
  loaded ??= load();
  return loaded;
}

/** The loaded core's calls with `CROSSDEV_DEBUG` honoured: made once, as {@link call} is per request. */
const debugged: Pick<Backend, 'execute' | 'executeAsync'> = {
  execute: (req, inputs) => core().execute(withDebug(req), inputs),
  executeAsync: (req, inputs, offThread) => core().executeAsync(withDebug(req), inputs, offThread),
};

/** The loaded core (loading it now if need be), with `CROSSDEV_DEBUG` honoured on every request. */
export function call(): Pick<Backend, 'execute' | 'executeAsync'> {
  core();
  return debugged;
}

/**
 * A copy of `a` in the core's own memory, where operations read it in place: on the WebAssembly
 * backend, unless `a` is there already or WebAssembly memory holds too much (see
 * wasm_memory.ts); undefined otherwise (the native addon reads JavaScript memory in place).
 */
export function intoCoreMemory(a: ArrayBufferView): Uint8Array | undefined {
  return core().place(a);
}

/**
 * `view`, a view of the same bytes as `source` (a result buffer, or a block from
 * {@link intoCoreMemory}), made to keep them allocated for as long as `source` would.
 */
export function withLifetimeOf<T extends ArrayBufferView>(view: T, source: ArrayBufferView): T {
  core().adopt(view, source);
  return view;
}

/** Which backend runs crossdev's operations: `'native'` or `'wasm'`. */
export function backend(): BackendName {
  return core().name;
}
