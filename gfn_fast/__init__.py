"""gfn_fast: GFlowNet training with divergence objectives and fused C++/CUDA kernels.

import gfn_fast as gf
loss, stats = gf.divergence_loss("renyi", log_pf=..., log_pb=..., log_reward=...)
"""

from __future__ import annotations

import torch as _torch

from gfn_fast import _checks, nn, ops
from gfn_fast._backend import backend, build_info, use_backend
from gfn_fast.losses import divergence_loss
from gfn_fast.objective import CONTROL_VARIATES, NORMALIZATIONS, OBJECTIVES, Objective
from gfn_fast.paper_control_variate import paper_score_control_variate

__version__ = "0.1.0"

__all__ = [
    "CONTROL_VARIATES",
    "NORMALIZATIONS",
    "OBJECTIVES",
    "Objective",
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
    *,
    validate: bool = True,
) -> _torch.Tensor:
    """Per-trajectory sums of per-step log-probabilities.

    Args:
        values: padded [B, T] (with `lengths`, or full rows without) or packed [N] (with
            `offsets`); float32, float64, bfloat16 or float16; may be non-contiguous.
        lengths: [B] int32/int64 in [0, T]. offsets: [B + 1] int32/int64, non-decreasing,
            in [0, N]. On the device of `values`.
        validate: check the values of lengths / offsets on GPU tensors too (a host sync);
            they are always checked on CPU tensors (that costs nothing), and never inside
            torch.compile.

    Returns:
        [B] float32 (float64 for float64 values); empty segments sum to 0. Differentiable.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: wrong dtype, shape or device, both lengths and offsets, or out-of-range
            index values. Messages start with "segment_logprob:" and name the argument.
    """
    with _checks.errors_of("segment_logprob"):
        _checks.require_tensor("values", values)
        _checks.segment_layout("values", values, lengths, offsets)
        if _checks.index_checks(validate, values):
            _checks.check_layout_values(tuple(values.shape), lengths, offsets)
    return ops.segment_sum(values, lengths, offsets)


def logprob_from_logits(
    logits: _torch.Tensor,
    actions: _torch.Tensor,
    lengths: _torch.Tensor | None = None,
    offsets: _torch.Tensor | None = None,
    action_mask: _torch.Tensor | None = None,
    *,
    validate: bool = True,
) -> _torch.Tensor:
    """Per-trajectory log p(tau) = sum over steps of log softmax(masked logits)[action].

    Args:
        logits: padded [B, T, A] or packed [N, A], A >= 1; any floating dtype.
        actions: [B, T] or [N] int32/int64 chosen actions (ignored outside segments).
        lengths / offsets: the layout, as in `segment_logprob`.
        action_mask: bool, shaped like logits; False marks an invalid action (probability 0).
        validate: as in `segment_logprob`; the values checked are the layout's, the actions'
            range and that no chosen action is masked.

    Returns:
        [B] float32 (float64 for float64 logits), computed as (x_a - max) - log sum
        exp(x - max), precise however large the logits. Differentiable w.r.t. logits; the
        native backward recomputes the softmax instead of storing it.

    Raises:
        TypeError: an argument is not a tensor.
        ValueError: wrong shapes, dtypes or devices, an action out of [0, A), or a chosen
            action that action_mask forbids. Messages start with "logprob_from_logits:".
    """
    with _checks.errors_of("logprob_from_logits"):
        _checks.require_tensor("logits", logits)
        _checks.require_tensor("actions", actions, kind="index")
        _checks.segment_layout("logits", logits, lengths, offsets, trailing=1)
        if logits.shape[-1] < 1:
            raise ValueError(
                f"logits: expected at least one action (A >= 1), got shape {tuple(logits.shape)}"
            )
        _checks.require_shape("actions", actions, tuple(logits.shape[:-1]), "logits without A")
        if action_mask is not None:
            _checks.require_tensor("action_mask", action_mask, kind="bool")
            _checks.require_shape("action_mask", action_mask, tuple(logits.shape), "like logits")
        _checks.require_same_device("logits", logits, actions=actions, action_mask=action_mask)
        if _checks.index_checks(validate, logits):
            steps = tuple(actions.shape)
            _checks.check_layout_values(steps, lengths, offsets)
            _checks.check_action_values(actions, logits.shape[-1], action_mask, lengths, offsets)
    return ops.logprob_from_logits(logits, actions, action_mask, lengths, offsets)
