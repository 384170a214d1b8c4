"""Native CPU batch_coefficients and the fused divergence loss against the reference.

batch_coefficients must reproduce gfn_fast.objectives.coefficients (the float64 batch step
of MATH.md) for every objective, control variate, alpha (including the windows around 0 and
1 and the exact dispatch points), on- and off-policy, paper normalisation, -inf rewards where
allowed and log-weights spanning 1e4.

The fused loss's `value` output is differentiable by design with the *surrogate's* gradient
(grad * c on log p_F, grad * d on log p_B, grad * e on log Z), not the derivative of the
value itself, so a finite-difference gradcheck does not apply. Its gradients are compared in
float64 with those of the reference path (segment sums + objectives + surrogate).
"""

from __future__ import annotations

import math

import pytest
import torch

import gfn_fast as gf
from gfn_fast import objectives
from tests.native_cpu_helpers import (
    make_layout,
    one_thread,
    poisoned,
    reference_backend,
    requires_native_cpu,
)

pytestmark = requires_native_cpu

ALPHAS = (-2.0, -1e-7, 0.0, 1e-7, 0.3, 0.5, 1 - 1e-7, 1.0, 1 + 1e-7, 2.0)


def _native(name):
    return getattr(torch.ops.gfn_fast, name).default


def _batch(kind: str, k: int, off_policy: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    f64 = torch.float64
    s = -5 + 2 * torch.randn(k, generator=gen, dtype=f64)
    b = -4 + torch.randn(k, generator=gen, dtype=f64)
    r = torch.randn(k, generator=gen, dtype=f64)
    if kind == "wide":  # log-weights spanning 1e4
        r = torch.linspace(-1e4, 0.0, k, dtype=f64)[torch.randperm(k, generator=gen)]
    if kind == "neg_inf":
        r[: max(1, k // 4)] = -math.inf
    if kind == "all_neg_inf":
        r[:] = -math.inf
    q = s + 0.7 * torch.randn(k, generator=gen, dtype=f64) if off_policy else None
    return s, b, r, q


def _cases(objective: str, cv: str, off_policy: bool):
    """(alpha, paper, log_z) combinations that check_arguments accepts."""
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


def _reference(args):
    """objectives.coefficients for batch_coefficients' positional arguments."""
    s, b, r, q, lz, objective, cv, alpha, paper = args
    return objectives.coefficients(
        objective,
        cv,
        log_pf=s,
        log_pb=b,
        log_reward=r,
        log_behavior=q,
        log_z=lz,
        alpha=alpha,
        paper_normalization=paper,
    )


def _assert_mirrors(actual, expected, label, rtol=1e-9):
    for name, a, e in zip(objectives.Coefficients._fields, actual, expected, strict=True):
        assert a.dtype == e.dtype and a.shape == e.shape, (label, name)
        if name == "skipped":
            assert bool(a) == bool(e), (label, name)
            continue
        scale = (
            float(torch.nan_to_num(e.double(), posinf=0, neginf=0).abs().max()) if e.numel() else 0
        )
        torch.testing.assert_close(
            a.double(),
            e.double(),
            rtol=rtol,
            atol=rtol * (1 + scale),
            equal_nan=True,
            msg=lambda m, n=name: f"{label} {n}: {m}",
        )


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
@pytest.mark.parametrize("cv", objectives.CONTROL_VARIATES)
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
def test_batch_coefficients_mirror_objectives(objective, cv, off_policy):
    if objective == "tb" and cv == "loo" and off_policy:
        pytest.skip("tb loo is on-policy only (ValueError in check_arguments)")
    for kind in ("normal", "wide", "neg_inf", "all_neg_inf", "pair"):
        k = 2 if kind == "pair" else 24
        s, b, r, q = _batch(kind, k, off_policy)
        for alpha, paper, log_z in _cases(objective, cv, off_policy):
            if kind in ("neg_inf", "all_neg_inf") and objectives.needs_finite_rewards(
                objective, alpha
            ):
                continue
            lz = None if log_z is None else torch.tensor(log_z, dtype=torch.float64)
            args = (s, b, r, q, lz, objective, cv, alpha, paper)
            label = f"{objective}/{cv}/{kind}/alpha={alpha}/paper={paper}/log_z={log_z}"
            _assert_mirrors(_native("batch_coefficients")(*args), _reference(args), label)
            # float32 inputs: the same double math, outputs rounded to float32.
            args32 = (
                s.float(),
                b.float(),
                r.float(),
                None if q is None else q.float(),
                None if lz is None else lz.float(),
            ) + args[5:]
            actual32 = _native("batch_coefficients")(*args32)
            _assert_mirrors(actual32, _reference(args32), label, rtol=2e-6)


@pytest.mark.parametrize("objective", objectives.OBJECTIVES)
@pytest.mark.parametrize("cv", objectives.CONTROL_VARIATES)
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
def test_batch_coefficients_over_parallel_chunks(objective, cv, off_policy):
    """K = 2500 spans three of the CPU step's 1024-trajectory chunks, the last one ragged;
    the result is the reference's and bitwise independent of the thread count."""
    if objective == "tb" and cv == "loo" and off_policy:
        pytest.skip("tb loo is on-policy only (ValueError in check_arguments)")
    s, b, r, q = _batch("normal", 2500, off_policy, seed=1)
    for alpha, paper, log_z in _cases(objective, cv, off_policy):
        lz = None if log_z is None else torch.tensor(log_z, dtype=torch.float64)
        args = (s, b, r, q, lz, objective, cv, alpha, paper)
        label = f"{objective}/{cv}/alpha={alpha}/paper={paper}/log_z={log_z}"
        parallel = _native("batch_coefficients")(*args)
        _assert_mirrors(parallel, _reference(args), label)
        with one_thread():
            serial = _native("batch_coefficients")(*args)
        for a, c in zip(parallel, serial, strict=True):
            assert torch.equal(a, c), label


@pytest.mark.parametrize("objective", ["forward_kl", "renyi", "tsallis", "reverse_kl"])
def test_batch_coefficients_single_trajectory(objective):
    s, b, r, _ = _batch("normal", 1, False)
    expected = objectives.coefficients(objective, "none", log_pf=s, log_pb=None, log_reward=r)
    actual = _native("batch_coefficients")(s, None, r, None, None, objective, "none", 0.5, False)
    _assert_mirrors(actual, expected, objective)


def test_batch_coefficients_rejects_bad_arguments():
    s, b, r, _ = _batch("normal", 4, False)
    op = _native("batch_coefficients")
    with pytest.raises(ValueError, match="objective: expected one of"):
        op(s, b, r, None, None, "kl", "loo", 0.5, False)
    with pytest.raises(ValueError, match="log_z: tb needs"):
        op(s, b, r, None, None, "tb", "none", 0.5, False)
    with pytest.raises(ValueError, match="leave-one-out needs at least 2"):
        op(s[:1], b[:1], r[:1], None, None, "renyi", "loo", 0.5, False)
    with pytest.raises(ValueError, match="paper"):
        op(s, b, r, None, None, "renyi", "loo", -0.5, True)


def test_batch_coefficients_opcheck():
    s, b, r, q = _batch("normal", 8, True)
    torch.library.opcheck(
        _native("batch_coefficients"),
        (s.float(), b.float(), r.float(), q.float(), None, "renyi", "loo", 0.5, False),
    )
    torch.library.opcheck(
        _native("batch_coefficients"),
        (s, None, r, None, torch.tensor(0.3, dtype=torch.float64), "tb", "loo", 0.5, False),
    )


# ----------------------------------------------------------------------------------------
# the fused loss
# ----------------------------------------------------------------------------------------


def _steps(dtype, layout, batch=12, steps=10, seed=0, index_dtype=torch.int64):
    gen = torch.Generator().manual_seed(seed)
    shape, kwargs, inside = make_layout(batch, steps, layout, index_dtype, gen)
    pf = poisoned(-0.5 * torch.rand(shape, generator=gen, dtype=torch.float64), inside)
    pb = poisoned(-0.3 * torch.rand(shape, generator=gen, dtype=torch.float64), inside)
    r = torch.randn(batch, generator=gen, dtype=torch.float64)
    q = -0.4 * steps * torch.rand(batch, generator=gen, dtype=torch.float64)
    return pf.to(dtype), pb.to(dtype), r, q, kwargs


def _loss_and_grads(objective, pf, pb, r, q, kwargs, log_z, **options):
    pf = pf.clone().requires_grad_(True)
    pb = None if pb is None else pb.clone().requires_grad_(True)
    inputs = [pf] + ([pb] if pb is not None else [])
    if log_z is not None:
        log_z = torch.tensor(log_z, dtype=options.pop("log_z_dtype"), requires_grad=True)
        inputs.append(log_z)
    else:
        options.pop("log_z_dtype")
    loss, stats = gf.divergence_loss(
        objective,
        log_pf=pf,
        log_pb=pb,
        log_reward=r,
        log_behavior=q,
        log_z=log_z,
        **kwargs,
        **options,
    )
    grads = torch.autograd.grad(loss, inputs)
    return loss, stats, grads


FUSED_CASES = [
    ("renyi", "loo", 0.5, None, False),
    ("renyi", "none", 1 - 1e-7, None, True),
    ("renyi", "loo", -1e-7, None, False),
    ("tsallis", "loo", 0.3, 0.7, False),
    ("tsallis", "none", 2.0, None, True),
    ("forward_kl", "loo", 0.5, None, True),
    ("reverse_kl", "loo", 0.5, None, True),
    ("tb", "none", 0.5, 0.4, True),
    ("tb", "loo", 0.5, -0.2, False),
    ("vargrad", "loo", 0.5, None, False),
]


@pytest.mark.parametrize(("objective", "cv", "alpha", "log_z", "off_policy"), FUSED_CASES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_fused_loss_matches_reference_float64(objective, cv, alpha, log_z, off_policy, layout):
    pf, pb, r, q, kwargs = _steps(torch.float64, layout)
    q = q if off_policy else None
    options = dict(alpha=alpha, control_variate=cv, log_z_dtype=torch.float64)
    loss, stats, grads = _loss_and_grads(objective, pf, pb, r, q, kwargs, log_z, **options)
    with reference_backend():
        options["log_z_dtype"] = torch.float64
        loss_ref, stats_ref, grads_ref = _loss_and_grads(
            objective, pf, pb, r, q, kwargs, log_z, **options
        )
    torch.testing.assert_close(loss, loss_ref, rtol=1e-10, atol=1e-12)
    for key in stats:
        torch.testing.assert_close(stats[key], stats_ref[key], rtol=1e-10, atol=1e-12)
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-10, atol=1e-12)
        if grad.dim() == 2:  # zero on the padding
            assert torch.equal(grad[torch.isnan(pf)], torch.zeros_like(grad[torch.isnan(pf)]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_fused_loss_low_precision(dtype, layout):
    pf, pb, r, q, kwargs = _steps(dtype, layout, index_dtype=torch.int32)
    options = dict(alpha=0.5, control_variate="loo", log_z_dtype=torch.float32)
    loss, stats, grads = _loss_and_grads("renyi", pf, pb, r, None, kwargs, None, **options)
    assert loss.dtype == torch.float32
    with reference_backend():
        options["log_z_dtype"] = torch.float32
        loss_ref, _, grads_ref = _loss_and_grads("renyi", pf, pb, r, None, kwargs, None, **options)
    torch.testing.assert_close(loss, loss_ref, rtol=1e-4, atol=1e-5)
    tol = {torch.float32: 1e-5, torch.bfloat16: 1e-2, torch.float16: 1e-3}[dtype]
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        assert grad.dtype == dtype
        torch.testing.assert_close(grad.float(), grad_ref.float(), rtol=tol, atol=tol * 1e-2)


def test_fused_loss_mixed_dtypes_and_non_contiguous():
    pf, pb, r, _, kwargs = _steps(torch.float64, "padded", steps=16)
    pf = pf.t().contiguous().t().float()
    pb = torch.stack([pb, pb], dim=-1)[..., 0]  # float64, stride 2
    assert not pf.is_contiguous() and not pb.is_contiguous()
    options = dict(alpha=0.5, control_variate="loo", log_z_dtype=torch.float32)
    loss, _, grads = _loss_and_grads("renyi", pf, pb, r, None, kwargs, None, **options)
    with reference_backend():
        options["log_z_dtype"] = torch.float32
        loss_ref, _, grads_ref = _loss_and_grads("renyi", pf, pb, r, None, kwargs, None, **options)
    # The reference surrogate promotes to float64 here (c float32 * b float64); native keeps
    # log_pf's accumulation dtype, as documented.
    assert loss.dtype == torch.float32
    torch.testing.assert_close(loss, loss_ref, rtol=1e-5, atol=1e-6, check_dtype=False)
    assert grads[0].dtype == torch.float32 and grads[1].dtype == torch.float64
    for grad, grad_ref in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(grad, grad_ref, rtol=1e-5, atol=1e-7)


def test_fused_loss_empty_segments_and_no_log_pb():
    pf = torch.randn(4, 6, dtype=torch.float64)
    lengths = torch.tensor([0, 6, 0, 2])
    r = torch.randn(4, dtype=torch.float64)
    options = dict(alpha=0.5, control_variate="loo", log_z_dtype=torch.float64)
    loss, _, grads = _loss_and_grads(
        "renyi", pf, None, r, None, {"lengths": lengths}, None, **options
    )
    with reference_backend():
        loss_ref, _, grads_ref = _loss_and_grads(
            "renyi",
            pf,
            None,
            r,
            None,
            {"lengths": lengths},
            None,
            alpha=0.5,
            control_variate="loo",
            log_z_dtype=torch.float64,
        )
    torch.testing.assert_close(loss, loss_ref)
    torch.testing.assert_close(grads[0], grads_ref[0])


def test_fused_opcheck():
    pf, pb, r, q, kwargs = _steps(torch.float32, "padded")
    pf, pb = torch.nan_to_num(pf).requires_grad_(True), torch.nan_to_num(pb).requires_grad_(True)
    log_z = torch.tensor(0.2, requires_grad=True)
    args = (
        pf,
        pb,
        r.float(),
        q.float(),
        log_z,
        kwargs["lengths"],
        None,
        "tsallis",
        "loo",
        0.5,
        False,
    )
    torch.library.opcheck(_native("divergence_loss_fused"), args)
    c, d, e = _native("divergence_loss_fused")(*args)[:3]
    offsets = torch.tensor([0, 3, 3, 7, 7, 8, 8, 8, 9, 9, 9, 9, 9])
    for pb_dtype in (torch.float32, None):
        backward_args = (torch.tensor(1.5), c, d, e, None, offsets, [11], torch.bfloat16, pb_dtype)
        torch.library.opcheck(_native("divergence_loss_backward"), backward_args)


def test_fused_backward_without_log_pb_writes_one_gradient():
    c = torch.tensor([0.5, -2.0, 3.0])
    d = torch.tensor([7.0, 8.0, 9.0])
    lengths = torch.tensor([2, 0, 3])
    grad_pf, grad_pb, grad_log_z = _native("divergence_loss_backward")(
        torch.tensor(2.0), c, d, torch.tensor(0.25), lengths, None, [3, 4], torch.float64, None
    )
    mask = torch.arange(4) < lengths[:, None]
    assert torch.equal(grad_pf, torch.where(mask, 2.0 * c[:, None].double(), 0.0))
    assert grad_pb.numel() == 0 and float(grad_log_z) == 0.5


def test_fused_loss_compiles_fullgraph():
    pf, pb, r, _, kwargs = _steps(torch.float32, "padded")

    def step(log_pf, log_pb):
        loss, _ = gf.divergence_loss(
            "renyi", log_pf=log_pf, log_pb=log_pb, log_reward=r, validate=False, **kwargs
        )
        return loss

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    pf_c, pb_c = pf.clone().requires_grad_(True), pb.clone().requires_grad_(True)
    loss_c = compiled(pf_c, pb_c)
    loss_c.backward()
    pf_e, pb_e = pf.clone().requires_grad_(True), pb.clone().requires_grad_(True)
    loss_e = step(pf_e, pb_e)
    loss_e.backward()
    assert torch.equal(loss_c, loss_e)
    assert torch.equal(pf_c.grad, pf_e.grad) and torch.equal(pb_c.grad, pb_e.grad)


@pytest.mark.slow
def test_fused_loss_compiles_fullgraph_inductor():
    pf, pb, r, _, kwargs = _steps(torch.float32, "packed")

    def step(log_pf, log_pb):
        return gf.divergence_loss(
            "tsallis", log_pf=log_pf, log_pb=log_pb, log_reward=r, validate=False, **kwargs
        )[0]

    compiled = torch.compile(step, fullgraph=True)
    pf_c = pf.clone().requires_grad_(True)
    compiled(pf_c, pb).backward()
    pf_e = pf.clone().requires_grad_(True)
    step(pf_e, pb).backward()
    torch.testing.assert_close(pf_c.grad, pf_e.grad)


def test_fused_loss_bitwise_deterministic():
    # 2500 trajectories: several chunks of the parallel batch step.
    pf, pb, r, _, kwargs = _steps(torch.float32, "packed", batch=2500, steps=20)

    def run():
        options = dict(alpha=0.5, control_variate="loo", log_z_dtype=torch.float32)
        loss, stats, grads = _loss_and_grads("renyi", pf, pb, r, None, kwargs, None, **options)
        return (loss, *stats.values(), *grads)

    first = run()
    with one_thread():
        single = run()
    for a, b, c in zip(first, run(), single, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)
