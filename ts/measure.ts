/**
 * Measurements shared by `crossdev bench` and the comparison benchmarks in `benches/`: the
 * machine's memory-copy bandwidth (the bound a memory-bound reduction cannot beat) and a
 * description of the machine.
 */
import { availableParallelism, cpus, totalmem } from 'node:os';
import { Worker } from 'node:worker_threads';

/** Memory-copy bandwidth in bytes per second: one thread, and every core at once. */
export interface CopyBandwidth {
  oneThread: number;
  allThreads: number;
  threads: number;
}

/** Bytes per second of `TypedArray.set` copies of `bytes` on one thread. */
function copyBandwidthOneThread(bytes: number): number {
  const src = new Uint8Array(bytes).fill(1);
  const dst = new Uint8Array(bytes);
  dst.set(src);
  let iters = 0;
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (elapsed < 0.2 || iters < 3) {
    dst.set(src);
    iters++;
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  return (bytes * iters) / elapsed;
}

const COPY_WORKER = `
const { parentPort, workerData } = require('node:worker_threads');
const { bytes, iters, gate } = workerData;
const src = new Uint8Array(bytes).fill(1), dst = new Uint8Array(bytes);
dst.set(src);
const flag = new Int32Array(gate);
Atomics.add(flag, 1, 1);
Atomics.wait(flag, 0, 0);
const t = process.hrtime.bigint();
for (let i = 0; i < iters; i++) dst.set(src);
parentPort.postMessage(Number(process.hrtime.bigint() - t) / 1e9);
`;

/**
 * The machine's memory-copy bandwidth for copies of `bytes`: one `TypedArray.set` loop per
 * core, all started together, total bytes over the slowest's time. The bound an operation using
 * every core cannot beat.
 */
export async function copyBandwidth(bytes: number): Promise<CopyBandwidth> {
  const oneThread = copyBandwidthOneThread(bytes);
  const threads = availableParallelism();
  const iters = Math.max(3, Math.ceil((0.3 * oneThread) / bytes));
  const gate = new SharedArrayBuffer(8);
  const flag = new Int32Array(gate);
  const workers = Array.from({ length: threads }, () => new Worker(COPY_WORKER, { eval: true, workerData: { bytes, iters, gate } }));
  while (Atomics.load(flag, 1) < threads) await new Promise((r) => setTimeout(r, 5));
  const times = workers.map((w) => new Promise<number>((resolve, reject) => w.once('message', resolve).once('error', reject)));
  Atomics.store(flag, 0, 1);
  Atomics.notify(flag, 0);
  const elapsed = Math.max(...(await Promise.all(times)));
  await Promise.all(workers.map((w) => w.terminate()));
  return { oneThread, allThreads: (threads * iters * bytes) / elapsed, threads };
}

/** The machine a benchmark ran on. */
export interface Machine {
  /** CPU model. */
  cpus: string | undefined;
  /** Hardware threads available to this process. */
  threads: number;
  /** Memory, GiB. */
  memoryGB: number;
}

/** Describes this machine. */
export function machine(): Machine {
  return { cpus: cpus()[0]?.model, threads: availableParallelism(), memoryGB: Math.round(totalmem() / 2 ** 30) };
}
