// camfast._C entry points of camfast::upsample_aggregate (csrc/upsample_aggregate.h), launched
// by camfast/ops/native/upsample_aggregate.py. One entry per layer in each list (data
// pointer, (h, w), strides (b, h, w), weight); out and grad_out [B, H, W] contiguous.
#include <vector>

#include "bind/bind.h"
#include "upsample_aggregate.h"

namespace camfast::bind {
namespace {

struct Layers {
  UaProblem problem;
  std::vector<UaLayer> layers;
};

Layers layers_of(int reduce, int normalize, const Sizes3& bhw, const std::vector<uintptr_t>& maps,
                 const std::vector<Sizes2>& sizes, const std::vector<Sizes3>& strides,
                 const std::vector<double>& weights) {
  const UaReduce r = code<UaReduce>(reduce);
  const UaNormalize n = code<UaNormalize>(normalize);
  check_sizes(bhw);
  const size_t L = maps.size();
  require(L >= 1 && L <= static_cast<size_t>(kUaMaxLayers),
          "camfast._C: between 1 and " + std::to_string(kUaMaxLayers) + " layers are supported, got " +
              std::to_string(L));
  require(sizes.size() == L && strides.size() == L && weights.size() == L,
          "camfast._C: maps, map_sizes, map_strides and weights must have one entry per layer");
  Layers out{UaProblem{bhw[0], bhw[1], bhw[2], static_cast<int64_t>(L), r, n}, std::vector<UaLayer>(L)};
  for (size_t l = 0; l < L; ++l) {
    const std::string at = "maps[" + std::to_string(l) + "]";
    const void* ptr = data(maps[l], at);
    check_sizes(sizes[l], at);
    check_strides(strides[l], at);
    out.layers[l] = UaLayer{ptr, sizes[l][0], sizes[l][1], strides[l][0], strides[l][1], strides[l][2],
                            weights[l], nullptr, 0, 0, 0};
  }
  return out;
}

void forward(int device, int device_index, int dtype, int reduce, int normalize, Sizes3 sizes,
             std::vector<uintptr_t> maps, std::vector<Sizes2> map_sizes, std::vector<Sizes3> map_strides,
             std::vector<double> weights, uintptr_t out, uintptr_t ws, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  const Layers in = layers_of(reduce, normalize, sizes, maps, map_sizes, map_strides, weights);
  void* O = data(out, "out");
  void* W = data(ws, "workspace");
  const UaLayer* ls = in.layers.data();
  run(t, [&] { upsample_aggregate_forward_cpu(t.dtype, in.problem, ls, O, W); },
      [&](auto dev, auto s) { upsample_aggregate_forward_cuda(t.dtype, in.problem, ls, O, W, dev, s); });
}

void backward(int device, int device_index, int dtype, int reduce, int normalize, Sizes3 sizes,
              std::vector<uintptr_t> maps, std::vector<Sizes2> map_sizes, std::vector<Sizes3> map_strides,
              std::vector<double> weights, uintptr_t grad_out, std::vector<uintptr_t> grads,
              std::vector<Sizes3> grad_strides, uintptr_t ws, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  Layers in = layers_of(reduce, normalize, sizes, maps, map_sizes, map_strides, weights);
  require(grads.size() == in.layers.size() && grad_strides.size() == in.layers.size(),
          "camfast._C: grads and grad_strides must have one entry per layer");
  for (size_t l = 0; l < in.layers.size(); ++l) {
    const std::string at = "grads[" + std::to_string(l) + "]";
    in.layers[l].grad = data(grads[l], at);
    check_strides(grad_strides[l], at);
    in.layers[l].gsb = grad_strides[l][0];
    in.layers[l].gsh = grad_strides[l][1];
    in.layers[l].gsw = grad_strides[l][2];
  }
  const void* GO = data(grad_out, "grad_out");
  void* W = data(ws, "workspace");
  const UaLayer* ls = in.layers.data();
  run(t, [&] { upsample_aggregate_backward_cpu(t.dtype, in.problem, ls, GO, W); },
      [&](auto dev, auto s) { upsample_aggregate_backward_cuda(t.dtype, in.problem, ls, GO, W, dev, s); });
}

}  // namespace

void register_upsample_aggregate(py::module_& m) {
  m.def("upsample_aggregate_forward", &forward, py::arg("device"), py::arg("device_index"), py::arg("dtype"),
        py::arg("reduce"), py::arg("normalize"), py::arg("sizes"), py::arg("maps"), py::arg("map_sizes"),
        py::arg("map_strides"), py::arg("weights"), py::arg("out"), py::arg("workspace"), py::arg("stream"));
  m.def("upsample_aggregate_backward", &backward, py::arg("device"), py::arg("device_index"), py::arg("dtype"),
        py::arg("reduce"), py::arg("normalize"), py::arg("sizes"), py::arg("maps"), py::arg("map_sizes"),
        py::arg("map_strides"), py::arg("weights"), py::arg("grad_out"), py::arg("grads"), py::arg("grad_strides"),
        py::arg("workspace"), py::arg("stream"));
}

}  // namespace camfast::bind
