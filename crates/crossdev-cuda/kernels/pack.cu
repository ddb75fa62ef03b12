// Packing many tensors into one buffer (and back) in one launch, and the int32 -> int64 index
// promotion of IndexedSlices concatenation. Tensors are byte ranges: `offsets` holds the
// count + 1 prefix sums of their sizes in bytes; each thread finds its tensor by binary search.
#include "common.cuh"

__device__ __forceinline__ int owner(const u64* offsets, int count, u64 i) {
  int lo = 0, hi = count - 1;
  while (lo < hi) {
    int mid = (lo + hi + 1) / 2;
    if (offsets[mid] <= i) lo = mid; else hi = mid - 1;
  }
  return lo;
}

extern "C" __global__ void pack_bytes(unsigned char* __restrict__ out, const unsigned char* const* srcs, const u64* offsets, int count) {
  u64 total = offsets[count];
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    int t = owner(offsets, count, i);
    out[i] = srcs[t][i - offsets[t]];
  }
}

extern "C" __global__ void unpack_bytes(unsigned char* const* dsts, const unsigned char* __restrict__ in, const u64* offsets, int count) {
  u64 total = offsets[count];
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < total; i += (u64)gridDim.x * blockDim.x) {
    int t = owner(offsets, count, i);
    dsts[t][i - offsets[t]] = in[i];
  }
}

extern "C" __global__ void widen_indices(i64* __restrict__ out, const int* __restrict__ in, u64 len) {
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len; i += (u64)gridDim.x * blockDim.x) out[i] = in[i];
}
