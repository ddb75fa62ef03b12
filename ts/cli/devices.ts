/**
 * `crossdev devices`: the devices this process can use, in TensorFlow's canonical names, and
 * the links between them: the virtual CPU devices (separate buffers in host memory) and, where
 * `nvidia-smi` runs, the GPUs CUDA would show this process and their `topo -m` links.
 */
import { availableParallelism, cpus, totalmem } from 'node:os';
import { backend, canonicalizeDevice } from '../index.js';
import { integer, flag } from './args.js';
import { copyBandwidth } from '../measure.js';
import { probeGpus, type GpuReport } from '../gpus.js';
import { LINK_KINDS } from '../nvidia.js';

/** The options `crossdev devices` takes. */
export const DEVICES_FLAGS = ['cpus', 'measure', 'json'] as const;

export const DEVICES_HELP = `crossdev devices: the devices this process can use and the links between them

Usage: crossdev devices [--cpus N] [--measure] [--json]

  --cpus N      virtual CPU devices to list (default 8; any /cpu:N names one, each with its own
                buffers in host memory)
  --measure     time the link between CPU devices: memory-copy bandwidth of this process
  --json        print JSON; cpu.devices, or gpu.devices with gpu.links, are the arguments of
                chooseTheBest(devices, { links })

GPUs come from nvidia-smi (its GPU query and topo -m), numbered as CUDA numbers them for this process
(CUDA_VISIBLE_DEVICES order when it is set). A GPU's links are the GPUs it reaches over NVLink
(NV# in the topo matrix), TensorFlow's device links, which chooseTheBest compares with DGX-1's.
Without nvidia-smi, or when it fails, the GPU list is empty and says why.
Exit codes: 0 listed (with or without GPUs), 1 an error, 2 bad arguments.`;

/** The `--json` report. */
export interface DevicesReport {
  backend: string;
  host: { cores: number; cpuModel: string | null; memoryBytes: number; node: string };
  cpu: {
    /** Canonical names of the listed virtual CPU devices. */
    devices: string[];
    /** What connects them: host memory, and its copy bandwidth where measured. */
    link: { kind: 'host memory'; copyGBs: { allThreads: number; oneThread: number; threads: number } | null };
  };
  gpu: GpuReport;
}

function text(r: DevicesReport): string {
  const gib = (b: number) => `${(b / 2 ** 30).toFixed(1)} GiB`;
  const lines = [
    `crossdev devices: backend ${r.backend}`,
    `host: ${r.host.cores} cores${r.host.cpuModel ? ` (${r.host.cpuModel})` : ''}, ${gib(r.host.memoryBytes)} memory, node ${r.host.node}`,
    '',
    `CPU devices: ${r.cpu.devices.length} virtual (each its own buffers in host memory; any /cpu:N names one)`,
    ...r.cpu.devices.map((d) => `  ${d}`),
  ];
  const bw = r.cpu.link.copyGBs;
  lines.push(
    bw
      ? `  link between any two: host memory, ${bw.allThreads.toFixed(2)} GB/s copy bandwidth measured on ${bw.threads} threads (${bw.oneThread.toFixed(2)} GB/s on one)`
      : '  link between any two: host memory (--measure times it)',
    '',
    `GPUs: ${r.gpu.status}`,
  );
  const g = r.gpu;
  for (const i of g.info) lines.push(`  ${i.device}  ${i.name}, ${i.memoryMiB ?? '?'} MiB, PCI ${i.pciBusId} (nvidia-smi GPU ${i.index})`);
  if (g.devices.length === 0) return lines.join('\n');
  if (g.matrix === null) {
    lines.push(`  links unknown: ${g.topologyError}`);
    return lines.join('\n');
  }
  const names = g.devices.map((_, i) => `GPU:${i}`);
  const width = Math.max(6, ...g.matrix.flat().map((c) => c.length + 2));
  lines.push('  links (nvidia-smi topo -m):', `  ${' '.repeat(width)}${names.map((n) => n.padStart(width)).join('')}`);
  g.matrix.forEach((row, i) => lines.push(`  ${names[i].padEnd(width)}${row.map((c) => c.padStart(width)).join('')}`));
  const kinds = new Set(g.matrix.flat().map((c) => (/^NV\d+$/.test(c) ? 'NV#' : c)));
  for (const [kind, meaning] of Object.entries(LINK_KINDS)) if (kinds.has(kind)) lines.push(`    ${kind.padEnd(5)}${meaning}`);
  lines.push(`  NVLink peers (chooseTheBest's links): ${JSON.stringify(g.links)}`);
  return lines.join('\n');
}

/** Lists the devices as the flags ask; returns the exit code. */
export async function devices(flags: Map<string, string | true>): Promise<number> {
  const n = integer(flags, 'cpus', 1, 1024, 8);
  const measure = flag(flags, 'measure');
  const json = flag(flags, 'json');
  const bw = measure ? await copyBandwidth(64 << 20) : null;
  const report: DevicesReport = {
    backend: backend(),
    host: { cores: availableParallelism(), cpuModel: cpus()[0]?.model ?? null, memoryBytes: totalmem(), node: process.version },
    cpu: {
      devices: Array.from({ length: n }, (_, i) => canonicalizeDevice(`/cpu:${i}`)),
      link: { kind: 'host memory', copyGBs: bw && { allThreads: bw.allThreads / 1e9, oneThread: bw.oneThread / 1e9, threads: bw.threads } },
    },
    gpu: probeGpus(),
  };
  console.log(json ? JSON.stringify(report, null, 2) : text(report));
  return 0;
}
