"""CUDA kernels against the pure-PyTorch reference, both run on the GPU.

Mirrors the CPU parity tests: dtypes, both layouts, int32/int64 indices, empty segments,
NaN padding that must never be read, non-contiguous and misaligned inputs, hypothesis
shapes, float64 gradcheck, opcheck, torch.compile(fullgraph=True), bitwise determinism
and the launch budget (the whole loss in at most 3 kernel launches, forward + backward).

Every test carries the `cuda` marker and skips without a GPU or without CUDA kernels in
the extension (benchmarks/gpu/run.sh runs them on the H200).
"""

from __future__ import annotations

import contextlib

import pytest
import torch

try:
    from hypothesis import given, settings
    from hypothesis import strategies as st
except ImportError:  # the GPU machine may lack hypothesis: skip only those tests

    def given(**_):
        return pytest.mark.skip(reason="hypothesis is not installed")

    def settings(**_):
        return lambda fn: fn

    class _Strategies:
        def __getattr__(self, _name):
            return lambda *args, **kwargs: None

    st = _Strategies()

import gfn_fast as gf
from gfn_fast import _backend, objectives, reference

HAS_CUDA_KERNELS = torch.cuda.is_available() and _backend.native_available("cuda")
pytestmark = [
    pytest.mark.cuda,
    pytest.mark.skipif(
        not HAS_CUDA_KERNELS, reason="needs a GPU and gfn_fast._C built with CUDA kernels"
    ),
]

DEVICE = "cuda"
FLOAT_DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
INDEX_DTYPES = [torch.int32, torch.int64]


def native(name: str):
    return getattr(torch.ops.gfn_fast, name).default


def acc(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def tol(dtype: torch.dtype, scale: float = 1.0) -> dict:
    """Tolerances of an fp32 (fp64) accumulation compared with another summation order."""
    if dtype == torch.float64:
        return {"rtol": 1e-10, "atol": 1e-10 * scale}
    return {"rtol": 2e-5, "atol": 2e-5 * scale}


@contextlib.contextmanager
def reference_backend():
    gf.use_backend("reference")
    try:
        yield
    finally:
        gf.use_backend(None)


def gen(seed: int) -> torch.Generator:
    return torch.Generator(device=DEVICE).manual_seed(seed)


def padded(batch, steps, dtype, index_dtype=torch.int64, seed=0, full=False):
    """values [B, T] with NaN padding, lengths [B] (some 0, some T) or None when full."""
    g = gen(seed)
    values = torch.randn(batch, steps, generator=g, device=DEVICE).to(dtype)
    if full:
        return values, None
    lengths = torch.randint(0, steps + 1, (batch,), generator=g, device=DEVICE)
    if batch > 2:
        lengths[0], lengths[1] = 0, steps
    mask = torch.arange(steps, device=DEVICE) >= lengths.unsqueeze(1)
    values = values.masked_fill(mask, float("nan"))
    return values, lengths.to(index_dtype)


def packed(batch, max_len, dtype, index_dtype=torch.int64, seed=0, head=3, tail=5):
    """values [N] with NaN outside the segments, offsets [B + 1] (some segments empty)."""
    g = gen(seed)
    lengths = torch.randint(0, max_len + 1, (batch,), generator=g, device=DEVICE)
    if batch > 1:
        lengths[0] = 0
    offsets = torch.zeros(batch + 1, dtype=torch.int64, device=DEVICE)
    offsets[1:] = torch.cumsum(lengths, 0)
    offsets += head
    total = int(offsets[-1]) + tail
    values = torch.randn(total, generator=g, device=DEVICE).to(dtype)
    values[:head] = float("nan")
    values[int(offsets[-1]) :] = float("nan")
    return values, offsets.to(index_dtype)


def outside_mask(shape, lengths, offsets) -> torch.Tensor:
    """True on the steps that belong to no segment."""
    positions, _, _ = reference.segment_positions(shape, lengths, offsets, DEVICE)
    inside = torch.zeros(torch.Size(shape).numel(), dtype=torch.bool, device=DEVICE)
    inside[positions] = True
    return ~inside.reshape(shape)


# ----------------------------------------------------------------------------------------
# segment_sum
# ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "full", "packed"])
def test_segment_sum_matches_reference(dtype, index_dtype, layout):
    if layout == "packed":
        values, offsets = packed(37, 300, dtype, index_dtype)
        lengths = None
    else:
        values, lengths = padded(37, 300, dtype, index_dtype, full=layout == "full")
        offsets = None
    out = native("segment_sum")(values, lengths, offsets)
    expected = reference.segment_sum(values, lengths, offsets)
    assert out.dtype == acc(dtype) and out.shape == (37,)
    torch.testing.assert_close(out, expected, **tol(dtype, 10.0))
    assert torch.isfinite(out).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_segment_sum_long_segments_and_few_of_them(dtype):
    # Few long segments take several warps per segment.
    values, offsets = packed(3, 50_000, dtype, seed=1)
    out = native("segment_sum")(values, None, offsets)
    torch.testing.assert_close(
        out, reference.segment_sum(values, None, offsets), **tol(dtype, 500.0)
    )


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_segment_sum_non_contiguous_and_misaligned(dtype):
    base = torch.randn(64, 2 * 129 + 1, device=DEVICE).to(dtype)
    lengths = torch.randint(0, 130, (64,), device=DEVICE)
    for values in (base[:, 1::2], base[:, 1:130], base.t().contiguous().t()[:, :129]):
        out = native("segment_sum")(values, lengths, None)
        expected = reference.segment_sum(values, lengths, None)
        torch.testing.assert_close(out, expected, **tol(dtype, 10.0))
    transposed = torch.randn(50, 64, device=DEVICE).to(dtype).t()  # [B, T] view of [T, B]
    out = native("segment_sum")(transposed, None, None)
    torch.testing.assert_close(out, reference.segment_sum(transposed), **tol(dtype, 10.0))
    flat = torch.randn(1001, device=DEVICE).to(dtype)[1:]  # packed, storage offset 1
    offsets = torch.tensor([0, 7, 7, 500, 1000], device=DEVICE)
    out = native("segment_sum")(flat, None, offsets)
    torch.testing.assert_close(out, reference.segment_sum(flat, None, offsets), **tol(dtype, 50.0))


def test_segment_sum_empty_batches():
    values = torch.randn(5, device=DEVICE)
    offsets = torch.tensor([2], device=DEVICE)
    assert native("segment_sum")(values, None, offsets).shape == (0,)
    grad = native("segment_sum_backward")(
        torch.zeros(0, device=DEVICE), None, offsets, [5], torch.float32
    )
    assert torch.equal(grad, torch.zeros(5, device=DEVICE))
    empty_rows = torch.randn(4, 0, device=DEVICE)
    assert torch.equal(native("segment_sum")(empty_rows, None, None), torch.zeros(4, device=DEVICE))


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_segment_sum_backward(dtype, layout):
    if layout == "packed":
        values, offsets = packed(29, 70, dtype, seed=2)
        lengths = None
    else:
        values, lengths = padded(29, 70, dtype, seed=2)
        offsets = None
    grad_out = torch.randn(29, device=DEVICE, dtype=acc(dtype))
    values = values.requires_grad_()
    (grad,) = torch.autograd.grad(gf.ops.segment_sum(values, lengths, offsets), values, grad_out)
    (expected,) = torch.autograd.grad(
        reference.segment_sum(values, lengths, offsets), values, grad_out
    )
    assert grad.dtype == dtype and grad.shape == values.shape
    torch.testing.assert_close(grad, expected, rtol=0, atol=0)
    assert (grad[outside_mask(values.shape, lengths, offsets)] == 0).all()


def test_segment_sum_backward_expanded_grad():
    values, lengths = padded(16, 40, torch.float32, seed=3)
    values = values.requires_grad_()
    gf.ops.segment_sum(values, lengths, None).sum().backward()  # grad is a stride-0 expand
    expected = (~outside_mask(values.shape, lengths, None)).float()
    torch.testing.assert_close(values.grad, expected, rtol=0, atol=0)


@settings(max_examples=25, deadline=None)
@given(
    batch=st.integers(1, 40),
    steps=st.integers(0, 300),
    packed_layout=st.booleans(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_segment_sum_hypothesis_shapes(batch, steps, packed_layout, dtype, seed):
    if packed_layout:
        values, offsets = packed(batch, steps, dtype, seed=seed, head=seed % 9, tail=seed % 4)
        lengths = None
    else:
        values, lengths = padded(batch, steps, dtype, seed=seed)
        offsets = None
    out = native("segment_sum")(values, lengths, offsets)
    torch.testing.assert_close(
        out, reference.segment_sum(values, lengths, offsets), **tol(dtype, 10.0)
    )


# ----------------------------------------------------------------------------------------
# logprob_from_logits
# ----------------------------------------------------------------------------------------


def logits_batch(layout, dtype, num_actions=37, with_mask=True, seed=0, batch=11, steps=9):
    """(logits, actions, mask, lengths, offsets); NaN logits and wild actions in padding."""
    g = gen(seed)
    if layout == "packed":
        _, offsets = packed(batch, steps, torch.float32, seed=seed)
        lengths = None
        shape = (int(offsets[-1]) + 5,)
    else:
        _, lengths = padded(batch, steps, torch.float32, seed=seed)
        offsets = None
        shape = (batch, steps)
    logits = (3 * torch.randn(*shape, num_actions, generator=g, device=DEVICE)).to(dtype)
    mask = None
    if with_mask:
        mask = torch.rand(*shape, num_actions, generator=g, device=DEVICE) > 0.3
    actions = torch.randint(0, num_actions, shape, generator=g, device=DEVICE)
    if mask is not None:  # the chosen action is always allowed
        mask.scatter_(-1, actions.unsqueeze(-1), True)
    outside = outside_mask(shape, lengths, offsets)
    logits[outside] = float("nan")
    actions[outside] = -7
    return logits, actions, mask, lengths, offsets


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("num_actions", [1, 37, 256])
def test_logprob_forward_and_backward(dtype, layout, with_mask, num_actions):
    logits, actions, mask, lengths, offsets = logits_batch(layout, dtype, num_actions, with_mask)
    logprob, step_lse = native("logprob_from_logits")(logits, actions, mask, lengths, offsets)
    expected = reference.logprob_from_logits(logits, actions, mask, lengths, offsets)
    assert logprob.dtype == acc(dtype) and step_lse.shape == actions.shape
    torch.testing.assert_close(logprob, expected, **tol(dtype, 10.0))
    outside = outside_mask(actions.shape, lengths, offsets)
    assert (step_lse[outside] == 0).all()

    grad_out = torch.randn(logprob.shape, device=DEVICE, dtype=logprob.dtype)
    leaf = logits.detach().requires_grad_()
    (grad,) = torch.autograd.grad(
        gf.ops.logprob_from_logits(leaf, actions, mask, lengths, offsets), leaf, grad_out
    )
    (expected_grad,) = torch.autograd.grad(
        reference.logprob_from_logits(leaf, actions, mask, lengths, offsets), leaf, grad_out
    )
    assert grad.dtype == dtype and grad.shape == logits.shape
    low = dtype in (torch.bfloat16, torch.float16)
    grad_tol = {"rtol": 2e-2, "atol": 1e-2} if low else tol(dtype)
    torch.testing.assert_close(grad, expected_grad, **grad_tol)
    assert (grad[outside] == 0).all()
    if mask is not None:
        assert (grad[~mask] == 0).all()


def test_logprob_non_contiguous_time_major():
    # torchgfn-style [T, B, A] tensors viewed as [B, T, A].
    steps, batch, num_actions = 7, 13, 20
    logits = torch.randn(steps, batch, num_actions, device=DEVICE).transpose(0, 1)
    actions = torch.randint(0, num_actions, (steps, batch), device=DEVICE).t()
    lengths = torch.randint(0, steps + 1, (batch,), device=DEVICE, dtype=torch.int32)
    out, _ = native("logprob_from_logits")(logits, actions, None, lengths, None)
    expected = reference.logprob_from_logits(logits, actions, None, lengths, None)
    torch.testing.assert_close(out, expected, **tol(torch.float32, 10.0))


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_gradcheck_float64(layout):
    values, lengths = padded(5, 6, torch.float64, seed=4)
    offsets = None
    if layout == "packed":
        values, offsets = packed(5, 6, torch.float64, seed=4)
        lengths = None
    values = torch.nan_to_num(values).requires_grad_()
    assert torch.autograd.gradcheck(lambda v: gf.ops.segment_sum(v, lengths, offsets), (values,))
    logits, actions, mask, lengths, offsets = logits_batch(
        layout, torch.float64, 6, True, seed=5, batch=4, steps=3
    )
    logits = torch.nan_to_num(logits).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: gf.ops.logprob_from_logits(x, actions, mask, lengths, offsets), (logits,)
    )


# ----------------------------------------------------------------------------------------
# batch_coefficients and the fused loss
# ----------------------------------------------------------------------------------------

CASES = [
    ("tb", "loo", 0.5),
    ("tb", "none", 0.5),
    ("vargrad", "loo", 0.5),
    ("reverse_kl", "loo", 0.5),
    ("reverse_kl", "none", 0.5),
    ("forward_kl", "loo", 0.5),
    ("forward_kl", "none", 0.5),
    ("renyi", "loo", 0.5),
    ("renyi", "none", 0.5),
    ("renyi", "loo", -1.5),
    ("renyi", "loo", 2.0),
    ("renyi", "loo", 1.0 - 1e-7),
    ("renyi", "loo", 1e-7),
    ("renyi", "loo", 0.0),
    ("renyi", "loo", 1.0),
    ("tsallis", "loo", 0.5),
    ("tsallis", "none", 0.7),
    ("tsallis", "loo", 1e-8),
    ("tsallis", "loo", 1.5),
]


def batch_inputs(k, dtype, off_policy, seed=0, spread=3.0):
    g = gen(seed)
    log_pf = (-spread * torch.rand(k, generator=g, device=DEVICE, dtype=torch.float64)).to(dtype)
    log_pb = (-spread * torch.rand(k, generator=g, device=DEVICE, dtype=torch.float64)).to(dtype)
    log_reward = spread * torch.randn(k, generator=g, device=DEVICE, dtype=torch.float64)
    log_behavior = None
    if off_policy:
        log_behavior = log_pf.double() + 0.3 * torch.randn(k, generator=g, device=DEVICE)
    return log_pf, log_pb, log_reward.to(dtype), log_behavior


def assert_coefficients_close(out, expected, dtype):
    scale = float(expected.c.abs().max().clamp_min(1e-30))
    for name in ("c", "d"):
        torch.testing.assert_close(
            getattr(out, name), getattr(expected, name), rtol=1e-5, atol=1e-6 * scale, msg=name
        )
    for name in ("e", "value", "ess", "log_z_hat"):
        torch.testing.assert_close(
            getattr(out, name), getattr(expected, name), rtol=1e-5, atol=1e-6, msg=name
        )
    assert bool(out.skipped) == bool(expected.skipped)
    assert out.c.dtype == acc(dtype)


@pytest.mark.parametrize(("objective", "cv", "alpha"), CASES)
@pytest.mark.parametrize("off_policy", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("with_log_z", [False, True])
def test_batch_coefficients_match_objectives(objective, cv, alpha, off_policy, dtype, with_log_z):
    if objective == "tb" and (not with_log_z or (off_policy and cv == "loo")):
        pytest.skip("tb needs log_z; tb loo is on-policy only")
    log_pf, log_pb, log_reward, log_behavior = batch_inputs(257, dtype, off_policy)
    log_z = torch.tensor(1.3, device=DEVICE, dtype=acc(dtype)) if with_log_z else None
    args = (log_pf, log_pb, log_reward, log_behavior, log_z, objective, cv, alpha, False)
    out = objectives.Coefficients(*native("batch_coefficients")(*args))
    expected = reference.batch_coefficients(*args)
    assert_coefficients_close(out, expected, dtype)


@pytest.mark.parametrize("k", [2, 33, 1025, 1 << 17])
def test_batch_coefficients_sizes_and_wide_log_weights(k):
    log_pf, log_pb, log_reward, _ = batch_inputs(k, torch.float32, False, seed=k, spread=3e3)
    args = (log_pf, log_pb, log_reward, None, None, "renyi", "loo", 0.5, True)
    out = objectives.Coefficients(*native("batch_coefficients")(*args))
    assert_coefficients_close(out, reference.batch_coefficients(*args), torch.float32)


def test_batch_coefficients_skipped_batch():
    k = 8
    log_pf = torch.zeros(k, device=DEVICE)
    log_reward = torch.full((k,), float("-inf"), device=DEVICE)
    args = (log_pf, None, log_reward, None, None, "forward_kl", "loo", 0.5, False)
    out = objectives.Coefficients(*native("batch_coefficients")(*args))
    assert bool(out.skipped) and float(out.c.abs().sum()) == 0 and float(out.ess) == 0


def step_batch(layout, dtype, batch=48, steps=24, seed=0, index_dtype=torch.int64):
    """Per-step (log_pf, log_pb, log_reward, lengths, offsets); NaN outside the segments."""
    if layout == "packed":
        log_pf, offsets = packed(batch, steps, dtype, index_dtype, seed=seed)
        lengths = None
    else:
        log_pf, lengths = padded(batch, steps, dtype, index_dtype, seed=seed)
        offsets = None
    g = gen(seed + 1)
    log_pb = torch.randn(log_pf.shape, generator=g, device=DEVICE).to(dtype)
    log_pb = torch.where(torch.isnan(log_pf), log_pf, -log_pb.abs())
    log_pf = -log_pf.abs()
    log_reward = torch.randn(batch, generator=g, device=DEVICE).to(dtype)
    return log_pf, log_pb, log_reward, lengths, offsets


def loss_and_grads(objective, cv, alpha, log_pf, log_pb, log_reward, lengths, offsets, log_z=None):
    pf = log_pf.detach().requires_grad_()
    pb = log_pb.detach().requires_grad_()
    inputs = [pf, pb]
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
        validate=False,
    )
    grads = torch.autograd.grad(loss, inputs)
    return loss.detach(), stats, grads


@pytest.mark.parametrize(("objective", "cv", "alpha"), CASES[::2] + [("tsallis", "loo", 0.5)])
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
def test_fused_loss_matches_reference(objective, cv, alpha, layout, dtype):
    log_pf, log_pb, log_reward, lengths, offsets = step_batch(layout, dtype)
    log_z = torch.tensor(0.7, device=DEVICE, dtype=acc(dtype))
    use_log_z = objective in ("tb", "tsallis")
    args = (
        objective,
        cv,
        alpha,
        log_pf,
        log_pb,
        log_reward,
        lengths,
        offsets,
        log_z if use_log_z else None,
    )
    loss, stats, grads = loss_and_grads(*args)
    with reference_backend():
        ref_loss, ref_stats, ref_grads = loss_and_grads(*args)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for key in ("ess", "log_z_hat"):
        torch.testing.assert_close(stats[key], ref_stats[key], rtol=1e-4, atol=1e-5)
    for grad, ref in zip(grads, ref_grads, strict=True):
        assert grad.dtype == ref.dtype and grad.shape == ref.shape
        scale = float(ref.abs().max().clamp_min(1e-30))
        low = dtype in (torch.bfloat16, torch.float16)
        torch.testing.assert_close(
            grad, ref, rtol=1e-2 if low else 1e-4, atol=(1e-2 if low else 1e-5) * scale
        )
    outside = outside_mask(log_pf.shape, lengths, offsets)
    assert (grads[0][outside] == 0).all() and (grads[1][outside] == 0).all()


@settings(max_examples=20, deadline=None)
@given(
    batch=st.integers(2, 70),
    steps=st.integers(0, 40),
    packed_layout=st.booleans(),
    index_dtype=st.sampled_from(INDEX_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_fused_loss_hypothesis_shapes(batch, steps, packed_layout, index_dtype, seed):
    layout = "packed" if packed_layout else "padded"
    data = step_batch(layout, torch.float32, batch, steps, seed, index_dtype)
    loss, _, grads = loss_and_grads("renyi", "loo", 0.5, *data)
    with reference_backend():
        ref_loss, _, ref_grads = loss_and_grads("renyi", "loo", 0.5, *data)
    torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
    for grad, ref in zip(grads, ref_grads, strict=True):
        torch.testing.assert_close(grad, ref, rtol=1e-4, atol=1e-6)


def test_fused_loss_mixed_dtypes_and_no_log_pb():
    log_pf, log_pb, log_reward, lengths, _ = step_batch("padded", torch.bfloat16)
    for pb in (log_pb.float(), None):
        pf = log_pf.detach().requires_grad_()
        loss, _ = gf.divergence_loss(
            "renyi", log_pf=pf, log_pb=pb, log_reward=log_reward, lengths=lengths, validate=False
        )
        (grad,) = torch.autograd.grad(loss, pf)
        with reference_backend():
            ref_pf = log_pf.detach().requires_grad_()
            ref_loss, _ = gf.divergence_loss(
                "renyi",
                log_pf=ref_pf,
                log_pb=pb,
                log_reward=log_reward,
                lengths=lengths,
                validate=False,
            )
            (ref_grad,) = torch.autograd.grad(ref_loss, ref_pf)
        torch.testing.assert_close(loss, ref_loss, rtol=1e-4, atol=1e-5)
        torch.testing.assert_close(grad, ref_grad, rtol=1e-2, atol=1e-3)


# ----------------------------------------------------------------------------------------
# opcheck, compile, determinism, launches
# ----------------------------------------------------------------------------------------


def opcheck_samples():
    values, lengths = padded(6, 10, torch.float32, seed=7)
    values = torch.nan_to_num(values)
    packed_values, offsets = packed(6, 10, torch.float32, torch.int32, seed=7)
    packed_values = torch.nan_to_num(packed_values)
    logits, actions, mask, l_lengths, _ = logits_batch("padded", torch.float32, 5, True, seed=8)
    logits = torch.nan_to_num(logits)
    actions = actions.clamp_min(0)
    step_lse = native("logprob_from_logits")(logits, actions, mask, l_lengths, None)[1]
    log_pf, log_pb, log_reward, s_lengths, _ = step_batch("padded", torch.float32, 8, 6)
    log_pf, log_pb = torch.nan_to_num(log_pf), torch.nan_to_num(log_pb)
    c = torch.randn(8, device=DEVICE)
    scalar = torch.tensor(0.5, device=DEVICE)
    return [
        ("segment_sum", (values.requires_grad_(), lengths, None)),
        ("segment_sum", (packed_values.requires_grad_(), None, offsets)),
        (
            "segment_sum_backward",
            (torch.randn(6, device=DEVICE), lengths, None, [6, 10], torch.bfloat16),
        ),
        ("logprob_from_logits", (logits.requires_grad_(), actions, mask, l_lengths, None)),
        (
            "logprob_from_logits_backward",
            (
                torch.randn(11, device=DEVICE),
                logits.detach(),
                actions,
                mask,
                step_lse,
                l_lengths,
                None,
            ),
        ),
        (
            "batch_coefficients",
            (log_reward.clone(), None, log_reward, None, None, "renyi", "loo", 0.5, False),
        ),
        (
            "divergence_loss_fused",
            (
                log_pf.requires_grad_(),
                log_pb.requires_grad_(),
                log_reward,
                None,
                None,
                s_lengths,
                None,
                "renyi",
                "loo",
                0.5,
                False,
            ),
        ),
        (
            "divergence_loss_backward",
            (
                scalar,
                c,
                c.clone(),
                scalar.clone(),
                s_lengths,
                None,
                [8, 6],
                torch.float32,
                torch.float16,
            ),
        ),
    ]


@pytest.mark.parametrize("index", range(8))
def test_opcheck(index):
    name, args = opcheck_samples()[index]
    torch.library.opcheck(getattr(torch.ops.gfn_fast, name), args)


def test_compile_fullgraph_cuda():
    log_pf, log_pb, log_reward, lengths, _ = step_batch("padded", torch.float32)
    log_pf, log_pb = torch.nan_to_num(log_pf), torch.nan_to_num(log_pb)

    def step(pf, pb):
        loss, stats = gf.divergence_loss(
            "renyi", log_pf=pf, log_pb=pb, log_reward=log_reward, lengths=lengths, validate=False
        )
        return loss, stats["ess"]

    compiled = torch.compile(step, fullgraph=True)
    pf = log_pf.detach().requires_grad_()
    loss, ess = compiled(pf, log_pb)
    loss.backward()
    ref_pf = log_pf.detach().requires_grad_()
    ref_loss, ref_ess = step(ref_pf, log_pb)
    ref_loss.backward()
    torch.testing.assert_close(loss, ref_loss)
    torch.testing.assert_close(ess, ref_ess)
    torch.testing.assert_close(pf.grad, ref_pf.grad)


def test_deterministic_bitwise():
    log_pf, log_pb, log_reward, _, offsets = step_batch("packed", torch.float32, 500, 300)
    logits, actions, mask, lengths, _ = logits_batch("padded", torch.bfloat16, 256, True)

    def run():
        loss, _, grads = loss_and_grads(
            "renyi", "loo", 0.5, log_pf, log_pb, log_reward, None, offsets
        )
        leaf = logits.detach().requires_grad_()
        logprob = gf.ops.logprob_from_logits(leaf, actions, mask, lengths, None)
        (grad_logits,) = torch.autograd.grad(logprob.sum(), leaf)
        return [loss, *grads, logprob, grad_logits]

    first, second = run(), run()
    for a, b in zip(first, second, strict=True):
        assert torch.equal(torch.nan_to_num(a), torch.nan_to_num(b))


def count_kernels(fn) -> list[str]:
    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = []
    for event in prof.events():
        if event.device_type == torch.autograd.DeviceType.CUDA:
            name = event.name
            if "memcpy" in name.lower() or "memset" in name.lower():
                continue
            names.append(name)
    return names


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_whole_loss_launch_budget(layout):
    log_pf, log_pb, log_reward, lengths, offsets = step_batch(layout, torch.float32, 256, 32)
    pf = log_pf.detach().requires_grad_()
    pb = log_pb.detach().requires_grad_()
    seed_grad = torch.ones((), device=DEVICE)

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
        torch.autograd.grad(loss, (pf, pb), seed_grad)

    loss_step()  # warm-up (lazy initialisation)
    names = count_kernels(loss_step)
    assert len(names) <= 3, names
