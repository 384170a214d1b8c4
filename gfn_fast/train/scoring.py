"""The batched pass of a training step: differentiable log-probabilities of a `Rollout`.

One forward of p_F over every recorded parent state (skipped when the rollout kept the
graph of its per-step outputs), one of p_B over every child state when p_B is learned, and
the per-trajectory sums through the library's fused `gf.logprob_from_logits` (discrete
actions) or `gf.segment_logprob` (continuous densities, uniform p_B), in the rollout's
layout. Then the loss and one backward.

Under bf16 autocast only the networks run in bf16: their outputs are cast to float32
before the log-softmax, so log-probabilities, their sums and the loss are float32.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

import gfn_fast as gf
from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv
from gfn_fast.train.precision import run_network
from gfn_fast.train.rollout import Rollout


@dataclass
class TrajectoryBatch:
    """B scored trajectories: the inputs of `gf.divergence_loss`, per trajectory.

    log_pf: [B] log p_F(tau), differentiable. log_pb: [B] log p_B(tau | x) (differentiable
        when learned), or None where p_B = 1 (trees).
    log_behavior: [B] log q(tau) of the behaviour policy, or None on-policy.
    log_reward: [B] log R(x). terminal: [B, W] the final states.
    rollout: what was sampled.
    """

    log_pf: torch.Tensor
    log_pb: torch.Tensor | None
    log_behavior: torch.Tensor | None
    log_reward: torch.Tensor
    terminal: torch.Tensor
    rollout: Rollout

    def loss_inputs(self) -> dict[str, torch.Tensor | None]:
        """Keyword arguments for `gf.divergence_loss`."""
        return {
            "log_pf": self.log_pf,
            "log_pb": self.log_pb,
            "log_reward": self.log_reward,
            "log_behavior": self.log_behavior,
        }


def score(
    env: DiscreteEnv | ContinuousEnv,
    policy: torch.nn.Module,
    rollout: Rollout,
    *,
    validate: bool = True,
) -> TrajectoryBatch:
    """Differentiable per-trajectory log p_F and log p_B of `rollout` (see the module
    docstring), under the policy's current parameters.

    Args:
        validate: let the fused ops check their index values (their checks are free on
            CPU tensors; on GPU tensors they sync with the host).
    """
    segments = rollout.segments()
    features = env.features(rollout.parents)
    outputs = rollout.outputs
    if outputs is None:
        outputs = run_network(policy, features)
    if env.action_space == "continuous":
        per_step = policy.log_prob_of(outputs, features, rollout.actions)
        log_pf = gf.segment_logprob(rollout.steps_view(per_step), **segments, validate=validate)
        log_pb = None
    else:
        log_pf = gf.logprob_from_logits(
            rollout.steps_view(outputs.float()),
            rollout.steps_view(rollout.actions),
            action_mask=rollout.steps_view(env.forward_mask(rollout.parents)),
            **segments,
            validate=validate,
        )
        log_pb = _log_pb(env, policy, rollout, validate)
    return TrajectoryBatch(
        log_pf=log_pf,
        log_pb=log_pb,
        log_behavior=rollout.log_behavior,
        log_reward=rollout.log_reward,
        terminal=rollout.terminal,
        rollout=rollout,
    )


def _log_pb(env, policy, rollout, validate) -> torch.Tensor | None:
    """[B] log p_B(tau | x): learned (one forward over the children), uniform over parents
    (a constant), or None for trees."""
    learned = policy.learned_pb
    if env.is_tree and not learned:
        return None
    segments = rollout.segments()
    children = rollout.children
    if not learned:
        per_step = rollout.steps_view(env.log_pb_uniform(children))
        return gf.segment_logprob(per_step, **segments, validate=validate)
    logits = run_network(policy.backward_logits, env.features(children)).float()
    taken = env.backward_action(rollout.parents, rollout.actions)
    return gf.logprob_from_logits(
        rollout.steps_view(logits),
        rollout.steps_view(taken),
        action_mask=rollout.steps_view(env.backward_mask(children)),
        **segments,
        validate=validate,
    )
