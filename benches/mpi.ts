/**
 * `npm run bench:mpi`: a 64 MB float32 all-reduce across 4 local processes (Open MPI, one
 * device per rank) against the same all-reduce over 4 virtual devices in one process, measured
 * in the same run. Across processes: `CollectiveAllReduce` (MPI_Allreduce) and
 * `MultiWorkerAllReduce` with the `xring` and `pscpu` specs (their plans as MPI messages); in
 * one process: the same ops over 4 virtual workers. Every result is checked. Writes
 * `benches/results/mpi-allreduce.json`.
 *
 *   npm run bench:mpi -- [--ranks 4] [--size 64MB] [--iters 10]
 */
import { spawnSync } from 'node:child_process';
import { CollectiveAllReduce, init, MultiWorkerAllReduce, PerDevice, ReduceOp, tensor, type CrossDeviceOps } from '../ts/index.js';
import { checkMirrored, expectedSum, formatUs, human, makeInput, measure, parseBytes, printTable, runInfo, times, writeReport, type Measured, type Timing } from './lib.js';

const arg = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? process.argv[i + 1] : fallback;
};
const RANKS = Number(arg('ranks', '4'));
const BYTES = parseBytes(arg('size', '64MB'));
const COUNT = BYTES / 4;
// A fixed number of calls: every rank must make the same calls.
const ITERS = Number(arg('iters', '10'));
const TIMING: Timing = { warmup: 2, minIters: ITERS, maxIters: ITERS, minTimeS: 0 };
const ALGS = ['collective', 'xring', 'pscpu'] as const;
const worker = (r: number) => `/job:worker/replica:0/task:${r}`;
const device = (r: number) => `${worker(r)}/device:CPU:0`;

function opsFor(alg: (typeof ALGS)[number]): CrossDeviceOps {
  if (alg === 'collective') return new CollectiveAllReduce({ numWorkers: RANKS, communicationOptions: { timeoutSeconds: 120 } });
  return new MultiWorkerAllReduce(Array.from({ length: RANKS }, (_, r) => worker(r)), 1, alg, { communicationOptions: { timeoutSeconds: 120 } });
}

/** Measures every op on `ranks` (this process's devices), each result checked on them. */
async function measureAll(ranks: number[]): Promise<Record<string, Measured>> {
  const value = new PerDevice(Object.fromEntries(ranks.map((r) => [device(r), tensor(makeInput(r, COUNT), [COUNT])])));
  const want = expectedSum(RANKS, COUNT);
  const out: Record<string, Measured> = {};
  for (const alg of ALGS) {
    const ops = opsFor(alg);
    out[alg] = await measure(() => ops.reduce(ReduceOp.SUM, value, value), (m) => checkMirrored(m, value.devices, want), TIMING);
  }
  return out;
}

if (process.env.OMPI_COMM_WORLD_SIZE) {
  // A rank of the job: measure, and rank 0 reports.
  const world = init({ backend: 'mpi' });
  const measured = await measureAll([world.rank]);
  if (world.rank === 0) process.stdout.write(`${JSON.stringify(measured)}\n`);
  process.exit(0);
}

console.log(`all-reduce of ${human(BYTES)} float32 per device: ${RANKS} processes (Open MPI, 1 device each) against ${RANKS} virtual devices in one process\n`);
const single = await measureAll(Array.from({ length: RANKS }, (_, r) => r));
const job = spawnSync(
  'mpirun',
  ['--allow-run-as-root', '--oversubscribe', '-np', String(RANKS), process.execPath, '--import', 'tsx', 'benches/mpi.ts', '--ranks', String(RANKS), '--size', arg('size', '64MB'), '--iters', String(ITERS)],
  { encoding: 'utf8', maxBuffer: 16 << 20 },
);
const line = job.stdout.split('\n').find((l) => l.startsWith('{'));
if (job.status !== 0 || !line) {
  console.error(`mpirun failed (status ${job.status}):\n${job.stderr.slice(-3000)}`);
  process.exit(1);
}
const across = JSON.parse(line) as Record<string, Measured>;
const rows = ALGS.map((alg) => {
  const [a, s] = [across[alg], single[alg]];
  return { alg, processesUs: a.stats.medianUs, singleUs: s.stats.medianUs, ratio: a.stats.medianUs / s.stats.medianUs, wrong: a.wrong + s.wrong, iters: [a.stats.iters, s.stats.iters] };
});
printTable(
  ['op', `${RANKS} processes`, '1 process', 'processes / 1 process', 'wrong'],
  rows.map((r) => [r.alg === 'collective' ? 'CollectiveAllReduce (MPI_Allreduce)' : `MultiWorkerAllReduce '${r.alg}' (plan over MPI)`, formatUs(r.processesUs), formatUs(r.singleUs), times(r.ratio), String(r.wrong)]),
);
const path = writeReport('mpi-allreduce', { ...runInfo(process.argv.slice(2)), command: `npm run bench:mpi${process.argv.length > 2 ? ` -- ${process.argv.slice(2).join(' ')}` : ''}`, ranks: RANKS, bytes: BYTES, rows });
console.log(`\nwrote ${path}`);
process.exit(rows.some((r) => r.wrong > 0) ? 1 : 0);
