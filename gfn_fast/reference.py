"""Pure-PyTorch version of every gfn_fast op: the oracle the native kernels are tested against.

Written for clarity and numerical care, not speed. Accumulation happens in float32 (float64
for float64 inputs), the same contract as the native kernels; the functions are
differentiable through ordinary autograd. Only the steps inside a segment are read, so
padding may hold anything (NaN, out-of-range actions).
"""

from __future__ import annotations

import torch

from gfn_fast import objectives
from gfn_fast._checks import accumulation_dtype
from gfn_fast.objective import Objective


def segment_positions(
    shape: tuple[int, ...], lengths: torch.Tensor | None, offsets: torch.Tensor | None, device
) -> tuple[torch.Tensor, torch.Tensor, int]:
    """(flat step positions inside a segment, their segment index, B) for either layout.

    Padded: shape [B, T], positions index the flattened [B * T]. Packed: shape [N] with
    offsets [B + 1]; positions outside offsets[0] .. offsets[-1] belong to no segment.
    """
    if offsets is not None:
        offsets = offsets.to(torch.int64)
        positions = torch.arange(shape[0], device=device)
        segment = torch.searchsorted(offsets[1:], positions, right=True)
        inside = (positions >= offsets[0]) & (positions < offsets[-1])
        return positions[inside], segment[inside], offsets.numel() - 1
    batch, steps = shape[0], shape[1]
    step = torch.arange(steps, device=device).expand(batch, steps)
    inside = step < steps if lengths is None else step < lengths.to(torch.int64).unsqueeze(1)
    segment = torch.arange(batch, device=device).unsqueeze(1).expand(batch, steps)
    return inside.reshape(-1).nonzero().squeeze(1), segment[inside], batch


def _sum_by_segment(step_values: torch.Tensor, segment: torch.Tensor, batch: int) -> torch.Tensor:
    out = torch.zeros(batch, dtype=step_values.dtype, device=step_values.device)
    return out.index_add(0, segment, step_values)


def segment_sum(
    values: torch.Tensor, lengths: torch.Tensor | None = None, offsets: torch.Tensor | None = None
) -> torch.Tensor:
    """[B] sums of per-step values; padded [B, T] with lengths, or packed [N] with offsets."""
    acc = values.to(accumulation_dtype(values.dtype))
    if offsets is None:
        if lengths is None:
            return acc.sum(1)
        inside = torch.arange(values.shape[1], device=values.device) < lengths.unsqueeze(1)
        # torch.where, not a product: padding may hold NaN or inf and must not leak in.
        return torch.where(inside, acc, torch.zeros((), dtype=acc.dtype, device=acc.device)).sum(1)
    positions, segment, batch = segment_positions(values.shape, lengths, offsets, values.device)
    return _sum_by_segment(acc[positions], segment, batch)


def step_logprobs(
    logits: torch.Tensor, actions: torch.Tensor, action_mask: torch.Tensor | None
) -> torch.Tensor:
    """log softmax(masked logits)[action] for logits [M, A] and actions [M] in [0, A).

    torch.log_softmax computes (x - max) - log sum exp(x - max), which keeps float32
    precise however large the logits are; masked actions have probability 0.
    """
    acc = logits.to(accumulation_dtype(logits.dtype))
    if action_mask is not None:
        acc = acc.masked_fill(~action_mask, float("-inf"))
    index = actions.to(torch.int64).unsqueeze(-1)
    return torch.log_softmax(acc, dim=-1).gather(-1, index).squeeze(-1)


def logprob_from_logits(
    logits: torch.Tensor,
    actions: torch.Tensor,
    action_mask: torch.Tensor | None = None,
    lengths: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
) -> torch.Tensor:
    """[B] sums over each trajectory of log softmax(masked logits)[action].

    Padded: logits [B, T, A], actions [B, T]; packed: logits [N, A], actions [N]. Index
    values are not checked here (gfn_fast.logprob_from_logits checks them).
    """
    num_actions = logits.shape[-1]
    positions, segment, batch = segment_positions(actions.shape, lengths, offsets, logits.device)
    rows = logits.reshape(-1, num_actions)[positions]
    mask = None if action_mask is None else action_mask.reshape(-1, num_actions)[positions]
    step_logp = step_logprobs(rows, actions.reshape(-1)[positions], mask)
    return _sum_by_segment(step_logp, segment, batch)


def batch_coefficients(
    log_pf: torch.Tensor,
    log_pb: torch.Tensor | None,
    log_reward: torch.Tensor,
    log_behavior: torch.Tensor | None,
    log_z: torch.Tensor | None,
    objective: str,
    control_variate: str,
    alpha: float,
    paper_normalization: bool,
    process_group=None,
) -> objectives.Coefficients:
    """The detached batch step of MATH.md on per-trajectory [K] tensors (the op's arguments)."""
    spec = Objective(objective, control_variate, alpha, "paper" if paper_normalization else "amari")
    return objectives.coefficients(
        spec,
        log_pf=log_pf,
        log_pb=log_pb,
        log_reward=log_reward,
        log_behavior=log_behavior,
        log_z=log_z,
        process_group=process_group,
    )
