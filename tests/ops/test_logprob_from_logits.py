"""logprob_from_logits and its backward on every device, against the pure-PyTorch reference.

Dtypes, padded and packed layouts with int32 and int64 indices, action masks, one to many
actions (vector heads and tails of every row), NaN logits and wild actions in the padding,
non-contiguous (time-major) and misaligned rows, rows per warp on both sides of the warps
choice, extreme and shifted logits (precision), float64 gradcheck, opcheck and bitwise
determinism.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gfn_fast as gf
from gfn_fast import reference
from tests.helpers import one_thread
from tests.ops.cases import logits_batch, outside_mask
from tests.ops.conftest import FLOAT_DTYPES, INDEX_DTYPES, assert_close

LOW_PRECISION_GRAD = {"rtol": 2e-2, "atol": 1e-2}


def check_logprob(device, logits, actions, mask, lengths, offsets, scale=10.0):
    """Forward and backward against the reference; zero gradient outside and where masked."""
    dtype = logits.dtype
    logprob, step_lse = device.op("logprob_from_logits")(logits, actions, mask, lengths, offsets)
    expected = reference.logprob_from_logits(logits, actions, mask, lengths, offsets)
    assert logprob.dtype == expected.dtype and step_lse.shape == actions.shape
    assert step_lse.dtype == torch.float64
    assert_close(logprob, expected, "sum", dtype, scale)
    outside = outside_mask(actions.shape, lengths, offsets, device.torch_device)
    assert (step_lse[outside] == 0).all()

    upstream = torch.randn(logprob.shape, device=logprob.device, dtype=logprob.dtype)
    leaf = logits.detach().requires_grad_()
    (grad,) = torch.autograd.grad(
        gf.ops.logprob_from_logits(leaf, actions, mask, lengths, offsets), leaf, upstream
    )
    ref_leaf = logits.detach().requires_grad_()
    (expected_grad,) = torch.autograd.grad(
        reference.logprob_from_logits(ref_leaf, actions, mask, lengths, offsets), ref_leaf, upstream
    )
    assert grad.dtype == dtype and grad.shape == logits.shape and grad.is_contiguous()
    if dtype in (torch.bfloat16, torch.float16):
        torch.testing.assert_close(grad, expected_grad, **LOW_PRECISION_GRAD)
    else:
        assert_close(grad, expected_grad, "grad", dtype)
    assert (grad[outside] == 0).all()
    if mask is not None:
        assert (grad[~mask] == 0).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("with_mask", [False, True])
@pytest.mark.parametrize("num_actions", [1, 5, 37, 256])
def test_parity(device, dtype, layout, with_mask, num_actions):
    check_logprob(device, *logits_batch(device, layout, dtype, num_actions, with_mask))


@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
def test_index_dtypes(device, index_dtype):
    logits, actions, mask, lengths, offsets = logits_batch(device, "packed", torch.float32, seed=2)
    check_logprob(device, logits, actions.to(index_dtype), mask, lengths, offsets.to(index_dtype))
    logits, actions, mask, lengths, offsets = logits_batch(device, "padded", torch.float32, seed=3)
    check_logprob(device, logits, actions.to(index_dtype), mask, lengths.to(index_dtype), offsets)


@pytest.mark.parametrize("steps", [3, 4, 5, 17, 40])
def test_rows_per_warp(device, steps):
    # One to eight warps per segment, with the steps of a segment split unevenly among them.
    check_logprob(device, *logits_batch(device, "padded", torch.float32, 9, True, 4, 6, steps))


def test_non_contiguous_time_major(device):
    steps, batch, num_actions = 7, 13, 20
    on = device.torch_device
    g = device.generator(6)
    logits = torch.randn(steps, batch, num_actions, generator=g, device=on).transpose(0, 1)
    actions = torch.randint(0, num_actions, (steps, batch), generator=g, device=on).t()
    lengths = torch.randint(0, steps + 1, (batch,), generator=g, device=on, dtype=torch.int32)
    mask = torch.ones(steps, batch, num_actions, dtype=torch.bool, device=on).transpose(0, 1)
    check_logprob(device, logits, actions, None, lengths, None)
    check_logprob(device, logits, actions, mask, lengths, None)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_misaligned_rows(device, dtype):
    # Rows that start off a 16-byte boundary: A = 37 makes every row start elsewhere, and a
    # storage offset of one element shifts the first.
    logits, actions, mask, lengths, offsets = logits_batch(device, "padded", dtype, 37, True, 7)
    flat = torch.empty(logits.numel() + 1, dtype=dtype, device=device.torch_device)
    shifted = flat[1:].view(logits.shape)
    shifted.copy_(logits)
    check_logprob(device, shifted, actions, mask, lengths, offsets)


def test_extreme_logits_and_single_allowed_action(device):
    logits, actions, mask, lengths, offsets = logits_batch(device, "packed", torch.float32, 16)
    check_logprob(device, logits * 1e4, actions, mask, lengths, offsets, scale=1e5)
    only = torch.zeros_like(mask)
    only.scatter_(-1, actions.clamp_min(0).unsqueeze(-1), True)  # all masked but the chosen
    check_logprob(device, logits, actions, only, lengths, offsets)


@pytest.mark.parametrize("shift", [1e4, 1e5, 1e6])
def test_precision_with_shifted_logits(device, shift):
    # Within a few float32 ulps of the exact log-softmax however large the logits: what
    # torch.log_softmax achieves in float32 on the same input bounds the error.
    logits, actions, mask, lengths, offsets = logits_batch(
        device, "padded", torch.float64, 64, True, seed=8, batch=8, steps=32
    )
    logits = torch.nan_to_num(logits) + shift
    exact = reference.logprob_from_logits(logits, actions, mask, lengths, offsets)
    x32 = logits.float()
    ours = device.op("logprob_from_logits")(x32, actions, mask, lengths, offsets)[0]
    torch_f32 = reference.logprob_from_logits(x32, actions, mask, lengths, offsets)
    exact_of_rounded = reference.logprob_from_logits(x32.double(), actions, mask, lengths, offsets)
    ours_error = (ours.double() - exact_of_rounded).abs().max()
    torch_error = (torch_f32.double() - exact_of_rounded).abs().max()
    assert ours_error <= 4 * torch_error + 1e-5, (float(ours_error), float(torch_error))
    assert exact.shape == ours.shape

    leaf = x32.detach().requires_grad_()
    (grad,) = torch.autograd.grad(
        gf.ops.logprob_from_logits(leaf, actions, mask, lengths, offsets).sum(), leaf
    )
    ref = x32.double().requires_grad_()
    (exact_grad,) = torch.autograd.grad(
        reference.logprob_from_logits(ref, actions, mask, lengths, offsets).sum(), ref
    )
    assert (grad.double() - exact_grad).abs().max() < 1e-5


def test_invalid_actions_are_clamped(device):
    # The ops do not check action values (the public function does, docs: "invalid input"):
    # on every device actions clamp to [0, A - 1] and a forbidden chosen action gives -inf
    # and no gradient, without reading out of bounds.
    on = device.torch_device
    logits = torch.randn(3, 4, 5, device=on)
    wild = torch.tensor([[7, -2, 4, 0], [5, 1, -9, 3], [2, 2, 100, 4]], device=on)
    forward, backward = device.op("logprob_from_logits"), device.op("logprob_from_logits_backward")
    logprob, lse = forward(logits, wild, None, None, None)
    clamped = wild.clamp(0, 4)
    expected, expected_lse = forward(logits, clamped, None, None, None)
    assert torch.equal(logprob, expected) and torch.equal(lse, expected_lse)
    grad = torch.randn(3, device=on)
    assert torch.equal(
        backward(grad, logits, wild, None, lse, None, None),
        backward(grad, logits, clamped, None, lse, None, None),
    )

    mask = torch.ones(3, 4, 5, dtype=torch.bool, device=on)
    mask[1, 2, clamped[1, 2]] = False  # forbid one chosen action
    logprob, lse = forward(logits, clamped, mask, None, None)
    assert logprob[1] == float("-inf") and torch.isfinite(logprob[[0, 2]]).all()
    row_grad = backward(grad, logits, clamped, mask, lse, None, None)[1, 2]
    softmax = torch.softmax(logits[1, 2].double().masked_fill(~mask[1, 2], float("-inf")), -1)
    torch.testing.assert_close(row_grad.double(), -grad[1].double() * softmax, rtol=1e-5, atol=1e-6)


def test_empty_segments_and_batches(device):
    on = device.torch_device
    logits = torch.randn(4, 6, 3, device=on)
    actions = torch.randint(0, 3, (4, 6), device=on)
    check_logprob(device, logits, actions, None, torch.tensor([0, 6, 0, 2], device=on), None)
    offsets = torch.tensor([1, 1, 4, 4], dtype=torch.int32, device=on)
    check_logprob(device, logits[0], actions[0], None, None, offsets)
    empty = device.op("logprob_from_logits")(logits[0], actions[0], None, None, offsets[:1])[0]
    assert empty.shape == (0,)


# The device fixture holds no state between examples.
@settings(
    max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.integers(1, 12),
    steps=st.integers(0, 12),
    num_actions=st.integers(1, 70),
    packed_layout=st.booleans(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(device, batch, steps, num_actions, packed_layout, dtype, seed):
    layout = "packed" if packed_layout else "padded"
    check_logprob(
        device, *logits_batch(device, layout, dtype, num_actions, seed % 2 == 0, seed, batch, steps)
    )


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_gradcheck_float64(device, layout):
    logits, actions, mask, lengths, offsets = logits_batch(
        device, layout, torch.float64, 6, True, seed=5, batch=4, steps=3
    )
    logits = torch.nan_to_num(logits).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: gf.ops.logprob_from_logits(x, actions, mask, lengths, offsets), (logits,)
    )


def test_opcheck(device):
    logits, actions, mask, lengths, _ = logits_batch(device, "padded", torch.float32, 5, True, 8)
    logits = torch.nan_to_num(logits)
    actions = actions.clamp_min(0)
    packed_logits, packed_actions, _, _, offsets = logits_batch(
        device, "packed", torch.float64, 4, False, 9
    )
    packed_logits = torch.nan_to_num(packed_logits)
    packed_actions = packed_actions.clamp_min(0)
    time_major = logits.transpose(0, 1).contiguous().transpose(0, 1)  # non-contiguous
    step_lse = device.op("logprob_from_logits")(logits, actions, mask, lengths, None)[1]
    grad = torch.randn(logits.shape[0], device=device.torch_device)
    samples = [
        ("logprob_from_logits", (logits.requires_grad_(), actions, mask, lengths, None)),
        ("logprob_from_logits", (time_major.requires_grad_(), actions, mask, lengths, None)),
        (
            "logprob_from_logits",
            (packed_logits.requires_grad_(), packed_actions, None, None, offsets),
        ),
        (
            "logprob_from_logits_backward",
            (grad, logits.detach(), actions, mask, step_lse, lengths, None),
        ),
        (
            "logprob_from_logits_backward",
            (grad, time_major.detach(), actions, mask, step_lse, lengths, None),
        ),
    ]
    for name, args in samples:
        torch.library.opcheck(getattr(device.library, name), args)


def test_bitwise_deterministic(device):
    logits, actions, mask, lengths, offsets = logits_batch(device, "padded", torch.bfloat16, 256)

    def run():
        leaf = logits.detach().requires_grad_()
        logprob = gf.ops.logprob_from_logits(leaf, actions, mask, lengths, offsets)
        (grad,) = torch.autograd.grad(logprob.sum(), leaf)
        return logprob, grad

    first, first_grad = run()
    runs = [run()]
    if device.backend == "cpu":
        with one_thread():
            runs.append(run())
    for other, other_grad in runs:
        assert torch.equal(first, other)
        assert torch.equal(torch.nan_to_num(first_grad), torch.nan_to_num(other_grad))
