// CPU kernels for camfast::thresholded_avg_pool2d (forward and backward).
//
// Two loop orders, chosen from the strides:
//  * planar         (NCHW-like: each (b, c) plane is one flat run of pixels): OpenMP over the
//                   B*C planes; pass 1 finds the plane's max (and whether it holds a NaN),
//                   pass 2 sums and counts the values above tau, reading the plane again
//                   from L1/L2 (a 7x7 or 28x28 plane is 0.2-3 KiB).
//  * channel-block  (channels-last and any other layout): OpenMP over (b, block of 64
//                   channels); both passes walk the pixels and, for each, the block's
//                   channels, contiguous for channels-last (vectorised); the block's
//                   H*W*64 values stay in cache between the two passes.
// The backward is one pass: dx = dy * [x > tau] / N with tau and N saved by the forward.
// Accumulation is in float (double for double inputs).
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>

#include "cpu/cpu_common.h"
#include "thresholded_avg_pool2d.h"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cpu_detail;

template <typename T> inline Acc<T> load(const T* p) { return static_cast<Acc<T>>(to_float(*p)); }

inline bool planar_view(const View4& v, int64_t C, int64_t H, int64_t W, int64_t* ps) {
  *ps = flat_pixel_stride(v, H, W);
  return *ps > 0 && (C == 1 || *ps <= std::abs(v.sc));
}

// tau from the max; NaN when the channel holds a NaN (then nothing is kept). `bad`: the
// channel pools to NaN (its max is not finite).
template <typename A> inline A threshold(A m, bool has_nan, A theta, bool* bad) {
  *bad = has_nan || !std::isfinite(m);
  return has_nan ? std::numeric_limits<A>::quiet_NaN() : theta * m;
}

template <typename A> inline A finish(A s, A n, bool bad) {
  return bad ? std::numeric_limits<A>::quiet_NaN() : s / n;
}

constexpr int64_t kCB = 64;

// f(j, xp[j * sc]) for the nc channels of a block at one pixel: a vectorised loop when they
// are contiguous (channels-last), a strided one otherwise. f writes only slot j of its arrays.
template <typename T, typename F> inline void for_block(const T* xp, int64_t nc, int64_t sc, F&& f) {
  if (sc == 1) {
#pragma omp simd
    for (int64_t j = 0; j < nc; ++j) f(j, load(xp + j));
  } else {
    for (int64_t j = 0; j < nc; ++j) f(j, load(xp + j * sc));
  }
}

// ----------------------------------------------------------------------------------
template <typename T>
void forward_impl(const TapProblem& p, const T* x, T* pooled, Acc<T>* tau, Acc<T>* count) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W;
  const A theta = static_cast<A>(p.theta);
  const A lowest = -std::numeric_limits<A>::infinity();
  int64_t ps;
  if (planar_view(p.x, C, H, W, &ps)) {
#pragma omp parallel for schedule(static)
    for (int64_t bc = 0; bc < B * C; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const T* xp = x + b * p.x.sb + c * p.x.sc;
      A m = lowest;
      int nan = 0;
      if (ps == 1) {
#pragma omp simd reduction(max : m) reduction(| : nan)
        for (int64_t i = 0; i < HW; ++i) {
          const A v = load(xp + i);
          m = v > m ? v : m;
          nan |= (v != v);
        }
      } else {
        for (int64_t i = 0; i < HW; ++i) {
          const A v = load(xp + i * ps);
          m = v > m ? v : m;
          nan |= (v != v);
        }
      }
      bool bad;
      const A t = threshold(m, nan != 0, theta, &bad);
      A s = 0, n = 0;
      if (ps == 1) {
#pragma omp simd reduction(+ : s, n)
        for (int64_t i = 0; i < HW; ++i) {
          const A v = load(xp + i);
          const bool k = v > t;
          // selects into locals first: GCC vectorises them only this way
          const A kv = k ? v : A(0), kn = k ? A(1) : A(0);
          s += kv;
          n += kn;
        }
      } else {
        for (int64_t i = 0; i < HW; ++i) {
          const A v = load(xp + i * ps);
          const bool k = v > t;
          // selects into locals first: GCC vectorises them only this way
          const A kv = k ? v : A(0), kn = k ? A(1) : A(0);
          s += kv;
          n += kn;
        }
      }
      n = std::max(n, A(1));
      tau[bc] = t;
      count[bc] = n;
      pooled[bc] = store_acc<T, A>(finish(s, n, bad));
    }
    return;
  }
  const int64_t nblk = (C + kCB - 1) / kCB;
  const int64_t sc = p.x.sc;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < B * nblk; ++task) {
    const int64_t b = task / nblk, c0 = (task % nblk) * kCB, nc = std::min(C, c0 + kCB) - c0;
    A m[kCB], s[kCB], n[kCB], t[kCB];
    int nan[kCB];
    for (int64_t j = 0; j < nc; ++j) { m[j] = lowest; nan[j] = 0; s[j] = 0; n[j] = 0; }
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for_block(x + p.x.at(b, c0, h, w), nc, sc, [&](int64_t j, A v) {
          m[j] = v > m[j] ? v : m[j];
          nan[j] |= (v != v);
        });
    bool bad[kCB];
    for (int64_t j = 0; j < nc; ++j) t[j] = threshold(m[j], nan[j] != 0, theta, &bad[j]);
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w)
        for_block(x + p.x.at(b, c0, h, w), nc, sc, [&](int64_t j, A v) {
          const bool k = v > t[j];
          const A kv = k ? v : A(0), kn = k ? A(1) : A(0);
          s[j] += kv;
          n[j] += kn;
        });
    for (int64_t j = 0; j < nc; ++j) {
      const int64_t bc = b * C + c0 + j;
      const A cnt = std::max(n[j], A(1));
      tau[bc] = t[j];
      count[bc] = cnt;
      pooled[bc] = store_acc<T, A>(finish(s[j], cnt, bad[j]));
    }
  }
  (void)HW;
}

// ----------------------------------------------------------------------------------
template <typename T>
void backward_impl(const TapProblem& p, const T* x, const Acc<T>* tau, const Acc<T>* count, const T* gout,
                   T* dx, const View4& vd) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W;
  int64_t psx, psd;
  const bool px = planar_view(p.x, C, H, W, &psx), pd = planar_view(vd, C, H, W, &psd);
  if (px && pd) {
#pragma omp parallel for schedule(static)
    for (int64_t bc = 0; bc < B * C; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const T* xp = x + b * p.x.sb + c * p.x.sc;
      T* dp = dx + b * vd.sb + c * vd.sc;
      const A t = tau[bc];
      const T g = store_acc<T, A>(load(gout + bc) / count[bc]);
      const T zero = store_acc<T, A>(A(0));
      if (psx == 1 && psd == 1) {
#pragma omp simd
        for (int64_t i = 0; i < HW; ++i) dp[i] = load(xp + i) > t ? g : zero;
      } else {
        for (int64_t i = 0; i < HW; ++i) dp[i * psd] = load(xp + i * psx) > t ? g : zero;
      }
    }
    return;
  }
  const int64_t nblk = (C + kCB - 1) / kCB;
  const int64_t sx = p.x.sc, sd = vd.sc;
#pragma omp parallel for schedule(static)
  for (int64_t task = 0; task < B * nblk; ++task) {
    const int64_t b = task / nblk, c0 = (task % nblk) * kCB, nc = std::min(C, c0 + kCB) - c0;
    A t[kCB];
    T g[kCB];
    const T zero = store_acc<T, A>(A(0));
    for (int64_t j = 0; j < nc; ++j) {
      const int64_t bc = b * C + c0 + j;
      t[j] = tau[bc];
      g[j] = store_acc<T, A>(load(gout + bc) / count[bc]);
    }
    for (int64_t h = 0; h < H; ++h)
      for (int64_t w = 0; w < W; ++w) {
        const T* xp = x + p.x.at(b, c0, h, w);
        T* dp = dx + vd.at(b, c0, h, w);
        if (sx == 1 && sd == 1) {
#pragma omp simd
          for (int64_t j = 0; j < nc; ++j) dp[j] = load(xp + j) > t[j] ? g[j] : zero;
        } else {
          for (int64_t j = 0; j < nc; ++j) dp[j * sd] = load(xp + j * sx) > t[j] ? g[j] : zero;
        }
      }
  }
}

template <typename T>
void forward_typed(const TapProblem& p, const void* x, void* pooled, void* tau, void* count) {
  forward_impl<T>(p, static_cast<const T*>(x), static_cast<T*>(pooled), static_cast<Acc<T>*>(tau),
                  static_cast<Acc<T>*>(count));
}

template <typename T>
void backward_typed(const TapProblem& p, const void* x, const void* tau, const void* count, const void* gout,
                    void* dx, const View4& vd) {
  backward_impl<T>(p, static_cast<const T*>(x), static_cast<const Acc<T>*>(tau),
                   static_cast<const Acc<T>*>(count), static_cast<const T*>(gout), static_cast<T*>(dx), vd);
}

}  // namespace

void thresholded_avg_pool2d_forward_cpu(DType dtype, const TapProblem& p, const void* x, void* pooled,
                                        void* tau, void* count) {
  with_dtype(dtype, [&](auto t) { forward_typed<CAMFAST_T(t)>(p, x, pooled, tau, count); });
}

void thresholded_avg_pool2d_backward_cpu(DType dtype, const TapProblem& p, const void* x, const void* tau,
                                         const void* count, const void* grad_out, void* grad_x, View4 dx) {
  with_dtype(dtype, [&](auto t) { backward_typed<CAMFAST_T(t)>(p, x, tau, count, grad_out, grad_x, dx); });
}

}  // namespace camfast
