"""The batched pass of a training step: differentiable log-probabilities of a `Rollout`.

One forward of p_F over every recorded parent state (skipped when the rollout kept the
graph of its per-step outputs), one of p_B over every child state when p_B is learned, and
the per-trajectory sums through the library's fused `gf.logprob_from_logits` (discrete
actions) or `gf.segment_logprob` (continuous densities, uniform p_B), in the rollout's
layout. Then the loss and one backward. With `distinct_states`, each network runs once
per distinct state of the batch (`distinct`).

Under bf16 autocast only the networks run in bf16: their outputs are cast to float32
before the log-softmax, so log-probabilities, their sums and the loss are float32.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

import gfn_fast as gf
from gfn_fast import ops
from gfn_fast.train.distinct import run_on_distinct
from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv
from gfn_fast.train.precision import run_network
from gfn_fast.train.recorded_mlp import recordable, run_recorded
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
    distinct_states: bool = False,
) -> TrajectoryBatch:
    """Differentiable per-trajectory log p_F and log p_B of `rollout` (see the module
    docstring), under the policy's current parameters.

    Args:
        validate: check the rollout's tensors in the public fused ops (`gf.*`; free on CPU
            tensors, a host sync on GPU tensors). False calls `gfn_fast.ops` directly, for
            rollouts the trainer has just produced: their layout and actions are valid by
            construction, and the checks cost ~0.3 ms a step.
        distinct_states: run p_F (where the rollout's outputs are not reused) and a learned
            p_B once per distinct state of the batch (discrete envs; see `distinct`).
    """
    outputs, continuous = rollout.outputs, env.action_space == "continuous"
    if continuous:
        features = env.features(rollout.parents)
        outputs = run_network(policy, features) if outputs is None else outputs
        per_step = policy.log_prob_of(outputs, features, rollout.actions)
        log_pf = _segment_sum(rollout, per_step, validate)
        log_pb = None
    else:
        if outputs is None:
            run = functools.partial(run_network, policy)
            outputs = run_on_distinct(env, rollout.parents, run, distinct_states)
        log_pf = _logprob(
            rollout,
            outputs.float(),
            rollout.actions,
            env.forward_mask(rollout.parents),
            rollout.offsets,
            validate,
        )
        log_pb = _log_pb(env, policy, rollout, validate, distinct_states)
    return TrajectoryBatch(
        log_pf=log_pf,
        log_pb=log_pb,
        log_behavior=rollout.log_behavior,
        log_reward=rollout.log_reward,
        terminal=rollout.terminal,
        rollout=rollout,
    )


def _log_pb(env, policy, rollout, validate, distinct) -> torch.Tensor | None:
    """[B] log p_B(tau | x): learned (one forward over the children), uniform over parents
    (a constant), or None for trees.

    Learned, packed: a step whose child has only one way back has log p_B = 0 and no
    gradient (a softmax over one allowed action), so p_B runs on the other steps only;
    on HyperGrid about 60% of the steps are such (terminal states, states on an axis). One
    host sync, as every packed rollout step has; the padded layout keeps every row.
    """
    learned = policy.learned_pb
    if env.is_tree and not learned:
        return None
    children = rollout.children
    if not learned:
        return _segment_sum(rollout, env.log_pb_uniform(children), validate)
    parents, actions, offsets = rollout.parents, rollout.actions, rollout.offsets
    mask = env.backward_mask(children)
    if offsets is not None:
        choice = mask.sum(-1) > 1
        kept = choice.nonzero().view(-1)
        offsets = torch.cat([offsets.new_zeros(1), choice.cumsum(0)])[offsets]
        parents, actions, children, mask = (
            rows.index_select(0, kept) for rows in (parents, actions, children, mask)
        )
    network = getattr(policy, "backward_mlp", None)
    if recordable(network):
        run = functools.partial(run_recorded, network)
    else:
        run = functools.partial(run_network, policy.backward_logits)
    logits = run_on_distinct(env, children, run, distinct).float()
    taken = env.backward_action(parents, actions)
    return _logprob(rollout, logits, taken, mask, offsets, validate)


def _logprob(rollout, logits, actions, mask, offsets, validate) -> torch.Tensor:
    """[B] sums of log softmax(masked logits)[action] over packed segments (`offsets`), or
    over the rollout's padded rows (offsets None)."""
    lengths = rollout.lengths if offsets is None else None
    if offsets is None:
        logits, actions, mask = (rollout.steps_view(rows) for rows in (logits, actions, mask))
    if validate:
        return gf.logprob_from_logits(
            logits, actions, lengths=lengths, offsets=offsets, action_mask=mask
        )
    return ops.logprob_from_logits(logits, actions, mask, lengths, offsets)


def _segment_sum(rollout, per_step, validate) -> torch.Tensor:
    """[B] per-trajectory sums of per-step values [M] in the rollout's layout."""
    per_step = rollout.steps_view(per_step)
    if validate:
        return gf.segment_logprob(per_step, **rollout.segments())
    lengths = rollout.lengths if rollout.offsets is None else None
    return ops.segment_sum(per_step, lengths, rollout.offsets)
