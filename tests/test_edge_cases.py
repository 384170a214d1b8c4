"""MATH.md's edge-case contract: small batches, zero rewards, bad values, extreme weights,
alpha at and near 0 and 1, continuity across the stable branches, low-precision inputs."""

from __future__ import annotations

import math

import pytest
import torch

import gfn_fast as gf
from gfn_fast import objectives
from gfn_fast.objective import Objective
from tests.test_formulas import math_md_coefficients

F64 = torch.float64
ALPHAS = [-2.0, -1e-7, 0.0, 1e-7, 0.5, 1 - 1e-7, 1.0, 1 + 1e-7, 2.0]


def batch(k=8, seed=0, dtype=F64):
    gen = torch.Generator().manual_seed(seed)
    s = (-3.0 + torch.randn(k, generator=gen, dtype=F64)).to(dtype)
    b = (-2.0 + torch.randn(k, generator=gen, dtype=F64)).to(dtype)
    r = torch.randn(k, generator=gen, dtype=F64).to(dtype)
    return s, b, r


def grads(objective, s, b, r, **kwargs):
    log_pf = s.clone().requires_grad_()
    log_pb = b.clone().requires_grad_()
    loss, stats = gf.divergence_loss(
        objective, log_pf=log_pf, log_pb=log_pb, log_reward=r, **kwargs
    )
    c, d = torch.autograd.grad(loss, (log_pf, log_pb), allow_unused=True)
    return c, d, loss, stats


def log_z_for(objective):
    return torch.tensor(0.5, dtype=F64) if objective == "tb" else None


# --- small batches ---------------------------------------------------------------------


@pytest.mark.parametrize("objective", [o for o in gf.OBJECTIVES if o != "vargrad"])
def test_single_trajectory_with_loo_raises(objective):
    s, b, r = batch(1)
    with pytest.raises(ValueError, match="leave-one-out needs at least 2 trajectories"):
        gf.divergence_loss(objective, log_pf=s, log_pb=b, log_reward=r, log_z=log_z_for(objective))


@pytest.mark.parametrize("objective", ["forward_kl", "renyi", "tsallis"])
def test_single_trajectory_self_normalised_is_skipped(objective):
    s, b, r = batch(1)
    c, d, _, stats = grads(objective, s, b, r, control_variate="none")
    assert bool(stats["skipped"])
    assert torch.equal(c, torch.zeros_like(c)) and torch.equal(d, torch.zeros_like(d))


# --- zero rewards ------------------------------------------------------------------------


INFINITE_WITH_ZERO_REWARD = [
    ("tb", 0.5),
    ("vargrad", 0.5),
    ("reverse_kl", 0.5),
    ("renyi", 1.0),
    ("renyi", 2.0),
    ("tsallis", 1.0),
    ("tsallis", 1 + 1e-7),
]


@pytest.mark.parametrize("objective, alpha", INFINITE_WITH_ZERO_REWARD)
def test_zero_reward_raises_where_divergence_is_infinite(objective, alpha):
    s, b, r = batch(8)
    r[[2, 5]] = -math.inf
    with pytest.raises(ValueError, match=r"log_reward: 2 of 8 trajectories.*clamp"):
        gf.divergence_loss(
            objective,
            log_pf=s,
            log_pb=b,
            log_reward=r,
            alpha=alpha,
            log_z=log_z_for(objective),
            control_variate="none",
        )


@pytest.mark.parametrize("cv", ["none", "loo"])
@pytest.mark.parametrize(
    "objective, alpha",
    [
        ("forward_kl", 0.5),
        ("renyi", -2.0),
        ("renyi", 0.0),
        ("renyi", 0.5),
        ("renyi", 1 - 1e-7),
        ("tsallis", -2.0),
        ("tsallis", 0.5),
        ("tsallis", 1e-7),
    ],
)
def test_zero_reward_is_finite_and_weightless(objective, alpha, cv):
    """A -inf reward behaves as the limit of ever smaller finite ones (weight exactly 0)."""
    s, b, r = batch(8)
    r_zero, r_tiny = r.clone(), r.clone()
    r_zero[3] = -math.inf
    r_tiny[3] = -1e15  # small enough that (1 - alpha) * r underflows for every alpha here
    got = grads(objective, s, b, r_zero, alpha=alpha, control_variate=cv)
    want = grads(objective, s, b, r_tiny, alpha=alpha, control_variate=cv)
    for g, w in zip(got[:2], want[:2], strict=True):
        assert torch.isfinite(g).all()
        torch.testing.assert_close(g, w, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(got[3]["value"], want[3]["value"], rtol=1e-9, atol=1e-12)


def test_every_weight_zero_skips_the_batch():
    s, b, r = batch(6)
    r[:] = -math.inf
    for objective, alpha in (("forward_kl", 0.5), ("renyi", 0.5), ("tsallis", 0.3)):
        c, d, loss, stats = grads(objective, s, b, r, alpha=alpha)
        assert bool(stats["skipped"])
        assert torch.equal(c, torch.zeros_like(c)) and torch.equal(d, torch.zeros_like(d))
        assert torch.isfinite(loss) and float(stats["ess"]) == 0.0


# --- bad values --------------------------------------------------------------------------


@pytest.mark.parametrize("argument", ["log_pf", "log_pb", "log_reward", "log_behavior", "log_z"])
@pytest.mark.parametrize("bad", [math.nan, math.inf])
def test_nan_or_inf_input_raises_naming_the_argument(argument, bad):
    s, b, r = batch(8)
    inputs = {
        "log_pf": s,
        "log_pb": b,
        "log_reward": r,
        "log_behavior": s + 0.1,
        "log_z": torch.tensor(0.2, dtype=F64),
    }
    inputs[argument] = inputs[argument].clone()
    inputs[argument].view(-1)[0] = bad
    with pytest.raises(ValueError, match=argument):
        gf.divergence_loss("tsallis", **inputs)


def test_validate_false_skips_value_checks():
    s, b, r = batch(8)
    r[0] = math.nan
    loss, _ = gf.divergence_loss("reverse_kl", log_pf=s, log_pb=b, log_reward=r, validate=False)
    assert torch.isnan(loss)


# --- extreme log-weights -----------------------------------------------------------------


def spread_batch(k=16, span=1e4):
    s, b, r = batch(k, seed=4)
    r = r + torch.linspace(-span / 2, span / 2, k, dtype=F64)
    return s, b, r


@pytest.mark.parametrize("cv", ["none", "loo"])
@pytest.mark.parametrize(
    "objective, alpha",
    [
        ("tb", 0.5),
        ("vargrad", 0.5),
        ("reverse_kl", 0.5),
        ("forward_kl", 0.5),
        ("renyi", -2.0),
        ("renyi", 0.5),
        ("renyi", 2.0),
        ("tsallis", 0.5),
    ],
)
def test_log_weights_spanning_1e4_are_finite_and_correct(objective, alpha, cv):
    s, b, r = spread_batch()
    log_z = log_z_for(objective)
    c, d, loss, stats = grads(objective, s, b, r, alpha=alpha, control_variate=cv, log_z=log_z)
    want_c, want_d = math_md_coefficients(objective, cv, s, b, r, None, log_z, alpha, False)
    assert torch.isfinite(loss) and all(torch.isfinite(v).all() for v in stats.values())
    scale = want_c.abs().max()
    torch.testing.assert_close(c, want_c, rtol=1e-9, atol=1e-12 * scale)
    torch.testing.assert_close(d, want_d, rtol=1e-9, atol=1e-12 * want_d.abs().max())


def test_overflowing_tsallis_raises_instead_of_inf():
    s, b, r = spread_batch()
    with pytest.raises(ValueError, match="overflow"):
        gf.divergence_loss("tsallis", log_pf=s, log_pb=b, log_reward=r, alpha=2.0)


# --- alpha at and near 0 and 1 -----------------------------------------------------------


@pytest.mark.parametrize("objective", ["renyi", "tsallis"])
@pytest.mark.parametrize("alpha", ALPHAS)
@pytest.mark.parametrize("cv", ["none", "loo"])
@pytest.mark.parametrize("off_policy", [False, True])
def test_every_alpha_is_finite(objective, alpha, cv, off_policy):
    s, b, r = batch(8)
    log_q = s + 0.2 if off_policy else None
    c, d, loss, stats = grads(
        objective, s, b, r, alpha=alpha, control_variate=cv, log_behavior=log_q
    )
    assert torch.isfinite(c).all() and torch.isfinite(d).all() and torch.isfinite(loss)
    assert not bool(stats["skipped"])


@pytest.mark.parametrize("objective", ["renyi", "tsallis"])
def test_alpha_exactly_0_and_1_dispatch_to_kl(objective):
    s, b, r = batch(8)
    for alpha, kl in ((0.0, "forward_kl"), (1.0, "reverse_kl")):
        for cv in ("none", "loo"):
            got = grads(objective, s, b, r, alpha=alpha, control_variate=cv)
            want = grads(kl, s, b, r, control_variate=cv)
            torch.testing.assert_close(got[0], want[0], rtol=1e-12, atol=1e-14)
            torch.testing.assert_close(got[1], want[1], rtol=1e-12, atol=1e-14)


def coefficient(objective, alpha, s, b, r, cv="loo", log_behavior=None):
    out = objectives.coefficients(
        Objective(objective, cv, alpha),
        log_pf=s,
        log_pb=b,
        log_reward=r,
        log_behavior=log_behavior,
    )
    return out.c, out.d, out.value


def assert_close_scaled(got, want, rtol):
    torch.testing.assert_close(got, want, rtol=rtol, atol=rtol * float(want.abs().max()))


@pytest.mark.parametrize("off_policy", [False, True])
def test_renyi_continuous_across_alpha_1(off_policy):
    s, b, r = batch(8)
    log_q = s + torch.linspace(-0.3, 0.3, 8, dtype=F64) if off_policy else None
    l = r + b - s
    pi = torch.softmax(torch.zeros_like(s) if log_q is None else s - log_q, 0)
    # The limit is the self-normalised reverse-KL coefficient -pi_k (l_k - sum_j pi_j l_j),
    # and d tends to -pi.
    limit_c = -pi * (l - (pi * l).sum())
    for alpha in (1 - 1e-7, 1 + 1e-7):
        c, d, _ = coefficient("renyi", alpha, s, b, r, log_behavior=log_q)
        assert_close_scaled(c, limit_c, 1e-6)
        assert_close_scaled(d, -pi, 1e-6)


def test_renyi_loo_at_alpha_1_is_reverse_kl_loo_times_k_minus_1_over_k():
    """Why alpha exactly 1 (dispatch to reverse_kl loo) differs from the limit by (K-1)/K."""
    s, b, r = batch(8)
    limit = coefficient("renyi", 1 - 1e-9, s, b, r)[0]
    reverse = coefficient("reverse_kl", 0.5, s, b, r)[0]
    assert_close_scaled(limit, 7 / 8 * reverse, 1e-7)


def test_renyi_continuous_across_alpha_0():
    s, b, r = batch(8)
    at_zero = coefficient("forward_kl", 0.5, s, b, r)
    for alpha in (-1e-7, 1e-7, -5e-7, 5e-7):
        near = coefficient("renyi", alpha, s, b, r)
        for got, want in zip(near, at_zero, strict=True):
            assert_close_scaled(got, want, 1e-5)


def test_tsallis_continuous_across_alpha_1():
    s, b, r = batch(8)
    at_one = coefficient("reverse_kl", 0.5, s, b, r)
    for alpha in (1 - 1e-7, 1 + 1e-7):
        near = coefficient("tsallis", alpha, s, b, r)
        assert_close_scaled(near[0], at_one[0], 1e-6)
        assert_close_scaled(near[1], at_one[1], 1e-6)


def test_tsallis_zero_window_edge_shifts_d_by_g0_over_alpha():
    """At |alpha| = 1e-6, Tsallis switches d from -rho g/(K alpha) to -rho (g - g_0)/(K alpha).

    c and the value are continuous there; d jumps by rho g_0 / (K alpha) (= w_0 / alpha
    on-policy with the batch log Z), a shift whose expectation vanishes only as K grows.
    """
    s, b, r = batch(8)
    edge = objectives.ALPHA_ZERO_WINDOW
    w0 = torch.softmax(r + b - s, 0)
    for sign in (1, -1):
        alpha_in, alpha_out = sign * edge * (1 - 1e-9), sign * edge * (1 + 1e-9)
        c_in, d_in, value_in = coefficient("tsallis", alpha_in, s, b, r)
        c_out, d_out, value_out = coefficient("tsallis", alpha_out, s, b, r)
        assert_close_scaled(c_in, c_out, 1e-6)
        assert_close_scaled(value_in, value_out, 1e-6)
        assert_close_scaled(d_in - d_out, w0 / alpha_in, 1e-6)


@pytest.mark.parametrize("edge", [-1.0, -0.5, -1e-6, 1e-6, 0.5, 1.0])
@pytest.mark.parametrize("off_policy", [False, True])
def test_renyi_d_is_continuous_where_the_blend_bends(edge, off_policy):
    """d = -(w_alpha - beta w_0)/alpha with beta = clamp(2 - 2|alpha|, 0, 1): no jump at the
    kinks |alpha| = 1/2 and 1, nor at the old 1e-6 window."""
    s, b, r = batch(8)
    log_q = s + torch.linspace(-0.3, 0.3, 8, dtype=F64) if off_policy else None
    below = coefficient("renyi", edge * (1 - 1e-9), s, b, r, log_behavior=log_q)
    above = coefficient("renyi", edge * (1 + 1e-9), s, b, r, log_behavior=log_q)
    # c and d; off-policy, MATH.md's value estimate itself diverges as alpha -> 1 (its
    # log Mhat carries log(mean rho) / (1 - alpha)).
    for got, want in zip(below[:2], above[:2], strict=True):
        assert_close_scaled(got, want, 1e-7)


def test_renyi_continuous_across_the_stable_tilt_edge():
    """c switches from the phi form to the direct form where max |(1-alpha)(l - lbar)| = 1."""
    s, b, r = batch(8)
    l = r + b - s
    spread = float((l - l.mean()).abs().max())
    edge = 1 - objectives.STABLE_TILT_LIMIT / spread
    inside = coefficient("renyi", edge + 1e-10, s, b, r)
    outside = coefficient("renyi", edge - 1e-10, s, b, r)
    for got, want in zip(inside, outside, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-7, atol=1e-12)


def test_renyi_near_1_keeps_float32_precision():
    """The naive (w - pi)/(alpha - 1) loses ~3% in float32 at 1 - 1e-6; ours matches float64."""
    s, b, r = batch(64, seed=2)
    alpha = 1 - 1e-6
    want = grads("renyi", s, b, r, alpha=alpha)[0]
    got = grads("renyi", s.float(), b.float(), r.float(), alpha=alpha)[0]
    assert got.dtype == torch.float32
    torch.testing.assert_close(got.double(), want, rtol=1e-4, atol=1e-6)


# --- low precision -----------------------------------------------------------------------


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_low_precision_inputs(dtype):
    s, b, r = batch(16, dtype=dtype)
    c, d, loss, stats = grads("renyi", s, b, r)
    assert c.dtype == dtype and d.dtype == dtype
    assert loss.dtype == torch.float32 and stats["ess"].dtype == torch.float32
    want = grads("renyi", s.double(), b.double(), r.double())
    torch.testing.assert_close(c.double(), want[0], rtol=1e-2, atol=1e-3)
    torch.testing.assert_close(loss.double(), want[2], rtol=1e-5, atol=1e-6)
