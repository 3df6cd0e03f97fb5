// CPU kernel for camfast::box_filter (forward and its adjoint), box_filter.h.
//
// Per image: threads share the rows of the horizontal pass (channels interleaved per pixel,
// so the running sums of the C channels are independent chains), then each thread owns a
// chunk of columns for the vertical pass and writes its outputs directly with their strides.
// Running sums are carried in double; the row buffer is in the accumulator type (float;
// double for float64).
#include <vector>

#include "box_filter.h"
#include "cpu/box_sum_cpu.h"
#include "cpu/cpu_common.h"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cpu_detail;
using namespace box_detail;

template <typename T>
void box_typed(const BoxProblem& p, bool backward, const T* x, View4 sx, T* out, View4 so) {
  using A = Acc<T>;
  const int64_t C = p.C, H = p.H, W = p.W, r = p.r, L = W * C;
  const std::vector<double> invh = inv_counts(H, r, BoxBorder::Truncate);
  const std::vector<double> invw = inv_counts(W, r, BoxBorder::Truncate);
  std::vector<A> T_(static_cast<size_t>(H * L));
  A* Tb = T_.data();
#pragma omp parallel
  {
    std::vector<A> row(static_cast<size_t>(L));
    std::vector<double> s(static_cast<size_t>(C));
    int64_t x0, x1;
    thread_chunk(W, x0, x1);
    std::vector<double> cs(static_cast<size_t>((x1 - x0) * C));
    for (int64_t b = 0; b < p.B; ++b) {
#pragma omp for schedule(static)
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t xx = 0; xx < W; ++xx) {
          const double scale = backward ? invh[y] * invw[xx] : 1.0;
          for (int64_t c = 0; c < C; ++c)
            row[xx * C + c] = static_cast<A>(static_cast<double>(to_float(x[sx.at(b, c, y, xx)])) * scale);
        }
        row_box(row.data(), Tb + y * L, W, C, r, BoxBorder::Truncate, s.data());
      }
      // implicit barrier: every row sum is ready
      if (x1 > x0) {
        col_box(Tb, H, L, x0 * C, x1 * C, r, BoxBorder::Truncate, cs.data(), [&](int64_t y, const double* m) {
          for (int64_t xx = x0; xx < x1; ++xx) {
            const double scale = backward ? 1.0 : invh[y] * invw[xx];
            const double* mm = m + (xx - x0) * C;
            for (int64_t c = 0; c < C; ++c) out[so.at(b, c, y, xx)] = store_double<T>(mm[c] * scale);
          }
        });
      }
#pragma omp barrier
    }
  }
}

}  // namespace

void box_filter_cpu(DType dtype, const BoxProblem& p, bool backward, const void* x, View4 sx, void* out,
                    View4 so) {
  with_dtype(dtype, [&](auto t) {
    using T = CAMFAST_T(t);
    box_typed<T>(p, backward, static_cast<const T*>(x), sx, static_cast<T*>(out), so);
  });
}

}  // namespace camfast
