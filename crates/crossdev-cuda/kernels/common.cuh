// Shared definitions of crossdev's CUDA kernels: element types, their accumulators and the
// combiners. No CUDA headers are needed (NVRTC compiles these without an include path):
// float16 and bfloat16 are handled as their bits, converted with round-to-nearest-even.
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;
typedef long long i64;

struct f16_t { u16 bits; };
struct bf16_t { u16 bits; };

__device__ __forceinline__ float f16_to_f32(u16 h) {
  u32 sign = (u32)(h & 0x8000u) << 16, exp = (h >> 10) & 0x1fu, man = h & 0x3ffu, bits;
  if (exp == 0) {
    if (man == 0) {
      bits = sign;
    } else {  // subnormal: normalise
      exp = 127 - 15 + 1;
      while (!(man & 0x400u)) { man <<= 1; exp--; }
      bits = sign | (exp << 23) | ((man & 0x3ffu) << 13);
    }
  } else if (exp == 31) {
    bits = sign | 0x7f800000u | (man << 13);
  } else {
    bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
  }
  return __uint_as_float(bits);
}

__device__ __forceinline__ u16 f32_to_f16(float f) {
  u32 x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, ax = x & 0x7fffffffu;
  if (ax >= 0x7f800000u) return (u16)(sign | 0x7c00u | (ax > 0x7f800000u ? 0x200u : 0u));
  if (ax >= 0x477ff000u) return (u16)(sign | 0x7c00u);  // 65520 and above round to infinity
  if (ax < 0x38800000u) {                               // below 2^-14: a subnormal or zero
    if (ax < 0x33000000u) return (u16)sign;             // below 2^-25 (the tie at 2^-25 is even: 0)
    u32 e = ax >> 23, m = (ax & 0x7fffffu) | 0x800000u, shift = 126 - e;
    u32 r = m >> shift, rem = m & ((1u << shift) - 1), half = 1u << (shift - 1);
    if (rem > half || (rem == half && (r & 1u))) r++;
    return (u16)(sign | r);
  }
  u32 r = ax - 0x38000000u, rem = r & 0x1fffu;
  r >>= 13;
  if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) r++;
  return (u16)(sign | r);
}

__device__ __forceinline__ float bf16_to_f32(u16 h) { return __uint_as_float((u32)h << 16); }

__device__ __forceinline__ u16 f32_to_bf16(float f) {
  u32 x = __float_as_uint(f);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (u16)((x >> 16) | 0x40u);  // quiet NaN
  return (u16)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

// Lane<T>: the accumulator of T (float for the half types) and the conversions.
template <typename T> struct Lane {
  typedef T Acc;
  static __device__ __forceinline__ Acc load(T v) { return v; }
  static __device__ __forceinline__ T store(Acc a) { return a; }
};
template <> struct Lane<f16_t> {
  typedef float Acc;
  static __device__ __forceinline__ float load(f16_t v) { return f16_to_f32(v.bits); }
  static __device__ __forceinline__ f16_t store(float a) { f16_t r; r.bits = f32_to_f16(a); return r; }
};
template <> struct Lane<bf16_t> {
  typedef float Acc;
  static __device__ __forceinline__ float load(bf16_t v) { return bf16_to_f32(v.bits); }
  static __device__ __forceinline__ bf16_t store(float a) { bf16_t r; r.bits = f32_to_bf16(a); return r; }
};

enum { OP_SUM = 0, OP_PRODUCT = 1, OP_MAX = 2, OP_MIN = 3 };

// Combiners, as the CPU kernels define them: integer sums and products wrap (computed
// unsigned, which C++ defines), MAX/MIN propagate NaN, MEAN's divide truncates integers.
template <typename A> struct Arith {
  static __device__ __forceinline__ A add(A a, A b) { return a + b; }
  static __device__ __forceinline__ A mul(A a, A b) { return a * b; }
  static __device__ __forceinline__ A max(A a, A b) { return (a > b || a != a) ? a : b; }
  static __device__ __forceinline__ A min(A a, A b) { return (a < b || a != a) ? a : b; }
  static __device__ __forceinline__ A div(A a, int n) { return a / (A)n; }
};
template <> struct Arith<int> {
  static __device__ __forceinline__ int add(int a, int b) { return (int)((u32)a + (u32)b); }
  static __device__ __forceinline__ int mul(int a, int b) { return (int)((u32)a * (u32)b); }
  static __device__ __forceinline__ int max(int a, int b) { return a > b ? a : b; }
  static __device__ __forceinline__ int min(int a, int b) { return a < b ? a : b; }
  static __device__ __forceinline__ int div(int a, int n) { return a / n; }
};
template <> struct Arith<i64> {
  static __device__ __forceinline__ i64 add(i64 a, i64 b) { return (i64)((u64)a + (u64)b); }
  static __device__ __forceinline__ i64 mul(i64 a, i64 b) { return (i64)((u64)a * (u64)b); }
  static __device__ __forceinline__ i64 max(i64 a, i64 b) { return a > b ? a : b; }
  static __device__ __forceinline__ i64 min(i64 a, i64 b) { return a < b ? a : b; }
  static __device__ __forceinline__ i64 div(i64 a, int n) { return a / n; }
};

template <typename A, int OP> __device__ __forceinline__ A combine(A a, A b) {
  if (OP == OP_SUM) return Arith<A>::add(a, b);
  if (OP == OP_PRODUCT) return Arith<A>::mul(a, b);
  if (OP == OP_MAX) return Arith<A>::max(a, b);
  return Arith<A>::min(a, b);
}
