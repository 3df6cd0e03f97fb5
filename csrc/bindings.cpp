// pybind11 entry points of camfast._C. Every function takes sizes, element strides and
// raw data pointers (integers from torch.Tensor.data_ptr() or numpy), checks them, and
// releases the GIL while the kernel runs. Errors become Python ValueError/RuntimeError.
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <array>
#include <cstdint>
#include <vector>

#include "common.h"
#include "box_filter.h"
#include "grad_weighted_map.h"
#include "guided_filter.h"
#include "thresholded_avg_pool2d.h"
#include "upsample_aggregate.h"

namespace py = pybind11;
using namespace camfast;

namespace {

using Sizes4 = std::array<int64_t, 4>;

enum class Device : int { CPU = 0, CUDA = 1 };

View4 view_of(const Sizes4& s) { return View4{s[0], s[1], s[2], s[3]}; }

void check_common(int device, int dtype, int mode, const Sizes4& sizes) {
  require(device == 0 || device == 1, "camfast._C: device must be 0 (cpu) or 1 (cuda)");
#ifndef CAMFAST_WITH_CUDA
  require(device == 0, "camfast._C: this build has no CUDA kernels (rebuild with CAMFAST_CUDA=ON)");
#endif
  require(dtype >= 0 && dtype <= 3, "camfast._C: unknown dtype code " + std::to_string(dtype));
  require(mode >= 0 && mode <= 2, "camfast._C: unknown mode code " + std::to_string(mode));
  for (int i = 0; i < 4; ++i)
    require(sizes[i] > 0, "camfast._C: every size must be positive, got size[" + std::to_string(i) +
                              "]=" + std::to_string(sizes[i]));
}

void check_strides(const char* name, const Sizes4& st) {
  for (int i = 0; i < 4; ++i)
    require(st[i] >= 0, std::string("camfast._C: negative stride in ") + name);
}

void check_ptr(const char* name, uintptr_t p) {
  require(p != 0, std::string("camfast._C: null data pointer for ") + name);
}

void gwm_forward(int device, int device_index, int dtype, int mode, Sizes4 sizes, uintptr_t a,
                 Sizes4 sa, uintptr_t g, Sizes4 sg, uintptr_t out, uintptr_t ws, uintptr_t stream) {
  check_common(device, dtype, mode, sizes);
  check_strides("activation", sa);
  check_strides("gradient", sg);
  check_ptr("activation", a);
  check_ptr("gradient", g);
  check_ptr("out", out);
  check_ptr("workspace", ws);
  GwmProblem p{sizes[0], sizes[1], sizes[2], sizes[3], view_of(sa), view_of(sg)};
  py::gil_scoped_release release;
  if (device == 0) {
    grad_weighted_map_forward_cpu(static_cast<DType>(dtype), static_cast<GwmMode>(mode), p,
                                  reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(g),
                                  reinterpret_cast<void*>(out), reinterpret_cast<void*>(ws));
  } else {
#ifdef CAMFAST_WITH_CUDA
    grad_weighted_map_forward_cuda(static_cast<DType>(dtype), static_cast<GwmMode>(mode), p,
                                   reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(g),
                                   reinterpret_cast<void*>(out), reinterpret_cast<void*>(ws),
                                   device_index, reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}

void gwm_backward(int device, int device_index, int dtype, int mode, Sizes4 sizes, uintptr_t a,
                  Sizes4 sa, uintptr_t g, Sizes4 sg, uintptr_t out, uintptr_t grad_out, uintptr_t da,
                  Sizes4 sda, uintptr_t dg, Sizes4 sdg, uintptr_t ws, uintptr_t stream) {
  check_common(device, dtype, mode, sizes);
  check_strides("activation", sa);
  check_strides("gradient", sg);
  check_strides("grad_activation", sda);
  check_strides("grad_gradient", sdg);
  check_ptr("activation", a);
  check_ptr("gradient", g);
  check_ptr("out", out);
  check_ptr("grad_out", grad_out);
  check_ptr("grad_activation", da);
  check_ptr("grad_gradient", dg);
  check_ptr("workspace", ws);
  GwmProblem p{sizes[0], sizes[1], sizes[2], sizes[3], view_of(sa), view_of(sg)};
  py::gil_scoped_release release;
  if (device == 0) {
    grad_weighted_map_backward_cpu(static_cast<DType>(dtype), static_cast<GwmMode>(mode), p,
                                   reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(g),
                                   reinterpret_cast<const void*>(out),
                                   reinterpret_cast<const void*>(grad_out), reinterpret_cast<void*>(da),
                                   view_of(sda), reinterpret_cast<void*>(dg), view_of(sdg),
                                   reinterpret_cast<void*>(ws));
  } else {
#ifdef CAMFAST_WITH_CUDA
    grad_weighted_map_backward_cuda(static_cast<DType>(dtype), static_cast<GwmMode>(mode), p,
                                    reinterpret_cast<const void*>(a), reinterpret_cast<const void*>(g),
                                    reinterpret_cast<const void*>(out),
                                    reinterpret_cast<const void*>(grad_out), reinterpret_cast<void*>(da),
                                    view_of(sda), reinterpret_cast<void*>(dg), view_of(sdg),
                                    reinterpret_cast<void*>(ws), device_index,
                                    reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}


// ---- upsample_aggregate: one entry per layer in each list (pointers, [h, w], strides) ----
using Sizes2 = std::array<int64_t, 2>;
using Sizes3 = std::array<int64_t, 3>;

std::vector<UaLayer> ua_layers(int device, int dtype, int reduce, int normalize, const Sizes3& bhw,
                               const std::vector<uintptr_t>& data, const std::vector<Sizes2>& sizes,
                               const std::vector<Sizes3>& strides, const std::vector<double>& weights) {
  require(device == 0 || device == 1, "camfast._C: device must be 0 (cpu) or 1 (cuda)");
#ifndef CAMFAST_WITH_CUDA
  require(device == 0, "camfast._C: this build has no CUDA kernels (rebuild with CAMFAST_CUDA=ON)");
#endif
  require(dtype >= 0 && dtype <= 3, "camfast._C: unknown dtype code " + std::to_string(dtype));
  require(reduce >= 0 && reduce <= 2, "camfast._C: unknown reduce code " + std::to_string(reduce));
  require(normalize >= 0 && normalize <= 1, "camfast._C: unknown normalize code " + std::to_string(normalize));
  for (int i = 0; i < 3; ++i)
    require(bhw[i] > 0, "camfast._C: every size must be positive, got sizes[" + std::to_string(i) +
                            "]=" + std::to_string(bhw[i]));
  const size_t L = data.size();
  require(L >= 1 && L <= static_cast<size_t>(kUaMaxLayers),
          "camfast._C: between 1 and " + std::to_string(kUaMaxLayers) + " layers are supported, got " +
              std::to_string(L));
  require(sizes.size() == L && strides.size() == L && weights.size() == L,
          "camfast._C: maps, map_sizes, map_strides and weights must have one entry per layer");
  std::vector<UaLayer> layers(L);
  for (size_t l = 0; l < L; ++l) {
    const std::string at = "maps[" + std::to_string(l) + "]";
    check_ptr(at.c_str(), data[l]);
    require(sizes[l][0] > 0 && sizes[l][1] > 0, "camfast._C: every size must be positive in " + at);
    for (int i = 0; i < 3; ++i) require(strides[l][i] >= 0, "camfast._C: negative stride in " + at);
    layers[l] = UaLayer{reinterpret_cast<const void*>(data[l]), sizes[l][0], sizes[l][1], strides[l][0],
                        strides[l][1], strides[l][2], weights[l], nullptr, 0, 0, 0};
  }
  return layers;
}

void ua_forward(int device, int device_index, int dtype, int reduce, int normalize, Sizes3 sizes,
                std::vector<uintptr_t> maps, std::vector<Sizes2> map_sizes, std::vector<Sizes3> map_strides,
                std::vector<double> weights, uintptr_t out, uintptr_t ws, uintptr_t stream) {
  std::vector<UaLayer> layers =
      ua_layers(device, dtype, reduce, normalize, sizes, maps, map_sizes, map_strides, weights);
  check_ptr("out", out);
  check_ptr("workspace", ws);
  const UaProblem p{sizes[0], sizes[1], sizes[2], static_cast<int64_t>(layers.size()),
                    static_cast<UaReduce>(reduce), static_cast<UaNormalize>(normalize)};
  py::gil_scoped_release release;
  if (device == 0) {
    upsample_aggregate_forward_cpu(static_cast<DType>(dtype), p, layers.data(), reinterpret_cast<void*>(out),
                                   reinterpret_cast<void*>(ws));
  } else {
#ifdef CAMFAST_WITH_CUDA
    upsample_aggregate_forward_cuda(static_cast<DType>(dtype), p, layers.data(), reinterpret_cast<void*>(out),
                                    reinterpret_cast<void*>(ws), device_index, reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}

void ua_backward(int device, int device_index, int dtype, int reduce, int normalize, Sizes3 sizes,
                 std::vector<uintptr_t> maps, std::vector<Sizes2> map_sizes, std::vector<Sizes3> map_strides,
                 std::vector<double> weights, uintptr_t grad_out, std::vector<uintptr_t> grads,
                 std::vector<Sizes3> grad_strides, uintptr_t ws, uintptr_t stream) {
  std::vector<UaLayer> layers =
      ua_layers(device, dtype, reduce, normalize, sizes, maps, map_sizes, map_strides, weights);
  require(grads.size() == layers.size() && grad_strides.size() == layers.size(),
          "camfast._C: grads and grad_strides must have one entry per layer");
  for (size_t l = 0; l < layers.size(); ++l) {
    const std::string at = "grads[" + std::to_string(l) + "]";
    check_ptr(at.c_str(), grads[l]);
    for (int i = 0; i < 3; ++i) require(grad_strides[l][i] >= 0, "camfast._C: negative stride in " + at);
    layers[l].grad = reinterpret_cast<void*>(grads[l]);
    layers[l].gsb = grad_strides[l][0];
    layers[l].gsh = grad_strides[l][1];
    layers[l].gsw = grad_strides[l][2];
  }
  check_ptr("grad_out", grad_out);
  check_ptr("workspace", ws);
  const UaProblem p{sizes[0], sizes[1], sizes[2], static_cast<int64_t>(layers.size()),
                    static_cast<UaReduce>(reduce), static_cast<UaNormalize>(normalize)};
  py::gil_scoped_release release;
  if (device == 0) {
    upsample_aggregate_backward_cpu(static_cast<DType>(dtype), p, layers.data(),
                                    reinterpret_cast<const void*>(grad_out), reinterpret_cast<void*>(ws));
  } else {
#ifdef CAMFAST_WITH_CUDA
    upsample_aggregate_backward_cuda(static_cast<DType>(dtype), p, layers.data(),
                                     reinterpret_cast<const void*>(grad_out), reinterpret_cast<void*>(ws),
                                     device_index, reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}

// ---- thresholded_avg_pool2d: x [B, C, H, W] (strided); pooled, tau, count, grad_out [B, C] contiguous ----
TapProblem tap_problem(int device, int dtype, Sizes4 sizes, uintptr_t x, Sizes4 sx, double theta) {
  check_common(device, dtype, 0, sizes);
  check_strides("x", sx);
  check_ptr("x", x);
  require(theta >= 0.0 && theta <= 1.0, "camfast._C: theta must be in [0, 1], got " + std::to_string(theta));
  return TapProblem{sizes[0], sizes[1], sizes[2], sizes[3], view_of(sx), theta};
}

void tap_forward(int device, int device_index, int dtype, Sizes4 sizes, uintptr_t x, Sizes4 sx, double theta,
                 uintptr_t pooled, uintptr_t tau, uintptr_t count, uintptr_t stream) {
  const TapProblem p = tap_problem(device, dtype, sizes, x, sx, theta);
  check_ptr("pooled", pooled);
  check_ptr("tau", tau);
  check_ptr("count", count);
  py::gil_scoped_release release;
  if (device == 0) {
    thresholded_avg_pool2d_forward_cpu(static_cast<DType>(dtype), p, reinterpret_cast<const void*>(x),
                                       reinterpret_cast<void*>(pooled), reinterpret_cast<void*>(tau),
                                       reinterpret_cast<void*>(count));
  } else {
#ifdef CAMFAST_WITH_CUDA
    thresholded_avg_pool2d_forward_cuda(static_cast<DType>(dtype), p, reinterpret_cast<const void*>(x),
                                        reinterpret_cast<void*>(pooled), reinterpret_cast<void*>(tau),
                                        reinterpret_cast<void*>(count), device_index,
                                        reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}

void tap_backward(int device, int device_index, int dtype, Sizes4 sizes, uintptr_t x, Sizes4 sx, uintptr_t tau,
                  uintptr_t count, uintptr_t grad_out, uintptr_t grad_x, Sizes4 sdx, uintptr_t stream) {
  const TapProblem p = tap_problem(device, dtype, sizes, x, sx, 0.0);
  check_strides("grad_x", sdx);
  check_ptr("tau", tau);
  check_ptr("count", count);
  check_ptr("grad_out", grad_out);
  check_ptr("grad_x", grad_x);
  py::gil_scoped_release release;
  if (device == 0) {
    thresholded_avg_pool2d_backward_cpu(static_cast<DType>(dtype), p, reinterpret_cast<const void*>(x),
                                        reinterpret_cast<const void*>(tau), reinterpret_cast<const void*>(count),
                                        reinterpret_cast<const void*>(grad_out), reinterpret_cast<void*>(grad_x),
                                        view_of(sdx));
  } else {
#ifdef CAMFAST_WITH_CUDA
    thresholded_avg_pool2d_backward_cuda(static_cast<DType>(dtype), p, reinterpret_cast<const void*>(x),
                                         reinterpret_cast<const void*>(tau), reinterpret_cast<const void*>(count),
                                         reinterpret_cast<const void*>(grad_out), reinterpret_cast<void*>(grad_x),
                                         view_of(sdx), device_index, reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}

// ---- box_filter / guided_filter: sizes, radius, raw pointers and element strides ----
void bf_run(int device, int device_index, int dtype, bool backward, Sizes4 sizes, int64_t radius, uintptr_t x,
            Sizes4 sx, uintptr_t out, Sizes4 so, uintptr_t ws, uintptr_t stream) {
  check_common(device, dtype, 0, sizes);
  require(radius >= 0, "camfast._C: radius must be non-negative");
  check_strides("x", sx);
  check_strides("out", so);
  check_ptr("x", x);
  check_ptr("out", out);
  const BoxProblem p{sizes[0], sizes[1], sizes[2], sizes[3], radius};
  py::gil_scoped_release release;
  if (device == 0) {
    (void)ws;
    box_filter_cpu(static_cast<DType>(dtype), p, backward, reinterpret_cast<const void*>(x), view_of(sx),
                   reinterpret_cast<void*>(out), view_of(so));
  } else {
#ifdef CAMFAST_WITH_CUDA
    box_filter_cuda(static_cast<DType>(dtype), p, backward, reinterpret_cast<const void*>(x), view_of(sx),
                    reinterpret_cast<void*>(out), view_of(so), reinterpret_cast<void*>(ws), device_index,
                    reinterpret_cast<void*>(stream));
#else
    (void)device_index;
    (void)stream;
#endif
  }
}

void gf_run(int device, int dtype, std::array<int64_t, 5> sizes, int64_t radius, double eps, int border,
            bool adjoint, bool coeffs_out, uintptr_t guide, Sizes4 sg, uintptr_t src, Sizes4 ss, uintptr_t out,
            Sizes4 so) {
  require(device == 0, "camfast._C: guided_filter has CPU kernels only");
  require(dtype >= 0 && dtype <= 3, "camfast._C: unknown dtype code " + std::to_string(dtype));
  for (int i = 0; i < 5; ++i) require(sizes[i] > 0, "camfast._C: every size must be positive");
  require(sizes[1] == 1 || sizes[1] == 3, "camfast._C: the guide must have 1 or 3 channels");
  require(radius >= 0, "camfast._C: radius must be non-negative");
  require(eps > 0, "camfast._C: eps must be positive");
  require(border == 0 || border == 1, "camfast._C: unknown border code");
  require(border == 0 || (radius < sizes[3] && radius < sizes[4]),
          "camfast._C: reflect border needs radius < H and radius < W");
  require(!(adjoint && border != 0), "camfast._C: the adjoint is defined for the truncate border only");
  check_strides("guide", sg);
  check_strides("src", ss);
  check_strides("out", so);
  check_ptr("guide", guide);
  check_ptr("src", src);
  check_ptr("out", out);
  const GfProblem p{sizes[0], sizes[1], sizes[2], sizes[3], sizes[4], radius, eps,
                    static_cast<BoxBorder>(border), adjoint, coeffs_out};
  py::gil_scoped_release release;
  guided_filter_cpu(static_cast<DType>(dtype), p, reinterpret_cast<const void*>(guide), view_of(sg),
                    reinterpret_cast<const void*>(src), view_of(ss), reinterpret_cast<void*>(out), view_of(so));
}

}  // namespace

PYBIND11_MODULE(_C, m) {
  m.doc() = "camfast compiled kernels (no libtorch): raw pointers, sizes and strides";
  py::register_exception_translator([](std::exception_ptr p) {
    try {
      if (p) std::rethrow_exception(p);
    } catch (const std::invalid_argument& e) {
      PyErr_SetString(PyExc_ValueError, e.what());
    }
  });
  m.def("source_hash", []() { return std::string(CAMFAST_SOURCE_HASH); },
        "SHA-256 fingerprint of the csrc/ files this module was built from");
  m.def("has_cuda", []() {
#ifdef CAMFAST_WITH_CUDA
    return true;
#else
    return false;
#endif
  });
  m.def("openmp", []() {
#ifdef _OPENMP
    return true;
#else
    return false;
#endif
  });
  m.def("grad_weighted_map_forward", &gwm_forward, py::arg("device"), py::arg("device_index"),
        py::arg("dtype"), py::arg("mode"), py::arg("sizes"), py::arg("a"), py::arg("a_strides"),
        py::arg("g"), py::arg("g_strides"), py::arg("out"), py::arg("workspace"), py::arg("stream"));
  m.def("grad_weighted_map_backward", &gwm_backward, py::arg("device"), py::arg("device_index"),
        py::arg("dtype"), py::arg("mode"), py::arg("sizes"), py::arg("a"), py::arg("a_strides"),
        py::arg("g"), py::arg("g_strides"), py::arg("out"), py::arg("grad_out"), py::arg("grad_a"),
        py::arg("grad_a_strides"), py::arg("grad_g"), py::arg("grad_g_strides"), py::arg("workspace"),
        py::arg("stream"));
  m.def("upsample_aggregate_forward", &ua_forward, py::arg("device"), py::arg("device_index"),
        py::arg("dtype"), py::arg("reduce"), py::arg("normalize"), py::arg("sizes"), py::arg("maps"),
        py::arg("map_sizes"), py::arg("map_strides"), py::arg("weights"), py::arg("out"), py::arg("workspace"),
        py::arg("stream"));
  m.def("upsample_aggregate_backward", &ua_backward, py::arg("device"), py::arg("device_index"),
        py::arg("dtype"), py::arg("reduce"), py::arg("normalize"), py::arg("sizes"), py::arg("maps"),
        py::arg("map_sizes"), py::arg("map_strides"), py::arg("weights"), py::arg("grad_out"), py::arg("grads"),
        py::arg("grad_strides"), py::arg("workspace"), py::arg("stream"));
  m.def("thresholded_avg_pool2d_forward", &tap_forward, py::arg("device"), py::arg("device_index"),
        py::arg("dtype"), py::arg("sizes"), py::arg("x"), py::arg("x_strides"), py::arg("theta"),
        py::arg("pooled"), py::arg("tau"), py::arg("count"), py::arg("stream"));
  m.def("thresholded_avg_pool2d_backward", &tap_backward, py::arg("device"), py::arg("device_index"),
        py::arg("dtype"), py::arg("sizes"), py::arg("x"), py::arg("x_strides"), py::arg("tau"), py::arg("count"),
        py::arg("grad_out"), py::arg("grad_x"), py::arg("grad_x_strides"), py::arg("stream"));
  m.def("box_filter", &bf_run, py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("backward"),
        py::arg("sizes"), py::arg("radius"), py::arg("x"), py::arg("x_strides"), py::arg("out"),
        py::arg("out_strides"), py::arg("workspace"), py::arg("stream"));
  m.def("guided_filter", &gf_run, py::arg("device"), py::arg("dtype"), py::arg("sizes"), py::arg("radius"),
        py::arg("eps"), py::arg("border"), py::arg("adjoint"), py::arg("coeffs_out"), py::arg("guide"),
        py::arg("guide_strides"), py::arg("src"), py::arg("src_strides"), py::arg("out"), py::arg("out_strides"));
}
