/**
 * The addon in worker threads: loaded by one worker, used, the worker ended, then loaded and used
 * by the next, many times, in one process (as `npm run bench` and servers with worker pools do).
 * Once crashed the process when small allocations went to a separate allocator (mimalloc).
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { B } from './helpers.js';

const script = `
import { Worker } from 'node:worker_threads';
const body = \`
  import('node:worker_threads').then(async ({ parentPort }) => {
    const c = await import('${process.cwd()}/dist/index.js');
    const n = 1 << 22;
    const names = ['/cpu:0', '/cpu:1', '/cpu:2', '/cpu:3'];
    const pd = new c.PerDevice(names.map((d, i) => [d, c.tensor(new Float32Array(n).fill(i), [n])]));
    let sum = 0;
    for (let k = 0; k < 5; k++) {
      const m = await new c.AllReduceCrossDeviceOps('nccl', { numPacks: 2 }).reduce(c.ReduceOp.SUM, pd, pd);
      sum = m.get('/cpu:3').data[n - 1];
      await new Promise((r) => setImmediate(r));
    }
    parentPort.postMessage(sum);
  });
\`;
for (let w = 0; w < 6; w++) {
  const worker = new Worker(body, { eval: true });
  const sum = await new Promise((resolve, reject) => { worker.once('message', resolve); worker.once('error', reject); });
  if (sum !== 6) throw new Error('worker ' + w + ' summed ' + sum);
  await worker.terminate();
}
console.log('ok');
`;

test(`[${B}] the core runs in one worker thread after another in one process`, (t) => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, CROSSDEV_BACKEND: B }, timeout: 120_000 });
  t.is(r.signal, null, `killed by ${r.signal}: ${r.stderr.slice(-1500)}`);
  t.is(r.status, 0, r.stderr.slice(-1500));
  t.is(r.stdout.trim(), 'ok');
});
