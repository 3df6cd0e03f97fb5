// CPU kernel for camfast::neighbour_stencil, neighbour_stencil.h.
//
// OpenMP over the B*C*H output rows (stencil_row, with AVX2 clones on x86-64). A row reads up
// to three rows of x (the window's) and one row of each coefficient; a row that is not a
// contiguous run of the accumulator type (a 16-bit dtype, a strided or stride-0 view) is first
// converted into a thread-local buffer, so the arithmetic is always over contiguous arrays and
// vectorises: the vertical sum
// v = x[i-1] + 2 x[i] + x[i+1] (rows inside the image), then K x = v[j-1] + 2 v[j] + v[j+1]
// and a x + w (K x) + c. Rows of x are read three times, from cache.
#include <type_traits>
#include <vector>

#include "cpu/cpu_common.h"
#include "dtype_switch.h"
#include "neighbour_stencil.h"

namespace camfast {
namespace {

using namespace cpu_detail;

// Row (b, c, i) of a view as W contiguous accumulator values: the data itself when it already
// is one, else converted into buf.
template <typename T, typename A>
inline const A* row_of(const T* base, const View4& v, int64_t b, int64_t c, int64_t i, int64_t W, A* buf) {
  const T* p = base + v.at(b, c, i, 0);
  if constexpr (std::is_same_v<T, A>) {
    if (v.sw == 1 || W == 1) return p;
  }
  if (v.sw == 0) {
    const A value = static_cast<A>(to_float(*p));
    for (int64_t j = 0; j < W; ++j) buf[j] = value;
  } else {
    for (int64_t j = 0; j < W; ++j) buf[j] = static_cast<A>(to_float(p[j * v.sw]));
  }
  return buf;
}

// AVX2 clones of the row arithmetic on x86-64 with GCC (chosen at load time; the default for
// older CPUs): without them the loops are SSE2-wide, 4x slower than PyTorch's own elementwise
// ops on rows that fit in cache (the multigrid's coarse levels). "avx2" alone adds no FMA, so
// every clone rounds the same.
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define CAMFAST_SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#else
#define CAMFAST_SIMD_CLONES
#endif

// One output row: v = (xu) + 2 x0 + (xd) (a null neighbour row is outside the image), then
// o = (a x0 + w (K x)) + c, in this order on every backend. ar / cr null: the term is absent
// (skipped, not multiplied by 0, so an infinite x does not turn into NaN in the backward's
// K(w g) + a g).
template <typename T, typename A, bool HA, bool HC>
CAMFAST_SIMD_CLONES void stencil_row(const A* xu, const A* x0, const A* xd, const A* ar, const A* wr, const A* cr,
                                     A* v, T* o, int64_t W) {
  if (xu && xd) {
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) v[j] = xu[j] + 2 * x0[j] + xd[j];
  } else if (xu || xd) {
    const A* xn = xu ? xu : xd;
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) v[j] = 2 * x0[j] + xn[j];
  } else {
#pragma omp simd
    for (int64_t j = 0; j < W; ++j) v[j] = 2 * x0[j];
  }
  auto combine = [&](int64_t j, A k) {
    A t = wr[j] * k;
    if constexpr (HA) t = ar[j] * x0[j] + t;
    if constexpr (HC) t = t + cr[j];
    return store_acc<T, A>(t);
  };
  if (W == 1) {
    o[0] = combine(0, 2 * v[0]);
    return;
  }
  o[0] = combine(0, 2 * v[0] + v[1]);
#pragma omp simd
  for (int64_t j = 1; j < W - 1; ++j) o[j] = combine(j, v[j - 1] + 2 * v[j] + v[j + 1]);
  o[W - 1] = combine(W - 1, v[W - 2] + 2 * v[W - 1]);
}

template <typename T, bool HA, bool HC>
void stencil_typed(const StencilProblem& p, const T* x, View4 sx, const T* a, View4 sa, const T* w, View4 sw,
                   const T* c, View4 sc, T* out) {
  using A = Acc<T>;
  const int64_t C = p.C, H = p.H, W = p.W, rows = p.B * C * H;
#pragma omp parallel if (rows * W > 32768)
  {
    std::vector<A> buf(static_cast<size_t>(7 * W));
    A* const bx[3] = {buf.data(), buf.data() + W, buf.data() + 2 * W};
    A* const ba = buf.data() + 3 * W;
    A* const bw = buf.data() + 4 * W;
    A* const bc = buf.data() + 5 * W;
    A* const v = buf.data() + 6 * W;
#pragma omp for schedule(static)
    for (int64_t r = 0; r < rows; ++r) {
      const int64_t i = r % H, bcn = r / H, ch = bcn % C, b = bcn / C;
      const A* x0 = row_of<T, A>(x, sx, b, ch, i, W, bx[1]);
      const A* xu = i > 0 ? row_of<T, A>(x, sx, b, ch, i - 1, W, bx[0]) : nullptr;
      const A* xd = i + 1 < H ? row_of<T, A>(x, sx, b, ch, i + 1, W, bx[2]) : nullptr;
      const A* ar = HA ? row_of<T, A>(a, sa, b, ch, i, W, ba) : nullptr;
      const A* wr = row_of<T, A>(w, sw, b, ch, i, W, bw);
      const A* cr = HC ? row_of<T, A>(c, sc, b, ch, i, W, bc) : nullptr;
      stencil_row<T, A, HA, HC>(xu, x0, xd, ar, wr, cr, v, out + r * W, W);
    }
  }
}

}  // namespace

void neighbour_stencil_cpu(DType dtype, const StencilProblem& p, const void* x, View4 sx, const void* a, View4 sa,
                           const void* w, View4 sw, const void* c, View4 sc, void* out) {
  with_dtype(dtype, [&](auto t) {
    using T = CAMFAST_T(t);
    const T *X = static_cast<const T*>(x), *Ap = static_cast<const T*>(a), *Wp = static_cast<const T*>(w),
            *Cp = static_cast<const T*>(c);
    T* O = static_cast<T*>(out);
    if (Ap && Cp) stencil_typed<T, true, true>(p, X, sx, Ap, sa, Wp, sw, Cp, sc, O);
    else if (Ap) stencil_typed<T, true, false>(p, X, sx, Ap, sa, Wp, sw, Cp, sc, O);
    else if (Cp) stencil_typed<T, false, true>(p, X, sx, Ap, sa, Wp, sw, Cp, sc, O);
    else stencil_typed<T, false, false>(p, X, sx, Ap, sa, Wp, sw, Cp, sc, O);
  });
}

}  // namespace camfast
