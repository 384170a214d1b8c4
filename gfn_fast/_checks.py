"""Input validation shared by the public functions: one rule, every backend and device.

Every message names the argument, what was expected and what was received; the public
functions prefix it with their own name (`errors_of`). Checks that read tensor values need
the data on the host, and never run inside torch.compile:
- index values (lengths, offsets, actions, masked actions; `index_checks`) are checked on CPU
  tensors always (that costs no host sync) and on GPU tensors when validate=True;
- the other values (NaN, inf, zero rewards, coefficient overflow; `value_checks`) when
  validate=True.
Without them the kernels stay memory-safe: out-of-range indices are clamped.
"""

from __future__ import annotations

import contextlib
import numbers

import torch

FLOAT_DTYPES = (torch.float32, torch.float64, torch.bfloat16, torch.float16)
INDEX_DTYPES = (torch.int32, torch.int64)


def accumulation_dtype(dtype: torch.dtype) -> torch.dtype:
    """float64 for float64 inputs, float32 for every other floating dtype."""
    return torch.float64 if dtype == torch.float64 else torch.float32


@contextlib.contextmanager
def errors_of(function: str):
    """Prefixes the ValueError / TypeError raised inside the block with `function`'s name."""
    try:
        yield
    except (ValueError, TypeError) as error:
        raise type(error)(f"{function}: {error}") from None


def index_checks(validate: bool, tensor: torch.Tensor) -> bool:
    """Whether to check index values for data on `tensor`'s device (module docstring)."""
    if torch.compiler.is_compiling():
        return False
    return validate or tensor.device.type == "cpu"


def value_checks(validate: bool) -> bool:
    """Whether to check the other values (module docstring)."""
    return validate and not torch.compiler.is_compiling()


def _describe(tensor: torch.Tensor) -> str:
    return f"shape {tuple(tensor.shape)} and dtype {tensor.dtype}"


def require_tensor(name: str, value, *, kind: str = "floating") -> torch.Tensor:
    """A dense tensor with data, of `kind` "floating", "index" (int32/int64) or "bool"."""
    if not isinstance(value, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor, got {type(value).__name__}")
    if value.layout != torch.strided:
        raise ValueError(f"{name}: expected a dense (strided) tensor, got layout {value.layout}")
    if value.device.type == "meta":
        raise ValueError(f"{name}: expected a tensor with data, got one on the meta device")
    allowed = {"floating": FLOAT_DTYPES, "index": INDEX_DTYPES, "bool": (torch.bool,)}[kind]
    if value.dtype not in allowed:
        what = {"floating": "a floating", "index": "an integer index", "bool": "a bool"}[kind]
        raise ValueError(
            f"{name}: expected {what} tensor with dtype in {[str(d) for d in allowed]}, "
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


def require_process_group(process_group) -> None:
    if process_group is None:
        return
    import torch.distributed as dist

    if not isinstance(process_group, dist.ProcessGroup):
        raise TypeError(
            "process_group: expected a torch.distributed.ProcessGroup or None, got "
            f"{type(process_group).__name__}"
        )


def real_scalar_tensor(name: str, value, like: torch.Tensor) -> torch.Tensor | None:
    """A 0-dim tensor from a Python / NumPy real or a one-element tensor (None stays None)."""
    if value is None:
        return None
    if isinstance(value, torch.Tensor):
        require_tensor(name, value)
        if value.numel() != 1:
            raise ValueError(
                f"{name}: expected a scalar (0-dim or one element), got shape {tuple(value.shape)}"
            )
        return value.reshape(())
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name}: expected a real number or a one-element tensor, got "
            f"{type(value).__name__} {value!r}"
        )
    return torch.tensor(float(value), dtype=accumulation_dtype(like.dtype), device=like.device)


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
        require_tensor("offsets", offsets, kind="index")
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
        require_tensor("lengths", lengths, kind="index")
        require_shape("lengths", lengths, (values.shape[0],), f"[B] from {name}")
        require_same_device(name, values, lengths=lengths)
    return values.shape[0], "padded"


def check_layout_values(steps: tuple[int, ...], lengths, offsets) -> None:
    """Range checks of lengths / offsets for per-step shape `steps` ([B, T] or [N])."""
    if lengths is not None and lengths.numel():
        low, high = int(lengths.min()), int(lengths.max())
        if low < 0 or high > steps[1]:
            raise ValueError(
                f"lengths: expected values in [0, T={steps[1]}], got min {low} and max {high}"
            )
    if offsets is not None:
        first, last = int(offsets[0]), int(offsets[-1])
        if first < 0 or last > steps[0]:
            raise ValueError(
                f"offsets: expected offsets[0] >= 0 and offsets[-1] <= N={steps[0]}, got "
                f"offsets[0]={first} and offsets[-1]={last}"
            )
        if offsets.numel() > 1 and bool((offsets[1:] < offsets[:-1]).any()):
            raise ValueError("offsets: expected a non-decreasing sequence, got a decrease")


def inside_segments(steps: tuple[int, ...], lengths, offsets, device) -> torch.Tensor:
    """Bool mask over per-step shape `steps`: True on the steps of some segment (valid layout)."""
    if offsets is not None:
        positions = torch.arange(steps[0], device=device)
        return (positions >= offsets[0]) & (positions < offsets[-1])
    step = torch.arange(steps[1], device=device).expand(steps)
    if lengths is None:
        return torch.ones(steps, dtype=torch.bool, device=device)
    return step < lengths.unsqueeze(1)


def check_action_values(actions, num_actions: int, action_mask, lengths, offsets) -> None:
    """Every chosen action inside a segment lies in [0, A) and is allowed by the mask."""
    inside = inside_segments(tuple(actions.shape), lengths, offsets, actions.device)
    chosen = actions[inside].to(torch.int64)
    if chosen.numel() and (int(chosen.min()) < 0 or int(chosen.max()) >= num_actions):
        raise ValueError(
            f"actions: expected values in [0, A={num_actions}) inside every segment, got min "
            f"{int(chosen.min())} and max {int(chosen.max())}"
        )
    if action_mask is not None:
        allowed = action_mask[inside].gather(-1, chosen.unsqueeze(-1)).squeeze(-1)
        forbidden = int((~allowed).sum())
        if forbidden:
            raise ValueError(
                f"actions: {forbidden} chosen action(s) are masked out by action_mask "
                "(probability 0)"
            )


def check_finite(name: str, tensor: torch.Tensor, *, allow_neg_inf: bool = False) -> None:
    """ValueError on NaN or +inf (and on -inf unless allowed), with the count (host sync)."""
    # One reduction when all is well (x < inf is False exactly for NaN and +inf); the
    # counts only for the error message.
    fine = tensor < torch.inf if allow_neg_inf else torch.isfinite(tensor)
    if bool(fine.all()):
        return
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
