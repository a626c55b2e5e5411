// snlt_fast._C is imported only for its side effect: loading this shared
// library runs the TORCH_LIBRARY registrations of every op in csrc/. The ops
// are then reached through torch.ops.snlt_fast_C, so no pybind11 is needed.
#include <Python.h>

extern "C" PyMODINIT_FUNC PyInit__C(void) {
  static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_C", nullptr, -1, nullptr};
  return PyModule_Create(&module);
}
