"""Roll out a batch of trajectories without autograd, recording what the batched pass needs.

The training step (see `scoring`) samples first and differentiates afterwards: the rollout
runs p_F once per step under `torch.no_grad()` only to draw actions, and records each step's
parent state, action and child state; `scoring.score` then runs p_F (and a learned p_B) once
over all the recorded states and gets the per-trajectory log-probabilities from the fused
`gf.logprob_from_logits`. One large matmul replaces T small ones, and autograd sees one graph.

Two layouts of the record, the `layout` of `rollout`:

- "packed": each step runs the policy on the trajectories still running only, found with one
  `nonzero` per step (the one host sync of a step); the record holds the N visited
  (parent, action, child) triples, trajectory by trajectory, with `offsets` [B + 1].
- "padded": every step runs all B rows, for `env.max_length` steps; rows that have finished
  compute a throw-away step from s0 and keep their state. No host sync at all (for GPUs);
  the record holds B x T rows, trajectory-major, with `lengths`.

Both draw the same Gumbel noise ([B, A] per step), so they sample the same trajectories.
Every trajectory starts at s0, so the first step runs the policy on one copy of it; with
`distinct_states`, every step runs it once per distinct state of the step (`distinct`).

Two ways to spare the batched pass its forward of p_F, reusing the rollout's instead:
`record_activations=True` records the activations of a plain p_F MLP as the rollout runs
it (see `recorded_mlp`), and `keep_graph=True` keeps the autograd graph of the policy's
per-step outputs (the classic rollout; any policy, but T small graphs to backpropagate).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import torch

from gfn_fast.train.distinct import distinct_rows
from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv
from gfn_fast.train.policies import gumbel_noise
from gfn_fast.train.precision import run_network
from gfn_fast.train.recorded_mlp import MLPRecorder, recordable

LAYOUTS = ("packed", "padded")


@dataclass
class Rollout:
    """B complete trajectories as recorded by `rollout`: M rows, one per recorded step.

    parents, children: [M, W] the state before and after each step. actions: [M] (int64;
        float values on continuous tasks). Padded: M = B * T in [B, T] order, and the rows
        past a trajectory's length hold a valid throw-away step from s0.
    lengths: [B] int64 steps per trajectory. offsets: [B + 1] packed segment boundaries
        (M = N = lengths.sum()), or None for the padded layout.
    terminal: [B, W] final states. log_reward: [B] log R(x).
    log_behavior: [B] log q(tau) of the behaviour policy (off-policy), or None.
    outputs: [M, ...] the policy's per-step outputs, differentiable w.r.t. its parameters
        (through the recorded activations or the kept graph), or None.
    """

    parents: torch.Tensor
    actions: torch.Tensor
    children: torch.Tensor
    lengths: torch.Tensor
    offsets: torch.Tensor | None
    terminal: torch.Tensor
    log_reward: torch.Tensor
    log_behavior: torch.Tensor | None = None
    outputs: torch.Tensor | None = None

    @property
    def batch_size(self) -> int:
        return self.lengths.shape[0]

    @property
    def layout(self) -> str:
        return "padded" if self.offsets is None else "packed"

    def segments(self) -> dict[str, torch.Tensor]:
        """The layout keyword of `gf.logprob_from_logits` / `gf.segment_logprob`."""
        if self.offsets is None:
            return {"lengths": self.lengths}
        return {"offsets": self.offsets}

    def steps_view(self, rows: torch.Tensor) -> torch.Tensor:
        """Per-row values [M, ...] in the layout's per-step shape: [B, T, ...] or [N, ...]."""
        if self.offsets is None:
            return rows.view(self.batch_size, -1, *rows.shape[1:])
        return rows


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


def rollout(
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
) -> Rollout:
    """Draw `batch_size` trajectories from s0 to terminal states, all at once, without
    autograd (see the module docstring for the layouts).

    Args:
        env, policy: a `DiscreteEnv` with its policy (`DiscretePolicy`, `ForestPolicy`), or a
            `ContinuousEnv` with a `GaussianMixturePolicy` (see `policies.make_policy`).
        generator: the random stream for actions (reproducible runs).
        epsilon: off-policy mixing weight of the uniform distribution over allowed actions.
        temperature: off-policy tempering, behaviour = softmax(log p_F / temperature).
        layout: "packed" or "padded".
        keep_graph: keep the graph of the policy's per-step outputs (`Rollout.outputs`).
        record_activations: where the policy's forward is a plain MLP (`recordable`), run
            it recording its activations and give `Rollout.outputs` through them instead
            (keep_graph is then ignored); elsewhere this option does nothing.
        distinct_states: run the policy once per distinct state of each step (discrete
            envs with exact `state_code`s; see `distinct`), not once per trajectory.
        device: where the states live (default: the policy's parameters' device).

    Returns:
        A `Rollout`; `log_behavior` is set when epsilon > 0 or temperature != 1.

    Raises:
        ValueError: batch_size < 1, an unknown layout, or bad off-policy options (see
            `check_behaviour`).
    """
    if batch_size < 1:
        raise ValueError(f"batch_size: expected >= 1, got {batch_size}")
    if layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {layout!r}")
    check_behaviour(type(env), epsilon, temperature)
    if device is None:
        device = next(policy.parameters()).device
    behaviour = _Behaviour(epsilon, temperature)
    network = getattr(policy, "forward_mlp", None)
    recorder = None
    if record_activations and recordable(network):
        recorder, keep_graph = MLPRecorder(network, batch_size * env.max_length), False
    forward = _Forward(policy, keep_graph, recorder)
    with torch.no_grad():
        if env.action_space == "continuous":
            return _rollout_continuous(env, policy, batch_size, generator, layout, forward, device)
        return _rollout_discrete(
            env, batch_size, generator, behaviour, layout, forward, distinct_states, device
        )


class _Forward:
    """The rollout's runs of the policy: plain, keeping their graph, or recorded; and the
    per-step outputs that the batched pass reuses (None: it runs p_F again)."""

    def __init__(self, policy, keep_graph: bool, recorder: MLPRecorder | None):
        self.policy, self.keep_graph, self.recorder = policy, keep_graph, recorder

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        if self.recorder is not None:
            return self.recorder(features)
        with torch.set_grad_enabled(self.keep_graph):
            return run_network(self.policy, features)

    def kept(self, output: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor | None:
        """A step's `output` as the record keeps it, with its graph, one row per moved
        trajectory (`source`: each trajectory's row of output); None unless keep_graph."""
        if not self.keep_graph:
            return None
        with torch.enable_grad():
            return _per_row(output, source)

    def outputs(self, record: _Record, order: torch.Tensor) -> torch.Tensor | None:
        """[M, ...] in the record's row order; `order` maps it to the rollout's rows."""
        with torch.enable_grad():
            if self.recorder is not None:
                return self.recorder.outputs(record.sources().index_select(0, order))
            return record.assemble_outputs(order) if self.keep_graph else None


def _per_row(values: torch.Tensor, source: torch.Tensor | None) -> torch.Tensor:
    """Values of the policy's rows [k, ...] as one row per trajectory: row source[i] for
    trajectory i (None: the rows are the trajectories')."""
    return values if source is None else values.index_select(0, source)


class _Behaviour:
    """The behaviour policy over actions: p_F tempered by 1 / temperature, mixed with the
    uniform distribution over allowed actions with weight epsilon."""

    def __init__(self, epsilon: float, temperature: float):
        self.epsilon, self.temperature = epsilon, temperature
        self.off_policy = epsilon > 0 or temperature != 1.0

    def log_probs(self, masked_logits: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """[n, A] log q from the masked p_F logits (-inf where not allowed)."""
        log_q = (masked_logits / self.temperature).log_softmax(-1)
        if self.epsilon:
            uniform = mask / mask.sum(-1, keepdim=True)
            log_q = torch.log((1 - self.epsilon) * log_q.exp() + self.epsilon * uniform)
        return log_q


def _rollout_discrete(env, batch_size, generator, behaviour, layout, forward, distinct, device):
    packed = layout == "packed"
    states = env.initial_states(batch_size, device)
    start = env.initial_states(1, device)
    active = ~env.is_terminal(states)
    # Packed: the running trajectories' ids (rows of the batch) and states, kept compact.
    rows = active.nonzero().view(-1) if packed else None
    running = states.index_select(0, rows) if packed else None
    log_behavior = torch.zeros(batch_size, device=device) if behaviour.off_policy else None
    # All the noise at once: one draw instead of one per step (padded and packed alike).
    noise = gumbel_noise((env.max_length, batch_size, env.n_actions), generator, device)
    forbidden = torch.tensor(-torch.inf, device=device)  # made once, not once a step
    record = _Record()
    for t in range(env.max_length):
        if packed:
            if rows.numel() == 0:
                if t == 0:  # (padded: every trajectory has length 0)
                    raise ValueError(
                        f"env: {type(env).__name__}'s initial state is terminal, so a packed "
                        "rollout has no step to record"
                    )
                break
            parents = running
            step_noise = noise[t].index_select(0, rows)
        else:
            parents = torch.where(active[:, None], states, start)
            step_noise = noise[t]
        # The policy runs on the step's distinct states, `source` giving each trajectory's:
        # every trajectory starts at s0, so the first step runs it on one copy of it.
        found = distinct_rows(env, parents) if distinct and t else None
        distinct = distinct and (t == 0 or found is not None)  # deeper levels are wider
        if t == 0:
            policy_states, source = start, parents.new_zeros(parents.shape[0])
        else:
            policy_states, source = found if found is not None else (parents, None)
        mask = env.forward_mask(policy_states)
        output = forward(env.features(policy_states))
        logits = torch.where(mask, output.float(), forbidden)  # (no_grad: no graph)
        if behaviour.off_policy:
            log_q = _per_row(behaviour.log_probs(logits, mask), source)
            action = (log_q + step_noise).argmax(-1)
            step_log_q = log_q.gather(1, action[:, None]).view(-1)
        else:
            action = (_per_row(logits, source) + step_noise).argmax(-1)
        children = env.step(parents, action)
        kept = forward.kept(output, source)
        record.add(rows, parents, action, children, kept, output.shape[0], source)
        if packed:
            if log_behavior is not None:
                log_behavior.index_add_(0, rows, step_log_q)
            keep = (~env.is_terminal(children)).nonzero().view(-1)  # the step's host sync
            running, rows = children.index_select(0, keep), rows.index_select(0, keep)
        else:
            if log_behavior is not None:
                log_behavior += torch.where(active, step_log_q, 0.0)
            states = torch.where(active[:, None], children, states)
            record.active.append(active)
            active = active & ~env.is_terminal(children)
    lengths = record.lengths(batch_size, device)
    offsets = _offsets(lengths)
    order = record.order(offsets if packed else None)
    fields = record.assemble(order)
    if packed:  # each trajectory ends in the child of its last step
        states = fields["children"].index_select(0, offsets[1:] - 1)
    return Rollout(
        **fields,
        lengths=lengths,
        offsets=offsets if packed else None,
        terminal=states,
        log_reward=env.log_reward(states),
        log_behavior=log_behavior,
        outputs=forward.outputs(record, order),
    )


def _rollout_continuous(env, policy, batch_size, generator, layout, forward, device):
    """Continuous tasks: every trajectory takes env.max_length steps, so both layouts hold
    the same B x T rows (packed offsets are multiples of T)."""
    states = env.initial_states(batch_size, device)
    record = _Record()
    for t in range(env.max_length):
        # Every trajectory starts at s0: the first step runs the policy on one copy of it.
        features = env.features(states[:1] if t == 0 else states)
        output = forward(features)
        values = policy.sample_of(
            output.detach().expand(batch_size, -1), features.expand(batch_size, -1), generator
        )
        children = env.step(states, values)
        source = states.new_zeros(batch_size, dtype=torch.int64) if t == 0 else None
        kept = forward.kept(output, source)
        record.add(None, states, values, children, kept, output.shape[0], source)
        states = children
    lengths = torch.full((batch_size,), env.max_length, dtype=torch.int64, device=device)
    order = record.order(None)
    return Rollout(
        **record.assemble(order),
        lengths=lengths,
        offsets=_offsets(lengths) if layout == "packed" else None,
        terminal=states,
        log_reward=env.log_reward(env.terminal_objects(states)),
        outputs=forward.outputs(record, order),
    )


def _offsets(lengths: torch.Tensor) -> torch.Tensor:
    return torch.cat([lengths.new_zeros(1), lengths.cumsum(0)])


class _Record:
    """Per-step rows of a rollout, in the order they were recorded (step by step), and
    assembled trajectory-major at the end."""

    def __init__(self):
        self.rows, self.parents, self.actions, self.children, self.outputs = [], [], [], [], []
        self.active = []  # padded: [B] whether each row was running, per step
        self.policy_rows = 0  # rows the policy ran on, over the steps so far
        self.source_rows = []  # per step: [n] each moved row's row of the policy's (overall)

    def lengths(self, batch_size: int, device) -> torch.Tensor:
        """[B] int64 steps per trajectory of a discrete rollout, counted once at the end."""
        if self.active:
            return torch.stack(self.active).sum(0)
        return torch.bincount(self.moved().to(device), minlength=batch_size)

    def moved(self) -> torch.Tensor:
        """Packed: [N] the trajectory of every recorded row, in recording order."""
        if self.rows and self.rows[0] is not None:
            return torch.cat(self.rows)
        return torch.zeros(0, dtype=torch.int64)

    def add(self, rows, parents, actions, children, output, policy_rows, source) -> None:
        """One step: `rows` [n] the trajectories it moved (None: all B, in order), `output`
        the kept graph's rows or None; the policy ran on `policy_rows` rows, and `source`
        [n] gives each moved trajectory's (None: one each, in order)."""
        self.rows.append(rows)
        self.parents.append(parents)
        self.actions.append(actions)
        self.children.append(children)
        if output is not None:
            self.outputs.append(output)
        start, self.policy_rows = self.policy_rows, self.policy_rows + policy_rows
        if source is None:
            source = torch.arange(policy_rows, device=parents.device)
        self.source_rows.append(source + start)

    def sources(self) -> torch.Tensor:
        """[M] each recorded row's row of the policy's, over all steps, in recording order."""
        return torch.cat(self.source_rows)

    def order(self, offsets: torch.Tensor | None) -> torch.Tensor:
        """[M] for each row of the rollout, trajectory-major, its recorded row. With
        `offsets` (steps of the running rows only), the recorded rows sorted (stably) by
        trajectory; without, every step recorded all B rows, and it is row b * T + t."""
        if offsets is not None:  # a trajectory's rows were recorded in step order
            return torch.sort(self.moved().to(offsets.device), stable=True).indices
        steps, batch_size = len(self.parents), self.parents[0].shape[0]
        device = self.parents[0].device
        return torch.arange(steps * batch_size, device=device).view(steps, -1).t().flatten()

    def assemble(self, order: torch.Tensor) -> dict[str, torch.Tensor]:
        """The recorded states and actions as [M, ...] rows in the rollout's order."""
        return {
            "parents": torch.cat(self.parents).index_select(0, order),
            "actions": torch.cat(self.actions).index_select(0, order),
            "children": torch.cat(self.children).index_select(0, order),
        }

    def assemble_outputs(self, order: torch.Tensor) -> torch.Tensor:
        """The kept per-step outputs, with their graph, as [M, ...] rows in the same order."""
        return torch.cat(self.outputs).index_select(0, order)


def concatenate(rollouts: list[Rollout]) -> Rollout:
    """One rollout holding the trajectories of `rollouts` in order (one layout; padded ones
    have the same number of steps T).

    Raises:
        ValueError: no rollouts, or rollouts that disagree on their layout, on which
            optional fields they carry, or (padded) on T.
    """
    if not rollouts:
        raise ValueError("rollouts: expected at least one Rollout, got none")
    for name in ("offsets", "log_behavior", "outputs"):
        if len({getattr(part, name) is None for part in rollouts}) > 1:
            raise ValueError(f"rollouts: {name} is None in some rollouts but not in others")
    if len(rollouts) == 1:
        return rollouts[0]
    first = rollouts[0]
    if first.offsets is None:
        steps = {part.parents.shape[0] // part.batch_size for part in rollouts}
        if len(steps) > 1:
            raise ValueError(f"rollouts: padded rollouts with different step counts {steps}")

    def joined(name):
        if getattr(first, name) is None:
            return None
        return torch.cat([getattr(part, name) for part in rollouts])

    lengths = joined("lengths")
    offsets = None if first.offsets is None else _offsets(lengths)
    names = ("parents", "actions", "children", "terminal", "log_reward", "log_behavior")
    return replace(
        first,
        lengths=lengths,
        offsets=offsets,
        outputs=joined("outputs"),
        **{name: joined(name) for name in names},
    )
