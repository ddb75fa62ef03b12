/**
 * A real model's gradients, packed as crossdev packs them before an all-reduce, and the bytes
 * the all-reduce of those packs moves over each link: what `crossdev plan --model` prints.
 * Models are gradient shape lists (`benches/models/*.json` in the package, shared with the
 * benchmarks: name, dtype, shapes).
 */
import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ConcatAndSplitPacker, tensor, utils, type BytesMoved, type Plan, type Tensor } from '../index.js';
import { CrossDeviceError } from '../errors.js';
import { CommandError, UsageError } from './args.js';

/** The models shipped in the package's `benches/models/` folder. */
export const MODELS = ['resnet50', 'bert-base'] as const;

/** A model's gradients: one per variable, in the model's variable order. */
export interface Model {
  /** `--model` as given. */
  name: string;
  /** What the file says it is. */
  description: string;
  /** Element type of every gradient (float32). */
  dtype: 'float32';
  /** Variable names and gradient shapes. */
  shapes: { name: string; shape: number[] }[];
  /** Elements of each gradient. */
  sizes: number[];
  /** Sum of `sizes`. */
  parameters: number;
}

/** The package's root folder (the nearest one above this file with a package.json). */
function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) && dirname(dir) !== dir) dir = dirname(dir);
  return dir;
}

/**
 * Loads a shipped model by name, or a file of the same format (`{ model, dtype, shapes: [{ name,
 * shape }] }`, with optional `tensors` and `parameters` counts, which must agree).
 */
export function loadModel(nameOrFile: string): Model {
  const shipped = (MODELS as readonly string[]).includes(nameOrFile);
  const file = shipped ? join(packageRoot(), 'benches', 'models', `${nameOrFile}.json`) : nameOrFile;
  if (!shipped && !existsSync(file)) throw new UsageError(`--model must be one of ${MODELS.join(', ')} or a model file; '${nameOrFile}' is neither`);
  let m: any;
  try {
    m = JSON.parse(readFileSync(file, 'utf8'));
  } catch (e) {
    throw new CommandError(`cannot read model ${file}: ${(e as Error).message}`);
  }
  const bad = (why: string) => new CommandError(`model ${file}: ${why}`);
  if (m?.dtype !== 'float32') throw bad(`dtype must be float32, got ${JSON.stringify(m?.dtype)}`);
  if (!Array.isArray(m.shapes) || m.shapes.length === 0) throw bad('shapes must be a non-empty list');
  const sizes = m.shapes.map((s: any, i: number) => {
    if (!Array.isArray(s?.shape) || !s.shape.every((d: unknown) => Number.isInteger(d) && (d as number) >= 0)) throw bad(`shapes[${i}].shape must be a list of sizes`);
    return s.shape.reduce((a: number, b: number) => a * b, 1);
  });
  const parameters = sizes.reduce((a: number, b: number) => a + b, 0);
  if (m.tensors !== undefined && m.tensors !== sizes.length) throw bad(`says ${m.tensors} tensors, lists ${sizes.length}`);
  if (m.parameters !== undefined && m.parameters !== parameters) throw bad(`says ${m.parameters} parameters, its shapes hold ${parameters}`);
  return { name: nameOrFile, description: String(m.model ?? nameOrFile), dtype: 'float32', shapes: m.shapes, sizes, parameters };
}

/** How gradients are grouped before the all-reduce (the options of `AllReduceCrossDeviceOps` and TF 2's `bytes_per_pack`). */
export type Packing =
  | { kind: 'numPacks'; numPacks: number }
  | { kind: 'smallGrads'; maxBytes: number; maxGroup: number }
  | { kind: 'bytesPerPack'; bytesPerPack: number };

/** One tensor that is all-reduced: which gradients it holds (all or part of), and its size. */
export interface Pack {
  /** Positions of the gradients with elements in it, ascending. */
  tensors: number[];
  elements: number;
  bytes: number;
}

/** The model's gradients on one device, as tensors (all views of one zero buffer: only sizes matter here). */
function gradients(model: Model): Tensor[] {
  const zeros = new Float32Array(Math.max(...model.sizes));
  return model.shapes.map((s, i) => tensor(zeros.subarray(0, model.sizes[i]), s.shape, { dtype: 'float32' }));
}

const range = (from: number, to: number) => Array.from({ length: to - from }, (_, i) => from + i);

/**
 * Packs the model's gradients as crossdev does: `numPacks` > 0 with `ConcatAndSplitPacker`
 * (0: each gradient alone), `smallGrads` with the small-tensor packer
 * (`AggregateSmallTensorPacker`'s, through `utils.packSmallTensors`, which also says which
 * gradients each pack holds), `bytesPerPack` with `utils.groupBySize` over the gradients in
 * the order back-propagation produces them (reversed), as TensorFlow 2 does.
 */
export function packModel(model: Model, packing: Packing): Pack[] {
  const pack = (tensors: number[], elements: number): Pack => ({ tensors, elements, bytes: elements * 4 });
  const n = model.sizes.length;
  switch (packing.kind) {
    case 'numPacks': {
      if (packing.numPacks === 0) return model.sizes.map((s, i) => pack([i], s));
      const packed = new ConcatAndSplitPacker({ numPacks: packing.numPacks }).pack([gradients(model)])[0];
      // Pack k holds elements [start, start + size) of the concatenation; list the gradients that overlap it.
      const starts = model.sizes.map((_, i) => model.sizes.slice(0, i).reduce((a, b) => a + b, 0));
      let start = 0;
      return packed.map((t) => {
        const end = start + t.size;
        const held = range(0, n).filter((i) => t.size > 0 && starts[i] < end && starts[i] + model.sizes[i] > start && model.sizes[i] > 0);
        start = end;
        return pack(held, t.size);
      });
    }
    case 'smallGrads': {
      const { deviceGrads, packing: runs } = utils.packSmallTensors([gradients(model)], packing.maxBytes, packing.maxGroup);
      const inRuns = (runs ?? []).map((r) => range(r.first, r.last + 1));
      const packedAway = new Set(inRuns.flat());
      const groups = [...inRuns, ...range(0, n).filter((i) => !packedAway.has(i)).map((i) => [i])];
      return deviceGrads[0].map((t, k) => pack(groups[k], t.size));
    }
    case 'bytesPerPack': {
      const backprop = range(0, n).reverse();
      return utils.groupBySize(backprop.map((i) => model.sizes[i] * 4), packing.bytesPerPack).map((g) => {
        const held = g.map((k) => backprop[k]).sort((a, b) => a - b);
        return pack(held, held.reduce((a, i) => a + model.sizes[i], 0));
      });
    }
  }
}

/**
 * The bytes an all-reduce of every pack moves, per link and in total: one plan per pack, built
 * by `build` from the pack's element count and position.
 */
export function bytesOverPacks(packs: readonly Pack[], build: (elements: number, index: number) => Plan): BytesMoved {
  const byLink: Record<string, number> = {};
  let total = 0;
  packs.forEach((p, k) => {
    let moved: BytesMoved;
    try {
      moved = build(p.elements, k).bytesMoved();
    } catch (e) {
      if (e instanceof CrossDeviceError) throw new CrossDeviceError(e.code, `pack ${k} (${p.elements} elements): ${e.message}`);
      throw e;
    }
    total += moved.total;
    for (const [link, bytes] of Object.entries(moved.byLink)) byLink[link] = (byLink[link] ?? 0) + bytes;
  });
  return { total, byLink };
}
