/** `crossdev plan`: builds an all-reduce plan and prints its stages and the bytes on each link. */
import { utils, type DType, type Plan } from '../index.js';
import { choice, integer, UsageError } from './args.js';

const PLAN_ALGS = ['ring', 'rechd', 'shuffle', 'hierarchical_copy', 'reduce_to_one', 'nccl', 'nccl/xring', 'nccl/rechd', 'nccl/pscpu', 'pscpu/pscpu', 'pscpu/xring'] as const;
const DTYPES = ['float32', 'float64', 'float16', 'bfloat16', 'int32', 'int64'] as const;
const BYTES: Record<DType, number> = { float32: 4, float64: 8, float16: 2, bfloat16: 2, int32: 4, int64: 8 };

export const PLAN_HELP = `crossdev plan: print an all-reduce plan (stages, steps, bytes per link)

Usage: crossdev plan --alg A [--devices N] [--size BYTES] [--dtype T] [--workers W]
                     [--subchunks S] [--gather K] [--index I] [--json]

  --alg A         ${PLAN_ALGS.join(', ')}
  --devices N     devices in all (default 4); with --workers W they are W workers of N/W each,
                  /job:worker/replica:0/task:w/device:CPU:k, else /cpu:0 … /cpu:N-1
  --size BYTES    bytes per device (default 1024)
  --dtype T       ${DTYPES.join(', ')} (default float32)
  --subchunks S   ring subchunks (default 1)
  --gather K      shuffle: gather on the first K devices (default: all)
  --index I       hierarchical copy: pack number (default 0)
  --json          print the plan as JSON
Exit codes: 0 printed, 1 the plan cannot be built (the reason is printed), 2 bad arguments.`;

/** Builds and prints the plan the flags describe; returns the exit code. */
export function plan(flags: Map<string, string | true>): number {
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
  const per = n / workers;
  const devices =
    workers === 1 ? Array.from({ length: n }, (_, d) => `/cpu:${d}`) : Array.from({ length: n }, (_, d) => `/job:worker/replica:0/task:${Math.floor(d / per)}/device:CPU:${d % per}`);
  const workerCpus = Array.from({ length: workers }, (_, w) => `/job:worker/replica:0/task:${w}/device:CPU:0`);
  const o = { devices, elements, dtype };
  const built: Plan =
    alg === 'ring' ? utils.buildRingAllReduce({ ...o, numSubchunks, numWorkers: 1 })
    : alg === 'rechd' ? utils.buildRecursiveHdAllReduce(o)
    : alg === 'shuffle' ? utils.buildShuffleAllReduce({ ...o, gatherDevices: devices.slice(0, gather) })
    : alg === 'hierarchical_copy' ? utils.buildHierarchicalCopy({ ...o, index })
    : alg === 'reduce_to_one' ? utils.buildReduceToOne(o)
    : alg === 'nccl' ? utils.buildNcclAllReduce(o)
    : alg === 'nccl/xring' ? utils.buildNcclThenRing({ ...o, numSubchunks })
    : alg === 'nccl/rechd' ? utils.buildNcclThenRecursiveHd(o)
    : alg === 'nccl/pscpu' ? utils.buildNcclThenShuffle({ ...o, gatherDevices: workerCpus })
    : alg === 'pscpu/pscpu' ? utils.buildShuffleThenShuffle({ ...o, gatherDevices: workerCpus, secondGatherDevices: workerCpus.slice(0, Math.min(gather, workers)) })
    : utils.buildShuffleThenRing({ ...o, gatherDevices: workerCpus, numSubchunks });
  if (flags.get('json') === true) {
    console.log(JSON.stringify({ algorithm: built.algorithm, devices: built.devices, dtype: built.dtype, elements: built.elements, stages: built.stages, bytesMoved: built.bytesMoved() }, null, 2));
  } else {
    console.log(built.toString());
  }
  return 0;
}
