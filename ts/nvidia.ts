/**
 * What `nvidia-smi` says about this machine's GPUs, parsed: `--query-gpu` lines, the
 * `topo -m` link matrix, and which GPUs `CUDA_VISIBLE_DEVICES` leaves this process (and in which
 * order, the order of TensorFlow's `/gpu:N`). Pure functions of the text, so that they can be
 * tested on outputs captured on real machines.
 */

/** One GPU as `nvidia-smi --query-gpu=index,name,memory.total,pci.bus_id,uuid --format=csv,noheader` lists it. */
export interface GpuInfo {
  /** nvidia-smi's index (PCI order, not necessarily CUDA's). */
  index: number;
  /** Product name, e.g. `Tesla V100-SXM2-16GB`. */
  name: string;
  /** Memory in MiB, or null where nvidia-smi prints none (`[N/A]`). */
  memoryMiB: number | null;
  /** PCI bus id, e.g. `00000000:06:00.0`. */
  pciBusId: string;
  /** `GPU-…` UUID. */
  uuid: string;
}

/** The `--query-gpu` fields {@link parseGpuQuery} reads, in its order. */
export const GPU_QUERY = ['index', 'name', 'memory.total', 'pci.bus_id', 'uuid'] as const;

/** Parses the CSV (no header) lines of `nvidia-smi --query-gpu=` {@link GPU_QUERY} `--format=csv,noheader`. */
export function parseGpuQuery(text: string): GpuInfo[] {
  const gpus: GpuInfo[] = [];
  for (const line of text.split(/\r?\n/)) {
    if (line.trim() === '') continue;
    const cells = line.split(',').map((c) => c.trim());
    // A name with a comma would add cells: the fields after it are the last three.
    if (cells.length < GPU_QUERY.length) throw new Error(`nvidia-smi --query-gpu: expected ${GPU_QUERY.length} fields, got '${line}'`);
    const [uuid, pciBusId, memory] = [cells.at(-1)!, cells.at(-2)!, cells.at(-3)!];
    const index = Number(cells[0]);
    if (!Number.isInteger(index) || index < 0) throw new Error(`nvidia-smi --query-gpu: bad index in '${line}'`);
    const mib = /^(\d+) MiB$/.exec(memory);
    gpus.push({ index, name: cells.slice(1, -3).join(', '), memoryMiB: mib ? Number(mib[1]) : null, pciBusId, uuid });
  }
  return gpus;
}

/**
 * The GPUs a CUDA process sees, in its order (`/gpu:0` first), given `CUDA_VISIBLE_DEVICES`:
 * unset means all in nvidia-smi's order; otherwise a comma-separated list of indices or UUIDs
 * (a unique prefix, `GPU-` included, suffices) where, as in CUDA, the first entry that names no
 * GPU (or one already named) ends the list.
 */
export function visibleGpus(gpus: readonly GpuInfo[], cudaVisibleDevices: string | undefined): GpuInfo[] {
  if (cudaVisibleDevices === undefined) return [...gpus];
  const out: GpuInfo[] = [];
  for (const raw of cudaVisibleDevices.split(',')) {
    const entry = raw.trim();
    const matches = /^\d+$/.test(entry) ? gpus.filter((g) => g.index === Number(entry)) : entry.startsWith('GPU-') ? gpus.filter((g) => g.uuid.startsWith(entry)) : [];
    if (matches.length !== 1 || out.includes(matches[0])) break;
    out.push(matches[0]);
  }
  return out;
}

/** A GPU link kind of `nvidia-smi topo -m`, from nearest to farthest (`SOC` is old drivers' `SYS`). */
export const LINK_KINDS: Record<string, string> = {
  'NV#': 'a bonded set of # NVLinks',
  PIX: 'PCIe through at most one PCIe bridge',
  PXB: 'PCIe through several PCIe bridges, not the host bridge',
  PHB: 'PCIe through a PCIe host bridge (typically the CPU)',
  NODE: 'PCIe and the interconnect between PCIe host bridges within a NUMA node',
  SYS: 'PCIe and the SMP interconnect between NUMA nodes (QPI/UPI)',
  SOC: 'PCIe and the SMP interconnect between sockets (older drivers)',
};

/** The GPU-to-GPU part of `nvidia-smi topo -m`. */
export interface GpuTopology {
  /** nvidia-smi's index of each row (and column), in the matrix's order. */
  gpus: number[];
  /** `matrix[i][j]`: how the GPUs of rows i and j connect (`X` on the diagonal, `NV2`, `PIX`, …). */
  matrix: string[][];
}

const GPU_LABEL = /^GPU(\d+)$/;

/**
 * Parses `nvidia-smi topo -m` (tab- or space-separated, with or without NIC rows and columns,
 * CPU/NUMA affinity columns and the legend) into the GPU-to-GPU link matrix. Throws when the
 * text holds no GPU matrix or a row is malformed.
 */
export function parseTopoMatrix(text: string): GpuTopology {
  const lines = text.split(/\r?\n/).map((l) => l.trim().split(/\s+/).filter((c) => c !== ''));
  // The header names the columns, GPUs first; GPU0's own row starts `GPU0 X`.
  const header = lines.findIndex((t) => t[0] === 'GPU0' && t[1] !== 'X');
  if (header < 0) throw new Error('nvidia-smi topo -m: no GPU0 column header');
  const gpus: number[] = [];
  for (const label of lines[header]) {
    const m = GPU_LABEL.exec(label);
    if (!m) break;
    gpus.push(Number(m[1]));
  }
  const rows = new Map<number, string[]>();
  for (const t of lines.slice(header + 1)) {
    if (t[0] === 'Legend:') break;
    const m = GPU_LABEL.exec(t[0] ?? '');
    if (!m) continue;
    const cells = t.slice(1, 1 + gpus.length);
    if (cells.length < gpus.length) throw new Error(`nvidia-smi topo -m: row ${t[0]} has ${cells.length} of ${gpus.length} GPU columns`);
    rows.set(Number(m[1]), cells);
  }
  const matrix = gpus.map((g, i) => {
    const row = rows.get(g);
    if (!row) throw new Error(`nvidia-smi topo -m: no row for GPU${g}`);
    if (row[i] !== 'X') throw new Error(`nvidia-smi topo -m: GPU${g}'s own entry is '${row[i]}', not X`);
    return row;
  });
  return { gpus, matrix };
}

/**
 * For each of `visible` (in order), the positions in `visible` of the GPUs it reaches over
 * NVLink (`NV#` in the matrix): TensorFlow's device links, which `chooseTheBest(devices,
 * { links })` compares with DGX-1's.
 */
export function nvlinkPeers(topology: GpuTopology, visible: readonly number[]): number[][] {
  const at = visible.map((g) => topology.gpus.indexOf(g));
  if (at.some((i) => i < 0)) throw new Error(`nvidia-smi topo -m: no row for GPU${visible[at.findIndex((i) => i < 0)]}`);
  return at.map((i) => at.flatMap((j, k) => (/^NV\d+$/.test(topology.matrix[i][j]) ? [k] : [])));
}
