// Running-sum box filters shared by box_filter_cpu.cpp and guided_filter_cpu.cpp.
//
// Data of one image is held row by row with K quantities per pixel, innermost:
// row[x * K + k]. row_box() replaces each row by its horizontal window sums (a running sum
// per quantity, carried in double); col_box() then walks the rows top to bottom keeping one
// double running sum per (pixel, quantity) of a column chunk and hands each finished row of
// 2-D window sums to a callback. Both are O(1) per pixel whatever the radius.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#include "box_filter.h"
#include "cpu/cpu_common.h"

namespace camfast {
namespace box_detail {

// torch's "reflect" padding index (the edge pixel is not repeated); needs |overhang| < n.
inline int64_t reflect_index(int64_t i, int64_t n) {
  if (n == 1) return 0;
  if (i < 0) i = -i;
  if (i >= n) i = 2 * n - 2 - i;
  return i;
}

// Pixels of the truncated window of radius r around i on an axis of n pixels.
inline int64_t window_count(int64_t i, int64_t n, int64_t r) {
  return std::min(i + r, n - 1) - std::max(i - r, int64_t(0)) + 1;
}

// 1 / (pixels in the window) for every position of an axis (Truncate), or 1 / (2r+1).
inline std::vector<double> inv_counts(int64_t n, int64_t r, BoxBorder border) {
  std::vector<double> v(static_cast<size_t>(n));
  for (int64_t i = 0; i < n; ++i)
    v[i] = border == BoxBorder::Truncate ? 1.0 / static_cast<double>(window_count(i, n, r))
                                         : 1.0 / static_cast<double>(2 * r + 1);
  return v;
}

// out[x*K+k] = sum over the window around x of in[.*K+k]; s: K doubles of scratch.
template <typename A>
void row_box(const A* in, A* out, int64_t W, int64_t K, int64_t r, BoxBorder border, double* s) {
  for (int64_t k = 0; k < K; ++k) s[k] = 0.0;
  if (border == BoxBorder::Truncate) {
    const int64_t last = std::min(r, W - 1);
    for (int64_t x = 0; x <= last; ++x)
      for (int64_t k = 0; k < K; ++k) s[k] += static_cast<double>(in[x * K + k]);
  } else {
    for (int64_t d = -r; d <= r; ++d) {
      const A* q = in + reflect_index(d, W) * K;
      for (int64_t k = 0; k < K; ++k) s[k] += static_cast<double>(q[k]);
    }
  }
  for (int64_t x = 0; x < W; ++x) {
    A* o = out + x * K;
    for (int64_t k = 0; k < K; ++k) o[k] = static_cast<A>(s[k]);
    if (x + 1 == W) break;
    const int64_t add = x + r + 1, sub = x - r;
    if (border == BoxBorder::Truncate) {
      if (add < W) {
        const A* q = in + add * K;
        for (int64_t k = 0; k < K; ++k) s[k] += static_cast<double>(q[k]);
      }
      if (sub >= 0) {
        const A* q = in + sub * K;
        for (int64_t k = 0; k < K; ++k) s[k] -= static_cast<double>(q[k]);
      }
    } else {
      const A* qa = in + reflect_index(add, W) * K;
      const A* qs = in + reflect_index(sub, W) * K;
      for (int64_t k = 0; k < K; ++k) s[k] += static_cast<double>(qa[k]) - static_cast<double>(qs[k]);
    }
  }
}

// Vertical window sums of T (H rows of L = W*K values) over the flat range [j0, j1):
// emit(y, cs) receives cs[j - j0] = sum over the window around row y of T[.][j].
template <typename A, typename F>
void col_box(const A* T, int64_t H, int64_t L, int64_t j0, int64_t j1, int64_t r, BoxBorder border, double* cs,
             F&& emit) {
  const int64_t n = j1 - j0;
  for (int64_t j = 0; j < n; ++j) cs[j] = 0.0;
  auto add_row = [&](int64_t y, double sign) {
    const A* t = T + y * L + j0;
    for (int64_t j = 0; j < n; ++j) cs[j] += sign * static_cast<double>(t[j]);
  };
  if (border == BoxBorder::Truncate) {
    for (int64_t y = 0; y <= std::min(r, H - 1); ++y) add_row(y, 1.0);
  } else {
    for (int64_t d = -r; d <= r; ++d) add_row(reflect_index(d, H), 1.0);
  }
  for (int64_t y = 0; y < H; ++y) {
    emit(y, static_cast<const double*>(cs));
    if (y + 1 == H) break;
    const int64_t add = y + r + 1, sub = y - r;
    if (border == BoxBorder::Truncate) {
      if (add < H) add_row(add, 1.0);
      if (sub >= 0) add_row(sub, -1.0);
    } else {
      const A* ta = T + reflect_index(add, H) * L + j0;
      const A* ts = T + reflect_index(sub, H) * L + j0;
      for (int64_t j = 0; j < n; ++j) cs[j] += static_cast<double>(ta[j]) - static_cast<double>(ts[j]);
    }
  }
}

// The pixel range [x0, x1) of column chunk t of nt over W pixels.
inline void chunk(int64_t W, int t, int nt, int64_t& x0, int64_t& x1) {
  x0 = W * t / nt;
  x1 = W * (t + 1) / nt;
}

// The calling OpenMP thread's column chunk [x0, x1) of W pixels (all of them outside a
// parallel region or without OpenMP).
inline void thread_chunk(int64_t W, int64_t& x0, int64_t& x1) {
#ifdef _OPENMP
  chunk(W, omp_get_thread_num(), omp_get_num_threads(), x0, x1);
#else
  chunk(W, 0, 1, x0, x1);
#endif
}

template <typename T> inline T store_double(double v) { return from_float<T>(static_cast<float>(v)); }
template <> inline double store_double<double>(double v) { return v; }

}  // namespace box_detail
}  // namespace camfast
