// N-way reduce in one pass: out[i] = in_0[i] (+) in_1[i] (+) ... left to right (bit-identical to
// the CPU kernels), divided by `divide_by` when it is positive (MEAN), float32 accumulation for
// the half types. Grid-stride loop; `inputs` is a device array of n device pointers.
#include "common.cuh"

template <typename T, int OP>
__device__ __forceinline__ void reduce_n_body(T* __restrict__ out, const T* const* __restrict__ inputs, int n, u64 len, int divide_by) {
  typedef typename Lane<T>::Acc A;
  for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < len; i += (u64)gridDim.x * blockDim.x) {
    A acc = Lane<T>::load(inputs[0][i]);
    for (int k = 1; k < n; k++) acc = combine<A, OP>(acc, Lane<T>::load(inputs[k][i]));
    if (divide_by > 0) acc = Arith<A>::div(acc, divide_by);
    out[i] = Lane<T>::store(acc);
  }
}

#define CROSSDEV_REDUCE(type_name, T, op_name, OP)                                              \
  extern "C" __global__ void reduce_n_##type_name##_##op_name(T* out, const T* const* inputs,  \
                                                              int n, u64 len, int divide_by) { \
    reduce_n_body<T, OP>(out, inputs, n, len, divide_by);                                      \
  }

#define CROSSDEV_REDUCE_ALL_OPS(type_name, T)         \
  CROSSDEV_REDUCE(type_name, T, sum, OP_SUM)          \
  CROSSDEV_REDUCE(type_name, T, product, OP_PRODUCT)  \
  CROSSDEV_REDUCE(type_name, T, max, OP_MAX)          \
  CROSSDEV_REDUCE(type_name, T, min, OP_MIN)

CROSSDEV_REDUCE_ALL_OPS(float32, float)
CROSSDEV_REDUCE_ALL_OPS(float64, double)
CROSSDEV_REDUCE_ALL_OPS(float16, f16_t)
CROSSDEV_REDUCE_ALL_OPS(bfloat16, bf16_t)
CROSSDEV_REDUCE_ALL_OPS(int32, int)
CROSSDEV_REDUCE_ALL_OPS(int64, i64)
