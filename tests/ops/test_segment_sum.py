"""segment_sum and its backward on every device, against the pure-PyTorch reference.

Dtypes, padded / full / packed layouts with int32 and int64 indices, empty segments and
batches, NaN padding that must never be read, non-contiguous and misaligned inputs (the 16-byte
heads and tails), shapes on both sides of every warps-per-segment choice and over many blocks,
random shapes, float64 gradcheck, opcheck and bitwise determinism.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import gfn_fast as gf
from gfn_fast import reference
from tests.helpers import one_thread
from tests.ops.cases import layout_case, outside_mask, packed, padded
from tests.ops.conftest import FLOAT_DTYPES, INDEX_DTYPES, assert_close


def check_segment_sum(device, values, lengths, offsets, dtype, scale=10.0):
    """Forward against the reference, and the backward broadcast exactly (zero outside)."""
    leaf = values.detach().requires_grad_()
    out = device.op("segment_sum")(leaf, lengths, offsets)
    expected = reference.segment_sum(values, lengths, offsets)
    assert out.dtype == expected.dtype and out.device == expected.device
    assert_close(out, expected, "sum", dtype, scale)
    upstream = torch.randn(out.shape, dtype=out.dtype, device=out.device)
    (grad,) = torch.autograd.grad(out, leaf, upstream)
    ref_leaf = values.detach().requires_grad_()
    (expected_grad,) = torch.autograd.grad(
        reference.segment_sum(ref_leaf, lengths, offsets), ref_leaf, upstream
    )
    assert grad.dtype == dtype and grad.shape == values.shape
    assert torch.equal(grad, expected_grad)  # a broadcast: exact
    assert (grad[outside_mask(values.shape, lengths, offsets, device.torch_device)] == 0).all()


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("index_dtype", INDEX_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "full", "packed"])
def test_parity(device, dtype, index_dtype, layout):
    values, lengths, offsets = layout_case(device, layout, 37, 150, dtype, index_dtype)
    check_segment_sum(device, values, lengths, offsets, dtype)


# (B, T): one to eight warps per segment (T around 64, 128, 256 steps per warp), long
# segments over many iterations, many blocks of short segments, and both sides of the
# 16384 warps beyond which a segment of 64 or more steps gets no more warps (B = 8000 and
# 8200 at T = 128: four and two warps per segment).
SHAPES = [
    (37, 40),
    (37, 100),
    (37, 200),
    (37, 300),
    (3, 20_000),
    (1030, 5),
    (8000, 128),
    (8200, 128),
]


@pytest.mark.parametrize(("batch", "steps"), SHAPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_every_warps_per_segment_and_many_blocks(device, batch, steps, layout):
    values, lengths, offsets = layout_case(device, layout, batch, steps, torch.float32, seed=1)
    check_segment_sum(device, values, lengths, offsets, torch.float32, scale=steps / 10)


def test_empty_segments_rows_and_batches(device):
    on = device.torch_device
    values = torch.randn(4, 9, device=on)
    check_segment_sum(device, values, torch.tensor([0, 9, 0, 3], device=on), None, torch.float32)
    offsets = torch.tensor([2, 2, 5, 5, 5, 11], dtype=torch.int32, device=on)
    check_segment_sum(device, torch.randn(12, device=on), None, offsets, torch.float32)
    assert device.op("segment_sum")(torch.randn(5, device=on), None, offsets[:1]).shape == (0,)
    grad = device.op("segment_sum_backward")(
        torch.zeros(0, device=on), None, offsets[:1], [5], torch.float32
    )
    assert torch.equal(grad, torch.zeros(5, device=on))
    empty_rows = torch.randn(4, 0, device=on)
    assert torch.equal(device.op("segment_sum")(empty_rows, None, None), torch.zeros(4, device=on))


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float64])
def test_non_contiguous_and_misaligned(device, dtype):
    on = device.torch_device
    g = device.generator(5)
    base = torch.randn(64, 2 * 129 + 1, generator=g, device=on, dtype=torch.float64).to(dtype)
    lengths = torch.randint(0, 130, (64,), generator=g, device=on)
    # Strided steps, rows starting one element past a 16-byte boundary, column-major.
    for values in (base[:, 1::2], base[:, 1:130], base.t().contiguous().t()[:, :129]):
        check_segment_sum(device, values, lengths, None, dtype)
    transposed = torch.randn(50, 64, generator=g, device=on).to(dtype).t()  # [B, T] of [T, B]
    check_segment_sum(device, transposed, None, None, dtype)
    flat = torch.randn(1001, generator=g, device=on).to(dtype)[1:]  # packed, storage offset 1
    offsets = torch.tensor([0, 7, 7, 500, 1000], device=on)
    check_segment_sum(device, flat, None, offsets, dtype, scale=50.0)
    strided = torch.randn(2002, generator=g, device=on).to(dtype)[::2]
    check_segment_sum(device, strided, None, offsets, dtype, scale=50.0)


def test_backward_of_an_expanded_gradient(device):
    values, lengths = padded(device, 16, 40, torch.float32, seed=3)
    leaf = values.detach().requires_grad_()
    gf.ops.segment_sum(leaf, lengths, None).sum().backward()  # grad is a stride-0 expand
    expected = (~outside_mask(values.shape, lengths, None, device.torch_device)).float()
    assert torch.equal(leaf.grad, expected)


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_backward_op_against_reference_autograd(device, dtype, layout):
    values, lengths, offsets = layout_case(device, layout, 29, 70, dtype, seed=2)
    acc = torch.float64 if dtype == torch.float64 else torch.float32
    grad = torch.randn(29, device=device.torch_device, dtype=acc)
    out = device.op("segment_sum_backward")(grad, lengths, offsets, list(values.shape), dtype)
    leaf = values.detach().requires_grad_()
    (expected,) = torch.autograd.grad(reference.segment_sum(leaf, lengths, offsets), leaf, grad)
    assert out.dtype == dtype and out.shape == values.shape
    assert torch.equal(out, expected)


# The device fixture holds no state between examples.
@settings(
    max_examples=15, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    batch=st.integers(1, 40),
    steps=st.integers(0, 300),
    packed_layout=st.booleans(),
    dtype=st.sampled_from(FLOAT_DTYPES),
    seed=st.integers(0, 2**16),
)
def test_random_shapes(device, batch, steps, packed_layout, dtype, seed):
    if packed_layout:
        values, offsets = packed(
            device, batch, steps, dtype, seed=seed, head=seed % 9, tail=seed % 4
        )
        lengths = None
    else:
        values, lengths = padded(device, batch, steps, dtype, seed=seed)
        offsets = None
    check_segment_sum(device, values, lengths, offsets, dtype)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_gradcheck_float64(device, layout):
    values, lengths, offsets = layout_case(device, layout, 5, 6, torch.float64, seed=4)
    values = torch.nan_to_num(values).requires_grad_()
    assert torch.autograd.gradcheck(
        lambda v: gf.ops.segment_sum(v, lengths, offsets), (values,), eps=1e-6, atol=1e-8
    )


def test_opcheck(device):
    values, lengths = padded(device, 6, 10, torch.float32, seed=7)
    packed_values, offsets = packed(device, 6, 10, torch.float64, torch.int32, seed=7)
    strided = torch.nan_to_num(values).t().contiguous().t()  # non-contiguous [B, T]
    samples = [
        ("segment_sum", (torch.nan_to_num(values).requires_grad_(), lengths, None)),
        ("segment_sum", (strided.requires_grad_(), lengths, None)),
        ("segment_sum", (torch.nan_to_num(packed_values).requires_grad_(), None, offsets)),
        (
            "segment_sum_backward",
            (torch.randn(6, device=device.torch_device), lengths, None, [6, 10], torch.bfloat16),
        ),
        (
            "segment_sum_backward",
            (
                torch.randn(12, device=device.torch_device)[::2],
                None,
                offsets,
                [packed_values.shape[0]],
                torch.float32,
            ),
        ),
    ]
    for name, args in samples:
        torch.library.opcheck(getattr(device.library, name), args)


def test_invalid_index_values_are_clamped(device):
    # The ops do not check index values (the public functions do, docs: "invalid input"): on
    # every device they clamp them and never read or write out of bounds.
    on = device.torch_device
    values = torch.randn(4, 6, device=on)
    op = device.op("segment_sum")
    wild = torch.tensor([9, -3, 6, 2], device=on)
    assert torch.equal(op(values, wild, None), op(values, wild.clamp(0, 6), None))
    flat = torch.randn(10, device=on)
    beyond = torch.tensor([-2, 4, 13], device=on)
    assert torch.equal(op(flat, None, beyond), op(flat, None, beyond.clamp(0, 10)))
    grad = device.op("segment_sum_backward")(
        torch.ones(2, device=on), None, beyond, [10], torch.float32
    )
    expected = device.op("segment_sum_backward")(
        torch.ones(2, device=on), None, beyond.clamp(0, 10), [10], torch.float32
    )
    assert torch.equal(grad, expected)


def test_bitwise_deterministic(device):
    values, lengths, offsets = layout_case(device, "packed", 300, 200, torch.float32, seed=9)
    first = device.op("segment_sum")(values, lengths, offsets)
    assert torch.equal(first, device.op("segment_sum")(values, lengths, offsets))
    if device.backend == "cpu":
        with one_thread():
            assert torch.equal(first, device.op("segment_sum")(values, lengths, offsets))
