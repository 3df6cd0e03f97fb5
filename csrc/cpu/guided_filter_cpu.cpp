// CPU kernel for camfast::guided_filter, guided_filter.h.
//
// One streaming pass per (image, row stripe), no image-sized buffer. Three stages, each
// consuming rows of the previous one in increasing order through a ring of R = 2r+2 rows:
//   A. a guide/src row -> its products P = (I, I I^T (upper triangle), p, I p) in a
//      zero/reflect-padded planar buffer [K][W + 2r] -> horizontal window sums -> ring A;
//   B. coefficient row j: vertical window sums over ring A (a sliding sum, double) -> the
//      means -> a, b (3x3 solve in closed form, double) -> padded planar buffer ->
//      horizontal window sums -> ring B;
//   C. output row y: vertical window sums over ring B -> q = mean(a)^T I + mean(b).
// Planar rows ([quantity][x]) make the product, vertical-sum, solve and output loops
// contiguous in x (vectorised); the horizontal running sums keep up to 8 quantities in
// flight at once (independent chains). Work items (image, stripe) go to OpenMP threads
// dynamically: a busy core delays one item, not a barrier of all threads. A stripe
// recomputes up to 2r rows above and below it, so images are split into stripes only
// when there are fewer images than threads.
#include <algorithm>
#include <vector>

#include "cpu/box_sum_cpu.h"
#include "cpu/cpu_common.h"
#include "guided_filter.h"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cpu_detail;
using namespace box_detail;

// Rows n values wide, produced in increasing order on demand, the last R of them kept.
template <typename A>
struct Ring {
  std::vector<A> buf;
  int64_t n = 0, R = 1, next = 0;
  void reset(int64_t n_, int64_t R_, int64_t first) {
    n = n_;
    R = R_;
    next = first;
    buf.resize(static_cast<size_t>(n * R));
  }
  template <typename F>
  const A* get(int64_t j, F&& produce) {
    while (next <= j) {
      produce(next, buf.data() + (next % R) * n);
      ++next;
    }
    return buf.data() + (j % R) * n;
  }
};

// Sliding vertical window sums (double) of n-wide rows fetched by get(j), for rows
// y0, y0+1, ... in order (any other jump re-initialises the window).
struct VSum {
  std::vector<double> s;
  int64_t n = 0, H = 0, r = 0, cur = -2;
  BoxBorder border = BoxBorder::Truncate;
  void reset(int64_t n_, int64_t H_, int64_t r_, BoxBorder b) {
    n = n_;
    H = H_;
    r = r_;
    border = b;
    cur = -2;
    s.assign(static_cast<size_t>(n), 0.0);
  }
  template <typename A, typename Get>
  void add(Get& get, int64_t j) {
    const A* t = get(j);
    double* sp = s.data();
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) sp[i] += static_cast<double>(t[i]);
  }
  template <typename A, typename Get>
  const double* at(int64_t y, Get&& get) {
    if (y != cur + 1) {
      std::fill(s.begin(), s.end(), 0.0);
      if (border == BoxBorder::Truncate) {
        for (int64_t j = std::max<int64_t>(0, y - r); j <= std::min(H - 1, y + r); ++j) add<A>(get, j);
      } else {
        for (int64_t d = -r; d <= r; ++d) add<A>(get, reflect_index(y + d, H));
      }
    } else {
      int64_t ja = y + r, js = y - 1 - r;
      if (border == BoxBorder::Reflect) {
        ja = reflect_index(ja, H);
        js = reflect_index(js, H);
      }
      const bool has_a = ja < H, has_s = js >= 0;
      const A* ta = has_a ? get(ja) : nullptr;  // fetch the newer row first (it may be produced)
      const A* ts = has_s ? get(js) : nullptr;
      double* sp = s.data();
      if (has_a && has_s) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) sp[i] += static_cast<double>(ta[i]) - static_cast<double>(ts[i]);
      } else if (has_a) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) sp[i] += static_cast<double>(ta[i]);
      } else if (has_s) {
#pragma omp simd
        for (int64_t i = 0; i < n; ++i) sp[i] -= static_cast<double>(ts[i]);
      }
    }
    cur = y;
    return s.data();
  }
};

// Fill the 2r-wide margins of a padded row (values at [r, r + W)): zeros or torch's reflect.
template <typename A>
void pad_margins(A* row, int64_t W, int64_t r, BoxBorder border) {
  if (border == BoxBorder::Truncate) {
    std::fill(row, row + r, A(0));
    std::fill(row + r + W, row + 2 * r + W, A(0));
  } else {
    for (int64_t i = 0; i < r; ++i) {
      row[i] = row[r + reflect_index(i - r, W)];
      row[r + W + i] = row[r + reflect_index(W + i, W)];
    }
  }
}

// N quantities at once: out[k*W + x] = sum_{d=-r..r} pad[k*P + x + r + d], P = W + 2r.
template <int N, typename A>
void hbox_group(const A* pad, A* out, int64_t W, int64_t r) {
  const int64_t P = W + 2 * r, win = 2 * r + 1;
  double s[N];
  for (int k = 0; k < N; ++k) {
    double acc = 0.0;
    for (int64_t i = 0; i < win; ++i) acc += static_cast<double>(pad[k * P + i]);
    s[k] = acc;
  }
  for (int64_t x = 0; x + 1 < W; ++x) {
    for (int k = 0; k < N; ++k) {
      out[k * W + x] = static_cast<A>(s[k]);
      s[k] += static_cast<double>(pad[k * P + x + win]) - static_cast<double>(pad[k * P + x]);
    }
  }
  for (int k = 0; k < N; ++k) out[k * W + W - 1] = static_cast<A>(s[k]);
}

template <typename A>
void hbox(const A* pad, A* out, int64_t K, int64_t W, int64_t r) {
  const int64_t P = W + 2 * r;
  for (int64_t k = 0; k < K;) {
    const int64_t n = std::min<int64_t>(8, K - k);
    const A* src = pad + k * P;
    A* dst = out + k * W;
    switch (n) {
      case 8: hbox_group<8>(src, dst, W, r); break;
      case 7: hbox_group<7>(src, dst, W, r); break;
      case 6: hbox_group<6>(src, dst, W, r); break;
      case 5: hbox_group<5>(src, dst, W, r); break;
      case 4: hbox_group<4>(src, dst, W, r); break;
      case 3: hbox_group<3>(src, dst, W, r); break;
      case 2: hbox_group<2>(src, dst, W, r); break;
      default: hbox_group<1>(src, dst, W, r); break;
    }
    k += n;
  }
}

// A variance rounded below zero is zero (NaN stays NaN).
inline double nonneg(double v) { return std::max(v, 0.0); }

// 1 for a measurable variance (v >= 1e-300), 0 for none (v <= 0), NaN for NaN: a factor of a,
// not a select, which GCC would not vectorise (under -ftrapping-math it keeps the division
// that only one arm needs behind a branch).
inline double measured(double v) { return std::min(std::max(v * 1e300, 0.0), 1.0); }

// One image row of a [B, C, H, W] view as double, contiguous, minus `shift`.
template <typename T>
void load_row(const T* base, View4 v, int64_t b, int64_t c, int64_t y, int64_t W, double* dst, double shift = 0.0) {
  const T* p = base + v.at(b, c, y, 0);
  if (v.sw == 1) {
    for (int64_t x = 0; x < W; ++x) dst[x] = static_cast<double>(to_float(p[x])) - shift;
  } else {
    for (int64_t x = 0; x < W; ++x) dst[x] = static_cast<double>(to_float(p[x * v.sw])) - shift;
  }
}

// Mean (double) of each guide channel of each image, [B * G]: the kernel filters with the
// centred guide I - mean. The filter is invariant to a constant shift of the guide (a is
// unchanged, b absorbs a^T shift), but in the accumulator type (float for float32) the
// products I I^T of a guide far from zero round to more than its local variance (guide
// 100 + U(0,1): I^2 ~ 1e4 rounds by ~5e-4 against var ~ 0.08), and the var = E[I^2] - E[I]^2
// cancellation then loses every digit.
template <typename T>
std::vector<double> guide_means(const GfProblem& p, const T* g, View4 sg) {
  const int64_t n = p.B * p.G, H = p.H, W = p.W;
  std::vector<double> mean(static_cast<size_t>(n));
#pragma omp parallel for schedule(static) if (n > 1 && H * W * n > (1 << 16))
  for (int64_t i = 0; i < n; ++i) {
    std::vector<double> row(static_cast<size_t>(W));
    double s = 0.0;
    for (int64_t y = 0; y < H; ++y) {
      load_row(g, sg, i / p.G, i % p.G, y, W, row.data());
      double sr = 0.0;
      for (int64_t x = 0; x < W; ++x) sr += row[x];
      s += sr;
    }
    mean[i] = s / static_cast<double>(H * W);
  }
  return mean;
}

template <int G, typename T>
void gf_stripe(const GfProblem& p, int64_t b, int64_t y0, int64_t y1, const T* g, View4 sg, const T* src, View4 ss,
               T* out, View4 so, const std::vector<double>& invh, const std::vector<double>& invw,
               const std::vector<double>& cnth, const std::vector<double>& cntw, const double* shift) {
  using A = Acc<T>;
  constexpr int64_t nII = G * (G + 1) / 2;
  const int64_t C = p.C, H = p.H, W = p.W;
  const int64_t r = p.border == BoxBorder::Truncate ? std::min(p.r, std::max(H, W)) : p.r;
  const int64_t K = G + nII + C + G * C;  // I | I I^T | p | I p
  const int64_t K2 = (G + 1) * C;         // a_c (G values), b_c per channel c
  const int64_t P = W + 2 * r;
  const int64_t R = std::min(2 * r + 2, H);
  const BoxBorder border = p.border;
  const double eps = p.eps;

  std::vector<double> rows(static_cast<size_t>((G + C) * W));
  std::vector<A> padA(static_cast<size_t>(K * P)), padB(static_cast<size_t>(K2 * P));
  std::vector<double> qrow(static_cast<size_t>(W));
  Ring<A> ringA, ringB;
  VSum vA, vB;
  const int64_t jB = std::max<int64_t>(0, y0 - r);
  ringB.reset(K2 * W, R, jB);
  ringA.reset(K * W, R, std::max<int64_t>(0, jB - r));
  vA.reset(K * W, H, r, border);
  vB.reset(K2 * W, H, r, border);

  // ---- A: products of image row j, horizontal sums
  auto produceA = [&](int64_t j, A* dst) {
    double* I = rows.data();
    double* pv = rows.data() + G * W;
    for (int64_t k = 0; k < G; ++k) load_row(g, sg, b, k, j, W, I + k * W, shift[k]);
    for (int64_t c = 0; c < C; ++c) load_row(src, ss, b, c, j, W, pv + c * W);
    if (p.adjoint) {
      for (int64_t c = 0; c < C; ++c)
        for (int64_t x = 0; x < W; ++x) pv[c * W + x] *= cnth[j] * cntw[x];
    }
    int64_t o = 0;
    auto plane = [&](int64_t q) { return padA.data() + q * P + r; };
    for (int64_t k = 0; k < G; ++k) {
      A* d = plane(o++);
      const double* a = I + k * W;
#pragma omp simd
      for (int64_t x = 0; x < W; ++x) d[x] = static_cast<A>(a[x]);
    }
    for (int64_t i = 0; i < G; ++i)
      for (int64_t k = i; k < G; ++k) {
        A* d = plane(o++);
        const double *a = I + i * W, *c2 = I + k * W;
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) d[x] = static_cast<A>(a[x] * c2[x]);
      }
    for (int64_t c = 0; c < C; ++c) {
      A* d = plane(o + c);
      const double* a = pv + c * W;
#pragma omp simd
      for (int64_t x = 0; x < W; ++x) d[x] = static_cast<A>(a[x]);
      for (int64_t k = 0; k < G; ++k) {
        A* e = plane(o + C + c * G + k);
        const double* ik = I + k * W;
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) e[x] = static_cast<A>(ik[x] * a[x]);
      }
    }
    for (int64_t q = 0; q < K; ++q) pad_margins(padA.data() + q * P, W, r, border);
    hbox(padA.data(), dst, K, W, r);
  };
  auto getA = [&](int64_t j) { return ringA.get(j, produceA); };

  // ---- B: coefficient row j from the vertical sums of ring A, horizontal sums
  auto produceB = [&](int64_t j, A* dst) {
    const double* m = vA.at<A>(j, getA);
    const double sy = invh[j];
    const double* mp = m + (G + nII) * W;
    const double* mIp = mp + C * W;
    if (G == 1) {
      const double *m0 = m, *m1 = m + W;
      for (int64_t c = 0; c < C; ++c) {
        const double *pc = mp + c * W, *ipc = mIp + c * W;
        A* oa = padB.data() + (2 * c) * P + r;
        A* ob = padB.data() + (2 * c + 1) * P + r;
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) {
          const double sc = sy * invw[x];
          const double mu = m0[x] * sc;
          const double var = m1[x] * sc - mu * mu;
          const double pm = pc[x] * sc;
          // no measurable variance (a constant window, eps as tiny as 1e-30): a = 0; NaN stays
          const double a = (ipc[x] * sc - mu * pm) / (nonneg(var) + eps) * measured(var);
          oa[x] = static_cast<A>(a);
          ob[x] = static_cast<A>(pm - a * mu);
        }
      }
    } else {
      const double *m0 = m, *m1 = m + W, *m2 = m + 2 * W;
      const double *q00 = m + 3 * W, *q01 = m + 4 * W, *q02 = m + 5 * W, *q11 = m + 6 * W, *q12 = m + 7 * W,
                   *q22 = m + 8 * W;
      for (int64_t c = 0; c < C; ++c) {
        const double *pc = mp + c * W, *ip0 = mIp + (3 * c) * W, *ip1 = ip0 + W, *ip2 = ip1 + W;
        A* o0 = padB.data() + (4 * c) * P + r;
        A* o1 = o0 + P;
        A* o2 = o1 + P;
        A* o3 = o2 + P;
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) {
          const double sc = sy * invw[x];
          const double mu0 = m0[x] * sc, mu1 = m1[x] * sc, mu2 = m2[x] * sc;
          // the variances (a diagonal rounded below zero is zero; NaN stays)
          const double v00 = nonneg(q00[x] * sc - mu0 * mu0), v11 = nonneg(q11[x] * sc - mu1 * mu1),
                       v22 = nonneg(q22[x] * sc - mu2 * mu2);
          const double t00 = v00 + eps, t01 = q01[x] * sc - mu0 * mu1, t02 = q02[x] * sc - mu0 * mu2,
                       t11 = v11 + eps, t12 = q12[x] * sc - mu1 * mu2, t22 = v22 + eps;
          const double keep = measured(v00 + v11 + v22);  // no measurable variance: a = 0
          // Sigma + eps Id scaled by 1 / trace (entries <= 1 in magnitude): its adjugate and
          // determinant cannot overflow for a huge eps or guide (eps = 1e300: no inf / inf)
          const double tr = t00 + t11 + t22;
          const double itr = 1.0 / tr;  // tr >= 3 eps > 0
          const double s00 = t00 * itr, s01 = t01 * itr, s02 = t02 * itr, s11 = t11 * itr, s12 = t12 * itr,
                       s22 = t22 * itr;
          // adjugate of the symmetric matrix, then its determinant
          const double c00 = s11 * s22 - s12 * s12, c01 = s02 * s12 - s01 * s22, c02 = s01 * s12 - s02 * s11;
          const double c11 = s00 * s22 - s02 * s02, c12 = s01 * s02 - s00 * s12, c22 = s00 * s11 - s01 * s01;
          const double idet = (1.0 / (s00 * c00 + s01 * c01 + s02 * c02)) * itr;
          const double pm = pc[x] * sc;
          const double v0 = ip0[x] * sc - mu0 * pm, v1 = ip1[x] * sc - mu1 * pm, v2 = ip2[x] * sc - mu2 * pm;
          const double a0 = (c00 * v0 + c01 * v1 + c02 * v2) * idet * keep;
          const double a1 = (c01 * v0 + c11 * v1 + c12 * v2) * idet * keep;
          const double a2 = (c02 * v0 + c12 * v1 + c22 * v2) * idet * keep;
          o0[x] = static_cast<A>(a0);
          o1[x] = static_cast<A>(a1);
          o2[x] = static_cast<A>(a2);
          o3[x] = static_cast<A>(pm - a0 * mu0 - a1 * mu1 - a2 * mu2);
        }
      }
    }
    for (int64_t q = 0; q < K2; ++q) pad_margins(padB.data() + q * P, W, r, border);
    hbox(padB.data(), dst, K2, W, r);
  };
  auto getB = [&](int64_t j) { return ringB.get(j, produceB); };

  // ---- C: output rows
  for (int64_t y = y0; y < y1; ++y) {
    const double* m = vB.at<A>(y, getB);
    const double sy = invh[y];
    if (p.coeffs_out) {
      // mean(b) for the guide as given: mean(b') - mean(a)^T shift (b' of the centred guide)
      for (int64_t q = 0; q < K2; ++q) {
        T* o = out + so.at(b, q, y, 0);
        const double* mq = m + q * W;
        const int64_t k = q % (G + 1);
        if (k < G) {
          for (int64_t x = 0; x < W; ++x) o[x * so.sw] = store_double<T>(mq[x] * sy * invw[x]);
        } else {
          const double* ma = mq - G * W;
          for (int64_t x = 0; x < W; ++x) {
            double v = mq[x];
            for (int64_t i = 0; i < G; ++i) v -= static_cast<double>(ma[i * W + x]) * shift[i];
            o[x * so.sw] = store_double<T>(v * sy * invw[x]);
          }
        }
      }
      continue;
    }
    double* I = rows.data();
    for (int64_t k = 0; k < G; ++k) load_row(g, sg, b, k, y, W, I + k * W, shift[k]);
    for (int64_t c = 0; c < C; ++c) {
      const double* mc = m + (G + 1) * c * W;
      double* q = qrow.data();
      if (G == 1) {
#pragma omp simd
        for (int64_t x = 0; x < W; ++x) q[x] = mc[x] * I[x] + mc[W + x];
      } else {
#pragma omp simd
        for (int64_t x = 0; x < W; ++x)
          q[x] = mc[x] * I[x] + mc[W + x] * I[W + x] + mc[2 * W + x] * I[2 * W + x] + mc[3 * W + x];
      }
      if (p.adjoint) {
        for (int64_t x = 0; x < W; ++x) q[x] /= cnth[y] * cntw[x];
      }
      T* o = out + so.at(b, c, y, 0);
      if (so.sw == 1) {
        for (int64_t x = 0; x < W; ++x) o[x] = store_double<T>(q[x] * sy * invw[x]);
      } else {
        for (int64_t x = 0; x < W; ++x) o[x * so.sw] = store_double<T>(q[x] * sy * invw[x]);
      }
    }
  }
}

template <typename T>
void gf_typed(const GfProblem& p, const T* g, View4 sg, const T* src, View4 ss, T* out, View4 so) {
  const int64_t H = p.H, W = p.W, r = p.r;
  const std::vector<double> invh = inv_counts(H, r, p.border);
  const std::vector<double> invw = inv_counts(W, r, p.border);
  const std::vector<double> cnth = inv_counts(H, r, BoxBorder::Truncate);  // adjoint scaling
  const std::vector<double> cntw = inv_counts(W, r, BoxBorder::Truncate);
  // stripes per image: enough work items for every thread, each stripe at least 4r rows
  // (it recomputes up to 2r rows on either side) and 16 rows high
  const int64_t nt = num_threads();
  int64_t S = p.B >= nt ? 1 : (nt + p.B - 1) / p.B;
  S = std::max<int64_t>(1, std::min(S, H / std::max<int64_t>(16, 4 * r)));
  const int64_t items = p.B * S;
  const std::vector<double> shift = guide_means(p, g, sg);
#pragma omp parallel for schedule(dynamic, 1) if (items > 1)
  for (int64_t it = 0; it < items; ++it) {
    const int64_t b = it / S, s = it % S;
    const int64_t y0 = H * s / S, y1 = H * (s + 1) / S;
    if (p.G == 1)
      gf_stripe<1, T>(p, b, y0, y1, g, sg, src, ss, out, so, invh, invw, cnth, cntw, shift.data() + b * p.G);
    else
      gf_stripe<3, T>(p, b, y0, y1, g, sg, src, ss, out, so, invh, invw, cnth, cntw, shift.data() + b * p.G);
  }
}

}  // namespace

void guided_filter_cpu(DType dtype, const GfProblem& p, const void* guide, View4 sg, const void* src, View4 ss,
                       void* out, View4 so) {
  with_dtype(dtype, [&](auto t) {
    using T = CAMFAST_T(t);
    gf_typed<T>(p, static_cast<const T*>(guide), sg, static_cast<const T*>(src), ss, static_cast<T*>(out), so);
  });
}

}  // namespace camfast
