/**
 * What every benchmark case shares: timing with per-call samples, the input pattern and its
 * reference sums (every result is checked, so that a fast wrong answer cannot win), running a
 * crossdev measurement on a chosen backend (a worker thread: the backend is chosen once per
 * thread), tables and the JSON reports in `benches/results/`.
 */
import { execSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { Worker } from 'node:worker_threads';
import type { Mirrored } from '../ts/index.js';
import { machine, type Machine } from '../ts/measure.js';

/** How long to time one implementation: at least `minIters` calls and `minTimeS` seconds. */
export interface Timing {
  /** Untimed calls first (allocator pools, JIT, caches). */
  warmup: number;
  minIters: number;
  maxIters: number;
  minTimeS: number;
}

/** Per-call times of one implementation, in microseconds. */
export interface Stats {
  medianUs: number;
  p99Us: number;
  minUs: number;
  iters: number;
}

/** The statistics of per-call samples (microseconds). */
export function stats(samplesUs: number[]): Stats {
  const s = [...samplesUs].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))];
  return { medianUs: at(0.5), p99Us: at(0.99), minUs: s[0], iters: s.length };
}

/** What a case returns: its rows and whatever else its report holds. */
export interface CaseReport {
  rows: Measured[];
  [key: string]: unknown;
}

/** A measurement: its timing and the elements its results got wrong. */
export interface Measured {
  stats: Stats;
  wrong: number;
}

/**
 * Times `call` (sync or async) one call at a time; checks the results of the first (warm-up)
 * call and of one more call after the timed ones with `check` (the number of wrong elements).
 * Timed results are dropped at once and the event loop turns between calls, untimed, so that
 * they are freed (and crossdev's pool reuses their memory) as in a training loop.
 */
export async function measure<R>(call: () => R | Promise<R>, check: (result: R) => number, timing: Timing): Promise<Measured> {
  let wrong = check(await call());
  for (let i = 1; i < timing.warmup; i++) await call();
  const samples: number[] = [];
  const start = process.hrtime.bigint();
  let elapsed = 0;
  while (samples.length < timing.minIters || (elapsed < timing.minTimeS && samples.length < timing.maxIters)) {
    const t = process.hrtime.bigint();
    await call();
    samples.push(Number(process.hrtime.bigint() - t) / 1e3);
    await new Promise((resolve) => setImmediate(resolve));
    elapsed = Number(process.hrtime.bigint() - start) / 1e9;
  }
  wrong += check(await call());
  return { stats: stats(samples), wrong };
}

/**
 * Element `i` of device `d`'s input: a pseudo-random integer in [0, 31] (Knuth's multiplicative
 * hash, no short period, so that misplaced chunks show), exact in every float type, as are sums
 * of up to 2^19 of them.
 */
export function inputValue(d: number, i: number): number {
  return Math.imul(i + d * 977 + 1, 0x9e3779b1) >>> 27;
}

/** Device `d`'s input: elements `offset` … `offset + count - 1` of its pattern. */
export function makeInput(d: number, count: number, offset = 0): Float32Array {
  const a = new Float32Array(count);
  for (let i = 0; i < count; i++) a[i] = inputValue(d, offset + i);
  return a;
}

/** The reference: the sum over `devices` devices of elements `offset` … `offset + count - 1`. */
export function expectedSum(devices: number, count: number, offset = 0): Float32Array {
  const a = new Float32Array(count);
  for (let i = 0; i < count; i++) {
    let s = 0;
    for (let d = 0; d < devices; d++) s += inputValue(d, offset + i);
    a[i] = s;
  }
  return a;
}

/** Elements of `got` that differ from `want` (a missing or extra element counts as wrong). */
export function countWrong(got: ArrayLike<number>, want: ArrayLike<number>): number {
  let wrong = Math.abs(got.length - want.length);
  const n = Math.min(got.length, want.length);
  for (let i = 0; i < n; i++) if (got[i] !== want[i]) wrong++;
  return wrong;
}

/** `4KB`, `1MB`, `64MB`, `1024` … as bytes. */
export function parseBytes(s: string): number {
  const m = /^(\d+)\s*(B|KB|MB|GB)?$/i.exec(s.trim());
  if (!m) throw new Error(`not a size: '${s}' (e.g. 4KB, 1MB, 64MB)`);
  return Number(m[1]) * { B: 1, KB: 1 << 10, MB: 1 << 20, GB: 1 << 30 }[(m[2] ?? 'B').toUpperCase() as 'B' | 'KB' | 'MB' | 'GB'];
}

/** Bytes as `4 KB`, `1 MB`, `97.5 MB`. */
export function human(bytes: number): string {
  const units: [number, string][] = [[1 << 30, 'GB'], [1 << 20, 'MB'], [1 << 10, 'KB']];
  for (const [size, unit] of units) if (bytes >= size) return `${Number((bytes / size).toFixed(1))} ${unit}`;
  return `${bytes} B`;
}

/** Milliseconds or microseconds, whichever reads better. */
export function formatUs(us: number): string {
  return us >= 1000 ? `${(us / 1000).toFixed(us >= 1e5 ? 0 : 1)} ms` : `${us.toFixed(us >= 100 ? 0 : 1)} µs`;
}

/** The crossdev backends a benchmark runs on. */
export const BACKENDS = ['native', 'wasm'] as const;
/** One of {@link BACKENDS}. */
export type BackendName = (typeof BACKENDS)[number];

/**
 * Calls `module`'s export `name` with `args` in a worker thread on `backend` (crossdev picks its
 * backend once per thread, from `CROSSDEV_BACKEND`), in this process, and returns its result.
 */
export async function onBackend<T>(backend: BackendName, module: string, name: string, args: unknown): Promise<T> {
  // tsx's loader is registered in the worker by hand: Node 20 does not pass it on to workers.
  const code = `
    const { parentPort, workerData } = require('node:worker_threads');
    import('tsx/esm/api')
      .then((tsx) => { tsx.register(); return import(workerData.module); })
      .then((m) => m[workerData.name](workerData.args))
      .then((r) => parentPort.postMessage(r));`;
  const worker = new Worker(code, { eval: true, workerData: { module, name, args }, env: { ...process.env, CROSSDEV_BACKEND: backend } });
  try {
    return await new Promise<T>((resolve, reject) => {
      worker.once('message', resolve).once('error', reject);
      worker.once('exit', (code) => reject(new Error(`the ${backend} worker exited with code ${code} before answering`)));
    });
  } finally {
    await worker.terminate();
  }
}

/** Prints a table: a header row, then rows, columns right-aligned but the first. */
export function printTable(header: string[], rows: string[][]): void {
  const widths = header.map((h, c) => Math.max(h.length, ...rows.map((r) => r[c].length)));
  const line = (r: string[]) => r.map((x, c) => (c === 0 ? x.padEnd(widths[c]) : x.padStart(widths[c]))).join('  ');
  console.log(line(header));
  for (const r of rows) console.log(line(r));
}

/** A ratio as `0.83×`, or `–` when there is none. */
export function times(x: number | undefined): string {
  return x === undefined || !Number.isFinite(x) ? '–' : `${x >= 10 ? x.toFixed(0) : x >= 1 ? x.toFixed(2) : x.toFixed(3)}×`;
}

/** Where and when a report was made, and the command that reproduces it. */
export interface RunInfo {
  date: string;
  commit: string;
  command: string;
  machine: Machine & { node: string };
}

/** Describes this run: machine, Node.js version, date, git commit, the command. */
export function runInfo(argv: string[]): RunInfo {
  let commit = 'unknown';
  try {
    commit = execSync('git describe --always --dirty', { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    // Not a git checkout: the commit stays unknown.
  }
  return {
    date: new Date().toISOString(),
    commit,
    command: `npm run bench${argv.length ? ` -- ${argv.join(' ')}` : ''}`,
    machine: { ...machine(), node: process.version },
  };
}

/** Writes `report` to `benches/results/<name>.json`. */
export function writeReport(name: string, report: object): string {
  const url = new URL(`results/${name}.json`, import.meta.url);
  writeFileSync(url, `${JSON.stringify(report, null, 2)}\n`);
  return url.pathname;
}

/**
 * Wrong elements of a crossdev result that should hold `want` on each of `devices` and nowhere
 * else (every element of a missing or extra device counts as wrong).
 */
export function checkMirrored(result: Mirrored, devices: readonly string[], want: Float32Array): number {
  let wrong = Math.max(0, result.size - devices.length) * want.length;
  for (const d of devices) {
    let value: unknown;
    try {
      value = result.get(d);
    } catch {
      // Not on that device: all of it is wrong.
    }
    wrong += value instanceof Object && 'data' in value ? countWrong(value.data as Float32Array, want) : want.length;
  }
  return wrong;
}
