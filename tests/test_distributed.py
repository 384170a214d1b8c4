"""A batch split across 2 gloo processes gives the unsplit batch's coefficients and,
after DDP-style gradient averaging, its parameter gradients."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gfn_fast as gf

F64 = torch.float64
K, STEPS = 64, 5
CASES = [
    (objective, cv, alpha, off_policy)
    for objective in gf.OBJECTIVES
    for cv in gf.CONTROL_VARIATES
    for alpha in ((-1.0, 0.1, 0.5, 0.75, 2.0) if objective in ("renyi", "tsallis") else (0.5,))
    for off_policy in (False, True)
    if not (objective == "tb" and cv == "loo" and off_policy)
]
SPLITS = [(3, 61), (64, 0)]


def full_batch():
    gen = torch.Generator().manual_seed(0)
    features = torch.randn(K, STEPS, 3, generator=gen, dtype=F64)
    lengths = torch.randint(0, STEPS + 1, (K,), generator=gen)
    log_pb = -torch.rand(K, STEPS, generator=gen, dtype=F64)
    log_reward = torch.randn(K, generator=gen, dtype=F64)
    log_behavior = -4 + torch.randn(K, generator=gen, dtype=F64)
    return features, lengths, log_pb, log_reward, log_behavior


def loss_and_grads(rows, case, group):
    """Stats, d loss / d (theta, log Z) and d loss / d per-step log p_F and log p_B (the
    coefficients c and d, spread over the steps) for the given rows."""
    objective, cv, alpha, off_policy = case
    features, lengths, log_pb, log_reward, log_behavior = (t[rows] for t in full_batch())
    theta = torch.tensor([0.3, -0.2, 0.1], dtype=F64, requires_grad=True)
    log_z = torch.tensor(0.4, dtype=F64, requires_grad=True)
    step_log_pf = torch.nn.functional.logsigmoid(features @ theta)
    log_pb = log_pb.clone().requires_grad_()
    loss, stats = gf.divergence_loss(
        objective,
        log_pf=step_log_pf,
        log_pb=log_pb,
        log_reward=log_reward,
        lengths=lengths,
        alpha=alpha,
        control_variate=cv,
        log_behavior=log_behavior if off_policy else None,
        log_z=log_z if objective in ("tb", "tsallis") else None,
        process_group=group,
    )
    grad_theta, grad_log_z, grad_steps, grad_pb = torch.autograd.grad(
        loss, (theta, log_z, step_log_pf, log_pb), allow_unused=True
    )
    grad_log_z = torch.zeros(()) if grad_log_z is None else grad_log_z
    params = torch.cat([grad_theta, grad_log_z.reshape(1).to(F64)])
    return stats, params, torch.cat([grad_steps, grad_pb], dim=1)


def _worker(rank: int, port: int, failures) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    try:
        for split in SPLITS:
            start = 0 if rank == 0 else split[0]
            rows = torch.arange(start, start + split[rank])
            for case in CASES:
                want_stats, want_params, want_steps = loss_and_grads(torch.arange(K), case, None)
                stats, params, steps = loss_and_grads(rows, case, dist.group.WORLD)
                # DDP averages parameter gradients over the ranks.
                dist.all_reduce(params)
                params /= 2
                try:
                    for key in ("value", "ess", "log_z_hat"):
                        torch.testing.assert_close(stats[key], want_stats[key])
                    torch.testing.assert_close(params, want_params)
                    # Per-step gradients are the coefficients, scaled by the world size.
                    torch.testing.assert_close(steps / 2, want_steps[rows])
                except AssertionError as error:
                    failures.append(f"rank {rank} split {split} {case}: {error}")
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_split_batch_equals_unsplit_batch():
    with mp.Manager() as manager:
        failures = manager.list()
        mp.spawn(_worker, args=(_free_port(), failures), nprocs=2, join=True)
        assert not list(failures), "\n".join(list(failures)[:5])
