"""Surrogate coefficients of every objective in MATH.md.

Every objective is reduced to a detached surrogate

    L = sum_k c_k s_k + sum_k d_k b_k + e log Z

over the per-trajectory sums s_k = log p_F(tau_k) and b_k = log p_B(tau_k | x_k), so that
autograd of L is exactly the gradient objective. This module computes (c, d, e) and the
diagnostics from detached [K] tensors. It is the oracle the native batch kernel mirrors.

All arithmetic runs in float64 on [K] vectors (cheap next to the per-step work); results
are cast to float32 (float64 for float64 inputs). Formulas that lose precision near
alpha = 0 or 1 are computed in both a direct and a stable form and selected with
torch.where, so nothing here syncs with the host and torch.compile traces it whole.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch

from gfn_fast.batch_reduce import GroupReduce, LocalReduce
from gfn_fast.objective import Objective

# Tsallis: |alpha| below this uses the forward-KL-limit form of d (MATH.md "Limits and
# stability"). Renyi needs no window: its blended d (renyi_d_blend) is stable for every alpha.
ALPHA_ZERO_WINDOW = 1e-6
# The stable tilt formulas apply while every |tilt * (l - mean)| stays below this.
STABLE_TILT_LIMIT = 1.0


class Coefficients(NamedTuple):
    """Detached result of the batch step.

    c, d: [K] surrogate coefficients of log p_F and log p_B sums.
    e: coefficient of log Z (0-dim). value: the estimated divergence or loss (0-dim).
    ess: effective sample size of softmax(l + log rho) in [1, K] (0 for a skipped batch).
    log_z_hat: LSE(l + log rho) - log K. skipped: bool, the batch carried no signal.
    """

    c: torch.Tensor
    d: torch.Tensor
    e: torch.Tensor
    value: torch.Tensor
    ess: torch.Tensor
    log_z_hat: torch.Tensor
    skipped: torch.Tensor


def renyi_d_blend(alpha: float) -> float:
    """beta(alpha) = clamp(2 - 2 |alpha|, 0, 1) of Renyi's d = -(w_alpha - beta w_0) / alpha.

    1 for |alpha| <= 1/2, 0 for |alpha| >= 1, linear between (MATH.md, renyi). Every beta is
    unbiased (E_pi[grad b] = 0); beta = 1 removes the 1 / (K alpha) bias near alpha = 0.
    """
    return min(1.0, max(0.0, 2.0 - 2.0 * abs(alpha)))


def _phi(t: torch.Tensor) -> torch.Tensor:
    """expm1(t) / t, with its limit 1 at t = 0."""
    safe = torch.where(t == 0, torch.ones_like(t), t)
    return torch.where(t == 0, torch.ones_like(t), torch.expm1(safe) / safe)


def _expm1_over(t: torch.Tensor, h: float, v: torch.Tensor) -> torch.Tensor:
    """expm1(t) / h for t = h * v, precise also when h is tiny."""
    small = t.abs() < STABLE_TILT_LIMIT
    direct = torch.expm1(t) / h if h != 0 else v
    return torch.where(small, v * _phi(torch.where(small, t, torch.zeros_like(t))), direct)


def _weighted_mean(reduce, p: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """sum_k p_k x_k, where p_k = 0 contributes 0 even when x_k is infinite."""
    return reduce.sum(torch.where(p > 0, p * x, torch.zeros_like(x)))


def _tilt(
    reduce, p: torch.Tensor, log_p: torch.Tensor, l: torch.Tensor, h: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """For weights p (summing to 1, with logs log_p) and values l, returns exactly

        grad_k = (softmax(log p + h l)_k - p_k) / h      and      log(sum_k p_k e^{h l_k}) / h,

    with their limits p_k (l_k - mean) and mean = sum p l at h = 0. Near h = 0 it uses
    MATH.md's phi(t) = expm1(t) / t form, which loses no precision; elsewhere the direct one.
    """
    mean = _weighted_mean(reduce, p, l)
    v = torch.where(p > 0, l - mean, torch.zeros_like(l))
    if h == 0:
        return p * v, mean
    t = h * v
    stable_ok = torch.isfinite(mean) & (reduce.max(t.abs()) <= STABLE_TILT_LIMIT)
    v_phi = v * _phi(torch.where(stable_ok, t, torch.zeros_like(t)))
    moment = reduce.sum(p * v_phi)
    stable_grad = p * (v_phi - moment) / (1 + h * moment)
    stable_log_mgf = mean + torch.log1p(h * moment) / h

    # Zero-weight entries are left out, so l = -inf with h < 0 cannot make -inf + inf.
    tilted_logits = torch.where(p > 0, log_p + h * l, torch.full_like(l, -math.inf))
    direct_grad = (reduce.softmax(tilted_logits) - p) / h
    direct_log_mgf = reduce.logsumexp(tilted_logits) / h
    grad = torch.where(stable_ok, stable_grad, direct_grad)
    return grad, torch.where(stable_ok, stable_log_mgf, direct_log_mgf)


def _loo(batch: _Batch, f: torch.Tensor) -> torch.Tensor:
    """f_k - mean_{j != k} f_j = K / (K - 1) (f_k - mean f)."""
    k = batch.k
    return k / (k - 1) * (f - batch.mean(f))


class _Batch:
    """The detached float64 quantities every objective starts from."""

    def __init__(self, log_pf, log_pb, log_reward, log_behavior, reduce, k: int):
        f64 = torch.float64
        self.reduce = reduce
        self.s = log_pf.detach().to(f64)
        self.b = torch.zeros_like(self.s) if log_pb is None else log_pb.detach().to(f64)
        self.r = log_reward.detach().to(f64)
        self.k = k
        self.l = self.r + self.b - self.s
        self.on_policy = log_behavior is None
        self.log_rho = (
            torch.zeros_like(self.s) if self.on_policy else self.s - log_behavior.detach().to(f64)
        )
        self.rho = torch.exp(self.log_rho)
        # pi_k = rho_k / sum_j rho_j (1/K on-policy)
        self.pi = reduce.softmax(self.log_rho)
        self.lse_rho = math.log(k) if self.on_policy else reduce.logsumexp(self.log_rho)
        self.log_pi = self.log_rho - self.lse_rho
        log_w0 = self.l + self.log_rho
        self.lse0 = reduce.logsumexp(log_w0)
        self.skipped = torch.isneginf(self.lse0)
        self.log_w0 = log_w0 - self.lse0
        self.w0 = torch.where(self.skipped, torch.zeros_like(log_w0), torch.exp(self.log_w0))
        self.log_z_hat = self.lse0 - math.log(self.k)
        self.ess = torch.where(self.skipped, self.lse0.new_zeros(()), 1.0 / reduce.sum(self.w0**2))

    def mean(self, x: torch.Tensor) -> torch.Tensor:
        return self.reduce.mean(x, self.k)

    def zero(self) -> torch.Tensor:
        return self.s.new_zeros(())


def _tb(batch: _Batch, cv: str, log_z: torch.Tensor):
    delta = log_z - batch.l
    k = batch.k
    c = -2 * _loo(batch, batch.l) / k if cv == "loo" else 2 * delta / k
    return c, -2 * delta / k, 2 * batch.mean(delta), batch.mean(delta**2)


def _vargrad(batch: _Batch):
    centred = batch.l - batch.mean(batch.l)
    k = batch.k
    return -2 * centred / k, 2 * centred / k, batch.zero(), batch.mean(centred**2)


def _reverse_kl(batch: _Batch, cv: str, log_z: torch.Tensor | None):
    k, rho, l = batch.k, batch.rho, batch.l
    c = -rho * _loo(batch, l) / k if cv == "loo" else rho * (1 - l) / k
    log_z_value = batch.log_z_hat if log_z is None else log_z
    return c, -rho / k, batch.zero(), log_z_value - batch.mean(rho * l)


def _forward_kl(batch: _Batch, cv: str):
    w = batch.w0
    c = -(w - batch.pi) if cv == "loo" else -w
    d, mean_l = _tilt(batch.reduce, w, batch.log_w0, batch.l, 0.0)
    return c, d, batch.zero(), mean_l - batch.log_z_hat


def _renyi(batch: _Batch, cv: str, alpha: float):
    h = 1.0 - alpha
    reduce = batch.reduce
    w = reduce.softmax(h * batch.l + batch.log_rho)
    pi_tilt_grad, pi_log_mgf = _tilt(reduce, batch.pi, batch.log_pi, batch.l, h)
    w0_tilt_grad, w0_log_mgf = _tilt(reduce, batch.w0, batch.log_w0, batch.l, -alpha)
    c = -pi_tilt_grad if cv == "loo" else w / (alpha - 1)  # (w - pi) / (alpha - 1) for loo
    # d = -(w - beta w0) / alpha. With beta = 1 it is the w0 tilt, precise as alpha -> 0.
    beta = renyi_d_blend(alpha)
    d = w0_tilt_grad if beta == 1.0 else -(w - beta * batch.w0) / alpha
    if abs(alpha) <= 0.5:
        # (log Zhat - log Mhat) / alpha rewritten around the w0 tilt: exact and finite at 0.
        value = (w0_log_mgf - batch.log_z_hat) / h
    else:
        log_mean_rho = batch.lse_rho - math.log(batch.k)
        log_m_hat = log_mean_rho / h + pi_log_mgf
        value = (batch.log_z_hat - log_m_hat) / alpha
    return c, d, batch.zero(), value


def _tsallis(batch: _Batch, cv: str, alpha: float, log_z_ref: torch.Tensor, ref_is_batch: bool):
    k, rho, l = batch.k, batch.rho, batch.l
    h = 1.0 - alpha
    v = l - log_z_ref
    t = h * v
    g = torch.exp(t)
    if cv == "loo":
        # loo(g) / (alpha - 1) = -loo(expm1(t) / (1 - alpha)), stable near alpha = 1.
        c = -rho * _loo(batch, _expm1_over(t, h, v)) / k
    else:
        c = rho * g / (k * (alpha - 1))
    if abs(alpha) < ALPHA_ZERO_WINDOW:
        # -(g_alpha - g_0) / alpha with g_0 = exp(l - logZref): zero-mean shift of d.
        g0 = torch.exp(v)
        shift = _expm1_over(-alpha * v, -alpha, v)
        d = torch.where(g0 > 0, rho * g0 * shift, torch.zeros_like(g0)) / k
    else:
        d = -rho * g / (k * alpha)
    if abs(alpha) <= 0.5:
        g0 = torch.exp(v)
        shift = _expm1_over(-alpha * v, -alpha, v)
        tilted = batch.mean(torch.where(g0 > 0, rho * g0 * shift, torch.zeros_like(g0)))
        offset = batch.zero() if ref_is_batch else torch.expm1(batch.log_z_hat - log_z_ref)
        value = tilted / h + offset / (alpha * (alpha - 1))
    else:
        value = -batch.mean(rho * _expm1_over(t, h, v)) / alpha + (batch.mean(rho) - 1) / (
            alpha * (alpha - 1)
        )
    return c, d, value


def _tsallis_log_z_grad(batch: _Batch, log_z: torch.Tensor) -> torch.Tensor:
    """e = 1 - mean_k rho_k exp(l_k - log Z).

    It is an unbiased gradient of the convex E_q[e^{l - c}] + c at c = log Z, whose
    minimiser is the true log Z.
    """
    return -torch.expm1(batch.log_z_hat - log_z)


def coefficients(
    objective: Objective,
    *,
    log_pf: torch.Tensor,
    log_pb: torch.Tensor | None,
    log_reward: torch.Tensor,
    log_behavior: torch.Tensor | None = None,
    log_z: torch.Tensor | None = None,
    process_group=None,
) -> Coefficients:
    """Coefficients (c, d, e) and diagnostics of MATH.md for K trajectories.

    Inputs are per-trajectory [K] tensors (log_z 0-dim). Validation of values (NaN, -inf
    rewards) is the caller's job; this function checks only the arguments' kinds. With a
    torch.distributed `process_group`, the inputs are this rank's slice of the batch and
    the result is this slice of the unsplit batch's coefficients (e, value and the
    diagnostics are the global ones).

    Raises:
        ValueError: the batch breaks one of `Objective.check_batch`'s rules.
    """
    reduce = LocalReduce() if process_group is None else GroupReduce(process_group)
    k = reduce.count(log_pf.numel())
    objective.check_batch(k, has_log_z=log_z is not None, off_policy=log_behavior is not None)
    name, control_variate, alpha, paper_normalization = objective.op_arguments
    out_dtype = torch.float64 if log_pf.dtype == torch.float64 else torch.float32
    batch = _Batch(log_pf, log_pb, log_reward, log_behavior, reduce, k)
    log_z64 = None if log_z is None else torch.as_tensor(log_z).detach().to(torch.float64)

    # Renyi and Tsallis at alpha exactly 0 or 1 are forward and reverse KL (MATH.md).
    kind = name
    if name in ("renyi", "tsallis") and alpha in (0.0, 1.0):
        kind = "forward_kl" if alpha == 0.0 else "reverse_kl"

    if kind == "tb":
        c, d, e, value = _tb(batch, control_variate, log_z64)
    elif kind == "vargrad":
        c, d, e, value = _vargrad(batch)
    elif kind == "reverse_kl":
        c, d, e, value = _reverse_kl(batch, control_variate, log_z64 if name == kind else None)
    elif kind == "forward_kl":
        c, d, e, value = _forward_kl(batch, control_variate)
    elif kind == "renyi":
        c, d, e, value = _renyi(batch, control_variate, alpha)
    else:
        ref = batch.log_z_hat if log_z64 is None else log_z64
        c, d, value = _tsallis(batch, control_variate, alpha, ref, log_z64 is None)
        e = batch.zero()
    if name == "tsallis" and log_z64 is not None:
        e = _tsallis_log_z_grad(batch, log_z64)

    if paper_normalization:
        c, d, value = alpha * c, alpha * d, alpha * value

    skipped = batch.skipped
    if objective.self_normalised(has_log_z=log_z64 is not None) and k == 1:
        skipped = torch.ones_like(skipped)
    zero = torch.zeros_like(c)
    c = torch.where(skipped, zero, c)
    d = torch.where(skipped, zero, d)
    e = torch.where(skipped, batch.zero(), e)
    value = torch.where(batch.skipped, batch.zero(), value)
    return Coefficients(
        c.to(out_dtype),
        d.to(out_dtype),
        e.to(out_dtype),
        value.to(out_dtype),
        batch.ess.to(out_dtype),
        batch.log_z_hat.to(out_dtype),
        skipped,
    )
