// CPU kernel for camfast::guided_filter, guided_filter.h.
//
// Per image, four passes over buffers laid out row by row with the quantities of a pixel
// innermost (threads share rows in the horizontal passes and own column chunks in the
// vertical ones):
//   1. products P = (I, I I^T (upper triangle), p, I p) of every pixel, horizontal sums -> T
//   2. vertical sums of T; at each finished row the means give a, b (3x3 solve in closed
//      form, double) -> AB
//   3. horizontal sums of AB -> T (reused)
//   4. vertical sums; at each finished row q = mean(a)^T I + mean(b) is written out.
#include <vector>

#include "cpu/box_sum_cpu.h"
#include "cpu/cpu_common.h"
#include "guided_filter.h"

namespace camfast {
namespace {

using namespace cpu_detail;
using namespace box_detail;

template <typename T>
void gf_typed(const GfProblem& p, const T* g, View4 sg, const T* src, View4 ss, T* out, View4 so) {
  using A = Acc<T>;
  const int64_t G = p.G, C = p.C, H = p.H, W = p.W, r = p.r;
  const int64_t nII = G * (G + 1) / 2;
  const int64_t K = G + nII + C + G * C;  // I | I I^T | p | I p  (per pixel)
  const int64_t K2 = (G + 1) * C;         // a_c (G) , b_c  per channel
  const int64_t L = W * K, L2 = W * K2;
  const BoxBorder border = p.border;
  const std::vector<double> invh = inv_counts(H, r, border);
  const std::vector<double> invw = inv_counts(W, r, border);
  const std::vector<double> cnth = inv_counts(H, r, BoxBorder::Truncate);  // adjoint scaling
  const std::vector<double> cntw = inv_counts(W, r, BoxBorder::Truncate);
  const double eps = p.eps;
  std::vector<A> T_(static_cast<size_t>(H * L));
  std::vector<A> AB_(static_cast<size_t>(H * L2));
  A* Tb = T_.data();
  A* ABb = AB_.data();
#pragma omp parallel
  {
    std::vector<A> row(static_cast<size_t>(L));
    std::vector<double> s(static_cast<size_t>(K));
    int64_t x0, x1;
    thread_chunk(W, x0, x1);
    std::vector<double> cs(static_cast<size_t>((x1 - x0) * K));
    for (int64_t b = 0; b < p.B; ++b) {
      // ---- 1. products and their horizontal sums
#pragma omp for schedule(static)
      for (int64_t y = 0; y < H; ++y) {
        for (int64_t x = 0; x < W; ++x) {
          A* q = row.data() + x * K;
          double I[3];
          for (int64_t k = 0; k < G; ++k) I[k] = static_cast<double>(to_float(g[sg.at(b, k, y, x)]));
          const double pscale = p.adjoint ? cnth[y] * cntw[x] : 1.0;
          int64_t o = 0;
          for (int64_t k = 0; k < G; ++k) q[o++] = static_cast<A>(I[k]);
          for (int64_t i = 0; i < G; ++i)
            for (int64_t j = i; j < G; ++j) q[o++] = static_cast<A>(I[i] * I[j]);
          A* qp = q + o;
          A* qIp = qp + C;
          for (int64_t c = 0; c < C; ++c) {
            const double v = static_cast<double>(to_float(src[ss.at(b, c, y, x)])) * pscale;
            qp[c] = static_cast<A>(v);
            for (int64_t k = 0; k < G; ++k) qIp[c * G + k] = static_cast<A>(I[k] * v);
          }
        }
        row_box(row.data(), Tb + y * L, W, K, r, border, s.data());
      }
      // ---- 2. vertical sums -> means -> a, b
      if (x1 > x0) {
        col_box(Tb, H, L, x0 * K, x1 * K, r, border, cs.data(), [&](int64_t y, const double* sums) {
          for (int64_t x = x0; x < x1; ++x) {
            const double sc = invh[y] * invw[x];
            const double* m = sums + (x - x0) * K;
            A* ab = ABb + y * L2 + x * K2;
            const double* mp = m + G + nII;
            const double* mIp = mp + C;
            if (G == 1) {
              const double mu = m[0] * sc;
              const double var = m[1] * sc - mu * mu;
              const double inv = 1.0 / (var + eps);
              for (int64_t c = 0; c < C; ++c) {
                const double pm = mp[c] * sc;
                const double a = (mIp[c] * sc - mu * pm) * inv;
                ab[2 * c] = static_cast<A>(a);
                ab[2 * c + 1] = static_cast<A>(pm - a * mu);
              }
            } else {
              const double mu0 = m[0] * sc, mu1 = m[1] * sc, mu2 = m[2] * sc;
              const double s00 = m[3] * sc - mu0 * mu0 + eps, s01 = m[4] * sc - mu0 * mu1,
                           s02 = m[5] * sc - mu0 * mu2, s11 = m[6] * sc - mu1 * mu1 + eps,
                           s12 = m[7] * sc - mu1 * mu2, s22 = m[8] * sc - mu2 * mu2 + eps;
              // adjugate of the symmetric matrix, then its determinant
              const double c00 = s11 * s22 - s12 * s12, c01 = s02 * s12 - s01 * s22, c02 = s01 * s12 - s02 * s11;
              const double c11 = s00 * s22 - s02 * s02, c12 = s01 * s02 - s00 * s12, c22 = s00 * s11 - s01 * s01;
              const double idet = 1.0 / (s00 * c00 + s01 * c01 + s02 * c02);
              for (int64_t c = 0; c < C; ++c) {
                const double pm = mp[c] * sc;
                const double v0 = mIp[3 * c] * sc - mu0 * pm, v1 = mIp[3 * c + 1] * sc - mu1 * pm,
                             v2 = mIp[3 * c + 2] * sc - mu2 * pm;
                const double a0 = (c00 * v0 + c01 * v1 + c02 * v2) * idet;
                const double a1 = (c01 * v0 + c11 * v1 + c12 * v2) * idet;
                const double a2 = (c02 * v0 + c12 * v1 + c22 * v2) * idet;
                A* o = ab + 4 * c;
                o[0] = static_cast<A>(a0);
                o[1] = static_cast<A>(a1);
                o[2] = static_cast<A>(a2);
                o[3] = static_cast<A>(pm - a0 * mu0 - a1 * mu1 - a2 * mu2);
              }
            }
          }
        });
      }
#pragma omp barrier
      // ---- 3. horizontal sums of a, b (T is free again)
#pragma omp for schedule(static)
      for (int64_t y = 0; y < H; ++y) row_box(ABb + y * L2, Tb + y * L2, W, K2, r, border, s.data());
      // ---- 4. vertical sums -> q
      if (x1 > x0) {
        col_box(Tb, H, L2, x0 * K2, x1 * K2, r, border, cs.data(), [&](int64_t y, const double* sums) {
          for (int64_t x = x0; x < x1; ++x) {
            const double sc = invh[y] * invw[x];
            const double* m = sums + (x - x0) * K2;
            if (p.coeffs_out) {
              for (int64_t j = 0; j < K2; ++j) out[so.at(b, j, y, x)] = store_double<T>(m[j] * sc);
              continue;
            }
            double I[3];
            for (int64_t k = 0; k < G; ++k) I[k] = static_cast<double>(to_float(g[sg.at(b, k, y, x)]));
            const double oscale = p.adjoint ? 1.0 / (cnth[y] * cntw[x]) : 1.0;
            for (int64_t c = 0; c < C; ++c) {
              const double* mc = m + (G + 1) * c;
              double q = mc[G];
              for (int64_t k = 0; k < G; ++k) q += mc[k] * I[k];
              out[so.at(b, c, y, x)] = store_double<T>(q * sc * oscale);
            }
          }
        });
      }
#pragma omp barrier
    }
  }
}

}  // namespace

void guided_filter_cpu(DType dtype, const GfProblem& p, const void* guide, View4 sg, const void* src, View4 ss,
                       void* out, View4 so) {
  switch (dtype) {
    case DType::Float32:
      return gf_typed<float>(p, static_cast<const float*>(guide), sg, static_cast<const float*>(src), ss,
                             static_cast<float*>(out), so);
    case DType::Float64:
      return gf_typed<double>(p, static_cast<const double*>(guide), sg, static_cast<const double*>(src), ss,
                              static_cast<double*>(out), so);
    case DType::Float16:
      return gf_typed<half_t>(p, static_cast<const half_t*>(guide), sg, static_cast<const half_t*>(src), ss,
                              static_cast<half_t*>(out), so);
    case DType::BFloat16:
      return gf_typed<bf16_t>(p, static_cast<const bf16_t*>(guide), sg, static_cast<const bf16_t*>(src), ss,
                              static_cast<bf16_t*>(out), so);
  }
  require(false, "camfast._C: unknown dtype");
}

}  // namespace camfast
