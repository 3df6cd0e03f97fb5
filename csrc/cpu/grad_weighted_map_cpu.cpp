// CPU kernels for camfast::grad_weighted_map (forward and backward).
//
// Two loop orders, chosen from the strides:
//  * planar      (NCHW-like: each (b, c) plane is a flat run of pixels): threads own
//                (batch, pixel tile) pairs and stream through the channels, accumulating
//                into a small float tile that stays in L1. One pass over A and G.
//  * pixel-major (channels-last and any other layout): threads own pixels and reduce
//                over the channel axis (contiguous for channels-last).
// The modes with one weight per channel (gradcam, gradcampp, xgradcam) first reduce each
// (b, c) plane to a few channel constants (channel_consts: one pass over A and G, by planes or
// by channel blocks), then make the map in one pass over A; their backward reduces the same
// constants with T = sum gm A and writes dA, dG in one more pass.
// Accumulation is in float (double for double inputs); outputs are rounded once.
#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#define CAMFAST_STREAM_STORES 1
#endif
#include <type_traits>
#include <utility>

#include "grad_weighted_map.h"
#include "cpu/cpu_common.h"

namespace camfast {
namespace {

using namespace cpu_detail;

// ReLU that propagates NaN, like torch.relu (NaN < 0 is false), as a plain blend that vectorises.
template <typename A> inline A relu(A x) { return x < A(0) ? A(0) : x; }

template <GwmMode M, typename A> inline A weight_of(A g) {
  if constexpr (M == GwmMode::LayerCAM) return relu(g);
  return g;
}
// d weight / d g (ReLU's derivative at 0 is 0, as in torch).
template <GwmMode M, typename A> inline A dweight_of(A g) {
  if constexpr (M == GwmMode::LayerCAM) return g > A(0) ? A(1) : A(0);
  (void)g;
  return A(1);
}

// Large outputs are fresh, untouched allocations (torch.empty_like): first-touch page faults
// on 4 KiB pages cost as much as the kernel itself (about 20 ms per 100 MB here). Asking for
// transparent huge pages before the first write cuts that by about 3x. Advisory only: it
// changes no data, and a region that is already backed is left as it is.
inline void advise_huge_pages(void* ptr, const View4& v, int64_t B, int64_t C, int64_t H, int64_t W,
                              int64_t elem) {
#if defined(__linux__) && defined(MADV_HUGEPAGE)
  const int64_t span = (1 + (B - 1) * v.sb + (C - 1) * v.sc + (H - 1) * v.sh + (W - 1) * v.sw) * elem;
  constexpr uintptr_t kHuge = uintptr_t(1) << 21;
  if (span < int64_t(4 * kHuge)) return;
  const uintptr_t begin = (reinterpret_cast<uintptr_t>(ptr) + kHuge - 1) & ~(kHuge - 1);
  const uintptr_t end = (reinterpret_cast<uintptr_t>(ptr) + static_cast<uintptr_t>(span)) & ~(kHuge - 1);
  if (end > begin) madvise(reinterpret_cast<void*>(begin), end - begin, MADV_HUGEPAGE);
#else
  (void)ptr; (void)v; (void)B; (void)C; (void)H; (void)W; (void)elem;
#endif
}

constexpr int64_t kMaxTile = 2048;

// Split H*W pixels of B images into tiles so that both threads have work even for B=1.
inline int64_t tile_size(int64_t B, int64_t HW) {
  const int64_t threads = num_threads();
  int64_t tiles_per_image = std::max<int64_t>((HW + kMaxTile - 1) / kMaxTile, (threads + B - 1) / B);
  tiles_per_image = std::min<int64_t>(tiles_per_image, std::max<int64_t>(HW / 64, 1));
  int64_t t = (HW + tiles_per_image - 1) / tiles_per_image;
  t = (t + 15) / 16 * 16;
  return std::min(std::max<int64_t>(t, 1), kMaxTile);
}


// ----------------------------------------------------------------------------------
// Channel statistics of the modes with one weight per (b, c) channel, M = ReLU(sum_c w_c A_c):
// sums over each (b, c) plane in at most two passes. Pass 1 reads A (and G, and in the
// backward gm = dM * [M > 0]); pass 2 (Grad-CAM++ only) reads G once pass 1's sum of A is
// known. finish() turns the sums into the per-channel constants the map and the backward use
// (kGwmWorkspace of them), with S = sum A, T = sum gm A (backward) and r = ReLU(G) * a(G, S):
//   GradCAM  : w = mean G,              c1 = T / HW (dG at every pixel)
//   XGradCAM : w = sum(G A) / (S + eps), c1 = k = T / (S + eps)
//   GradCAMpp: w = sum r,               c1 = -T * sum r^2, c2 = T, c3 = S
template <GwmMode M>
constexpr bool kPerChannel = M == GwmMode::GradCAM || M == GwmMode::XGradCAM || M == GwmMode::GradCAMpp;

template <typename A, typename T> inline A widen(T x) { return static_cast<A>(to_float(x)); }

// v where keep, else +0, by a bit mask. GCC moves a division whose result only one arm of a
// plain `keep ? v : 0` uses into that arm, and a loop with a conditional division does not
// vectorise (a 15x slower Grad-CAM++ pass); with the mask v is computed on every lane.
template <typename A> inline A keep_or_zero(bool keep, A v) {
  using U = std::conditional_t<sizeof(A) == 4, uint32_t, uint64_t>;
  U u;
  std::memcpy(&u, &v, sizeof u);
  u &= U(0) - U(keep);
  std::memcpy(&v, &u, sizeof u);
  return v;
}

// Grad-CAM++ at one pixel: D = 2 G^2 + S G^3 + eps, a = G^2 / D (0 where G == 0),
// r = ReLU(G) * a, dr/dG = [G > 0] * a * (2 G^2 + 3 eps) / D.
template <typename A> inline A gpp_denominator(A g, A s) {
  const A g2 = g * g;
  return A(2) * g2 + s * (g2 * g) + static_cast<A>(kGwmGradCamPPEps);
}
template <typename A> inline A gpp_alpha(A g, A d) { return keep_or_zero(g != A(0), g * g / d); }
template <typename A> inline A gpp_dr(A g, A s) {
  const A d = gpp_denominator(g, s);
  return keep_or_zero(g > A(0), gpp_alpha(g, d) * (A(2) * g * g + static_cast<A>(3 * kGwmGradCamPPEps)) / d);
}

template <typename A> struct Sums3 { A s0 = 0, s1 = 0, s2 = 0; };
template <typename A> struct ChannelConsts { A w, c1, c2, c3; };

// Pass 1 at one pixel: {GradCAM ? G : A, G A (XGradCAM), gm A (backward)}. The loads are
// callables, so a mode reads only what it needs (forward: no dM, no M).
template <GwmMode M, bool Bwd, typename A, typename LA, typename LG, typename LM>
inline Sums3<A> pass1_terms(LA la, LG lg, LM lm) {
  Sums3<A> t;
  if constexpr (M == GwmMode::GradCAM) t.s0 = lg(); else t.s0 = la();
  if constexpr (M == GwmMode::XGradCAM) t.s1 = lg() * t.s0;
  if constexpr (Bwd) t.s2 = lm() * la();
  return t;
}
// Pass 2 (Grad-CAM++) at one pixel, s the channel's sum of A: {r, r^2 (backward)}.
template <bool Bwd, typename A> inline Sums3<A> pass2_terms(A g, A s) {
  Sums3<A> t;
  t.s0 = relu(g) * gpp_alpha(g, gpp_denominator(g, s));
  if constexpr (Bwd) t.s1 = t.s0 * t.s0;
  return t;
}

// The type the channel sums of mode M accumulate in: double for XGrad-CAM, which divides by S,
// and Grad-CAM++, which multiplies G^3 by it: where S cancels (a channel of mixed signs) its
// rounding error is amplified, and float sums fall behind torch's cascade sums
// (tests/methods/test_registry.py); Grad-CAM's mean keeps the accumulator type.
template <GwmMode M, typename A> using SumOf = std::conditional_t<M == GwmMode::GradCAM, A, double>;

template <GwmMode M, typename A, typename Sum = SumOf<M, A>>
inline ChannelConsts<A> finish(const Sums3<Sum>& p1, const Sums3<Sum>& p2, int64_t HW) {
  if constexpr (M == GwmMode::GradCAM) {
    const Sum inv = Sum(1) / static_cast<Sum>(HW);
    return {static_cast<A>(p1.s0 * inv), static_cast<A>(p1.s2 * inv), A(0), A(0)};
  } else if constexpr (M == GwmMode::XGradCAM) {
    const Sum den = p1.s0 + kGwmXGradCamEps;
    return {static_cast<A>(p1.s1 / den), static_cast<A>(p1.s2 / den), A(0), A(0)};
  } else {
    (void)HW;
    return {static_cast<A>(p2.s0), static_cast<A>(-(p1.s2 * p2.s1)), static_cast<A>(p1.s2), static_cast<A>(p1.s0)};
  }
}

template <typename A> inline void store_consts(A* ws, int64_t BC, int64_t bc, const ChannelConsts<A>& k) {
  ws[bc] = k.w;
  ws[BC + bc] = k.c1;
  ws[2 * BC + bc] = k.c2;
  ws[3 * BC + bc] = k.c3;
}
template <typename A> inline ChannelConsts<A> load_consts(const A* ws, int64_t BC, int64_t bc) {
  return {ws[bc], ws[BC + bc], ws[2 * BC + bc], ws[3 * BC + bc]};
}

// The channel sums run over blocks of kSumBlock pixels, then add the block sums: the rounding
// error grows with the block length and the number of blocks, not with the plane's size (the
// backward's T = sum gm A cancels, and Grad-CAM++ and XGrad-CAM multiply dG by it).
constexpr int64_t kSumBlock = 32;

template <typename Sum> inline void add_to(Sums3<Sum>& total, Sum x0, Sum x1, Sum x2) {
  total.s0 += x0, total.s1 += x1, total.s2 += x2;
}

// sum over the n pixels i of one plane, at offsets o = i * ps, of f(i, o) -> Sums3 (vectorised
// when ps == 1).
template <typename Sum, typename F> inline Sums3<Sum> plane_sums(int64_t n, int64_t ps, F f) {
  Sums3<Sum> total;
  for (int64_t i0 = 0; i0 < n; i0 += kSumBlock) {
    const int64_t i1 = std::min(n, i0 + kSumBlock);
    Sum x0 = 0, x1 = 0, x2 = 0;
    if (ps == 1) {
#pragma omp simd reduction(+ : x0, x1, x2)
      for (int64_t i = i0; i < i1; ++i) {
        const auto t = f(i, i);
        x0 += t.s0, x1 += t.s1, x2 += t.s2;
      }
    } else {
      for (int64_t i = i0; i < i1; ++i) {
        const auto t = f(i, i * ps);
        x0 += t.s0, x1 += t.s1, x2 += t.s2;
      }
    }
    add_to(total, x0, x1, x2);
  }
  return total;
}

// f(i, o) for the n pixels i of one plane, at offsets o = i * ps (vectorised when ps == 1).
template <typename F> inline void plane_for(int64_t n, int64_t ps, F f) {
  if (ps == 1) {
#pragma omp simd
    for (int64_t i = 0; i < n; ++i) f(i, i);
  } else {
    for (int64_t i = 0; i < n; ++i) f(i, i * ps);
  }
}

// gm = dM * [M > 0] at pixel i of dM and M.
template <typename T, typename A> inline A masked_grad(const T* gout, const T* out, int64_t i) {
  // Both loads unconditional, so the select vectorises.
  const A o = static_cast<A>(to_float(out[i]));
  const A go = static_cast<A>(to_float(gout[i]));
  return o > A(0) ? go : A(0);
}

// The constants of one (b, c) plane of n pixels at pixel stride ps: ap, gp at its first
// pixel, go and ov the image's dM and M (read by the backward only).
template <typename T, GwmMode M, bool Bwd>
ChannelConsts<Acc<T>> plane_consts(const T* ap, const T* gp, const T* go, const T* ov, int64_t n, int64_t ps) {
  using A = Acc<T>;
  using Sum = SumOf<M, A>;
  // Grad-CAM++ reads the G plane only after the A plane: ask for it now, so that both stream
  // from memory at once, as in XGrad-CAM's single pass (1.35x faster on a 51 MB input here).
  if constexpr (M == GwmMode::GradCAMpp)
    for (int64_t i = 0; i < n; i += 64 / int64_t(sizeof(T))) __builtin_prefetch(gp + i * ps);
  const Sums3<Sum> p1 = plane_sums<Sum>(n, ps, [&](int64_t i, int64_t o) {
    return pass1_terms<M, Bwd, A>([&] { return widen<A>(ap[o]); }, [&] { return widen<A>(gp[o]); },
                                  [&] { return masked_grad<T, A>(go, ov, i); });
  });
  Sums3<Sum> p2;
  if constexpr (M == GwmMode::GradCAMpp) {
    const A sa = static_cast<A>(p1.s0);
    p2 = plane_sums<Sum>(n, ps, [&](int64_t, int64_t o) { return pass2_terms<Bwd>(widen<A>(gp[o]), sa); });
  }
  return finish<M, A>(p1, p2, n);
}

// The same by blocks of channels (any strides: channels-last and other pixel-major layouts):
// each task owns a block of channels of one image and walks all its pixels once per pass.
template <typename T, GwmMode M, bool Bwd>
void block_consts(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout, Acc<T>* ws) {
  using A = Acc<T>;
  constexpr int64_t kCB = 64;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W, nblk = (C + kCB - 1) / kCB;
  const int64_t sca = p.a.sc, scg = p.g.sc;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < B * nblk; ++t) {
    const int64_t b = t / nblk, c0 = (t % nblk) * kCB, n = std::min(C, c0 + kCB) - c0;
    using Sum = SumOf<M, A>;
    Sums3<Sum> s1[kCB], s2[kCB];
    // one pass: per block of kSumBlock pixels, x[k][c] += term(q, c) over its pixels, then the
    // block's sums into tot[c]
    const auto pass = [&](Sums3<Sum>* tot, auto term) {
      for (int64_t q0 = 0; q0 < HW; q0 += kSumBlock) {
        Sum x[3][kCB] = {};
        for (int64_t q = q0; q < std::min(HW, q0 + kSumBlock); ++q)
          for (int64_t c = 0; c < n; ++c) {
            const Sums3<A> v = term(q, c);
            x[0][c] += v.s0, x[1][c] += v.s1, x[2][c] += v.s2;
          }
        for (int64_t c = 0; c < n; ++c) add_to(tot[c], x[0][c], x[1][c], x[2][c]);
      }
    };
    pass(s1, [&](int64_t q, int64_t c) {
      const T* ap = a + p.a.at(b, c0, q / W, q % W);
      const T* gp = g + p.g.at(b, c0, q / W, q % W);
      return pass1_terms<M, Bwd, A>([&] { return widen<A>(ap[c * sca]); }, [&] { return widen<A>(gp[c * scg]); },
                                    [&] { return masked_grad<T, A>(gout, out, b * HW + q); });
    });
    if constexpr (M == GwmMode::GradCAMpp)
      pass(s2, [&](int64_t q, int64_t c) {
        return pass2_terms<Bwd>(widen<A>(g[p.g.at(b, c0, q / W, q % W) + c * scg]), static_cast<A>(s1[c].s0));
      });
    for (int64_t c = 0; c < n; ++c) store_consts(ws, B * C, b * C + c0 + c, finish<M, A>(s1[c], s2[c], HW));
  }
}

// The per-channel constants of mode M into ws (kGwmWorkspace arrays of B*C accumulators):
// plane by plane when the planes M reads are flat runs of pixel stride ps (planar), else by
// channel blocks. out and gout are read by the backward (Bwd) only.
template <typename T, GwmMode M, bool Bwd>
void channel_consts(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout, Acc<T>* ws,
                    bool planar, int64_t ps) {
  if (!planar) return block_consts<T, M, Bwd>(p, a, g, out, gout, ws);
  const int64_t C = p.C, HW = p.H * p.W;
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < p.B * C; ++bc) {
    const int64_t b = bc / C, c = bc % C, m = Bwd ? b * HW : 0;  // no offset on the forward's null dM, M
    store_consts(ws, p.B * C, bc,
                 plane_consts<T, M, Bwd>(a + b * p.a.sb + c * p.a.sc, g + b * p.g.sb + c * p.g.sc, gout + m, out + m,
                                         HW, ps));
  }
}

// ----------------------------------------------------------------------------------
// Forward.
template <typename T, GwmMode M>
void forward_impl(const GwmProblem& p, const T* a, const T* g, T* out, Acc<T>* ws) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W;
  const int64_t psa = flat_pixel_stride(p.a, H, W), psg = flat_pixel_stride(p.g, H, W);
  const bool planar = psa > 0 && psg > 0 && psa == psg &&
                      (C == 1 || psa <= std::min(std::abs(p.a.sc), std::abs(p.g.sc)));
  const A* w = ws;
  if constexpr (kPerChannel<M>) channel_consts<T, M, false>(p, a, g, nullptr, nullptr, ws, planar, psg);

  if (planar) {
    const int64_t ps = psa, tile = tile_size(B, HW), ntiles = (HW + tile - 1) / tile;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < B * ntiles; ++t) {
      const int64_t b = t / ntiles, p0 = (t % ntiles) * tile, n = std::min(tile, HW - p0);
      A acc[kMaxTile];
      std::fill(acc, acc + n, A(0));
      for (int64_t c = 0; c < C; ++c) {
        const T* __restrict ap = a + b * p.a.sb + c * p.a.sc + p0 * ps;
        if constexpr (kPerChannel<M>) {
          const A wc = w[b * C + c];
          if (ps == 1) {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) acc[i] += wc * static_cast<A>(to_float(ap[i]));
          } else {
            for (int64_t i = 0; i < n; ++i) acc[i] += wc * static_cast<A>(to_float(ap[i * ps]));
          }
        } else {
          const T* __restrict gp = g + b * p.g.sb + c * p.g.sc + p0 * ps;
          if (ps == 1) {
#pragma omp simd
            for (int64_t i = 0; i < n; ++i) {
              const A wv = weight_of<M>(static_cast<A>(to_float(gp[i])));
              acc[i] += wv * static_cast<A>(to_float(ap[i]));
            }
          } else {
            for (int64_t i = 0; i < n; ++i)
              acc[i] += weight_of<M>(static_cast<A>(to_float(gp[i * ps]))) *
                        static_cast<A>(to_float(ap[i * ps]));
          }
        }
      }
      T* op = out + b * HW + p0;
      for (int64_t i = 0; i < n; ++i) op[i] = store_acc<T, A>(relu(acc[i]));
    }
    return;
  }

  // pixel-major
  const int64_t sca = p.a.sc, scg = p.g.sc;
#pragma omp parallel for schedule(static)
  for (int64_t bp = 0; bp < B * HW; ++bp) {
    const int64_t b = bp / HW, h = (bp % HW) / W, x = bp % W;
    const T* __restrict ap = a + p.a.at(b, 0, h, x);
    A s = 0;
    if constexpr (kPerChannel<M>) {
      const A* wb = w + b * C;
      if (sca == 1) {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) s += wb[c] * static_cast<A>(to_float(ap[c]));
      } else {
        for (int64_t c = 0; c < C; ++c) s += wb[c] * static_cast<A>(to_float(ap[c * sca]));
      }
    } else {
      const T* __restrict gp = g + p.g.at(b, 0, h, x);
      if (sca == 1 && scg == 1) {
#pragma omp simd reduction(+ : s)
        for (int64_t c = 0; c < C; ++c) {
          const A wv = weight_of<M>(static_cast<A>(to_float(gp[c])));
          s += wv * static_cast<A>(to_float(ap[c]));
        }
      } else {
        for (int64_t c = 0; c < C; ++c)
          s += weight_of<M>(static_cast<A>(to_float(gp[c * scg]))) * static_cast<A>(to_float(ap[c * sca]));
      }
    }
    out[bp] = store_acc<T, A>(relu(s));
  }
}

// ----------------------------------------------------------------------------------
// Backward. gm = dM * [M > 0] is recomputed from the saved output wherever needed.

#ifdef CAMFAST_STREAM_STORES
// Outputs at least this large bypass the cache (streaming stores): they are written once
// and are too big to be read back from cache, and streaming skips the read-for-ownership.
constexpr int64_t kStreamBytes = int64_t(16) << 20;

// dA = gm * f(G), dG = gm * A * f'(G) over one contiguous float run, with the same
// arithmetic (and so the same bits) as the scalar loop.
template <GwmMode M>
inline void backward_run_streaming(const float* gm, const float* ap, const float* gp, float* dap, float* dgp,
                                   int64_t n) {
  int64_t i = 0;
  auto scalar = [&](int64_t k) {
    const float gv = gp[k], av = ap[k];
    const float wv = weight_of<M>(gv), dwv = dweight_of<M>(gv);
    dap[k] = gm[k] * wv;
    dgp[k] = gm[k] * av * dwv;
  };
  const auto mis = [](const float* q) { return reinterpret_cast<uintptr_t>(q) & 15u; };
  if (mis(dap) == mis(dgp) && (mis(dap) & 3u) == 0) {
    for (; i < n && mis(dap + i) != 0; ++i) scalar(i);
    const __m128 zero = _mm_setzero_ps(), one = _mm_set1_ps(1.0f);
    for (; i + 4 <= n; i += 4) {
      const __m128 g4 = _mm_loadu_ps(gp + i), a4 = _mm_loadu_ps(ap + i), m4 = _mm_loadu_ps(gm + i);
      __m128 w4 = g4, d4 = one;
      if constexpr (M == GwmMode::LayerCAM) {
        w4 = _mm_max_ps(zero, g4);  // returns g4 when it is NaN: NaN propagates, as in relu()
        d4 = _mm_and_ps(_mm_cmpgt_ps(g4, zero), one);
      }
      _mm_stream_ps(dap + i, _mm_mul_ps(m4, w4));
      _mm_stream_ps(dgp + i, _mm_mul_ps(_mm_mul_ps(m4, a4), d4));
    }
  }
  for (; i < n; ++i) scalar(i);
}
#endif

#ifdef CAMFAST_STREAM_STORES
// Grad-CAM backward on one contiguous float (b, c) plane with streaming stores:
// dA = gm * w, returns dw = sum(gm * A) / HW and fills dG with it.
inline float gradcam_plane_streaming(const float* go, const float* ov, const float* ap, float* dap, float* dgp,
                                     float w, int64_t n, float inv) {
  float s = 0.0f;
  int64_t i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dap + i) & 15u) != 0; ++i) {
    const float gm = ov[i] > 0.0f ? go[i] : 0.0f;
    s += gm * ap[i];
    dap[i] = gm * w;
  }
  const __m128 zero = _mm_setzero_ps(), w4 = _mm_set1_ps(w);
  __m128 s4 = zero;
  for (; i + 4 <= n; i += 4) {
    const __m128 gm4 = _mm_and_ps(_mm_cmpgt_ps(_mm_loadu_ps(ov + i), zero), _mm_loadu_ps(go + i));
    s4 = _mm_add_ps(s4, _mm_mul_ps(gm4, _mm_loadu_ps(ap + i)));
    _mm_stream_ps(dap + i, _mm_mul_ps(gm4, w4));
  }
  for (; i < n; ++i) {
    const float gm = ov[i] > 0.0f ? go[i] : 0.0f;
    s += gm * ap[i];
    dap[i] = gm * w;
  }
  alignas(16) float lanes[4];
  _mm_store_ps(lanes, s4);
  const float dw = (s + ((lanes[0] + lanes[1]) + (lanes[2] + lanes[3]))) * inv;
  i = 0;
  for (; i < n && (reinterpret_cast<uintptr_t>(dgp + i) & 15u) != 0; ++i) dgp[i] = dw;
  const __m128 d4 = _mm_set1_ps(dw);
  for (; i + 4 <= n; i += 4) _mm_stream_ps(dgp + i, d4);
  for (; i < n; ++i) dgp[i] = dw;
  return dw;
}
#endif

// The one flat pixel stride of A, G, dA and dG when every (b, c) plane of all four is a run of
// pixels at that stride (planar), else -1.
inline int64_t common_pixel_stride(const GwmProblem& p, const View4& vda, const View4& vdg) {
  const int64_t H = p.H, W = p.W, ps = flat_pixel_stride(p.a, H, W);
  const bool planar = ps > 0 && ps == flat_pixel_stride(p.g, H, W) && ps == flat_pixel_stride(vda, H, W) &&
                      ps == flat_pixel_stride(vdg, H, W) &&
                      (p.C == 1 || ps <= std::min({std::abs(p.a.sc), std::abs(p.g.sc), std::abs(vda.sc),
                                                   std::abs(vdg.sc)}));
  return planar ? ps : -1;
}

// (dA, dG) at one pixel of one channel, gm = dM * [M > 0] there; k the channel's constants
// (finish() above) for the per-channel modes:
//   Zoom, LayerCAM: dA = gm f(G),          dG = gm A f'(G)
//   GradCAM       : dA = gm w,             dG = c1
//   XGradCAM      : dA = gm w + k (G - w), dG = k A
//   GradCAMpp     : dA = gm w + c1,        dG = T dr/dG(G, S)
template <GwmMode M, typename A> inline std::pair<A, A> pixel_grads(A gm, A av, A gv, const ChannelConsts<A>& k) {
  if constexpr (!kPerChannel<M>) {
    (void)k;
    const A wv = weight_of<M>(gv), dwv = dweight_of<M>(gv);  // locals first: GCC if-converts only so
    return {gm * wv, gm * av * dwv};
  } else if constexpr (M == GwmMode::GradCAM) {
    (void)av, (void)gv;
    return {gm * k.w, k.c1};
  } else if constexpr (M == GwmMode::XGradCAM) {
    return {gm * k.w + k.c1 * (gv - k.w), k.c1 * av};
  } else {
    (void)av;
    return {gm * k.w + k.c1, k.c2 * gpp_dr(gv, k.c3)};
  }
}

// The backward pixel by pixel (any strides: channels-last and other pixel-major layouts), each
// pixel writing dA and dG of every channel; the per-channel modes first make their constants
// into ws by channel blocks.
template <typename T, GwmMode M>
void backward_by_pixels(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout, T* da,
                        const View4& vda, T* dg, const View4& vdg, Acc<T>* ws) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, W = p.W, HW = p.H * W;
  if constexpr (kPerChannel<M>) block_consts<T, M, true>(p, a, g, out, gout, ws);
#pragma omp parallel for schedule(static)
  for (int64_t bp = 0; bp < B * HW; ++bp) {
    const int64_t b = bp / HW, h = (bp % HW) / W, x = bp % W;
    const A gmv = masked_grad<T, A>(gout, out, bp);
    const T* ap = a + p.a.at(b, 0, h, x);
    const T* gp = g + p.g.at(b, 0, h, x);
    T* dap = da + vda.at(b, 0, h, x);
    T* dgp = dg + vdg.at(b, 0, h, x);
    for (int64_t c = 0; c < C; ++c) {
      ChannelConsts<A> k{};
      if constexpr (kPerChannel<M>) k = load_consts(ws, B * C, b * C + c);
      const auto [dav, dgv] = pixel_grads<M>(gmv, widen<A>(ap[c * p.a.sc]), widen<A>(gp[c * p.g.sc]), k);
      dap[c * vda.sc] = store_acc<T, A>(dav);
      dgp[c * vdg.sc] = store_acc<T, A>(dgv);
    }
  }
}

template <typename T, GwmMode M>
void backward_elementwise(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout,
                          T* da, const View4& vda, T* dg, const View4& vdg, Acc<T>* /*ws: unused*/) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, HW = p.H * p.W, ps = common_pixel_stride(p, vda, vdg);
  if (ps > 0) {
    const int64_t tile = tile_size(B, HW), ntiles = (HW + tile - 1) / tile;
    const bool stream = ps == 1 && B * C * HW * int64_t(sizeof(T)) >= kStreamBytes;
    (void)stream;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < B * ntiles; ++t) {
      const int64_t b = t / ntiles, p0 = (t % ntiles) * tile, n = std::min(tile, HW - p0);
      A gm[kMaxTile];
      for (int64_t i = 0; i < n; ++i) gm[i] = masked_grad<T, A>(gout, out, b * HW + p0 + i);
      for (int64_t c = 0; c < C; ++c) {
        const T* __restrict ap = a + b * p.a.sb + c * p.a.sc + p0 * ps;
        const T* __restrict gp = g + b * p.g.sb + c * p.g.sc + p0 * ps;
        T* __restrict dap = da + b * vda.sb + c * vda.sc + p0 * ps;
        T* __restrict dgp = dg + b * vdg.sb + c * vdg.sc + p0 * ps;
#ifdef CAMFAST_STREAM_STORES
        if constexpr (std::is_same_v<T, float>) {
          if (stream) {
            backward_run_streaming<M>(gm, ap, gp, dap, dgp, n);
            continue;
          }
        }
#endif
        if (ps == 1) {
#pragma omp simd
          for (int64_t i = 0; i < n; ++i) {
            // Locals first: GCC if-converts (and so vectorises) the selects only this way.
            const A gv = static_cast<A>(to_float(gp[i])), av = static_cast<A>(to_float(ap[i]));
            const A wv = weight_of<M>(gv), dwv = dweight_of<M>(gv);
            dap[i] = store_acc<T, A>(gm[i] * wv);
            dgp[i] = store_acc<T, A>(gm[i] * av * dwv);
          }
        } else {
          for (int64_t i = 0; i < n; ++i) {
            const A gv = static_cast<A>(to_float(gp[i * ps])), av = static_cast<A>(to_float(ap[i * ps]));
            const A wv = weight_of<M>(gv), dwv = dweight_of<M>(gv);
            dap[i * ps] = store_acc<T, A>(gm[i] * wv);
            dgp[i * ps] = store_acc<T, A>(gm[i] * av * dwv);
          }
        }
      }
#ifdef CAMFAST_STREAM_STORES
      if (stream) _mm_sfence();  // order the streaming stores before the caller reads
#endif
    }
    return;
  }
  backward_by_pixels<T, M>(p, a, g, out, gout, da, vda, dg, vdg, nullptr);
}

// Grad-CAM: dA = gm * w[b,c];  dw[b,c] = sum_p gm * A;  dG[b,c,p] = dw[b,c] / HW.
template <typename T>
void backward_gradcam(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout, T* da,
                      const View4& vda, T* dg, const View4& vdg, Acc<T>* ws) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W;
  const int64_t psa = flat_pixel_stride(p.a, H, W), psg = flat_pixel_stride(p.g, H, W);
  const int64_t psda = flat_pixel_stride(vda, H, W), psdg = flat_pixel_stride(vdg, H, W);
  const bool planar = psa > 0 && psa == psda && psg > 0 && psdg > 0 &&
                      (C == 1 || psa <= std::min(std::abs(p.a.sc), std::abs(vda.sc)));
  if (!planar) return backward_by_pixels<T, GwmMode::GradCAM>(p, a, g, out, gout, da, vda, dg, vdg, ws);
  const A* w = ws;
  A* dw = ws + B * C;
  channel_consts<T, GwmMode::GradCAM, false>(p, a, g, nullptr, nullptr, ws,
                                             psg > 0 && (C == 1 || psg <= std::abs(p.g.sc)), psg);
  const A inv = A(1) / static_cast<A>(HW);
  const int64_t ps = psa;
#ifdef CAMFAST_STREAM_STORES
  const bool stream = ps == 1 && psdg == 1 && B * C * HW * int64_t(sizeof(T)) >= kStreamBytes;
#endif
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < B * C; ++bc) {
    const int64_t b = bc / C, c = bc % C;
    const T* __restrict ap = a + b * p.a.sb + c * p.a.sc;
    T* __restrict dap = da + b * vda.sb + c * vda.sc;
    const T* go = gout + b * HW;
    const T* ov = out + b * HW;
    const A wc = w[bc];
    A s = 0;
#ifdef CAMFAST_STREAM_STORES
    if constexpr (std::is_same_v<T, float>) {
      if (stream) {
        dw[bc] = gradcam_plane_streaming(go, ov, ap, dap, dg + b * vdg.sb + c * vdg.sc, wc, HW, inv);
        continue;
      }
    }
#endif
    if (ps == 1) {
#pragma omp simd reduction(+ : s)
      for (int64_t i = 0; i < HW; ++i) {
        const A gmv = masked_grad<T, A>(go, ov, i);
        s += gmv * static_cast<A>(to_float(ap[i]));
        dap[i] = store_acc<T, A>(gmv * wc);
      }
    } else {
      for (int64_t i = 0; i < HW; ++i) {
        const A gmv = masked_grad<T, A>(go, ov, i);
        s += gmv * static_cast<A>(to_float(ap[i * ps]));
        dap[i * ps] = store_acc<T, A>(gmv * wc);
      }
    }
    dw[bc] = s * inv;
    const T v = store_acc<T, A>(dw[bc]);
    T* __restrict dgp = dg + b * vdg.sb + c * vdg.sc;
    if (psdg == 1) {
      std::fill(dgp, dgp + HW, v);
    } else {
      for (int64_t i = 0; i < HW; ++i) dgp[i * psdg] = v;
    }
  }
#ifdef CAMFAST_STREAM_STORES
  if (stream) _mm_sfence();
#endif
}

// Grad-CAM++, XGrad-CAM: per (b, c) plane the constants (pass 1 and 2 over A, G and gm), then
// dA and dG (pixel_grads) in one more pass; other layouts pixel by pixel.
template <typename T, GwmMode M>
void backward_per_channel(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout, T* da,
                          const View4& vda, T* dg, const View4& vdg, Acc<T>* ws) {
  using A = Acc<T>;
  const int64_t C = p.C, HW = p.H * p.W, ps = common_pixel_stride(p, vda, vdg);
  if (ps <= 0) return backward_by_pixels<T, M>(p, a, g, out, gout, da, vda, dg, vdg, ws);
#pragma omp parallel for schedule(static)
  for (int64_t bc = 0; bc < p.B * C; ++bc) {
    const int64_t b = bc / C, c = bc % C;
    const T* ap = a + b * p.a.sb + c * p.a.sc;
    const T* gp = g + b * p.g.sb + c * p.g.sc;
    const T* go = gout + b * HW;
    const T* ov = out + b * HW;
    T* dap = da + b * vda.sb + c * vda.sc;
    T* dgp = dg + b * vdg.sb + c * vdg.sc;
    const ChannelConsts<A> k = plane_consts<T, M, true>(ap, gp, go, ov, HW, ps);
    plane_for(HW, ps, [&](int64_t i, int64_t o) {
      const auto [dav, dgv] = pixel_grads<M>(masked_grad<T, A>(go, ov, i), widen<A>(ap[o]), widen<A>(gp[o]), k);
      dap[o] = store_acc<T, A>(dav);
      dgp[o] = store_acc<T, A>(dgv);
    });
  }
}

template <typename T>
void forward_typed(GwmMode mode, const GwmProblem& p, const void* a, const void* g, void* out, void* ws) {
  void (*fn)(const GwmProblem&, const T*, const T*, T*, Acc<T>*) = nullptr;
  switch (mode) {
    case GwmMode::Zoom: fn = forward_impl<T, GwmMode::Zoom>; break;
    case GwmMode::GradCAM: fn = forward_impl<T, GwmMode::GradCAM>; break;
    case GwmMode::LayerCAM: fn = forward_impl<T, GwmMode::LayerCAM>; break;
    case GwmMode::GradCAMpp: fn = forward_impl<T, GwmMode::GradCAMpp>; break;
    case GwmMode::XGradCAM: fn = forward_impl<T, GwmMode::XGradCAM>; break;
  }
  if (fn == nullptr) throw std::invalid_argument("grad_weighted_map: unknown mode");
  fn(p, static_cast<const T*>(a), static_cast<const T*>(g), static_cast<T*>(out), static_cast<Acc<T>*>(ws));
}

template <typename T>
void backward_typed(GwmMode mode, const GwmProblem& p, const void* a, const void* g, const void* out,
                    const void* gout, void* da, const View4& vda, void* dg, const View4& vdg, void* ws) {
  void (*fn)(const GwmProblem&, const T*, const T*, const T*, const T*, T*, const View4&, T*, const View4&,
             Acc<T>*) = nullptr;
  switch (mode) {
    case GwmMode::Zoom: fn = backward_elementwise<T, GwmMode::Zoom>; break;
    case GwmMode::LayerCAM: fn = backward_elementwise<T, GwmMode::LayerCAM>; break;
    case GwmMode::GradCAM: fn = backward_gradcam<T>; break;
    case GwmMode::GradCAMpp: fn = backward_per_channel<T, GwmMode::GradCAMpp>; break;
    case GwmMode::XGradCAM: fn = backward_per_channel<T, GwmMode::XGradCAM>; break;
  }
  if (fn == nullptr) throw std::invalid_argument("grad_weighted_map: unknown mode");
  advise_huge_pages(da, vda, p.B, p.C, p.H, p.W, sizeof(T));
  advise_huge_pages(dg, vdg, p.B, p.C, p.H, p.W, sizeof(T));
  const auto in = [](const void* q) { return static_cast<const T*>(q); };
  fn(p, in(a), in(g), in(out), in(gout), static_cast<T*>(da), vda, static_cast<T*>(dg), vdg, static_cast<Acc<T>*>(ws));
}

}  // namespace

void grad_weighted_map_forward_cpu(DType dtype, GwmMode mode, const GwmProblem& p, const void* a,
                                   const void* g, void* out, void* ws) {
  switch (dtype) {
    case DType::Float32: return forward_typed<float>(mode, p, a, g, out, ws);
    case DType::Float64: return forward_typed<double>(mode, p, a, g, out, ws);
    case DType::Float16: return forward_typed<half_t>(mode, p, a, g, out, ws);
    case DType::BFloat16: return forward_typed<bf16_t>(mode, p, a, g, out, ws);
  }
  throw std::invalid_argument("grad_weighted_map: unsupported dtype code");
}

void grad_weighted_map_backward_cpu(DType dtype, GwmMode mode, const GwmProblem& p, const void* a,
                                    const void* g, const void* out, const void* gout, void* da,
                                    View4 vda, void* dg, View4 vdg, void* ws) {
  switch (dtype) {
    case DType::Float32: return backward_typed<float>(mode, p, a, g, out, gout, da, vda, dg, vdg, ws);
    case DType::Float64: return backward_typed<double>(mode, p, a, g, out, gout, da, vda, dg, vdg, ws);
    case DType::Float16: return backward_typed<half_t>(mode, p, a, g, out, gout, da, vda, dg, vdg, ws);
    case DType::BFloat16: return backward_typed<bf16_t>(mode, p, a, g, out, gout, da, vda, dg, vdg, ws);
  }
  throw std::invalid_argument("grad_weighted_map: unsupported dtype code");
}

}  // namespace camfast
