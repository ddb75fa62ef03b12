/**
 * Plans: an all-reduce algorithm laid out as stages of copy and reduce steps over chunks of
 * per-device buffers, built by the core before any data exists. A plan can be counted
 * (`bytesMoved`), printed, and run on host devices.
 */
import { call } from './backend.js';
import { decodeResults, Encoder, ReduceOp } from './ops.js';
import type { DType } from './tensor.js';
import type { Mirrored, PerDevice } from './values.js';

/** A region of a plan buffer. */
export interface PlanChunk {
  device: string;
  buf: number;
  offset: number;
  len: number;
}

/** One step: a copy, or an n-ary reduce (`last`: it completes its elements, and MEAN divides). */
export type PlanStep = { copy: { src: PlanChunk; dst: PlanChunk } } | { reduce: { srcs: PlanChunk[]; dst: PlanChunk; last: boolean } };

/** Bytes a plan moves between devices: total, and per `"src->dst"` link (canonical names). */
export interface BytesMoved {
  total: number;
  byLink: Record<string, number>;
}

/** A built all-reduce plan. */
export class Plan {
  /** The algorithm that built it. */
  readonly algorithm: string;
  /** Canonical devices, inputs' first. */
  readonly devices: readonly string[];
  /** Element type. */
  readonly dtype: DType;
  /** Elements per input. */
  readonly elements: number;
  /** Stages in order; steps of a stage are independent. */
  readonly stages: readonly (readonly PlanStep[])[];
  readonly #spec: object;
  readonly #bytes: BytesMoved;
  readonly #text: string;

  /** @internal Built by the `utils.build…` functions. */
  constructor(spec: object) {
    const p = call().execute(JSON.stringify({ call: 'plan', plan: spec }), []).meta.plan;
    this.#spec = spec;
    this.algorithm = p.algorithm;
    this.devices = p.devices;
    this.dtype = p.dtype;
    this.elements = p.elements;
    this.stages = p.stages;
    this.#bytes = { total: p.bytesMoved, byLink: p.bytesByLink };
    this.#text = p.text;
  }

  /** Every step, stage after stage. */
  get steps(): PlanStep[] {
    return this.stages.flat();
  }

  /** Bytes read across devices, in total and per link. */
  bytesMoved(): BytesMoved {
    return { total: this.#bytes.total, byLink: { ...this.#bytes.byLink } };
  }

  /** The stages, steps and per-link bytes, one per line. */
  toString(): string {
    return this.#text;
  }

  #request(value: PerDevice, op: ReduceOp): [string, ArrayBufferView[], boolean] {
    const enc = new Encoder();
    const v = enc.input(value);
    return [`{"call":"runPlan","plan":${JSON.stringify(this.#spec)},"op":${JSON.stringify(op) ?? null},"value":${v}}`, enc.inputs, enc.resident];
  }

  /** Runs the plan on host devices: `value` has a tensor of `elements` elements on each input device. */
  async run(value: PerDevice, op: ReduceOp = ReduceOp.SUM): Promise<Mirrored> {
    return decodeResults(await call().executeAsync(...this.#request(value, op)))[0];
  }

  /** {@link run}, on the calling thread. */
  runSync(value: PerDevice, op: ReduceOp = ReduceOp.SUM): Mirrored {
    const [req, inputs] = this.#request(value, op);
    return decodeResults(call().execute(req, inputs))[0];
  }
}
