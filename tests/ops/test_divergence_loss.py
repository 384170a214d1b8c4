"""The fused divergence loss (divergence_loss_fused and divergence_loss_backward) on every
device, through gf.divergence_loss, against the reference path (segment sums, objectives and
the surrogate) on the same device.

The fused op's `value` output is differentiable by design with the *surrogate's* gradient
(grad * c on log p_F, grad * d on log p_B, grad * e on log Z), not the derivative of the
value, so finite differences do not apply: gradients are compared with the reference path's.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gfn_fast as gf
from tests.helpers import one_thread, reference_backend
from tests.ops.cases import CASES, outside_mask, step_batch
from tests.ops.conftest import FLOAT_DTYPES, INDEX_DTYPES


def loss_and_grads(
    objective,
    cv,
    alpha,
    log_pf,
    log_pb,
    log_reward,
    lengths,
    offsets,
    log_z=None,
    log_behavior=None,
):
    pf = log_pf.detach().requires_grad_()
    pb = None if log_pb is None else log_pb.detach().requires_grad_()
    inputs = [x for x in (pf, pb) if x is not None]
    if log_z is not None:
        log_z = log_z.detach().requires_grad_()
        inputs.append(log_z)
    loss, stats = gf.divergence_loss(
        objective,
        log_pf=pf,
        log_pb=pb,
        log_reward=log_reward,
        lengths=lengths,
        offsets=offsets,
        alpha=alpha,
        control_variate=cv,
        log_z=log_z,
        log_behavior=log_behavior,
        validate=False,
    )
    return loss.detach(), stats, torch.autograd.grad(loss, inputs)


def compare_with_reference(args, rtol, atol, grad_rtol=None, grad_atol=None):
    loss, stats, grads = loss_and_grads(*args)
    with reference_backend():
        ref_loss, ref_stats, ref_grads = loss_and_grads(*args)
    torch.testing.assert_close(loss, ref_loss, rtol=rtol, atol=atol, check_dtype=False)
    for key in ("value", "ess", "log_z_hat"):
        torch.testing.assert_close(
            stats[key], ref_stats[key], rtol=rtol, atol=atol, check_dtype=False
        )
    assert bool(stats["skipped"]) == bool(ref_stats["skipped"])
    for grad, ref in zip(grads, ref_grads, strict=True):
        assert grad.dtype == ref.dtype and grad.shape == ref.shape
        scale = float(ref.abs().max().clamp_min(1e-30)) if ref.numel() else 1.0
        torch.testing.assert_close(
            grad, ref, rtol=grad_rtol or rtol, atol=(grad_atol or atol) * scale
        )
    return grads


@pytest.mark.parametrize(("objective", "cv", "alpha"), CASES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
def test_float64_matches_reference(device, objective, cv, alpha, layout, off_policy):
    if objective == "tb" and off_policy and cv == "loo":
        pytest.skip("tb loo is on-policy only")
    log_pf, log_pb, log_reward, lengths, offsets = step_batch(device, layout, torch.float64)
    log_behavior = None
    if off_policy:
        g = device.generator(11)
        noise = torch.randn(
            log_reward.shape, generator=g, device=device.torch_device, dtype=torch.float64
        )
        log_behavior = gf.ops.segment_sum(log_pf, lengths, offsets) + 0.3 * noise
    log_z = None
    if objective in ("tb", "tsallis"):
        log_z = torch.tensor(0.7, dtype=torch.float64, device=device.torch_device)
    args = (objective, cv, alpha, log_pf, log_pb, log_reward, lengths, offsets, log_z, log_behavior)
    grads = compare_with_reference(args, rtol=1e-10, atol=1e-12)
    outside = outside_mask(log_pf.shape, lengths, offsets, device.torch_device)
    assert (grads[0][outside] == 0).all() and (grads[1][outside] == 0).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_dtypes(device, dtype, layout, index_dtype):
    data = step_batch(device, layout, dtype, index_dtype=index_dtype)
    low = dtype in (torch.bfloat16, torch.float16)
    compare_with_reference(
        ("renyi", "loo", 0.5, *data),
        rtol=1e-4,
        atol=1e-5,
        grad_rtol=1e-2 if low else 1e-4,
        grad_atol=1e-2 if low else 1e-5,
    )


# The device fixture holds no state between examples.
@pytest.mark.parametrize("steps", [100, 300])
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_long_segments_and_many_blocks(device, steps, layout):
    # Several warps per segment in the forward sums (T = 100: 2, T = 300: 8) and 2500
    # trajectories: three blocks of the batch step.
    data = step_batch(device, layout, torch.float32, 2500 if steps == 100 else 40, steps, 5)
    compare_with_reference(("renyi", "loo", 0.5, *data), rtol=1e-4, atol=1e-6)


@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.integers(2, 70),
    steps=st.integers(0, 40),
    packed_layout=st.booleans(),
    index_dtype=st.sampled_from(INDEX_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(device, batch, steps, packed_layout, index_dtype, seed):
    layout = "packed" if packed_layout else "padded"
    data = step_batch(device, layout, torch.float32, batch, steps, seed, index_dtype)
    compare_with_reference(("renyi", "loo", 0.5, *data), rtol=1e-4, atol=1e-6)


def test_mixed_dtypes_non_contiguous_and_no_log_pb(device):
    log_pf, log_pb, log_reward, lengths, _ = step_batch(device, "padded", torch.float64, 12, 16)
    pf = log_pf.t().contiguous().t().float()  # column-major float32
    pb = torch.stack([log_pb, log_pb], dim=-1)[..., 0]  # float64, stride 2
    assert not pf.is_contiguous() and not pb.is_contiguous()
    for second in (pb, None):
        compare_with_reference(
            ("renyi", "loo", 0.5, pf, second, log_reward.float(), lengths, None),
            rtol=1e-5,
            atol=1e-6,
        )


def test_empty_segments(device):
    on = device.torch_device
    pf = torch.randn(4, 6, dtype=torch.float64, device=on)
    lengths = torch.tensor([0, 6, 0, 2], device=on)
    r = torch.randn(4, dtype=torch.float64, device=on)
    compare_with_reference(("renyi", "loo", 0.5, pf, None, r, lengths, None), 1e-10, 1e-12)


def test_backward_op(device):
    on = device.torch_device
    c = torch.tensor([0.5, -2.0, 3.0], device=on)
    d = torch.tensor([7.0, 8.0, 9.0], device=on)
    lengths = torch.tensor([2, 0, 3], device=on)
    op = device.op("divergence_loss_backward")
    grad_pf, grad_pb, grad_log_z = op(
        torch.tensor(2.0, device=on),
        c,
        d,
        torch.tensor(0.25, device=on),
        lengths,
        None,
        [3, 4],
        torch.float64,
        torch.bfloat16,
    )
    mask = torch.arange(4, device=on) < lengths[:, None]
    assert torch.equal(grad_pf, torch.where(mask, 2.0 * c[:, None].double(), 0.0))
    assert torch.equal(grad_pb, torch.where(mask, 2.0 * d[:, None], 0.0).bfloat16())
    assert float(grad_log_z) == 0.5
    _, no_pb, _ = op(
        torch.tensor(2.0, device=on),
        c,
        d,
        torch.tensor(0.25, device=on),
        lengths,
        None,
        [3, 4],
        torch.float64,
        None,
    )
    assert no_pb.numel() == 0


def test_opcheck(device):
    on = device.torch_device
    log_pf, log_pb, log_reward, lengths, _ = step_batch(device, "padded", torch.float32, 12, 10)
    pf, pb = torch.nan_to_num(log_pf).requires_grad_(), torch.nan_to_num(log_pb).requires_grad_()
    log_z = torch.tensor(0.2, device=on, requires_grad=True)
    q = torch.randn(12, device=on)
    args = (pf, pb, log_reward, q, log_z, lengths, None, "tsallis", "loo", 0.5, False)
    torch.library.opcheck(device.library.divergence_loss_fused, args)
    strided = (
        pf.detach().t().contiguous().t().requires_grad_(),
        None,
        log_reward,
        None,
        None,
        lengths,
        None,
        "renyi",
        "loo",
        0.5,
        False,
    )
    torch.library.opcheck(device.library.divergence_loss_fused, strided)
    c, d, e = device.op("divergence_loss_fused")(*args)[:3]
    offsets = torch.tensor([0, 3, 3, 7, 7, 8, 8, 8, 9, 9, 9, 9, 9], device=on)
    strided_c = torch.stack([c, c], 1)[:, 0]  # non-contiguous coefficients
    strided_args = (
        torch.tensor(1.5, device=on),
        strided_c,
        d,
        e,
        None,
        offsets,
        [11],
        torch.float32,
        torch.float64,
    )
    torch.library.opcheck(device.library.divergence_loss_backward, strided_args)
    for pb_dtype in (torch.float32, None):
        backward_args = (
            torch.tensor(1.5, device=on),
            c,
            d,
            e,
            None,
            offsets,
            [11],
            torch.bfloat16,
            pb_dtype,
        )
        torch.library.opcheck(device.library.divergence_loss_backward, backward_args)


def test_compiles_fullgraph(device):
    log_pf, log_pb, log_reward, lengths, _ = step_batch(device, "padded", torch.float32)
    log_pf, log_pb = torch.nan_to_num(log_pf), torch.nan_to_num(log_pb)

    def step(pf, pb):
        loss, stats = gf.divergence_loss(
            "renyi", log_pf=pf, log_pb=pb, log_reward=log_reward, lengths=lengths, validate=False
        )
        return loss, stats["ess"]

    compiled = torch.compile(step, fullgraph=True, backend="aot_eager")
    pf = log_pf.detach().requires_grad_()
    loss, ess = compiled(pf, log_pb)
    loss.backward()
    ref_pf = log_pf.detach().requires_grad_()
    ref_loss, ref_ess = step(ref_pf, log_pb)
    ref_loss.backward()
    assert torch.equal(loss, ref_loss) and torch.equal(ess, ref_ess)
    assert torch.equal(pf.grad, ref_pf.grad)


def test_bitwise_deterministic(device):
    # 2500 trajectories: several CPU chunks, or three CUDA blocks of the batch step.
    data = step_batch(device, "packed", torch.float32, 2500, 12, seed=3)

    def run():
        loss, stats, grads = loss_and_grads("renyi", "loo", 0.5, *data)
        return (loss, *stats.values(), *grads)

    first = run()
    runs = [run()]
    if device.backend == "cpu":
        with one_thread():
            runs.append(run())
    for other in runs:
        for a, b in zip(first, other, strict=True):
            assert torch.equal(a, b)


def count_cuda_kernels(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    return [
        e.name
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and "memcpy" not in e.name.lower()
        and "memset" not in e.name.lower()
    ]


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_whole_loss_in_three_launches(device, layout):
    log_pf, log_pb, log_reward, lengths, offsets = step_batch(
        device, layout, torch.float32, 2500, 32
    )
    pf, pb = log_pf.detach().requires_grad_(), log_pb.detach().requires_grad_()

    def loss_step():
        loss, _ = gf.divergence_loss(
            "renyi",
            log_pf=pf,
            log_pb=pb,
            log_reward=log_reward,
            lengths=lengths,
            offsets=offsets,
            validate=False,
        )
        torch.autograd.grad(loss, (pf, pb))

    loss_step()  # warm-up (lazy initialisation)
    if device.backend == "cuda":
        launches = len(count_cuda_kernels(loss_step))
    elif device.is_emulated:
        from gfn_fast import _backend

        _backend._emulated.reset_traffic()
        loss_step()
        launches = sum(t["launches"] for t in _backend._emulated.traffic().values())
    else:
        pytest.skip("kernel launches are a GPU notion")
    assert launches <= 3, launches
