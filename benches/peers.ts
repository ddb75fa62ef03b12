/**
 * The peers crossdev is compared with in this process: a plain TypeScript loop and
 * TensorFlow.js's `tf.addN` on its CPU backend and on `@tensorflow/tfjs-backend-wasm`
 * (SIMD, one thread: the wasm backend has no multi-threading in Node.js). Each computes the
 * element-wise sum of N Float32Arrays; the all-reduce form then copies the sum into N
 * preallocated outputs (the peers' best case: crossdev allocates its results).
 */
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';

/** A peer's functions over one set of inputs. */
export interface PeerRun {
  /** The sum, in one array JavaScript can read. */
  reduce(): Float32Array;
  /** The sum in each of N outputs (one per device). */
  allReduce(): Float32Array[];
  /** Frees what `prepare` made. */
  dispose(): void;
}

/** A peer implementation of the N-way sum. */
export interface Peer {
  /** Its `--impls` key. */
  key: string;
  /** Its name in tables. */
  name: string;
  /** Takes the inputs (untimed: tensors are made here) and returns what is timed. */
  prepare(xs: Float32Array[]): Promise<PeerRun>;
}

/** The plain TypeScript loop: `out[i] = xs[0][i] + … + xs[N-1][i]`, left to right. */
export function sumInto(xs: readonly Float32Array[], out: Float32Array): Float32Array {
  const n = xs.length;
  const len = out.length;
  for (let i = 0; i < len; i++) {
    let s = xs[0][i];
    for (let d = 1; d < n; d++) s += xs[d][i];
    out[i] = s;
  }
  return out;
}

/** Copies the first output, which holds the sum, into the others. */
function copyOut(outs: Float32Array[]): Float32Array[] {
  for (let k = 1; k < outs.length; k++) outs[k].set(outs[0]);
  return outs;
}

const tsLoop: Peer = {
  key: 'ts',
  name: 'TypeScript loop',
  async prepare(xs) {
    const outs = xs.map((x) => new Float32Array(x.length));
    const one = new Float32Array(xs[0].length);
    return {
      reduce: () => sumInto(xs, one),
      allReduce: () => {
        sumInto(xs, outs[0]);
        return copyOut(outs);
      },
      dispose: () => undefined,
    };
  },
};

type Tf = typeof import('@tensorflow/tfjs');
let tfjs: Promise<Tf> | undefined;

/** `@tensorflow/tfjs` with the wasm backend registered, its `.wasm` files read from node_modules. */
function loadTfjs(): Promise<Tf> {
  tfjs ??= (async () => {
    const tf = await import('@tensorflow/tfjs');
    const wasm = await import('@tensorflow/tfjs-backend-wasm');
    const require = createRequire(import.meta.url);
    wasm.setWasmPaths(`${join(dirname(require.resolve('@tensorflow/tfjs-backend-wasm/package.json')), 'dist')}/`);
    return tf;
  })();
  return tfjs;
}

/** `tf.addN` on a TensorFlow.js backend; the sum is read with `dataSync()`. */
function tfjsPeer(backend: 'cpu' | 'wasm'): Peer {
  return {
    key: `tfjs-${backend}`,
    name: `tfjs ${backend}`,
    async prepare(xs) {
      const tf = await loadTfjs();
      if (!(await tf.setBackend(backend))) throw new Error(`TensorFlow.js backend '${backend}' did not start`);
      const ts = xs.map((x) => tf.tensor1d(x, 'float32'));
      const outs = xs.map((x) => new Float32Array(x.length));
      const reduce = () => {
        const s = tf.addN(ts);
        const data = s.dataSync() as Float32Array;
        s.dispose();
        return data;
      };
      return {
        reduce,
        allReduce: () => {
          outs[0].set(reduce());
          return copyOut(outs);
        },
        dispose: () => ts.forEach((t) => t.dispose()),
      };
    },
  };
}

/** What the TensorFlow.js wasm backend runs with here. */
export async function tfjsWasmFlavour(): Promise<string> {
  const tf = await loadTfjs();
  const [simd, threads] = await Promise.all([tf.env().getAsync('WASM_HAS_SIMD_SUPPORT'), tf.env().getAsync('WASM_HAS_MULTITHREAD_SUPPORT')]);
  return `${simd ? 'SIMD' : 'no SIMD'}, ${threads ? 'multi-threaded' : 'one thread'}`;
}

/** Every in-process peer, in table order. */
export const PEERS: readonly Peer[] = [tsLoop, tfjsPeer('cpu'), tfjsPeer('wasm')];
