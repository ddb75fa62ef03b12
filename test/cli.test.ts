/** The `crossdev` command line: output, files and exit codes (0 ok, 1 failed check or error, 2 bad arguments). */
import test from 'ava';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { backend } from '../ts/index.js';
import { COMMANDS, HELP } from '../ts/cli/commands.js';

const B = backend();

function crossdev(...args: string[]): { code: number | null; out: string; err: string } {
  const r = spawnSync(process.execPath, ['--import', 'tsx', 'ts/cli/main.ts', ...args], {
    encoding: 'utf8',
    env: { ...process.env, CROSSDEV_BACKEND: B },
  });
  return { code: r.status, out: r.stdout, err: r.stderr };
}

test(`[${B}] --help for the program and each command; each command's help names exactly the options it takes`, (t) => {
  for (const args of [['--help'], ['-h'], ['help'], ['bench', '--help'], ['plan', '--help'], ['devices', '-h']]) {
    const r = crossdev(...args);
    t.is(r.code, 0, args.join(' '));
    t.regex(r.out, /Usage: crossdev/);
    t.regex(r.out, /Exit codes/);
  }
  t.is(crossdev('--help').out.trim(), HELP);
  for (const name of Object.keys(COMMANDS)) t.true(HELP.includes(`crossdev ${name} --help`), name);
  for (const [name, c] of Object.entries(COMMANDS)) {
    t.is(crossdev(name, '--help').out.trim(), c.help, name);
    const documented = new Set([...c.help.matchAll(/--([a-z][a-z-]*)/g)].map((m) => m[1]));
    t.deepEqual([...documented].sort(), [...c.flags].sort(), `${name}: options in the help`);
  }
});

test(`[${B}] no command: the help on stderr and exit code 2`, (t) => {
  const r = crossdev();
  t.is(r.code, 2);
  t.is(r.out, '');
  t.is(r.err.trim(), HELP);
});

test(`[${B}] bad arguments exit with 2 and say what is allowed`, (t) => {
  for (const [args, message] of [
    [['bench', '--devices', '0'], /--devices must be an integer in \[1, 64\]/],
    [['bench', '--dtype', 'float8'], /--dtype must be one of float32, float64/],
    [['plan', '--alg', 'bogus'], /--alg must be one of ring/],
    [['frobnicate'], /unknown command 'frobnicate'; commands: bench, plan, devices/],
    [['plan', 'extra'], /unexpected argument 'extra'/],
    [['bench', '--bogus', '1'], /^crossdev: unknown option --bogus for crossdev bench \(see crossdev bench --help\)$/m],
    [['devices', '--gpus'], /unknown option --gpus for crossdev devices/],
    [['devices', '--json=yes'], /--json takes no value, got 'yes'/],
    [['devices', '--cpus', '0'], /--cpus must be an integer in \[1, 1024\]/],
    [['help', '--json'], /unknown option --json for crossdev \(see crossdev --help\)/],
    [['plan', '--model', 'resnet51'], /--model must be one of resnet50, bert-base or a model file; 'resnet51' is neither/],
    [['plan', '--model'], /--model needs a name/],
    [['plan', '--model', 'resnet50', '--num-packs', '4', '--bytes-per-pack', '1024'], /--num-packs and --bytes-per-pack are different packings: give one/],
    [['plan', '--model', 'resnet50', '--agg-small-grads-max-group', '4'], /--agg-small-grads-max-group needs --agg-small-grads-max-bytes/],
    [['plan', '--model', 'resnet50', '--size', '64'], /--size does not go with --model/],
    [['plan', '--model', 'resnet50', '--alg', 'nccl/xring'], /--alg must be one of nccl, ring, rechd, shuffle, hierarchical_copy, reduce_to_one/],
    [['plan', '--alg', 'ring', '--num-packs', '2'], /--num-packs needs --model/],
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

// -------------------------------------------------------------------------------------------
// plan --model: a real model's gradients packed as crossdev packs them, and the bytes per link
// -------------------------------------------------------------------------------------------

interface ModelReport {
  model: { name: string; tensors: number; parameters: number; bytes: number };
  packs: { tensors: number[]; elements: number; bytes: number }[];
  allReduce: { algorithm: string; devices: number; bytesMoved: { total: number; byLink: Record<string, number> } };
}

const RESNET50 = JSON.parse(readFileSync('benches/models/resnet50.json', 'utf8')) as { parameters: number; shapes: { shape: number[] }[] };
const SIZES = RESNET50.shapes.map((s) => s.shape.reduce((a, b) => a * b, 1));

function planJson(...args: string[]): ModelReport {
  const r = crossdev('plan', '--model', 'resnet50', ...args, '--json');
  if (r.code !== 0) throw new Error(`exit ${r.code}: ${r.err}`);
  return JSON.parse(r.out);
}

const local = (i: number) => `/job:localhost/replica:0/task:0/device:CPU:${i}`;

test(`[${B}] plan --model resnet50 --num-packs 4: 4 packs of the model's parameters; each ring link carries what the chunking gives`, (t) => {
  const text = crossdev('plan', '--model', 'resnet50', '--num-packs', '4');
  t.is(text.code, 0, text.err);
  t.regex(text.out, /^model resnet50: resnet50 \(torchvision layout\), 161 tensors, 25557032 parameters \(102228128 bytes, float32\)$/m);
  t.regex(text.out, /^packing: ConcatAndSplitPacker\(\{ numPacks: 4 \}\): 4 packs$/m);
  t.is((text.out.match(/^ +\d+ +\d+ +\d+ +\d+ {2}[\d-]+$/gm) ?? []).length, 4);
  t.regex(text.out, /^all-reduce nccl over 8 devices/m);
  t.is((text.out.match(/^ {2}link CPU:\d->CPU:\d +\d+$/gm) ?? []).length, 8);

  const r = planJson('--num-packs', '4');
  t.like(r.model, { name: 'resnet50', tensors: SIZES.length, parameters: RESNET50.parameters, bytes: 4 * RESNET50.parameters });
  t.is(r.packs.length, 4);
  t.is(r.packs.reduce((a, p) => a + p.elements, 0), RESNET50.parameters);
  t.true(r.packs.every((p) => p.bytes === 4 * p.elements));
  // Every gradient is in some pack, and consecutive packs share at most the gradient they split.
  t.deepEqual([...new Set(r.packs.flatMap((p) => p.tensors))], SIZES.map((_, i) => i));
  for (let k = 1; k < 4; k++) t.true(r.packs[k].tensors[0] >= r.packs[k - 1].tensors.at(-1)!);

  // NCCL's ring over N = 8 devices: a pack of E elements goes in N chunks of s = ceil(E/N), the
  // last clipped to E - (N-1)s. Each phase (reduce-scatter, all-gather) sends every chunk but one
  // over each link; the clipped chunk is the one left out on 2 of the 8 links.
  const N = 8;
  t.is(r.allReduce.algorithm, 'nccl');
  const E = RESNET50.parameters / 4;
  const s = Math.ceil(E / N);
  const last = E - (N - 1) * s;
  const links = r.allReduce.bytesMoved.byLink;
  t.deepEqual(Object.keys(links).sort(), Array.from({ length: N }, (_, d) => `${local(d)}->${local((d + 1) % N)}`).sort());
  const perLink = Object.values(links).sort((a, b) => a - b);
  const full = 4 * 4 * (2 * E - 2 * s);
  const clipped = 4 * 4 * (2 * E - s - last);
  t.deepEqual(perLink, [...Array(N - 2).fill(full), clipped, clipped].sort((a, b) => a - b));
  t.is(r.allReduce.bytesMoved.total, 2 * (N - 1) * 4 * RESNET50.parameters);
  t.is(r.allReduce.bytesMoved.total, perLink.reduce((a, b) => a + b, 0));
});

test(`[${B}] plan --model: ring over 2 devices carries the model once each way; hierarchical copy moves 2n-2 copies of every pack`, (t) => {
  const two = planJson('--num-packs', '4', '--alg', 'ring', '--devices', '2');
  t.deepEqual(two.allReduce.bytesMoved.byLink, { [`${local(0)}->${local(1)}`]: 4 * RESNET50.parameters, [`${local(1)}->${local(0)}`]: 4 * RESNET50.parameters });
  const hc = planJson('--num-packs', '4', '--alg', 'hierarchical_copy');
  t.is(hc.allReduce.bytesMoved.total, (2 * 8 - 2) * 4 * RESNET50.parameters);
  // Pack k is summed on device k (k < 4), which sends it to the other quad's root k + 4.
  for (let k = 0; k < 4; k++) t.is(hc.allReduce.bytesMoved.byLink[`${local(k)}->${local(k + 4)}`], hc.packs[k].bytes);
});

test(`[${B}] plan --model with small-gradient aggregation and with bytes per pack: every gradient in one pack, the packers' limits kept`, (t) => {
  const maxBytes = 65536;
  const maxGroup = 4;
  const sizeOf = (p: { tensors: number[] }) => p.tensors.reduce((a, i) => a + SIZES[i], 0);
  const small = planJson('--agg-small-grads-max-bytes', String(maxBytes), '--agg-small-grads-max-group', String(maxGroup));
  t.deepEqual(small.packs.flatMap((p) => p.tensors).sort((a, b) => a - b), SIZES.map((_, i) => i));
  t.true(small.packs.every((p) => p.elements === sizeOf(p)));
  const multi = small.packs.filter((p) => p.tensors.length > 1);
  t.true(multi.length > 0);
  for (const p of multi) {
    t.true(p.tensors.length <= maxGroup + 2 && p.tensors.every((i) => 4 * SIZES[i] <= maxBytes), JSON.stringify(p.tensors));
    t.deepEqual(p.tensors, p.tensors.map((_, k) => p.tensors[0] + k));
  }
  t.is(small.allReduce.bytesMoved.total, 2 * 7 * 4 * RESNET50.parameters);

  const B_ = 4 << 20;
  const grouped = planJson('--bytes-per-pack', String(B_));
  t.deepEqual(grouped.packs.flatMap((p) => p.tensors).sort((a, b) => a - b), SIZES.map((_, i) => i));
  t.true(grouped.packs.every((p) => p.elements === sizeOf(p)));
  // Back-propagation order: the first pack holds the last gradients. A pack closes once it holds
  // more than B bytes, so every pack but the last holds more than B, and at most B before its
  // last gradient (the lowest index) joined.
  t.is(grouped.packs[0].tensors.at(-1), SIZES.length - 1);
  for (const p of grouped.packs.slice(0, -1)) {
    t.true(p.bytes > B_);
    t.true(p.bytes - 4 * SIZES[p.tensors[0]] <= B_);
  }
});

test(`[${B}] plan --model: a plan that cannot be built exits with 1 and names the pack; an unreadable model file too`, (t) => {
  const r = crossdev('plan', '--model', 'resnet50', '--num-packs', '4', '--alg', 'rechd');
  t.is(r.code, 1);
  t.regex(r.err, /ERR_INVALID_ARGUMENT: pack 0 \(6389258 elements\): recursive halving-doubling over 8 devices needs a length divisible by 8, got 6389258/);
  const dir = mkdtempSync(join(tmpdir(), 'crossdev-model-'));
  const file = join(dir, 'm.json');
  writeFileSync(file, JSON.stringify({ model: 'm', dtype: 'float32', parameters: 7, shapes: [{ name: 'w', shape: [2, 3] }] }));
  const bad = crossdev('plan', '--model', file);
  t.is(bad.code, 1);
  t.regex(bad.err, /model .*m\.json: says 7 parameters, its shapes hold 6/);
  writeFileSync(file, JSON.stringify({ model: 'm', dtype: 'float32', shapes: [{ name: 'w', shape: [2, 3] }, { name: 'b', shape: [3] }] }));
  const ok = crossdev('plan', '--model', file, '--json', '--devices', '3', '--alg', 'reduce_to_one');
  t.is(ok.code, 0, ok.err);
  const report: ModelReport = JSON.parse(ok.out);
  t.deepEqual(report.packs, [{ tensors: [0, 1], elements: 9, bytes: 36 }]);
  t.is(report.allReduce.bytesMoved.total, 2 * 2 * 36);
});
