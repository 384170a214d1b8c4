"""The pure-PyTorch oracle against plain Python loops, and its own gradients."""

from __future__ import annotations

import math

import pytest
import torch

import gfn_fast as gf
from gfn_fast import reference

F64 = torch.float64


def loop_logprob(logits, actions, mask, lengths):
    out = []
    for b in range(logits.shape[0]):
        total = 0.0
        for t in range(int(lengths[b])):
            row = logits[b, t].double()
            if mask is not None:
                row = row.masked_fill(~mask[b, t], -math.inf)
            total += float(row[actions[b, t]] - torch.logsumexp(row, 0))
        out.append(total)
    return torch.tensor(out, dtype=F64)


def random_logits(batch=5, steps=6, actions=4, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logits = 3 * torch.randn(batch, steps, actions, generator=gen, dtype=F64)
    mask = torch.rand(batch, steps, actions, generator=gen) < 0.7
    chosen = torch.randint(actions, (batch, steps), generator=gen)
    mask.scatter_(2, chosen.unsqueeze(2), True)
    lengths = torch.randint(0, steps + 1, (batch,), generator=gen)
    return logits, chosen, mask, lengths


def test_segment_sum_matches_loops():
    values = torch.randn(4, 7, dtype=F64)
    lengths = torch.tensor([0, 7, 3, 1])
    want = torch.tensor(
        [float(values[b, : int(n)].sum()) for b, n in enumerate(lengths)], dtype=F64
    )
    torch.testing.assert_close(reference.segment_sum(values, lengths), want)
    flat = torch.randn(10, dtype=F64)
    offsets = torch.tensor([1, 1, 4, 9])
    want = torch.stack([flat[1:1].sum(), flat[1:4].sum(), flat[4:9].sum()])
    torch.testing.assert_close(reference.segment_sum(flat, offsets=offsets), want)


def test_segment_sum_accumulates_low_precision_in_float32():
    values = torch.full((1, 4096), 0.1, dtype=torch.bfloat16)
    out = reference.segment_sum(values)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, values.float().sum(1))


def test_logprob_from_logits_matches_loops_padded_and_packed():
    logits, actions, mask, lengths = random_logits()
    want = loop_logprob(logits, actions, mask, lengths)
    got = gf.logprob_from_logits(logits, actions, lengths=lengths, action_mask=mask)
    torch.testing.assert_close(got, want)
    inside = torch.arange(logits.shape[1]) < lengths[:, None]
    offsets = torch.cat([torch.zeros(1, dtype=torch.int64), lengths.cumsum(0)])
    packed = gf.logprob_from_logits(
        logits[inside], actions[inside], offsets=offsets, action_mask=mask[inside]
    )
    torch.testing.assert_close(packed, want)


def test_logprob_gradient_is_onehot_minus_softmax():
    logits, actions, mask, lengths = random_logits(seed=1)
    logits.requires_grad_()
    out = reference.logprob_from_logits(logits, actions, mask, lengths)
    weights = torch.randn_like(out)
    (grad,) = torch.autograd.grad((weights * out).sum(), logits)
    softmax = torch.softmax(logits.detach().masked_fill(~mask, -math.inf), -1)
    onehot = torch.nn.functional.one_hot(actions, logits.shape[-1]).to(F64)
    inside = (torch.arange(logits.shape[1]) < lengths[:, None]).unsqueeze(-1)
    want = torch.where(inside, weights[:, None, None] * (onehot - softmax), 0.0)
    torch.testing.assert_close(grad, want)


def test_reference_gradcheck_float64():
    logits, actions, mask, lengths = random_logits(batch=3, steps=3, actions=3, seed=2)
    logits.requires_grad_()
    assert torch.autograd.gradcheck(
        lambda x: reference.logprob_from_logits(x, actions, mask, lengths), (logits,)
    )
    values = torch.randn(3, 4, dtype=F64, requires_grad=True)
    assert torch.autograd.gradcheck(
        lambda v: reference.segment_sum(v, torch.tensor([4, 0, 2])), (values,)
    )


def test_padding_garbage_is_never_read():
    logits, actions, mask, lengths = random_logits(seed=3)
    inside = torch.arange(logits.shape[1]) < lengths[:, None]
    dirty_actions = torch.where(inside, actions, torch.full_like(actions, -7))
    dirty_logits = torch.where(inside[..., None], logits, torch.full_like(logits, math.nan))
    got = gf.logprob_from_logits(dirty_logits, dirty_actions, lengths=lengths, action_mask=mask)
    torch.testing.assert_close(got, loop_logprob(logits, actions, mask, lengths))


def test_masked_or_out_of_range_action_raises():
    logits, actions, mask, lengths = random_logits(seed=4)
    lengths[:] = logits.shape[1]
    bad_mask = mask.clone()
    bad_mask[0, 0, actions[0, 0]] = False
    with pytest.raises(ValueError, match="actions: .*masked out by action_mask"):
        gf.logprob_from_logits(logits, actions, lengths=lengths, action_mask=bad_mask)
    bad_actions = actions.clone()
    bad_actions[1, 2] = logits.shape[-1]
    with pytest.raises(ValueError, match=r"actions: expected values in \[0, A=4\)"):
        gf.logprob_from_logits(logits, bad_actions, lengths=lengths)


def test_logprob_argument_errors():
    logits, actions, mask, lengths = random_logits()
    with pytest.raises(ValueError, match="actions: expected shape"):
        gf.logprob_from_logits(logits, actions[:, :2], lengths=lengths)
    with pytest.raises(ValueError, match="action_mask: expected a bool tensor"):
        gf.logprob_from_logits(logits, actions, lengths=lengths, action_mask=mask.float())
    with pytest.raises(ValueError, match="logits: expected 3 dims"):
        gf.logprob_from_logits(logits[0], actions[0], lengths=lengths)
