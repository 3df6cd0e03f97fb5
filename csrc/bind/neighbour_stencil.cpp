// camfast._C entry point of camfast::neighbour_stencil (csrc/neighbour_stencil.h), launched by
// camfast/ops/native/neighbour_stencil.py. x, a, w, c [B, C, H, W] strided (zero strides
// allowed); out [B, C, H, W] contiguous. a or c may be 0 (absent: the term is skipped).
#include "bind/bind.h"
#include "neighbour_stencil.h"

namespace camfast::bind {
namespace {

void stencil(int device, int device_index, int dtype, Sizes4 sizes, uintptr_t x, Sizes4 sx, uintptr_t a, Sizes4 sa,
             uintptr_t w, Sizes4 sw, uintptr_t c, Sizes4 sc, uintptr_t out, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  check_sizes(sizes);
  const StencilProblem p{sizes[0], sizes[1], sizes[2], sizes[3]};
  const View4 vx = view(sx, "x"), va = view(sa, "a"), vw = view(sw, "w"), vc = view(sc, "c");
  const void* X = data(x, "x");
  const void* A = a ? data(a, "a") : nullptr;  // 0: the term is absent
  const void* Wt = data(w, "w");
  const void* Ct = c ? data(c, "c") : nullptr;
  void* O = data(out, "out");
  run(t, [&] { neighbour_stencil_cpu(t.dtype, p, X, vx, A, va, Wt, vw, Ct, vc, O); },
      [&](auto dev, auto s) { neighbour_stencil_cuda(t.dtype, p, X, vx, A, va, Wt, vw, Ct, vc, O, dev, s); });
}

}  // namespace

void register_neighbour_stencil(py::module_& m) {
  m.def("neighbour_stencil", &stencil, py::arg("device"), py::arg("device_index"), py::arg("dtype"), py::arg("sizes"),
        py::arg("x"), py::arg("x_strides"), py::arg("a"), py::arg("a_strides"), py::arg("w"), py::arg("w_strides"),
        py::arg("c"), py::arg("c_strides"), py::arg("out"), py::arg("stream"));
}

}  // namespace camfast::bind
