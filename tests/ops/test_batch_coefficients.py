"""batch_coefficients on every device against gfn_fast.objectives (the float64 batch step).

Every objective, control variate and alpha (around the stable branches at 0 and 1 and at
them), on- and off-policy, paper normalisation, -inf rewards where allowed, log-weights
spanning 1e4, one trajectory; batch sizes over one and many blocks (CUDA) or chunks (CPU),
bitwise reproducible; opcheck and the errors of bad arguments.
"""

from __future__ import annotations

import math

import pytest
import torch

from gfn_fast import objectives
from gfn_fast.objective import CONTROL_VARIATES, OBJECTIVES, Objective
from tests.helpers import one_thread
from tests.ops.cases import CASES, batch_inputs
from tests.ops.conftest import TOLERANCES

ALPHAS = (-2.0, -1e-7, -1e-9, 0.0, 1e-9, 1e-7, 0.3, 0.5, 1 - 1e-7, 1 - 1e-10, 1.0, 1 + 1e-7, 2.0)


def batch(device, kind: str, k: int, off_policy: bool, seed: int = 0):
    """(s, b, r, log q) in float64: plain, wide log-weights, some or all zero rewards."""
    g = device.generator(seed)
    on = device.torch_device
    f64 = torch.float64
    s = -5 + 2 * torch.randn(k, generator=g, dtype=f64, device=on)
    b = -4 + torch.randn(k, generator=g, dtype=f64, device=on)
    r = torch.randn(k, generator=g, dtype=f64, device=on)
    if kind == "wide":  # log-weights spanning 1e4
        r = torch.linspace(-1e4, 0.0, k, dtype=f64, device=on)[
            torch.randperm(k, generator=g, device=on)
        ]
    if kind == "neg_inf":
        r[: max(1, k // 4)] = -math.inf
    if kind == "all_neg_inf":
        r[:] = -math.inf
    q = s + 0.7 * torch.randn(k, generator=g, dtype=f64, device=on) if off_policy else None
    return s, b, r, q


def settings(objective: str):
    """(alpha, paper, log_z) combinations that Objective accepts."""
    family = objective in ("renyi", "tsallis")
    for alpha in ALPHAS if family else (0.5,):
        for paper in (False, True) if family and alpha > 0 else (False,):
            if objective == "tb":
                log_zs = (1.3,)
            elif objective in ("reverse_kl", "tsallis"):
                log_zs = (None, -2.1)
            else:
                log_zs = (None,)
            for log_z in log_zs:
                yield alpha, paper, log_z


def reference(args):
    """objectives.coefficients for batch_coefficients' positional arguments."""
    s, b, r, q, lz, objective, cv, alpha, paper = args
    spec = Objective(objective, cv, alpha, "paper" if paper else "amari")
    return objectives.coefficients(spec, log_pf=s, log_pb=b, log_reward=r, log_behavior=q, log_z=lz)


def assert_mirrors(actual, expected, label, rtol):
    for name, a, e in zip(objectives.Coefficients._fields, actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape and a.device == e.device, (label, name)
        if name == "skipped":
            assert bool(a) == bool(e), (label, name)
            continue
        finite = torch.nan_to_num(e.double(), posinf=0, neginf=0)
        scale = float(finite.abs().max()) if e.numel() else 0.0
        torch.testing.assert_close(
            a.double(),
            e.double(),
            rtol=rtol,
            atol=rtol * (1 + scale),
            equal_nan=True,
            msg=lambda m, n=name: f"{label} {n}: {m}",
        )


def coef_rtol(dtype) -> float:
    return TOLERANCES["coef"][dtype][0]


def log_z_tensor(device, log_z, dtype=torch.float64):
    return None if log_z is None else torch.tensor(log_z, dtype=dtype, device=device.torch_device)


@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("cv", CONTROL_VARIATES)
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
def test_mirrors_objectives(device, objective, cv, off_policy):
    """float64 to 1e-12 (both sides do the same double math in another order); float32
    inputs give the same double math with outputs rounded to float32."""
    if objective == "tb" and cv == "loo" and off_policy:
        pytest.skip("tb loo is on-policy only (ValueError in Objective)")
    op = device.op("batch_coefficients")
    for kind in ("normal", "wide", "neg_inf", "all_neg_inf", "pair"):
        k = 2 if kind == "pair" else 24
        s, b, r, q = batch(device, kind, k, off_policy)
        for alpha, paper, log_z in settings(objective):
            if (
                kind in ("neg_inf", "all_neg_inf")
                and Objective(objective, cv, alpha).needs_finite_rewards
            ):
                continue
            args = (s, b, r, q, log_z_tensor(device, log_z), objective, cv, alpha, paper)
            label = f"{device}/{objective}/{cv}/{kind}/alpha={alpha}/paper={paper}/log_z={log_z}"
            assert_mirrors(op(*args), reference(args), label, coef_rtol(torch.float64))
            args32 = tuple(None if x is None else x.float() for x in args[:5]) + args[5:]
            assert_mirrors(op(*args32), reference(args32), label, coef_rtol(torch.float32))


@pytest.mark.parametrize(("objective", "cv", "alpha"), CASES)
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_cases_over_many_blocks_and_chunks(device, objective, cv, alpha, off_policy, dtype):
    """K = 2500: three CUDA blocks (1024 trajectories each, the last ragged) combined through
    grid.sync(), or three CPU chunks; the reference's result, and the same bits run after
    run (and, on the CPU, for any thread count)."""
    if objective == "tb" and off_policy and cv == "loo":
        pytest.skip("tb loo is on-policy only")
    log_pf, log_pb, log_reward, log_behavior = batch_inputs(device, 2500, dtype, off_policy)
    log_z = log_z_tensor(device, 1.3, dtype) if objective in ("tb", "tsallis") else None
    args = (log_pf, log_pb, log_reward, log_behavior, log_z, objective, cv, alpha, False)
    first = device.op("batch_coefficients")(*args)
    rtol = coef_rtol(dtype)
    assert_mirrors(first, reference(args), f"{device}/{objective}/{cv}/{alpha}", rtol)
    again = device.op("batch_coefficients")(*args)
    runs = [again]
    if device.backend == "cpu":
        with one_thread():
            runs.append(device.op("batch_coefficients")(*args))
    for other in runs:
        for a, b in zip(first, other, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("k", [2, 33, 1024, 1025, 4097, 20_000])
def test_sizes_and_wide_log_weights(device, k):
    log_pf, log_pb, log_reward, _ = batch_inputs(device, k, torch.float32, False, k, spread=3e3)
    args = (log_pf, log_pb, log_reward, None, None, "renyi", "loo", 0.5, True)
    out = device.op("batch_coefficients")(*args)
    assert_mirrors(out, reference(args), f"K={k}", coef_rtol(torch.float32))


@pytest.mark.parametrize("objective", ["forward_kl", "renyi", "tsallis", "reverse_kl"])
def test_single_trajectory(device, objective):
    s, _, r, _ = batch(device, "normal", 1, False)
    args = (s, None, r, None, None, objective, "none", 0.5, False)
    out = device.op("batch_coefficients")(*args)
    assert_mirrors(out, reference(args), objective, coef_rtol(torch.float64))


def test_skipped_batch(device):
    on = device.torch_device
    log_reward = torch.full((8,), float("-inf"), device=on)
    args = (
        torch.zeros(8, device=on),
        None,
        log_reward,
        None,
        None,
        "forward_kl",
        "loo",
        0.5,
        False,
    )
    out = objectives.Coefficients(*device.op("batch_coefficients")(*args))
    assert bool(out.skipped) and float(out.c.abs().sum()) == 0 and float(out.ess) == 0


def test_bad_arguments_raise_naming_the_argument(device):
    s, b, r, _ = batch(device, "normal", 4, False)
    op = device.op("batch_coefficients")
    with pytest.raises(ValueError, match="objective: expected one of"):
        op(s, b, r, None, None, "kl", "loo", 0.5, False)
    with pytest.raises(ValueError, match="log_z: tb needs"):
        op(s, b, r, None, None, "tb", "none", 0.5, False)
    with pytest.raises(ValueError, match="leave-one-out needs at least 2"):
        op(s[:1], b[:1], r[:1], None, None, "renyi", "loo", 0.5, False)
    with pytest.raises(ValueError, match="paper"):
        op(s, b, r, None, None, "renyi", "loo", -0.5, True)
    with pytest.raises(ValueError, match="log_reward"):
        op(s, b, r[:3], None, None, "renyi", "loo", 0.5, False)


def test_opcheck(device):
    s, b, r, q = batch(device, "normal", 8, True)
    lz = log_z_tensor(device, 0.3)
    samples = [
        (s.float(), b.float(), r.float(), q.float(), None, "renyi", "loo", 0.5, False),
        (s, None, r, None, lz, "tb", "loo", 0.5, False),
        (s[::2], b[::2], r[::2], None, lz, "tsallis", "none", 0.7, False),  # strided
    ]
    for args in samples:
        torch.library.opcheck(device.library.batch_coefficients, args)
