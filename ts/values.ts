/**
 * Per-device values: what each device holds (`PerDevice`, the input of a reduction) and
 * identical copies on several devices (`Mirrored`, its output). Keys are canonical device
 * strings in insertion order.
 */
import { call } from './backend.js';
import { canonicalizeDevice } from './device.js';
import { CrossDeviceError } from './errors.js';
import type { GpuTensor } from './gpu_tensor.js';
import type { IndexedSlices, Tensor, TfjsTensor } from './tensor.js';

/** Several values produced on one device; each counts as one contribution for MEAN. */
export class MapOutput {
  /** The values. */
  readonly values: readonly (Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor>)[];

  constructor(values: readonly (Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor>)[]) {
    this.values = Object.freeze([...values]);
  }
}

/** What a device may hold. */
export type DeviceValue = Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor> | MapOutput | TfjsTensor;

/** Device → value pairs, as a plain object, a Map or a list of entries. */
export type DeviceEntries<V> = Record<string, V> | Map<string, V> | Iterable<readonly [string, V]>;

function entriesOf<V>(init: DeviceEntries<V>): [string, V][] {
  if (init instanceof Map) return [...init.entries()];
  if (Symbol.iterator in Object(init)) return [...(init as Iterable<readonly [string, V]>)].map(([d, v]) => [d, v]);
  return Object.entries(init as Record<string, V>);
}

/** Marks entries whose keys are already canonical (results coming from the core). */
export const CANONICAL: unique symbol = Symbol('canonical device keys');

/** A map from canonical device strings to values, in insertion order (`DistributedValues`). */
export class DistributedValues<V extends DeviceValue = DeviceValue> {
  readonly #index: Map<string, V>;

  /** Keys may be any device spelling; they are canonicalised (later duplicates replace earlier ones). */
  constructor(init: DeviceEntries<V>, keys?: typeof CANONICAL) {
    if (keys === CANONICAL) {
      // Results from the core: [device, value] pairs with canonical keys, taken as they are.
      this.#index = new Map(Array.isArray(init) ? (init as [string, V][]) : entriesOf(init));
      return;
    }
    const entries = entriesOf(init);
    const canonical: string[] = call().execute(JSON.stringify({ call: 'canonicalizeAll', devices: entries.map(([d]) => d) }), []).meta.devices;
    this.#index = new Map();
    entries.forEach(([, v], i) => this.#index.set(canonical[i], v));
  }

  /** Devices in insertion order. */
  get devices(): string[] {
    return [...this.#index.keys()];
  }

  /** Values in the order of {@link devices}. */
  get values(): V[] {
    return [...this.#index.values()];
  }

  /** Number of devices. */
  get size(): number {
    return this.#index.size;
  }

  /** The value on `device` (any spelling); `ERR_DEVICE_NOT_FOUND` if it has none. */
  get(device: string): V {
    const key = canonicalizeDevice(device);
    const v = this.#index.get(key);
    if (v === undefined) {
      // Formatted like the core's message: ["a", "b"].
      const devices = `[${this.devices.map((d) => JSON.stringify(d)).join(', ')}]`;
      throw new CrossDeviceError('ERR_DEVICE_NOT_FOUND', `Device ${key} not found in ${devices} (current device None)`);
    }
    return v;
  }

  /** `[device, value]` pairs. */
  entries(): IterableIterator<[string, V]> {
    return this.#index.entries();
  }

  [Symbol.iterator](): IterableIterator<[string, V]> {
    return this.#index.entries();
  }
}

/** The JSON text of each value's devices, made once (a value's devices never change). */
const devicesJsons = new WeakMap<DistributedValues, string>();

/** The JSON text of `v.devices` (a request names destinations by it). */
export function devicesJson(v: DistributedValues): string {
  let text = devicesJsons.get(v);
  if (text === undefined) {
    text = JSON.stringify(v.devices);
    devicesJsons.set(v, text);
  }
  return text;
}

/** JSON texts of device strings (a request names the same few devices call after call). */
const deviceJsons = new Map<string, string>();

/** The JSON text of the device string `d`. */
export function deviceJson(d: string): string {
  let text = deviceJsons.get(d);
  if (text === undefined) {
    if (deviceJsons.size >= 1024) deviceJsons.clear();
    text = JSON.stringify(d);
    deviceJsons.set(d, text);
  }
  return text;
}

/** Unsynchronised values, one per device: the input of a reduction. */
export class PerDevice<V extends DeviceValue = DeviceValue> extends DistributedValues<V> {}

/** Identical values, one per device: the result of a reduction or broadcast. */
export class Mirrored<V extends Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor> = Tensor | GpuTensor | IndexedSlices<Tensor | GpuTensor>> extends DistributedValues<V> {
  /** The value on `device`, or, without a device, the first one (they are all equal). */
  override get(device?: string): V {
    if (device === undefined) return this.values[0];
    return super.get(device);
  }
}
