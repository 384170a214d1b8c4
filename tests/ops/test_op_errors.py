"""The op-level argument errors, on every device: one table of bad inputs for every op, each
with the exact message that every device must raise (csrc/common/op_checks.h), and the index
values that no device may raise on (the kernels clamp them).

Tensors on another device than the op's are not in the table: the dispatcher picks the
kernel from the devices of all the tensors (a meta tensor runs the shared fake of
gfn_fast/ops.py), so no device's kernel sees them.
"""

from __future__ import annotations

import pytest
import torch

PF = "a float32, float64, bfloat16 or float16 tensor"
INDEX = "an int32 or int64 tensor"
FLOAT_DTYPE = "float32, float64, bfloat16 or float16"
OBJECTIVES = "tb, vargrad, reverse_kl, forward_kl, renyi, tsallis"


class Make:
    """Tensors on the device under test."""

    def __init__(self, device):
        self.on = device.torch_device

    def f(self, *shape, dtype=torch.float32):
        return torch.zeros(shape, dtype=dtype, device=self.on)

    def i(self, *values, dtype=torch.int64):
        return torch.tensor(values, dtype=dtype, device=self.on)

    def ones(self, *shape, dtype=torch.bool):
        return torch.ones(shape, dtype=dtype, device=self.on)


def _segment_sum(t, values=None, lengths=None, offsets=None):
    return (t.f(2, 3) if values is None else values, lengths, offsets)


def _segment_sum_backward(t, grad=None, lengths=None, offsets=None, shape=(2, 3), dtype=None):
    return (t.f(2) if grad is None else grad, lengths, offsets, list(shape), dtype or torch.float32)


def _logprob(t, logits=None, actions=None, mask=None, lengths=None, offsets=None):
    logits = t.f(2, 3, 4) if logits is None else logits
    actions = t.i(*[0] * 6).reshape(2, 3) if actions is None else actions
    return (logits, actions, mask, lengths, offsets)


def _logprob_backward(t, grad=None, step_lse=None, **forward):
    logits, actions, mask, lengths, offsets = _logprob(t, **forward)
    grad = t.f(2) if grad is None else grad
    step_lse = t.f(2, 3, dtype=torch.float64) if step_lse is None else step_lse
    return (grad, logits, actions, mask, step_lse, lengths, offsets)


def _coefficients(
    t,
    log_pf=None,
    log_pb=None,
    log_reward=None,
    log_behavior=None,
    log_z=None,
    objective="renyi",
    control_variate="loo",
    alpha=0.5,
    paper=False,
):
    log_pf = t.f(4) if log_pf is None else log_pf
    log_reward = t.f(4) if log_reward is None else log_reward
    settings = (objective, control_variate, alpha, paper)
    return (log_pf, log_pb, log_reward, log_behavior, log_z, *settings)


def _fused(
    t,
    step_log_pf=None,
    step_log_pb=None,
    log_reward=None,
    log_behavior=None,
    log_z=None,
    lengths=None,
    offsets=None,
    objective="renyi",
    control_variate="loo",
    alpha=0.5,
    paper=False,
):
    step_log_pf = t.f(2, 3) if step_log_pf is None else step_log_pf
    log_reward = t.f(2) if log_reward is None else log_reward
    settings = (objective, control_variate, alpha, paper)
    return (step_log_pf, step_log_pb, log_reward, log_behavior, log_z, lengths, offsets, *settings)


def _fused_backward(
    t,
    grad_loss=None,
    c=None,
    d=None,
    e=None,
    lengths=None,
    offsets=None,
    shape=(2, 3),
    pf_dtype=torch.float32,
    pb_dtype=torch.float32,
):
    grad_loss = t.f() if grad_loss is None else grad_loss
    c = t.f(2) if c is None else c
    d = t.f(2) if d is None else d
    e = t.f() if e is None else e
    return (grad_loss, c, d, e, lengths, offsets, list(shape), pf_dtype, pb_dtype)


ARGS = {
    "segment_sum": _segment_sum,
    "segment_sum_backward": _segment_sum_backward,
    "logprob_from_logits": _logprob,
    "logprob_from_logits_backward": _logprob_backward,
    "batch_coefficients": _coefficients,
    "divergence_loss_fused": _fused,
    "divergence_loss_backward": _fused_backward,
}

# (op, the bad arguments over the op's valid defaults, the message after "op: ").
CASES = [
    # segment_sum
    (
        "segment_sum",
        dict(values=lambda t: t.f(2, 3, dtype=torch.int64)),
        f"values: expected {PF}, got Long",
    ),
    (
        "segment_sum",
        dict(values=lambda t: t.f(2, 3, dtype=torch.bool)),
        f"values: expected {PF}, got Bool",
    ),
    (
        "segment_sum",
        dict(values=lambda t: t.f(2, 3, 4)),
        "values: expected per-step shape [B, T] (padded) or pass offsets, got [2, 3, 4]",
    ),
    (
        "segment_sum",
        dict(lengths=lambda t: t.i(1, 2), offsets=lambda t: t.i(0, 2, 3)),
        "lengths and offsets: expected at most one of them, got both",
    ),
    ("segment_sum", dict(lengths=lambda t: t.f(2)), f"lengths: expected {INDEX}, got Float"),
    (
        "segment_sum",
        dict(lengths=lambda t: t.i(1, 2, 3)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "segment_sum",
        dict(lengths=lambda t: t.i(1, 2).reshape(2, 1)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [2, 1]",
    ),
    (
        "segment_sum",
        dict(values=lambda t: t.f(5), offsets=lambda t: t.f(3)),
        f"offsets: expected {INDEX}, got Float",
    ),
    (
        "segment_sum",
        dict(values=lambda t: t.f(5), offsets=lambda t: t.i(0, 2, 5).reshape(1, 3)),
        "offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape [1, 3]",
    ),
    (
        "segment_sum",
        dict(values=lambda t: t.f(5), offsets=lambda t: t.i(0)[:0]),
        "offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape [0]",
    ),
    (
        "segment_sum",
        dict(offsets=lambda t: t.i(0, 2, 5)),
        "values: with offsets (packed layout) expected per-step shape [N], got [2, 3]",
    ),
    # segment_sum_backward
    (
        "segment_sum_backward",
        dict(grad=lambda t: t.f(2, dtype=torch.int32)),
        f"grad: expected {PF}, got Int",
    ),
    (
        "segment_sum_backward",
        dict(dtype=lambda t: torch.int64),
        f"dtype: expected {FLOAT_DTYPE}, got Long",
    ),
    (
        "segment_sum_backward",
        dict(shape=lambda t: (2, 3, 4)),
        "shape: expected per-step shape [B, T] (padded) or pass offsets, got [2, 3, 4]",
    ),
    (
        "segment_sum_backward",
        dict(grad=lambda t: t.f(3)),
        "grad: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "segment_sum_backward",
        dict(grad=lambda t: t.f(), shape=lambda t: (1, 3)),
        "grad: expected a 1-D tensor of 1 elements, got shape []",
    ),
    (
        "segment_sum_backward",
        dict(lengths=lambda t: t.i(1)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [1]",
    ),
    (
        "segment_sum_backward",
        dict(shape=lambda t: (5,), offsets=lambda t: t.i(0, 2, 4, 5)),
        "grad: expected a 1-D tensor of 3 elements, got shape [2]",
    ),
    (
        "segment_sum_backward",
        dict(offsets=lambda t: t.i(0, 2, 5)),
        "shape: with offsets (packed layout) expected per-step shape [N], got [2, 3]",
    ),
    # logprob_from_logits
    (
        "logprob_from_logits",
        dict(logits=lambda t: t.f(2, 3, 4, dtype=torch.int64)),
        f"logits: expected {PF}, got Long",
    ),
    (
        "logprob_from_logits",
        dict(logits=lambda t: t.f(3), actions=lambda t: t.i(0, 0, 0)),
        "logits: expected [B, T, A] (padded) or [N, A] (packed), got shape [3]",
    ),
    (
        "logprob_from_logits",
        dict(actions=lambda t: t.f(2, 3)),
        f"actions: expected {INDEX}, got Float",
    ),
    (
        "logprob_from_logits",
        dict(logits=lambda t: t.f(2, 3), actions=lambda t: t.i(0, 0, 0)),
        "actions: expected the shape of logits without its last axis [2], got [3]",
    ),
    (
        "logprob_from_logits",
        dict(actions=lambda t: t.i(0, 0)),
        "actions: expected the shape of logits without its last axis [2, 3], got [2]",
    ),
    (
        "logprob_from_logits",
        dict(logits=lambda t: t.f(2, 3, 0)),
        "logits: expected at least one action, got shape [2, 3, 0]",
    ),
    (
        "logprob_from_logits",
        dict(mask=lambda t: t.f(2, 3, 4)),
        "action_mask: expected a bool tensor, got Float",
    ),
    (
        "logprob_from_logits",
        dict(mask=lambda t: t.ones(2, 3, 5)),
        "action_mask: expected the shape of logits [2, 3, 4], got [2, 3, 5]",
    ),
    (
        "logprob_from_logits",
        dict(lengths=lambda t: t.i(3, 3, 3)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "logprob_from_logits",
        dict(lengths=lambda t: t.f(2, dtype=torch.float64)),
        f"lengths: expected {INDEX}, got Double",
    ),
    (
        "logprob_from_logits",
        dict(offsets=lambda t: t.i(0, 3, 6)),
        "actions: with offsets (packed layout) expected per-step shape [N], got [2, 3]",
    ),
    (
        "logprob_from_logits",
        dict(logits=lambda t: t.f(5, 4), actions=lambda t: t.i(0, 0, 0, 0, 0)),
        "actions: expected per-step shape [B, T] (padded) or pass offsets, got [5]",
    ),
    (
        "logprob_from_logits",
        dict(
            logits=lambda t: t.f(5, 4),
            actions=lambda t: t.i(0, 0, 0, 0, 0),
            offsets=lambda t: t.i(0, 2, 5).reshape(3, 1),
        ),
        "offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape [3, 1]",
    ),
    (
        "logprob_from_logits",
        dict(lengths=lambda t: t.i(1, 2), offsets=lambda t: t.i(0, 2, 5)),
        "lengths and offsets: expected at most one of them, got both",
    ),
    # logprob_from_logits_backward
    (
        "logprob_from_logits_backward",
        dict(logits=lambda t: t.f(2, 3, 4, dtype=torch.int64)),
        f"logits: expected {PF}, got Long",
    ),
    (
        "logprob_from_logits_backward",
        dict(actions=lambda t: t.i(0, 0, 0)),
        "actions: expected the shape of logits without its last axis [2, 3], got [3]",
    ),
    (
        "logprob_from_logits_backward",
        dict(grad=lambda t: t.f(2, dtype=torch.int64)),
        f"grad: expected {PF}, got Long",
    ),
    (
        "logprob_from_logits_backward",
        dict(grad=lambda t: t.f(3)),
        "grad: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "logprob_from_logits_backward",
        dict(grad=lambda t: t.f(2, 1)),
        "grad: expected a 1-D tensor of 2 elements, got shape [2, 1]",
    ),
    (
        "logprob_from_logits_backward",
        dict(step_lse=lambda t: t.f(2, dtype=torch.float64)),
        "step_lse: expected the shape of actions [2, 3], got [2]",
    ),
    (
        "logprob_from_logits_backward",
        dict(mask=lambda t: t.ones(2, 3)),
        "action_mask: expected the shape of logits [2, 3, 4], got [2, 3]",
    ),
    (
        "logprob_from_logits_backward",
        dict(lengths=lambda t: t.i(1, 2, 3)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    # batch_coefficients
    (
        "batch_coefficients",
        dict(log_pf=lambda t: t.f(4, dtype=torch.int64)),
        f"log_pf: expected {PF}, got Long",
    ),
    (
        "batch_coefficients",
        dict(log_pf=lambda t: t.f(2, 2)),
        "log_pf: expected a 1-D tensor [K], got shape [2, 2]",
    ),
    (
        "batch_coefficients",
        dict(objective="kl"),
        f"objective: expected one of {OBJECTIVES}, got 'kl'",
    ),
    (
        "batch_coefficients",
        dict(control_variate="mean"),
        "control_variate: expected one of loo, none, got 'mean'",
    ),
    (
        "batch_coefficients",
        dict(alpha=float("inf")),
        "alpha: expected a finite real number, got inf",
    ),
    (
        "batch_coefficients",
        dict(alpha=-0.5, paper=True),
        'alpha: normalization="paper" needs alpha > 0, got alpha=-0.5',
    ),
    (
        "batch_coefficients",
        dict(objective="tb", control_variate="none"),
        "log_z: tb needs a (learned) log Z, got None",
    ),
    (
        "batch_coefficients",
        dict(objective="tb", log_z=lambda t: t.f(), log_behavior=lambda t: t.f(4)),
        'control_variate: "loo" for tb is unbiased only on-policy, but the batch is off-policy '
        '(log_behavior given); use control_variate="none"',
    ),
    (
        "batch_coefficients",
        dict(log_pf=lambda t: t.f(0), log_reward=lambda t: t.f(0)),
        "log_pf: expected at least 1 trajectory, got K=0",
    ),
    (
        "batch_coefficients",
        dict(log_pf=lambda t: t.f(1), log_reward=lambda t: t.f(1)),
        "log_pf: leave-one-out needs at least 2 trajectories, got K=1",
    ),
    (
        "batch_coefficients",
        dict(log_reward=lambda t: t.f(4, dtype=torch.int32)),
        f"log_reward: expected {PF}, got Int",
    ),
    (
        "batch_coefficients",
        dict(log_reward=lambda t: t.f(3)),
        "log_reward: expected a 1-D tensor of 4 elements, got shape [3]",
    ),
    (
        "batch_coefficients",
        dict(log_behavior=lambda t: t.f(4, dtype=torch.int64)),
        f"log_behavior: expected {PF}, got Long",
    ),
    (
        "batch_coefficients",
        dict(log_behavior=lambda t: t.f(4, 1)),
        "log_behavior: expected a 1-D tensor of 4 elements, got shape [4, 1]",
    ),
    (
        "batch_coefficients",
        dict(log_z=lambda t: t.f(dtype=torch.int64)),
        f"log_z: expected {PF}, got Long",
    ),
    (
        "batch_coefficients",
        dict(log_z=lambda t: t.f(2)),
        "log_z: expected 1 element(s) in at most one dimension, got shape [2]",
    ),
    (
        "batch_coefficients",
        dict(log_pb=lambda t: t.f(4, dtype=torch.bool)),
        f"log_pb: expected {PF}, got Bool",
    ),
    (
        "batch_coefficients",
        dict(log_pb=lambda t: t.f(5)),
        "log_pb: expected a 1-D tensor of 4 elements, got shape [5]",
    ),
    # divergence_loss_fused
    (
        "divergence_loss_fused",
        dict(step_log_pf=lambda t: t.f(2, 3, dtype=torch.int64)),
        f"step_log_pf: expected {PF}, got Long",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pf=lambda t: t.f(2, 3, 1)),
        "step_log_pf: expected per-step shape [B, T] (padded) or pass offsets, got [2, 3, 1]",
    ),
    (
        "divergence_loss_fused",
        dict(lengths=lambda t: t.i(1, 2, 3)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pf=lambda t: t.f(5), offsets=lambda t: t.i(0, 2, 5).reshape(1, 3)),
        "offsets: expected a 1-D tensor [B + 1] with B >= 0, got shape [1, 3]",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pf=lambda t: t.f(5), offsets=lambda t: t.f(3)),
        f"offsets: expected {INDEX}, got Float",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pb=lambda t: t.f(2, 3, dtype=torch.int64)),
        f"step_log_pb: expected {PF}, got Long",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pb=lambda t: t.f(2, 4)),
        "step_log_pb: expected the shape of step_log_pf [2, 3], got [2, 4]",
    ),
    (
        "divergence_loss_fused",
        dict(objective="kl"),
        f"objective: expected one of {OBJECTIVES}, got 'kl'",
    ),
    (
        "divergence_loss_fused",
        dict(alpha=float("nan")),
        "alpha: expected a finite real number, got nan",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pf=lambda t: t.f(0, 3), log_reward=lambda t: t.f(0)),
        "log_pf: expected at least 1 trajectory, got K=0",
    ),
    (
        "divergence_loss_fused",
        dict(log_reward=lambda t: t.f(3)),
        "log_reward: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "divergence_loss_fused",
        dict(step_log_pf=lambda t: t.f(5), offsets=lambda t: t.i(0, 2, 4, 5)),
        "log_reward: expected a 1-D tensor of 3 elements, got shape [2]",
    ),
    (
        "divergence_loss_fused",
        dict(log_z=lambda t: t.f(1, 2)),
        "log_z: expected 1 element(s) in at most one dimension, got shape [1, 2]",
    ),
    # divergence_loss_backward
    (
        "divergence_loss_backward",
        dict(grad_loss=lambda t: t.f(dtype=torch.int64)),
        f"grad_loss: expected {PF}, got Long",
    ),
    (
        "divergence_loss_backward",
        dict(c=lambda t: t.f(2, dtype=torch.bfloat16)),
        "c: expected a float32 or float64 tensor, got BFloat16",
    ),
    (
        "divergence_loss_backward",
        dict(d=lambda t: t.f(2, dtype=torch.float16)),
        "d: expected a float32 or float64 tensor, got Half",
    ),
    (
        "divergence_loss_backward",
        dict(e=lambda t: t.f(dtype=torch.int64)),
        "e: expected a float32 or float64 tensor, got Long",
    ),
    (
        "divergence_loss_backward",
        dict(pf_dtype=torch.int64),
        f"pf_dtype: expected {FLOAT_DTYPE}, got Long",
    ),
    (
        "divergence_loss_backward",
        dict(pb_dtype=torch.bool),
        f"pb_dtype: expected {FLOAT_DTYPE}, got Bool",
    ),
    (
        "divergence_loss_backward",
        dict(shape=(2, 3, 4)),
        "shape: expected per-step shape [B, T] (padded) or pass offsets, got [2, 3, 4]",
    ),
    (
        "divergence_loss_backward",
        dict(lengths=lambda t: t.i(1, 2, 3)),
        "lengths: expected a 1-D tensor of 2 elements, got shape [3]",
    ),
    (
        "divergence_loss_backward",
        dict(grad_loss=lambda t: t.f(2)),
        "grad_loss: expected 1 element(s) in at most one dimension, got shape [2]",
    ),
    (
        "divergence_loss_backward",
        dict(c=lambda t: t.f(3)),
        "c: expected 2 element(s) in at most one dimension, got shape [3]",
    ),
    (
        "divergence_loss_backward",
        dict(d=lambda t: t.f(2, 1)),
        "d: expected 2 element(s) in at most one dimension, got shape [2, 1]",
    ),
    (
        "divergence_loss_backward",
        dict(e=lambda t: t.f(2)),
        "e: expected 1 element(s) in at most one dimension, got shape [2]",
    ),
    (
        "divergence_loss_backward",
        dict(shape=(5,), offsets=lambda t: t.i(0, 5)),
        "c: expected 1 element(s) in at most one dimension, got shape [2]",
    ),
]


def _call(device, op, bad):
    t = Make(device)
    overrides = {name: value(t) if callable(value) else value for name, value in bad.items()}
    return device.op(op)(*ARGS[op](t, **overrides))


def _id(case):
    op, bad, _ = case
    return f"{op}-{'-'.join(bad)}"


@pytest.mark.parametrize("case", CASES, ids=[_id(case) for case in CASES])
def test_bad_arguments_raise_the_same_value_error(device, case):
    op, bad, message = case
    with pytest.raises(ValueError) as raised:
        _call(device, op, bad)
    assert str(raised.value) == f"{op}: {message}"


def test_every_op_is_in_the_table():
    assert {op for op, _, _ in CASES} == set(ARGS)


# Index values out of range: clamped by every device's kernels, never an error.
CLAMPED = [
    ("segment_sum", dict(lengths=lambda t: t.i(7, -1))),
    ("segment_sum", dict(values=lambda t: t.f(5), offsets=lambda t: t.i(3, 1, 9))),
    ("segment_sum_backward", dict(lengths=lambda t: t.i(-2, 4))),
    ("segment_sum_backward", dict(shape=(5,), offsets=lambda t: t.i(-1, 6, 2))),
    ("logprob_from_logits", dict(actions=lambda t: t.i(-1, 4, 9, 0, 3, -7).reshape(2, 3))),
    ("logprob_from_logits", dict(lengths=lambda t: t.i(9, -3))),
    ("logprob_from_logits_backward", dict(actions=lambda t: t.i(5, 4, 9, 0, 3, -7).reshape(2, 3))),
    ("divergence_loss_fused", dict(lengths=lambda t: t.i(4, -1))),
    ("divergence_loss_backward", dict(shape=(4,), offsets=lambda t: t.i(5, 0, 2))),
]


@pytest.mark.parametrize("case", CLAMPED, ids=[f"{op}-{'-'.join(bad)}" for op, bad in CLAMPED])
def test_index_values_are_clamped_not_checked(device, case):
    op, bad = case
    _call(device, op, bad)
