"""Fixtures of the op suites: the device under test and the tolerance table.

Every test of tests/ops/ takes the `device` fixture, so the same matrix runs on every
device: "cpu" (the native C++ kernels), "cuda_emulated" (the CUDA kernel sources run on the
CPU by the emulated SIMT runtime) and "cuda" (a GPU, when present). The pure-PyTorch
reference, on the same device, is the oracle.
"""

from __future__ import annotations

from dataclasses import dataclass

import pytest
import torch

import gfn_fast as gf
from gfn_fast import _backend


@dataclass(frozen=True)
class Device:
    """A device under test: its backend, the torch device of its tensors, and its ops."""

    backend: str
    torch_device: str
    library: object  # torch.ops.gfn_fast or torch.ops.gfn_fast_emulated

    def op(self, name: str):
        """The op `name` of this device's library (for direct calls and opcheck)."""
        return getattr(self.library, name).default

    def generator(self, seed: int) -> torch.Generator:
        return torch.Generator(device=self.torch_device).manual_seed(seed)

    @property
    def is_emulated(self) -> bool:
        return self.backend == "cuda_emulated"

    def __str__(self) -> str:
        return self.backend


def _devices() -> list:
    params = [
        pytest.param(
            "cpu",
            marks=pytest.mark.skipif(
                not _backend.native_available("cpu"), reason="gfn_fast._C has no CPU kernels"
            ),
        ),
        pytest.param(
            "cuda_emulated",
            marks=pytest.mark.skipif(
                not _backend.native_available("cuda_emulated"),
                reason="gfn_fast._C_cuda_emulated is not built (GFN_FAST_CUDA_EMULATION=1)",
            ),
        ),
        pytest.param(
            "cuda",
            marks=[
                pytest.mark.cuda,
                pytest.mark.skipif(
                    not (torch.cuda.is_available() and _backend.native_available("cuda")),
                    reason="needs a GPU and gfn_fast._C built with CUDA kernels",
                ),
            ],
        ),
    ]
    return params


@pytest.fixture(params=_devices())
def device(request) -> Device:
    """The device under test, with its backend active for the test's duration."""
    name = request.param
    library = torch.ops.gfn_fast_emulated if name == "cuda_emulated" else torch.ops.gfn_fast
    gf.use_backend(name)
    try:
        yield Device(name, "cuda" if name == "cuda" else "cpu", library)
    finally:
        gf.use_backend(None)


FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)

# The tolerance table: (rtol, atol) per kind of output and input dtype. Both sides read the
# same inputs; only the order of accumulation differs ("sum": accumulation-dtype sums and
# log-probabilities; "grad": gradients in the input dtype; "coef": the batch step's
# coefficients, float64 math on every device in another order of summation, rounded to the
# output dtype: rtol, with atol = rtol times (1 + the largest magnitude)).
TOLERANCES = {
    "sum": {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (2e-5, 2e-5),
        torch.bfloat16: (2e-5, 2e-5),
        torch.float16: (2e-5, 2e-5),
    },
    "grad": {
        torch.float64: (1e-12, 1e-12),
        torch.float32: (1e-5, 1e-5),
        torch.bfloat16: (1.6e-2, 1e-3),
        torch.float16: (2e-3, 1e-4),
    },
    "coef": {
        torch.float64: (1e-12, None),
        torch.float32: (2e-6, None),
    },
}


def assert_close(actual, expected, kind: str, dtype: torch.dtype, scale: float = 1.0, msg=None):
    """assert_close with the table's tolerance for `kind` and `dtype` (atol times `scale`)."""
    rtol, atol = TOLERANCES[kind][dtype]
    torch.testing.assert_close(
        actual.double().cpu(),
        expected.double().cpu(),
        rtol=rtol,
        atol=atol * scale,
        equal_nan=False,
        msg=msg,
    )
