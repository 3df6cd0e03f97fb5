// CUDA kernels for camfast::grad_weighted_map. No libtorch: raw device pointers,
// element strides and the caller's stream (torch.cuda.current_stream().cuda_stream).
//
// forward (zoom, layercam): one thread per pixel, looping over channels; a warp reads
//   32 consecutive pixels of one channel plane (coalesced for NCHW).
// forward (gradcam): one block per (b, c) reduces mean_hw(G) into the workspace, then
//   the per-pixel kernel weights A by it.
// backward (zoom, layercam): one thread per pixel writes dA and dG for every channel.
// backward (gradcam): one block per (b, c): mean of G, then dA = gm * w while reducing
//   dw = sum gm * A, then dG = dw / HW. A single kernel, no workspace.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "grad_weighted_map.h"
#include "cuda/cuda_common.cuh"

namespace camfast {
namespace {

using namespace cuda_detail;

template <typename A> __device__ __forceinline__ A relu(A x) { return (x > A(0) || x != x) ? x : A(0); }

template <int M, typename A> __device__ __forceinline__ A weight_of(A g) {
  return M == static_cast<int>(GwmMode::LayerCAM) ? relu(g) : g;
}
template <int M, typename A> __device__ __forceinline__ A dweight_of(A g) {
  return M == static_cast<int>(GwmMode::LayerCAM) ? (g > A(0) ? A(1) : A(0)) : A(1);
}

struct Dims { long long B, C, H, W; };

template <typename A> __device__ A block_sum(A v) {
  __shared__ A shared[32];
  for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int nwarps = (blockDim.x + 31) >> 5;
  v = threadIdx.x < nwarps ? shared[threadIdx.x] : A(0);
  if (warp == 0)
    for (int o = 16; o > 0; o >>= 1) v += __shfl_down_sync(0xffffffffu, v, o);
  __syncthreads();
  if (threadIdx.x == 0) shared[0] = v;
  __syncthreads();
  const A r = shared[0];
  __syncthreads();
  return r;
}

template <typename T, typename A>
__global__ void channel_means_kernel(Dims d, const T* g, View4 vg, A* w) {
  const long long bc = blockIdx.x, b = bc / d.C, c = bc % d.C, HW = d.H * d.W;
  A s = 0;
  for (long long p = threadIdx.x; p < HW; p += blockDim.x)
    s += ld(g + vg.at(b, c, p / d.W, p % d.W));
  s = block_sum(s);
  if (threadIdx.x == 0) w[bc] = s / static_cast<A>(HW);
}

template <typename T, typename A, int M>
__global__ void forward_kernel(Dims d, const T* a, View4 va, const T* g, View4 vg, const A* w, T* out) {
  const long long HW = d.H * d.W;
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (idx >= d.B * HW) return;
  const long long b = idx / HW, p = idx % HW, h = p / d.W, x = p % d.W;
  const T* ap = a + va.at(b, 0, h, x);
  A s = 0;
  if (M == static_cast<int>(GwmMode::GradCAM)) {
    const A* wb = w + b * d.C;
#pragma unroll 4
    for (long long c = 0; c < d.C; ++c) s += wb[c] * static_cast<A>(ld(ap + c * va.sc));
  } else {
    const T* gp = g + vg.at(b, 0, h, x);
#pragma unroll 4
    for (long long c = 0; c < d.C; ++c)
      s += weight_of<M>(static_cast<A>(ld(gp + c * vg.sc))) * static_cast<A>(ld(ap + c * va.sc));
  }
  out[idx] = store<T, A>(relu(s));
}

template <typename T, typename A>
__device__ __forceinline__ A masked(const T* gout, const T* out, long long i) {
  return static_cast<A>(ld(out + i)) > A(0) ? static_cast<A>(ld(gout + i)) : A(0);
}

template <typename T, typename A, int M>
__global__ void backward_kernel(Dims d, const T* a, View4 va, const T* g, View4 vg, const T* out,
                                const T* gout, T* da, View4 vda, T* dg, View4 vdg) {
  const long long HW = d.H * d.W;
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (idx >= d.B * HW) return;
  const long long b = idx / HW, p = idx % HW, h = p / d.W, x = p % d.W;
  const A gm = masked<T, A>(gout, out, idx);
  const T* ap = a + va.at(b, 0, h, x);
  const T* gp = g + vg.at(b, 0, h, x);
  T* dap = da + vda.at(b, 0, h, x);
  T* dgp = dg + vdg.at(b, 0, h, x);
#pragma unroll 4
  for (long long c = 0; c < d.C; ++c) {
    const A gv = static_cast<A>(ld(gp + c * vg.sc)), av = static_cast<A>(ld(ap + c * va.sc));
    dap[c * vda.sc] = store<T, A>(gm * weight_of<M>(gv));
    dgp[c * vdg.sc] = store<T, A>(gm * av * dweight_of<M>(gv));
  }
}

template <typename T, typename A>
__global__ void backward_gradcam_kernel(Dims d, const T* a, View4 va, const T* g, View4 vg, const T* out,
                                        const T* gout, T* da, View4 vda, T* dg, View4 vdg) {
  const long long bc = blockIdx.x, b = bc / d.C, c = bc % d.C, HW = d.H * d.W;
  A s = 0;
  for (long long p = threadIdx.x; p < HW; p += blockDim.x) s += ld(g + vg.at(b, c, p / d.W, p % d.W));
  const A w = block_sum(s) / static_cast<A>(HW);
  A t = 0;
  for (long long p = threadIdx.x; p < HW; p += blockDim.x) {
    const long long h = p / d.W, x = p % d.W;
    const A gm = masked<T, A>(gout + b * HW, out + b * HW, p);
    t += gm * static_cast<A>(ld(a + va.at(b, c, h, x)));
    da[vda.at(b, c, h, x)] = store<T, A>(gm * w);
  }
  const T v = store<T, A>(block_sum(t) / static_cast<A>(HW));
  for (long long p = threadIdx.x; p < HW; p += blockDim.x) dg[vdg.at(b, c, p / d.W, p % d.W)] = v;
}

constexpr int kThreads = 256;

inline unsigned grid_for(long long n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename Tin>
void forward_typed(GwmMode mode, const GwmProblem& p, const void* a_, const void* g_, void* out_, void* ws_,
                   cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.C, p.H, p.W};
  auto a = static_cast<const T*>(a_);
  auto g = static_cast<const T*>(g_);
  auto out = static_cast<T*>(out_);
  auto w = static_cast<A*>(ws_);
  const unsigned grid = grid_for(p.B * p.H * p.W);
  switch (mode) {
    case GwmMode::Zoom:
      forward_kernel<T, A, 0><<<grid, kThreads, 0, s>>>(d, a, p.a, g, p.g, w, out);
      break;
    case GwmMode::GradCAM:
      channel_means_kernel<T, A><<<static_cast<unsigned>(p.B * p.C), kThreads, 0, s>>>(d, g, p.g, w);
      check_launch("channel_means_kernel");
      forward_kernel<T, A, 1><<<grid, kThreads, 0, s>>>(d, a, p.a, g, p.g, w, out);
      break;
    case GwmMode::LayerCAM:
      forward_kernel<T, A, 2><<<grid, kThreads, 0, s>>>(d, a, p.a, g, p.g, w, out);
      break;
  }
  check_launch("grad_weighted_map forward");
}

template <typename Tin>
void backward_typed(GwmMode mode, const GwmProblem& p, const void* a_, const void* g_, const void* out_,
                    const void* gout_, void* da_, View4 vda, void* dg_, View4 vdg, cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.C, p.H, p.W};
  auto a = static_cast<const T*>(a_);
  auto g = static_cast<const T*>(g_);
  auto out = static_cast<const T*>(out_);
  auto gout = static_cast<const T*>(gout_);
  auto da = static_cast<T*>(da_);
  auto dg = static_cast<T*>(dg_);
  const unsigned grid = grid_for(p.B * p.H * p.W);
  switch (mode) {
    case GwmMode::Zoom:
      backward_kernel<T, A, 0><<<grid, kThreads, 0, s>>>(d, a, p.a, g, p.g, out, gout, da, vda, dg, vdg);
      break;
    case GwmMode::LayerCAM:
      backward_kernel<T, A, 2><<<grid, kThreads, 0, s>>>(d, a, p.a, g, p.g, out, gout, da, vda, dg, vdg);
      break;
    case GwmMode::GradCAM:
      backward_gradcam_kernel<T, A><<<static_cast<unsigned>(p.B * p.C), kThreads, 0, s>>>(
          d, a, p.a, g, p.g, out, gout, da, vda, dg, vdg);
      break;
  }
  check_launch("grad_weighted_map backward");
}

}  // namespace

void grad_weighted_map_forward_cuda(DType dtype, GwmMode mode, const GwmProblem& p, const void* a,
                                    const void* g, void* out, void* ws, int device, void* stream) {
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::Float32: return forward_typed<float>(mode, p, a, g, out, ws, s);
    case DType::Float64: return forward_typed<double>(mode, p, a, g, out, ws, s);
    case DType::Float16: return forward_typed<half_t>(mode, p, a, g, out, ws, s);
    case DType::BFloat16: return forward_typed<bf16_t>(mode, p, a, g, out, ws, s);
  }
}

void grad_weighted_map_backward_cuda(DType dtype, GwmMode mode, const GwmProblem& p, const void* a,
                                     const void* g, const void* out, const void* gout, void* da,
                                     View4 vda, void* dg, View4 vdg, void* /*workspace*/, int device,
                                     void* stream) {
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  switch (dtype) {
    case DType::Float32: return backward_typed<float>(mode, p, a, g, out, gout, da, vda, dg, vdg, s);
    case DType::Float64: return backward_typed<double>(mode, p, a, g, out, gout, da, vda, dg, vdg, s);
    case DType::Float16: return backward_typed<half_t>(mode, p, a, g, out, gout, da, vda, dg, vdg, s);
    case DType::BFloat16: return backward_typed<bf16_t>(mode, p, a, g, out, gout, da, vda, dg, vdg, s);
  }
}

}  // namespace camfast
