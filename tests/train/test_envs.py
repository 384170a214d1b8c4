"""Environments: masks, reversibility under p_B, terminal enumeration and exact log Z."""

from __future__ import annotations

import math

import pytest
import torch

from gfn_fast.train import envs
from gfn_fast.train.envs.base import unique_states
from gfn_fast.train.envs.sequences import Sequences
from gfn_fast.train.policies import make_policy
from gfn_fast.train.rollout import rollout
from gfn_fast.train.sampler import sample_backward, sample_backward_uniform, sample_trajectories
from gfn_fast.train.trainer import TrainConfig
from tests.train.brute_force import TINY_ENVS, trajectories

DISCRETE_PRESETS = [
    ("hypergrid", "torchgfn"),
    ("hypergrid", "sparse"),
    ("sets", "small"),
    ("sets", "paper"),
    ("sequences", "paper"),
    ("phylo", "paper"),
]


@pytest.fixture(params=DISCRETE_PRESETS, ids=lambda p: "-".join(p))
def env(request):
    return envs.make(*request.param)


def _sample(env, epsilon, seed=0):
    torch.manual_seed(seed)
    policy = make_policy(env)
    generator = torch.Generator().manual_seed(seed)
    return rollout(env, policy, 64, generator=generator, epsilon=epsilon)


@pytest.mark.parametrize("epsilon", [0.0, 0.5])
def test_every_sampled_action_is_allowed_and_trajectories_end_terminal(env, epsilon):
    sampled = _sample(env, epsilon)
    parents, actions, children = sampled.parents, sampled.actions, sampled.children
    assert not env.is_terminal(parents).any()
    assert env.forward_mask(parents).gather(1, actions[:, None]).all()
    assert torch.equal(env.step(parents, actions), children)
    # Within a trajectory each child is the next step's parent; the last one is terminal.
    starts, ends = sampled.offsets[:-1], sampled.offsets[1:]
    following = torch.ones(parents.shape[0], dtype=torch.bool)
    following[ends - 1] = False
    assert torch.equal(children[following], parents[1:][following[:-1]])
    assert torch.equal(children[ends - 1], sampled.terminal)
    assert torch.equal(parents[starts], env.initial_states(64))
    assert env.is_terminal(sampled.terminal).all()
    assert not env.forward_mask(sampled.terminal).any()
    assert (sampled.lengths >= 1).all() and (sampled.lengths <= env.max_length).all()


def test_state_codes_are_equal_exactly_for_equal_states(env):
    """state_code groups rows as torch.unique over the rows does (the distinct-state pass
    and the metrics rely on it), over every state a batch visits, terminal ones included."""
    sampled = _sample(env, 0.5)
    states = torch.cat([sampled.parents, sampled.children])
    assert env.state_codes_exact
    _, by_row = torch.unique(states, dim=0, return_inverse=True)
    _, by_code = torch.unique(env.state_code(states), return_inverse=True)
    # The same partition: each row group maps to one code group and back.
    pairs = torch.unique(torch.stack([by_row, by_code]), dim=1)
    assert pairs.shape[1] == int(by_row.max()) + 1 == int(by_code.max()) + 1


def test_state_codes_wrap_around_where_they_cannot_be_exact():
    """A state space beyond int64 still gets codes (mixed radix modulo 2**64, as int64
    arithmetic wraps), and the generic forward_action that matches them still finds each
    step: on a tree, drawing the one trajectory back into x scores what the forward
    rollout sampled."""
    env = Sequences(alphabet=8, length=25)
    assert not env.state_codes_exact
    policy = make_policy(env, 16, 1)
    batch = sample_trajectories(env, policy, 8, generator=torch.Generator().manual_seed(0))
    states = batch.rollout.children
    expected = []
    for row in states.tolist():
        code = 0
        for value, radix in zip(row, env.state_radix, strict=True):
            code = (code * radix + value) % 2**64
        expected.append(code - 2**64 if code >= 2**63 else code)
    assert env.state_code(states).tolist() == expected
    log_pf, log_pb = sample_backward(env, policy, batch.terminal)
    torch.testing.assert_close(log_pf, batch.log_pf.detach())
    assert torch.equal(log_pb, torch.zeros_like(log_pb))


def test_forward_trajectories_reverse_under_pb(env):
    sampled = _sample(env, 0.0)
    parents, children = sampled.parents, sampled.children
    backward = env.backward_action(parents, sampled.actions)
    assert env.backward_mask(children).gather(1, backward[:, None]).all()
    assert torch.equal(env.backward_step(children, backward), parents)
    assert not env.backward_mask(env.initial_states(1)).any()


def test_backward_walks_reach_s0_through_forward_transitions(env):
    terminal = _sample(env, 0.0).terminal
    trail, taken = sample_backward_uniform(env, terminal, torch.Generator().manual_seed(1))
    assert torch.equal(trail[-1], env.initial_states(terminal.shape[0]))
    for child, parent, action in zip(trail[:-1], trail[1:], taken, strict=True):
        moved = action >= 0
        _, _, reachable = env.expand(parent[moved])
        codes = env.state_code(reachable)
        assert torch.isin(env.state_code(child[moved]), codes).all()


@pytest.mark.parametrize("name", list(TINY_ENVS))
def test_terminal_enumeration_matches_brute_force(name):
    env = TINY_ENVS[name]()
    expected = {int(env.state_code(states[-1][None])[0]) for states, _ in trajectories(env)}
    found = env.terminal_states()
    assert set(env.state_code(found).tolist()) == expected
    assert len(unique_states(env, found)[0]) == len(found)


@pytest.mark.parametrize("name", list(TINY_ENVS))
def test_uniform_pb_is_a_distribution_over_trajectories_into_each_x(name):
    """sum over trajectories ending at x of p_B(tau | x) = 1 for every x."""
    env = TINY_ENVS[name]()
    total: dict[int, float] = {}
    for states, _ in trajectories(env):
        log_pb = sum(float(env.log_pb_uniform(s[None])[0]) for s in states[1:])
        code = int(env.state_code(states[-1][None])[0])
        total[code] = total.get(code, 0.0) + math.exp(log_pb)
    assert all(abs(v - 1.0) < 1e-6 for v in total.values())  # float32 logs


@pytest.mark.parametrize(
    "name, preset",
    [
        ("sets", "small"),
        ("sequences", "tiny"),
        pytest.param("sets", "medium", marks=pytest.mark.slow),
        pytest.param("sequences", "paper", marks=pytest.mark.slow),
    ],
)
def test_closed_form_log_partition_matches_enumeration(name, preset):
    env = envs.make(name, preset)
    enumerated = float(torch.logsumexp(env.log_reward(env.terminal_states()).double(), 0))
    assert env.log_partition() == pytest.approx(enumerated, abs=1e-5)
    assert env.max_log_reward() == pytest.approx(
        float(env.log_reward(env.terminal_states()).max()), abs=1e-5
    )


@pytest.mark.parametrize("ndim, height", [(1, 2), (2, 3), (3, 5), (4, 2)])
def test_hypergrid_forward_mask_on_every_state(ndim, height):
    """Coordinate i may grow while below H - 1 and the state is not done; stop while not
    done; nothing once done: against a loop over every state, done or not."""
    env = envs.HyperGrid(ndim=ndim, height=height)
    grids = torch.meshgrid(*[torch.arange(height)] * ndim, torch.arange(2), indexing="ij")
    states = torch.stack([g.flatten() for g in grids], 1)
    expected = torch.tensor(
        [
            [not s[-1] and s[i] < height - 1 for i in range(ndim)] + [not s[-1]]
            for s in states.tolist()
        ]
    )
    assert torch.equal(env.forward_mask(states), expected)


@pytest.mark.parametrize("ndim, height", [(1, 2), (2, 12), (3, 5), (4, 8)])
def test_hypergrid_log_reward_is_the_formula_on_every_state(ndim, height):
    env = envs.HyperGrid(ndim=ndim, height=height, r0=1e-3, r1=0.5, r2=2.0)
    ones = torch.ones(1, dtype=torch.long)  # done
    grids = torch.meshgrid(*[torch.arange(height)] * ndim, ones, indexing="ij")
    states = torch.stack([g.flatten() for g in grids], 1)
    a = (states[:, :ndim].double() / (height - 1) - 0.5).abs()
    outer = (a > 0.25).all(-1).double()
    ring = ((a > 0.3) & (a < 0.4)).all(-1).double()
    expected = torch.log(1e-3 + 0.5 * outer + 2.0 * ring)
    torch.testing.assert_close(env.log_reward(states).double(), expected)


def test_hypergrid_reward_matches_torchgfn_formula():
    env = envs.make("hypergrid", "torchgfn")
    x = env.terminal_states()
    ax = (x[:, :2] / 7 - 0.5).abs()
    expected = 0.1 + 0.5 * (ax > 0.25).all(-1) + 2.0 * ((ax > 0.3) & (ax < 0.4)).all(-1)
    assert torch.allclose(env.log_reward(x).exp(), expected.float())
    assert len(x) == 64


@pytest.mark.parametrize("name, mean", [("gmm", (1.0, 1.0)), ("banana", (0.0, -2.0))])
def test_continuous_targets_are_normalised_and_sampled_exactly(name, mean):
    env = envs.make(name)
    grid = torch.linspace(-12, 12, 601)
    points = torch.cartesian_prod(grid, grid)
    mass = float(env.log_reward(points).exp().sum() * (grid[1] - grid[0]) ** 2)
    assert mass == pytest.approx(1.0, abs=2e-3)
    # Exact samples: their mean is the target's (banana: E[x2] = E[v - u^2 - 1] = -2).
    samples = env.sample_target(100_000, torch.Generator().manual_seed(0))
    assert torch.allclose(samples.mean(0), torch.tensor(mean), atol=0.02)


def test_make_rejects_unknown_names_and_presets():
    with pytest.raises(ValueError, match="env: expected one of"):
        envs.make("grid")
    with pytest.raises(ValueError, match="preset: expected one of"):
        envs.make("sets", "huge")


def test_declared_capabilities_decide_policies_sampling_and_metrics():
    """Policies, sampler and trainer read what an env declares; nothing probes attributes."""
    from gfn_fast.train.policies import DeepSet, GaussianMixturePolicy
    from gfn_fast.train.trainer.evaluation import evaluation_for

    class MembershipGrid(envs.HyperGrid):
        feature_layout = "membership"  # one-hot features are a 0/1 vector too

    with pytest.raises(ValueError, match="deep_set: needs membership features"):
        make_policy(envs.HyperGrid(), deep_set=True)
    assert isinstance(make_policy(MembershipGrid(), deep_set=True).forward_net, DeepSet)
    continuous = make_policy(envs.make("banana"))
    assert isinstance(continuous, GaussianMixturePolicy) and continuous.learned_pb is False
    with pytest.raises(ValueError, match="learn_pb: Banana is a tree"):
        make_policy(envs.make("banana"), learn_pb=True)
    assert make_policy(envs.HyperGrid(), learn_pb=True).learned_pb is True

    class TreeGrid(envs.HyperGrid):
        is_tree = True  # declared: the sampler then reports p_B = 1

    batch = sample_trajectories(TreeGrid(), make_policy(TreeGrid()), 4)
    assert batch.log_pb is None
    device = torch.device("cpu")
    config = TrainConfig()
    metrics = {
        name: evaluation_for(envs.make(name, preset), config, device).metric
        for name, preset in [("hypergrid", None), ("sets", "paper"), ("gmm", None)]
    }
    assert metrics == {"hypergrid": "exact_l1", "sets": "mc_l1", "gmm": "js"}
