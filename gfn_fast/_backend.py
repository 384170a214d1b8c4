"""Loads the native extension and decides which implementation the ops use.

Order of preference: "cuda" (extension built with CUDA and a GPU present), "cpu" (native
C++ kernels), "reference" (pure PyTorch). The environment variable GFN_FAST_BACKEND=reference
(read once, when gfn_fast is imported) or `use_backend("reference")` forces the pure-PyTorch
path, for tests and benchmarks.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings

import torch

BACKENDS = ("cuda", "cpu", "reference")

_native = None
_load_error: str | None = None
try:
    # Importing registers torch.ops.gfn_fast; import_module gives the real error when missing.
    _native = importlib.import_module("gfn_fast._C")
except ImportError as error:  # extension not built: the reference keeps everything working
    _load_error = str(error)

_forced: str | None = None
_warned = False
# Read once: the backend is asked on every loss call, and os.environ lookups cost as much as
# a small kernel.
_ENV_BACKEND = os.environ.get("GFN_FAST_BACKEND")


def _has_kernel(dispatch_key: str) -> bool:
    if _native is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key("gfn_fast::segment_sum", dispatch_key)


# Kernels register when _C is imported (above), so this is fixed from here on; a plain dict
# lookup also keeps torch.compile(fullgraph=True) from tracing a dispatcher query.
_KERNELS = {key: _has_kernel(key) for key in ("CPU", "CUDA")}


def native_available(device_type: str = "cpu") -> bool:
    """True when the extension has kernels for `device_type` ("cpu" or "cuda")."""
    return _KERNELS.get(device_type.upper(), False)


def _detected() -> str:
    if native_available("cuda") and torch.cuda.is_available():
        return "cuda"
    if native_available("cpu"):
        return "cpu"
    return "reference"


def _warn_fallback_once() -> None:
    global _warned
    if _warned or _forced == "reference" or _ENV_BACKEND == "reference":
        return
    _warned = True
    reason = (
        f"the extension gfn_fast._C failed to import ({_load_error})"
        if _native is None
        else "the extension gfn_fast._C has no CPU kernels registered"
    )
    warnings.warn(
        f"gfn_fast: using the pure-PyTorch reference backend because {reason}. "
        "Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=3,
    )


def backend() -> str:
    """The implementation the ops use now: "cuda", "cpu" or "reference".

    "cuda" means native kernels exist for CUDA tensors (CPU tensors still use the CPU
    kernels); "cpu" means native CPU kernels only; "reference" means pure PyTorch.
    """
    requested = _forced or _ENV_BACKEND
    if requested == "reference":
        return "reference"
    found = _detected()
    if found == "reference":
        _warn_fallback_once()
    return found


def use_backend(name: str | None) -> None:
    """Force a backend: "reference" for pure PyTorch, or None / "auto" to detect again.

    Raises:
        ValueError: `name` is not "reference", "auto" or None, or names a native backend
            whose kernels are not available.
    """
    global _forced
    if name in (None, "auto"):
        _forced = None
        return
    if name not in BACKENDS:
        raise ValueError(f"use_backend: expected one of {BACKENDS} or 'auto', got {name!r}")
    if name != "reference" and not native_available(name):
        raise ValueError(
            f"use_backend: backend {name!r} requested but its native kernels are not available "
            f"(detected backend: {_detected()!r})"
        )
    _forced = None if name != "reference" else "reference"


def use_native(tensor: torch.Tensor) -> bool:
    """Whether ops on `tensor` go to the native kernels."""
    if backend() == "reference":
        return False
    return native_available(tensor.device.type)


def build_info() -> dict:
    """Build facts of the native extension (compiler, CUDA, torch), or why it is missing."""
    if _native is None:
        return {"native": False, "error": _load_error}
    return {"native": True, **json.loads(_native.build_info())}
