// camfast._C entry points of camfast::box_filter (csrc/box_filter.h), launched by
// camfast/ops/native/box_filter.py. x, out [B, C, H, W] strided; on CUDA a workspace of
// B*C*H*W accumulator elements (the CPU kernel keeps its own).
#include "bind/bind.h"
#include "box_filter.h"

namespace camfast::bind {
namespace {

void box(int device, int device_index, int dtype, bool backward, Sizes4 sizes, int64_t radius, uintptr_t x,
         Sizes4 sx, uintptr_t out, Sizes4 so, uintptr_t ws, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  check_sizes(sizes);
  require(radius >= 0, "camfast._C: radius must be non-negative");
  const BoxProblem p{sizes[0], sizes[1], sizes[2], sizes[3], radius};
  const View4 vx = view(sx, "x");
  const View4 vo = view(so, "out");
  const void* X = data(x, "x");
  void* O = data(out, "out");
  void* W = data(ws, "workspace");
  run(t, [&] { box_filter_cpu(t.dtype, p, backward, X, vx, O, vo); },
      [&](auto dev, auto s) { box_filter_cuda(t.dtype, p, backward, X, vx, O, vo, W, dev, s); });
}

}  // namespace

void register_box_filter(py::module_& m) {
  m.def("box_filter", &box, py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("backward"),
        py::arg("sizes"), py::arg("radius"), py::arg("x"), py::arg("x_strides"), py::arg("out"),
        py::arg("out_strides"), py::arg("workspace"), py::arg("stream"));
}

}  // namespace camfast::bind
