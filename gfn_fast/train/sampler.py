"""Sample batches of complete trajectories, ready for `gf.divergence_loss`.

On-policy, the per-step log p_F are taken from the sampling pass itself (the graph is kept,
so there is no second forward pass). Off-policy, actions come from an epsilon-uniform and/or
tempered version of p_F, and the batch carries log q(tau) as `log_behavior`.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv
from gfn_fast.train.policies import sample_categorical

LAYOUTS = ("padded", "packed")


@dataclass
class TrajectoryBatch:
    """B complete trajectories, padded to the longest one (T steps).

    states: [B, T + 1, W] visited states; rows repeat their terminal state after the end.
    actions: [B, T] chosen actions (int64; float values for continuous tasks), 0 on padding.
    lengths: [B] int64 steps per trajectory.
    log_pf: [B, T] per-step log p_F, differentiable, 0 on padding.
    log_pb: [B, T] per-step log p_B, or None where p_B = 1 (trees).
    log_behavior: [B] log q(tau) of the behaviour policy, or None on-policy.
    log_reward: [B] log R(x). terminal: [B, W] the final states.
    """

    states: torch.Tensor
    actions: torch.Tensor
    lengths: torch.Tensor
    log_pf: torch.Tensor
    log_pb: torch.Tensor | None
    log_behavior: torch.Tensor | None
    log_reward: torch.Tensor
    terminal: torch.Tensor

    def loss_inputs(self, layout: str = "padded") -> dict:
        """Keyword arguments for `gf.divergence_loss` in the `layout` "padded" or "packed"."""
        inputs = {"log_reward": self.log_reward, "log_behavior": self.log_behavior}
        if layout == "padded":
            return {**inputs, "log_pf": self.log_pf, "log_pb": self.log_pb, "lengths": self.lengths}
        if layout == "packed":
            steps = torch.arange(self.log_pf.shape[1], device=self.lengths.device)
            inside = steps < self.lengths[:, None]
            offsets = torch.cat([self.lengths.new_zeros(1), self.lengths.cumsum(0)])
            log_pb = None if self.log_pb is None else self.log_pb[inside]
            return {**inputs, "log_pf": self.log_pf[inside], "log_pb": log_pb, "offsets": offsets}
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")


def concatenate(batches: list[TrajectoryBatch]) -> TrajectoryBatch:
    """One batch holding the trajectories of `batches` in order, padded to the longest.

    Padding follows `TrajectoryBatch`: states repeat each row's terminal state, actions and
    per-step log-probabilities are 0. The per-step log p_F keep their graphs.

    Raises:
        ValueError: no batches, or batches that disagree on which optional fields they carry.
    """
    if not batches:
        raise ValueError("batches: expected at least one TrajectoryBatch, got none")
    for name in ("log_pb", "log_behavior"):
        if len({getattr(batch, name) is None for batch in batches}) > 1:
            raise ValueError(f"batches: {name} is None in some batches but not in others")
    if len(batches) == 1:
        return batches[0]
    steps = max(batch.actions.shape[1] for batch in batches)

    def padded(name: str) -> torch.Tensor | None:
        """The per-step field `name` of every batch, zero-padded to `steps`, stacked on rows."""
        if getattr(batches[0], name) is None:
            return None
        parts = [getattr(batch, name) for batch in batches]
        return torch.cat([F.pad(x, (0, steps - x.shape[1])) for x in parts])

    def joined(name: str) -> torch.Tensor | None:
        if getattr(batches[0], name) is None:
            return None
        return torch.cat([getattr(batch, name) for batch in batches])

    states = [
        torch.cat([s, s[:, -1:].expand(-1, steps + 1 - s.shape[1], -1)], 1)
        for s in (batch.states for batch in batches)
    ]
    return TrajectoryBatch(
        states=torch.cat(states),
        actions=padded("actions"),
        lengths=joined("lengths"),
        log_pf=padded("log_pf"),
        log_pb=padded("log_pb"),
        log_behavior=joined("log_behavior"),
        log_reward=joined("log_reward"),
        terminal=joined("terminal"),
    )


def sample_trajectories(
    env: DiscreteEnv | ContinuousEnv,
    policy: torch.nn.Module,
    batch_size: int,
    *,
    generator: torch.Generator | None = None,
    epsilon: float = 0.0,
    temperature: float = 1.0,
    device: torch.device | str | None = None,
) -> TrajectoryBatch:
    """Roll out `batch_size` trajectories from s0 to terminal states, all at once.

    Args:
        env, policy: a `DiscreteEnv` with a `DiscretePolicy`, or a `ContinuousEnv` with a
            `GaussianMixturePolicy` (see `policies.make_policy`).
        generator: the random stream for actions (reproducible runs).
        epsilon: off-policy mixing weight of the uniform distribution over allowed actions.
        temperature: off-policy tempering, behaviour = softmax(log p_F / temperature).
        device: where the states live (default: the policy's parameters' device).

    Returns:
        A `TrajectoryBatch`; `log_behavior` is set when epsilon > 0 or temperature != 1.

    Raises:
        ValueError: batch_size < 1, or bad off-policy options (see `check_behaviour`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    check_behaviour(type(env), epsilon, temperature)
    if device is None:
        device = next(policy.parameters()).device
    sample = _SAMPLERS[env.action_space]
    return sample(env, policy, batch_size, generator, epsilon, temperature, device)


def check_behaviour(env_type: type, epsilon: float, temperature: float) -> None:
    """ValueError unless epsilon in [0, 1] and temperature > 0 (both finite), and both
    are left at their on-policy values (0 and 1) on continuous action spaces."""
    if not 0.0 <= epsilon <= 1.0:
        raise ValueError(f"epsilon: expected in [0, 1], got {epsilon}")
    if not 0.0 < temperature < float("inf"):
        raise ValueError(f"temperature: expected a finite number > 0, got {temperature}")
    if env_type.action_space == "continuous" and (epsilon or temperature != 1.0):
        raise ValueError(
            f"epsilon, temperature: off-policy sampling is for discrete envs only, got "
            f"epsilon={epsilon}, temperature={temperature} for {env_type.__name__}"
        )


def _behaviour_log_probs(log_pf, mask, epsilon, temperature):
    """log q over actions: tempered p_F mixed with the uniform over allowed actions."""
    log_q = (log_pf / temperature).log_softmax(-1) if temperature != 1.0 else log_pf
    if epsilon:
        uniform = mask / mask.sum(-1, keepdim=True)
        log_q = torch.log((1 - epsilon) * log_q.exp() + epsilon * uniform)
    return log_q


def _masked_log_softmax(logits, mask):
    return logits.masked_fill(~mask, -torch.inf).log_softmax(-1)


def _scatter_rows(rows: torch.Tensor, values: torch.Tensor, size: int) -> torch.Tensor:
    """[size] zeros with `values` at `rows` (differentiable w.r.t. values)."""
    return values.new_zeros(size).index_put((rows,), values)


def _sample_discrete(env, policy, batch_size, generator, epsilon, temperature, device):
    off_policy = epsilon > 0 or temperature != 1.0
    states = env.initial_states(batch_size, device)
    active = ~env.is_terminal(states)
    lengths = torch.zeros(batch_size, dtype=torch.int64, device=device)
    visited, actions, log_pf = [states], [], []
    log_behavior = torch.zeros(batch_size, device=device) if off_policy else None
    for _ in range(env.max_length):
        rows = active.nonzero()[:, 0]
        if rows.numel() == 0:
            break
        parents = states[rows]
        mask = env.forward_mask(parents)
        step_log_pf = _masked_log_softmax(policy(env.features(parents)), mask)
        if off_policy:
            step_log_q = _behaviour_log_probs(step_log_pf.detach(), mask, epsilon, temperature)
            action = sample_categorical(step_log_q, generator)
            log_behavior[rows] += step_log_q.gather(1, action[:, None])[:, 0]
        else:
            action = sample_categorical(step_log_pf, generator)
        children = env.step(parents, action)
        log_pf.append(_scatter_rows(rows, step_log_pf.gather(1, action[:, None])[:, 0], batch_size))
        actions.append(_scatter_rows(rows, action, batch_size))
        states = states.index_copy(0, rows, children)
        visited.append(states)
        lengths += active
        active = active.index_put((rows,), ~env.is_terminal(children))
    visited, actions = torch.stack(visited, 1), torch.stack(actions, 1)
    return TrajectoryBatch(
        states=visited,
        actions=actions,
        lengths=lengths,
        log_pf=torch.stack(log_pf, 1),
        log_pb=_backward_log_probs(env, policy, visited, actions, lengths),
        log_behavior=log_behavior,
        log_reward=env.log_reward(states),
        terminal=states,
    )


def _backward_log_probs(env, policy, visited, actions, lengths):
    """[B, T] log p_B of every transition at once (learned or uniform), None for trees."""
    learn_pb = policy.learned_pb
    if env.is_tree and not learn_pb:
        return None
    batch_size, steps = actions.shape
    children = visited[:, 1:].flatten(0, 1)
    if learn_pb:
        parents = visited[:, :-1].flatten(0, 1)
        logits = policy.backward_logits(env.features(children))
        mask = env.backward_mask(children)
        # Padding rows repeat a terminal state; give them a valid row, then zero them.
        mask = mask | ~mask.any(-1, keepdim=True)
        taken = env.backward_action(parents, actions.flatten())[:, None]
        per_step = _masked_log_softmax(logits, mask).gather(1, taken)[:, 0]
    else:
        per_step = env.log_pb_uniform(children)
    inside = torch.arange(steps, device=lengths.device) < lengths[:, None]
    return torch.where(inside, per_step.view(batch_size, steps), 0.0)


def _sample_continuous(env, policy, batch_size, generator, epsilon, temperature, device):
    del epsilon, temperature  # on-policy only (checked by `check_behaviour`)
    states = env.initial_states(batch_size, device)
    visited, actions, log_pf = [states], [], []
    for _ in range(env.max_length):
        features = env.features(states)
        values = policy.sample(features, generator)
        log_pf.append(policy.log_prob(features, values))
        actions.append(values)
        states = env.step(states, values)
        visited.append(states)
    return TrajectoryBatch(
        states=torch.stack(visited, 1),
        actions=torch.stack(actions, 1),
        lengths=torch.full((batch_size,), env.max_length, dtype=torch.int64, device=device),
        log_pf=torch.stack(log_pf, 1),
        log_pb=None,
        log_behavior=None,
        log_reward=env.log_reward(env.terminal_objects(states)),
        terminal=states,
    )


# One sampler per declared action space.
_SAMPLERS = {"discrete": _sample_discrete, "continuous": _sample_continuous}


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
