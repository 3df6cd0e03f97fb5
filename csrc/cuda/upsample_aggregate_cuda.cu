// CUDA kernels for camfast::upsample_aggregate. No libtorch: raw device pointers, element
// strides and the caller's stream (torch.cuda.current_stream().cuda_stream).
//
// The layer table (pointers, sizes, strides, weights) travels by value as a kernel argument
// (at most kUaMaxLayers layers; 56 bytes each), so no host-to-device copy and the launches
// are capturable in a CUDA graph.
//
// stats    : one block per (sample, layer): NaN-propagating min and max (and, for the
//            backward, the number of pixels attaining each) into the workspace.
// forward  : one thread per output pixel; for every layer it samples the 4 source pixels,
//            normalises them and interpolates (torch's index and weight formulas and its
//            W-inner, H-outer order), reducing over the layers in registers; one write.
// backward : one thread per output pixel finds the winning layer (reduce=max) the same way
//            and atomically scatter-adds dout times the bilinear weights into dL/dN_l (the
//            accumulator workspace: float, double for double; the order of the atomics makes
//            the last bits nondeterministic). Then one block per (sample, layer) reduces the
//            two sums of the normalisation's gradient and writes dL/dM_l with its strides.
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>
#include <vector>

#include "upsample_aggregate.h"
#include "cuda/cuda_common.cuh"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cuda_detail;

// The layer table, passed by value (kernel parameters are limited to 4 KiB).
struct DevLayer {
  const void* data;
  int h, w;
  long long sb, sh, sw;
  double weight;
  long long gn_off;  // offset of this layer's dL/dN block in the backward workspace
};
struct DevLayers {
  DevLayer l[kUaMaxLayers];
};
static_assert(sizeof(DevLayers) <= 3840, "the layer table must fit the 4 KiB kernel-parameter limit");

struct Dims {
  long long B, H, W, L;
  int normalize;
};

// Products and sums rounded one by one, never contracted into an FMA (nvcc contracts
// a * b + c by default): the interpolated values are then bit-identical to the CPU kernel's,
// the Triton kernels' and the reference's, so reduce=max picks the same winner everywhere.
__device__ __forceinline__ float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ __forceinline__ double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ __forceinline__ float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ __forceinline__ double add_rn(double a, double b) { return __dadd_rn(a, b); }

// torch's compute_source_index_and_lambda (align_corners=False, no scale given).
template <typename A>
__device__ __forceinline__ void tap(int in, long long out, long long d, int& i0, int& i1, A& l0, A& l1) {
  if (in == out) {
    i0 = i1 = static_cast<int>(d);
    l0 = A(1);
    l1 = A(0);
    return;
  }
  const A scale = static_cast<A>(in) / static_cast<A>(out);
  A src = add_rn(mul_rn(scale, add_rn(static_cast<A>(d), A(0.5))), A(-0.5));
  src = src < A(0) ? A(0) : src;
  i0 = min(static_cast<int>(src), in - 1);
  const A f = src - static_cast<A>(i0);
  l1 = f < A(0) ? A(0) : (f > A(1) ? A(1) : f);
  i1 = i0 + (i0 < in - 1 ? 1 : 0);
  l0 = A(1) - l1;
}

// n = (v - mn) / d (minmax), 0 (constant map) or v (none), from the per-(b, layer) stats.
template <typename A> struct Norm {
  A mn, d;
  int kind;
  __device__ __forceinline__ A operator()(A v) const { return kind == 2 ? v : (kind == 1 ? A(0) : (v - mn) / d); }
};

template <typename A> __device__ __forceinline__ Norm<A> norm_of(const Dims& d, const A* ws, long long b, int l) {
  Norm<A> n{A(0), A(1), 2};
  if (d.normalize == static_cast<int>(UaNormalize::None)) return n;
  const A mn = ws[(b * d.L + l) * 2], mx = ws[(b * d.L + l) * 2 + 1];
  const A rng = mx - mn;
  n.mn = mn;
  n.kind = rng == A(0) ? 1 : 0;
  n.d = rng + static_cast<A>(kUaEps);
  return n;
}

// The upsampled, normalised value of layer l at output pixel (b, y, x).
template <typename T, typename A>
__device__ __forceinline__ A sample(const DevLayer& ly, const Norm<A>& nm, const Dims& d, long long b, long long y,
                                    long long x) {
  int r0, r1, c0, c1;
  A h0, h1, w0, w1;
  tap<A>(ly.h, d.H, y, r0, r1, h0, h1);
  tap<A>(ly.w, d.W, x, c0, c1, w0, w1);
  const T* m = static_cast<const T*>(ly.data) + b * ly.sb;
  const A v00 = nm(static_cast<A>(ld(m + r0 * ly.sh + c0 * ly.sw)));
  const A v01 = nm(static_cast<A>(ld(m + r0 * ly.sh + c1 * ly.sw)));
  const A v10 = nm(static_cast<A>(ld(m + r1 * ly.sh + c0 * ly.sw)));
  const A v11 = nm(static_cast<A>(ld(m + r1 * ly.sh + c1 * ly.sw)));
  // W inner, H outer: (v00 w0 + v01 w1) h0 + (v10 w0 + v11 w1) h1, each operation rounded
  return add_rn(mul_rn(add_rn(mul_rn(v00, w0), mul_rn(v01, w1)), h0),
                mul_rn(add_rn(mul_rn(v10, w0), mul_rn(v11, w1)), h1));
}

// NaN-propagating min and max, as torch.amin/amax.
template <typename A> __device__ __forceinline__ A nan_min(A a, A b) { return a != a ? a : (b != b ? b : (b < a ? b : a)); }
template <typename A> __device__ __forceinline__ A nan_max(A a, A b) { return a != a ? a : (b != b ? b : (b > a ? b : a)); }

template <typename A, typename Op> __device__ A block_reduce(A v, Op op) {
  __shared__ A shared[32];
  for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  if (lane == 0) shared[warp] = v;
  __syncthreads();
  const int nwarps = (blockDim.x + 31) >> 5;
  if (warp == 0) {
    v = lane < nwarps ? shared[lane] : op.pad(shared[0]);
    for (int o = 16; o > 0; o >>= 1) v = op(v, __shfl_down_sync(0xffffffffu, v, o));
    if (lane == 0) shared[0] = v;
  }
  __syncthreads();
  const A r = shared[0];
  __syncthreads();
  return r;
}

// pad: the value of the lanes past the last warp (an identity of the operation).
struct MinOp {
  template <typename A> __device__ A operator()(A a, A b) const { return nan_min(a, b); }
  template <typename A> __device__ A pad(A first) const { return first; }
};
struct MaxOp {
  template <typename A> __device__ A operator()(A a, A b) const { return nan_max(a, b); }
  template <typename A> __device__ A pad(A first) const { return first; }
};
struct SumOp {
  template <typename A> __device__ A operator()(A a, A b) const { return a + b; }
  template <typename A> __device__ A pad(A) const { return A(0); }
};

template <typename T, typename A>
__global__ void stats_kernel(DevLayers layers, Dims d, A* ws, bool counts) {
  const long long bl = blockIdx.x, b = bl / d.L;
  const DevLayer& ly = layers.l[bl % d.L];
  const T* m = static_cast<const T*>(ly.data) + b * ly.sb;
  const long long hw = static_cast<long long>(ly.h) * ly.w;
  A mn = static_cast<A>(ld(m)), mx = mn;
  for (long long p = threadIdx.x; p < hw; p += blockDim.x) {
    const A v = static_cast<A>(ld(m + (p / ly.w) * ly.sh + (p % ly.w) * ly.sw));
    mn = nan_min(mn, v);
    mx = nan_max(mx, v);
  }
  mn = block_reduce(mn, MinOp());
  mx = block_reduce(mx, MaxOp());
  if (threadIdx.x == 0) {
    ws[bl * 2] = mn;
    ws[bl * 2 + 1] = mx;
  }
  if (!counts) return;
  A cmin = 0, cmax = 0;
  for (long long p = threadIdx.x; p < hw; p += blockDim.x) {
    const A v = static_cast<A>(ld(m + (p / ly.w) * ly.sh + (p % ly.w) * ly.sw));
    cmin += v == mn ? A(1) : A(0);
    cmax += v == mx ? A(1) : A(0);
  }
  cmin = block_reduce(cmin, SumOp());
  cmax = block_reduce(cmax, SumOp());
  if (threadIdx.x == 0) {
    ws[2 * d.B * d.L + bl * 2] = cmin;
    ws[2 * d.B * d.L + bl * 2 + 1] = cmax;
  }
}

// Mode: UaReduce code.
template <typename T, typename A, int Mode>
__global__ void forward_kernel(DevLayers layers, Dims d, const A* ws, T* out) {
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (idx >= d.B * d.H * d.W) return;
  const long long b = idx / (d.H * d.W), y = (idx / d.W) % d.H, x = idx % d.W;
  A acc = A(0);
  for (int l = 0; l < d.L; ++l) {
    const DevLayer& ly = layers.l[l];
    const A v = sample<T, A>(ly, norm_of<A>(d, ws, b, l), d, b, y, x);
    if (Mode == static_cast<int>(UaReduce::Max)) {
      acc = (l == 0 || (!(v <= acc) && acc == acc)) ? v : acc;  // the first NaN wins, as torch.max
    } else if (Mode == static_cast<int>(UaReduce::Sum)) {
      acc += v * static_cast<A>(ly.weight);
    } else {
      acc += v;
    }
  }
  if (Mode == static_cast<int>(UaReduce::Mean)) acc = acc / static_cast<A>(d.L);
  out[idx] = store<T, A>(acc);
}

template <typename A> __device__ __forceinline__ void atomic_add(A* p, A v) { atomicAdd(p, v); }

template <typename T, typename A>
__device__ __forceinline__ void scatter(const DevLayer& ly, const Dims& d, long long b, long long y, long long x, A g,
                                        A* gn) {
  int r0, r1, c0, c1;
  A h0, h1, w0, w1;
  tap<A>(ly.h, d.H, y, r0, r1, h0, h1);
  tap<A>(ly.w, d.W, x, c0, c1, w0, w1);
  A* base = gn + ly.gn_off + b * static_cast<long long>(ly.h) * ly.w;
  atomic_add(base + r0 * ly.w + c0, h0 * w0 * g);
  atomic_add(base + r0 * ly.w + c1, h0 * w1 * g);
  atomic_add(base + r1 * ly.w + c0, h1 * w0 * g);
  atomic_add(base + r1 * ly.w + c1, h1 * w1 * g);
}

template <typename T, typename A, int Mode>
__global__ void backward_scatter_kernel(DevLayers layers, Dims d, const A* ws, const T* gout, A* gn) {
  const long long idx = blockIdx.x * static_cast<long long>(blockDim.x) + threadIdx.x;
  if (idx >= d.B * d.H * d.W) return;
  const long long b = idx / (d.H * d.W), y = (idx / d.W) % d.H, x = idx % d.W;
  const A g = static_cast<A>(ld(gout + idx));
  if (Mode == static_cast<int>(UaReduce::Max)) {
    A best = A(0);
    int win = 0;
    for (int l = 0; l < d.L; ++l) {
      const A v = sample<T, A>(layers.l[l], norm_of<A>(d, ws, b, l), d, b, y, x);
      if (l == 0 || (!(v <= best) && best == best)) {
        best = v;
        win = l;
      }
    }
    scatter<T, A>(layers.l[win], d, b, y, x, g, gn);
  } else {
    for (int l = 0; l < d.L; ++l) {
      const A gl = Mode == static_cast<int>(UaReduce::Mean) ? g / static_cast<A>(d.L)
                                                            : g * static_cast<A>(layers.l[l].weight);
      scatter<T, A>(layers.l[l], d, b, y, x, gl, gn);
    }
  }
}

// One layer's gradient, one block per sample: dL/dM = dL/dN / D plus the shares of dL/dmin
// and dL/dmax at the tied extrema (or dL/dN itself for normalize=none; 0 for a constant map).
struct GradLayer {
  const void* data;
  void* grad;
  int h, w;
  long long sb, sh, sw, gsb, gsh, gsw;
  long long gn_off;
  int l;
};

template <typename T, typename A>
__global__ void backward_norm_kernel(GradLayer ly, Dims d, const A* ws, const A* gn) {
  const long long b = blockIdx.x, hw = static_cast<long long>(ly.h) * ly.w;
  const T* m = static_cast<const T*>(ly.data) + b * ly.sb;
  T* dm = static_cast<T*>(ly.grad) + b * ly.gsb;
  const A* g = gn + ly.gn_off + b * hw;
  if (d.normalize == static_cast<int>(UaNormalize::None)) {
    for (long long p = threadIdx.x; p < hw; p += blockDim.x)
      dm[(p / ly.w) * ly.gsh + (p % ly.w) * ly.gsw] = store<T, A>(g[p]);
    return;
  }
  const long long bl = b * d.L + ly.l;
  const A mn = ws[bl * 2], mx = ws[bl * 2 + 1], rng = mx - mn;
  if (rng == A(0)) {
    for (long long p = threadIdx.x; p < hw; p += blockDim.x)
      dm[(p / ly.w) * ly.gsh + (p % ly.w) * ly.gsw] = store<T, A>(A(0));
    return;
  }
  const A dd = rng + static_cast<A>(kUaEps);
  A s0 = 0, sn = 0;
  for (long long p = threadIdx.x; p < hw; p += blockDim.x) {
    const A v = static_cast<A>(ld(m + (p / ly.w) * ly.sh + (p % ly.w) * ly.sw));
    s0 += g[p];
    sn += g[p] * ((v - mn) / dd);
  }
  s0 = block_reduce(s0, SumOp());
  sn = block_reduce(sn, SumOp());
  const A dmin = (sn - s0) / dd / ws[2 * d.B * d.L + bl * 2];
  const A dmax = -sn / dd / ws[2 * d.B * d.L + bl * 2 + 1];
  for (long long p = threadIdx.x; p < hw; p += blockDim.x) {
    const A v = static_cast<A>(ld(m + (p / ly.w) * ly.sh + (p % ly.w) * ly.sw));
    const A r = g[p] / dd + (v == mn ? dmin : A(0)) + (v == mx ? dmax : A(0));
    dm[(p / ly.w) * ly.gsh + (p % ly.w) * ly.gsw] = store<T, A>(r);
  }
}

constexpr int kThreads = 256;

inline unsigned grid_for(long long n) { return static_cast<unsigned>((n + kThreads - 1) / kThreads); }

// The kernel-argument layer table, with each layer's offset in the dL/dN workspace.
DevLayers dev_layers(const UaProblem& p, const UaLayer* layers, long long* gn_total) {
  if (p.L < 1 || p.L > kUaMaxLayers)
    throw std::invalid_argument("upsample_aggregate: between 1 and " + std::to_string(kUaMaxLayers) + " layers");
  DevLayers t{};
  long long off = 0;
  for (int64_t l = 0; l < p.L; ++l) {
    const UaLayer& s = layers[l];
    t.l[l] = DevLayer{s.data, static_cast<int>(s.h), static_cast<int>(s.w), s.sb, s.sh, s.sw,
                      s.weight, off};
    off += p.B * s.h * s.w;
  }
  if (gn_total) *gn_total = off;
  return t;
}

template <typename Tin>
void forward_typed(const UaProblem& p, const UaLayer* layers, void* out_, void* ws_, cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.H, p.W, p.L, static_cast<int>(p.normalize)};
  const DevLayers t = dev_layers(p, layers, nullptr);
  auto ws = static_cast<A*>(ws_);
  auto out = static_cast<T*>(out_);
  if (p.normalize == UaNormalize::MinMax) {
    stats_kernel<T, A><<<static_cast<unsigned>(p.B * p.L), kThreads, 0, s>>>(t, d, ws, false);
    check_launch("upsample_aggregate stats");
  }
  const unsigned grid = grid_for(p.B * p.H * p.W);
  switch (p.reduce) {
    case UaReduce::Max: forward_kernel<T, A, 0><<<grid, kThreads, 0, s>>>(t, d, ws, out); break;
    case UaReduce::Mean: forward_kernel<T, A, 1><<<grid, kThreads, 0, s>>>(t, d, ws, out); break;
    case UaReduce::Sum: forward_kernel<T, A, 2><<<grid, kThreads, 0, s>>>(t, d, ws, out); break;
  }
  check_launch("upsample_aggregate forward");
}

template <typename Tin>
void backward_typed(const UaProblem& p, const UaLayer* layers, const void* gout_, void* ws_, cudaStream_t s) {
  using T = typename DevType<Tin>::type;
  using A = typename AccT<Tin>::type;
  const Dims d{p.B, p.H, p.W, p.L, static_cast<int>(p.normalize)};
  long long gn_total = 0;
  const DevLayers t = dev_layers(p, layers, &gn_total);
  auto ws = static_cast<A*>(ws_);
  A* gn = ws + 4 * p.B * p.L;
  auto gout = static_cast<const T*>(gout_);
  if (p.normalize == UaNormalize::MinMax) {
    stats_kernel<T, A><<<static_cast<unsigned>(p.B * p.L), kThreads, 0, s>>>(t, d, ws, true);
    check_launch("upsample_aggregate stats");
  }
  if (cudaMemsetAsync(gn, 0, static_cast<size_t>(gn_total) * sizeof(A), s) != cudaSuccess)
    throw std::runtime_error("camfast CUDA: upsample_aggregate workspace memset failed");
  const unsigned grid = grid_for(p.B * p.H * p.W);
  switch (p.reduce) {
    case UaReduce::Max: backward_scatter_kernel<T, A, 0><<<grid, kThreads, 0, s>>>(t, d, ws, gout, gn); break;
    case UaReduce::Mean: backward_scatter_kernel<T, A, 1><<<grid, kThreads, 0, s>>>(t, d, ws, gout, gn); break;
    case UaReduce::Sum: backward_scatter_kernel<T, A, 2><<<grid, kThreads, 0, s>>>(t, d, ws, gout, gn); break;
  }
  check_launch("upsample_aggregate backward scatter");
  for (int64_t l = 0; l < p.L; ++l) {
    const UaLayer& ly = layers[l];
    const GradLayer g{ly.data, ly.grad, static_cast<int>(ly.h), static_cast<int>(ly.w), ly.sb, ly.sh, ly.sw,
                      ly.gsb, ly.gsh, ly.gsw, t.l[l].gn_off, static_cast<int>(l)};
    backward_norm_kernel<T, A><<<static_cast<unsigned>(p.B), kThreads, 0, s>>>(g, d, ws, gn);
    check_launch("upsample_aggregate backward normalisation");
  }
}

}  // namespace

void upsample_aggregate_forward_cuda(DType dtype, const UaProblem& p, const UaLayer* layers, void* out, void* ws,
                                     int device, void* stream) {
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  with_dtype(dtype, [&](auto t) { forward_typed<CAMFAST_T(t)>(p, layers, out, ws, s); });
}

void upsample_aggregate_backward_cuda(DType dtype, const UaProblem& p, const UaLayer* layers, const void* gout,
                                      void* ws, int device, void* stream) {
  DeviceGuard guard(device);
  auto s = static_cast<cudaStream_t>(stream);
  with_dtype(dtype, [&](auto t) { backward_typed<CAMFAST_T(t)>(p, layers, gout, ws, s); });
}

}  // namespace camfast
