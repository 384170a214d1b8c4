"""Exact metrics against brute force, JS sanity, mode counting."""

from __future__ import annotations

import math

import pytest
import torch

from gfn_fast.train import envs
from gfn_fast.train.metrics import (
    ModeTracker,
    exact_l1,
    exact_terminal_distribution,
    jensen_shannon,
    target_distribution,
)
from gfn_fast.train.policies import make_policy
from tests.train.brute_force import TINY_ENVS, terminal_probabilities


def _random_policy(env, seed=0):
    torch.manual_seed(seed)
    policy = make_policy(env)
    with torch.no_grad():  # sharper than at init, so that errors would show
        for parameter in policy.parameters():
            parameter.mul_(3.0)
    return policy


@pytest.mark.parametrize("name", list(TINY_ENVS))
def test_exact_terminal_distribution_matches_brute_force(name):
    env = TINY_ENVS[name]()
    policy = _random_policy(env)
    terminal, p_t = exact_terminal_distribution(env, policy)
    expected = terminal_probabilities(env, policy)
    codes = env.state_code(terminal).tolist()
    assert sorted(codes) == codes and set(codes) == set(expected)
    assert torch.allclose(p_t, torch.tensor([expected[c] for c in codes], dtype=p_t.dtype))
    assert float(p_t.sum()) == pytest.approx(1.0, abs=1e-12)


@pytest.mark.parametrize("name", list(TINY_ENVS))
def test_exact_l1_matches_brute_force(name):
    env = TINY_ENVS[name]()
    policy = _random_policy(env, seed=3)
    expected = terminal_probabilities(env, policy)
    terminal = env.terminal_states()
    target = target_distribution(env, terminal)
    brute = sum(
        abs(expected[int(c)] - float(t))
        for c, t in zip(env.state_code(terminal), target, strict=True)
    )
    assert exact_l1(env, policy) == pytest.approx(brute, abs=1e-6)  # float32 policy


def test_target_distribution_uses_exact_log_partition():
    env = envs.make("sets", "small")
    terminal = env.terminal_states()
    expected = torch.exp(env.log_reward(terminal).double() - env.log_partition())
    assert torch.allclose(target_distribution(env, terminal), expected, atol=1e-6)


def test_exact_l1_refuses_sizes_that_do_not_enumerate():
    env = envs.make("sets", "paper")
    with pytest.raises(ValueError, match="too many states"):
        exact_l1(env, make_policy(env))


def test_jensen_shannon_is_in_range_and_reproducible():
    env = envs.make("gmm")
    policy = _random_policy(env)
    first = jensen_shannon(env, policy, 2000, torch.Generator().manual_seed(0))
    second = jensen_shannon(env, policy, 2000, torch.Generator().manual_seed(0))
    assert first == second and 0.0 < first <= math.log(2.0)


def test_mode_tracker_counts_distinct_high_reward_states():
    env = envs.make("hypergrid", "torchgfn")
    tracker = ModeTracker(env)
    terminal = env.terminal_states()
    assert tracker.update(terminal[:1]) == 0  # (0, 0) is not a mode
    assert tracker.update(torch.cat([terminal, terminal])) == 4  # the four R2 cells
