// Whether the CUDA runtime camfast._C links can work in this process (plain C++: included by
// the bindings, which g++ compiles, and by runtime_probe.cu). Defined in CUDA builds only.
#pragma once

#include <string>

namespace camfast {

// "" when the runtime answers and sees at least one device; otherwise why not, with the
// runtime's error string and the runtime/driver versions. Probed once, then cached.
const std::string& cuda_runtime_problem();

}  // namespace camfast
