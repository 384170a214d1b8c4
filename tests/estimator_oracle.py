"""An independent oracle of MATH.md's Renyi and Tsallis coefficients, in 60-digit arithmetic.

The formulas are transcribed naively from MATH.md (softmaxes, differences divided by alpha,
no stable branch) and share no code with gfn_fast. Naive differences lose about
log10(1 / |alpha|) or log10(1 / |1 - alpha|) digits near alpha = 0 and 1; at 60 digits
that still leaves over 45 correct ones for |alpha|, |1 - alpha| >= 1e-12, so rounding the
result to float64 gives the true coefficients of the float64 inputs.
"""

from __future__ import annotations

import mpmath
import torch

DIGITS = 60
# Tsallis only: |alpha| below this uses d = -rho (g_alpha - g_0) / (K alpha) (MATH.md edge
# cases, "within 1e-6 of them"). Restated here so that the oracle shares nothing with gfn_fast.
TSALLIS_ZERO_WINDOW = 1e-6


def _lse(xs):
    top = max(xs)
    return top + mpmath.log(mpmath.fsum(mpmath.exp(x - top) for x in xs))


def _softmax(xs):
    norm = _lse(xs)
    return [mpmath.exp(x - norm) for x in xs]


def _loo(f):
    k = len(f)
    mean = mpmath.fsum(f) / k
    return [mpmath.mpf(k) / (k - 1) * (x - mean) for x in f]


def _tensor(values, like):
    return torch.tensor([float(v) for v in values], dtype=torch.float64, device=like.device)


def coefficients(objective, cv, s, b, r, log_q=None, log_z=None, alpha=0.5, paper=False):
    """(c [K], d [K], value) of MATH.md for `objective` in {"renyi", "tsallis"}, as float64.

    s, b, r, log_q: [K] float64 tensors (log_q None: on-policy); log_z: a float or None.
    Alpha exactly 0 or 1 dispatches to forward and reverse KL with the same control variate.
    """
    with mpmath.workdps(DIGITS):
        s_, b_, r_ = ([mpmath.mpf(float(x)) for x in t] for t in (s, b, r))
        k = len(s_)
        l = [ri + bi - si for si, bi, ri in zip(s_, b_, r_, strict=True)]
        if log_q is None:
            log_rho = [mpmath.mpf(0)] * k
        else:
            log_rho = [si - mpmath.mpf(float(q)) for si, q in zip(s_, log_q, strict=True)]
        rho = [mpmath.exp(x) for x in log_rho]
        pi = [x / mpmath.fsum(rho) for x in rho]
        w0 = _softmax([li + lr for li, lr in zip(l, log_rho, strict=True)])
        log_z_hat = _lse([li + lr for li, lr in zip(l, log_rho, strict=True)]) - mpmath.log(k)
        a = mpmath.mpf(alpha)
        if alpha == 0.0:
            c, d, value = _forward_kl(cv, l, pi, w0, log_z_hat)
        elif alpha == 1.0:
            c, d, value = _reverse_kl(cv, l, rho, log_z_hat)
        elif objective == "renyi":
            c, d, value = _renyi(cv, a, l, log_rho, pi, w0, log_z_hat)
        else:
            ref = log_z_hat if log_z is None else mpmath.mpf(float(log_z))
            c, d, value = _tsallis(cv, a, l, rho, ref)
        scale = a if paper else 1
        return (
            _tensor([scale * x for x in c], s),
            _tensor([scale * x for x in d], s),
            torch.tensor(float(scale * value), dtype=torch.float64),
        )


def _forward_kl(cv, l, pi, w0, log_z_hat):
    c = [-(w - p) if cv == "loo" else -w for w, p in zip(w0, pi, strict=True)]
    mean_l = mpmath.fsum(w * li for w, li in zip(w0, l, strict=True))
    d = [w * (li - mean_l) for w, li in zip(w0, l, strict=True)]
    return c, d, mean_l - log_z_hat


def _reverse_kl(cv, l, rho, log_z_hat):
    k = len(l)
    if cv == "loo":
        c = [-p * x / k for p, x in zip(rho, _loo(l), strict=True)]
    else:
        c = [p * (1 - li) / k for p, li in zip(rho, l, strict=True)]
    value = log_z_hat - mpmath.fsum(p * li for p, li in zip(rho, l, strict=True)) / k
    return c, [-p / k for p in rho], value


def _renyi(cv, a, l, log_rho, pi, w0, log_z_hat):
    k = len(l)
    w = _softmax([(1 - a) * li + lr for li, lr in zip(l, log_rho, strict=True)])
    if cv == "loo":
        c = [(wi - p) / (a - 1) for wi, p in zip(w, pi, strict=True)]
    else:
        c = [wi / (a - 1) for wi in w]
    beta = min(mpmath.mpf(1), max(mpmath.mpf(0), 2 - 2 * abs(a)))
    d = [-(wi - beta * w0i) / a for wi, w0i in zip(w, w0, strict=True)]
    log_m_hat = (
        _lse([(1 - a) * li + lr for li, lr in zip(l, log_rho, strict=True)]) - mpmath.log(k)
    ) / (1 - a)
    return c, d, (log_z_hat - log_m_hat) / a


def _tsallis(cv, a, l, rho, ref):
    k = len(l)
    g = [mpmath.exp((1 - a) * (li - ref)) for li in l]
    if cv == "loo":
        c = [p * x / (k * (a - 1)) for p, x in zip(rho, _loo(g), strict=True)]
    else:
        c = [p * gi / (k * (a - 1)) for p, gi in zip(rho, g, strict=True)]
    if abs(a) < TSALLIS_ZERO_WINDOW:
        g0 = [mpmath.exp(li - ref) for li in l]
        d = [-p * (gi - g0i) / (k * a) for p, gi, g0i in zip(rho, g, g0, strict=True)]
    else:
        d = [-p * gi / (k * a) for p, gi in zip(rho, g, strict=True)]
    value = (mpmath.fsum(p * gi for p, gi in zip(rho, g, strict=True)) / k - 1) / (a * (a - 1))
    return c, d, value
