/**
 * `crossdev bench`: all-reduce (reduce, then the result on every device) on N virtual CPU
 * devices over sizes 4 B … 64 MB, printed like nccl-tests' all_reduce_perf, each result checked
 * against a plain loop. Also measures the memory-copy bandwidth of this process, to show how
 * close each size comes to the bound: an all-reduce of S bytes over N devices must read N·S and
 * write N·S bytes, the traffic of N copies of S bytes.
 */
import { writeFileSync } from 'node:fs';
import { backend, CrossDeviceError, PerDevice, ReductionToOneDevice, tensor, utils, type DType, type Mirrored, type Tensor, type TypedArray } from '../index.js';
import { copyBandwidth, machine } from '../measure.js';
import type { ReduceOp } from '../ops.js';
import { choice, integer, UsageError } from './args.js';
import { lineChart } from './plot.js';

const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64'] as const;
const OPS = ['SUM', 'MEAN', 'MAX', 'MIN', 'PRODUCT'] as const;
const BYTES: Record<DType, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2, int32: 4, int64: 8 };
// Small integers represent exactly in every dtype, and so do their sums, means and products here.
const HALF_BITS: Record<number, Record<'float16' | 'bfloat16', number>> = { 1: { float16: 0x3c00, bfloat16: 0x3f80 }, 2: { float16: 0x4000, bfloat16: 0x4000 } };

export const BENCH_HELP = `crossdev bench: all-reduce bandwidth on virtual CPU devices (like nccl-tests' all_reduce_perf)

Usage: crossdev bench [--alg A] [--devices N] [--dtype T] [--op OP] [--backend native|wasm]
                      [--min-bytes B] [--max-bytes B] [--sync] [--json] [--out FILE] [--plot FILE]

  --alg A         what to time: op (ReductionToOneDevice.reduce, default), reduce_to_one, ring,
                  rechd, shuffle, hierarchical_copy, nccl (plans), or all (every plan)
  --devices N     virtual devices /cpu:0 … /cpu:N-1 (default 8)
  --dtype T       ${DTYPES.join(', ')} (default float32)
  --op OP         ${OPS.join(', ')} (default SUM)
  --backend B     force the native addon or the WebAssembly module (default: native if it loads)
  --min-bytes B   smallest size per device (default 4); sizes grow ×4
  --max-bytes B   largest size per device (default 67108864 = 64 MB)
  --sync          time reduceSync instead of the Promise-returning reduce
  --json          print JSON instead of the table
  --out FILE      also write the JSON to FILE
  --plot FILE     also draw busbw against size, one line per algorithm, as SVG

Columns: size (bytes per device), count (elements), type, redop, time (µs per all-reduce),
algbw (size/time), busbw (algbw·2(n-1)/n, as nccl-tests), #wrong (elements differing from a
plain loop), bound% (the time to copy the bytes the operation must move at the memory-copy
bandwidth measured in this run, over the time: N·size for op, the plan's cross-device bytes
for plans).
Exit codes: 0 all results right, 1 some result wrong, 2 bad arguments.`;

/** One row of the table. */
export interface BenchRow {
  alg: string;
  size: number;
  count: number;
  dtype: DType;
  op: string;
  timeUs: number;
  algbwGBs: number;
  busbwGBs: number;
  wrong: number;
  boundTimeUs: number;
  ofBound: number;
}

function inputValue(d: number, i: number): number {
  return 1 + ((i + d) & 1);
}

function makeInput(dtype: DType, count: number, d: number): TypedArray {
  switch (dtype) {
    case 'float32':
    case 'float64':
    case 'int32': {
      const a = dtype === 'float32' ? new Float32Array(count) : dtype === 'float64' ? new Float64Array(count) : new Int32Array(count);
      for (let i = 0; i < count; i++) a[i] = inputValue(d, i);
      return a;
    }
    case 'int64': {
      const a = new BigInt64Array(count);
      for (let i = 0; i < count; i++) a[i] = BigInt(inputValue(d, i));
      return a;
    }
    default: {
      const a = new Uint16Array(count);
      for (let i = 0; i < count; i++) a[i] = HALF_BITS[inputValue(d, i)][dtype];
      return a;
    }
  }
}

function expected(op: string, n: number, i: number): number {
  const xs = Array.from({ length: n }, (_, d) => inputValue(d, i));
  switch (op) {
    case 'SUM':
      return xs.reduce((a, b) => a + b);
    case 'MEAN':
      return xs.reduce((a, b) => a + b) / n;
    case 'MAX':
      return Math.max(...xs);
    case 'MIN':
      return Math.min(...xs);
    default:
      return xs.reduce((a, b) => a * b);
  }
}

function countWrong(out: Tensor, dtype: DType, op: string, n: number): number {
  const values = out.toArray();
  let wrong = 0;
  // The pattern of inputs repeats every 2 elements, so 2 expected values cover every element.
  const want = [0, 1].map((i) => expected(op, n, i));
  for (let i = 0; i < values.length; i++) {
    let w = want[i & 1];
    if (dtype.startsWith('int') && op === 'MEAN') w = Math.trunc(w);
    if (Number(values[i]) !== w) wrong++;
  }
  return wrong;
}

function progress(done: number, total: number, label: string): void {
  if (!process.stderr.isTTY) return;
  const width = 30;
  const filled = Math.round((done / total) * width);
  process.stderr.write(`\r[${'#'.repeat(filled)}${'.'.repeat(width - filled)}] ${done}/${total} ${label}   `);
  if (done === total) process.stderr.write('\n');
}

function human(bytes: number): string {
  if (bytes >= 1 << 20) return `${bytes / (1 << 20)} MB`;
  if (bytes >= 1 << 10) return `${bytes / (1 << 10)} KB`;
  return `${bytes} B`;
}

/** The algorithms `--alg` accepts; `op` is the ReductionToOneDevice op the default table times. */
export const ALGS = ['op', 'reduce_to_one', 'ring', 'rechd', 'shuffle', 'hierarchical_copy', 'nccl'] as const;
type Alg = (typeof ALGS)[number];

/** What one table times: a function running an all-reduce of `pd`, and the bytes it must move. */
interface Case {
  run(): Promise<Mirrored>;
  boundBytes: number;
}

function makeCase(alg: Alg, pd: PerDevice, names: string[], count: number, dtype: DType, op: ReduceOp, sync: boolean): Case {
  const size = count * BYTES[dtype];
  if (alg === 'op') {
    const ops = new ReductionToOneDevice();
    // Reduce + broadcast reads N inputs and writes N outputs: the traffic of N copies.
    return { run: () => (sync ? Promise.resolve(ops.reduceSync(op, pd, pd)) : ops.reduce(op, pd, pd)), boundBytes: names.length * size };
  }
  const o = { devices: names, elements: count, dtype };
  const plan =
    alg === 'ring' ? utils.buildRingAllReduce(o)
    : alg === 'rechd' ? utils.buildRecursiveHdAllReduce(o)
    : alg === 'shuffle' ? utils.buildShuffleAllReduce({ ...o, gatherDevices: names })
    : alg === 'hierarchical_copy' ? utils.buildHierarchicalCopy(o)
    : alg === 'nccl' ? utils.buildNcclAllReduce(o)
    : utils.buildReduceToOne(o);
  // A plan cannot beat copying the bytes it moves between devices.
  return { run: () => (sync ? Promise.resolve(plan.runSync(pd, op)) : plan.run(pd, op)), boundBytes: plan.bytesMoved().total };
}

/** Times `alg` over every size; rows, or the reason it cannot run at some size. */
async function benchAlg(alg: Alg, names: string[], dtype: DType, op: ReduceOp, sizes: number[], sync: boolean, copyBw: number, json: boolean): Promise<BenchRow[]> {
  const devices = names.length;
  const rows: BenchRow[] = [];
  if (!json) {
    console.log(`# ${alg === 'op' ? 'ReductionToOneDevice (reduce, then the result on every device)' : `plan ${alg}`}: ${devices} virtual CPU devices, backend ${backend()}, ${sync ? 'sync' : 'async'}`);
    console.log(`#${'size'.padStart(11)}${'count'.padStart(12)}${'type'.padStart(10)}${'redop'.padStart(9)}${'time(us)'.padStart(12)}${'algbw(GB/s)'.padStart(13)}${'busbw(GB/s)'.padStart(13)}${'#wrong'.padStart(8)}${'bound%'.padStart(8)}`);
  }
  for (const [k, size] of sizes.entries()) {
    progress(k, sizes.length, `${alg} ${human(size)}`);
    const count = size / BYTES[dtype];
    const pd = new PerDevice(names.map((d, i) => [d, tensor(makeInput(dtype, count, i), [count], { dtype, device: d })] as const));
    let c: Case;
    let first: Mirrored | undefined;
    try {
      c = makeCase(alg, pd, names, count, dtype, op, sync);
      first = await c.run();
    } catch (e) {
      if (!(e instanceof CrossDeviceError)) throw e;
      if (!json) console.log(` ${String(size).padStart(11)}${String(count).padStart(12)}  skipped: ${e.message}`);
      continue;
    }
    const wrong = first.devices.reduce((w, d) => w + countWrong(first!.get(d) as Tensor, dtype, op, devices), 0);
    first = undefined;
    // A second untimed run warms the allocator's pool; then at least 5 runs and half a second.
    await c.run();
    let iters = 0;
    const start = process.hrtime.bigint();
    let elapsed = 0;
    while ((elapsed < 0.5 && iters < 10000) || iters < 5) {
      await c.run();
      // Let the event loop turn, so that results dropped by the last run are freed (as in a
      // training loop), also after the Sync forms.
      await new Promise((resolve) => setImmediate(resolve));
      iters++;
      elapsed = Number(process.hrtime.bigint() - start) / 1e9;
    }
    const time = elapsed / iters;
    const algbw = size / time / 1e9;
    const boundTime = c.boundBytes / copyBw;
    const row: BenchRow = {
      alg,
      size,
      count,
      dtype,
      op,
      timeUs: time * 1e6,
      algbwGBs: algbw,
      busbwGBs: devices > 1 ? (algbw * 2 * (devices - 1)) / devices : algbw,
      wrong,
      boundTimeUs: boundTime * 1e6,
      ofBound: boundTime / time,
    };
    rows.push(row);
    if (!json) {
      console.log(
        ` ${String(size).padStart(11)}${String(count).padStart(12)}${dtype.padStart(10)}${op.padStart(9)}${row.timeUs.toFixed(1).padStart(12)}${algbw.toFixed(2).padStart(13)}${row.busbwGBs.toFixed(2).padStart(13)}${String(wrong).padStart(8)}${(row.ofBound * 100).toFixed(1).padStart(8)}`,
      );
    }
  }
  progress(sizes.length, sizes.length, 'done');
  if (!json) console.log('#');
  return rows;
}

/** Runs the benchmark described by the flags and prints it; returns the exit code. */
export async function bench(flags: Map<string, string | true>): Promise<number> {
  const devices = integer(flags, 'devices', 1, 64, 8);
  const dtype = choice(flags, 'dtype', DTYPES, 'float32');
  const op = choice(flags, 'op', OPS, 'SUM');
  const backendFlag = flags.get('backend');
  if (backendFlag !== undefined) process.env.CROSSDEV_BACKEND = choice(flags, 'backend', ['native', 'wasm'] as const, 'native');
  const algFlag = choice(flags, 'alg', [...ALGS, 'all'] as const, 'op');
  const algs: Alg[] = algFlag === 'all' ? ALGS.filter((a) => a !== 'op') : [algFlag];
  const minBytes = integer(flags, 'min-bytes', 1, 2 ** 31, 4);
  const maxBytes = integer(flags, 'max-bytes', 1, 2 ** 31, 64 << 20);
  const sync = flags.get('sync') === true;
  const json = flags.get('json') === true;
  const out = flags.get('out');
  if (out === true) throw new UsageError('--out needs a file name');
  const plot = flags.get('plot');
  if (plot === true) throw new UsageError('--plot needs a file name');

  const names = Array.from({ length: devices }, (_, d) => `/cpu:${d}`);
  const sizes: number[] = [];
  for (let s = minBytes; s <= maxBytes; s *= 4) if (s >= BYTES[dtype]) sizes.push(s - (s % BYTES[dtype]));
  const copy = await copyBandwidth(Math.min(Math.max(maxBytes, 1 << 20), 64 << 20));
  const copyBw = copy.allThreads;
  if (!json) {
    console.log(
      `# crossdev bench: backend ${backend()}; memory-copy bandwidth measured in this process: ${(copy.allThreads / 1e9).toFixed(2)} GB/s on ${copy.threads} threads (${(copy.oneThread / 1e9).toFixed(2)} GB/s on one)`,
    );
    console.log(`# bound% = (bytes the operation must move / ${(copyBw / 1e9).toFixed(2)} GB/s) / time`);
    console.log('#');
  }
  const rows: BenchRow[] = [];
  for (const alg of algs) rows.push(...(await benchAlg(alg, names, dtype, op, sizes, sync, copyBw, json)));
  const totalWrong = rows.reduce((w, r) => w + r.wrong, 0);
  const report = {
    tool: 'crossdev bench',
    command: `crossdev bench ${process.argv.slice(3).join(' ')}`.trim(),
    date: new Date().toISOString(),
    machine: machine(),
    backend: backend(),
    devices,
    dtype,
    op,
    async: !sync,
    copyBandwidthGBs: { allThreads: copy.allThreads / 1e9, oneThread: copy.oneThread / 1e9 },
    node: process.version,
    rows,
  };
  if (json) console.log(JSON.stringify(report, null, 2));
  else console.log(`# ${totalWrong === 0 ? 'all results right' : `${totalWrong} wrong elements`}`);
  if (typeof out === 'string') writeFileSync(out, JSON.stringify(report, null, 2));
  if (typeof plot === 'string') {
    const series = algs.map((alg) => ({ name: alg === 'op' ? 'ReductionToOneDevice' : alg, points: rows.filter((r) => r.alg === alg).map((r) => [r.size, r.busbwGBs] as [number, number]) }));
    writeFileSync(plot, lineChart(series, `crossdev all-reduce, ${devices} virtual CPU devices, ${dtype} ${op}, ${backend()}`, 'bytes per device', 'busbw (GB/s)'));
    if (!json) console.log(`# chart: ${plot}`);
  }
  return totalWrong === 0 ? 0 : 1;
}
