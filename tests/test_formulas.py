"""`divergence_loss` gradients against MATH.md's (c, d) formulas, written out naively here.

These formulas are an independent transcription of MATH.md (no stable branches, no shared
code with gfn_fast.objectives); for moderate inputs both must agree to 1e-9 relative.
"""

from __future__ import annotations

import itertools
import math

import pytest
import torch

import gfn_fast as gf

F64 = torch.float64


def loo(f):
    k = f.numel()
    return k / (k - 1) * (f - f.mean())


def math_md_coefficients(objective, cv, s, b, r, log_q, log_z, alpha, paper):
    """(c, d) exactly as MATH.md prints them."""
    k = s.numel()
    l = r + b - s
    log_rho = torch.zeros_like(s) if log_q is None else s - log_q
    rho = log_rho.exp()
    pi = rho / rho.sum()
    if objective == "tb":
        delta = log_z - l
        c = 2 * loo(delta) / k if cv == "loo" else 2 * delta / k
        return c, -2 * delta / k
    if objective == "vargrad":
        return -2 * (l - l.mean()) / k, 2 * (l - l.mean()) / k
    if objective == "reverse_kl":
        c = -rho * loo(l) / k if cv == "loo" else rho * (1 - l) / k
        return c, -rho / k
    if objective == "forward_kl":
        w = torch.softmax(l + log_rho, 0)
        c = -(w - pi) if cv == "loo" else -w
        return c, w * (l - (w * l).sum())
    scale = alpha if paper else 1.0
    if objective == "renyi":
        w = torch.softmax((1 - alpha) * l + log_rho, 0)
        c = (w - pi) / (alpha - 1) if cv == "loo" else w / (alpha - 1)
        beta = min(1.0, max(0.0, 2 - 2 * abs(alpha)))
        w0 = torch.softmax(l + log_rho, 0)
        return scale * c, scale * (-(w - beta * w0) / alpha)
    assert objective == "tsallis"
    ref = torch.logsumexp(l + log_rho, 0) - math.log(k) if log_z is None else log_z
    g = torch.exp((1 - alpha) * (l - ref))
    c = rho * loo(g) / (k * (alpha - 1)) if cv == "loo" else rho * g / (k * (alpha - 1))
    return scale * c, scale * (-rho * g / (k * alpha))


def _inputs(k, seed, off_policy):
    gen = torch.Generator().manual_seed(seed)
    s = -2.0 + torch.randn(k, generator=gen, dtype=F64)
    b = -1.5 + torch.randn(k, generator=gen, dtype=F64)
    r = torch.randn(k, generator=gen, dtype=F64)
    log_q = s + 0.3 * torch.randn(k, generator=gen, dtype=F64) if off_policy else None
    return s, b, r, log_q


CASES = [
    (objective, cv, alpha, off_policy)
    for objective in gf.OBJECTIVES
    for cv in gf.CONTROL_VARIATES
    for alpha in ((-1.0, 0.3, 0.5, 0.75, 2.0) if objective in ("renyi", "tsallis") else (0.5,))
    for off_policy in (False, True)
    if not (objective == "tb" and cv == "loo" and off_policy)
]


@pytest.mark.parametrize("k", [2, 7, 64])
@pytest.mark.parametrize("objective, cv, alpha, off_policy", CASES)
def test_gradients_equal_math_md(objective, cv, alpha, off_policy, k):
    s, b, r, log_q = _inputs(k, seed=k, off_policy=off_policy)
    log_z = torch.tensor(0.7, dtype=F64) if objective in ("tb",) else None
    normalizations = (
        ["amari", "paper"] if objective in ("renyi", "tsallis") and alpha > 0 else ["amari"]
    )
    for normalization in normalizations:
        log_pf = s.clone().requires_grad_()
        log_pb = b.clone().requires_grad_()
        loss, _ = gf.divergence_loss(
            objective,
            log_pf=log_pf,
            log_pb=log_pb,
            log_reward=r,
            log_behavior=log_q,
            log_z=log_z,
            alpha=alpha,
            control_variate=cv,
            normalization=normalization,
        )
        got_c, got_d = torch.autograd.grad(loss, (log_pf, log_pb))
        want_c, want_d = math_md_coefficients(
            objective, cv, s, b, r, log_q, log_z, alpha, normalization == "paper"
        )
        torch.testing.assert_close(got_c, want_c, rtol=1e-9, atol=1e-12)
        torch.testing.assert_close(got_d, want_d, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("alpha", [-1.0, 0.5, 2.0])
def test_tsallis_given_log_z(alpha):
    s, b, r, log_q = _inputs(7, seed=3, off_policy=True)
    log_z = torch.tensor(0.4, dtype=F64)
    log_pf = s.clone().requires_grad_()
    loss, _ = gf.divergence_loss(
        "tsallis",
        log_pf=log_pf,
        log_pb=b,
        log_reward=r,
        log_behavior=log_q,
        log_z=log_z,
        alpha=alpha,
    )
    (got_c,) = torch.autograd.grad(loss, log_pf)
    want_c, _ = math_md_coefficients("tsallis", "loo", s, b, r, log_q, log_z, alpha, False)
    torch.testing.assert_close(got_c, want_c, rtol=1e-9, atol=1e-12)


def test_log_z_gradients():
    """e: 2 mean(delta) for tb; 1 - mean rho exp(l - log Z) for tsallis with learned log Z."""
    s, b, r, log_q = _inputs(7, seed=5, off_policy=True)
    l = r + b - s
    for objective, want in (
        ("tb", lambda z: 2 * (z - l).mean()),
        ("tsallis", lambda z: 1 - ((s - log_q).exp() * (l - z).exp()).mean()),
    ):
        log_z = torch.tensor(0.2, dtype=F64, requires_grad=True)
        loss, _ = gf.divergence_loss(
            objective,
            log_pf=s,
            log_pb=b,
            log_reward=r,
            log_z=log_z,
            control_variate="none",
            log_behavior=None if objective == "tb" else log_q,
        )
        (grad,) = torch.autograd.grad(loss, log_z)
        torch.testing.assert_close(grad, want(log_z.detach()), rtol=1e-12, atol=1e-14)


def test_values_match_definitions():
    """value: the divergence estimates MATH.md defines, on one on-policy batch."""
    s, b, r, _ = _inputs(9, seed=11, off_policy=False)
    l = r + b - s
    k = l.numel()
    log_z_hat = torch.logsumexp(l, 0) - math.log(k)
    w = torch.softmax(l, 0)
    expected = {
        "vargrad": ((l - l.mean()) ** 2).mean(),
        "reverse_kl": log_z_hat - l.mean(),
        "forward_kl": (w * l).sum() - log_z_hat,
    }
    for alpha in (-1.0, 0.3, 0.5, 2.0):
        log_m = (torch.logsumexp((1 - alpha) * l, 0) - math.log(k)) / (1 - alpha)
        expected[("renyi", alpha)] = (log_z_hat - log_m) / alpha
        g = torch.exp((1 - alpha) * (l - log_z_hat))
        expected[("tsallis", alpha)] = (g.mean() - 1) / (alpha * (alpha - 1))
    for key, want in expected.items():
        objective, alpha = key if isinstance(key, tuple) else (key, 0.5)
        _, stats = gf.divergence_loss(objective, log_pf=s, log_pb=b, log_reward=r, alpha=alpha)
        torch.testing.assert_close(stats["value"], want, rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(stats["log_z_hat"], log_z_hat, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(stats["ess"], 1 / (w**2).sum(), rtol=1e-12, atol=1e-12)


def test_divergence_values_are_nonnegative_for_every_alpha():
    """The amari normalisation fix: the estimated divergence is >= 0 for every real alpha."""
    for alpha, seed in itertools.product((-3.0, -1.0, -0.2, 0.4, 1.7, 3.0), range(5)):
        s, b, r, _ = _inputs(32, seed=seed, off_policy=False)
        for objective in ("renyi", "tsallis"):
            _, stats = gf.divergence_loss(objective, log_pf=s, log_pb=b, log_reward=r, alpha=alpha)
            assert float(stats["value"]) >= 0, (objective, alpha, seed)
