// CUDA kernels for camfast::thresholded_avg_pool2d. No libtorch: raw device pointers,
// element strides and the caller's stream.
//
// forward: one warp per (b, c) plane; lanes stride over the plane's pixels (coalesced for
//   NCHW; channels-last reads are strided, one sector per value, and correct). Pass 1: a
//   warp max (and NaN flag); pass 2: the warp's sum and count of values above tau.
// backward: one thread per element, dx = dy * [x > tau] / N.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include "cuda/cuda_common.cuh"
#include "thresholded_avg_pool2d.h"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cuda_detail;

struct Dims { long long B, C, H, W; };

constexpr int kThreads = 256;
constexpr int kWarps = kThreads / 32;

template <typename T, typename A>
__global__ void forward_kernel(Dims d, const T* x, View4 vx, A theta, T* pooled, A* tau, A* count) {
  const long long bc = blockIdx.x * static_cast<long long>(kWarps) + (threadIdx.x >> 5);
  const int lane = threadIdx.x & 31;
  if (bc >= d.B * d.C) return;  // whole warps exit together
  const long long b = bc / d.C, c = bc % d.C, HW = d.H * d.W;
  const T* xp = x + b * vx.sb + c * vx.sc;
  A m = -static_cast<A>(INFINITY);
  int nan = 0;
  for (long long p = lane; p < HW; p += 32) {
    const A v = static_cast<A>(ld(xp + (p / d.W) * vx.sh + (p % d.W) * vx.sw));
    m = v > m ? v : m;
    nan |= (v != v);
  }
  for (int o = 16; o > 0; o >>= 1) {
    const A other = __shfl_xor_sync(0xffffffffu, m, o);
    m = other > m ? other : m;
    nan |= __shfl_xor_sync(0xffffffffu, nan, o);
  }
  const bool bad = nan || !isfinite(m);
  const A t = nan ? static_cast<A>(NAN) : theta * m;
  A s = 0, n = 0;
  for (long long p = lane; p < HW; p += 32) {
    const A v = static_cast<A>(ld(xp + (p / d.W) * vx.sh + (p % d.W) * vx.sw));
    if (v > t) {
      s += v;
      n += A(1);
    }
  }
  for (int o = 16; o > 0; o >>= 1) {
    s += __shfl_xor_sync(0xffffffffu, s, o);
    n += __shfl_xor_sync(0xffffffffu, n, o);
  }
  if (lane == 0) {
    n = n > A(1) ? n : A(1);
    tau[bc] = t;
    count[bc] = n;
    pooled[bc] = store<T, A>(bad ? static_cast<A>(NAN) : s / n);
  }
}

template <typename T, typename A>
__global__ void backward_kernel(Dims d, const T* x, View4 vx, const A* tau, const A* count, const T* gout,
                                T* dx, View4 vd) {
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  const long long HW = d.H * d.W;
  if (idx >= d.B * d.C * HW) return;
  const long long bc = idx / HW, p = idx % HW, b = bc / d.C, c = bc % d.C, h = p / d.W, w = p % d.W;
  const A v = static_cast<A>(ld(x + vx.at(b, c, h, w)));
  const A g = v > tau[bc] ? static_cast<A>(ld(gout + bc)) / count[bc] : A(0);
  dx[vd.at(b, c, h, w)] = store<T, A>(g);
}

template <typename Tin>
void forward_typed(const TapProblem& p, const void* x, void* pooled, void* tau, void* count, cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.C, p.H, p.W};
  const unsigned grid = static_cast<unsigned>((p.B * p.C + kWarps - 1) / kWarps);
  forward_kernel<T, A><<<grid, kThreads, 0, s>>>(d, static_cast<const T*>(x), p.x, static_cast<A>(p.theta),
                                                 static_cast<T*>(pooled), static_cast<A*>(tau),
                                                 static_cast<A*>(count));
  check_launch("thresholded_avg_pool2d forward");
}

template <typename Tin>
void backward_typed(const TapProblem& p, const void* x, const void* tau, const void* count, const void* gout,
                    void* dx, View4 vd, cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.C, p.H, p.W};
  const long long n = p.B * p.C * p.H * p.W;
  const unsigned grid = static_cast<unsigned>((n + kThreads - 1) / kThreads);
  backward_kernel<T, A><<<grid, kThreads, 0, s>>>(d, static_cast<const T*>(x), p.x, static_cast<const A*>(tau),
                                                  static_cast<const A*>(count), static_cast<const T*>(gout),
                                                  static_cast<T*>(dx), vd);
  check_launch("thresholded_avg_pool2d backward");
}

}  // namespace

void thresholded_avg_pool2d_forward_cuda(DType dtype, const TapProblem& p, const void* x, void* pooled,
                                         void* tau, void* count, int device, void* stream) {
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  with_dtype(dtype, [&](auto t) { forward_typed<CAMFAST_T(t)>(p, x, pooled, tau, count, s); });
}

void thresholded_avg_pool2d_backward_cuda(DType dtype, const TapProblem& p, const void* x, const void* tau,
                                          const void* count, const void* grad_out, void* grad_x, View4 dx,
                                          int device, void* stream) {
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  with_dtype(dtype, [&](auto t) { backward_typed<CAMFAST_T(t)>(p, x, tau, count, grad_out, grad_x, dx, s); });
}

}  // namespace camfast
