"""Exactness on an enumerable toy: expected estimator gradients against exact gradients.

Every batch of K trajectories of the 3x3 hypergrid is enumerated with its probability
under the sampling policy, so E[estimator] is computed exactly (no Monte Carlo). The
unbiased estimators must match the exact gradient of their divergence to 1e-10; the
self-normalised ones must get closer as K grows.
"""

from __future__ import annotations

import pytest
import torch

from gfn_fast import objectives
from gfn_fast.objective import Objective
from tests.toy_hypergrid import F64, ToyHypergrid, all_batches

TB_LOG_Z = 0.3


@pytest.fixture(scope="module")
def toy() -> ToyHypergrid:
    return ToyHypergrid(seed=0)


@pytest.fixture(scope="module")
def jacobians(toy):
    return toy.jacobians()


def expected_gradient(toy, jacobians, objective, cv, k, alpha=0.5, off_policy=False, log_z=None):
    """(E[grad theta], E[grad phi], E[e]) of the estimator over every batch of size k."""
    log_pf = toy.log_pf().detach()
    log_pb = toy.log_pb().detach()
    log_q = toy.behaviour_log_q() if off_policy else log_pf
    batches = all_batches(len(toy.trajectories), k)
    prob = torch.exp(log_q[batches].sum(1))
    behaviour = log_q[batches] if off_policy else None

    def coefficients(s, b, r, q):
        out = objectives.coefficients(
            Objective(objective, cv, alpha),
            log_pf=s,
            log_pb=b,
            log_reward=r,
            log_behavior=q,
            log_z=log_z,
        )
        return out.c, out.d, out.e

    in_dims = (0, 0, 0, 0 if off_policy else None)
    c, d, e = torch.vmap(coefficients, in_dims=in_dims)(
        log_pf[batches], log_pb[batches], toy.log_reward[batches], behaviour
    )
    weight_s = torch.zeros(len(toy.trajectories), dtype=F64).index_add(
        0, batches.reshape(-1), (prob[:, None] * c).reshape(-1)
    )
    weight_b = torch.zeros(len(toy.trajectories), dtype=F64).index_add(
        0, batches.reshape(-1), (prob[:, None] * d).reshape(-1)
    )
    js, jb = jacobians
    return weight_s @ js, weight_b @ jb, (prob * e).sum()


def exact_gradient(toy, divergence):
    theta_grad, phi_grad = torch.autograd.grad(divergence, (toy.theta, toy.phi), allow_unused=True)
    phi_grad = torch.zeros_like(toy.phi) if phi_grad is None else phi_grad
    return theta_grad.reshape(-1), phi_grad.reshape(-1)


def reverse_kl(toy):
    log_pf = toy.log_pf()
    return (log_pf.exp() * (log_pf - toy.log_target())).sum()


def forward_kl(toy):
    log_target = toy.log_target()
    return (log_target.exp() * (log_target - toy.log_pf())).sum()


def tsallis(toy, alpha):
    log_pf = toy.log_pf()
    moment = torch.exp(alpha * log_pf + (1 - alpha) * toy.log_target()).sum()
    return (moment - 1) / (alpha * (alpha - 1))


def renyi(toy, alpha):
    log_pf = toy.log_pf()
    moment = torch.logsumexp(alpha * log_pf + (1 - alpha) * toy.log_target(), 0)
    return moment / (alpha * (alpha - 1))


def assert_close(got, want, tol):
    scale = want.abs().max()
    err = (got - want).abs().max()
    assert err <= tol * scale, f"relative error {float(err / scale):.3e} > {tol}"


@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize("cv", ["none", "loo"])
def test_reverse_kl_is_unbiased(toy, jacobians, cv, off_policy):
    theta, phi, _ = expected_gradient(toy, jacobians, "reverse_kl", cv, 2, off_policy=off_policy)
    want_theta, want_phi = exact_gradient(toy, reverse_kl(toy))
    assert_close(theta, want_theta, 1e-10)
    assert_close(phi, want_phi, 1e-10)


@pytest.mark.parametrize("cv, off_policy", [("none", False), ("loo", False), ("none", True)])
def test_tb_is_unbiased(toy, jacobians, cv, off_policy):
    log_z = torch.tensor(TB_LOG_Z, dtype=F64, requires_grad=True)
    theta, phi, e = expected_gradient(
        toy, jacobians, "tb", cv, 2, off_policy=off_policy, log_z=log_z.detach()
    )
    # The TB objective under a fixed sampler q: E_q[(log Z - l)^2].
    q = (toy.behaviour_log_q() if off_policy else toy.log_pf().detach()).exp()
    l = toy.log_reward + toy.log_pb() - toy.log_pf()
    loss = (q * (log_z - l) ** 2).sum()
    want_theta, want_phi = exact_gradient(toy, loss)
    (want_e,) = torch.autograd.grad((q * (log_z - l.detach()) ** 2).sum(), log_z)
    assert_close(theta, want_theta, 1e-10)
    assert_close(phi, want_phi, 1e-10)
    assert_close(e, want_e, 1e-10)


def test_tb_on_policy_gradient_is_twice_reverse_kl(toy, jacobians):
    """Proposition 1 of the paper: E[grad_theta TB] = 2 grad_theta KL(p_F || pi), any log Z."""
    for log_z in (-1.0, 0.3, 4.0):
        theta, _, _ = expected_gradient(
            toy, jacobians, "tb", "none", 2, log_z=torch.tensor(log_z, dtype=F64)
        )
        want_theta, _ = exact_gradient(toy, reverse_kl(toy))
        assert_close(theta, 2 * want_theta, 1e-10)


@pytest.mark.parametrize("alpha", [-1.0, 0.5, 2.0])
@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize("cv", ["none", "loo"])
def test_tsallis_with_true_log_z_is_unbiased(toy, jacobians, cv, off_policy, alpha):
    theta, phi, _ = expected_gradient(
        toy, jacobians, "tsallis", cv, 2, alpha=alpha, off_policy=off_policy, log_z=toy.log_z
    )
    want_theta, want_phi = exact_gradient(toy, tsallis(toy, alpha))
    assert_close(theta, want_theta, 1e-10)
    assert_close(phi, want_phi, 1e-10)


def test_tsallis_learned_log_z_gradient_vanishes_at_true_log_z(toy, jacobians):
    """e is unbiased for a convex function of log Z minimised exactly at the true log Z."""
    for shift, sign in ((0.0, 0), (0.5, 1), (-0.5, -1)):
        log_z = toy.log_z + shift
        _, _, e = expected_gradient(toy, jacobians, "tsallis", "loo", 2, log_z=log_z)
        if sign == 0:
            assert abs(float(e)) < 1e-12
        else:
            assert float(e) * sign > 0


def _relative_bias(toy, jacobians, objective, cv, k, divergence, alpha=0.5):
    theta, phi, _ = expected_gradient(toy, jacobians, objective, cv, k, alpha=alpha)
    want_theta, want_phi = exact_gradient(toy, divergence)
    got, want = torch.cat([theta, phi]), torch.cat([want_theta, want_phi])
    return float((got - want).norm() / want.norm())


@pytest.mark.parametrize(
    "objective, alpha, divergence",
    [
        ("forward_kl", 0.5, lambda toy: forward_kl(toy)),
        ("renyi", 0.5, lambda toy: renyi(toy, 0.5)),
        ("renyi", -1.0, lambda toy: renyi(toy, -1.0)),
        ("renyi", 2.0, lambda toy: renyi(toy, 2.0)),
    ],
)
@pytest.mark.parametrize("cv", ["none", "loo"])
def test_self_normalised_bias_shrinks_with_k(toy, jacobians, objective, alpha, divergence, cv):
    biases = [
        _relative_bias(toy, jacobians, objective, cv, k, divergence(toy), alpha) for k in (2, 3, 4)
    ]
    assert biases[0] > biases[1] > biases[2], biases
    assert biases[2] < 0.75 * biases[0], biases


def test_renyi_loo_matches_paper_eq7_up_to_factor(toy, jacobians):
    """On-policy renyi loo is the paper's Eq. 7 leave-one-out estimator times (K-1)/K."""
    k, alpha = 3, 0.5
    log_pf = toy.log_pf().detach()
    s = log_pf[:k]
    b = toy.log_pb().detach()[:k]
    r = toy.log_reward[:k]
    out = objectives.coefficients(
        Objective("renyi", "loo", alpha), log_pf=s, log_pb=b, log_reward=r
    )
    w = torch.softmax((1 - alpha) * (r + b - s), 0)
    # Eq. 7: each trajectory's weight against the mean of the others' weights.
    eq7 = (w - (w.sum() - w) / (k - 1)) / (alpha - 1)
    torch.testing.assert_close(out.c, (k - 1) / k * eq7, rtol=1e-12, atol=1e-14)


def _phi_gradient_moments(toy, jacobians, k, alpha, d_of_batch):
    """(relative bias, relative variance) of the p_B gradient sum_k d_k grad b_k over every
    batch of size k: |E g - grad| / |grad| and E|g - E g|^2 / |grad|^2."""
    log_pf = toy.log_pf().detach()
    batches = all_batches(len(toy.trajectories), k)
    prob = torch.exp(log_pf[batches].sum(1))
    d = torch.vmap(d_of_batch)(
        log_pf[batches], toy.log_pb().detach()[batches], toy.log_reward[batches]
    )
    per_batch = torch.einsum("nk,nkp->np", d, jacobians[1][batches])
    mean = prob @ per_batch
    variance = prob @ (per_batch - mean).pow(2).sum(1)
    _, want = exact_gradient(toy, renyi(toy, alpha))
    return float((mean - want).norm() / want.norm()), float(variance / want.norm() ** 2)


def _renyi_d(alpha, beta):
    """Renyi's d = -(w_alpha - beta w_0) / alpha, naively (no stable form)."""

    def d(s, b, r):
        l = r + b - s
        return -(torch.softmax((1 - alpha) * l, 0) - beta * torch.softmax(l, 0)) / alpha

    return d


def _ours(alpha):
    def d(s, b, r):
        return objectives.coefficients(
            Objective("renyi", "loo", alpha), log_pf=s, log_pb=b, log_reward=r
        ).d

    return d


# docs/estimators.md, "Renyi d": relative bias / relative variance of the p_B gradient at
# K = 2 for beta = 0 (plain -w/alpha), beta = 1 (shifted) and MATH.md's blend, then the
# blend at K = 4, as printed.
D_RULE_TABLE = {
    1e-3: ((909, 7.8e6), (0.69, 0.57), (0.69, 0.57), (0.50, 0.96)),
    0.1: ((8.1, 696), (0.67, 0.59), (0.67, 0.59), (0.47, 0.97)),
    0.3: ((2.0, 60), (0.64, 0.62), (0.64, 0.62), (0.41, 0.96)),
    0.5: ((0.81, 16), (0.61, 0.65), (0.61, 0.65), (0.35, 0.92)),
    0.75: ((0.25, 5.0), (0.57, 0.70), (0.16, 1.3), (0.097, 0.80)),
    1.25: ((0.14, 1.2), (0.54, 0.75), (0.14, 1.2), (0.074, 0.61)),
    1.5: ((0.25, 0.86), (0.56, 0.70), (0.25, 0.86), (0.13, 0.43)),
    2.0: ((0.37, 0.57), (0.60, 0.57), (0.37, 0.57), (0.20, 0.31)),
    -0.3: ((4.0, 110), (0.74, 0.49), (0.74, 0.49), (0.60, 0.89)),
    -0.5: ((2.8, 43), (0.78, 0.42), (0.78, 0.42), (0.67, 0.79)),
    -1.0: ((1.7, 10), (0.86, 0.24), (1.7, 10), (1.2, 6.4)),
    -2.0: ((1.2, 1.4), (0.95, 0.066), (1.2, 1.4), (1.05, 1.0)),
}


@pytest.mark.parametrize("alpha", sorted(D_RULE_TABLE))
def test_renyi_d_table_of_estimators_md(toy, jacobians, alpha):
    """gfn_fast's d is the blend, and the table docs/estimators.md prints is what exact
    enumeration gives (to its 2 significant digits)."""
    beta = min(1.0, max(0.0, 2 - 2 * abs(alpha)))
    ours = _phi_gradient_moments(toy, jacobians, 2, alpha, _ours(alpha))
    blend = _phi_gradient_moments(toy, jacobians, 2, alpha, _renyi_d(alpha, beta))
    assert ours == pytest.approx(blend, rel=1e-9)
    measured = [
        _phi_gradient_moments(toy, jacobians, 2, alpha, _renyi_d(alpha, 0.0)),
        _phi_gradient_moments(toy, jacobians, 2, alpha, _renyi_d(alpha, 1.0)),
        ours,
    ]
    for got, printed in zip(measured, D_RULE_TABLE[alpha][:3], strict=True):
        assert got == pytest.approx(printed, rel=0.05), (got, printed)


@pytest.mark.slow
@pytest.mark.parametrize("alpha", sorted(D_RULE_TABLE))
def test_renyi_d_table_of_estimators_md_at_k4(toy, jacobians, alpha):
    """The table's K = 4 column (gfn_fast's blend; 19^4 batches per alpha)."""
    got = _phi_gradient_moments(toy, jacobians, 4, alpha, _ours(alpha))
    assert got == pytest.approx(D_RULE_TABLE[alpha][3], rel=0.05)


@pytest.mark.parametrize("alpha", [1e-3, 0.1])
def test_plain_renyi_d_is_badly_biased_at_small_alpha(toy, jacobians, alpha):
    """Why MATH.md shifts d: -w/alpha has a bias that grows like 1/(K alpha), the shifted
    -(w_alpha - w_0)/alpha (gfn_fast's d for |alpha| <= 1/2) does not."""
    bias_plain, _ = _phi_gradient_moments(toy, jacobians, 2, alpha, _renyi_d(alpha, 0.0))
    bias_ours, _ = _phi_gradient_moments(toy, jacobians, 2, alpha, _ours(alpha))
    assert bias_plain > 5.0 and bias_ours < 1.0, (bias_plain, bias_ours)
