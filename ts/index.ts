/**
 * crossdev: cross-device reduction and broadcast of gradients (the all-reduce layer of
 * data-parallel training) for Node.js, on a Rust core running natively or in WebAssembly.
 */
export { backend, type BackendName } from './backend.js';
export { finalize, init, type InitOptions, type World } from './world.js';
export { canonicalizeDevice, resolveDevice } from './device.js';
export { CrossDeviceError } from './errors.js';
export {
  AllReduceCrossDeviceOps,
  AllReduceCrossTowerOps,
  chooseTheBest,
  CollectiveAllReduce,
  MultiWorkerAllReduce,
  type AllReduceSpec,
  type CollectiveAllReduceOptions,
  type CommunicationOptions,
  type MultiWorkerAllReduceOptions,
  HierarchicalCopyAllReduce,
  NcclAllReduce,
  type AllReduceOptions,
  type BroadcastValue,
  CrossDeviceOps,
  CrossTowerOps,
  ReduceOp,
  ReductionToOneDevice,
  ReductionToOneDeviceCrossTowerOps,
  type Destinations,
  type ReduceInput,
  type ReductionToOneDeviceOptions,
} from './ops.js';
export { GpuTensor, residentMemory } from './gpu_tensor.js';
export { DEFAULT_DEVICE, IndexedSlices, isTfjsTensor, Tensor, tensor, type DType, type TensorLike, type TensorOptions, type TfjsModule, type TfjsTensor, type TypedArray } from './tensor.js';
export { DistributedValues, MapOutput, Mirrored, PerDevice, type DeviceEntries, type DeviceValue } from './values.js';
export { Plan, type BytesMoved, type PlanChunk, type PlanStep } from './plan.js';
export * as utils from './utils.js';
export { AggregateSmallTensorPacker, ConcatAndSplitPacker, type SmallTensorPacking } from './pack.js';
