/**
 * The GPUs this process can use and their links, from `nvidia-smi` (its GPU query and `topo -m`),
 * numbered as CUDA numbers them for this process (`CUDA_VISIBLE_DEVICES` order when it is set).
 * `crossdev devices` prints it and `chooseTheBest` chooses by it.
 */
import { spawnSync } from 'node:child_process';
import { canonicalizeDevice } from './device.js';
import { GPU_QUERY, nvlinkPeers, parseGpuQuery, parseTopoMatrix, visibleGpus, type GpuInfo } from './nvidia.js';

/** This machine's GPUs as this process sees them. */
export interface GpuReport {
    /** Why the list is what it is: `2 GPUs (nvidia-smi)`, `no GPU (nvidia-smi not found)`, … */
    status: string;
    /** Canonical names, `/gpu:0` first (CUDA's numbering for this process). */
    devices: string[];
    /** Per device, nvidia-smi's description of it. */
    info: (GpuInfo & { device: string })[];
    /** `links[i]`: positions in `devices` of the GPUs device i reaches over NVLink. */
    links: number[][];
    /** `topo -m` between the listed GPUs, in their order (`X`, `NV#`, `PIX`, `PXB`, `PHB`, `NODE`, `SYS`), or null where unknown. */
    matrix: string[][] | null;
    /** Why `matrix` is null, if it is. */
    topologyError: string | null;
  }

/** Runs nvidia-smi; its stdout, or why there is none. */
function nvidiaSmi(args: string[]): { out: string } | { failed: string } {
  const r = spawnSync('nvidia-smi', args, { encoding: 'utf8', timeout: 20_000 });
  if (r.error) return { failed: (r.error as NodeJS.ErrnoException).code === 'ENOENT' ? 'nvidia-smi not found' : `nvidia-smi ${args.join(' ')}: ${r.error.message}` };
  if (r.status !== 0) {
    const why = `${r.stdout}\n${r.stderr}`.split('\n').find((l) => l.trim() !== '')?.trim() ?? `exit code ${r.status}`;
    return { failed: `nvidia-smi ${args.join(' ')} failed: ${why}` };
  }
  return { out: r.stdout };
}

function report(): GpuReport {
  const none = (status: string): GpuReport => ({ status, devices: [], info: [], links: [], matrix: null, topologyError: null });
  const query = nvidiaSmi([`--query-gpu=${GPU_QUERY.join(',')}`, '--format=csv,noheader']);
  if ('failed' in query) return none(`no GPU (${query.failed})`);
  let all: GpuInfo[];
  try {
    all = parseGpuQuery(query.out);
  } catch (e) {
    return none(`no GPU (${(e as Error).message})`);
  }
  const env = process.env.CUDA_VISIBLE_DEVICES;
  const visible = visibleGpus(all, env);
  const where = env === undefined ? 'nvidia-smi' : `nvidia-smi, CUDA_VISIBLE_DEVICES=${env}`;
  if (visible.length === 0) return none(`no GPU (${all.length === 0 ? 'nvidia-smi lists none' : `${all.length} in nvidia-smi, none visible: CUDA_VISIBLE_DEVICES=${env}`})`);
  const devices = visible.map((_, i) => canonicalizeDevice(`/gpu:${i}`));
  const info = visible.map((g, i) => ({ device: devices[i], ...g }));
  const status = `${visible.length} GPU${visible.length === 1 ? '' : 's'} (${where})`;
  const topo = nvidiaSmi(['topo', '-m']);
  if ('failed' in topo) return { status, devices, info, links: visible.map(() => []), matrix: null, topologyError: topo.failed };
  try {
    const topology = parseTopoMatrix(topo.out);
    const ids = visible.map((g) => g.index);
    const at = ids.map((g) => topology.gpus.indexOf(g));
    const links = nvlinkPeers(topology, ids);
    return { status, devices, info, links, matrix: at.map((i) => at.map((j) => topology.matrix[i][j])), topologyError: null };
  } catch (e) {
    return { status, devices, info, links: visible.map(() => []), matrix: null, topologyError: (e as Error).message };
  }
}

let probed: GpuReport | undefined;

/** This machine's GPUs (nvidia-smi runs once per process; an empty list says why). */
export function probeGpus(): GpuReport {
  probed ??= report();
  return probed;
}
