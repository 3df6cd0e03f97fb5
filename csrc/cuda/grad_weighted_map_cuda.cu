// CUDA kernels for camfast::grad_weighted_map. No libtorch: raw device pointers,
// element strides and the caller's stream (torch.cuda.current_stream().cuda_stream).
//
// forward (zoom, layercam): one thread per pixel, looping over channels; a warp reads
//   32 consecutive pixels of one channel plane (coalesced for NCHW).
// forward (gradcam, gradcampp, xgradcam): one block per (b, c) reduces the channel weight
//   (mean_hw(G); sum_hw ReLU(G) a; sum_hw(G A) / (sum_hw A + eps)) into the workspace, then
//   the per-pixel kernel weights A by it.
// backward (zoom, layercam): one thread per pixel writes dA and dG for every channel.
// backward (gradcam): one block per (b, c): mean of G, then dA = gm * w while reducing
//   dw = sum gm * A, then dG = dw / HW. A single kernel, no workspace.
// backward (gradcampp, xgradcam): one block per (b, c): the plane's sums (A, G A, gm A; for
//   gradcampp then r and r^2 over G), then dA and dG. A single kernel, no workspace.
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

constexpr int kZoom = static_cast<int>(GwmMode::Zoom), kGradCAM = static_cast<int>(GwmMode::GradCAM),
              kLayerCAM = static_cast<int>(GwmMode::LayerCAM), kGradCAMpp = static_cast<int>(GwmMode::GradCAMpp),
              kXGradCAM = static_cast<int>(GwmMode::XGradCAM);

// Modes with one weight per (b, c) channel: M = ReLU(sum_c w_c A_c).
__host__ __device__ constexpr bool per_channel(int m) { return m == kGradCAM || m == kGradCAMpp || m == kXGradCAM; }

template <int M, typename A> __device__ __forceinline__ A weight_of(A g) {
  return M == kLayerCAM ? relu(g) : g;
}
template <int M, typename A> __device__ __forceinline__ A dweight_of(A g) {
  return M == kLayerCAM ? (g > A(0) ? A(1) : A(0)) : A(1);
}

// Grad-CAM++ at one pixel: D = 2 G^2 + S G^3 + eps, a = G^2 / D (0 where G == 0),
// r = ReLU(G) * a, dr/dG = [G > 0] * a * (2 G^2 + 3 eps) / D.
template <typename A> __device__ __forceinline__ A gpp_denominator(A g, A s) {
  const A g2 = g * g;
  return A(2) * g2 + s * (g2 * g) + static_cast<A>(kGwmGradCamPPEps);
}
template <typename A> __device__ __forceinline__ A gpp_alpha(A g, A d) { return g != A(0) ? g * g / d : A(0); }
template <typename A> __device__ __forceinline__ A gpp_r(A g, A s) { return relu(g) * gpp_alpha(g, gpp_denominator(g, s)); }
template <typename A> __device__ __forceinline__ A gpp_dr(A g, A s) {
  const A d = gpp_denominator(g, s);
  return g > A(0) ? gpp_alpha(g, d) * (A(2) * g * g + static_cast<A>(3 * kGwmGradCamPPEps)) / d : A(0);
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
__device__ __forceinline__ A masked(const T* gout, const T* out, long long i) {
  return static_cast<A>(ld(out + i)) > A(0) ? static_cast<A>(ld(gout + i)) : A(0);
}

// The per-channel constants of plane (b, c), reduced by the whole block (every thread gets
// them). With S = sum A, T = sum gm A (Bwd only; go, ov: the image's dM and M) and
// r = ReLU(G) a(G, S):
//   GradCAM  : w = mean G
//   XGradCAM : w = sum(G A) / (S + eps), c1 = k = T / (S + eps)
//   GradCAMpp: w = sum r,               c1 = -T sum r^2, c2 = T, c3 = S
template <typename A> struct Consts { A w, c1, c2, c3; };

template <typename T, typename A, int M, bool Bwd>
__device__ Consts<A> plane_consts(Dims d, long long b, long long c, const T* a, View4 va, const T* g, View4 vg,
                                  const T* ov, const T* go) {
  const long long HW = d.H * d.W;
  A s0 = 0, s1 = 0, s2 = 0;  // pass 1: {GradCAM ? G : A, G A (XGradCAM), gm A (Bwd)}
  for (long long p = threadIdx.x; p < HW; p += blockDim.x) {
    const long long h = p / d.W, x = p % d.W;
    if (M == kGradCAM) {
      s0 += static_cast<A>(ld(g + vg.at(b, c, h, x)));
    } else {
      const A av = static_cast<A>(ld(a + va.at(b, c, h, x)));
      s0 += av;
      if (M == kXGradCAM) s1 += static_cast<A>(ld(g + vg.at(b, c, h, x))) * av;
      if (Bwd) s2 += masked<T, A>(go, ov, p) * av;
    }
  }
  s0 = block_sum(s0);
  if (M == kXGradCAM) s1 = block_sum(s1);
  if (Bwd) s2 = block_sum(s2);
  if (M == kGradCAM) return {s0 / static_cast<A>(HW), A(0), A(0), A(0)};
  if (M == kXGradCAM) return {s1 / (s0 + static_cast<A>(kGwmXGradCamEps)), s2 / (s0 + static_cast<A>(kGwmXGradCamEps)), A(0), A(0)};
  A r0 = 0, r1 = 0;  // pass 2 (GradCAMpp): {r, r^2 (Bwd)}
  for (long long p = threadIdx.x; p < HW; p += blockDim.x) {
    const A r = gpp_r(static_cast<A>(ld(g + vg.at(b, c, p / d.W, p % d.W))), s0);
    r0 += r;
    if (Bwd) r1 += r * r;
  }
  r0 = block_sum(r0);
  if (Bwd) r1 = block_sum(r1);
  return {r0, -(s2 * r1), s2, s0};
}

// One block per (b, c): the channel weights w of a per-channel mode (M's forward).
template <typename T, typename A, int M>
__global__ void channel_weights_kernel(Dims d, const T* a, View4 va, const T* g, View4 vg, A* w) {
  const long long bc = blockIdx.x;
  const A wc = plane_consts<T, A, M, false>(d, bc / d.C, bc % d.C, a, va, g, vg, nullptr, nullptr).w;
  if (threadIdx.x == 0) w[bc] = wc;
}

template <typename T, typename A, int M>
__global__ void forward_kernel(Dims d, const T* a, View4 va, const T* g, View4 vg, const A* w, T* out) {
  const long long HW = d.H * d.W;
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (idx >= d.B * HW) return;
  const long long b = idx / HW, p = idx % HW, h = p / d.W, x = p % d.W;
  const T* ap = a + va.at(b, 0, h, x);
  A s = 0;
  if (per_channel(M)) {
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
  const A w = plane_consts<T, A, kGradCAM, false>(d, b, c, a, va, g, vg, nullptr, nullptr).w;
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

// Grad-CAM++ and XGrad-CAM, one block per (b, c): the plane's constants, then
//   XGradCAM : dA = gm w + k (G - w), dG = k A
//   GradCAMpp: dA = gm w + c1,        dG = T dr/dG(G, S)
template <typename T, typename A, int M>
__global__ void backward_per_channel_kernel(Dims d, const T* a, View4 va, const T* g, View4 vg, const T* out,
                                            const T* gout, T* da, View4 vda, T* dg, View4 vdg) {
  const long long bc = blockIdx.x, b = bc / d.C, c = bc % d.C, HW = d.H * d.W;
  const T* ov = out + b * HW;
  const T* go = gout + b * HW;
  const Consts<A> k = plane_consts<T, A, M, true>(d, b, c, a, va, g, vg, ov, go);
  for (long long p = threadIdx.x; p < HW; p += blockDim.x) {
    const long long h = p / d.W, x = p % d.W;
    const A gm = masked<T, A>(go, ov, p);
    const A gv = static_cast<A>(ld(g + vg.at(b, c, h, x)));
    if (M == kXGradCAM) {
      da[vda.at(b, c, h, x)] = store<T, A>(gm * k.w + k.c1 * (gv - k.w));
      dg[vdg.at(b, c, h, x)] = store<T, A>(k.c1 * static_cast<A>(ld(a + va.at(b, c, h, x))));
    } else {
      da[vda.at(b, c, h, x)] = store<T, A>(gm * k.w + k.c1);
      dg[vdg.at(b, c, h, x)] = store<T, A>(k.c2 * gpp_dr(gv, k.c3));
    }
  }
}

constexpr int kThreads = 256;

inline unsigned grid_for(long long n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

template <typename Tin>
void forward_typed(GwmMode mode, const GwmProblem& p, const void* a, const void* g, void* out, void* ws,
                   cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.C, p.H, p.W};
  const auto c = [](const void* q) { return static_cast<const T*>(q); };
  const auto w = static_cast<A*>(ws);
  const unsigned planes = static_cast<unsigned>(p.B * p.C), pixels = grid_for(p.B * p.H * p.W);
  // the per-channel modes: their weights first (one block per plane), then the map
  const auto run = [&](auto weights, auto map) {
    if (weights != nullptr) {
      weights<<<planes, kThreads, 0, s>>>(d, c(a), p.a, c(g), p.g, w);
      check_launch("grad_weighted_map channel weights");
    }
    map<<<pixels, kThreads, 0, s>>>(d, c(a), p.a, c(g), p.g, w, static_cast<T*>(out));
  };
  using Weights = void (*)(Dims, const T*, View4, const T*, View4, A*);
  switch (mode) {
    case GwmMode::Zoom: run(Weights{nullptr}, forward_kernel<T, A, kZoom>); break;
    case GwmMode::GradCAM: run(channel_weights_kernel<T, A, kGradCAM>, forward_kernel<T, A, kGradCAM>); break;
    case GwmMode::LayerCAM: run(Weights{nullptr}, forward_kernel<T, A, kLayerCAM>); break;
    case GwmMode::GradCAMpp: run(channel_weights_kernel<T, A, kGradCAMpp>, forward_kernel<T, A, kGradCAMpp>); break;
    case GwmMode::XGradCAM: run(channel_weights_kernel<T, A, kXGradCAM>, forward_kernel<T, A, kXGradCAM>); break;
  }
  check_launch("grad_weighted_map forward");
}

template <typename Tin>
void backward_typed(GwmMode mode, const GwmProblem& p, const void* a, const void* g, const void* out,
                    const void* gout, void* da, View4 vda, void* dg, View4 vdg, cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.C, p.H, p.W};
  const auto c = [](const void* q) { return static_cast<const T*>(q); };
  const auto m = [](void* q) { return static_cast<T*>(q); };
  // grid: one thread per pixel (zoom, layercam) or one block per (b, c) plane
  const auto run = [&](auto kernel, unsigned grid) {
    kernel<<<grid, kThreads, 0, s>>>(d, c(a), p.a, c(g), p.g, c(out), c(gout), m(da), vda, m(dg), vdg);
  };
  const unsigned planes = static_cast<unsigned>(p.B * p.C), pixels = grid_for(p.B * p.H * p.W);
  switch (mode) {
    case GwmMode::Zoom: run(backward_kernel<T, A, kZoom>, pixels); break;
    case GwmMode::LayerCAM: run(backward_kernel<T, A, kLayerCAM>, pixels); break;
    case GwmMode::GradCAM: run(backward_gradcam_kernel<T, A>, planes); break;
    case GwmMode::GradCAMpp: run(backward_per_channel_kernel<T, A, kGradCAMpp>, planes); break;
    case GwmMode::XGradCAM: run(backward_per_channel_kernel<T, A, kXGradCAM>, planes); break;
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
