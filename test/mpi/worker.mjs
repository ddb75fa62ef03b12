// One rank of an MPI test job (`mpirun -np N node test/mpi/worker.mjs <case>`): prints one JSON
// line per result or error, for test/mpi.test.ts to check.
import { appendFileSync } from 'node:fs';
import * as crossdev from '../../dist/index.js';
import { SPECS, runs, values, ops, bytes64, worker } from './cases.mjs';

const what = process.argv[2];
if (what === 'nccl') {
  // Joining NCCL: on a machine without GPUs every rank fails with ERR_NO_CUDA, never a crash.
  let result;
  try {
    const w = crossdev.init({ backend: 'mpi', nccl: true, timeoutSeconds: 10 });
    result = { rank: w.rank, joined: true };
  } catch (e) {
    result = { rank: Number(process.env.OMPI_COMM_WORLD_RANK), code: e.code, message: e.message };
  }
  console.log(JSON.stringify({ case: what, ...result }));
  process.exit(0);
}
const world = crossdev.init({ backend: 'mpi' });
const { rank, size } = world;
// One JSON line per result, to this rank's file when CROSSDEV_MPI_OUT names a folder (mpirun
// splits and interleaves long lines of several ranks on its stdout), else to stdout.
const out = process.env.CROSSDEV_MPI_OUT;
const say = (o) => {
  const line = `${JSON.stringify({ rank, ...o })}\n`;
  if (out) appendFileSync(`${out}/rank-${rank}.jsonl`, line);
  else process.stdout.write(line);
};
const pairs = (vals) => vals.map((v) => [v, v]);
const started = Date.now();

async function reduceAll(name, dtype, op, opts = {}) {
  const vals = values(crossdev, dtype, rank);
  const out = await ops(crossdev, name, size, opts.timeoutSeconds).batchReduce(op, pairs(vals));
  say({ case: name, dtype, op, results: out.map((m) => m.devices.map((d) => [d, bytes64(m.get(d))])) });
}

try {
  if (what === 'specs') {
    for (const spec of SPECS.filter((s) => runs(s, size))) await reduceAll(spec, 'float32', crossdev.ReduceOp.SUM);
    for (const dtype of ['float32', 'int32']) for (const op of [crossdev.ReduceOp.SUM, crossdev.ReduceOp.MEAN, crossdev.ReduceOp.MAX]) await reduceAll('collective', dtype, op);
    await reduceAll('nccl', 'int32', crossdev.ReduceOp.MEAN);
  } else if (what === 'kill') {
    // The last rank dies in the middle of a large ring all-reduce.
    const big = (r) => new crossdev.PerDevice({ [`${worker(r)}/device:CPU:0`]: crossdev.tensor(new Float32Array(1 << 24).fill(r), [1 << 24]), [`${worker(r)}/device:CPU:1`]: crossdev.tensor(new Float32Array(1 << 24).fill(1), [1 << 24]) });
    const mw = ops(crossdev, 'xring', size, 3);
    const value = big(rank);
    await mw.reduce(crossdev.ReduceOp.SUM, value, value);
    if (rank === size - 1) setTimeout(() => process.kill(process.pid, 'SIGKILL'), 5);
    const t0 = Date.now();
    try {
      await mw.reduce(crossdev.ReduceOp.SUM, value, value);
      say({ case: what, ok: true });
    } catch (e) {
      say({ case: what, code: e.code, message: e.message, ms: Date.now() - t0 });
    }
  } else if (what === 'absent') {
    // The last rank is alive but never calls the op.
    if (rank === size - 1) await new Promise((r) => setTimeout(r, 3000));
    else {
      const t0 = Date.now();
      try {
        await reduceAll('collective', 'float32', crossdev.ReduceOp.SUM, { timeoutSeconds: 1 });
      } catch (e) {
        say({ case: what, code: e.code, message: e.message, ms: Date.now() - t0 });
      }
    }
  } else if (what === 'mismatch') {
    // Rank 1 reduces a tensor of another shape.
    const shape = rank === 1 ? [5] : [4];
    const v = new crossdev.PerDevice({ [`${worker(rank)}/device:CPU:0`]: crossdev.tensor(new Float32Array(shape[0]).fill(1), shape) });
    try {
      await ops(crossdev, 'collective', size, 10).reduce(crossdev.ReduceOp.SUM, v, v);
      say({ case: what, ok: true });
    } catch (e) {
      say({ case: what, code: e.code, message: e.message });
    }
  } else {
    throw new Error(`unknown case ${what}`);
  }
} catch (e) {
  say({ case: what, fatal: true, code: e.code, message: e.message, ms: Date.now() - started });
}
// Survivors of a failure skip MPI_Finalize (a lost peer can hang it); the process exits here.
process.exit(0);
