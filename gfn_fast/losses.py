"""`divergence_loss`: every objective of MATH.md as one differentiable loss."""

from __future__ import annotations

import torch

from gfn_fast import _backend, _checks, ops
from gfn_fast.objective import Objective
from gfn_fast.objectives import Coefficients


def divergence_loss(
    objective: str,
    *,
    log_pf: torch.Tensor,
    log_pb: torch.Tensor | None = None,
    log_reward: torch.Tensor,
    lengths: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    alpha: float = 0.5,
    control_variate: str = "loo",
    log_z: torch.Tensor | float | None = None,
    log_behavior: torch.Tensor | None = None,
    normalization: str = "amari",
    process_group=None,
    validate: bool = True,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """GFlowNet loss whose gradient is the estimator of MATH.md for `objective`.

    Args:
        objective: "tb", "vargrad", "reverse_kl", "forward_kl", "renyi" or "tsallis".
        log_pf: log p_F per trajectory [B], or per step: padded [B, T] (with `lengths`, or
            full rows without) or packed [N] (with `offsets`).
        log_pb: log p_B in the same layout as log_pf, or None for p_B = 1 (tree-shaped spaces).
        log_reward: [B] log R(x) of the terminal objects; treated as a constant.
        lengths: [B] int32/int64 steps per trajectory for the padded layout.
        offsets: [B + 1] int32/int64 segment boundaries for the packed layout.
        alpha: order of "renyi" and "tsallis" (any real; 0 and 1 are forward / reverse KL).
        control_variate: "loo" (leave-one-out, default; needs B >= 2) or "none". Near
            alpha = 1, "none" has variance growing like 1/(alpha - 1)^2; prefer "loo".
            Ignored by "vargrad".
        log_z: log Z. Required for "tb" (a learned parameter); for "tsallis" the reference
            log Z (a learned parameter gets the gradient of MATH.md); for "reverse_kl" used
            in the reported value. Float or 0-dim tensor.
        log_behavior: [B] log q(tau) of the behaviour policy for off-policy batches.
        normalization: "amari" (divides by alpha (alpha - 1), >= 0 for every alpha) or
            "paper" (the paper's scaling, alpha times amari; needs alpha > 0).
        process_group: a torch.distributed group across which the batch is split (any
            split, also uneven or empty on some ranks). Coefficients, value and diagnostics
            are then those of the unsplit batch, and the gradient of each rank's loss is
            scaled by the world size, so that DistributedDataParallel's gradient averaging
            yields exactly the unsplit batch's gradient.
        validate: check values (NaN, inf, -inf rewards, index ranges, coefficient
            overflow) at the cost of host syncs. With False, the index ranges of CPU tensors
            are still checked (that costs nothing). Value checks never run inside
            torch.compile.

    Returns:
        (loss, stats). `loss` is a 0-dim float32 (float64 for float64 inputs) tensor equal
        to stats["value"]; its gradient w.r.t. the per-trajectory sums s = log p_F(tau) and
        b = log p_B(tau | x) is the surrogate coefficients (c, d), and w.r.t. log_z is e.
        stats holds detached tensors: "value" (the estimated divergence or TB loss; for
        tsallis with a given log_z it is measured against that reference log Z and can be
        negative while log_z is off),
        "ess" (in [1, B]), "log_z_hat" (batch estimate of log Z) and "skipped" (bool: the
        batch carried no signal and the gradient is zero).

    Raises:
        TypeError: an argument is of the wrong type (not a tensor, not a number, not a
            ProcessGroup).
        ValueError: an argument of the wrong dtype, shape, device or value; NaN or +inf in
            an input; log_reward = -inf where the divergence is infinite; B < 2 with "loo";
            coefficients that overflow. Messages start with "divergence_loss:" and name the
            argument.
    """
    with _checks.errors_of("divergence_loss"):
        spec = Objective(objective, control_variate, alpha, normalization)
    return objective_loss(
        spec,
        log_pf=log_pf,
        log_pb=log_pb,
        log_reward=log_reward,
        lengths=lengths,
        offsets=offsets,
        log_z=log_z,
        log_behavior=log_behavior,
        process_group=process_group,
        validate=validate,
        caller="divergence_loss",
    )


def objective_loss(
    objective: Objective,
    *,
    log_pf: torch.Tensor,
    log_pb: torch.Tensor | None = None,
    log_reward: torch.Tensor,
    lengths: torch.Tensor | None = None,
    offsets: torch.Tensor | None = None,
    log_z=None,
    log_behavior: torch.Tensor | None = None,
    process_group=None,
    validate: bool = True,
    caller: str = "divergence_loss",
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """`divergence_loss` for an already checked `Objective`; errors are prefixed by `caller`."""
    with _checks.errors_of(caller):
        inputs = _checked_inputs(
            objective,
            log_pf,
            log_pb,
            log_reward,
            lengths,
            offsets,
            log_z,
            log_behavior,
            process_group,
            validate,
        )
    per_step, log_z = inputs
    library = _backend.kernel_library(log_pf) if per_step and process_group is None else None
    if library is not None:
        loss, coefficients = ops.divergence_from_steps(
            library, log_pf, log_pb, log_reward, log_behavior, log_z, lengths, offsets, objective
        )
    else:
        s = ops.segment_sum(log_pf, lengths, offsets) if per_step else log_pf
        b = None
        if log_pb is not None:
            b = ops.segment_sum(log_pb, lengths, offsets) if per_step else log_pb
        coefficients = ops.batch_coefficients(
            s, b, log_reward, log_behavior, log_z, objective, process_group
        )
        loss = _surrogate(coefficients, s, b, log_z, _world_size(process_group))
    if _checks.value_checks(validate):
        with _checks.errors_of(caller):
            _check_outputs(objective, coefficients)
    stats = {
        "value": coefficients.value,
        "ess": coefficients.ess,
        "log_z_hat": coefficients.log_z_hat,
        "skipped": coefficients.skipped,
    }
    return loss, stats


def _checked_inputs(
    objective,
    log_pf,
    log_pb,
    log_reward,
    lengths,
    offsets,
    log_z,
    log_behavior,
    process_group,
    validate,
) -> tuple[bool, torch.Tensor | None]:
    """Checks every input; returns (per_step, log_z as a 0-dim tensor or None)."""
    _checks.require_tensor("log_pf", log_pf)
    _checks.require_tensor("log_reward", log_reward)
    if log_reward.dim() != 1:
        raise ValueError(
            f"log_reward: expected a 1-D tensor [B], got shape {tuple(log_reward.shape)}"
        )
    per_step = lengths is not None or offsets is not None or log_pf.dim() != 1
    if per_step:
        batch = _checks.segment_layout("log_pf", log_pf, lengths, offsets)[0]
    else:
        batch = log_pf.shape[0]
    _checks.require_shape("log_reward", log_reward, (batch,), "[B] from log_pf")
    if log_pb is not None:
        _checks.require_tensor("log_pb", log_pb)
        _checks.require_shape("log_pb", log_pb, tuple(log_pf.shape), "like log_pf")
    if log_behavior is not None:
        _checks.require_tensor("log_behavior", log_behavior)
        _checks.require_shape("log_behavior", log_behavior, (batch,), "[B]")
    log_z = _checks.real_scalar_tensor("log_z", log_z, log_pf)
    _checks.require_same_device(
        "log_pf",
        log_pf,
        log_pb=log_pb,
        log_reward=log_reward,
        log_behavior=log_behavior,
        log_z=log_z,
    )
    _checks.require_process_group(process_group)
    local_k = batch if process_group is None else None  # the global K is checked later
    objective.check_batch(local_k, has_log_z=log_z is not None, off_policy=log_behavior is not None)
    if per_step and _checks.index_checks(validate, log_pf):
        _checks.check_layout_values(tuple(log_pf.shape), lengths, offsets)
    if _checks.value_checks(validate):
        _check_values(
            objective, log_pf, log_pb, log_reward, lengths, offsets, log_behavior, log_z, per_step
        )
    return per_step, log_z


def _world_size(process_group) -> int:
    if process_group is None:
        return 1
    import torch.distributed as dist

    return dist.get_world_size(process_group)


def _surrogate(coefficients: Coefficients, s, b, log_z, world_size: int = 1) -> torch.Tensor:
    """value + (L - L.detach()): the divergence as value, the estimator as gradient.

    Each rank of a split batch holds its own trajectories' terms, scaled by the world size
    for DDP's averaging; e multiplies log Z, which every rank shares, so it is not scaled.
    """
    loss = coefficients.value
    terms = [
        (world_size * coefficients.c, s),
        (world_size * coefficients.d, b),
        (coefficients.e, log_z),
    ]
    for coefficient, x in terms:
        if x is not None and x.requires_grad:
            # Cast so a float64 log_pb beside a float32 log_pf keeps the loss float32.
            weighted = (coefficient * x).sum().to(loss.dtype)
            loss = loss + (weighted - weighted.detach())
    return loss


def _check_values(
    objective, log_pf, log_pb, log_reward, lengths, offsets, log_behavior, log_z, per_step
) -> None:
    """The host-syncing checks of MATH.md's edge-case contract."""
    with torch.no_grad():
        for name, x in (("log_pf", log_pf), ("log_pb", log_pb)):
            if x is not None:
                total = ops.segment_sum(x, lengths, offsets) if per_step else x
                _checks.check_finite(f"{name} (summed over each trajectory)", total)
        if log_behavior is not None:
            _checks.check_finite("log_behavior", log_behavior)
        if log_z is not None:
            _checks.check_finite("log_z", log_z)
        _checks.check_finite("log_reward", log_reward, allow_neg_inf=True)
        zero_rewards = int(torch.isneginf(log_reward).sum())
        if zero_rewards and objective.needs_finite_rewards:
            raise ValueError(
                f"log_reward: {zero_rewards} of {log_reward.numel()} trajectories have "
                f"log_reward = -inf (zero reward), where {objective.describe()} is infinite. "
                "Clamp the log-rewards (e.g. log_reward.clamp_min(-1e3)) or use forward_kl, "
                "or renyi/tsallis with alpha < 1."
            )


def _check_outputs(objective: Objective, coefficients: Coefficients) -> None:
    for name in ("c", "d", "e", "value"):
        x = getattr(coefficients, name)
        if not bool(torch.isfinite(x).all()):
            raise ValueError(
                f"alpha: the {objective.name} coefficients overflowed ({name} is not finite) "
                f"with alpha={objective.alpha}; the log-weights l = log R + log p_B - log p_F "
                "span too wide a range for this order. Use renyi (self-normalised), an alpha "
                "closer to 1, or clamp the log-rewards."
            )
