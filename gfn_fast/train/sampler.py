"""Sample scored batches of complete trajectories, ready for `gf.divergence_loss`, and
walk trajectories backwards from terminal states (for the metrics).

`sample_trajectories` is a `rollout.rollout` without autograd followed by the batched pass
of `scoring.score`; on-policy, the actions come from p_F, off-policy from an
epsilon-uniform and/or tempered version of it, and the batch carries log q(tau) as
`log_behavior`.
"""

from __future__ import annotations

import torch

from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv
from gfn_fast.train.policies import sample_categorical
from gfn_fast.train.rollout import rollout
from gfn_fast.train.scoring import TrajectoryBatch, score


def sample_trajectories(
    env: DiscreteEnv | ContinuousEnv,
    policy: torch.nn.Module,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    epsilon: float = 0.0,
    temperature: float = 1.0,
    layout: str = "packed",
    keep_graph: bool = False,
    record_activations: bool = False,
    distinct_states: bool = False,
    device: torch.device | str | None = None,
) -> TrajectoryBatch:
    """Roll out `batch_size` trajectories without autograd, then score them in one batched
    pass: `score(env, policy, rollout(env, policy, batch_size, ...))`.

    Args: those of `rollout.rollout` (layout "packed" or "padded"; record_activations and
        keep_graph reuse the rollout's forward of p_F instead of running it again;
        distinct_states runs the networks once per distinct state, in both passes).

    Returns:
        A `TrajectoryBatch` with differentiable per-trajectory log_pf (and log_pb);
        `log_behavior` is set when epsilon > 0 or temperature != 1.

    Raises:
        ValueError: as `rollout.rollout`.
    """
    sampled = rollout(
        env,
        policy,
        batch_size,
        generator=generator,
        epsilon=epsilon,
        temperature=temperature,
        layout=layout,
        keep_graph=keep_graph,
        record_activations=record_activations,
        distinct_states=distinct_states,
        device=device,
    )
    return score(env, policy, sampled, distinct_states=distinct_states)


def _masked_log_softmax(logits, mask):
    return logits.masked_fill(~mask, -torch.inf).log_softmax(-1)


def continuous_log_pt(env: ContinuousEnv, policy: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """[B] exact log p_T(x) of points x [B, 2]: the log p_F of their unique trajectory."""
    states = env.initial_states(x.shape[0], x.device)
    total = torch.zeros(x.shape[0], device=x.device)
    for t in range(env.max_length):
        features = env.features(states)
        total = total + policy.log_prob(features, x[:, t])
        states = env.step(states, x[:, t])
    return total


@torch.no_grad()
def sample_backward(
    env: DiscreteEnv,
    policy: torch.nn.Module,
    terminal: torch.Tensor,
    generator: torch.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Draw one trajectory into each of `terminal` [B, W] backwards, from x to s0, under the
    policy's p_B (learned, or uniform over parents), and score it under both policies.

    Returns:
        (log_pf, log_pb): [B] float32 log p_F(tau) and log p_B(tau | x) of the drawn
        trajectories (no gradient), so that exp(log_pf - log_pb) is an unbiased estimate
        of p_T(x).
    """
    states = terminal
    log_pf = torch.zeros(states.shape[0], device=states.device)
    log_pb = torch.zeros_like(log_pf)
    for _ in range(env.max_length):
        mask = env.backward_mask(states)
        rows = mask.any(-1).nonzero()[:, 0]
        if rows.numel() == 0:
            break
        children, mask = states[rows], mask[rows]
        if policy.learned_pb:
            logits = policy.backward_logits(env.features(children))
        else:
            logits = torch.zeros(mask.shape, device=states.device)
        step_log_pb = _masked_log_softmax(logits, mask)
        backward = sample_categorical(step_log_pb, generator)
        parents = env.backward_step(children, backward)
        forward = env.forward_action(parents, children)
        step_log_pf = _masked_log_softmax(policy(env.features(parents)), env.forward_mask(parents))
        log_pb = log_pb.index_add(0, rows, step_log_pb.gather(1, backward[:, None])[:, 0])
        log_pf = log_pf.index_add(0, rows, step_log_pf.gather(1, forward[:, None])[:, 0])
        states = states.index_copy(0, rows, parents)
    return log_pf, log_pb


def sample_backward_uniform(
    env: DiscreteEnv, terminal: torch.Tensor, generator: torch.Generator | None = None
) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """Walk from terminal states [B, W] back to s0 under the uniform p_B, all rows at once.

    Returns (states, backward_actions): lists of [B, W] and [B], from `terminal` backwards;
    rows that reached s0 stay there with backward action -1.
    """
    states, trail, taken = terminal, [terminal], []
    for _ in range(env.max_length):
        mask = env.backward_mask(states)
        alive = mask.any(-1)
        if not alive.any():
            break
        logits = torch.where(mask, 0.0, -torch.inf)
        logits[~alive] = 0.0  # any finite row: the draw is discarded below
        action = sample_categorical(logits, generator)
        parents = env.backward_step(states[alive], action[alive])
        states = states.index_copy(0, alive.nonzero()[:, 0], parents)
        trail.append(states)
        taken.append(torch.where(alive, action, -1))
    return trail, taken
