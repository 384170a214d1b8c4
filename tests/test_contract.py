"""The public functions' contract for bad input, on every backend: the same exception type and
the same message, naming the function and the argument, whatever implementation runs.

Backends: "reference" (pure PyTorch), "cpu" (native) and "cuda_emulated" (the CUDA binding and
kernels), each on CPU tensors; index values are checked there with validate=False too (it
costs no host sync).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import gfn_fast as gf
from gfn_fast import _backend
from tests.helpers import backend_fixture

BACKENDS = [
    "reference",
    pytest.param(
        "cpu",
        marks=pytest.mark.skipif(not _backend.native_available("cpu"), reason="no native CPU"),
    ),
    pytest.param(
        "cuda_emulated",
        marks=pytest.mark.skipif(
            not _backend.native_available("cuda_emulated"), reason="cuda_emulated not built"
        ),
    ),
]


backend = backend_fixture(BACKENDS)


def logits_case():
    logits = torch.randn(3, 4, 5)
    actions = torch.randint(0, 5, (3, 4))
    lengths = torch.tensor([4, 0, 2])
    return logits, actions, lengths


def loss_case(k=6, steps=4):
    log_pf = -torch.rand(k, steps)
    lengths = torch.randint(0, steps + 1, (k,))
    return log_pf, -torch.rand(k, steps), torch.randn(k), lengths


# (label, call) pairs: every call raises the same error on every backend.
def bad_calls():
    logits, actions, lengths = logits_case()
    log_pf, log_pb, log_reward, step_lengths = loss_case()
    wild = actions.clone()
    wild[0, 1] = 5
    negative = actions.clone()
    negative[2, 0] = -1
    mask = torch.ones_like(logits, dtype=torch.bool)
    mask[0, 0, actions[0, 0]] = False
    padding_only = actions.clone()
    padding_only[1, 3] = 99  # outside every segment: fine
    calls = {
        "action out of range": lambda v: gf.logprob_from_logits(
            logits, wild, lengths=lengths, validate=v
        ),
        "negative action": lambda v: gf.logprob_from_logits(
            logits, negative, lengths=lengths, validate=v
        ),
        "masked chosen action": lambda v: gf.logprob_from_logits(
            logits, actions, lengths=lengths, action_mask=mask, validate=v
        ),
        "length above T": lambda v: gf.logprob_from_logits(
            logits, actions, lengths=torch.tensor([4, 5, 0]), validate=v
        ),
        "negative length": lambda v: gf.segment_logprob(
            log_pf, lengths=-step_lengths - 1, validate=v
        ),
        "decreasing offsets": lambda v: gf.segment_logprob(
            torch.randn(9), offsets=torch.tensor([0, 5, 3, 9]), validate=v
        ),
        "offsets past N": lambda v: gf.divergence_loss(
            "renyi",
            log_pf=torch.randn(9),
            log_reward=torch.randn(2),
            offsets=torch.tensor([0, 5, 10]),
            validate=v,
        ),
        "no actions": lambda v: gf.logprob_from_logits(
            logits[..., :0], actions, lengths=lengths, validate=v
        ),
    }
    return calls, padding_only


EXPECTED = {
    "action out of range": r"logprob_from_logits: actions: expected values in \[0, A=5\)",
    "negative action": r"logprob_from_logits: actions: expected values in \[0, A=5\)",
    "masked chosen action": r"logprob_from_logits: actions: 1 chosen action\(s\) are masked out",
    "length above T": r"logprob_from_logits: lengths: expected values in \[0, T=4\]",
    "negative length": r"segment_logprob: lengths: expected values in \[0, T=4\]",
    "decreasing offsets": r"segment_logprob: offsets: expected a non-decreasing sequence",
    "offsets past N": (
        r"divergence_loss: offsets: expected offsets\[0\] >= 0 and offsets\[-1\] <= N=9"
    ),
    "no actions": r"logprob_from_logits: logits: expected at least one action",
}


@pytest.mark.parametrize("label", sorted(EXPECTED))
@pytest.mark.parametrize("validate", [True, False])
def test_bad_index_values_raise_the_same_error(backend, label, validate):
    calls, _ = bad_calls()
    with pytest.raises(ValueError, match=EXPECTED[label]):
        calls[label](validate)


def test_padding_may_hold_anything(backend):
    logits, _, lengths = logits_case()
    _, padding_only = bad_calls()
    logits[1] = float("nan")  # row 1 has length 0
    out = gf.logprob_from_logits(logits, padding_only, lengths=lengths)
    assert torch.isfinite(out).all()
    assert float(out[1]) == 0.0


def test_device_mismatch_names_the_argument(backend):
    logits, actions, lengths = logits_case()
    meta = actions.to("meta")
    with pytest.raises(ValueError, match="logprob_from_logits: actions: expected a tensor with"):
        gf.logprob_from_logits(logits, meta, lengths=lengths)
    with pytest.raises(ValueError, match="logprob_from_logits: action_mask: expected a tensor"):
        gf.logprob_from_logits(
            logits,
            actions,
            lengths=lengths,
            action_mask=torch.ones(3, 4, 5, dtype=torch.bool, device="meta"),
        )
    with pytest.raises(ValueError, match="segment_logprob: values: expected a dense"):
        gf.segment_logprob(torch.randn(3, 4).to_sparse())
    log_pf, log_pb, log_reward, step_lengths = loss_case()
    with pytest.raises(ValueError, match="divergence_loss: log_reward: expected a tensor with"):
        gf.divergence_loss("renyi", log_pf=log_pf.sum(1), log_reward=log_reward.to("meta"))


def test_wrong_types_name_the_argument(backend):
    logits, actions, lengths = logits_case()
    with pytest.raises(
        TypeError, match="logprob_from_logits: action_mask: expected a torch.Tensor"
    ):
        gf.logprob_from_logits(logits, actions, lengths=lengths, action_mask=[[True] * 5])
    log_pf = torch.randn(6)
    log_reward = torch.randn(6)
    with pytest.raises(TypeError, match="divergence_loss: process_group: expected a torch"):
        gf.divergence_loss("renyi", log_pf=log_pf, log_reward=log_reward, process_group="world")
    with pytest.raises(ValueError, match=r"divergence_loss: alpha: expected a finite real.*digits"):
        gf.divergence_loss("renyi", log_pf=log_pf, log_reward=log_reward, alpha=10**400)
    with pytest.raises(
        ValueError, match="divergence_loss: alpha: expected a finite real number, got bool True"
    ):
        gf.divergence_loss("renyi", log_pf=log_pf, log_reward=log_reward, alpha=True)
    with pytest.raises(TypeError, match="divergence_loss: log_z: expected a real number"):
        gf.divergence_loss("tb", log_pf=log_pf, log_reward=log_reward, log_z="0")


def test_numpy_scalars_are_numbers(backend):
    log_pf = -torch.rand(6, 3)
    log_reward = torch.randn(6)
    reference, _ = gf.divergence_loss(
        "tsallis",
        log_pf=log_pf,
        log_reward=log_reward,
        lengths=torch.full((6,), 3),
        alpha=0.25,
        log_z=0.5,
    )
    for alpha, log_z in ((np.float32(0.25), np.float32(0.5)), (np.float64(0.25), np.int64(0))):
        loss, _ = gf.divergence_loss(
            "tsallis",
            log_pf=log_pf,
            log_reward=log_reward,
            lengths=torch.full((6,), 3),
            alpha=alpha,
            log_z=log_z,
        )
        if float(log_z) == 0.5:
            torch.testing.assert_close(loss, reference)
    loss, _ = gf.divergence_loss(
        "renyi", log_pf=log_pf.sum(1), log_reward=log_reward, alpha=np.int64(2)
    )
    assert torch.isfinite(loss)


def test_coefficient_overflow_is_the_same_value_error(backend):
    # Tsallis alpha = -30 on log-weights spanning 40: g = exp(31 l) overflows float32.
    log_pf = torch.zeros(8)
    log_reward = torch.linspace(-20.0, 20.0, 8)
    with pytest.raises(
        ValueError,
        match=r"divergence_loss: alpha: the tsallis coefficients "
        "overflowed",
    ):
        gf.divergence_loss("tsallis", log_pf=log_pf, log_reward=log_reward, alpha=-30.0, log_z=0.0)
    per_step = log_pf.unsqueeze(1).repeat(1, 3)
    with pytest.raises(ValueError, match="overflowed"):
        gf.divergence_loss(
            "tsallis", log_pf=per_step, log_reward=log_reward, alpha=-30.0, log_z=0.0
        )


def test_nn_modules_check_their_settings_when_built():
    with pytest.raises(ValueError, match="RenyiLoss: control_variate: expected one of"):
        gf.nn.RenyiLoss(control_variate="baseline")
    with pytest.raises(ValueError, match="TsallisLoss: alpha: expected a finite real number"):
        gf.nn.TsallisLoss(alpha=float("nan"))
    with pytest.raises(ValueError, match="ReverseKLLoss: learn_log_z: only"):
        gf.nn.ReverseKLLoss(learn_log_z=True)
    with pytest.raises(TypeError, match="ForwardKLLoss: process_group: expected"):
        gf.nn.ForwardKLLoss(process_group=3)
    with pytest.raises(ValueError, match='RenyiLoss: alpha: normalization="paper" needs'):
        gf.nn.RenyiLoss(alpha=-1.0, normalization="paper")
