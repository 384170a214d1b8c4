"""Shared fixtures of the native CPU kernel tests: layouts with poisoned padding, tolerances."""

from __future__ import annotations

import contextlib

import pytest
import torch

import gfn_fast as gf
from gfn_fast import _backend

requires_native_cpu = pytest.mark.skipif(
    not _backend.native_available("cpu"), reason="native CPU kernels of gfn_fast._C not built"
)

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)

# (rtol, atol) of accumulation-dtype outputs (sums, log-probs) per input dtype. Inputs are
# identical on both sides, so only the summation order differs.
SUM_TOL = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (2e-5, 2e-5),
    torch.bfloat16: (2e-5, 2e-5),
    torch.float16: (2e-5, 2e-5),
}
# (rtol, atol) of outputs in the input dtype (gradients).
GRAD_TOL = {
    torch.float64: (1e-12, 1e-12),
    torch.float32: (1e-5, 1e-5),  # |lse| * eps relative error of the recomputed softmax
    torch.bfloat16: (1.6e-2, 1e-3),
    torch.float16: (2e-3, 1e-4),
}


@contextlib.contextmanager
def one_thread():
    """Run the block on one intra-op thread (for thread-count independence checks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def reference_backend():
    """Route gfn_fast's ops to the pure-PyTorch reference inside the block."""
    gf.use_backend("reference")
    try:
        yield
    finally:
        gf.use_backend(None)


def make_layout(batch, steps, layout, index_dtype, generator, *, min_length=0, pad=3):
    """(per-step shape, layout kwargs, inside-mask over the flat steps) of a random batch.

    Padded: [B, T] with lengths. Packed: [N] with offsets that leave `pad` steps of padding
    before the first and after the last segment.
    """
    lengths = torch.randint(min_length, steps + 1, (batch,), generator=generator)
    if layout == "padded":
        inside = torch.arange(steps).expand(batch, steps) < lengths.unsqueeze(1)
        return (batch, steps), {"lengths": lengths.to(index_dtype)}, inside.reshape(-1)
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)]) + pad
    total = int(offsets[-1]) + pad
    inside = (torch.arange(total) >= pad) & (torch.arange(total) < int(offsets[-1]))
    return (total,), {"offsets": offsets.to(index_dtype)}, inside


def poisoned(values: torch.Tensor, inside: torch.Tensor, fill=float("nan")) -> torch.Tensor:
    """values with every step outside the segments overwritten by `fill` (never read)."""
    flat = values.reshape(inside.numel(), -1).clone()
    flat[~inside] = fill
    return flat.reshape(values.shape)


def assert_close(actual, expected, tol, msg=""):
    rtol, atol = tol
    torch.testing.assert_close(
        actual.double(), expected.double(), rtol=rtol, atol=atol, equal_nan=False, msg=msg or None
    )
