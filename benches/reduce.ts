/**
 * Case `reduce`: N devices × S bytes of float32, summed. Two things are timed for every
 * implementation:
 *   all-reduce  the sum on all N devices (crossdev: `ReductionToOneDevice().reduce(SUM, pd, pd)`;
 *               peers: the sum, then copied into N preallocated outputs; torch gloo: an
 *               all_reduce over N processes);
 *   reduce      the sum once (crossdev: destination one device, `/cpu:0`; peers: the sum alone).
 * The bound is the time the memory traffic takes at the copy bandwidth of copies of S bytes,
 * measured in this process on every core: an all-reduce reads N·S and writes N·S bytes (the
 * traffic of N copies of S bytes), a reduce reads N·S and writes S ((N+1)/2 copies).
 */
import { copyBandwidth, type CopyBandwidth } from '../ts/measure.js';
import { BACKENDS, type CaseReport, checkMirrored, countWrong, expectedSum, formatUs, human, makeInput, measure, onBackend, printTable, times, type Measured, type Stats, type Timing } from './lib.js';
import { PEERS } from './peers.js';
import { OMP_WAIT_POLICY, runTorch, type TorchResult } from './torch.js';

/** The two things timed. */
export const VARIANTS = ['all-reduce', 'reduce'] as const;
/** One of {@link VARIANTS}. */
export type Variant = (typeof VARIANTS)[number];

/** What each implementation computes, per variant (printed and written to the report). */
export const COMPUTES: Record<string, Record<Variant, string>> = {
  bound: { 'all-reduce': 'N·S bytes at the copy bandwidth', reduce: '(N+1)·S/2 bytes at the copy bandwidth' },
  crossdev: { 'all-reduce': 'ReductionToOneDevice().reduce(SUM, pd, pd): a new result on each of the N devices', reduce: "reduce(SUM, pd, '/cpu:0'): one new result" },
  ts: { 'all-reduce': 'one loop over the elements summing the N inputs into output 0, then output 0 copied into outputs 1…N-1 (preallocated)', reduce: 'the same loop into one preallocated output' },
  tfjs: { 'all-reduce': 'tf.addN(xs).dataSync(), copied into N preallocated outputs', reduce: 'tf.addN(xs).dataSync()' },
  'torch-stack': { 'all-reduce': 'torch.stack(xs).sum(0), copied into N preallocated tensors', reduce: 'torch.stack(xs).sum(0)' },
  'torch-gloo': { 'all-reduce': 'dist.all_reduce(x, SUM), gloo, N processes of one thread each (in place)', reduce: '' },
};

/** One measured implementation at one size. */
export interface ReduceRow extends Measured {
  /** Implementation: bound, native, wasm, ts, tfjs-cpu, tfjs-wasm, torch-stack, torch-gloo. */
  impl: string;
  name: string;
  variant: Variant;
  bytes: number;
  /** N·S / median time, GB/s. */
  gbs: number;
  /** Bound time / median time. */
  ofBound: number;
  /** This row's median time over crossdev native's (same size and variant): how many times faster native is. */
  nativeSpeedup?: number;
  /** The same for crossdev wasm. */
  wasmSpeedup?: number;
}

/** Options of {@link reduceCase}. */
export interface ReduceOptions {
  devices: number;
  sizes: number[];
  timing: Timing;
  /** Implementations to run (keys of {@link ReduceRow.impl}). */
  impls: ReadonlySet<string>;
  /** Why torch is skipped, or undefined to run it. */
  torchSkip: string | undefined;
}

/** crossdev's rows on this thread's backend (run in a worker by {@link onBackend}). */
export async function crossdevRows(a: { devices: number; sizes: number[]; timing: Timing }): Promise<{ backend: string; rows: { bytes: number; variant: Variant; m: Measured }[] }> {
  const { backend, PerDevice, ReduceOp, ReductionToOneDevice, tensor } = await import('../ts/index.js');
  const names = Array.from({ length: a.devices }, (_, d) => `/cpu:${d}`);
  const ops = new ReductionToOneDevice();
  const rows: { bytes: number; variant: Variant; m: Measured }[] = [];
  for (const bytes of a.sizes) {
    const count = bytes / 4;
    const pd = new PerDevice(names.map((d, i) => [d, tensor(makeInput(i, count), [count], { device: d })] as const));
    const want = expectedSum(a.devices, count);
    rows.push({ bytes, variant: 'all-reduce', m: await measure(() => ops.reduce(ReduceOp.SUM, pd, pd), (r) => checkMirrored(r, names, want), a.timing) });
    rows.push({ bytes, variant: 'reduce', m: await measure(() => ops.reduce(ReduceOp.SUM, pd, names[0]), (r) => checkMirrored(r, names.slice(0, 1), want), a.timing) });
  }
  return { backend: backend(), rows };
}

function boundStats(us: number): Stats {
  return { medianUs: us, p99Us: us, minUs: us, iters: 0 };
}

/** Runs the case: prints a table per size and returns the report's body. */
export async function reduceCase(o: ReduceOptions): Promise<CaseReport> {
  const { devices: n, sizes, timing, impls } = o;
  const measured: Omit<ReduceRow, 'gbs' | 'ofBound'>[] = [];
  const bandwidth = new Map<number, CopyBandwidth>();
  for (const bytes of sizes) {
    const bw = await copyBandwidth(bytes);
    bandwidth.set(bytes, bw);
    measured.push({ impl: 'bound', name: 'bound (copy)', variant: 'all-reduce', bytes, stats: boundStats(((n * bytes) / bw.allThreads) * 1e6), wrong: 0 });
    measured.push({ impl: 'bound', name: 'bound (copy)', variant: 'reduce', bytes, stats: boundStats(((((n + 1) / 2) * bytes) / bw.allThreads) * 1e6), wrong: 0 });
  }
  for (const backend of BACKENDS.filter((b) => impls.has(b))) {
    console.error(`# crossdev ${backend} …`);
    const r = await onBackend<Awaited<ReturnType<typeof crossdevRows>>>(backend, import.meta.url, 'crossdevRows', { devices: n, sizes, timing });
    if (r.backend !== backend) throw new Error(`asked for crossdev's ${backend} backend, got ${r.backend}`);
    for (const row of r.rows) measured.push({ impl: backend, name: `crossdev ${backend}`, variant: row.variant, bytes: row.bytes, ...row.m });
  }
  for (const peer of PEERS.filter((p) => impls.has(p.key))) {
    console.error(`# ${peer.name} …`);
    for (const bytes of sizes) {
      const count = bytes / 4;
      const xs = Array.from({ length: n }, (_, d) => makeInput(d, count));
      const want = expectedSum(n, count);
      const run = await peer.prepare(xs);
      measured.push({ impl: peer.key, name: peer.name, variant: 'all-reduce', bytes, ...(await measure(run.allReduce, (outs) => outs.reduce((w, out) => w + countWrong(out, want), 0), timing)) });
      measured.push({ impl: peer.key, name: peer.name, variant: 'reduce', bytes, ...(await measure(run.reduce, (out) => countWrong(out, want), timing)) });
      run.dispose();
    }
  }
  let torch: TorchResult | undefined;
  if (impls.has('torch') && o.torchSkip === undefined) {
    console.error('# torch …');
    torch = runTorch(n, sizes, ['stack', 'stack-copy', 'gloo'], timing);
    for (const r of torch.rows) {
      const [impl, name, variant]: [string, string, Variant] =
        r.variant === 'gloo' ? ['torch-gloo', 'torch gloo', 'all-reduce'] : ['torch-stack', 'torch stack-sum', r.variant === 'stack' ? 'reduce' : 'all-reduce'];
      measured.push({ impl, name, variant, bytes: r.bytes, stats: r.stats, wrong: r.wrong });
    }
  } else if (impls.has('torch')) {
    console.log(`# torch skipped: ${o.torchSkip}`);
  }

  const rows: ReduceRow[] = measured.map((m) => {
    const same = (impl: string) => measured.find((x) => x.impl === impl && x.bytes === m.bytes && x.variant === m.variant);
    const bound = same('bound')!.stats.medianUs;
    const [native, wasm] = [same('native'), same('wasm')];
    return {
      ...m,
      gbs: (n * m.bytes) / (m.stats.medianUs * 1e3),
      ofBound: bound / m.stats.medianUs,
      nativeSpeedup: native && m.impl !== 'native' && m.impl !== 'bound' ? m.stats.medianUs / native.stats.medianUs : undefined,
      wasmSpeedup: wasm && m.impl !== 'wasm' && m.impl !== 'bound' ? m.stats.medianUs / wasm.stats.medianUs : undefined,
    };
  });
  for (const bytes of sizes) {
    const bw = bandwidth.get(bytes)!;
    console.log(`\n## reduce: ${n} devices × ${human(bytes)} float32, SUM; copy bandwidth at ${human(bytes)}: ${(bw.allThreads / 1e9).toFixed(2)} GB/s on ${bw.threads} threads (${(bw.oneThread / 1e9).toFixed(2)} on one)`);
    printTable(
      ['implementation', 'variant', 'median', 'p99', 'GB/s', 'of bound', 'native ×', 'wasm ×', 'calls', '#wrong'],
      VARIANTS.flatMap((v) =>
        rows
          .filter((r) => r.bytes === bytes && r.variant === v)
          .map((r) => [r.name, v, formatUs(r.stats.medianUs), r.impl === 'bound' ? '' : formatUs(r.stats.p99Us), r.gbs.toFixed(2), times(r.ofBound), times(r.nativeSpeedup), times(r.wasmSpeedup), String(r.stats.iters), String(r.wrong)]),
      ),
    );
  }
  console.log('# GB/s: N·S bytes of input over the median time; of bound: bound time / time; native ×, wasm ×: this time / crossdev’s (how many times faster crossdev is)');
  return {
    devices: n,
    dtype: 'float32',
    op: 'SUM',
    sizes,
    timing,
    copyBandwidthGBs: Object.fromEntries([...bandwidth].map(([b, bw]) => [b, { allThreads: bw.allThreads / 1e9, oneThread: bw.oneThread / 1e9, threads: bw.threads }])),
    computes: COMPUTES,
    torch: torch ? { version: torch.torch, threads: torch.threads, OMP_WAIT_POLICY } : { skipped: o.torchSkip ?? 'not asked for' },
    rows,
  };
}
