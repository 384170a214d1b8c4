"""Sampler: log-probs from the sampling pass, off-policy log q, padded and packed layouts."""

from __future__ import annotations

import math

import pytest
import torch

import gfn_fast as gf
from gfn_fast.train import envs
from gfn_fast.train.policies import make_policy
from gfn_fast.train.sampler import continuous_log_pt, sample_trajectories


def _batch(name, preset=None, learn_pb=False, **options):
    env = envs.make(name, preset)
    torch.manual_seed(0)
    policy = make_policy(env, learn_pb=learn_pb) if learn_pb else make_policy(env)
    generator = torch.Generator().manual_seed(0)
    return env, policy, sample_trajectories(env, policy, 32, generator=generator, **options)


@pytest.mark.parametrize("name", ["hypergrid", "sets", "sequences", "phylo"])
def test_log_pf_from_the_sampling_pass_matches_a_recomputation(name):
    env, policy, batch = _batch(name)
    steps = batch.actions.shape[1]
    inside = torch.arange(steps) < batch.lengths[:, None]
    parents = batch.states[:, :-1]
    logits = policy(env.features(parents.flatten(0, 1))).view(32, steps, -1)
    mask = env.forward_mask(parents.flatten(0, 1)).view(32, steps, -1) | ~inside[..., None]
    recomputed = gf.logprob_from_logits(logits, batch.actions, batch.lengths, action_mask=mask)
    assert torch.allclose(batch.log_pf.sum(1), recomputed, atol=1e-5)
    assert torch.equal(batch.log_pf[~inside], torch.zeros_like(batch.log_pf[~inside]))


def test_uniform_behaviour_log_q_counts_allowed_actions():
    env, _, batch = _batch("hypergrid", epsilon=1.0)
    expected = torch.zeros(32)
    for t in range(batch.actions.shape[1]):
        allowed = env.forward_mask(batch.states[:, t]).sum(-1).clamp_min(1)
        expected -= torch.where(t < batch.lengths, torch.log(allowed.float()), 0.0)
    assert torch.allclose(batch.log_behavior, expected, atol=1e-5)


def test_tempered_behaviour_is_off_policy_and_on_policy_has_none():
    _, _, on = _batch("sets", "small")
    _, _, tempered = _batch("sets", "small", temperature=2.0)
    assert on.log_behavior is None
    assert tempered.log_behavior is not None and torch.isfinite(tempered.log_behavior).all()


@pytest.mark.parametrize(
    "name, learn_pb",
    [("hypergrid", False), ("hypergrid", True), ("sets", True), ("phylo", True)],
)
def test_padded_and_packed_layouts_give_the_same_loss_and_gradient(name, learn_pb):
    _, policy, batch = _batch(name, learn_pb=learn_pb)
    results = []
    for layout in ("padded", "packed"):
        loss, _ = gf.divergence_loss("renyi", **batch.loss_inputs(layout))
        grads = torch.autograd.grad(loss, list(policy.parameters()), retain_graph=True)
        results.append((loss, grads))
    assert torch.allclose(results[0][0], results[1][0], atol=1e-6)
    for a, b in zip(results[0][1], results[1][1], strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_learned_pb_is_differentiable_and_uniform_pb_counts_parents():
    env, policy, learned = _batch("hypergrid", learn_pb=True)
    assert learned.log_pb.requires_grad
    _, _, uniform = _batch("hypergrid")
    children = uniform.states[:, 1:].flatten(0, 1)
    parents = env.backward_mask(children).sum(-1).clamp_min(1).view(32, -1)
    inside = torch.arange(parents.shape[1]) < uniform.lengths[:, None]
    assert torch.allclose(uniform.log_pb, torch.where(inside, -parents.float().log(), 0.0))


def test_trees_have_no_log_pb():
    _, _, batch = _batch("sequences")
    assert batch.log_pb is None


@pytest.mark.parametrize("name", ["gmm", "banana"])
def test_continuous_log_pt_matches_the_sampling_pass(name):
    env, policy, batch = _batch(name)
    x = env.terminal_objects(batch.terminal)
    assert torch.allclose(continuous_log_pt(env, policy, x), batch.log_pf.sum(1), atol=1e-5)
    assert torch.allclose(batch.log_reward, env.log_reward(x))


def test_sampler_rejects_bad_options():
    env = envs.make("hypergrid")
    policy = make_policy(env)
    with pytest.raises(ValueError, match="epsilon"):
        sample_trajectories(env, policy, 4, epsilon=1.5)
    with pytest.raises(ValueError, match="temperature"):
        sample_trajectories(env, policy, 4, temperature=0.0)
    with pytest.raises(ValueError, match="batch_size"):
        sample_trajectories(env, policy, 0)
    gmm = envs.make("gmm")
    with pytest.raises(ValueError, match="discrete envs only"):
        sample_trajectories(gmm, make_policy(gmm), 4, epsilon=0.1)
    assert math.isfinite(float(sample_trajectories(env, policy, 4).log_reward.sum()))
