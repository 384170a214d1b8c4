"""Input validation shared by the public functions.

Every message names the argument, what was expected and what was received. Checks that
need the tensor's values (a host sync) live in `check_*_values` and are skipped when the
caller passes validate=False.
"""

from __future__ import annotations

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


def _describe(tensor: torch.Tensor) -> str:
    return f"shape {tuple(tensor.shape)} and dtype {tensor.dtype}"


def require_tensor(name: str, value, *, floating: bool = True) -> torch.Tensor:
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    allowed = FLOAT_DTYPES if floating else INDEX_DTYPES
    if value.dtype not in allowed:
        kinds = "a floating" if floating else "an integer index"
        raise ValueError(
            f"{name}: expected {kinds} tensor with dtype in {[str(d) for d in allowed]}, "
            f"got {_describe(value)}"
        )
    return value


def require_shape(name: str, tensor: torch.Tensor, shape: tuple[int, ...], meaning: str) -> None:
    if tuple(tensor.shape) != tuple(shape):
        raise ValueError(
            f"{name}: expected shape {meaning} = {tuple(shape)}, got {_describe(tensor)}"
        )


def require_same_device(reference_name: str, reference: torch.Tensor, **others) -> None:
    for name, tensor in others.items():
        if tensor is not None and tensor.device != reference.device:
            raise ValueError(
                f"{name}: expected a tensor on {reference.device} like {reference_name}, "
                f"got one on {tensor.device}"
            )


def segment_layout(
    name: str, values: torch.Tensor, lengths, offsets, *, trailing: int = 0
) -> tuple[int, str]:
    """Checks the layout of per-step `values` and returns (B, "padded" | "packed").

    Padded: values [B, T, *trailing] with lengths [B] or None (full rows).
    Packed: values [N, *trailing] with offsets [B + 1].
    """
    if lengths is not None and offsets is not None:
        raise ValueError("lengths and offsets: expected at most one of them, got both")
    core = values.dim() - trailing
    if offsets is not None:
        require_tensor("offsets", offsets, floating=False)
        if offsets.dim() != 1 or offsets.numel() < 1:
            raise ValueError(
                f"offsets: expected a 1-D tensor [B + 1] with B >= 0, got {_describe(offsets)}"
            )
        if core != 1:
            raise ValueError(
                f"{name}: with offsets (packed layout) expected {1 + trailing} dims [N"
                f"{', A' if trailing else ''}], got {_describe(values)}"
            )
        require_same_device(name, values, offsets=offsets)
        return offsets.numel() - 1, "packed"
    if core != 2:
        raise ValueError(
            f"{name}: expected {2 + trailing} dims [B, T{', A' if trailing else ''}] (padded, "
            f"with lengths) or pass offsets for the packed layout, got {_describe(values)}"
        )
    if lengths is not None:
        require_tensor("lengths", lengths, floating=False)
        require_shape("lengths", lengths, (values.shape[0],), f"[B] from {name}")
        require_same_device(name, values, lengths=lengths)
    return values.shape[0], "padded"


def check_layout_values(values: torch.Tensor, lengths, offsets, *, trailing: int = 0) -> None:
    """Range checks of lengths / offsets against values (host sync)."""
    if lengths is not None:
        steps = values.shape[1]
        if lengths.numel() and (int(lengths.min()) < 0 or int(lengths.max()) > steps):
            raise ValueError(
                f"lengths: expected values in [0, T={steps}], got min {int(lengths.min())} "
                f"and max {int(lengths.max())}"
            )
    if offsets is not None:
        total = values.shape[0]
        if int(offsets[0]) < 0 or int(offsets[-1]) > total:
            raise ValueError(
                f"offsets: expected offsets[0] >= 0 and offsets[-1] <= N={total}, got "
                f"offsets[0]={int(offsets[0])} and offsets[-1]={int(offsets[-1])}"
            )
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            raise ValueError("offsets: expected a non-decreasing sequence, got a decrease")


def check_finite(name: str, tensor: torch.Tensor, *, allow_neg_inf: bool = False) -> None:
    """ValueError on NaN or +inf (and on -inf unless allowed), with the count (host sync)."""
    bad_nan = int(torch.isnan(tensor).sum())
    bad_pos = int(torch.isposinf(tensor).sum())
    bad_neg = 0 if allow_neg_inf else int(torch.isneginf(tensor).sum())
    if bad_nan or bad_pos or bad_neg:
        parts = [
            f"{n} {kind}"
            for n, kind in ((bad_nan, "NaN"), (bad_pos, "+inf"), (bad_neg, "-inf"))
            if n
        ]
        raise ValueError(
            f"{name}: expected finite values, got {', '.join(parts)} of {tensor.numel()}"
        )
