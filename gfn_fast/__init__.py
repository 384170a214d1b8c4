"""gfn_fast: GFlowNet training with divergence objectives and fused C++/CUDA kernels.

import gfn_fast as gf
loss, stats = gf.divergence_loss("renyi", log_pf=..., log_pb=..., log_reward=...)
"""

from __future__ import annotations

import torch as _torch

from gfn_fast import nn, ops
from gfn_fast._backend import backend, build_info, use_backend
from gfn_fast._checks import check_layout_values as _check_layout_values
from gfn_fast._checks import require_tensor as _require_tensor
from gfn_fast._checks import segment_layout as _segment_layout
from gfn_fast.losses import divergence_loss
from gfn_fast.objectives import CONTROL_VARIATES, OBJECTIVES
from gfn_fast.paper_control_variate import paper_score_control_variate

__version__ = "0.1.0"

__all__ = [
    "CONTROL_VARIATES",
    "OBJECTIVES",
    "backend",
    "build_info",
    "divergence_loss",
    "logprob_from_logits",
    "nn",
    "paper_score_control_variate",
    "segment_logprob",
    "use_backend",
]


def segment_logprob(
    values: _torch.Tensor,
    lengths: _torch.Tensor | None = None,
    offsets: _torch.Tensor | None = None,
) -> _torch.Tensor:
    """Per-trajectory sums of per-step log-probabilities.

    Args:
        values: padded [B, T] (with `lengths`, or full rows without) or packed [N] (with
            `offsets`); float32, float64, bfloat16 or float16; may be non-contiguous.
        lengths: [B] int32/int64 in [0, T]. offsets: [B + 1] int32/int64, non-decreasing.

    Returns:
        [B] float32 (float64 for float64 values); empty segments sum to 0. Differentiable.

    Raises:
        ValueError: wrong dtype or shape, both lengths and offsets, or out-of-range values.
    """
    _require_tensor("values", values)
    _segment_layout("values", values, lengths, offsets)
    _check_layout_values(values, lengths, offsets)
    return ops.segment_sum(values, lengths, offsets)


def logprob_from_logits(
    logits: _torch.Tensor,
    actions: _torch.Tensor,
    lengths: _torch.Tensor | None = None,
    offsets: _torch.Tensor | None = None,
    action_mask: _torch.Tensor | None = None,
) -> _torch.Tensor:
    """Per-trajectory log p(tau) = sum over steps of log softmax(masked logits)[action].

    Args:
        logits: padded [B, T, A] or packed [N, A]; any floating dtype.
        actions: [B, T] or [N] int32/int64 chosen actions (ignored outside segments).
        lengths / offsets: the layout, as in `segment_logprob`.
        action_mask: bool, shaped like logits; False marks an invalid action (probability 0).

    Returns:
        [B] float32 (float64 for float64 logits). Differentiable w.r.t. logits; the native
        backward recomputes the softmax instead of storing it.

    Raises:
        ValueError: wrong shapes or dtypes, an action out of [0, A), or a chosen action that
            action_mask forbids.
    """
    _require_tensor("logits", logits)
    _require_tensor("actions", actions, floating=False)
    _segment_layout("logits", logits, lengths, offsets, trailing=1)
    if tuple(actions.shape) != tuple(logits.shape[:-1]):
        raise ValueError(
            f"actions: expected shape {tuple(logits.shape[:-1])} (logits without the action "
            f"dim), got {tuple(actions.shape)}"
        )
    if action_mask is not None:
        if action_mask.dtype != _torch.bool or action_mask.shape != logits.shape:
            raise ValueError(
                f"action_mask: expected a bool tensor of shape {tuple(logits.shape)}, got "
                f"shape {tuple(action_mask.shape)} and dtype {action_mask.dtype}"
            )
    _check_layout_values(actions, lengths, offsets)
    return ops.logprob_from_logits(logits, actions, action_mask, lengths, offsets)
