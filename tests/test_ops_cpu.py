"""Native CPU segment_sum and logprob_from_logits against gfn_fast.reference.

Covers every float dtype, padded and packed layouts with int32 / int64 indices, empty
segments, non-contiguous inputs, padding poisoned with NaN and out-of-range actions,
all-masked-but-one rows, extreme logits, hypothesis shapes, float64 gradcheck, opcheck,
error messages and bitwise determinism across runs and thread counts.
"""

from __future__ import annotations

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

import gfn_fast as gf
from gfn_fast import ops, reference
from tests.native_cpu_helpers import (
    FLOAT_DTYPES,
    GRAD_TOL,
    SUM_TOL,
    assert_close,
    make_layout,
    one_thread,
    poisoned,
    requires_native_cpu,
)

pytestmark = requires_native_cpu


def _native(name):
    return getattr(torch.ops.gfn_fast, name).default


def test_backend_reports_cpu():
    assert gf.backend() in ("cpu", "cuda")
    assert gf.build_info()["native"]


# ----------------------------------------------------------------------------------------
# segment_sum
# ----------------------------------------------------------------------------------------


def _segment_case(dtype, layout, index_dtype, batch=7, steps=13, seed=0):
    gen = torch.Generator().manual_seed(seed)
    shape, kwargs, inside = make_layout(batch, steps, layout, index_dtype, gen)
    values = poisoned(torch.randn(shape, generator=gen, dtype=torch.float64), inside)
    return values.to(dtype), kwargs


def _check_segment_sum(values, kwargs, dtype):
    x_native = values.clone().requires_grad_(True)
    x_ref = values.clone().requires_grad_(True)
    out = ops.segment_sum(x_native, **kwargs)
    expected = reference.segment_sum(x_ref, **kwargs)
    assert out.dtype == expected.dtype
    assert_close(out, expected, SUM_TOL[dtype])
    upstream = torch.randn(out.shape, dtype=out.dtype)
    (grad,) = torch.autograd.grad(out, x_native, upstream)
    (grad_ref,) = torch.autograd.grad(expected, x_ref, upstream)
    assert grad.dtype == dtype and grad.shape == values.shape
    assert torch.equal(grad, grad_ref)  # a broadcast: exact, zero on padding


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_segment_sum_parity(dtype, layout, index_dtype):
    values, kwargs = _segment_case(dtype, layout, index_dtype)
    _check_segment_sum(values, kwargs, dtype)


def test_segment_sum_full_rows_and_empty_segments():
    values = torch.randn(4, 9)
    _check_segment_sum(values, {}, torch.float32)
    lengths = torch.tensor([0, 9, 0, 3])
    _check_segment_sum(values, {"lengths": lengths}, torch.float32)
    offsets = torch.tensor([2, 2, 5, 5, 5, 11], dtype=torch.int32)
    _check_segment_sum(torch.randn(12), {"offsets": offsets}, torch.float32)
    empty = ops.segment_sum(torch.randn(0), offsets=torch.zeros(1, dtype=torch.int64))
    assert empty.shape == (0,)


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_segment_sum_non_contiguous(layout):
    values, kwargs = _segment_case(torch.float32, layout, torch.int64, batch=5, steps=21)
    if layout == "padded":
        strided = values.t().contiguous().t()  # column-major [B, T]
    else:
        strided = torch.stack([values, values], dim=1)[:, 0]  # stride 2
    assert not strided.is_contiguous()
    _check_segment_sum(strided, kwargs, torch.float32)


def test_segment_sum_gradcheck_float64():
    gen = torch.Generator().manual_seed(1)
    for kwargs, shape in (
        ({"lengths": torch.tensor([3, 0, 5])}, (3, 5)),
        ({"offsets": torch.tensor([1, 4, 4, 6], dtype=torch.int32)}, (8,)),
    ):
        x = torch.randn(shape, generator=gen, dtype=torch.float64, requires_grad=True)
        assert torch.autograd.gradcheck(lambda v, kw=kwargs: gf.segment_logprob(v, **kw), (x,))


def test_segment_sum_opcheck():
    values, kwargs = _segment_case(torch.float32, "padded", torch.int64)
    values = torch.nan_to_num(values).requires_grad_(True)
    torch.library.opcheck(_native("segment_sum"), (values, kwargs["lengths"], None))
    values, kwargs = _segment_case(torch.float64, "packed", torch.int32)
    values = torch.nan_to_num(values).requires_grad_(True)
    torch.library.opcheck(_native("segment_sum"), (values, None, kwargs["offsets"]))
    grad = torch.randn(7)
    torch.library.opcheck(
        _native("segment_sum_backward"),
        (grad, None, kwargs["offsets"], list(values.shape), torch.bfloat16),
    )


def test_segment_sum_errors_name_the_argument():
    values = torch.randn(2, 4)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, T=4\].*lengths\[1\]=5"):
        _native("segment_sum")(values, torch.tensor([1, 5]), None)
    with pytest.raises(ValueError, match="offsets: expected a non-decreasing"):
        _native("segment_sum")(torch.randn(6), None, torch.tensor([0, 4, 2]))
    with pytest.raises(ValueError, match=r"offsets\[-1\] <= N=6"):
        _native("segment_sum")(torch.randn(6), None, torch.tensor([0, 7]))
    with pytest.raises(ValueError, match="lengths: expected an int32 or int64"):
        _native("segment_sum")(values, torch.tensor([1.0, 2.0]), None)


# ----------------------------------------------------------------------------------------
# logprob_from_logits
# ----------------------------------------------------------------------------------------


def _logits_case(
    dtype, layout, index_dtype, batch=6, steps=9, actions=5, masked=True, seed=0, scale=3.0
):
    gen = torch.Generator().manual_seed(seed)
    shape, kwargs, inside = make_layout(batch, steps, layout, index_dtype, gen)
    logits = scale * torch.randn(*shape, actions, generator=gen, dtype=torch.float64)
    chosen = torch.randint(0, actions, shape, generator=gen)
    mask = None
    if masked:
        mask = torch.rand(*shape, actions, generator=gen) < 0.6
        mask.scatter_(-1, chosen.unsqueeze(-1), True)
    # Padding: NaN logits and out-of-range actions must never be read.
    logits = poisoned(logits, inside)
    chosen = chosen.reshape(-1).clone()
    chosen[~inside] = -7
    chosen = chosen.reshape(shape).to(index_dtype)
    return logits.to(dtype), chosen, mask, kwargs


def _check_logprob(logits, actions, mask, kwargs, dtype, sum_tol=None):
    x_native = logits.clone().requires_grad_(True)
    x_ref = logits.clone().requires_grad_(True)
    out = ops.logprob_from_logits(x_native, actions, mask, **kwargs)
    expected = reference.logprob_from_logits(x_ref, actions, mask, **kwargs)
    assert out.dtype == expected.dtype
    assert_close(out, expected, sum_tol or SUM_TOL[dtype])
    upstream = torch.randn(out.shape, dtype=out.dtype)
    (grad,) = torch.autograd.grad(out, x_native, upstream)
    (grad_ref,) = torch.autograd.grad(expected, x_ref, upstream)
    assert grad.dtype == dtype and grad.shape == logits.shape
    assert_close(grad, grad_ref, GRAD_TOL[dtype])
    return out, grad


@pytest.mark.parametrize("dtype", FLOAT_DTYPES)
@pytest.mark.parametrize("layout", ["padded", "packed"])
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("masked", [True, False])
def test_logprob_parity(dtype, layout, index_dtype, masked):
    logits, actions, mask, kwargs = _logits_case(dtype, layout, index_dtype, masked=masked)
    _check_logprob(logits, actions, mask, kwargs, dtype)


@pytest.mark.parametrize("num_actions", [1, 2, 17, 64])
def test_logprob_all_masked_but_one(num_actions):
    logits, actions, _, kwargs = _logits_case(
        torch.float32, "padded", torch.int64, actions=num_actions, masked=False
    )
    safe_actions = actions.clamp(0, num_actions - 1)
    mask = torch.zeros(logits.shape, dtype=torch.bool)
    mask.scatter_(-1, safe_actions.unsqueeze(-1), True)
    out, grad = _check_logprob(logits, actions, mask, kwargs, torch.float32)
    assert torch.equal(out, torch.zeros_like(out))  # log 1 on every step
    assert torch.equal(grad, torch.zeros_like(grad))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_logprob_extreme_logits(dtype):
    logits, actions, mask, kwargs = _logits_case(dtype, "packed", torch.int64, actions=33)
    gen = torch.Generator().manual_seed(3)
    signs = torch.randint(0, 2, logits.shape, generator=gen).to(dtype) * 2 - 1
    extreme = torch.where(torch.isnan(logits), logits, 1e4 * signs)
    # float32 carries log-probabilities of size 1e4 to about 1e-3 absolute.
    tol = (1e-6, 1e-2) if dtype == torch.float32 else (1e-12, 1e-9)
    out, grad = _check_logprob(extreme, actions, mask, kwargs, dtype, sum_tol=tol)
    assert torch.isfinite(out).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("layout", ["padded", "packed"])
def test_logprob_non_contiguous(layout):
    logits, actions, mask, kwargs = _logits_case(torch.float32, layout, torch.int64, actions=7)
    strided_logits = logits.transpose(-1, 0).contiguous().transpose(-1, 0)
    strided_actions = torch.stack([actions, actions], dim=-1)[..., 1]
    strided_mask = mask.transpose(-1, 0).contiguous().transpose(-1, 0)
    assert not strided_logits.is_contiguous() and not strided_actions.is_contiguous()
    _check_logprob(strided_logits, strided_actions, strided_mask, kwargs, torch.float32)


def test_logprob_empty_segments():
    logits = torch.randn(3, 4, 5)
    actions = torch.randint(0, 5, (3, 4))
    _check_logprob(logits, actions, None, {"lengths": torch.tensor([0, 4, 0])}, torch.float32)
    offsets = torch.tensor([0, 0, 0], dtype=torch.int32)
    _check_logprob(logits[0], actions[0], None, {"offsets": offsets}, torch.float32)


@settings(max_examples=12, deadline=None)
@given(
    batch=st.sampled_from([1, 2, 3, 1000]),
    steps=st.integers(1, 512),
    num_actions=st.sampled_from([1, 2, 5, 64, 1000]),
    layout=st.sampled_from(["padded", "packed"]),
    dtype=st.sampled_from([torch.float32, torch.float64, torch.bfloat16]),
    seed=st.integers(0, 2**16),
)
def test_logprob_hypothesis_shapes(batch, steps, num_actions, layout, dtype, seed):
    steps = max(1, min(steps, 200_000 // (batch * num_actions)))  # keep each case small
    logits, actions, mask, kwargs = _logits_case(
        dtype, layout, torch.int64, batch=batch, steps=steps, actions=num_actions, seed=seed
    )
    scale = float(max(1, steps))  # sums of `steps` log-probs
    rtol, atol = SUM_TOL[dtype]
    _check_logprob(logits, actions, mask, kwargs, dtype, sum_tol=(rtol * 10, atol * scale * 10))


@settings(max_examples=15, deadline=None)
@given(
    batch=st.sampled_from([1, 2, 3, 1000]),
    steps=st.integers(1, 512),
    layout=st.sampled_from(["padded", "packed"]),
    dtype=st.sampled_from(list(FLOAT_DTYPES)),
    seed=st.integers(0, 2**16),
)
def test_segment_sum_hypothesis_shapes(batch, steps, layout, dtype, seed):
    values, kwargs = _segment_case(dtype, layout, torch.int64, batch=batch, steps=steps, seed=seed)
    x = values.clone().requires_grad_(True)
    out = ops.segment_sum(x, **kwargs)
    expected = reference.segment_sum(values, **kwargs)
    rtol, atol = SUM_TOL[dtype]
    assert_close(out, expected, (rtol, atol * steps))
    out.sum().backward()
    counts = reference.segment_sum(torch.ones_like(values, dtype=torch.float64), **kwargs)
    assert torch.equal(x.grad.double().sum(), counts.sum())


def test_logprob_gradcheck_float64():
    logits, actions, mask, kwargs = _logits_case(torch.float64, "padded", torch.int64, 3, 4, 5)
    logits = torch.nan_to_num(logits).requires_grad_(True)

    def fn(x):
        return gf.logprob_from_logits(x, actions.clamp_min(0), action_mask=mask, **kwargs)

    actions_safe = actions.clamp_min(0)
    mask = mask | torch.nn.functional.one_hot(actions_safe, 5).bool()
    assert torch.autograd.gradcheck(fn, (logits,))


def test_logprob_opcheck():
    logits, actions, mask, kwargs = _logits_case(torch.float32, "padded", torch.int64, 3, 4, 5)
    logits = torch.nan_to_num(logits).requires_grad_(True)
    actions = actions.clamp_min(0)
    mask = mask | torch.nn.functional.one_hot(actions, 5).bool()
    args = (logits, actions, mask, kwargs["lengths"], None)
    torch.library.opcheck(_native("logprob_from_logits"), args)
    logprob, step_lse = _native("logprob_from_logits")(*args)
    torch.library.opcheck(
        _native("logprob_from_logits_backward"),
        (torch.randn(3), logits.detach(), actions, mask, step_lse, kwargs["lengths"], None),
    )
    packed_logits = torch.randn(10, 4, dtype=torch.float64, requires_grad=True)
    packed_args = (packed_logits, torch.randint(0, 4, (10,)), None, None, torch.tensor([1, 5, 9]))
    torch.library.opcheck(_native("logprob_from_logits"), packed_args)


def test_logprob_errors_name_the_argument():
    logits = torch.randn(2, 3, 4)
    lengths = torch.tensor([3, 2])
    actions = torch.tensor([[0, 1, 4], [0, 1, 9]])  # 9 lies in the padding: never read
    with pytest.raises(ValueError, match=r"actions: expected values in \[0, A=4\).*got 4"):
        _native("logprob_from_logits")(logits, actions, None, lengths, None)
    actions = torch.tensor([[0, 1, 2], [0, 1, 9]])
    mask = torch.ones(2, 3, 4, dtype=torch.bool)
    mask[1, 1, 1] = False
    with pytest.raises(ValueError, match="actions: the chosen action 1 .* masked out"):
        _native("logprob_from_logits")(logits, actions, mask, lengths, None)
    mask[1, 1, 1] = True
    mask[1, 2] = False  # the padding step may be fully masked
    _native("logprob_from_logits")(logits, actions, mask, lengths, None)


# ----------------------------------------------------------------------------------------
# determinism
# ----------------------------------------------------------------------------------------


def test_bitwise_deterministic_across_runs_and_threads():
    logits, actions, mask, kwargs = _logits_case(
        torch.float32, "packed", torch.int64, batch=300, steps=40, actions=37
    )
    values, vkw = _segment_case(torch.float32, "padded", torch.int32, batch=500, steps=300)

    def run():
        x = logits.clone().requires_grad_(True)
        out = ops.logprob_from_logits(x, actions, mask, **kwargs)
        (grad,) = torch.autograd.grad(out, x, torch.ones_like(out))
        return out, grad, ops.segment_sum(values, **vkw)

    first = run()
    with one_thread():
        single = run()
    again = run()
    for a, b, c in zip(first, single, again, strict=True):
        assert torch.equal(a, c)
        assert torch.equal(a, b)
