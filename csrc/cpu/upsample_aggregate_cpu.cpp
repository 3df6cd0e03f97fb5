// CPU kernels for camfast::upsample_aggregate (forward and backward).
//
// Forward: a small pass finds each (sample, layer)'s min and max; then threads own
// (sample, band of output rows) tasks. For each output row and layer, the two source rows it
// samples are normalised and interpolated along W once into row buffers (kept while the
// next output rows sample the same source rows, as they do when upsampling), blended along
// H and reduced into one accumulator row, which is written once. The arithmetic follows
// torch's upsample_bilinear2d (same indices and weights; W inner, H outer).
// Backward: the winning layer of every output pixel (reduce=max) is found the same way;
// then threads own (sample, layer) tasks, so the transpose of the interpolation
// scatter-adds into a private buffer without races, and the normalisation's gradient is
// applied from two sums over that buffer. Backward sums are accumulated in double.
#include <algorithm>
#include <cmath>
#include <cstdint>
#include <limits>
#include <numeric>
#include <vector>


#include "upsample_aggregate.h"
#include "cpu/cpu_common.h"
#include "dtype_switch.h"

namespace camfast {
namespace {

using namespace cpu_detail;



// Where output coordinate d samples one axis: source indices i0, i1 and weights l0, l1,
// exactly as torch's compute_source_index_and_lambda (align_corners=False, no scale).
template <typename A> struct Tap {
  int64_t i0, i1;
  A l0, l1;
};

template <typename A> void axis_taps(int64_t in, int64_t out, Tap<A>* t) {
  const A scale = static_cast<A>(in) / static_cast<A>(out);
  for (int64_t d = 0; d < out; ++d) {
    if (in == out) {
      t[d] = {d, d, A(1), A(0)};
      continue;
    }
    A src = scale * (static_cast<A>(d) + A(0.5)) - A(0.5);
    if (src < A(0)) src = A(0);
    const int64_t i0 = std::min<int64_t>(static_cast<int64_t>(src), in - 1);
    const A l1 = std::min(std::max(src - static_cast<A>(i0), A(0)), A(1));
    t[d] = {i0, i0 + (i0 < in - 1 ? 1 : 0), A(1) - l1, l1};
  }
}

// Row and column taps of every layer: rows[l] has H entries, cols[l] W.
template <typename A> struct Taps {
  std::vector<Tap<A>> data;
  std::vector<int64_t> row_off, col_off;
  const Tap<A>* rows(int64_t l) const { return data.data() + row_off[l]; }
  const Tap<A>* cols(int64_t l) const { return data.data() + col_off[l]; }
};

template <typename A> Taps<A> make_taps(const UaProblem& p, const UaLayer* layers) {
  Taps<A> t;
  t.data.resize(static_cast<size_t>(p.L * (p.H + p.W)));
  t.row_off.resize(p.L);
  t.col_off.resize(p.L);
  for (int64_t l = 0; l < p.L; ++l) {
    t.row_off[l] = l * (p.H + p.W);
    t.col_off[l] = t.row_off[l] + p.H;
    axis_taps<A>(layers[l].h, p.H, t.data.data() + t.row_off[l]);
    axis_taps<A>(layers[l].w, p.W, t.data.data() + t.col_off[l]);
  }
  return t;
}

// The affine map of one (sample, layer)'s normalisation: n = (v - mn) / d, or 0 (constant map),
// or v (normalize=none).
template <typename A> struct Norm {
  A mn, d;
  int kind;  // 0: minmax, 1: zero (constant map), 2: identity
  inline A operator()(A v) const {
    if (kind == 2) return v;
    if (kind == 1) return A(0);
    return (v - mn) / d;
  }
};

template <typename A> Norm<A> norm_of(const UaProblem& p, const A* ws, int64_t b, int64_t l) {
  if (p.normalize == UaNormalize::None) return {A(0), A(1), 2};
  const A mn = ws[(b * p.L + l) * 2], mx = ws[(b * p.L + l) * 2 + 1];
  const A rng = mx - mn;
  if (rng == A(0)) return {mn, A(1), 1};
  return {mn, rng + static_cast<A>(kUaEps), 0};  // NaN propagates through rng
}

// Min, max and NaN flag of one row of n elements (element stride sw) folded into kLanes
// partial results: independent lanes, so the contiguous case vectorises.
constexpr int kLanes = 8;

template <typename T, typename A> inline void row_minmax(const T* row, int64_t n, int64_t sw, A* mn, A* mx, A* nan) {
  int64_t c = 0;
  if (sw == 1) {
    for (; c + kLanes <= n; c += kLanes)
      for (int k = 0; k < kLanes; ++k) {
        const A v = static_cast<A>(to_float(row[c + k]));
        mn[k] = v < mn[k] ? v : mn[k];
        mx[k] = v > mx[k] ? v : mx[k];
        nan[k] = v != v ? A(1) : nan[k];
      }
  }
  for (; c < n; ++c) {
    const A v = static_cast<A>(to_float(row[c * sw]));
    mn[0] = v < mn[0] ? v : mn[0];
    mx[0] = v > mx[0] ? v : mx[0];
    nan[0] = v != v ? A(1) : nan[0];
  }
}

// ws[(b*L + l)*2 + {0, 1}] = min, max of layer l of sample b (NaN if the map holds a NaN,
// as torch.amin/amax); with counts, ws[2*B*L + (b*L + l)*2 + {0, 1}] = #min, #max.
template <typename T> void layer_stats(const UaProblem& p, const UaLayer* layers, Acc<T>* ws, bool counts) {
  using A = Acc<T>;
  const int64_t B = p.B, L = p.L;
#pragma omp parallel for schedule(dynamic, 1)
  for (int64_t bl = 0; bl < B * L; ++bl) {
    const int64_t b = bl / L, l = bl % L;
    const UaLayer& ly = layers[l];
    const T* m = static_cast<const T*>(ly.data) + b * ly.sb;
    A mnl[kLanes], mxl[kLanes], nanl[kLanes];
    for (int k = 0; k < kLanes; ++k) {
      mnl[k] = mxl[k] = static_cast<A>(to_float(m[0]));
      nanl[k] = A(0);
    }
    for (int64_t r = 0; r < ly.h; ++r) row_minmax<T, A>(m + r * ly.sh, ly.w, ly.sw, mnl, mxl, nanl);
    A mn = mnl[0], mx = mxl[0];
    bool nan = false;
    for (int k = 0; k < kLanes; ++k) {
      mn = mnl[k] < mn ? mnl[k] : mn;
      mx = mxl[k] > mx ? mxl[k] : mx;
      nan |= nanl[k] != A(0);
    }
    if (nan) mn = mx = std::numeric_limits<A>::quiet_NaN();
    ws[bl * 2] = mn;
    ws[bl * 2 + 1] = mx;
    if (!counts) continue;
    int64_t cmin = 0, cmax = 0;
    for (int64_t r = 0; r < ly.h; ++r) {
      const T* row = m + r * ly.sh;
      const int64_t sw = ly.sw;
      for (int64_t c = 0; c < ly.w; ++c) {
        const A v = static_cast<A>(to_float(row[c * sw]));
        cmin += v == mn;
        cmax += v == mx;
      }
    }
    ws[2 * B * L + bl * 2] = static_cast<A>(cmin);
    ws[2 * B * L + bl * 2 + 1] = static_cast<A>(cmax);
  }
}

// Per-thread scratch of the row pass: for each layer two W-long rows interpolated along W
// (tagged with their source row), one normalised source row, the accumulator row.
template <typename A> struct RowCache {
  std::vector<A> rows, src, acc;
  std::vector<int64_t> tag;
  int64_t W = 0;
  RowCache(int64_t L, int64_t W_, int64_t max_w)
      : rows(static_cast<size_t>(2 * L * W_)), src(static_cast<size_t>(max_w)), acc(static_cast<size_t>(W_)),
        tag(static_cast<size_t>(2 * L), -1), W(W_) {}
  void reset() { std::fill(tag.begin(), tag.end(), -1); }
};

// Source row r of layer l (sample b), normalised and interpolated along W, into slot `slot`.
template <typename T, typename A>
void fill_row(const UaLayer& ly, const Norm<A>& nm, const Tap<A>* cols, int64_t W, int64_t b, int64_t r, A* src,
              A* dst) {
  const T* m = static_cast<const T*>(ly.data) + b * ly.sb + r * ly.sh;
  for (int64_t c = 0; c < ly.w; ++c) src[c] = nm(static_cast<A>(to_float(m[c * ly.sw])));
  for (int64_t x = 0; x < W; ++x) dst[x] = src[cols[x].i0] * cols[x].l0 + src[cols[x].i1] * cols[x].l1;
}

// Pointers to the two W-interpolated source rows (r0, r1) of layer l, computing what the
// cache does not hold.
template <typename T, typename A>
void fetch_rows(RowCache<A>& rc, const UaLayer& ly, const Norm<A>& nm, const Tap<A>* cols, int64_t b, int64_t l,
                int64_t r0, int64_t r1, const A*& p0, const A*& p1) {
  int64_t* tag = rc.tag.data() + 2 * l;
  A* slot[2] = {rc.rows.data() + 2 * l * rc.W, rc.rows.data() + (2 * l + 1) * rc.W};
  int s0 = tag[0] == r0 ? 0 : (tag[1] == r0 ? 1 : -1);
  if (s0 < 0) {
    s0 = tag[0] == r1 ? 1 : 0;  // keep the slot that holds r1
    fill_row<T, A>(ly, nm, cols, rc.W, b, r0, rc.src.data(), slot[s0]);
    tag[s0] = r0;
  }
  int s1 = tag[0] == r1 ? 0 : (tag[1] == r1 ? 1 : -1);
  if (s1 < 0) {
    s1 = 1 - s0;
    fill_row<T, A>(ly, nm, cols, rc.W, b, r1, rc.src.data(), slot[s1]);
    tag[s1] = r1;
  }
  p0 = slot[s0];
  p1 = slot[s1];
}

enum RowMode { kMax = 0, kMean = 1, kSum = 2, kArgMax = 3 };

// Where reduce=max sends the gradient: the first layer attaining the max at every output
// pixel (int32, the width of the float compares it is selected with, so both vectorise), and
// per output row the set of layers that win somewhere in it (64 bits: at most kUaMaxLayers =
// 64 layers), so a layer skips the rows it never wins.
struct Winners {
  std::vector<int32_t> layer;      // [B, H, W]
  std::vector<uint64_t> row_mask;  // [B, H]
};
static_assert(kUaMaxLayers <= 64, "Winners stores the set of a row's winning layers in 64 bits");

// The row pass: for every output pixel, every layer's upsampled normalised value, reduced
// over the layers. kArgMax fills `winners` instead of writing an output.
template <typename T, int Mode>
void aggregate_rows(const UaProblem& p, const UaLayer* layers, const Acc<T>* ws, T* out, Winners* winners) {
  using A = Acc<T>;
  const int64_t B = p.B, H = p.H, W = p.W, L = p.L;
  const Taps<A> taps = make_taps<A>(p, layers);
  int64_t max_w = 1;
  for (int64_t l = 0; l < L; ++l) max_w = std::max(max_w, layers[l].w);
  std::vector<Norm<A>> norms(static_cast<size_t>(B * L));
  for (int64_t b = 0; b < B; ++b)
    for (int64_t l = 0; l < L; ++l) norms[b * L + l] = norm_of<A>(p, ws, b, l);
  // Bands of output rows: at least 4 tasks per thread (dynamic scheduling evens them out);
  // within a band, consecutive rows reuse the source rows they share.
  const int64_t bands = std::min<int64_t>(H, std::max<int64_t>(1, (4 * num_threads() + B - 1) / B));
  const int64_t band = (H + bands - 1) / bands;

#pragma omp parallel
  {
    RowCache<A> rc(L, W, max_w);
    std::vector<int32_t> idx(Mode == kArgMax ? W : 0);
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < B * bands; ++t) {
      const int64_t b = t / bands, y0 = (t % bands) * band, y1 = std::min(H, y0 + band);
      rc.reset();
      A* acc = rc.acc.data();
      for (int64_t y = y0; y < y1; ++y) {
        for (int64_t l = 0; l < L; ++l) {
          const Tap<A> ty = taps.rows(l)[y];
          const A *h0, *h1;
          fetch_rows<T, A>(rc, layers[l], norms[b * L + l], taps.cols(l), b, l, ty.i0, ty.i1, h0, h1);
          const A l0 = ty.l0, l1 = ty.l1;
          if (l == 0) {
            const A wt = Mode == kSum ? static_cast<A>(layers[0].weight) : A(1);
            for (int64_t x = 0; x < W; ++x) acc[x] = (h0[x] * l0 + h1[x] * l1) * wt;
            if constexpr (Mode == kArgMax) std::fill(idx.begin(), idx.end(), 0);
          } else if constexpr (Mode == kMax) {
            for (int64_t x = 0; x < W; ++x) {
              const A v = h0[x] * l0 + h1[x] * l1, a = acc[x];
              acc[x] = (!(v <= a) && a == a) ? v : a;  // the first NaN wins, as torch.max
            }
          } else if constexpr (Mode == kArgMax) {
            for (int64_t x = 0; x < W; ++x) {
              const A v = h0[x] * l0 + h1[x] * l1, a = acc[x];
              const bool take = !(v <= a) && a == a;
              acc[x] = take ? v : a;
              idx[x] = take ? static_cast<int32_t>(l) : idx[x];
            }
          } else {
            const A wt = Mode == kSum ? static_cast<A>(layers[l].weight) : A(1);
            for (int64_t x = 0; x < W; ++x) acc[x] += (h0[x] * l0 + h1[x] * l1) * wt;
          }
        }
        if constexpr (Mode == kArgMax) {
          std::copy(idx.begin(), idx.end(), winners->layer.data() + (b * H + y) * W);
          uint64_t mask = 0;
          for (int64_t x = 0; x < W; ++x) mask |= uint64_t(1) << idx[x];
          winners->row_mask[b * H + y] = mask;
        } else {
          T* o = out + (b * H + y) * W;
          for (int64_t x = 0; x < W; ++x) o[x] = store_acc<T, A>(Mode == kMean ? acc[x] / static_cast<A>(L) : acc[x]);
        }
      }
    }
  }
}

template <typename T>
void forward_typed(const UaProblem& p, const UaLayer* layers, void* out_, void* ws_) {
  auto out = static_cast<T*>(out_);
  auto ws = static_cast<Acc<T>*>(ws_);
  if (p.normalize == UaNormalize::MinMax) layer_stats<T>(p, layers, ws, false);
  switch (p.reduce) {
    case UaReduce::Max: return aggregate_rows<T, kMax>(p, layers, ws, out, nullptr);
    case UaReduce::Mean: return aggregate_rows<T, kMean>(p, layers, ws, out, nullptr);
    case UaReduce::Sum: return aggregate_rows<T, kSum>(p, layers, ws, out, nullptr);
  }
  throw std::invalid_argument("upsample_aggregate: unknown reduce code");
}

// Adds the transpose of the W interpolation of one row, src (W) -> dst (w). Both source-column
// streams (i0, i1) are non-decreasing in x, so each is summed in a register and flushed when
// it moves on: no store-to-load chain through dst when many output columns share a source.
template <typename A, typename S> void scatter_row(const Tap<A>* cols, int64_t W, const S* src, double* dst) {
  int64_t c0 = cols[0].i0, c1 = cols[0].i1;
  double s0 = 0.0, s1 = 0.0;
  for (int64_t x = 0; x < W; ++x) {
    const Tap<A>& t = cols[x];
    if (t.i0 != c0) {
      dst[c0] += s0;
      s0 = 0.0;
      c0 = t.i0;
    }
    if (t.i1 != c1) {
      dst[c1] += s1;
      s1 = 0.0;
      c1 = t.i1;
    }
    s0 += static_cast<double>(t.l0) * src[x];
    s1 += static_cast<double>(t.l1) * src[x];
  }
  dst[c0] += s0;
  dst[c1] += s1;
}

// Rows of the H-transposed buffer kept per thread at most (h * W doubles): above it, and when
// downsampling along H, the backward goes output row by output row instead.
constexpr int64_t kMaxVerticalFirst = int64_t(1) << 20;

inline bool vertical_first(int64_t h, int64_t H, int64_t W) { return h <= H && h * W <= kMaxVerticalFirst; }

// Scratch of one backward thread: gn (h*w), racc (w), grow (W, one output row of dout's
// share for the layer), u (h*W, the H-transposed rows).
template <typename A> struct BwdScratch {
  std::vector<double> gn, racc;
  std::vector<A> grow;
  std::vector<double> u;
};

// dL/dM of one (sample, layer): the layer's share of dout goes through the transpose of the
// interpolation into gn = dL/dN (double, h*w), then through the normalisation. When
// upsampling along H the transpose is taken H first (an axpy of each output row into the
// source rows it samples, vectorised) and then W on the h source rows only; otherwise W first,
// row by row, then H.
template <typename T>
void backward_layer(const UaProblem& p, const UaLayer& ly, int64_t b, int64_t l, const Taps<Acc<T>>& taps,
                    const T* gout, const Winners& winners, const Acc<T>* ws, BwdScratch<Acc<T>>& sc) {
  using A = Acc<T>;
  const int64_t H = p.H, W = p.W, h = ly.h, w = ly.w;
  const Tap<A>* rows = taps.rows(l);
  const Tap<A>* cols = taps.cols(l);
  double* gn = sc.gn.data();
  A* grow = sc.grow.data();
  std::fill(gn, gn + h * w, 0.0);
  const bool vfirst = vertical_first(h, H, W);
  if (vfirst) std::fill(sc.u.begin(), sc.u.begin() + h * W, 0.0);
  const A coef = static_cast<A>(ly.weight);
  for (int64_t y = 0; y < H; ++y) {
    const T* go = gout + (b * H + y) * W;
    if (p.reduce == UaReduce::Max) {
      if (!((winners.row_mask[b * H + y] >> l) & 1u)) continue;  // layer l wins nowhere in this row
      const int32_t* wn = winners.layer.data() + (b * H + y) * W;
      const int32_t me = static_cast<int32_t>(l);
      for (int64_t x = 0; x < W; ++x) {
        const A g = static_cast<A>(to_float(go[x]));
        grow[x] = wn[x] == me ? g : A(0);
      }
    } else {
      const A c = p.reduce == UaReduce::Mean ? A(1) / static_cast<A>(p.L) : coef;
      for (int64_t x = 0; x < W; ++x) grow[x] = static_cast<A>(to_float(go[x])) * c;
    }
    const Tap<A> ty = rows[y];
    const double l0 = ty.l0, l1 = ty.l1;
    if (vfirst) {
      double* __restrict u0 = sc.u.data() + ty.i0 * W;
      for (int64_t x = 0; x < W; ++x) u0[x] += l0 * static_cast<double>(grow[x]);
      double* __restrict u1 = sc.u.data() + ty.i1 * W;
      for (int64_t x = 0; x < W; ++x) u1[x] += l1 * static_cast<double>(grow[x]);
    } else {
      double* racc = sc.racc.data();
      std::fill(racc, racc + w, 0.0);
      scatter_row<A, A>(cols, W, grow, racc);
      double* g0 = gn + ty.i0 * w;
      for (int64_t c = 0; c < w; ++c) g0[c] += l0 * racc[c];
      double* g1 = gn + ty.i1 * w;
      for (int64_t c = 0; c < w; ++c) g1[c] += l1 * racc[c];
    }
  }
  if (vfirst)
    for (int64_t r = 0; r < h; ++r) scatter_row<A, double>(cols, W, sc.u.data() + r * W, gn + r * w);

  const T* m = static_cast<const T*>(ly.data) + b * ly.sb;
  T* dm = static_cast<T*>(ly.grad) + b * ly.gsb;
  if (p.normalize == UaNormalize::None) {
    for (int64_t r = 0; r < h; ++r)
      for (int64_t c = 0; c < w; ++c) dm[r * ly.gsh + c * ly.gsw] = store_acc<T, A>(static_cast<A>(gn[r * w + c]));
    return;
  }
  const int64_t bl = b * p.L + l;
  const A mn = ws[bl * 2], mx = ws[bl * 2 + 1];
  const A rng = mx - mn;
  if (rng == A(0)) {  // constant map: the output does not depend on it
    for (int64_t r = 0; r < h; ++r)
      for (int64_t c = 0; c < w; ++c) dm[r * ly.gsh + c * ly.gsw] = store_acc<T, A>(A(0));
    return;
  }
  const double d = static_cast<double>(rng + static_cast<A>(kUaEps)), inv_d = 1.0 / d;
  const double cmin = ws[2 * p.B * p.L + bl * 2], cmax = ws[2 * p.B * p.L + bl * 2 + 1];
  double s0 = 0, sn = 0;
  for (int64_t r = 0; r < h; ++r)
    for (int64_t c = 0; c < w; ++c) {
      const double v = static_cast<double>(static_cast<A>(to_float(m[r * ly.sh + c * ly.sw])));
      const double g = gn[r * w + c];
      s0 += g;
      sn += g * ((v - static_cast<double>(mn)) * inv_d);
    }
  const double dmin = (sn - s0) / d / cmin;  // dL/dmin, shared among the tied minima
  const double dmax = -sn / d / cmax;        // dL/dmax, shared among the tied maxima
  for (int64_t r = 0; r < h; ++r)
    for (int64_t c = 0; c < w; ++c) {
      const A v = static_cast<A>(to_float(m[r * ly.sh + c * ly.sw]));
      const double g = gn[r * w + c] * inv_d + (v == mn ? dmin : 0.0) + (v == mx ? dmax : 0.0);
      dm[r * ly.gsh + c * ly.gsw] = store_acc<T, A>(static_cast<A>(g));
    }
}

template <typename T>
void backward_typed(const UaProblem& p, const UaLayer* layers, const void* gout_, void* ws_) {
  using A = Acc<T>;
  auto gout = static_cast<const T*>(gout_);
  auto ws = static_cast<A*>(ws_);
  const int64_t B = p.B, L = p.L;
  if (p.normalize == UaNormalize::MinMax) layer_stats<T>(p, layers, ws, true);
  Winners winners;
  if (p.reduce == UaReduce::Max) {
    winners.layer.resize(static_cast<size_t>(B * p.H * p.W));
    winners.row_mask.resize(static_cast<size_t>(B * p.H));
    aggregate_rows<T, kArgMax>(p, layers, ws, nullptr, &winners);
  }
  const Taps<A> taps = make_taps<A>(p, layers);
  int64_t max_hw = 1, max_w = 1, max_u = 0;
  for (int64_t l = 0; l < L; ++l) {
    max_hw = std::max(max_hw, layers[l].h * layers[l].w);
    max_w = std::max(max_w, layers[l].w);
    if (vertical_first(layers[l].h, p.H, p.W)) max_u = std::max(max_u, layers[l].h * p.W);
  }
  // Largest layers first: they take longest, and dynamic scheduling fills in with the rest.
  std::vector<int64_t> order(static_cast<size_t>(L));
  std::iota(order.begin(), order.end(), int64_t(0));
  std::stable_sort(order.begin(), order.end(), [&](int64_t i, int64_t j) {
    return layers[i].h * layers[i].w > layers[j].h * layers[j].w;
  });
#pragma omp parallel
  {
    BwdScratch<A> sc{std::vector<double>(static_cast<size_t>(max_hw)), std::vector<double>(static_cast<size_t>(max_w)),
                     std::vector<A>(static_cast<size_t>(p.W)), std::vector<double>(static_cast<size_t>(max_u))};
#pragma omp for schedule(dynamic, 1)
    for (int64_t t = 0; t < B * L; ++t) {
      const int64_t l = order[t / B], b = t % B;
      backward_layer<T>(p, layers[l], b, l, taps, gout, winners, ws, sc);
    }
  }
}

}  // namespace

void upsample_aggregate_forward_cpu(DType dtype, const UaProblem& p, const UaLayer* layers, void* out, void* ws) {
  with_dtype(dtype, [&](auto t) { forward_typed<CAMFAST_T(t)>(p, layers, out, ws); });
}

void upsample_aggregate_backward_cpu(DType dtype, const UaProblem& p, const UaLayer* layers, const void* gout,
                                     void* ws) {
  with_dtype(dtype, [&](auto t) { backward_typed<CAMFAST_T(t)>(p, layers, gout, ws); });
}

}  // namespace camfast
