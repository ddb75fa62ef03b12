/**
 * Packers: turn each device's list of gradients into fewer, larger tensors before an all-reduce
 * and restore the original list after it (TensorFlow's `ConcatAndSplitPacker` and
 * `AggregateSmallTensorPacker`). `deviceGrads[d][v]` is variable v's gradient on device d.
 */
import { call, type Reply } from './backend.js';
import { Tensor, typedView } from './tensor.js';

function request(call_: string, packer: object, deviceGrads: readonly (readonly Tensor[])[], extra: object = {}): Reply {
  const inputs: ArrayBufferView[] = [];
  const grads = deviceGrads.map((g) =>
    g.map((t) => {
      inputs.push(t.data);
      return { buf: inputs.length - 1, dtype: t.dtype, shape: t.shape };
    }),
  );
  return call().execute(JSON.stringify({ call: call_, packer, grads, ...extra }), inputs);
}

function tensors(reply: Reply, deviceGrads: readonly (readonly Tensor[])[]): Tensor[][] {
  return reply.meta.packed.grads.map((g: any[], d: number) =>
    g.map((w) => new Tensor(typedView(w.dtype, reply.buffers[w.buf]), w.shape, w.dtype, deviceGrads[d][0]?.device)),
  );
}

/** A packer: `pack` remembers how it packed, so that `unpack` can restore the original lists. */
abstract class Packer {
  readonly #spec: object;
  #info: unknown = null;

  /** Checks the options in the core, so that bad ones fail at construction. */
  protected constructor(spec: object) {
    this.#spec = spec;
    request('pack', spec, []);
  }

  /** Per device, the packed tensors. */
  pack(deviceGrads: readonly (readonly Tensor[])[]): Tensor[][] {
    const reply = request('pack', this.#spec, deviceGrads);
    this.#info = reply.meta.packed.info;
    return tensors(reply, deviceGrads);
  }

  /** Per device, the reduced packs turned back into the gradients {@link pack} saw, in their order. */
  unpack(reduced: readonly (readonly Tensor[])[]): Tensor[][] {
    return tensors(request('unpack', this.#spec, reduced, { info: this.#info }), reduced);
  }
}

/**
 * Concatenates each device's gradients and splits them into `numPacks` nearly equal packs (the
 * remainder in the last; packs may be empty). `numPacks` must be positive.
 */
export class ConcatAndSplitPacker extends Packer {
  constructor(options: { numPacks?: number } = {}) {
    super({ kind: 'ConcatAndSplit', numPacks: options.numPacks ?? 1 });
  }
}

/**
 * Packs runs of adjacent small float32 gradients (at most `maxBytes` each, runs of at most
 * `maxGroup + 2`, TensorFlow's bound) into one tensor each; packed tensors come first, the rest
 * follow in their original order. Both limits must be positive.
 */
export class AggregateSmallTensorPacker extends Packer {
  constructor(options: { maxBytes?: number; maxGroup?: number } = {}) {
    super({ kind: 'SmallTensors', maxBytes: options.maxBytes ?? 1048576, maxGroup: options.maxGroup ?? 16 });
  }
}

/** How {@link packSmallTensors} packed: per run, its original positions and each device's shapes. */
export type SmallTensorPacking = { first: number; last: number; shapes: number[][][] }[] | null;

/** `pack_small_tensors`: like {@link AggregateSmallTensorPacker.pack}, returning the packing. */
export function packSmallTensors(deviceGrads: readonly (readonly Tensor[])[], maxBytes = 0, maxGroup = 0): { deviceGrads: Tensor[][]; packing: SmallTensorPacking } {
  const reply = request('pack', { kind: 'SmallTensors', maxBytes, maxGroup }, deviceGrads);
  return { deviceGrads: tensors(reply, deviceGrads), packing: reply.meta.packed.info };
}

/** `unpack_small_tensors`: restores the order {@link packSmallTensors} changed. */
export function unpackSmallTensors(deviceGrads: readonly (readonly Tensor[])[], packing: SmallTensorPacking): Tensor[][] {
  return tensors(request('unpack', { kind: 'SmallTensors', maxBytes: 1, maxGroup: 1 }, deviceGrads, { info: packing }), deviceGrads);
}

/** `split_grads_by_size`: per device, gradients of at most `thresholdElements` elements, and the rest. */
export function splitGradsBySize(thresholdElements: number, deviceGrads: readonly (readonly Tensor[])[]): { small: Tensor[][]; large: Tensor[][] } {
  const counts = deviceGrads.map((g) => g.map((t) => t.size));
  const { small, large } = call().execute(JSON.stringify({ call: 'splitGradsBySize', threshold: thresholdElements, elementCounts: counts }), []).meta.split;
  const pick = (shares: [number, number[]][]) => shares.map(([d, idx]) => idx.map((i) => deviceGrads[d][i]));
  return { small: pick(small), large: pick(large) };
}
