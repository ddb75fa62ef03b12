/**
 * Case `resnet50`: ResNet-50's gradient list (161 float32 tensors, 25,557,032 parameters; shapes
 * in `benches/models/resnet50.json`) on N devices, all-reduced (the sum on every device) through
 * `batchReduce`, without and with packing, against one flat all-reduce of all 25.6 M elements by
 * the same op in the same run: `ReductionToOneDevice`, `AllReduceCrossDeviceOps('nccl')` with no
 * packing, `numPacks` and small-tensor aggregation, and `CollectiveAllReduce` unpacked and with
 * TF 2's `communicationOptions.bytesPerPack`.
 */
import { readFileSync } from 'node:fs';
import { copyBandwidth } from '../ts/measure.js';
import type { CrossDeviceOps, Mirrored } from '../ts/index.js';
import { BACKENDS, type CaseReport, checkMirrored, expectedSum, formatUs, human, makeInput, measure, onBackend, printTable, times, type Measured, type Timing } from './lib.js';

/** The model file: `{ tensors, parameters, shapes: [{ name, shape }] }`. */
export const MODEL = new URL('models/resnet50.json', import.meta.url);

/** Packing settings of the packed rows. */
export interface Packing {
  numPacks: number[];
  aggSmallGradsMaxBytes: number;
  aggSmallGradsMaxGroup: number;
  bytesPerPack: number;
}

/** The settings used unless given: 1 and 4 packs; small-tensor runs of ≤ 1 MiB tensors, ≤ 10 (+2) each; 25 MiB packs (PyTorch DDP's bucket size). */
export const DEFAULT_PACKING: Packing = { numPacks: [1, 4], aggSmallGradsMaxBytes: 1 << 20, aggSmallGradsMaxGroup: 10, bytesPerPack: 25 << 20 };

/** What one row all-reduces, and how. */
export interface ResnetJob {
  /** The op: its class (and algorithm). Rows of one op compare with its `flat` row. */
  op: string;
  /** Its options, as code, and any packing done around it. */
  options: string;
  /** `flat` (all parameters in one tensor per device) or `list` (the 161 gradients). */
  input: 'flat' | 'list';
}

/** One measured way of all-reducing the list (or the flat tensor). */
export interface ResnetRow extends Measured, ResnetJob {
  backend: string;
  /** Time over the same op's flat all-reduce. */
  ofFlat?: number;
  /** 8·4·25.6 M bytes over the median time, GB/s. */
  gbs: number;
  /** The bound (N·S bytes at the copy bandwidth) over the median time. */
  ofBound: number;
}

interface Job extends ResnetJob {
  run(): Promise<unknown>;
  check(result: unknown): number;
}

/** crossdev's rows on this thread's backend (run in a worker by {@link onBackend}). */
export async function crossdevRows(a: { devices: number; shapes: number[][]; timing: Timing; packing: Packing }): Promise<{ backend: string; rows: (Measured & ResnetJob)[] }> {
  const cd = await import('../ts/index.js');
  const { PerDevice, ReduceOp, tensor } = cd;
  const names = Array.from({ length: a.devices }, (_, d) => `/cpu:${d}`);
  const counts = a.shapes.map((s) => s.reduce((x, y) => x * y, 1));
  const offsets = counts.map((_, t) => counts.slice(0, t).reduce((x, y) => x + y, 0));
  const total = counts.reduce((x, y) => x + y, 0);
  const flat = names.map((_, d) => makeInput(d, total));
  const want = expectedSum(a.devices, total);
  // Gradient t on device d is a view of device d's flat input, so the flat row sums the same numbers.
  const grads = names.map((dn, d) => counts.map((c, t) => tensor(flat[d].subarray(offsets[t], offsets[t] + c), a.shapes[t], { device: dn })));
  const pairs = counts.map((_, t) => {
    const pd = new PerDevice(names.map((dn, d) => [dn, grads[d][t]] as const));
    return [pd, pd] as const;
  });
  const flatPd = new PerDevice(names.map((dn, d) => [dn, tensor(flat[d], [total], { device: dn })] as const));
  const checkList = (results: unknown) => (results as Mirrored[]).reduce((w, r, t) => w + checkMirrored(r, names, want.subarray(offsets[t], offsets[t] + counts[t])), 0);
  const checkFlat = (r: unknown) => checkMirrored(r as Mirrored, names, want);

  const rtod = new cd.ReductionToOneDevice();
  const nccl = (o: object) => new cd.AllReduceCrossDeviceOps('nccl', o);
  const unpacked = nccl({ numPacks: 0 });
  const collective = new cd.CollectiveAllReduce();
  const { numPacks, aggSmallGradsMaxBytes: maxBytes, aggSmallGradsMaxGroup: maxGroup, bytesPerPack } = a.packing;

  const byBytes = new cd.CollectiveAllReduce({ communicationOptions: { bytesPerPack } });

  const list = (op: string, options: string, o: CrossDeviceOps): Job => ({ op, options, input: 'list', run: () => o.batchReduce(ReduceOp.SUM, pairs), check: checkList });
  const flatJob = (op: string, options: string, o: CrossDeviceOps): Job => ({ op, options, input: 'flat', run: () => o.reduce(ReduceOp.SUM, flatPd, flatPd), check: checkFlat });
  const [RTOD, NCCL, COLL] = ['ReductionToOneDevice', "AllReduceCrossDeviceOps('nccl')", 'CollectiveAllReduce'];
  const jobs: Job[] = [
    flatJob(RTOD, '', rtod),
    list(RTOD, '', rtod),
    flatJob(NCCL, '{ numPacks: 0 }', unpacked),
    list(NCCL, '{ numPacks: 0 }', unpacked),
    ...numPacks.map((k) => list(NCCL, `{ numPacks: ${k} }`, nccl({ numPacks: k }))),
    list(NCCL, `{ numPacks: 0, aggSmallGradsMaxBytes: ${maxBytes}, aggSmallGradsMaxGroup: ${maxGroup} }`, nccl({ numPacks: 0, aggSmallGradsMaxBytes: maxBytes, aggSmallGradsMaxGroup: maxGroup })),
    flatJob(COLL, '', collective),
    list(COLL, '', collective),
    list(COLL, `{ communicationOptions: { bytesPerPack: ${bytesPerPack} } }`, byBytes),
  ];
  const rows: (Measured & ResnetJob)[] = [];
  for (const { run, check, ...job } of jobs) rows.push({ ...job, ...(await measure(run, check, a.timing)) });
  return { backend: cd.backend(), rows };
}

/** Options of {@link resnetCase}. */
export interface ResnetOptions {
  devices: number;
  timing: Timing;
  impls: ReadonlySet<string>;
  packing: Packing;
  model: URL;
}

/** Runs the case: prints a table per backend and returns the report's body. */
export async function resnetCase(o: ResnetOptions): Promise<CaseReport> {
  const model = JSON.parse(readFileSync(o.model, 'utf8')) as { model: string; shapes: { name: string; shape: number[] }[] };
  const shapes = model.shapes.map((s) => s.shape);
  const total = shapes.reduce((s, sh) => s + sh.reduce((x, y) => x * y, 1), 0);
  const bytes = total * 4;
  const bw = await copyBandwidth(Math.min(bytes, 64 << 20));
  const boundUs = ((o.devices * bytes) / bw.allThreads) * 1e6;
  const rows: ResnetRow[] = [];
  for (const backend of BACKENDS.filter((b) => o.impls.has(b))) {
    console.error(`# crossdev ${backend} …`);
    const r = await onBackend<Awaited<ReturnType<typeof crossdevRows>>>(backend, import.meta.url, 'crossdevRows', { devices: o.devices, shapes, timing: o.timing, packing: o.packing });
    if (r.backend !== backend) throw new Error(`asked for crossdev's ${backend} backend, got ${r.backend}`);
    const own = r.rows.map((row) => {
      const flat = r.rows.find((f) => f.op === row.op && f.input === 'flat');
      return {
        backend,
        ...row,
        ofFlat: flat && row !== flat ? row.stats.medianUs / flat.stats.medianUs : undefined,
        gbs: (o.devices * bytes) / (row.stats.medianUs * 1e3),
        ofBound: boundUs / row.stats.medianUs,
      };
    });
    rows.push(...own);
    console.log(`\n## resnet50: ${shapes.length} tensors, ${total} float32 parameters (${human(bytes)}) on ${o.devices} devices, crossdev ${backend}, all-reduce (SUM, result on every device)`);
    console.log(`# bound: ${o.devices}·${human(bytes)} at ${(bw.allThreads / 1e9).toFixed(2)} GB/s (copy bandwidth, ${bw.threads} threads) = ${formatUs(boundUs)}`);
    printTable(
      ['op', 'options', 'input', 'median', 'p99', 'GB/s', 'of bound', '÷ flat', 'calls', '#wrong'],
      own.map((r) => [r.op, r.options, r.input, formatUs(r.stats.medianUs), formatUs(r.stats.p99Us), r.gbs.toFixed(2), times(r.ofBound), times(r.ofFlat), String(r.stats.iters), String(r.wrong)]),
    );
  }
  console.log('# ÷ flat: this time over the same op’s one flat all-reduce of all parameters (target ≤ 1.15× with packing)');
  return {
    model: model.model,
    tensors: shapes.length,
    parameters: total,
    devices: o.devices,
    timing: o.timing,
    packing: o.packing,
    copyBandwidthGBs: { allThreads: bw.allThreads / 1e9, oneThread: bw.oneThread / 1e9, threads: bw.threads, bytes: Math.min(bytes, 64 << 20) },
    boundUs,
    rows,
  };
}
