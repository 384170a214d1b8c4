"""torchgfn adapter: train torchgfn models with gfn_fast's divergence objectives.

    from gfn_fast.integrations.torchgfn import DivergenceGFlowNet
    gflownet = DivergenceGFlowNet(pf, pb, "renyi", alpha=0.5)     # a torchgfn GFlowNet
    trajectories = gflownet.sample_trajectories(env, n=64, save_logprobs=True)
    loss = gflownet.loss(env, trajectories, recalculate_all_logprobs=False)

torchgfn stores a batch time-major: log-probabilities [T, B], states [T + 1, B] padded
with the sink state s_f, actions [T, B] padded with dummy actions, and
`terminating_idx` [B] = the number of actions of each trajectory, exit included. Its
log p_F covers every action including the exit; its log p_B is 0 at the exit action
and at the first transition (s_1 -> s_0 has a single parent). Both are 0 on padding.
The adapter keeps those conventions and hands gfn_fast the batch-major view
[B, T] with lengths = terminating_idx.

Needs torchgfn (``pip install "gfn_fast[torchgfn]"``); `import gfn_fast` does not.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import torch

try:
    from gfn.containers import Trajectories
    from gfn.env import Env
    from gfn.estimators import Estimator
    from gfn.gflownet import TrajectoryBasedGFlowNet
    from gfn.utils.prob_calculations import get_trajectory_pbs, get_trajectory_pfs
except ImportError as error:  # pragma: no cover - exercised only without torchgfn
    raise ImportError(
        "gfn_fast.integrations.torchgfn needs torchgfn 2.4.1, which is not installed "
        f"({error}). Install the extra: pip install 'gfn_fast[torchgfn]' "
        "(or pip install torchgfn==2.4.1)."
    ) from error

from gfn_fast import _checks
from gfn_fast.losses import objective_loss
from gfn_fast.objective import LEARNED_LOG_Z, Objective


class TrajectoryBatch(NamedTuple):
    """A torchgfn batch in `divergence_loss`'s padded layout.

    log_pf: [B, T] per-step log p_F (a transposed view of torchgfn's [T, B]); carries the
        gradient of the forward policy.
    log_pb: [B, T] per-step log p_B, or None when the backward policy is constant (p_B = 1).
    lengths: [B] int64 steps per trajectory, exit action included (`terminating_idx`).
    log_reward: [B] log R(x) of the terminal states (clipped if asked).
    log_behavior: [B] log q(tau) of the behaviour policy (detached) for off-policy
        batches, else None.
    """

    log_pf: torch.Tensor
    log_pb: torch.Tensor | None
    lengths: torch.Tensor
    log_reward: torch.Tensor
    log_behavior: torch.Tensor | None

    def loss_inputs(self) -> dict[str, torch.Tensor | None]:
        """The keyword arguments of `gfn_fast.divergence_loss` this batch provides."""
        return self._asdict()


def trajectory_batch(
    trajectories: Trajectories,
    pf: Estimator,
    pb: Estimator | None,
    *,
    off_policy: bool = False,
    recalculate_all_logprobs: bool = True,
    log_rewards: torch.Tensor | None = None,
    log_reward_clip_min: float = -math.inf,
    **policy_kwargs: Any,
) -> TrajectoryBatch:
    """Converts a torchgfn `Trajectories` batch into `divergence_loss` inputs.

    Args:
        trajectories: forward, unconditional trajectories, states [T + 1, B].
        pf: torchgfn forward policy estimator (evaluated with gradient).
        pb: torchgfn backward policy estimator, or None for p_B = 1 (tree-shaped DAGs).
        off_policy: the trajectories were sampled from a behaviour policy q other than pf
            (e.g. `sample_trajectories(..., save_logprobs=True, epsilon=0.1)`). Their saved
            `log_probs` are log q per step; log_behavior is their sum, and log p_F is
            always re-evaluated under `pf`.
        recalculate_all_logprobs: re-evaluate log p_F under `pf` (torchgfn's default).
            False reuses the log-probs saved at on-policy sampling (with their graph).
        log_rewards: [B] log-rewards to use instead of the environment's.
        log_reward_clip_min: clamp log-rewards from below, as torchgfn's GFlowNets do.
        **policy_kwargs: forwarded to the estimators' `to_probability_distribution`.

    Returns:
        A `TrajectoryBatch`; `divergence_loss(objective, **batch.loss_inputs(), ...)`.

    Raises:
        ValueError: backward or conditional trajectories, off_policy without saved
            log-probs or with recalculate_all_logprobs=False, or log_rewards of the
            wrong shape.
    """
    if trajectories.is_backward:
        raise ValueError(
            "trajectories: backward trajectories are not supported; convert them with "
            "trajectories.reverse_backward_trajectories()"
        )
    if trajectories.states.conditions is not None:
        raise ValueError(
            "trajectories: conditional trajectories are not supported (gfn_fast's "
            "objectives target one reward); got states with conditions"
        )
    log_behavior = None
    if off_policy:
        if not recalculate_all_logprobs:
            raise ValueError(
                "recalculate_all_logprobs: must be True with off_policy=True, since the "
                "saved log-probs are the behaviour policy's, not pf's"
            )
        if not trajectories.has_log_probs:
            raise ValueError(
                "trajectories: off_policy=True needs the behaviour log-probs saved at "
                "sampling; sample with save_logprobs=True"
            )
        log_behavior = trajectories.log_probs.detach().sum(dim=0)
    log_pf = get_trajectory_pfs(
        pf, trajectories, recalculate_all_logprobs=recalculate_all_logprobs, **policy_kwargs
    )
    log_pb = None if pb is None else get_trajectory_pbs(pb, trajectories, **policy_kwargs)

    if log_rewards is None:
        log_rewards = trajectories.log_rewards
    elif tuple(log_rewards.shape) != (trajectories.batch_size,):
        raise ValueError(
            f"log_rewards: expected shape [B] = ({trajectories.batch_size},), got "
            f"{tuple(log_rewards.shape)}"
        )
    if math.isfinite(log_reward_clip_min):
        log_rewards = log_rewards.clamp_min(log_reward_clip_min)
    return TrajectoryBatch(
        log_pf=log_pf.T,
        log_pb=None if log_pb is None else log_pb.T,
        lengths=trajectories.terminating_idx.long(),
        log_reward=log_rewards,
        log_behavior=log_behavior,
    )


class DivergenceGFlowNet(TrajectoryBasedGFlowNet):
    """A torchgfn GFlowNet whose `loss` is `gfn_fast.divergence_loss(objective, ...)`.

    Drop-in for torchgfn's `TBGFlowNet` / `LogPartitionVarianceGFlowNet`: it samples
    with torchgfn's `Sampler`, takes `Trajectories`, and its `loss(env, trajectories)` has
    their signature. The gradient of the returned loss is the estimator of MATH.md.
    The stats of the last batch (value, ess, log_z_hat, skipped) are in `last_stats`.

    Args:
        pf, pb: torchgfn policy estimators; pb=None needs constant_pb=True (p_B = 1).
        objective: one of gfn_fast.OBJECTIVES ("tb", "vargrad", "reverse_kl",
            "forward_kl", "renyi", "tsallis").
        alpha, control_variate, normalization, process_group, validate: as in
            `divergence_loss`.
        learn_log_z: learn log Z as the parameter `logZ` (torchgfn's name, so
            `logz_parameters()` finds it). Default: True for "tb", which requires it;
            allowed only for "tb" and "tsallis".
        init_log_z: initial value of the learned log Z.
        off_policy: batches come from a behaviour policy (see `trajectory_batch`).
        constant_pb, log_reward_clip_min, debug: as in torchgfn's GFlowNets.

    Raises:
        ValueError: unknown objective, or learn_log_z incompatible with the objective.
    """

    def __init__(
        self,
        pf: Estimator,
        pb: Estimator | None,
        objective: str = "renyi",
        *,
        alpha: float = 0.5,
        control_variate: str = "loo",
        normalization: str = "amari",
        learn_log_z: bool | None = None,
        init_log_z: float = 0.0,
        off_policy: bool = False,
        constant_pb: bool = False,
        log_reward_clip_min: float = -math.inf,
        process_group=None,
        validate: bool = True,
        debug: bool = False,
    ):
        super().__init__(
            pf, pb, constant_pb=constant_pb, log_reward_clip_min=log_reward_clip_min, debug=debug
        )
        with _checks.errors_of("DivergenceGFlowNet"):
            self.spec = Objective(objective, control_variate, alpha, normalization)
            if learn_log_z is None:
                learn_log_z = objective == "tb"
            if objective == "tb" and not learn_log_z:
                raise ValueError("learn_log_z: tb needs a learned log Z, got learn_log_z=False")
            if learn_log_z and objective not in LEARNED_LOG_Z:
                raise ValueError(
                    f"learn_log_z: only {LEARNED_LOG_Z} learn log Z, got objective {objective!r}"
                )
            init = _checks.real_scalar_tensor("init_log_z", init_log_z, torch.zeros(()))
            _checks.require_process_group(process_group)
        self.off_policy = off_policy
        self.process_group = process_group
        self.validate = validate
        self.logZ = torch.nn.Parameter(init.float()) if learn_log_z else None
        self.last_stats: dict[str, torch.Tensor] = {}

    def loss(
        self,
        env: Env,
        trajectories: Trajectories,
        recalculate_all_logprobs: bool = True,
        reduction: str = "mean",
        *,
        log_rewards: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The objective on one batch: a 0-dim tensor whose gradient is the estimator.

        Args:
            env: the environment (unused, kept for torchgfn's signature).
            trajectories: a batch sampled from pf (or from a behaviour policy when
                off_policy=True, with save_logprobs=True).
            recalculate_all_logprobs: False reuses the on-policy log-probs saved at
                sampling, as torchgfn's on-policy training loop does.
            reduction: must be "mean"; divergences are batch-level, not per trajectory.
            log_rewards: optional [B] log-rewards replacing the environment's.

        Raises:
            ValueError: reduction other than "mean", and every error of
                `trajectory_batch` and `divergence_loss`.
        """
        if reduction != "mean":
            raise ValueError(
                f"reduction: divergence objectives are batch-level and support only "
                f'"mean", got {reduction!r}'
            )
        batch = trajectory_batch(
            trajectories,
            self.pf,
            self.pb,
            off_policy=self.off_policy,
            recalculate_all_logprobs=recalculate_all_logprobs,
            log_rewards=log_rewards,
            log_reward_clip_min=self.log_reward_clip_min,
        )
        loss, self.last_stats = objective_loss(
            self.spec,
            **batch.loss_inputs(),
            log_z=self.logZ,
            process_group=self.process_group,
            validate=self.validate,
            caller="DivergenceGFlowNet",
        )
        return loss
