/**
 * `crossdev devices`: nvidia-smi's outputs parsed (topo -m matrices captured on real machines,
 * GPU query lines, CUDA_VISIBLE_DEVICES), and the command itself without nvidia-smi, with a
 * failing one, and with a stand-in that prints a DGX-1's outputs, whose JSON goes straight into
 * chooseTheBest.
 */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { AllReduceCrossDeviceOps, backend, chooseTheBest, ReductionToOneDevice, type CrossDeviceOps } from '../ts/index.js';
import { nvlinkPeers, parseGpuQuery, parseTopoMatrix, visibleGpus, type GpuInfo } from '../ts/nvidia.js';
import type { DevicesReport } from '../ts/cli/devices.js';

const B = backend();
const FIXTURES = resolve('test/fixtures/nvidia-smi');
const fixture = (name: string) => readFileSync(join(FIXTURES, name), 'utf8');
const DGX1_LINKS = [[1, 2, 3, 4], [0, 2, 3, 5], [0, 1, 3, 6], [0, 1, 2, 7], [0, 5, 6, 7], [1, 4, 6, 7], [2, 4, 5, 7], [3, 4, 5, 6]];
const CPU = (i: number) => `/job:localhost/replica:0/task:0/device:CPU:${i}`;
const GPU = (i: number) => `/job:localhost/replica:0/task:0/device:GPU:${i}`;

/** The configuration an ops object hands the core (kind, algorithm, numPacks); not public API. */
const configOf = (ops: CrossDeviceOps) => (ops as unknown as { spec: { kind: string; algorithm?: string; numPacks?: number } }).spec;

test('topo -m of a DGX-1 (V100, NIC row and column, legend): NV1/NV2 between the quads, SYS across; NVLink peers are DGX-1\'s links', (t) => {
  const topo = parseTopoMatrix(fixture('topo-dgx1-v100.txt'));
  t.deepEqual(topo.gpus, [0, 1, 2, 3, 4, 5, 6, 7]);
  t.deepEqual(topo.matrix[0], ['X', 'NV1', 'NV1', 'NV2', 'NV2', 'SYS', 'SYS', 'SYS']);
  t.deepEqual(topo.matrix[6], ['SYS', 'SYS', 'NV1', 'SYS', 'NV1', 'NV2', 'X', 'NV2']);
  for (let i = 0; i < 8; i++) for (let j = 0; j < 8; j++) t.is(topo.matrix[i][j], topo.matrix[j][i], `symmetric at ${i},${j}`);
  t.deepEqual(nvlinkPeers(topo, topo.gpus), DGX1_LINKS);
  // The second quad alone, as CUDA_VISIBLE_DEVICES=4,5,6,7 shows it: fully connected, renumbered.
  t.deepEqual(nvlinkPeers(topo, [4, 5, 6, 7]), [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]);
  t.deepEqual(nvlinkPeers(topo, [5, 0]), [[], []]);
});

test('topo -m of 8 PCIe GPUs (tabs, NIC rows, empty NUMA cells): all SYS, no NVLink peers', (t) => {
  const topo = parseTopoMatrix(fixture('topo-8x-rtx4090.txt'));
  t.deepEqual(topo.gpus, [0, 1, 2, 3, 4, 5, 6, 7]);
  t.deepEqual(topo.matrix[6], ['SYS', 'SYS', 'SYS', 'SYS', 'SYS', 'SYS', 'X', 'SYS']);
  t.true(topo.matrix.every((row, i) => row.every((c, j) => c === (i === j ? 'X' : 'SYS'))));
  t.deepEqual(nvlinkPeers(topo, topo.gpus), [[], [], [], [], [], [], [], []]);
});

test('topo -m of one GPU (H100, NUMA columns): a 1×1 matrix', (t) => {
  const topo = parseTopoMatrix(fixture('topo-h100-1gpu.txt'));
  t.deepEqual(topo, { gpus: [0], matrix: [['X']] });
  t.deepEqual(nvlinkPeers(topo, [0]), [[]]);
});

test('topo -m: text without a GPU matrix, a short row or a missing row is an error', (t) => {
  t.throws(() => parseTopoMatrix('No devices were found\n'), { message: /no GPU0 column header/ });
  t.throws(() => parseTopoMatrix('\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tNV4\t0-7\nGPU1\tNV4\n'), { message: /row GPU1 has 1 of 2 GPU columns/ });
  t.throws(() => parseTopoMatrix('\tGPU0\tGPU1\tCPU Affinity\nGPU0\t X \tNV4\t0-7\n'), { message: /no row for GPU1/ });
  t.throws(() => parseTopoMatrix('\tGPU0\tGPU1\nGPU0\t X \tNV4\nGPU1\t X \tNV4\n'), { message: /GPU1's own entry is 'NV4', not X/ });
  t.throws(() => nvlinkPeers(parseTopoMatrix(fixture('topo-h100-1gpu.txt')), [1]), { message: /no row for GPU1/ });
});

// Two GPUs as `nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id --format=csv` printed them
// on one laptop, with the UUIDs `nvidia-smi -L` printed there.
const LAPTOP = `0, NVIDIA GeForce RTX 4070 Laptop GPU, 8188 MiB, 00000000:01:00.0, GPU-1831b67f-ccc0-c3fc-9167-cff059c3224c
1, NVIDIA GeForce RTX 5070 Ti, 16303 MiB, 00000000:05:00.0, GPU-73e7270e-ff5b-d1a2-de93-bc83af87699d
`;

test('--query-gpu lines: index, name, memory, PCI bus id, UUID; [N/A] memory is null', (t) => {
  const gpus = parseGpuQuery(LAPTOP);
  t.deepEqual(gpus[1], { index: 1, name: 'NVIDIA GeForce RTX 5070 Ti', memoryMiB: 16303, pciBusId: '00000000:05:00.0', uuid: 'GPU-73e7270e-ff5b-d1a2-de93-bc83af87699d' });
  t.is(gpus.length, 2);
  t.deepEqual(parseGpuQuery('0, Some, GPU, [N/A], 00000000:01:00.0, GPU-1\r\n'), [{ index: 0, name: 'Some, GPU', memoryMiB: null, pciBusId: '00000000:01:00.0', uuid: 'GPU-1' }]);
  t.deepEqual(parseGpuQuery(''), []);
  t.throws(() => parseGpuQuery('0, A100, 40960 MiB\n'), { message: /expected 5 fields/ });
  t.throws(() => parseGpuQuery('x, A100, 40960 MiB, 00000000:01:00.0, GPU-1\n'), { message: /bad index/ });
});

test('CUDA_VISIBLE_DEVICES: all when unset, listed order, UUID prefixes, and the list ends at the first entry naming no new GPU', (t) => {
  const gpus = parseGpuQuery(LAPTOP);
  const idx = (v: string | undefined) => visibleGpus(gpus, v).map((g: GpuInfo) => g.index);
  t.deepEqual(idx(undefined), [0, 1]);
  t.deepEqual(idx(''), []);
  t.deepEqual(idx('1,0'), [1, 0]);
  t.deepEqual(idx('GPU-73e7,0'), [1, 0]);
  t.deepEqual(idx('0,7,1'), [0]);
  t.deepEqual(idx('1,1,0'), [1]);
  t.deepEqual(idx('-1'), []);
  t.deepEqual(idx('GPU-'), []);
});

function crossdev(env: Record<string, string | undefined>, ...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'ts/cli/main.ts', ...args], { encoding: 'utf8', env: { ...process.env, CROSSDEV_BACKEND: B, ...env } });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

/** A folder with a stand-in `nvidia-smi` (a Node script) that prints `query` and `topo`, or fails. */
function fakeNvidiaSmi(o: { query: string; topo: string } | { fail: string }): string {
  const dir = mkdtempSync(join(tmpdir(), 'crossdev-smi-'));
  const body =
    'fail' in o
      ? `process.stdout.write(${JSON.stringify(o.fail)}); process.exit(9);`
      : `const a = process.argv.slice(2).join(' ');
if (a === '--query-gpu=index,name,memory.total,pci.bus_id,uuid --format=csv,noheader') process.stdout.write(${JSON.stringify(o.query)});
else if (a === 'topo -m') process.stdout.write(${JSON.stringify(o.topo)});
else { process.stderr.write('unexpected arguments: ' + a); process.exit(2); }`;
  writeFileSync(join(dir, 'nvidia-smi'), `#!${process.execPath}\n${body}\n`);
  chmodSync(join(dir, 'nvidia-smi'), 0o755);
  return dir;
}

const EMPTY_PATH = mkdtempSync(join(tmpdir(), 'crossdev-nopath-'));

test(`[${B}] devices without nvidia-smi: the virtual CPU devices, host memory, "no GPU (nvidia-smi not found)"`, (t) => {
  const r = crossdev({ PATH: EMPTY_PATH }, 'devices');
  t.is(r.code, 0, r.err);
  t.regex(r.out, new RegExp(`^crossdev devices: backend ${B}$`, 'm'));
  t.regex(r.out, /^host: \d+ cores.*, [\d.]+ GiB memory/m);
  t.regex(r.out, /^CPU devices: 8 virtual/m);
  for (let i = 0; i < 8; i++) t.true(r.out.includes(`\n  ${CPU(i)}\n`), CPU(i));
  t.regex(r.out, /link between any two: host memory/);
  t.regex(r.out, /^GPUs: no GPU \(nvidia-smi not found\)$/m);
});

test(`[${B}] devices --json --cpus 3 --measure: the report's shape; its CPU devices make chooseTheBest fall back to ReductionToOneDevice`, (t) => {
  const r = crossdev({ PATH: EMPTY_PATH }, 'devices', '--json', '--cpus', '3', '--measure');
  t.is(r.code, 0, r.err);
  const report: DevicesReport = JSON.parse(r.out);
  t.is(report.backend, B);
  t.true(Number.isInteger(report.host.cores) && report.host.cores >= 1);
  t.true(report.host.memoryBytes > 0);
  t.deepEqual(report.cpu.devices, [CPU(0), CPU(1), CPU(2)]);
  t.is(report.cpu.link.kind, 'host memory');
  const bw = report.cpu.link.copyGBs!;
  t.true(bw.allThreads > 0 && bw.oneThread > 0 && bw.threads === report.host.cores);
  t.deepEqual(report.gpu, { status: 'no GPU (nvidia-smi not found)', devices: [], info: [], links: [], matrix: null, topologyError: null });
  t.true(chooseTheBest(report.cpu.devices) instanceof ReductionToOneDevice);
});

const DGX1_QUERY = ['06', '07', '0A', '0B', '85', '86', '89', '8A'].map((bus, i) => `${i}, Tesla V100-SXM2-16GB, 16160 MiB, 00000000:${bus}:00.0, GPU-0000000${i}-aaaa-bbbb-cccc-dddddddddddd`).join('\n') + '\n';

test(`[${B}] devices on a DGX-1 (stand-in nvidia-smi): 8 GPUs, the topo matrix, and links that make chooseTheBest pick hierarchical copy`, (t) => {
  const path = fakeNvidiaSmi({ query: DGX1_QUERY, topo: fixture('topo-dgx1-v100.txt') });
  const text = crossdev({ PATH: path, CUDA_VISIBLE_DEVICES: undefined }, 'devices');
  t.is(text.code, 0, text.err);
  t.regex(text.out, /^GPUs: 8 GPUs \(nvidia-smi\)$/m);
  t.true(text.out.includes(`  ${GPU(5)}  Tesla V100-SXM2-16GB, 16160 MiB, PCI 00000000:86:00.0 (nvidia-smi GPU 5)`));
  t.regex(text.out, /^ {2}GPU:1 +NV1 +X +NV2 +NV1 +SYS +NV2 +SYS +SYS$/m);
  t.regex(text.out, /NV# +a bonded set of # NVLinks/);
  t.regex(text.out, /SYS +PCIe and the SMP interconnect/);
  t.notRegex(text.out, /PIX/);

  const r = crossdev({ PATH: path, CUDA_VISIBLE_DEVICES: undefined }, 'devices', '--json');
  t.is(r.code, 0, r.err);
  const report: DevicesReport = JSON.parse(r.out);
  t.deepEqual(report.gpu.devices, Array.from({ length: 8 }, (_, i) => GPU(i)));
  t.deepEqual(report.gpu.links, DGX1_LINKS);
  t.deepEqual(report.gpu.matrix![4], ['NV2', 'SYS', 'SYS', 'SYS', 'X', 'NV1', 'NV1', 'NV2']);
  t.like(report.gpu.info[2], { device: GPU(2), index: 2, name: 'Tesla V100-SXM2-16GB', memoryMiB: 16160, pciBusId: '00000000:0A:00.0' });
  const ops = chooseTheBest(report.gpu.devices, { links: report.gpu.links });
  t.true(ops instanceof AllReduceCrossDeviceOps);
  t.like(configOf(ops), { kind: 'AllReduce', algorithm: 'hierarchical_copy', numPacks: 8 });
});

test(`[${B}] devices with CUDA_VISIBLE_DEVICES=7,6,5,4 on a DGX-1: GPUs renumbered in that order, one NVLink quad, so NCCL`, (t) => {
  const path = fakeNvidiaSmi({ query: DGX1_QUERY, topo: fixture('topo-dgx1-v100.txt') });
  const r = crossdev({ PATH: path, CUDA_VISIBLE_DEVICES: '7,6,5,4' }, 'devices', '--json');
  t.is(r.code, 0, r.err);
  const report: DevicesReport = JSON.parse(r.out);
  t.is(report.gpu.status, '4 GPUs (nvidia-smi, CUDA_VISIBLE_DEVICES=7,6,5,4)');
  t.deepEqual(report.gpu.info.map((g) => [g.device, g.index]), [[GPU(0), 7], [GPU(1), 6], [GPU(2), 5], [GPU(3), 4]]);
  t.deepEqual(report.gpu.links, [[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]);
  t.deepEqual(report.gpu.matrix![0], ['X', 'NV2', 'NV1', 'NV2']);
  t.like(configOf(chooseTheBest(report.gpu.devices, { links: report.gpu.links })), { algorithm: 'nccl', numPacks: 1 });
});

test(`[${B}] devices when nvidia-smi fails (no driver) or topo -m is not understood: still exit 0, and the reason is shown`, (t) => {
  const broken = fakeNvidiaSmi({ fail: "NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver. Make sure that the latest NVIDIA driver is installed and running.\n" });
  const r = crossdev({ PATH: broken }, 'devices');
  t.is(r.code, 0, r.err);
  t.regex(r.out, /^GPUs: no GPU \(nvidia-smi --query-gpu=\S+ --format=csv,noheader failed: NVIDIA-SMI has failed because it couldn't communicate with the NVIDIA driver\./m);

  const odd = fakeNvidiaSmi({ query: DGX1_QUERY.split('\n')[0] + '\n', topo: 'Topology not supported\n' });
  const j = crossdev({ PATH: odd, CUDA_VISIBLE_DEVICES: undefined }, 'devices', '--json');
  t.is(j.code, 0, j.err);
  const report: DevicesReport = JSON.parse(j.out);
  t.deepEqual(report.gpu.devices, [GPU(0)]);
  t.deepEqual(report.gpu.links, [[]]);
  t.is(report.gpu.matrix, null);
  t.regex(report.gpu.topologyError!, /no GPU0 column header/);
});

/** `chooseTheBest(devices)` (no links given) in a fresh process with `env`: the ops' class and configuration. */
function chooseIn(env: Record<string, string | undefined>, devices: string[]): { kind: string; spec: unknown } {
  const script = `import { chooseTheBest } from './ts/index.ts';
const ops = chooseTheBest(${JSON.stringify(devices)});
console.log(JSON.stringify({ kind: ops.constructor.name, spec: ops.spec }));`;
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', env: { ...process.env, CROSSDEV_BACKEND: B, ...env } });
  if (r.status !== 0) throw new Error(r.stderr);
  return JSON.parse(r.stdout);
}

test(`[${B}] chooseTheBest without links sees this machine's GPUs: a DGX-1 gets hierarchical copy, one quad NCCL, no GPU reduction to one device`, (t) => {
  const dgx1 = fakeNvidiaSmi({ query: DGX1_QUERY, topo: fixture('topo-dgx1-v100.txt') });
  const all = chooseIn({ PATH: dgx1, CUDA_VISIBLE_DEVICES: undefined }, Array.from({ length: 8 }, (_, i) => `/gpu:${i}`));
  t.like(all, { kind: 'AllReduceCrossDeviceOps', spec: { algorithm: 'hierarchical_copy', numPacks: 8 } });
  const quad = chooseIn({ PATH: dgx1, CUDA_VISIBLE_DEVICES: undefined }, ['/gpu:0', '/gpu:1', '/gpu:2', '/gpu:3']);
  t.like(quad, { kind: 'AllReduceCrossDeviceOps', spec: { algorithm: 'nccl', numPacks: 1 } });
  // A GPU the machine lacks, or no GPU at all: TensorFlow's fallback.
  t.is(chooseIn({ PATH: dgx1, CUDA_VISIBLE_DEVICES: '0,1' }, ['/gpu:0', '/gpu:2']).kind, 'ReductionToOneDevice');
  t.is(chooseIn({ PATH: EMPTY_PATH }, ['/gpu:0', '/gpu:1']).kind, 'ReductionToOneDevice');
});
