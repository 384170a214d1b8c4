"""Run the policy networks once per distinct state of a batch, not once per visit.

A batch of trajectories revisits states: on HyperGrid 8x8 at batch 128, its ~1,100 steps
leave from at most 64 distinct states (measured: ~60), and at a rollout step of 128
trajectories at most 8 are distinct. The networks' forward and backward are the cost of a
training step, so both the rollout (per step) and the batched pass (over the batch) run
them on the distinct states only, and gather each visit's output from its state's row.

Exact: a gathered row is the network's output on that state, and the backward of the
gather sums the gradients of a state's visits into its row before the network's backward.
Only the order of that floating-point sum changes. Where most states are distinct (see
MOST_DISTINCT), or where the env cannot give its states exact int64 codes, the rows are
used as they are; a rollout stops looking at its first step with mostly distinct states,
since the levels of a DAG grown from s0 widen with depth.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from gfn_fast.train.envs.base import DiscreteEnv, first_rows

# Gathering pays where at most this fraction of the rows are distinct (sets at the paper's
# size, 88% distinct, ran 14% slower gathering every repeat at every rollout step).
MOST_DISTINCT = 0.5


def distinct_rows(
    env: DiscreteEnv, states: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(distinct [k, W], inverse [n]): the distinct rows of `states` [n, W] and each row's
    index among them (states == distinct[inverse]); None where more than MOST_DISTINCT of
    the rows are distinct or the env's state codes are not exact (one host sync: k is
    data-dependent)."""
    count = states.shape[0]
    if not env.state_codes_exact or count < 2:
        return None
    codes, inverse = torch.unique(env.state_code(states), return_inverse=True)
    if codes.shape[0] > MOST_DISTINCT * count:
        return None
    return states[first_rows(inverse, codes.shape[0])], inverse


def run_on_distinct(
    env: DiscreteEnv,
    states: torch.Tensor,
    run: Callable[[torch.Tensor], torch.Tensor],
    enabled: bool,
) -> torch.Tensor:
    """`run(env.features(states))` [n, ...], with `run` computed once per distinct state
    when `enabled` (differentiable: gradients of repeated rows sum into their state's)."""
    found = distinct_rows(env, states) if enabled else None
    if found is None:
        return run(env.features(states))
    distinct, inverse = found
    return run(env.features(distinct)).index_select(0, inverse)
