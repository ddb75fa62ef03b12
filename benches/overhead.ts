/**
 * Case `overhead`: the cost of one call, 2 devices × 1 float32 element, all-reduced (the sum on
 * both devices): crossdev's `reduceSync` (on the calling thread) and `reduce` (a Promise; on the
 * native backend the work runs on libuv's pool), each call timed on its own, median and p99; the
 * peers the same way (their all-reduce form, see reduce.ts).
 */
import { BACKENDS, type CaseReport, checkMirrored, countWrong, expectedSum, makeInput, measure, onBackend, printTable, times, type Measured, type Timing } from './lib.js';
import { PEERS } from './peers.js';
import { runTorch } from './torch.js';

const DEVICES = 2;
const COUNT = 1;

/** One measured way of calling. */
export interface OverheadRow extends Measured {
  impl: string;
  name: string;
  /** `reduceSync`, `reduce` (awaited), or the peer's call. */
  call: string;
  /** Median over crossdev native's `reduceSync` median. */
  ofNativeSync?: number;
}

/** crossdev's rows on this thread's backend (run in a worker by {@link onBackend}). */
export async function crossdevRows(a: { sync: Timing; async: Timing }): Promise<{ backend: string; rows: (Measured & { call: string })[] }> {
  const { backend, PerDevice, ReduceOp, ReductionToOneDevice, tensor } = await import('../ts/index.js');
  const names = Array.from({ length: DEVICES }, (_, d) => `/cpu:${d}`);
  const pd = new PerDevice(names.map((d, i) => [d, tensor(makeInput(i, COUNT), [COUNT], { device: d })] as const));
  const want = expectedSum(DEVICES, COUNT);
  const ops = new ReductionToOneDevice();
  const check = (r: Parameters<typeof checkMirrored>[0]) => checkMirrored(r, names, want);
  return {
    backend: backend(),
    rows: [
      { call: 'reduceSync', ...(await measure(() => ops.reduceSync(ReduceOp.SUM, pd, pd), check, a.sync)) },
      { call: 'reduce (await)', ...(await measure(() => ops.reduce(ReduceOp.SUM, pd, pd), check, a.async)) },
    ],
  };
}

/** Options of {@link overheadCase}. */
export interface OverheadOptions {
  /** Timing of synchronous calls; `async` of Promise-returning ones and of PyTorch's (a process starts per run, gloo's calls cross processes). */
  sync: Timing;
  async: Timing;
  impls: ReadonlySet<string>;
  torchSkip: string | undefined;
}

/** Runs the case: prints its table and returns the report's body. */
export async function overheadCase(o: OverheadOptions): Promise<CaseReport> {
  const rows: OverheadRow[] = [];
  for (const backend of BACKENDS.filter((b) => o.impls.has(b))) {
    console.error(`# crossdev ${backend} …`);
    const r = await onBackend<Awaited<ReturnType<typeof crossdevRows>>>(backend, import.meta.url, 'crossdevRows', { sync: o.sync, async: o.async });
    if (r.backend !== backend) throw new Error(`asked for crossdev's ${backend} backend, got ${r.backend}`);
    rows.push(...r.rows.map((row) => ({ impl: backend, name: `crossdev ${backend}`, ...row })));
  }
  const xs = Array.from({ length: DEVICES }, (_, d) => makeInput(d, COUNT));
  const want = expectedSum(DEVICES, COUNT);
  for (const peer of PEERS.filter((p) => o.impls.has(p.key))) {
    const run = await peer.prepare(xs);
    const m = await measure(run.allReduce, (outs) => outs.reduce((w, out) => w + countWrong(out, want), 0), o.sync);
    rows.push({ impl: peer.key, name: peer.name, call: peer.key === 'ts' ? 'sum + copy' : 'addN + dataSync + copies', ...m });
    run.dispose();
  }
  if (o.impls.has('torch') && o.torchSkip === undefined) {
    console.error('# torch …');
    const torch = runTorch(DEVICES, [COUNT * 4], ['stack-copy', 'gloo'], o.async);
    for (const r of torch.rows) {
      const gloo = r.variant === 'gloo';
      rows.push({ impl: gloo ? 'torch-gloo' : 'torch-stack', name: gloo ? 'torch gloo' : 'torch stack-sum', call: gloo ? 'dist.all_reduce' : 'stack(xs).sum(0) + copies', stats: r.stats, wrong: r.wrong });
    }
  } else if (o.impls.has('torch')) {
    console.log(`# torch skipped: ${o.torchSkip}`);
  }
  const nativeSync = rows.find((r) => r.impl === 'native' && r.call === 'reduceSync');
  for (const r of rows) if (nativeSync && r !== nativeSync) r.ofNativeSync = r.stats.medianUs / nativeSync.stats.medianUs;
  console.log(`\n## overhead: ${DEVICES} devices × ${COUNT} float32 element, all-reduce (SUM, result on both devices), one call at a time`);
  printTable(
    ['implementation', 'call', 'median µs', 'p99 µs', 'min µs', '÷ native sync', 'calls', '#wrong'],
    rows.map((r) => [r.name, r.call, r.stats.medianUs.toFixed(2), r.stats.p99Us.toFixed(2), r.stats.minUs.toFixed(2), times(r.ofNativeSync), String(r.stats.iters), String(r.wrong)]),
  );
  return { devices: DEVICES, elements: COUNT, dtype: 'float32', op: 'SUM', timing: { sync: o.sync, async: o.async }, rows };
}
