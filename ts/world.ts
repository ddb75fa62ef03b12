/**
 * Processes of one job. `init({ backend: 'mpi' })` joins the MPI job this process was started in
 * (`mpirun -np 4 node train.js`): rank r becomes worker r (`/job:worker/replica:0/task:<r>`), and
 * from then on `MultiWorkerAllReduce` and `CollectiveAllReduce` run across the processes, each
 * rank passing the values of its own devices.
 */
import { loadMpiAddon, type MpiAddon } from './backend.js';
import { CrossDeviceError } from './errors.js';

/** Options of {@link init}. */
export interface InitOptions {
  /** The transport between processes: `'mpi'` (Open MPI, started with `mpirun`). */
  backend: 'mpi';
  /**
   * Run the flat all-reduces (`CollectiveAllReduce`, `nccl` specs) with NCCL on one GPU per rank,
   * its communicator bootstrapped over MPI. `ERR_NO_CUDA` on every rank where rank 0 or this rank
   * has no GPU or no NCCL.
   */
  nccl?: boolean;
  /** This rank's GPU for NCCL (default: its rank on its machine, modulo the GPUs there). */
  gpu?: number;
  /** How long joining NCCL waits for the other ranks, in seconds (default 600). */
  timeoutSeconds?: number;
}

/** This process's place in the job. */
export interface World {
  /** This process's rank, `0 … size-1`. */
  rank: number;
  /** Number of processes. */
  size: number;
  /** This rank's worker, `/job:worker/replica:0/task:<rank>`: its devices are `${worker}/device:CPU:<i>`. */
  worker: string;
  /** The names of this rank's first `n` virtual CPU devices. */
  devices(n: number): string[];
}

let joined: { addon: MpiAddon; world: World } | undefined;

/**
 * Joins the job (initialising MPI once; later calls return the same world). `MPI_Finalize` runs
 * when the process exits, or at {@link finalize}.
 */
export function init(options: InitOptions): World {
  if (options?.backend !== 'mpi') {
    throw new CrossDeviceError('ERR_INVALID_ARGUMENT', `init takes { backend: 'mpi' }, got ${JSON.stringify(options)}`);
  }
  if (joined) return joined.world;
  const addon = loadMpiAddon();
  let w: { rank: number; size: number; worker: string };
  try {
    w = addon.mpiInit({ nccl: options.nccl, gpu: options.gpu, timeoutSeconds: options.timeoutSeconds });
  } catch (e) {
    // MPI itself may be up (NCCL failed to join): end it at exit all the same.
    process.once('exit', () => addon.mpiFinalize());
    const { code, message } = JSON.parse((e as Error).message) as { code: string; message: string };
    throw new CrossDeviceError(code, message);
  }
  const world: World = { ...w, devices: (n) => Array.from({ length: n }, (_, i) => `${w.worker}/device:CPU:${i}`) };
  joined = { addon, world };
  process.once('exit', finalize);
  return world;
}

/** Leaves the job (`MPI_Finalize`); later cross-worker ops run in this process only. */
export function finalize(): void {
  if (!joined) return;
  joined.addon.mpiFinalize();
  joined = undefined;
}
