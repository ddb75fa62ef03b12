/**
 * `npm run bench`: crossdev (native and WebAssembly) against the bound and its peers, every
 * number taken in this run. Writes `benches/results/<case>.json` and rewrites BENCHMARKS.md
 * (benches/summarize.mjs). `npm run bench -- --help` lists the options.
 */
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import { pathToFileURL } from 'node:url';
import { integer, parseArgs, UsageError } from '../ts/cli/args.js';
import { parseBytes, runInfo, writeReport, type CaseReport, type Timing } from './lib.js';
import { overheadCase } from './overhead.js';
import { tfjsWasmFlavour } from './peers.js';
import { reduceCase } from './reduce.js';
import { DEFAULT_PACKING, MODEL, resnetCase } from './resnet50.js';
import { torchSkipReason } from './torch.js';

const CASES = ['reduce', 'resnet50', 'overhead'] as const;
const IMPLS = ['native', 'wasm', 'ts', 'tfjs-cpu', 'tfjs-wasm', 'torch'] as const;

const HELP = `npm run bench -- [options]: crossdev against the memory-copy bound and its peers

  --case LIST      ${CASES.join(', ')} (default all)
                     reduce    N devices × each size, all-reduce and reduce-only
                     resnet50  ResNet-50's 161 gradients through batchReduce, packed and not, vs one flat reduce
                     overhead  2 devices × 1 element, one call at a time, sync and async
  --impls LIST     ${IMPLS.join(', ')} (default all)
  --sizes LIST     sizes per device for reduce (default 4KB,1MB,64MB)
  --devices N      devices for reduce and resnet50 (default 8)
  --warmup N, --min-iters N, --min-time S
                   untimed calls, then at least N calls and S seconds per measurement
                   (defaults 3, 10, 1; resnet50 10 untimed and at least 11 calls; overhead 20000 sync, 5000 async calls)
  --quick          a quick look: sizes 4KB,1MB,16MB, short timings; results not saved
  --save, --no-save  write benches/results/<case>.json and BENCHMARKS.md (default: save unless --quick)
  --torch          install PyTorch's CPU wheel into .tools/torch when python cannot import torch
  --no-torch       skip PyTorch (by default it runs when python can import it)
  --model FILE     the shape list for resnet50 (default benches/models/resnet50.json)

Exit codes: 0 every result right, 1 a wrong result or an error, 2 bad arguments.`;

function list<T extends string>(flags: Map<string, string | true>, name: string, allowed: readonly T[]): T[] {
  const v = flags.get(name);
  if (v === undefined) return [...allowed];
  const items = v === true ? [] : v.split(',');
  const bad = items.filter((x) => !allowed.includes(x as T));
  if (items.length === 0 || bad.length) throw new UsageError(`--${name} takes a comma-separated list of ${allowed.join(', ')}`);
  return items as T[];
}

function seconds(flags: Map<string, string | true>, name: string, fallback: number): number {
  const v = flags.get(name);
  if (v === undefined) return fallback;
  const s = Number(v);
  if (v === true || !(s >= 0)) throw new UsageError(`--${name} must be a number of seconds`);
  return s;
}

async function main(argv: string[]): Promise<number> {
  const { command, flags } = parseArgs(argv);
  if (flags.has('help')) return console.log(HELP), 0;
  if (command !== undefined) throw new UsageError(`unexpected argument '${command}'`);
  const quick = flags.has('quick');
  const save = flags.has('save') || (!quick && !flags.has('no-save'));
  const cases = list(flags, 'case', CASES);
  const impls = new Set<string>(list(flags, 'impls', IMPLS));
  const devices = integer(flags, 'devices', 2, 64, 8);
  const sizesFlag = flags.get('sizes');
  if (sizesFlag === true) throw new UsageError('--sizes takes a list such as 4KB,1MB,64MB');
  const sizes = (sizesFlag ?? (quick ? '4KB,1MB,16MB' : '4KB,1MB,64MB')).split(',').map((s) => {
    const b = parseBytes(s);
    if (b < 4 || b % 4) throw new UsageError(`--sizes: ${s} is not a whole number of float32 elements`);
    return b;
  });
  const timing: Timing = {
    warmup: integer(flags, 'warmup', 1, 1000, quick ? 2 : 3),
    minIters: integer(flags, 'min-iters', 1, 1e6, quick ? 3 : 10),
    maxIters: 200000,
    minTimeS: seconds(flags, 'min-time', quick ? 0.1 : 1),
  };
  const model = flags.get('model');
  if (model === true) throw new UsageError('--model needs a file');

  let torchSkip = flags.has('no-torch') ? '--no-torch' : undefined;
  if (impls.has('torch') && torchSkip === undefined) torchSkip = torchSkipReason(flags.has('torch'));
  const require = createRequire(import.meta.url);
  const peers = {
    tfjs: (require('@tensorflow/tfjs/package.json') as { version: string }).version,
    tfjsWasm: impls.has('tfjs-wasm') ? await tfjsWasmFlavour() : undefined,
  };
  const info = runInfo(argv);
  console.log(`# crossdev benchmarks: ${info.machine.cpus}, ${info.machine.threads} threads, ${info.machine.memoryGB} GiB, Node ${info.machine.node}, commit ${info.commit}`);

  let wrong = 0;
  const finish = (name: string, body: CaseReport) => {
    wrong += body.rows.reduce((w, r) => w + r.wrong, 0);
    if (save) console.log(`# wrote ${writeReport(name, { case: name, ...info, peers, ...body })}`);
  };
  for (const c of cases) {
    if (c === 'reduce') finish(c, await reduceCase({ devices, sizes, timing, impls, torchSkip }));
    if (c === 'resnet50') {
      // Steady state, as a training loop sees it: over a list's first calls the result pool
      // learns its ~1300 block sizes while dropped results wait for garbage collection (measured:
      // 5-8 calls of 1.4-1.8x the steady time), so resnet50 warms up for 10 calls by default.
      const t = { ...timing, warmup: integer(flags, 'warmup', 1, 1000, quick ? 2 : 10), minIters: integer(flags, 'min-iters', 1, 1e6, quick ? 2 : 11) };
      finish(c, await resnetCase({ devices, timing: t, impls, packing: DEFAULT_PACKING, model: model ? pathToFileURL(model) : MODEL }));
    }
    if (c === 'overhead') {
      const calls = (sync: boolean) => ({ ...timing, minIters: integer(flags, 'min-iters', 1, 1e6, (quick ? 0.1 : 1) * (sync ? 20000 : 5000)) });
      finish(c, await overheadCase({ sync: calls(true), async: calls(false), impls, torchSkip }));
    }
  }
  if (save) {
    const r = spawnSync(process.execPath, [new URL('summarize.mjs', import.meta.url).pathname], { stdio: 'inherit' });
    if (r.status !== 0) throw new Error('benches/summarize.mjs failed');
    console.log('# wrote BENCHMARKS.md');
  } else {
    console.log('# results not saved (--quick or --no-save; --save writes them)');
  }
  console.log(`# ${wrong === 0 ? 'every result right' : `${wrong} wrong elements`}`);
  return wrong === 0 ? 0 : 1;
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (e) => {
    console.error(e instanceof UsageError ? `bench: ${e.message} (see npm run bench -- --help)` : e);
    process.exitCode = e instanceof UsageError ? 2 : 1;
  },
);
