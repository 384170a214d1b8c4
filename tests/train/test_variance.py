"""`gfn-fast variance`: the trace-of-covariance estimator, the gradient samples against an
exact enumeration of every batch of a tiny task, and the command's output files."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from gfn_fast.train import envs, variance
from gfn_fast.train.cli import main
from gfn_fast.train.policies import make_policy
from gfn_fast.train.trainer import TrainConfig
from tests.helpers import one_thread
from tests.train.brute_force import trajectories


def test_total_variance_of_two_samples_is_half_their_squared_distance():
    x = torch.tensor([[1.0, 2.0, -1.0], [3.0, -2.0, 0.5]])
    want = float(((x[0] - x[1]) ** 2).sum() / 2)
    assert variance.total_variance(x) == pytest.approx(want, rel=1e-12)


def test_total_variance_of_gaussian_samples_is_the_trace():
    gen = torch.Generator().manual_seed(0)
    scales = torch.tensor([0.1, 1.0, 3.0, 10.0], dtype=torch.float64)
    samples = 5.0 + scales * torch.randn(20000, 4, generator=gen, dtype=torch.float64)
    # trace = 110.01; the estimate's relative standard error is about 0.01 here.
    assert variance.total_variance(samples) == pytest.approx(float((scales**2).sum()), rel=0.04)


@pytest.mark.parametrize("shape", [(1, 5), (5,), (0, 3)])
def test_total_variance_rejects_fewer_than_two_samples(shape):
    with pytest.raises(ValueError, match=r"gradients: expected a \[R, P\] tensor with R >= 2"):
        variance.total_variance(torch.zeros(shape))


def _exact_variance(env, policy, k, coefficient):
    """Exact trace of the covariance of sum_k c_k grad log p_F(tau_k) over every ordered batch
    of k trajectories; coefficient(l [k]) -> c [k] written out here from MATH.md."""
    parameters = list(policy.parameters())
    log_pf, grads, log_targets = [], [], []
    for states, actions in trajectories(env):
        total = torch.zeros(())
        for state, action in zip(states[:-1], actions, strict=True):
            logits = policy(env.features(state[None]))[0]
            logits = logits.masked_fill(~env.forward_mask(state[None])[0], -math.inf)
            total = total + logits.log_softmax(-1)[action]
        grads.append(torch.cat([g.flatten() for g in torch.autograd.grad(total, parameters)]))
        log_pf.append(float(total.detach()))
        # log R(x) + log p_B(tau | x): uniform p_B over the N! orders of a set.
        log_reward = float(env.log_reward(states[-1][None])[0])
        log_targets.append(log_reward - math.lgamma(env.size + 1))
    log_pf = torch.tensor(log_pf, dtype=torch.float64)
    grads = torch.stack(grads).double()
    l_all = torch.tensor(log_targets, dtype=torch.float64) - log_pf
    n = len(log_pf)
    mean = torch.zeros(grads.shape[1], dtype=torch.float64)
    second = 0.0
    batches = list(itertools.product(range(n), repeat=k))
    per_batch = []
    for batch in batches:
        index = torch.tensor(batch)
        probability = float(log_pf[index].sum().exp())
        g = coefficient(l_all[index]) @ grads[index]
        per_batch.append((probability, g))
        mean += probability * g
    for probability, g in per_batch:
        second += probability * float(((g - mean) ** 2).sum())
    return second


COEFFICIENTS = {  # MATH.md's reverse_kl c_k, on-policy
    "none": lambda l: (1 - l) / l.numel(),
    "loo": lambda l: -(l - (l.sum() - l) / (l.numel() - 1)) / l.numel(),
}


def test_gradient_samples_match_the_exact_variance_of_a_tiny_task():
    """Sets of 2 out of 4 (12 trajectories): every batch of 3 is enumerated exactly."""
    torch.manual_seed(0)
    env = envs.Sets(pool=4, size=2, seed=1)
    policy = make_policy(env, hidden=8, layers=1)
    generator = torch.Generator().manual_seed(1)
    with one_thread():  # tiny ops: threads only add overhead on a busy machine
        samples = variance.gradient_samples(env, policy, "reverse_kl", 3, 1500, generator)
    for cv, coefficient in COEFFICIENTS.items():
        exact = _exact_variance(env, policy, 3, coefficient)
        # 1500 batches: the estimate's relative standard error is about 4% here.
        assert variance.total_variance(samples[cv]) == pytest.approx(exact, rel=0.15), cv
    assert _exact_variance(env, policy, 3, COEFFICIENTS["loo"]) < _exact_variance(
        env, policy, 3, COEFFICIENTS["none"]
    )


def test_measure_rows_and_the_command_files(tmp_path):
    status = main(
        [
            "variance",
            "--env",
            "sets",
            "--preset",
            "small",
            "--objectives",
            "reverse_kl,vargrad",
            "--batch-sizes",
            "4,8",
            "--repeats",
            "3",
            "--train-steps",
            "2",
            "--no-progress",
            "--out",
            str(tmp_path),
        ]
    )
    assert status == 0
    rows = json.loads((tmp_path / "variance.json").read_text())["rows"]
    keys = {"objective", "control_variate", "batch_size", "grad_variance", "repeats", "policy"}
    assert all(set(row) == keys for row in rows)
    got = {(r["objective"], r["control_variate"], r["batch_size"], r["policy"]) for r in rows}
    want = {
        (objective, cv, k, policy)
        for objective, cvs in (("reverse_kl", ("none", "loo")), ("vargrad", ("none",)))
        for cv in cvs
        for k in (4, 8)
        for policy in ("initial", "trained")
    }
    assert got == want
    assert all(r["repeats"] == 3 and r["grad_variance"] > 0 for r in rows)
    assert (tmp_path / "variance.png").stat().st_size > 0


def test_measure_is_reproducible_and_independent_of_the_other_batch_sizes():
    config = TrainConfig(env="sets", preset="small", steps=4)
    one = variance.measure(config, ("forward_kl",), (4,), repeats=3, train_steps=1)
    two = variance.measure(config, ("forward_kl",), (8, 4), repeats=3, train_steps=1)
    assert one == [row for row in two if row["batch_size"] == 4]


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objectives": ("kl",)}, "objectives: expected names in"),
        ({"objectives": ()}, "objectives: expected at least one"),
        ({"batch_sizes": (1, 8)}, r"batch_sizes: expected sizes >= 2, got \(1, 8\)"),
        ({"repeats": 1}, "repeats: expected >= 2 batches"),
        ({"train_steps": 9}, r"train_steps: expected in \[0, 4\]"),
    ],
)
def test_measure_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        variance.measure(TrainConfig(env="sets", preset="small", steps=4), **kwargs)


def test_measure_rejects_off_policy_configs():
    with pytest.raises(
        ValueError, match="epsilon, temperature: the variance is measured on-policy"
    ):
        variance.measure(TrainConfig(env="sets", preset="small", epsilon=0.1))


def test_command_reports_bad_batch_sizes_and_cv(capsys):
    assert main(["variance", "--batch-sizes", "32,abc"]) == 2
    assert "expected comma-separated integers such as 32,128,512, got '32,abc'" in (
        capsys.readouterr().err
    )
    assert main(["variance", "--cv", "loo", "--out", "unused"]) == 2
    assert "--cv: variance measures every control variate" in capsys.readouterr().err
