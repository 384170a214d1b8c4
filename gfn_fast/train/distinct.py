"""Run the policy networks once per distinct state of a batch, not once per visit.

A batch of trajectories revisits states: on HyperGrid 8x8 at batch 128, its ~1,100 steps
leave from at most 64 distinct states (measured: ~60), and at a rollout step of 128
trajectories at most 8 are distinct. The networks' forward and backward are the cost of a
training step, so both the rollout (per step) and the batched pass (over the batch) run
them on the distinct states only, and gather each visit's output from its state's row.

Exact: a gathered row is the network's output on that state, and the backward of the
gather sums the gradients of a state's visits into its row before the network's backward.
Only the order of that floating-point sum changes. Where no state repeats, or where the
env cannot give its states exact int64 codes, the rows are used as they are.
"""

from __future__ import annotations

from typing import Callable

import torch

from gfn_fast.train.envs.base import DiscreteEnv, unique_states


def distinct_rows(
    env: DiscreteEnv, states: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor] | None:
    """(distinct [k, W], inverse [n]): the distinct rows of `states` [n, W] and each row's
    index among them (states == distinct[inverse]); None where every row is distinct or
    the env's state codes are not exact (one host sync: k is data-dependent)."""
    if not env.state_codes_exact or states.shape[0] < 2:
        return None
    distinct, inverse = unique_states(env, states)
    if distinct.shape[0] == states.shape[0]:
        return None
    return distinct, inverse


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
