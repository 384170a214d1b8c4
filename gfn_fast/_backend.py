"""Loads the native extensions and decides which implementation the ops use.

Backends:
- "cuda": the CUDA kernels for CUDA tensors (the extension built with CUDA, and a GPU);
  CPU tensors still use the native CPU kernels.
- "cpu": the native C++ kernels for CPU tensors.
- "cuda_emulated": the CUDA kernel sources and their op binding, run on the CPU by an
  emulated SIMT runtime (gfn_fast._C_cuda_emulated, built with GFN_FAST_CUDA_EMULATION=1),
  for CPU tensors. For testing the CUDA code without a GPU; never chosen automatically.
- "reference": pure PyTorch (gfn_fast.reference), for every device.

Order of automatic preference: "cuda", "cpu", "reference". GFN_FAST_BACKEND (read once, when
gfn_fast is imported) or `use_backend(name)` forces one.
"""

from __future__ import annotations

import importlib
import json
import os
import warnings

import torch

BACKENDS = ("cuda", "cpu", "cuda_emulated", "reference")
NATIVE_LIBRARY = "gfn_fast"
EMULATED_LIBRARY = "gfn_fast_emulated"


def _load(module: str):
    """(module, None) or (None, why it failed). Importing registers its torch ops."""
    try:
        return importlib.import_module(module), None
    except ImportError as error:
        return None, str(error)


_native, _load_error = _load("gfn_fast._C")
# Built only on request: its absence is no error, unless the backend is asked for.
_emulated, _emulated_error = _load("gfn_fast._C_cuda_emulated")


def _has_kernel(dispatch_key: str) -> bool:
    if _native is None:
        return False
    return torch._C._dispatch_has_kernel_for_dispatch_key(
        f"{NATIVE_LIBRARY}::segment_sum", dispatch_key
    )


# Kernels register when the extensions are imported (above), so this is fixed from here on;
# a plain dict lookup also keeps torch.compile(fullgraph=True) from tracing a dispatcher query.
_KERNELS = {
    "cpu": _has_kernel("CPU"),
    "cuda": _has_kernel("CUDA"),
    "cuda_emulated": _emulated is not None,
}

_forced: str | None = None  # use_backend's choice
_default: str | None = None  # GFN_FAST_BACKEND's, what use_backend(None) returns to
_warned = False


def native_available(device_type: str = "cpu") -> bool:
    """True when native kernels exist for `device_type` ("cpu", "cuda" or "cuda_emulated")."""
    return _KERNELS.get(device_type, False)


def _detected() -> str:
    if native_available("cuda") and torch.cuda.is_available():
        return "cuda"
    if native_available("cpu"):
        return "cpu"
    return "reference"


def _unavailable_reason(name: str) -> str:
    if name == "cuda_emulated":
        return (
            f"gfn_fast._C_cuda_emulated is not built ({_emulated_error}); build it with "
            "`GFN_FAST_CUDA_EMULATION=1 pip install --no-build-isolation -e .`"
        )
    if _native is None:
        return f"the extension gfn_fast._C failed to import ({_load_error})"
    if name == "cuda" and native_available("cuda"):
        return "no GPU is available (torch.cuda.is_available() is False)"
    return f"gfn_fast._C has no {name.upper()} kernels"


def _warn_fallback_once() -> None:
    global _warned
    if _warned:
        return
    _warned = True
    warnings.warn(
        f"gfn_fast: using the pure-PyTorch reference backend because "
        f"{_unavailable_reason('cpu')}. Build it with `pip install --no-build-isolation -e .`.",
        RuntimeWarning,
        stacklevel=3,
    )


def backend() -> str:
    """The implementation the ops use now: "cuda", "cpu", "cuda_emulated" or "reference".

    "cuda" means native kernels exist for CUDA tensors (CPU tensors still use the CPU
    kernels); "cpu" means native CPU kernels only; "cuda_emulated" means the CUDA kernels run
    on the CPU by emulation (CPU tensors); "reference" means pure PyTorch.
    """
    chosen = _forced or _default
    if chosen is not None:
        return chosen
    found = _detected()
    if found == "reference":
        _warn_fallback_once()
    return found


def use_backend(name: str | None) -> None:
    """Force a backend by name (see `BACKENDS`); None or "auto" returns to the default
    (GFN_FAST_BACKEND when set, else detection).

    Raises:
        ValueError: `name` is not a backend, "auto" or None, or names a backend whose kernels
            are not available here (the message says why).
    """
    global _forced
    if name in (None, "auto"):
        _forced = None
        return
    if name not in BACKENDS:
        raise ValueError(
            f"use_backend: name: expected one of {('auto', *BACKENDS)} or None, got {name!r}"
        )
    if name == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"use_backend: backend 'cuda' is not available: {_unavailable_reason(name)}"
        )
    if name != "reference" and not native_available(name):
        raise ValueError(
            f"use_backend: backend {name!r} is not available: {_unavailable_reason(name)} "
            f"(detected backend: {_detected()!r})"
        )
    _forced = name


def kernel_library(tensor: torch.Tensor):
    """The torch.ops library whose kernels run ops on `tensor`, or None for the reference.

    Under "cuda_emulated", CPU tensors go to the emulated CUDA kernels and CUDA tensors to the
    real ones (when built); otherwise the native kernels of the tensor's device, if any.
    """
    name = backend()
    if name == "reference":
        return None
    device = tensor.device.type
    if name == "cuda_emulated" and device == "cpu":
        return torch.ops.gfn_fast_emulated
    return torch.ops.gfn_fast if _KERNELS.get(device, False) else None


def build_info() -> dict:
    """Build facts of the native extension (compiler, CUDA, torch), or why it is missing."""
    if _native is None:
        return {"native": False, "error": _load_error, "cuda_emulation": _emulated is not None}
    return {
        "native": True,
        "cuda_emulation": _emulated is not None,
        **json.loads(_native.build_info()),
    }


def _environment_default() -> str | None:
    """GFN_FAST_BACKEND, checked like use_backend's argument."""
    global _forced
    value = os.environ.get("GFN_FAST_BACKEND")
    if value is None or value in ("", "auto"):
        return None
    try:
        use_backend(value)
    except ValueError as error:
        raise ValueError(f"GFN_FAST_BACKEND={value!r}: {error}") from None
    chosen, _forced = _forced, None
    return chosen


_default = _environment_default()
