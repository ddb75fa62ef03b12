/** Device strings (TensorFlow's spellings), completed by the core. */
import { call } from './backend.js';

/**
 * The canonical form `/job:J/replica:R/task:T/device:TYPE:I` of `device`, completing unset
 * fields from `defaultDevice` and then from `/job:localhost/replica:0/task:0/device:CPU:0`.
 */
export function canonicalizeDevice(device: string, defaultDevice?: string): string {
  return call().execute(JSON.stringify({ call: 'canonicalize', device, default: defaultDevice ?? null }), []).meta.device;
}

/** `device` completed from `current` (the device of an enclosing scope, if any), then canonicalised. */
export function resolveDevice(device: string, current?: string): string {
  return call().execute(JSON.stringify({ call: 'resolve', device, current: current ?? null }), []).meta.device;
}
