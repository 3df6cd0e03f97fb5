// camfast._C entry points of camfast::grad_weighted_map (csrc/grad_weighted_map.h), launched
// by camfast/ops/native/grad_weighted_map.py. a, g [B, C, H, W] strided; out, grad_out
// [B, H, W] contiguous; workspace of kGwmWorkspace*B*C accumulator elements.
#include "bind/bind.h"
#include "grad_weighted_map.h"

namespace camfast::bind {
namespace {

GwmProblem problem(const Sizes4& s, const Sizes4& sa, const Sizes4& sg) {
  check_sizes(s);
  return GwmProblem{s[0], s[1], s[2], s[3], view(sa, "activation"), view(sg, "gradient")};
}

void forward(int device, int device_index, int dtype, int mode, Sizes4 sizes, uintptr_t a, Sizes4 sa, uintptr_t g,
             Sizes4 sg, uintptr_t out, uintptr_t ws, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  const GwmMode m = code<GwmMode>(mode);
  const GwmProblem p = problem(sizes, sa, sg);
  const void* A = data(a, "activation");
  const void* G = data(g, "gradient");
  void* O = data(out, "out");
  void* W = data(ws, "workspace");
  run(t, [&] { grad_weighted_map_forward_cpu(t.dtype, m, p, A, G, O, W); },
      [&](auto dev, auto s) { grad_weighted_map_forward_cuda(t.dtype, m, p, A, G, O, W, dev, s); });
}

void backward(int device, int device_index, int dtype, int mode, Sizes4 sizes, uintptr_t a, Sizes4 sa, uintptr_t g,
              Sizes4 sg, uintptr_t out, uintptr_t grad_out, uintptr_t da, Sizes4 sda, uintptr_t dg, Sizes4 sdg,
              uintptr_t ws, uintptr_t stream) {
  const Target t = target(device, device_index, dtype, stream);
  const GwmMode m = code<GwmMode>(mode);
  const GwmProblem p = problem(sizes, sa, sg);
  const View4 vda = view(sda, "grad_activation");
  const View4 vdg = view(sdg, "grad_gradient");
  const void* A = data(a, "activation");
  const void* G = data(g, "gradient");
  const void* O = data(out, "out");
  const void* GO = data(grad_out, "grad_out");
  void* DA = data(da, "grad_activation");
  void* DG = data(dg, "grad_gradient");
  void* W = data(ws, "workspace");
  run(t, [&] { grad_weighted_map_backward_cpu(t.dtype, m, p, A, G, O, GO, DA, vda, DG, vdg, W); },
      [&](auto dev, auto s) {
        grad_weighted_map_backward_cuda(t.dtype, m, p, A, G, O, GO, DA, vda, DG, vdg, W, dev, s);
      });
}

}  // namespace

void register_grad_weighted_map(py::module_& m) {
  m.def("grad_weighted_map_forward", &forward, py::arg("device"), py::arg("device_index"), py::arg("dtype"),
        py::arg("mode"), py::arg("sizes"), py::arg("a"), py::arg("a_strides"), py::arg("g"), py::arg("g_strides"),
        py::arg("out"), py::arg("workspace"), py::arg("stream"));
  m.def("grad_weighted_map_backward", &backward, py::arg("device"), py::arg("device_index"), py::arg("dtype"),
        py::arg("mode"), py::arg("sizes"), py::arg("a"), py::arg("a_strides"), py::arg("g"), py::arg("g_strides"),
        py::arg("out"), py::arg("grad_out"), py::arg("grad_a"), py::arg("grad_a_strides"), py::arg("grad_g"),
        py::arg("grad_g_strides"), py::arg("workspace"), py::arg("stream"));
}

}  // namespace camfast::bind
