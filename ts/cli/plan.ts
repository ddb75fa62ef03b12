/**
 * `crossdev plan`: builds an all-reduce plan and prints its stages and the bytes on each link;
 * with `--model`, packs a real model's gradients as crossdev does and prints the packs and the
 * bytes each link carries to all-reduce all of them.
 */
import { utils, type DType, type Plan } from '../index.js';
import { choice, flag, integer, UsageError } from './args.js';
import { bytesOverPacks, loadModel, MODELS, packModel, type Pack, type Packing } from './model.js';

const PLAN_ALGS = ['ring', 'rechd', 'shuffle', 'hierarchical_copy', 'reduce_to_one', 'nccl', 'nccl/xring', 'nccl/rechd', 'nccl/pscpu', 'pscpu/pscpu', 'pscpu/xring'] as const;
type Alg = (typeof PLAN_ALGS)[number];
/** The algorithms `--model` takes: those over one group of devices. */
const MODEL_ALGS = ['nccl', 'ring', 'rechd', 'shuffle', 'hierarchical_copy', 'reduce_to_one'] as const;
const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64'] as const;
const BYTES: Record<DType, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2, int32: 4, int64: 8 };
/** Packs listed one per line; more are summarised (`--json` lists all). */
const LISTED_PACKS = 16;

/** The options `crossdev plan` takes. */
export const PLAN_FLAGS = ['alg', 'devices', 'size', 'dtype', 'workers', 'subchunks', 'gather', 'index', 'json', 'model', 'num-packs', 'agg-small-grads-max-bytes', 'agg-small-grads-max-group', 'bytes-per-pack'] as const;

export const PLAN_HELP = `crossdev plan: print an all-reduce plan (stages, steps, bytes per link), or how a model's
gradients are packed and the bytes each link carries to all-reduce them

Usage: crossdev plan --alg A [--devices N] [--size BYTES] [--dtype T] [--workers W]
                     [--subchunks S] [--gather K] [--index I] [--json]
       crossdev plan --model M [--num-packs P | --agg-small-grads-max-bytes B
                     [--agg-small-grads-max-group G] | --bytes-per-pack B]
                     [--alg A] [--devices N] [--subchunks S] [--gather K] [--json]

  --alg A         ${PLAN_ALGS.join(', ')}
                  (with --model: ${MODEL_ALGS.join(', ')}; default nccl)
  --devices N     devices in all (default 4, with --model 8); with --workers W they are W workers
                  of N/W each, /job:worker/replica:0/task:w/device:CPU:k, else /cpu:0 … /cpu:N-1
  --size BYTES    bytes per device (default 1024)
  --dtype T       ${DTYPES.join(', ')} (default float32)
  --workers W     workers, for the two-level algorithms (default 2 for them, else 1)
  --subchunks S   ring subchunks (default 1)
  --gather K      shuffle: gather on the first K devices (default: all)
  --index I       hierarchical copy: pack number (default 0)
  --json          print JSON

  --model M       ${MODELS.join(', ')}, or a file of their format (benches/models/*.json):
                  the model's gradients, one per variable, float32
  --num-packs P   concatenate the gradients and split them into P packs (ConcatAndSplitPacker;
                  default 1; 0: each gradient alone), as AllReduceCrossDeviceOps({ numPacks })
  --agg-small-grads-max-bytes B, --agg-small-grads-max-group G
                  pack runs of at most G+2 adjacent gradients of at most B bytes each
                  (AggregateSmallTensorPacker; G default 10), as AllReduceCrossDeviceOps with
                  numPacks 0 and these limits
  --bytes-per-pack B
                  group the gradients, in back-propagation order, into packs that close once
                  they hold more than B bytes (TensorFlow 2's group_by_size; 0: one pack)
  With --model it prints the model's tensors and parameters, each pack (tensors, elements,
  bytes; a summary past ${LISTED_PACKS} packs), and the bytes each link carries over all packs, one plan
  per pack (hierarchical copy: pack k uses --index k), and their total.
Exit codes: 0 printed, 1 a plan cannot be built or the model cannot be read (the reason is
printed), 2 bad arguments.`;

/** Builds `alg` over `devices` (split into `workers` workers for the two-level algorithms). */
function build(alg: Alg, o: { devices: string[]; elements: number; dtype: DType }, x: { workers: number; numSubchunks: number; gather: number; index: number }): Plan {
  const workerCpus = Array.from({ length: x.workers }, (_, w) => `/job:worker/replica:0/task:${w}/device:CPU:0`);
  const { numSubchunks } = x;
  return alg === 'ring' ? utils.buildRingAllReduce({ ...o, numSubchunks, numWorkers: 1 })
    : alg === 'rechd' ? utils.buildRecursiveHdAllReduce(o)
    : alg === 'shuffle' ? utils.buildShuffleAllReduce({ ...o, gatherDevices: o.devices.slice(0, x.gather) })
    : alg === 'hierarchical_copy' ? utils.buildHierarchicalCopy({ ...o, index: x.index })
    : alg === 'reduce_to_one' ? utils.buildReduceToOne(o)
    : alg === 'nccl' ? utils.buildNcclAllReduce(o)
    : alg === 'nccl/xring' ? utils.buildNcclThenRing({ ...o, numSubchunks })
    : alg === 'nccl/rechd' ? utils.buildNcclThenRecursiveHd(o)
    : alg === 'nccl/pscpu' ? utils.buildNcclThenShuffle({ ...o, gatherDevices: workerCpus })
    : alg === 'pscpu/pscpu' ? utils.buildShuffleThenShuffle({ ...o, gatherDevices: workerCpus, secondGatherDevices: workerCpus.slice(0, Math.min(x.gather, x.workers)) })
    : utils.buildShuffleThenRing({ ...o, gatherDevices: workerCpus, numSubchunks });
}

/** Builds and prints the plan the flags describe; returns the exit code. */
export function plan(flags: Map<string, string | true>): number {
  if (flags.has('model')) return planModel(flags);
  for (const f of ['num-packs', 'agg-small-grads-max-bytes', 'agg-small-grads-max-group', 'bytes-per-pack']) {
    if (flags.has(f)) throw new UsageError(`--${f} needs --model`);
  }
  const alg = choice(flags, 'alg', PLAN_ALGS, 'ring');
  if (!flags.has('alg')) throw new UsageError('--alg is required');
  const n = integer(flags, 'devices', 1, 1024, 4);
  const workers = integer(flags, 'workers', 1, n, alg.includes('/') ? 2 : 1);
  if (n % workers !== 0) throw new UsageError('--devices must be a multiple of --workers');
  const dtype = choice(flags, 'dtype', DTYPES, 'float32');
  const size = integer(flags, 'size', 0, 2 ** 40, 1024);
  const elements = Math.floor(size / BYTES[dtype]);
  const numSubchunks = integer(flags, 'subchunks', 1, 1024, 1);
  const gather = integer(flags, 'gather', 1, n, n);
  const index = integer(flags, 'index', 0, 2 ** 31, 0);
  const json = flag(flags, 'json');
  const per = n / workers;
  const devices =
    workers === 1 ? Array.from({ length: n }, (_, d) => `/cpu:${d}`) : Array.from({ length: n }, (_, d) => `/job:worker/replica:0/task:${Math.floor(d / per)}/device:CPU:${d % per}`);
  const built = build(alg, { devices, elements, dtype }, { workers, numSubchunks, gather, index });
  if (json) {
    console.log(JSON.stringify({ algorithm: built.algorithm, devices: built.devices, dtype: built.dtype, elements: built.elements, stages: built.stages, bytesMoved: built.bytesMoved() }, null, 2));
  } else {
    console.log(built.toString());
  }
  return 0;
}

/** The packing the flags ask for (one of the three kinds; default one pack). */
function packingOf(flags: Map<string, string | true>): Packing {
  const given = [flags.has('num-packs') && '--num-packs', (flags.has('agg-small-grads-max-bytes') || flags.has('agg-small-grads-max-group')) && '--agg-small-grads-*', flags.has('bytes-per-pack') && '--bytes-per-pack'].filter(Boolean);
  if (given.length > 1) throw new UsageError(`${given.join(' and ')} are different packings: give one`);
  if (flags.has('bytes-per-pack')) return { kind: 'bytesPerPack', bytesPerPack: integer(flags, 'bytes-per-pack', 0, 2 ** 40, 0) };
  if (given.length === 1 && !flags.has('num-packs')) {
    if (!flags.has('agg-small-grads-max-bytes')) throw new UsageError('--agg-small-grads-max-group needs --agg-small-grads-max-bytes');
    return { kind: 'smallGrads', maxBytes: integer(flags, 'agg-small-grads-max-bytes', 1, 2 ** 40, 1), maxGroup: integer(flags, 'agg-small-grads-max-group', 1, 2 ** 20, 10) };
  }
  return { kind: 'numPacks', numPacks: integer(flags, 'num-packs', 0, 2 ** 31, 1) };
}

function describePacking(p: Packing): string {
  switch (p.kind) {
    case 'numPacks':
      return p.numPacks === 0 ? 'none (each gradient alone)' : `ConcatAndSplitPacker({ numPacks: ${p.numPacks} })`;
    case 'smallGrads':
      return `AggregateSmallTensorPacker({ maxBytes: ${p.maxBytes}, maxGroup: ${p.maxGroup} })`;
    case 'bytesPerPack':
      return `groupBySize(bytesPerPack ${p.bytesPerPack}), gradients in back-propagation order`;
  }
}

function packTable(packs: readonly Pack[]): string[] {
  const sorted = packs.map((p) => p.elements).sort((a, b) => a - b);
  const lines = [`  ${'pack'.padStart(6)}${'tensors'.padStart(9)}${'elements'.padStart(12)}${'bytes'.padStart(12)}  gradients`];
  const span = (t: number[]) => (t.length === 0 ? '-' : t.length === 1 ? `${t[0]}` : t.every((v, i) => i === 0 || v === t[i - 1] + 1) ? `${t[0]}-${t.at(-1)}` : `${t.length} of ${t[0]}-${t.at(-1)}`);
  packs.slice(0, LISTED_PACKS).forEach((p, k) => lines.push(`  ${String(k).padStart(6)}${String(p.tensors.length).padStart(9)}${String(p.elements).padStart(12)}${String(p.bytes).padStart(12)}  ${span(p.tensors)}`));
  if (packs.length > LISTED_PACKS) {
    const multi = packs.filter((p) => p.tensors.length > 1);
    lines.push(
      `  … ${packs.length - LISTED_PACKS} more packs (--json lists every pack)`,
      `  ${packs.length} packs: elements min ${sorted[0]}, median ${sorted[Math.floor(sorted.length / 2)]}, max ${sorted.at(-1)}; ${multi.length === 0 ? 'each holds one gradient' : `${multi.length} hold several gradients (${multi.reduce((a, p) => a + p.tensors.length, 0)} in all)`}`,
    );
  }
  return lines;
}

function planModel(flags: Map<string, string | true>): number {
  for (const f of ['size', 'dtype', 'workers', 'index']) if (flags.has(f)) throw new UsageError(`--${f} does not go with --model`);
  const name = flags.get('model');
  if (name === true) throw new UsageError(`--model needs a name: ${MODELS.join(', ')} or a model file`);
  const alg = choice(flags, 'alg', MODEL_ALGS, 'nccl');
  const n = integer(flags, 'devices', 1, 1024, 8);
  const numSubchunks = integer(flags, 'subchunks', 1, 1024, 1);
  const gather = integer(flags, 'gather', 1, n, n);
  const packing = packingOf(flags);
  const json = flag(flags, 'json');

  const model = loadModel(name!);
  const packs = packModel(model, packing);
  const devices = Array.from({ length: n }, (_, d) => `/cpu:${d}`);
  const moved = bytesOverPacks(packs, (elements, index) => build(alg, { devices, elements, dtype: 'float32' }, { workers: 1, numSubchunks, gather, index }));
  const bytes = model.parameters * 4;
  if (json) {
    const report = {
      model: { name: model.name, description: model.description, dtype: model.dtype, tensors: model.sizes.length, parameters: model.parameters, bytes },
      packing: { ...packing, packer: describePacking(packing) },
      packs,
      allReduce: { algorithm: alg, devices: devices.length, bytesMoved: moved },
    };
    console.log(JSON.stringify(report, null, 2));
    return 0;
  }
  // The links of /cpu:k, written CPU:k->CPU:j.
  const local = '/job:localhost/replica:0/task:0/device:';
  const links = Object.entries(moved.byLink).map(([l, b]) => [l.replaceAll(local, ''), b] as const);
  const width = Math.max(0, ...links.map(([l]) => l.length));
  console.log(
    [
      `model ${model.name}: ${model.description}, ${model.sizes.length} tensors, ${model.parameters} parameters (${bytes} bytes, ${model.dtype})`,
      `packing: ${describePacking(packing)}: ${packs.length} pack${packs.length === 1 ? '' : 's'}`,
      ...packTable(packs),
      `all-reduce ${alg} over ${n} devices /cpu:0 … /cpu:${n - 1} (CPU:k below), one plan per pack: bytes each link carries`,
      ...links.map(([l, b]) => `  link ${l.padEnd(width)} ${String(b).padStart(14)}`),
      `  total ${moved.total} bytes over ${links.length} links${bytes > 0 ? ` (${(moved.total / bytes).toFixed(3)} × the model's bytes)` : ''}`,
    ].join('\n'),
  );
  return 0;
}
