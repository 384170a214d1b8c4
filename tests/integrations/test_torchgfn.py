"""Peer cross-checks against torchgfn itself: same trajectories, same numbers.

Float64 throughout, so agreement is to rounding (the contract asks for 1e-6).
"""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("gfn", reason="torchgfn is not installed (pip install 'gfn_fast[torchgfn]')")

from gfn.estimators import DiscretePolicyEstimator  # noqa: E402
from gfn.gflownet import LogPartitionVarianceGFlowNet, TBGFlowNet  # noqa: E402
from gfn.gym import HyperGrid  # noqa: E402
from gfn.preprocessors import KHotPreprocessor  # noqa: E402
from gfn.utils.modules import MLP  # noqa: E402
from gfn.utils.prob_calculations import get_trajectory_pfs_and_pbs  # noqa: E402

import gfn_fast as gf  # noqa: E402
from gfn_fast.integrations.torchgfn import DivergenceGFlowNet, trajectory_batch  # noqa: E402
from gfn_fast.integrations.torchgfn_exact import exact_l1, terminal_distribution  # noqa: E402
from gfn_fast.train import envs, metrics  # noqa: E402

TOL = 1e-6
BATCH = 64


@pytest.fixture(autouse=True, scope="module")
def float64():
    """float64 by default, and one thread: these tensors are tiny, and cores are shared."""
    dtype, threads = torch.get_default_dtype(), torch.get_num_threads()
    torch.set_default_dtype(torch.float64)
    torch.set_num_threads(1)
    yield
    torch.set_default_dtype(dtype)
    torch.set_num_threads(threads)


def make_policies(env: HyperGrid, seed: int = 0, hidden: int = 32):
    """Separate p_F and p_B MLPs on k-hot states, as torchgfn's HyperGrid tutorial."""
    torch.manual_seed(seed)
    preprocessor = KHotPreprocessor(env.height, env.ndim)
    pf = DiscretePolicyEstimator(
        MLP(preprocessor.output_dim, env.n_actions, hidden_dim=hidden),
        env.n_actions,
        preprocessor,
    )
    pb = DiscretePolicyEstimator(
        MLP(preprocessor.output_dim, env.n_actions - 1, hidden_dim=hidden),
        env.n_actions,
        preprocessor,
        is_backward=True,
    )
    return pf, pb


def make_env(height: int = 4) -> HyperGrid:
    return HyperGrid(ndim=2, height=height, store_all_states=True, validate_modes=False)


def sample(gflownet, env, seed: int = 1, n: int = BATCH, **kwargs):
    torch.manual_seed(seed)
    return gflownet.sample_trajectories(env, n, **kwargs)


@pytest.fixture(scope="module")
def sampled(float64):
    """(env, pf, pb, trajectories): one on-policy batch shared by the read-only checks."""
    env = make_env()
    pf, pb = make_policies(env)
    return env, pf, pb, sample(TBGFlowNet(pf, pb), env)


def gradients(loss: torch.Tensor, parameters: list[torch.Tensor]) -> list[torch.Tensor]:
    return list(torch.autograd.grad(loss, parameters, allow_unused=False))


def max_abs_difference(left: list[torch.Tensor], right: list[torch.Tensor]) -> float:
    return max(float((a - b).abs().max()) for a, b in zip(left, right, strict=True))


def test_batch_layout_matches_torchgfn(sampled):
    env, pf, pb, trajectories = sampled
    batch = trajectory_batch(trajectories, pf, pb)
    torchgfn_pf, torchgfn_pb = get_trajectory_pfs_and_pbs(pf, pb, trajectories)

    steps = trajectories.max_length
    assert batch.log_pf.shape == batch.log_pb.shape == (BATCH, steps)
    assert torch.equal(batch.lengths, trajectories.terminating_idx)
    assert torch.equal(batch.log_reward, trajectories.log_rewards)
    assert batch.log_behavior is None
    assert torch.equal(batch.log_pf, torchgfn_pf.T) and torch.equal(batch.log_pb, torchgfn_pb.T)
    # The last counted step is the exit action, which log p_B leaves out (0).
    last = (batch.lengths - 1).unsqueeze(1)
    assert bool(trajectories.actions.is_exit.T.gather(1, last).all())
    assert bool((batch.log_pb.gather(1, last) == 0).all())
    sums = gf.segment_logprob(batch.log_pf, batch.lengths)
    torch.testing.assert_close(sums, torchgfn_pf.sum(0), rtol=0, atol=1e-12)


def test_tb_value_and_gradients_equal_torchgfn(sampled):
    env, pf, pb, trajectories = sampled
    reference = TBGFlowNet(pf, pb, init_logZ=0.7)
    parameters = [*pf.parameters(), *pb.parameters(), reference.logZ]

    expected = reference.loss(env, trajectories)
    expected_grads = gradients(expected, parameters)

    ours = DivergenceGFlowNet(pf, pb, "tb", control_variate="none", init_log_z=0.7)
    loss = ours.loss(env, trajectories)
    grads = gradients(loss, [*pf.parameters(), *pb.parameters(), ours.logZ])

    assert abs((loss - expected).item()) < TOL
    assert max_abs_difference(grads, expected_grads) < TOL


def test_vargrad_value_and_gradients_equal_torchgfn(sampled):
    env, pf, pb, trajectories = sampled
    reference = LogPartitionVarianceGFlowNet(pf, pb)
    parameters = [*pf.parameters(), *pb.parameters()]

    expected = reference.loss(env, trajectories)
    expected_grads = gradients(expected, parameters)
    batch = trajectory_batch(trajectories, pf, pb)
    loss, _ = gf.divergence_loss("vargrad", **batch.loss_inputs())

    assert abs((loss - expected).item()) < TOL
    assert max_abs_difference(gradients(loss, parameters), expected_grads) < TOL


def test_saved_logprobs_give_the_recomputed_loss():
    env = make_env()
    pf, pb = make_policies(env)
    gflownet = DivergenceGFlowNet(pf, pb, "renyi", alpha=0.5)
    trajectories = sample(gflownet, env, save_logprobs=True)
    saved = gflownet.loss(env, trajectories, recalculate_all_logprobs=False)
    recomputed = gflownet.loss(env, trajectories, recalculate_all_logprobs=True)
    parameters = list(pf.parameters())
    assert abs((saved - recomputed).item()) < 1e-12
    saved_grads = gradients(saved, parameters)
    assert max_abs_difference(saved_grads, gradients(recomputed, parameters)) < 1e-12


def test_off_policy_batch_carries_the_behaviour_log_probability():
    env = make_env()
    pf, pb = make_policies(env)
    gflownet = DivergenceGFlowNet(pf, pb, "renyi", off_policy=True)
    trajectories = sample(gflownet, env, save_logprobs=True, epsilon=0.3)
    batch = trajectory_batch(trajectories, pf, pb, off_policy=True)

    behaviour = get_trajectory_pfs_and_pbs(pf, pb, trajectories, epsilon=0.3)[0].sum(0)
    on_policy = get_trajectory_pfs_and_pbs(pf, pb, trajectories)[0].sum(0)
    torch.testing.assert_close(batch.log_behavior, behaviour, rtol=0, atol=1e-12)
    torch.testing.assert_close(batch.log_pf.sum(1), on_policy, rtol=0, atol=1e-12)
    assert not batch.log_behavior.requires_grad
    assert torch.isfinite(gflownet.loss(env, trajectories))

    with pytest.raises(ValueError, match="save_logprobs=True"):
        trajectory_batch(sample(gflownet, env, epsilon=0.3), pf, pb, off_policy=True)
    with pytest.raises(ValueError, match="recalculate_all_logprobs"):
        trajectory_batch(trajectories, pf, pb, off_policy=True, recalculate_all_logprobs=False)


@pytest.mark.parametrize(("objective", "learn_log_z"), [("renyi", False), ("tsallis", True)])
def test_divergence_gflownet_steps_every_parameter(objective, learn_log_z):
    env = make_env()
    pf, pb = make_policies(env)
    gflownet = DivergenceGFlowNet(pf, pb, objective, alpha=0.5, learn_log_z=learn_log_z)
    optimizer = torch.optim.Adam(gflownet.parameters(), lr=1e-3)
    before = [p.detach().clone() for p in gflownet.parameters()]
    trajectories = sample(gflownet, env, n=16, save_logprobs=True)
    gflownet.loss(env, trajectories, recalculate_all_logprobs=False).backward()
    optimizer.step()
    assert all(not torch.equal(a, b) for a, b in zip(before, gflownet.parameters(), strict=True))
    assert set(gflownet.last_stats) == {"value", "ess", "log_z_hat", "skipped"}
    assert (gflownet.logZ is not None) == learn_log_z


def test_divergence_gflownet_rejects_bad_arguments(sampled):
    env, pf, pb, trajectories = sampled
    with pytest.raises(ValueError, match="objective"):
        DivergenceGFlowNet(pf, pb, "kl")
    with pytest.raises(ValueError, match="learn_log_z"):
        DivergenceGFlowNet(pf, pb, "renyi", learn_log_z=True)
    with pytest.raises(ValueError, match="learn_log_z"):
        DivergenceGFlowNet(pf, pb, "tb", learn_log_z=False)
    gflownet = DivergenceGFlowNet(pf, pb, "renyi")
    with pytest.raises(ValueError, match="reduction"):
        gflownet.loss(env, trajectories, reduction="none")


def test_exact_terminal_distribution_matches_torchgfn_sampling():
    env = make_env()
    pf, _ = make_policies(env)
    exact = terminal_distribution(env, pf)
    torch.manual_seed(2)
    n = 4000
    terminal = TBGFlowNet(pf, None, constant_pb=True).sample_terminating_states(env, n)
    empirical = torch.bincount(env.get_states_indices(terminal), minlength=len(exact)) / n
    assert abs(float(exact.sum()) - 1) < 1e-12
    # 5 standard errors of the largest cell: a wrong transition shows up far above this.
    assert float((empirical - exact).abs().max()) < 5 * (0.25 / n) ** 0.5


def test_exact_l1_against_true_dist(sampled):
    env, pf, _, _ = sampled
    all_states = env.all_states
    target = torch.softmax(env.log_reward(all_states).to(torch.float64), dim=0)
    torch.testing.assert_close(target, env.true_dist(), rtol=0, atol=1e-12)
    expected = float((terminal_distribution(env, pf) - target).abs().sum())
    assert abs(exact_l1(env, pf) - expected) < 1e-12
    assert 0 < expected < 2


class FeaturePolicy(torch.nn.Module):
    """gfn_fast's policy interface (features -> forward logits) around a torchgfn module.

    Both libraries feed HyperGrid policies the k-hot coordinates, in the same order.
    """

    def __init__(self, module: torch.nn.Module):
        super().__init__()
        self.module = module

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return self.module(features.to(torch.get_default_dtype()))


def test_our_exact_l1_on_torchgfn_hypergrid_equals_true_dist_l1():
    preset = envs.hypergrid.PRESETS["torchgfn"]
    theirs = HyperGrid(
        ndim=preset["ndim"],
        height=preset["height"],
        reward_fn_kwargs={"R0": preset["r0"], "R1": preset["r1"], "R2": preset["r2"]},
        store_all_states=True,
    )
    ours = envs.hypergrid.HyperGrid(**preset)
    pf, _ = make_policies(theirs)
    policy = FeaturePolicy(pf.module)

    terminal, p_t = metrics.exact_terminal_distribution(ours, policy)
    torch.testing.assert_close(p_t, terminal_distribution(theirs, pf), rtol=0, atol=1e-12)
    target = metrics.target_distribution(ours, terminal)
    torch.testing.assert_close(target, theirs.true_dist(), rtol=0, atol=1e-6)
    assert abs(metrics.exact_l1(ours, policy) - exact_l1(theirs, pf)) < 1e-6
