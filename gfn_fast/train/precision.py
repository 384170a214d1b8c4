"""Numerical precision of the policy networks: "fp32", or "bf16" (autocast).

Under "bf16" the networks' matmuls run in bfloat16 through `torch.autocast` (a recorded
MLP computes as autocast would, `recorded_mlp`), in the rollout, the batched pass and the
evaluations; parameters, optimiser state and gradients stay
float32, and everything after the networks (log-softmax, log-prob sums, the loss) is
float32 (`scoring` casts the networks' outputs).
"""

from __future__ import annotations

import contextlib

import torch

PRECISIONS = ("fp32", "bf16")


def autocast(precision: str, device: torch.device | str):
    """The context that runs the policy networks in `precision` on `device`'s type.

    Raises:
        ValueError: an unknown precision.
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {precision!r}")
    if precision == "fp32":
        return contextlib.nullcontext()
    return torch.autocast(torch.device(device).type, dtype=torch.bfloat16)


def run_network(network, features: torch.Tensor) -> torch.Tensor:
    """`network(features)` [M, F] -> [M, ...]; under CPU bf16 autocast with the rows padded
    (repeating the last one) to one of a few sizes, so that the kernel shapes repeat.

    oneDNN builds a bf16 matmul kernel for each new shape (measured: ~0.9 ms for a
    256 x 256 layer, against ~0.1 ms to run it at 70 rows), and its cache holds 1024 of
    them; the row count of a rollout step or of a batch changes every time. Sizes m * 2^k,
    8 <= m < 16, pad by at most 1/8 and repeat across steps and batches.
    """
    rows = features.shape[0]
    if features.device.type != "cpu" or not torch.is_autocast_enabled("cpu") or rows == 0:
        return network(features)
    size = padded_rows(rows)
    if size == rows:
        return network(features)
    filler = features[-1:].expand(size - rows, *features.shape[1:])
    return network(torch.cat([features, filler]))[:rows]


def padded_rows(rows: int) -> int:
    """The smallest m * 2^k >= rows with 8 <= m < 16 (16 for rows <= 16)."""
    if rows <= 16:
        return 16
    granule = 1 << (rows.bit_length() - 4)
    return -(-rows // granule) * granule
