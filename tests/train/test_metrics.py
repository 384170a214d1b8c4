"""Exact metrics against brute force, the Monte Carlo L1 against the exact one, JS sanity,
mode counting."""

from __future__ import annotations

import math

import pytest
import torch

from gfn_fast.train import envs
from gfn_fast.train.envs.base import DiscreteEnv, unique_states
from gfn_fast.train.metrics import (
    ModeTracker,
    exact_l1,
    exact_terminal_distribution,
    jensen_shannon,
    monte_carlo_l1,
    target_distribution,
)
from gfn_fast.train.policies import make_policy
from gfn_fast.train.sampler import sample_backward
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


@pytest.mark.parametrize("name", list(TINY_ENVS))
@pytest.mark.parametrize("learn_pb", [False, True], ids=["uniform-pb", "learned-pb"])
def test_backward_importance_weights_are_unbiased_for_p_t(name, learn_pb):
    """mean over tau ~ p_B(. | x) of p_F(tau) / p_B(tau | x) -> p_T(x), for every x."""
    env = TINY_ENVS[name]()
    if learn_pb and env.is_tree:
        pytest.skip("trees have p_B = 1")
    torch.manual_seed(0)
    policy = make_policy(env, learn_pb=learn_pb)
    with torch.no_grad():  # a sharp p_F: weights that vary along trajectories (a p_B at
        for parameter in policy.forward_net.parameters():  # init scale covers them all)
            parameter.mul_(3.0)
    expected = terminal_probabilities(env, policy)
    terminal = env.terminal_states()
    draws = 10 if env.is_tree else 2000  # a tree's one trajectory has a constant weight
    log_pf, log_pb = sample_backward(
        env, policy, terminal.repeat_interleave(draws, 0), torch.Generator().manual_seed(1)
    )
    weights = torch.exp(log_pf.double() - log_pb.double()).view(-1, draws)
    error = weights.std(1) / math.sqrt(draws)
    want = torch.tensor([expected[int(c)] for c in env.state_code(terminal)], dtype=torch.float64)
    assert ((weights.mean(1) - want).abs() <= 5 * error + 1e-5 * want).all()  # + float32


@pytest.mark.parametrize("scale", [0.0, 1.0], ids=["uniform", "random"])
def test_monte_carlo_l1_agrees_with_the_exact_l1(scale):
    env = envs.make("sets", "small")
    torch.manual_seed(0)
    policy = make_policy(env)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.mul_(scale)
    exact = exact_l1(env, policy)
    estimate, error = monte_carlo_l1(env, policy, 2048, 16, torch.Generator().manual_seed(0))
    assert 0 < error < 0.03
    assert abs(estimate - exact) <= 4 * error


def test_monte_carlo_l1_bias_shrinks_with_more_backward_samples():
    """Far from the target, few backward samples underestimate p_T's spread; the plug-in
    bias (documented in `monte_carlo_l1`) vanishes as backward_samples grows."""
    env = envs.make("sets", "small")
    torch.manual_seed(0)
    policy = make_policy(env)
    with torch.no_grad():
        for parameter in policy.parameters():
            parameter.mul_(3.0)
    exact = exact_l1(env, policy)
    gaps = [
        exact - monte_carlo_l1(env, policy, 512, m, torch.Generator().manual_seed(0))[0]
        for m in (1, 8, 64)
    ]
    assert gaps[0] > gaps[1] > gaps[2] and abs(gaps[2]) < 0.05


@pytest.mark.parametrize("name", list(TINY_ENVS))
def test_forward_actions_are_recovered_from_every_transition(name):
    """Both the generic search of DiscreteEnv and each env's closed form."""
    env = TINY_ENVS[name]()
    frontier = env.initial_states(1)
    while frontier.shape[0]:
        parent, action, children = env.expand(frontier)
        assert torch.equal(DiscreteEnv.forward_action(env, frontier[parent], children), action)
        assert torch.equal(env.forward_action(frontier[parent], children), action)
        children = unique_states(env, children)[0]
        frontier = children[~env.is_terminal(children)]
