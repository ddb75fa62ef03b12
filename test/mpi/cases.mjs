// The cases the MPI tests run, shared by the workers (started by mpirun, plain JavaScript over
// dist/) and by test/mpi.test.ts (which computes the one-process answers they must match).

/** All-reduce specs of MultiWorkerAllReduce, and the rank counts each can run on. */
export const SPECS = [
  'nccl',
  'xring',
  ['xring', 2, -1],
  'nccl/xring',
  'nccl/rechd',
  'nccl/pscpu',
  'pscpu/pscpu',
  ['pscpu/pscpu', 2, -1],
  'pscpu',
  [['pscpu', 1, 100], ['nccl/xring', 1, -1]],
];

/** Devices per rank. */
export const GPUS_PER_WORKER = 2;

/** Gradient shapes (element counts divisible by 8, as recursive halving-doubling needs). */
export const SHAPES = [[3, 8], [1000], [64, 33]];

/** Whether `spec` runs on `ranks` workers (rechd needs a power of two). */
export function runs(spec, ranks) {
  return !(JSON.stringify(spec).includes('rechd') && (ranks & (ranks - 1)) !== 0);
}

/** Worker `r`'s prefix. */
export const worker = (r) => `/job:worker/replica:0/task:${r}`;

/** Deterministic data of device `k` of rank `r`, variable `v`: floats of mixed magnitude, or ints. */
export function data(dtype, r, k, v, len) {
  const d = r * GPUS_PER_WORKER + k;
  if (dtype === 'int32') return Int32Array.from({ length: len }, (_, i) => ((d + 1) * 7919 + i * 104729 + v * 31) % 2001 - 1000);
  return Float32Array.from({ length: len }, (_, i) => (((d * 7919 + v * 104729 + i * 31) % 997) * 1.37e-3 - 0.61) * (1 + (i % 7) * 1e3));
}

/** Rank `r`'s values for `crossdev` (the module): one PerDevice per shape over its devices. */
export function values(crossdev, dtype, r) {
  return SHAPES.map((shape, v) => {
    const len = shape.reduce((a, b) => a * b, 1);
    const entries = {};
    for (let k = 0; k < GPUS_PER_WORKER; k++) entries[`${worker(r)}/device:CPU:${k}`] = crossdev.tensor(data(dtype, r, k, v, len), shape, { dtype });
    return new crossdev.PerDevice(entries);
  });
}

/** The ops of a case: a MultiWorkerAllReduce spec, or 'collective'. */
export function ops(crossdev, name, ranks, timeoutSeconds = 60) {
  const communicationOptions = { timeoutSeconds };
  if (name === 'collective') return new crossdev.CollectiveAllReduce({ numWorkers: ranks, communicationOptions });
  const workers = Array.from({ length: ranks }, (_, r) => worker(r));
  return new crossdev.MultiWorkerAllReduce(workers, GPUS_PER_WORKER, name, { communicationOptions });
}

/** Base64 of a tensor's bytes. */
export function bytes64(t) {
  const a = t.data;
  return Buffer.from(a.buffer, a.byteOffset, a.byteLength).toString('base64');
}
