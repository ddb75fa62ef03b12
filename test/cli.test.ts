/** The `crossdev` command line: output, files and exit codes (0 ok, 1 failed check or error, 2 bad arguments). */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backend } from '../ts/index.js';

const B = backend();

function crossdev(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'ts/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, CROSSDEV_BACKEND: B },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test(`[${B}] --help for the program and each command`, (t) => {
  for (const args of [['--help'], ['bench', '--help'], ['plan', '--help']]) {
    const r = crossdev(...args);
    t.is(r.code, 0, args.join(' '));
    t.regex(r.out, /Usage: crossdev/);
  }
});

test(`[${B}] bad arguments exit with 2 and say what is allowed`, (t) => {
  for (const [args, message] of [
    [['bench', '--devices', '0'], /--devices must be an integer in \[1, 64\]/],
    [['bench', '--dtype', 'float8'], /--dtype must be one of float32, float64/],
    [['plan', '--alg', 'bogus'], /--alg must be one of ring/],
    [['frobnicate'], /unknown command 'frobnicate'/],
  ] as const) {
    const r = crossdev(...args);
    t.is(r.code, 2, args.join(' '));
    t.regex(r.err, message);
  }
});

test(`[${B}] bench --json --plot: every row right, and a chart with a line per algorithm`, (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'crossdev-cli-'));
  const svg = join(dir, 'chart.svg');
  const r = crossdev('bench', '--alg', 'all', '--devices', '4', '--min-bytes', '64', '--max-bytes', '1024', '--json', '--plot', svg);
  t.is(r.code, 0, r.err);
  const report = JSON.parse(r.out);
  t.is(report.backend, B);
  t.true(report.rows.length >= 5 * 3);
  t.true(report.rows.every((row: { wrong: number }) => row.wrong === 0));
  const chart = readFileSync(svg, 'utf8');
  t.true(chart.startsWith('<svg'));
  for (const alg of ['reduce_to_one', 'ring', 'rechd', 'shuffle', 'hierarchical_copy', 'nccl']) t.true(chart.includes(`>${alg}</text>`), alg);
  t.is((chart.match(/<polyline/g) ?? []).length, 6);
});

test(`[${B}] plan prints the stages and bytes per link; an impossible plan exits with 1`, (t) => {
  const r = crossdev('plan', '--alg', 'ring', '--devices', '4', '--size', '64');
  t.is(r.code, 0, r.err);
  t.regex(r.out, /plan ring: 4 inputs of 16 float32 elements, 6 stages, 384 bytes across devices/);
  t.is((r.out.match(/^ {2}link /gm) ?? []).length, 4);
  const bad = crossdev('plan', '--alg', 'rechd', '--devices', '3');
  t.is(bad.code, 1);
  t.regex(bad.err, /ERR_INVALID_ARGUMENT: num_devices must be a power of 2/);
});
