// CUDA kernel for camfast::neighbour_stencil, neighbour_stencil.h.
//
// One thread per output element, in the contiguous output's order (consecutive threads take
// consecutive columns of a row, so loads of x's rows and stores are coalesced for row-major
// inputs); the 9 loads of the window come mostly from L1/L2. Accumulates in float (double
// for double). Offsets in int64.
#include "cuda/cuda_common.cuh"
#include "dtype_switch.h"
#include "neighbour_stencil.h"

namespace camfast {
namespace {

using namespace cuda_detail;

constexpr int kThreads = 256;

template <typename D, typename A>
__global__ void stencil_kernel(StencilProblem p, const D* __restrict__ x, View4 sx, const D* __restrict__ a, View4 sa,
                               const D* __restrict__ w, View4 sw, const D* __restrict__ c, View4 sc,
                               D* __restrict__ out) {
  const int64_t t = static_cast<int64_t>(blockIdx.x) * blockDim.x + threadIdx.x;
  if (t >= p.B * p.C * p.H * p.W) return;
  const int64_t j = t % p.W, i = (t / p.W) % p.H, bc = t / (p.W * p.H), ch = bc % p.C, b = bc / p.C;
  A k = 0;
  for (int di = -1; di <= 1; ++di) {
    const int64_t y = i + di;
    if (y < 0 || y >= p.H) continue;
    const A wy = di == 0 ? A(2) : A(1);
    A row = 0;
    for (int dj = -1; dj <= 1; ++dj) {
      const int64_t xx = j + dj;
      if (xx < 0 || xx >= p.W) continue;
      const A v = static_cast<A>(ld(x + sx.at(b, ch, y, xx)));
      row += dj == 0 ? 2 * v : v;
    }
    k += wy * row;
  }
  // (a x + w k) + c; an absent (null) a or c is skipped, not multiplied by 0
  A v = static_cast<A>(ld(w + sw.at(b, ch, i, j))) * k;
  if (a) v = static_cast<A>(ld(a + sa.at(b, ch, i, j))) * static_cast<A>(ld(x + sx.at(b, ch, i, j))) + v;
  if (c) v = v + static_cast<A>(ld(c + sc.at(b, ch, i, j)));
  out[t] = store<D, A>(v);
}

template <typename T>
void run(const StencilProblem& p, const void* x, View4 sx, const void* a, View4 sa, const void* w, View4 sw,
         const void* c, View4 sc, void* out, cudaStream_t s) {
  using D = typename DevType<T>::type;
  using A = typename AccT<T>::type;
  const int64_t n = p.B * p.C * p.H * p.W;
  stencil_kernel<D, A><<<static_cast<unsigned>((n + kThreads - 1) / kThreads), kThreads, 0, s>>>(
      p, static_cast<const D*>(x), sx, static_cast<const D*>(a), sa, static_cast<const D*>(w), sw,
      static_cast<const D*>(c), sc, static_cast<D*>(out));
  check_launch("neighbour_stencil stencil_kernel");
}

}  // namespace

void neighbour_stencil_cuda(DType dtype, const StencilProblem& p, const void* x, View4 sx, const void* a, View4 sa,
                            const void* w, View4 sw, const void* c, View4 sc, void* out, int device, void* stream) {
  DeviceGuard guard(device);
  cudaStream_t s = static_cast<cudaStream_t>(stream);
  with_dtype(dtype, [&](auto t) { run<CAMFAST_T(t)>(p, x, sx, a, sa, w, sw, c, sc, out, s); });
}

}  // namespace camfast
