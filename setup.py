"""Build snlt_fast and its compiled extension snlt_fast._C.

The extension always carries the C++ CPU kernels. It also carries the CUDA
kernels whenever the installed torch is a CUDA build and nvcc is found; a
machine without a GPU can still compile them, given CUDA_HOME and
TORCH_CUDA_ARCH_LIST, which are defaulted below when unset. SNLT_FAST_NO_CUDA=1
leaves the CUDA kernels out; SNLT_FAST_SANITIZE=1 compiles the C++ with
AddressSanitizer and UndefinedBehaviorSanitizer (`make sanitize`).
"""

import glob
import os
import shutil
import sysconfig
from pathlib import Path

from setuptools import find_packages, setup

ROOT = Path(__file__).resolve().parent
DEFAULT_CUDA_HOME = "/usr/local/cuda"
# Hopper first; Ampere and Turing for the cards users have; PTX for newer ones.
DEFAULT_CUDA_ARCHS = "7.5;8.0;8.6;9.0+PTX"


def _find_nvcc():
    if os.environ.get("SNLT_FAST_NO_CUDA") == "1":
        return None
    cuda_home = os.environ.get("CUDA_HOME") or os.environ.get("CUDA_PATH")
    if not cuda_home and Path(DEFAULT_CUDA_HOME, "bin", "nvcc").exists():
        cuda_home = DEFAULT_CUDA_HOME
    if not cuda_home and shutil.which("nvcc"):
        cuda_home = str(Path(shutil.which("nvcc")).resolve().parent.parent)
    if cuda_home and Path(cuda_home, "bin", "nvcc").exists():
        return cuda_home
    return None


def _extension():
    import torch
    from torch.utils import cpp_extension

    cuda_home = _find_nvcc() if torch.version.cuda else None
    if cuda_home:
        # cpp_extension read CUDA_HOME when it was imported: set it there too.
        os.environ.setdefault("CUDA_HOME", cuda_home)
        os.environ.setdefault("TORCH_CUDA_ARCH_LIST", DEFAULT_CUDA_ARCHS)
        cpp_extension.CUDA_HOME = os.environ["CUDA_HOME"]

    sources = sorted(glob.glob("csrc/**/*.cpp", recursive=True))
    # -ffp-contract=off: no fused multiply-add, so every product and sum is
    # rounded as the reference rounds it (bit-exact results across backends);
    # where a kernel wants one, it calls std::fma. -fno-trapping-math lets GCC
    # vectorize loops with conditional expressions on AVX2, -fno-math-errno loops
    # with sqrt (values are unchanged: sqrt is IEEE's either way, errno is not set).
    cxx_flags = ["-O3", "-std=c++20", "-ffp-contract=off", "-fno-trapping-math", "-fno-math-errno", "-fopenmp"]
    link_flags = ["-fopenmp"]
    if os.environ.get("SNLT_FAST_SANITIZE") == "1":
        # `make sanitize`: ASan + UBSan, any report fatal. vptr checks are off because
        # torch's classes come from libraries built without UBSan's type information.
        sanitize = ["-fsanitize=address,undefined", "-fno-sanitize=vptr", "-fno-sanitize-recover=undefined"]
        cxx_flags = [flag for flag in cxx_flags if flag != "-O3"] + ["-O1", "-g", "-fno-omit-frame-pointer"] + sanitize
        link_flags += sanitize
    define_macros = []
    extension_type = cpp_extension.CppExtension
    extra = {"cxx": cxx_flags}
    if cuda_home:
        sources += sorted(glob.glob("csrc/**/*.cu", recursive=True))
        define_macros.append(("SNLT_FAST_WITH_CUDA", None))
        extension_type = cpp_extension.CUDAExtension
        nvcc_flags = ["-O3", "-std=c++20", "--fmad=false", "-lineinfo"]
        # The pip CUDA runtime ships the cuBLAS/cuSPARSE headers that the
        # system toolkit may lack but torch's CUDA headers include.
        pip_cuda_include = Path(sysconfig.get_paths()["purelib"], "nvidia", "cu13", "include")
        if pip_cuda_include.is_dir():
            nvcc_flags += ["-isystem", str(pip_cuda_include)]
            cxx_flags += ["-isystem", str(pip_cuda_include)]
        extra["nvcc"] = nvcc_flags
    return extension_type(
        name="snlt_fast._C",
        sources=sources,
        include_dirs=[str(ROOT / "csrc")],
        define_macros=define_macros,
        extra_compile_args=extra,
        extra_link_args=link_flags,
        py_limited_api=False,
    )


def _build_ext():
    from torch.utils.cpp_extension import BuildExtension

    return BuildExtension.with_options(use_ninja=True)


# Name, version, dependencies and the `snlt` command are in pyproject.toml.
setup(
    # kernels/ sits at the top of the source tree and installs as snlt_fast.kernels
    # (snlt_fast/kernels is a symlink to it, so the source tree imports the same way).
    packages=find_packages(include=["snlt_fast", "snlt_fast.*"]),
    package_data={"snlt_fast.training": ["configs/*.yaml"], "snlt_fast.models": ["default/*"]},
    ext_modules=[_extension()],
    cmdclass={"build_ext": _build_ext()},
    zip_safe=False,
)
