// CPU kernels for camfast::grad_weighted_map (forward and backward).
//
// Two loop orders, chosen from the strides:
//  * planar      (NCHW-like: each (b, c) plane is a flat run of pixels): threads own
//                (batch, pixel tile) pairs and stream through the channels, accumulating
//                into a small float tile that stays in L1. One pass over A and G.
//  * pixel-major (channels-last and any other layout): threads own pixels and reduce
//                over the channel axis (contiguous for channels-last).
// Accumulation is in float (double for double inputs); outputs are rounded once.
#include <algorithm>
#include <cmath>
#include <vector>

#ifdef __linux__
#include <sys/mman.h>
#endif
#if defined(__SSE2__)
#include <immintrin.h>
#define CAMFAST_STREAM_STORES 1
#endif
#include <type_traits>

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
// w[b, c] = mean_p G[b, c, p]    (Grad-CAM channel weights, accumulated in Acc)
template <typename T>
void channel_means(const GwmProblem& p, const T* g, Acc<T>* w, bool planar, int64_t ps) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W;
  const A inv = A(1) / static_cast<A>(HW);
  if (planar) {
#pragma omp parallel for schedule(static)
    for (int64_t bc = 0; bc < B * C; ++bc) {
      const int64_t b = bc / C, c = bc % C;
      const T* gp = g + b * p.g.sb + c * p.g.sc;
      A s = 0;
      if (ps == 1) {
#pragma omp simd reduction(+ : s)
        for (int64_t i = 0; i < HW; ++i) s += static_cast<A>(to_float(gp[i]));
      } else {
        for (int64_t i = 0; i < HW; ++i) s += static_cast<A>(to_float(gp[i * ps]));
      }
      w[bc] = s * inv;
    }
    return;
  }
  // pixel-major: each task owns a block of channels of one image and walks all pixels.
  constexpr int64_t kCB = 64;
  const int64_t nblk = (C + kCB - 1) / kCB;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < B * nblk; ++t) {
    const int64_t b = t / nblk, c0 = (t % nblk) * kCB, c1 = std::min(C, c0 + kCB);
    A s[kCB] = {};
    for (int64_t h = 0; h < H; ++h)
      for (int64_t x = 0; x < W; ++x) {
        const T* gp = g + p.g.at(b, 0, h, x);
        for (int64_t c = c0; c < c1; ++c) s[c - c0] += static_cast<A>(to_float(gp[c * p.g.sc]));
      }
    for (int64_t c = c0; c < c1; ++c) w[b * C + c] = s[c - c0] * inv;
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
  const A* w = nullptr;
  if constexpr (M == GwmMode::GradCAM) {
    channel_means<T>(p, g, ws, planar, psg);
    w = ws;
  }

  if (planar) {
    const int64_t ps = psa, tile = tile_size(B, HW), ntiles = (HW + tile - 1) / tile;
#pragma omp parallel for schedule(static)
    for (int64_t t = 0; t < B * ntiles; ++t) {
      const int64_t b = t / ntiles, p0 = (t % ntiles) * tile, n = std::min(tile, HW - p0);
      A acc[kMaxTile];
      std::fill(acc, acc + n, A(0));
      for (int64_t c = 0; c < C; ++c) {
        const T* __restrict ap = a + b * p.a.sb + c * p.a.sc + p0 * ps;
        if constexpr (M == GwmMode::GradCAM) {
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
    if constexpr (M == GwmMode::GradCAM) {
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
template <typename T, typename A> inline A masked_grad(const T* gout, const T* out, int64_t i) {
  // Both loads unconditional, so the select vectorises.
  const A o = static_cast<A>(to_float(out[i]));
  const A go = static_cast<A>(to_float(gout[i]));
  return o > A(0) ? go : A(0);
}

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

template <typename T, GwmMode M>
void backward_elementwise(const GwmProblem& p, const T* a, const T* g, const T* out, const T* gout,
                          T* da, const View4& vda, T* dg, const View4& vdg) {
  using A = Acc<T>;
  const int64_t B = p.B, C = p.C, H = p.H, W = p.W, HW = H * W;
  const int64_t psa = flat_pixel_stride(p.a, H, W), psg = flat_pixel_stride(p.g, H, W);
  const int64_t psda = flat_pixel_stride(vda, H, W), psdg = flat_pixel_stride(vdg, H, W);
  const bool planar = psa > 0 && psa == psg && psa == psda && psa == psdg &&
                      (C == 1 || psa <= std::min({std::abs(p.a.sc), std::abs(p.g.sc),
                                                   std::abs(vda.sc), std::abs(vdg.sc)}));
  if (planar) {
    const int64_t ps = psa, tile = tile_size(B, HW), ntiles = (HW + tile - 1) / tile;
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
#pragma omp parallel for schedule(static)
  for (int64_t bp = 0; bp < B * HW; ++bp) {
    const int64_t b = bp / HW, h = (bp % HW) / W, x = bp % W;
    const A gmv = masked_grad<T, A>(gout, out, bp);
    const T* ap = a + p.a.at(b, 0, h, x);
    const T* gp = g + p.g.at(b, 0, h, x);
    T* dap = da + vda.at(b, 0, h, x);
    T* dgp = dg + vdg.at(b, 0, h, x);
    for (int64_t c = 0; c < C; ++c) {
      const A gv = static_cast<A>(to_float(gp[c * p.g.sc])), av = static_cast<A>(to_float(ap[c * p.a.sc]));
      const A wv = weight_of<M>(gv), dwv = dweight_of<M>(gv);
      dap[c * vda.sc] = store_acc<T, A>(gmv * wv);
      dgp[c * vdg.sc] = store_acc<T, A>(gmv * av * dwv);
    }
  }
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
  A* w = ws;
  A* dw = ws + B * C;
  channel_means<T>(p, g, w, psg > 0 && (C == 1 || psg <= std::abs(p.g.sc)), psg);
  const A inv = A(1) / static_cast<A>(HW);

  if (planar) {
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
    return;
  }
  // pixel-major: dA per pixel, dw by channel blocks, then dG per pixel.
#pragma omp parallel for schedule(static)
  for (int64_t bp = 0; bp < B * HW; ++bp) {
    const int64_t b = bp / HW, h = (bp % HW) / W, x = bp % W;
    const A gmv = masked_grad<T, A>(gout, out, bp);
    T* dap = da + vda.at(b, 0, h, x);
    const A* wb = w + b * C;
    for (int64_t c = 0; c < C; ++c) dap[c * vda.sc] = store_acc<T, A>(gmv * wb[c]);
  }
  constexpr int64_t kCB = 64;
  const int64_t nblk = (C + kCB - 1) / kCB;
#pragma omp parallel for schedule(static)
  for (int64_t t = 0; t < B * nblk; ++t) {
    const int64_t b = t / nblk, c0 = (t % nblk) * kCB, c1 = std::min(C, c0 + kCB);
    A s[kCB] = {};
    for (int64_t h = 0; h < H; ++h)
      for (int64_t x = 0; x < W; ++x) {
        const A gmv = masked_grad<T, A>(gout, out, b * HW + h * W + x);
        const T* ap = a + p.a.at(b, 0, h, x);
        for (int64_t c = c0; c < c1; ++c) s[c - c0] += gmv * static_cast<A>(to_float(ap[c * p.a.sc]));
      }
    for (int64_t c = c0; c < c1; ++c) dw[b * C + c] = s[c - c0] * inv;
  }
#pragma omp parallel for schedule(static)
  for (int64_t bp = 0; bp < B * HW; ++bp) {
    const int64_t b = bp / HW, h = (bp % HW) / W, x = bp % W;
    T* dgp = dg + vdg.at(b, 0, h, x);
    const A* dwb = dw + b * C;
    for (int64_t c = 0; c < C; ++c) dgp[c * vdg.sc] = store_acc<T, A>(dwb[c]);
  }
}

template <typename T>
void forward_typed(GwmMode mode, const GwmProblem& p, const void* a, const void* g, void* out, void* ws) {
  auto A_ = static_cast<const T*>(a);
  auto G_ = static_cast<const T*>(g);
  auto O_ = static_cast<T*>(out);
  auto W_ = static_cast<Acc<T>*>(ws);
  switch (mode) {
    case GwmMode::Zoom: return forward_impl<T, GwmMode::Zoom>(p, A_, G_, O_, W_);
    case GwmMode::GradCAM: return forward_impl<T, GwmMode::GradCAM>(p, A_, G_, O_, W_);
    case GwmMode::LayerCAM: return forward_impl<T, GwmMode::LayerCAM>(p, A_, G_, O_, W_);
  }
  throw std::invalid_argument("grad_weighted_map: unknown mode");
}

template <typename T>
void backward_typed(GwmMode mode, const GwmProblem& p, const void* a, const void* g, const void* out,
                    const void* gout, void* da, const View4& vda, void* dg, const View4& vdg, void* ws) {
  auto A_ = static_cast<const T*>(a);
  auto G_ = static_cast<const T*>(g);
  auto O_ = static_cast<const T*>(out);
  auto GO = static_cast<const T*>(gout);
  auto DA = static_cast<T*>(da);
  auto DG = static_cast<T*>(dg);
  advise_huge_pages(da, vda, p.B, p.C, p.H, p.W, sizeof(T));
  advise_huge_pages(dg, vdg, p.B, p.C, p.H, p.W, sizeof(T));
  switch (mode) {
    case GwmMode::Zoom:
      return backward_elementwise<T, GwmMode::Zoom>(p, A_, G_, O_, GO, DA, vda, DG, vdg);
    case GwmMode::LayerCAM:
      return backward_elementwise<T, GwmMode::LayerCAM>(p, A_, G_, O_, GO, DA, vda, DG, vdg);
    case GwmMode::GradCAM:
      return backward_gradcam<T>(p, A_, G_, O_, GO, DA, vda, DG, vdg, static_cast<Acc<T>*>(ws));
  }
  throw std::invalid_argument("grad_weighted_map: unknown mode");
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
