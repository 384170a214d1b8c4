"""Build of gfn_fast._C: C++ kernels always, CUDA kernels when torch has CUDA and nvcc exists.

GFN_FAST_CUDA=0 or 1 forces the CUDA part off or on. TORCH_CUDA_ARCH_LIST overrides the
default architectures (sm_80 and sm_90, plus PTX).

GFN_FAST_CUDA_EMULATION=1 also builds gfn_fast._C_cuda_emulated: the CUDA kernel sources
compiled as C++ against the emulated SIMT runtime of csrc/cuda/emulation (the cuda_emulated
backend, which runs them on the CPU). Its kernel objects are a static library of their own,
compiled with -fsanitize=thread: the runtime implements that instrumentation's callbacks to
count the kernels' global-memory traffic (no sanitizer runtime is linked).
"""

import glob
import os
import shutil
import sys

import torch
from setuptools import setup
from torch.torch_version import TorchVersion
from torch.utils import cpp_extension

ROOT = os.path.dirname(os.path.abspath(__file__))


def _want_cuda() -> bool:
    forced = os.environ.get("GFN_FAST_CUDA")
    if forced is not None:
        return forced == "1"
    has_nvcc = cpp_extension.CUDA_HOME is not None or shutil.which("nvcc") is not None
    return torch.version.cuda is not None and has_nvcc


def _want_emulation() -> bool:
    return os.environ.get("GFN_FAST_CUDA_EMULATION") == "1"


def _sources(pattern: str) -> list[str]:
    return sorted(os.path.relpath(p, ROOT) for p in glob.glob(os.path.join(ROOT, pattern)))


# torch >= 2.14 headers require C++20 (TorchVersion compares like packaging.version).
STD = "-std=c++20" if TorchVersion(torch.__version__) >= (2, 14) else "-std=c++17"
EMULATION_INCLUDE = [os.path.join(ROOT, "csrc/cuda/emulation/include"), os.path.join(ROOT, "csrc")]
# The CUDA idioms of the kernels (type punning through packs) need no strict aliasing; their
# `#pragma unroll` is nvcc's.
EMULATION_FLAGS = ["-O2", STD, "-Wall", "-Wextra", "-fno-strict-aliasing", "-Wno-unknown-pragmas"]


def _emulated_kernel_inputs() -> list[str]:
    """What the emulated kernel objects are compiled from, beside their wrapper files."""
    patterns = ["csrc/cuda/*.cu", "csrc/cuda/*.cuh", "csrc/cuda/*.h", "csrc/common/*.h"]
    patterns += ["csrc/cuda/emulation/*.h", "csrc/cuda/emulation/include/*.h"]
    return [path for pattern in patterns for path in _sources(pattern)]


def _emulated_kernels():
    """The static library of the CUDA kernel sources compiled against the emulated runtime."""
    return (
        "gfn_fast_emulated_kernels",
        {
            "sources": _sources("csrc/cuda/emulation/kernels/*.cpp"),
            # The wrappers include the .cu sources and the headers: rebuild when any changes.
            "obj_deps": {"": _emulated_kernel_inputs()},
            "include_dirs": EMULATION_INCLUDE,
            "cflags": EMULATION_FLAGS
            + ["-fPIC", "-fsanitize=thread", "--param=tsan-instrument-func-entry-exit=0"],
        },
    )


def _emulated_extension():
    return cpp_extension.CppExtension(
        "gfn_fast._C_cuda_emulated",
        _sources("csrc/common/*.cpp") + _sources("csrc/cuda/emulation/*.cpp"),
        include_dirs=EMULATION_INCLUDE,
        extra_compile_args={"cxx": EMULATION_FLAGS},
        libraries=["gfn_fast_emulated_kernels"],
        # Relink when the kernel library's inputs change.
        depends=_emulated_kernel_inputs() + _sources("csrc/cuda/emulation/kernels/*.cpp"),
    )


def _extension():
    with_cuda = _want_cuda()
    std = STD
    # -fno-trapping-math lets GCC if-convert the selects of the CPU fast_exp (no result changes).
    cxx_flags = ["-O3", "-Wall", "-Wextra", std, "-fno-trapping-math"]
    sources = _sources("csrc/*.cpp") + _sources("csrc/cpu/*.cpp") + _sources("csrc/common/*.cpp")
    include_dirs = [os.path.join(ROOT, "csrc")]
    macros = []
    if not with_cuda:
        return cpp_extension.CppExtension(
            "gfn_fast._C",
            sources,
            include_dirs=include_dirs,
            extra_compile_args={"cxx": cxx_flags + ["-fopenmp"]},
            extra_link_args=["-fopenmp"],
            define_macros=macros,
        )
    os.environ.setdefault("TORCH_CUDA_ARCH_LIST", "8.0;9.0+PTX")
    # build_info's architecture list; ops.cpp stringifies it (no quotes or ';' on the
    # compiler command line, which the build runs through a shell).
    archs = ",".join(os.environ["TORCH_CUDA_ARCH_LIST"].replace(";", " ").split())
    macros += [("GFN_FAST_WITH_CUDA", None), ("GFN_FAST_CUDA_ARCHS", archs)]
    sources += _sources("csrc/cuda/*.cpp") + _sources("csrc/cuda/*.cu")
    return cpp_extension.CUDAExtension(
        "gfn_fast._C",
        sources,
        include_dirs=include_dirs,
        extra_compile_args={
            "cxx": cxx_flags + ["-fopenmp"],
            "nvcc": ["-O3", std, "-lineinfo", "-Xcompiler", "-Wall,-Wextra"],
        },
        extra_link_args=["-fopenmp"],
        define_macros=macros,
    )


class BuildExtension(cpp_extension.BuildExtension.with_options(use_ninja=True)):
    """torch's build_ext that builds the C libraries (the emulated kernels) first, and keeps the
    object files in build/temp-<python>-<torch>-<cpu|cuda>/<extension>, also for pip's
    editable installs (which would compile in a new temporary directory every time), so that
    ninja recompiles only the sources that changed. An explicit --build-temp still wins."""

    def finalize_options(self):
        if self.build_temp is None:
            variant = "cuda" if _want_cuda() else "cpu"
            python = f"py{sys.version_info.major}{sys.version_info.minor}"
            tag = f"{python}-torch{torch.__version__}-{variant}"
            self.build_temp = os.path.join(ROOT, "build", f"temp-{tag}")
        super().finalize_options()

    def build_extension(self, ext):
        # One object directory per extension: both compile csrc/common/*.cpp, with other
        # flags, and would otherwise overwrite (and so recompile) each other's objects.
        base = self.build_temp
        self.build_temp = os.path.join(base, ext.name.rsplit(".", 1)[-1])
        try:
            super().build_extension(ext)
        finally:
            self.build_temp = base

    def run(self):
        if self.distribution.has_c_libraries():
            self.run_command("build_clib")
        super().run()


setup(
    ext_modules=[_extension()] + ([_emulated_extension()] if _want_emulation() else []),
    libraries=[_emulated_kernels()] if _want_emulation() else [],
    cmdclass={"build_ext": BuildExtension},
)
