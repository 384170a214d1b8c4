"""`divergence_loss` and the nn wrappers: layouts, dtypes, errors, diagnostics."""

from __future__ import annotations

import math

import pytest
import torch

import gfn_fast as gf

F64 = torch.float64


def padded_batch(lengths, seed=0, dtype=torch.float32, steps=None):
    gen = torch.Generator().manual_seed(seed)
    lengths = torch.as_tensor(lengths)
    batch, steps = lengths.numel(), steps or int(lengths.max().clamp_min(1))
    pf = -torch.rand(batch, steps, generator=gen, dtype=F64).to(dtype)
    pb = -torch.rand(batch, steps, generator=gen, dtype=F64).to(dtype)
    reward = torch.randn(batch, generator=gen, dtype=F64).to(dtype)
    inside = torch.arange(steps) < lengths[:, None]
    # Padding is garbage on purpose: it must never be read.
    pf = pf.masked_fill(~inside, math.nan)
    pb = pb.masked_fill(~inside, math.inf)
    return pf, pb, reward, lengths


def to_packed(values, lengths):
    inside = torch.arange(values.shape[1]) < lengths[:, None]
    offsets = torch.zeros(lengths.numel() + 1, dtype=torch.int64)
    offsets[1:] = lengths.cumsum(0)
    return values[inside], offsets


def loss_and_grads(objective, pf, pb, reward, **kwargs):
    pf = pf.detach().clone().requires_grad_()
    pb = pb.detach().clone().requires_grad_()
    loss, stats = gf.divergence_loss(objective, log_pf=pf, log_pb=pb, log_reward=reward, **kwargs)
    grad_pf, grad_pb = torch.autograd.grad(loss, (pf, pb))
    return loss, stats, grad_pf, grad_pb


@pytest.mark.parametrize("objective", gf.OBJECTIVES)
@pytest.mark.parametrize("index_dtype", [torch.int32, torch.int64])
def test_padded_packed_and_per_trajectory_forms_agree(objective, index_dtype):
    pf, pb, reward, lengths = padded_batch([3, 0, 5, 1, 4, 2], dtype=F64)
    log_z = 0.3 if objective == "tb" else None
    inside = torch.arange(pf.shape[1]) < lengths[:, None]
    per_traj = loss_and_grads(
        objective,
        torch.where(inside, pf, 0).sum(1),
        torch.where(inside, pb, 0).sum(1),
        reward,
        log_z=log_z,
    )
    padded = loss_and_grads(objective, pf, pb, reward, lengths=lengths.to(index_dtype), log_z=log_z)
    packed_pf, offsets = to_packed(pf, lengths)
    packed_pb, _ = to_packed(pb, lengths)
    packed = loss_and_grads(
        objective, packed_pf, packed_pb, reward, offsets=offsets.to(index_dtype), log_z=log_z
    )
    for form in (padded, packed):
        torch.testing.assert_close(form[0], per_traj[0], rtol=1e-12, atol=1e-12)
        for key in ("value", "ess", "log_z_hat"):
            torch.testing.assert_close(form[1][key], per_traj[1][key], rtol=1e-12, atol=1e-12)
    # Per-step gradients broadcast the per-trajectory coefficient; padding gets zero.
    c, d = per_traj[2], per_traj[3]
    torch.testing.assert_close(padded[2], torch.where(inside, c[:, None], 0.0))
    torch.testing.assert_close(padded[3], torch.where(inside, d[:, None], 0.0))
    torch.testing.assert_close(packed[2], to_packed(c[:, None].expand_as(pf), lengths)[0])
    torch.testing.assert_close(packed[3], to_packed(d[:, None].expand_as(pf), lengths)[0])


def test_non_contiguous_and_full_rows():
    pf, pb, reward, _ = padded_batch([4, 4, 4, 4, 4], dtype=F64)
    pf_t = pf.t().contiguous().t()  # same values, column-major
    assert not pf_t.is_contiguous()
    want = loss_and_grads("renyi", pf, pb, reward)
    got = loss_and_grads("renyi", pf_t, pb, reward, lengths=torch.full((5,), 4))
    torch.testing.assert_close(got[0], want[0])
    torch.testing.assert_close(got[2], want[2])


def test_log_pb_none_means_tree_shaped():
    pf, _, reward, lengths = padded_batch([2, 3, 1], dtype=F64)
    zeros = torch.zeros_like(pf)
    got, _ = gf.divergence_loss("reverse_kl", log_pf=pf, log_reward=reward, lengths=lengths)
    want, _ = gf.divergence_loss(
        "reverse_kl", log_pf=pf, log_pb=zeros, log_reward=reward, lengths=lengths
    )
    torch.testing.assert_close(got, want)


def test_loss_equals_value_and_stats_are_detached():
    pf, pb, reward, lengths = padded_batch([2, 3, 1, 4])
    pf.requires_grad_()
    loss, stats = gf.divergence_loss(
        "renyi", log_pf=pf, log_pb=pb, log_reward=reward, lengths=lengths
    )
    assert loss.dtype == torch.float32 and loss.requires_grad
    assert torch.equal(loss.detach(), stats["value"])
    assert not any(v.requires_grad for v in stats.values())
    assert stats["skipped"].dtype == torch.bool
    assert 1.0 <= float(stats["ess"]) <= 4.0


def test_learned_log_z_gets_its_gradient_through_tb_module():
    pf, pb, reward, lengths = padded_batch([2, 3, 1, 4], dtype=F64)
    module = gf.nn.TBLoss(init_log_z=0.5).double()
    loss, stats = module(pf, pb, reward, lengths=lengths)
    loss.backward()
    inside = torch.arange(pf.shape[1]) < lengths[:, None]
    l = reward + torch.where(inside, pb, 0).sum(1) - torch.where(inside, pf, 0).sum(1)
    torch.testing.assert_close(module.log_z.grad, 2 * (0.5 - l).mean())
    torch.testing.assert_close(stats["value"], ((0.5 - l) ** 2).mean())


@pytest.mark.parametrize(
    "module, objective",
    [
        (gf.nn.VarGradLoss, "vargrad"),
        (gf.nn.ReverseKLLoss, "reverse_kl"),
        (gf.nn.ForwardKLLoss, "forward_kl"),
        (gf.nn.RenyiLoss, "renyi"),
        (gf.nn.TsallisLoss, "tsallis"),
    ],
)
def test_modules_match_the_function(module, objective):
    pf, pb, reward, lengths = padded_batch([2, 3, 1, 4], dtype=F64)
    got = module(alpha=0.3, control_variate="none")(pf, pb, reward, lengths=lengths)
    want = gf.divergence_loss(
        objective,
        log_pf=pf,
        log_pb=pb,
        log_reward=reward,
        lengths=lengths,
        alpha=0.3,
        control_variate="none",
    )
    torch.testing.assert_close(got[0], want[0])


def test_paper_normalisation_scales_by_alpha():
    pf, pb, reward, lengths = padded_batch([2, 3, 1, 4], dtype=F64)
    for objective in ("renyi", "tsallis"):
        amari = loss_and_grads(objective, pf, pb, reward, lengths=lengths, alpha=0.7)
        paper = loss_and_grads(
            objective, pf, pb, reward, lengths=lengths, alpha=0.7, normalization="paper"
        )
        for got, want in zip(paper, amari, strict=True):
            if isinstance(got, dict):
                torch.testing.assert_close(got["value"], 0.7 * want["value"])
            else:
                torch.testing.assert_close(got, 0.7 * want)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"objective": "kl"}, "objective: expected one of"),
        ({"control_variate": "mean"}, "control_variate: expected one of"),
        ({"normalization": "x"}, "normalization: expected one of"),
        ({"alpha": math.nan}, "alpha: expected a finite"),
        ({"alpha": -1.0, "normalization": "paper"}, 'alpha: normalization="paper" needs alpha > 0'),
        ({"objective": "tb"}, "log_z: tb needs"),
        (
            {"objective": "tb", "log_z": 0.0, "log_behavior": torch.zeros(4)},
            "unbiased only on-policy",
        ),
        ({"log_reward": torch.zeros(5)}, r"log_reward: expected shape \[B\]"),
        ({"log_reward": torch.zeros(4, 1)}, "log_reward: expected a 1-D"),
        ({"log_pb": torch.zeros(4, 2)}, "log_pb: expected shape"),
        ({"log_behavior": torch.zeros(3)}, "log_behavior: expected shape"),
        ({"lengths": torch.tensor([1, 2, 3, 9])}, r"lengths: expected values in \[0, T=4\]"),
        ({"lengths": torch.tensor([1.0, 2, 3, 4])}, "lengths: expected an integer index tensor"),
        ({"lengths": torch.tensor([1, 2]), "offsets": torch.tensor([0, 1])}, "at most one"),
        ({"log_z": torch.zeros(2)}, "log_z: expected a scalar"),
        ({"log_pf": torch.zeros(4, 4, dtype=torch.int64)}, "log_pf: expected a floating"),
    ],
)
def test_bad_arguments_raise_naming_the_argument(kwargs, match):
    args = {
        "objective": "renyi",
        "log_pf": -torch.rand(4, 4),
        "log_pb": -torch.rand(4, 4),
        "log_reward": torch.zeros(4),
        "lengths": torch.tensor([1, 2, 3, 4]),
    }
    args.update(kwargs)
    objective = args.pop("objective")
    with pytest.raises(ValueError, match=match):
        gf.divergence_loss(objective, **args)


def test_empty_batch_raises():
    with pytest.raises(ValueError, match="log_pf: expected at least 1 trajectory, got K=0"):
        gf.divergence_loss(
            "renyi", log_pf=torch.zeros(0), log_reward=torch.zeros(0), control_variate="none"
        )


def test_mixed_dtypes_keep_the_loss_in_log_pf_accumulation_dtype():
    pf, pb, reward, lengths = padded_batch([2, 3, 1, 4])
    inside = torch.arange(pf.shape[1]) < lengths[:, None]
    per_trajectory = (torch.where(inside, pf, 0).sum(1), torch.where(inside, pb, 0).sum(1), None)
    for log_pf, log_pb, lens in ((pf, pb, lengths), per_trajectory):
        log_pf = log_pf.detach().requires_grad_()
        loss, _ = gf.divergence_loss(
            "renyi", log_pf=log_pf, log_pb=log_pb.double(), log_reward=reward, lengths=lens
        )
        assert loss.dtype == torch.float32
        loss.backward()
        assert log_pf.grad.dtype == torch.float32


def test_packed_offsets_must_not_decrease():
    with pytest.raises(ValueError, match="offsets: expected a non-decreasing"):
        gf.divergence_loss(
            "renyi",
            log_pf=torch.zeros(6),
            log_reward=torch.zeros(3),
            offsets=torch.tensor([0, 4, 2, 6]),
        )


def test_paper_score_control_variate():
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, 2, generator=gen), torch.randn(5, generator=gen)]
    scores = [torch.randn(3, 2, generator=gen), torch.randn(5, generator=gen)]
    corrected, a = gf.paper_score_control_variate(grads, scores, eps=0.0)
    flat_g = torch.cat([g.reshape(-1) for g in grads])
    flat_c = torch.cat([c.reshape(-1) for c in scores])
    torch.testing.assert_close(a, flat_g @ flat_c / (flat_c @ flat_c))
    # With eps = 0 the corrected gradient is G's component orthogonal to C.
    flat_corrected = torch.cat([g.reshape(-1) for g in corrected])
    assert abs(float(flat_corrected @ flat_c)) < 1e-5
    with pytest.raises(ValueError, match="score_grads"):
        gf.paper_score_control_variate(grads, scores[:1])
