/**
 * PyTorch on the CPU as a peer: `benches/torch/bench.py` run with the torch that
 * `benches/torch/install.sh` put in `.tools/torch` (or one python already imports), its JSON
 * read back. Without torch the PyTorch rows are skipped with the reason printed.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import type { Measured, Timing } from './lib.js';

const root = fileURLToPath(new URL('..', import.meta.url));
const python = process.env.PYTHON ?? 'python3';
/**
 * torch's OpenMP threads wait passively unless told otherwise: spinning ones collapse (1 ms
 * becomes 60 ms) as soon as another process wants the same cores, as on a shared 2-core machine.
 */
export const OMP_WAIT_POLICY = process.env.OMP_WAIT_POLICY ?? 'PASSIVE';
const env = { ...process.env, OMP_WAIT_POLICY, PYTHONPATH: [`${root}.tools/torch`, process.env.PYTHONPATH].filter(Boolean).join(':') };

/** A PyTorch variant (see bench.py): `stack`, `stack-copy` or `gloo`. */
export type TorchVariant = 'stack' | 'stack-copy' | 'gloo';

/** One PyTorch measurement. */
export interface TorchRow extends Measured {
  variant: TorchVariant;
  devices: number;
  bytes: number;
}

/** What bench.py printed. */
export interface TorchResult {
  torch: string;
  threads: number;
  rows: TorchRow[];
}

/** The torch version python imports, or why it cannot. */
function probe(): { version: string } | { reason: string } {
  const r = spawnSync(python, ['-W', 'ignore', '-c', 'import torch, torch.distributed as d; assert d.is_gloo_available(), "no gloo"; print(torch.__version__)'], { env, encoding: 'utf8' });
  if (r.error) return { reason: `${python} cannot be run (${r.error.message})` };
  if (r.status !== 0) return { reason: `${python} cannot import torch with gloo (${r.stderr.trim().split('\n').pop()})` };
  return { version: r.stdout.trim() };
}

/**
 * Makes torch available when `install` (running install.sh if python cannot import it);
 * returns undefined when it is, else the reason the PyTorch rows are skipped.
 */
export function torchSkipReason(install: boolean): string | undefined {
  const found = probe();
  if ('version' in found) return undefined;
  if (!install) return `${found.reason}; \`npm run bench -- --torch\` installs its CPU wheel into .tools/torch`;
  const script = `${root}benches/torch/install.sh`;
  if (!existsSync(script)) return `${script} is missing`;
  const r = spawnSync('bash', [script], { stdio: 'inherit', env });
  if (r.status !== 0) return `benches/torch/install.sh failed (exit ${r.status})`;
  const again = probe();
  return 'reason' in again ? again.reason : undefined;
}

/** Runs bench.py's `variants` over `sizes` on `devices` inputs. */
export function runTorch(devices: number, sizes: number[], variants: TorchVariant[], timing: Timing): TorchResult {
  const args = JSON.stringify({ devices, sizes, variants, timing });
  const r = spawnSync(python, [`${root}benches/torch/bench.py`, args], { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 });
  if (r.status !== 0) throw new Error(`benches/torch/bench.py failed (exit ${r.status})`);
  return JSON.parse(r.stdout);
}
