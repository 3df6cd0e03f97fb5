// CUDA kernels for camfast::box_filter (forward and adjoint), box_filter.h.
//
// Two passes through a workspace of B*C*H*W accumulator values (float; double for
// float64): one thread per (b, c, row) carries the horizontal running sum, one thread per
// (b, c, column) the vertical one (consecutive threads take consecutive columns, so the
// vertical pass reads coalesced rows). Running sums are carried in double.
#include "box_filter.h"
#include "cuda/cuda_common.cuh"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cuda_detail;

constexpr int kThreads = 256;

__device__ __forceinline__ double inv_count(int64_t i, int64_t n, int64_t r) {
  const int64_t lo = i - r < 0 ? 0 : i - r;
  const int64_t hi = i + r > n - 1 ? n - 1 : i + r;
  return 1.0 / static_cast<double>(hi - lo + 1);
}

// ws[(b*C + c)*H*W + y*W + x] = horizontal window sum (of x / N in the adjoint).
template <typename D, typename A>
__global__ void rows_kernel(BoxProblem p, bool backward, const D* __restrict__ x, View4 sx, A* __restrict__ ws) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.B * p.C * p.H) return;
  const int64_t y = t % p.H, bc = t / p.H, c = bc % p.C, b = bc / p.C;
  const double sy = backward ? inv_count(y, p.H, p.r) : 1.0;
  auto val = [&](int64_t i) -> double {
    const double v = static_cast<double>(ld(x + sx.at(b, c, y, i)));
    return backward ? v * sy * inv_count(i, p.W, p.r) : v;
  };
  A* o = ws + t * p.W;
  double s = 0.0;
  const int64_t last = p.r < p.W - 1 ? p.r : p.W - 1;
  for (int64_t i = 0; i <= last; ++i) s += val(i);
  for (int64_t i = 0; i < p.W; ++i) {
    o[i] = static_cast<A>(s);
    if (i + p.r + 1 < p.W) s += val(i + p.r + 1);
    if (i - p.r >= 0) s -= val(i - p.r);
  }
}

template <typename D, typename A>
__global__ void cols_kernel(BoxProblem p, bool backward, const A* __restrict__ ws, D* __restrict__ out, View4 so) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.B * p.C * p.W) return;
  const int64_t xx = t % p.W, bc = t / p.W, c = bc % p.C, b = bc / p.C;
  const A* col = ws + bc * p.H * p.W + xx;
  const double sx = backward ? 1.0 : inv_count(xx, p.W, p.r);
  double s = 0.0;
  const int64_t last = p.r < p.H - 1 ? p.r : p.H - 1;
  for (int64_t i = 0; i <= last; ++i) s += static_cast<double>(col[i * p.W]);
  for (int64_t y = 0; y < p.H; ++y) {
    const double scale = backward ? 1.0 : sx * inv_count(y, p.H, p.r);
    out[so.at(b, c, y, xx)] = store<D, A>(static_cast<A>(s * scale));
    if (y + p.r + 1 < p.H) s += static_cast<double>(col[(y + p.r + 1) * p.W]);
    if (y - p.r >= 0) s -= static_cast<double>(col[(y - p.r) * p.W]);
  }
}

template <typename T>
void run(const BoxProblem& p, bool backward, const void* x, View4 sx, void* out, View4 so, void* ws,
         cudaStream_t s) {
  using D = typename DevType<T>::type;
  using A = typename AccT<T>::type;
  const int64_t rows = p.B * p.C * p.H, cols = p.B * p.C * p.W;
  rows_kernel<D, A><<<static_cast<unsigned>((rows + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      p, backward, static_cast<const D*>(x), sx, static_cast<A*>(ws));
  check_launch("box_filter rows_kernel");
  cols_kernel<D, A><<<static_cast<unsigned>((cols + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      p, backward, static_cast<const A*>(ws), static_cast<D*>(out), so);
  check_launch("box_filter cols_kernel");
}

}  // namespace

void box_filter_cuda(DType dtype, const BoxProblem& p, bool backward, const void* x, View4 sx, void* out,
                     View4 so, void* workspace, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  with_dtype(dtype, [&](auto t) { run<CAMFAST_T(t)>(p, backward, x, sx, out, so, workspace, s); });
}

}  // namespace camfast
