/**
 * Data-parallel training of a small MLP across processes with crossdev and MPI.
 *
 *   mpirun -np 4 node --import tsx examples/data-parallel-mlp.ts [--steps 300] [--batch 64]
 *
 * Every rank holds the same initial weights, takes its slice of each global batch of synthetic
 * data, computes the gradients of its slice, and all-reduces them (SUM) across the ranks with
 * `CollectiveAllReduce`; all ranks then take the same SGD step. Rank 0 also trains the same model
 * in one process on the whole batches (plain TypeScript, no crossdev) and checks that the weights
 * after the last step agree within float32 rounding; the process exits 1 if they do not.
 */
import { CollectiveAllReduce, init, PerDevice, ReduceOp, tensor, Tensor } from '../ts/index.js';

const arg = (name: string, fallback: number): number => {
  const i = process.argv.indexOf(`--${name}`);
  return i > 0 ? Number(process.argv[i + 1]) : fallback;
};
const STEPS = arg('steps', 300);
const BATCH = arg('batch', 64);
const [IN, HIDDEN] = [8, 16];
const LR = 0.1;

/** The model: y = w2 · tanh(W1 x + b1) + b2. */
interface Weights {
  w1: Float32Array; // HIDDEN × IN
  b1: Float32Array; // HIDDEN
  w2: Float32Array; // HIDDEN
  b2: Float32Array; // 1
}
const NAMES = ['w1', 'b1', 'w2', 'b2'] as const;
const SHAPES: Record<(typeof NAMES)[number], number[]> = { w1: [HIDDEN, IN], b1: [HIDDEN], w2: [HIDDEN], b2: [1] };

/** A deterministic generator (the same numbers on every rank). */
function random(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 2 ** 32 - 0.5;
  };
}

function initialWeights(): Weights {
  const r = random(42);
  const fill = (n: number, scale: number) => Float32Array.from({ length: n }, () => r() * scale);
  return { w1: fill(HIDDEN * IN, 0.7), b1: fill(HIDDEN, 0.1), w2: fill(HIDDEN, 0.7), b2: new Float32Array(1) };
}

/** Example `i` of the synthetic data set: x and its target sin(x₀) + x₁·x₂. */
function example(i: number): { x: number[]; y: number } {
  const r = random(1000 + i);
  const x = Array.from({ length: IN }, () => 2 * r());
  return { x, y: Math.sin(x[0]) + x[1] * x[2] };
}

/** The hidden activations and the prediction for `x`. */
function forward(w: Weights, x: number[]): { h: number[]; out: number } {
  const h = Array.from({ length: HIDDEN }, (_, j) => Math.tanh(x.reduce((s, xi, i) => s + w.w1[j * IN + i] * xi, w.b1[j])));
  return { h, out: h.reduce((s, hj, j) => s + w.w2[j] * hj, w.b2[0]) };
}

/** Gradients of ½·Σ(ŷ − y)² / batch over examples `[from, to)` of step `step`'s batch. */
function gradients(w: Weights, step: number, from: number, to: number): Weights {
  const g: Weights = { w1: new Float32Array(HIDDEN * IN), b1: new Float32Array(HIDDEN), w2: new Float32Array(HIDDEN), b2: new Float32Array(1) };
  const acc = { w1: new Float64Array(HIDDEN * IN), b1: new Float64Array(HIDDEN), w2: new Float64Array(HIDDEN), b2: new Float64Array(1) };
  for (let e = from; e < to; e++) {
    const { x, y } = example(step * BATCH + e);
    const { h, out } = forward(w, x);
    const d = (out - y) / BATCH;
    acc.b2[0] += d;
    for (let j = 0; j < HIDDEN; j++) {
      acc.w2[j] += d * h[j];
      const dh = d * w.w2[j] * (1 - h[j] * h[j]);
      acc.b1[j] += dh;
      for (let i = 0; i < IN; i++) acc.w1[j * IN + i] += dh * x[i];
    }
  }
  for (const n of NAMES) g[n].set(acc[n]);
  return g;
}

function sgd(w: Weights, g: Weights): void {
  for (const n of NAMES) for (let i = 0; i < w[n].length; i++) w[n][i] -= LR * g[n][i];
}

/** Mean squared error on 1024 held-out examples. */
function loss(w: Weights): number {
  let s = 0;
  for (let i = 0; i < 1024; i++) {
    const { x, y } = example(1e9 + i);
    s += (forward(w, x).out - y) ** 2;
  }
  return s / 1024;
}

const world = init({ backend: 'mpi' });
const { rank, size } = world;
if (BATCH % size !== 0) throw new Error(`--batch ${BATCH} must divide among ${size} ranks`);
const [device] = world.devices(1);
const ops = new CollectiveAllReduce({ numWorkers: size, communicationOptions: { timeoutSeconds: 60 } });

const w = initialWeights();
const shard = BATCH / size;
for (let step = 0; step < STEPS; step++) {
  const mine = gradients(w, step, rank * shard, (rank + 1) * shard);
  const summed = await ops.batchReduce(
    ReduceOp.SUM,
    NAMES.map((n) => {
      const v = new PerDevice({ [device]: tensor(mine[n], SHAPES[n]) });
      return [v, v] as const;
    }),
  );
  const g = Object.fromEntries(NAMES.map((n, i) => [n, (summed[i].get(device) as Tensor).data as Float32Array])) as unknown as Weights;
  sgd(w, g);
}

if (rank === 0) {
  // The same training in one process, on whole batches.
  const single = initialWeights();
  for (let step = 0; step < STEPS; step++) sgd(single, gradients(single, step, 0, BATCH));
  let worst = 0;
  for (const n of NAMES) for (let i = 0; i < w[n].length; i++) worst = Math.max(worst, Math.abs(w[n][i] - single[n][i]));
  const ok = worst <= 1e-4;
  console.log(
    `${size} ranks × ${shard} examples, ${STEPS} steps: held-out MSE ${loss(initialWeights()).toFixed(4)} → ${loss(w).toFixed(4)}; ` +
      `largest weight difference from one-process training ${worst.toExponential(2)} ${ok ? 'OK' : 'FAIL (over 1e-4)'}`,
  );
  if (!ok) process.exitCode = 1;
}
