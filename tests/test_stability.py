"""Renyi and Tsallis coefficients at extreme alphas against a 60-digit oracle, in float64.

`tests/estimator_oracle.py` transcribes MATH.md naively in high precision, so its float64
rounding is the true answer. Both paths, the reference (gfn_fast.objectives) and the native
batch step (csrc/common/batch_step.h, when built), must match it to 1e-12 relative at
alphas where the naive float64 formulas would lose 6 to 9 digits (1 - 1e-10, +-1e-9): a
stable tilt that is switched off or evaluated with exp(t) - 1 instead of expm1(t) fails by
orders of magnitude. Renyi's d follows MATH.md's blended rule
d = -(w_alpha - beta(alpha) w_0) / alpha, beta = clamp(2 - 2 |alpha|, 0, 1).
"""

from __future__ import annotations

import math

import pytest
import torch

from gfn_fast import _backend, objectives
from gfn_fast.objective import OBJECTIVES, Objective

pytest.importorskip("mpmath")
from tests import estimator_oracle  # noqa: E402  (needs mpmath)

F64 = torch.float64
RTOL = 1e-12
ALPHAS = [
    -2.0,
    -1.0,
    -0.5,
    -1e-7,
    -1e-9,
    0.0,
    1e-9,
    1e-7,
    0.25,
    0.5,
    0.75,
    1 - 1e-7,
    1 - 1e-10,
    1.0,
    1 + 1e-10,
    1.25,
    1.5,
    2.0,
]


def _inputs(k: int, off_policy: bool, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    s = -3.0 + torch.randn(k, generator=gen, dtype=F64)
    b = -2.0 + torch.randn(k, generator=gen, dtype=F64)
    r = torch.randn(k, generator=gen, dtype=F64)
    log_q = s + 0.3 * torch.randn(k, generator=gen, dtype=F64) if off_policy else None
    return s, b, r, log_q


def _reference(objective, cv, s, b, r, log_q, log_z, alpha, paper):
    out = objectives.coefficients(
        Objective(objective, cv, alpha, "paper" if paper else "amari"),
        log_pf=s,
        log_pb=b,
        log_reward=r,
        log_behavior=log_q,
        log_z=None if log_z is None else torch.tensor(log_z, dtype=F64),
    )
    return out.c, out.d, out.value


def _native(objective, cv, s, b, r, log_q, log_z, alpha, paper):
    lz = None if log_z is None else torch.tensor(log_z, dtype=F64)
    out = torch.ops.gfn_fast.batch_coefficients.default(
        s, b, r, log_q, lz, objective, cv, alpha, paper
    )
    return out[0], out[1], out[3]


PATHS = [pytest.param(_reference, id="reference")]
if _backend.native_available("cpu"):
    PATHS.append(pytest.param(_native, id="native"))


def relative_error(got: torch.Tensor, want: torch.Tensor) -> float:
    """max_k |got_k - want_k| / max_k |want_k| (0 for two zero vectors)."""
    scale = float(want.abs().max())
    err = float((got - want).abs().max())
    return err / scale if scale > 0 else err


def assert_matches_oracle(got, want, label):
    for name, g, w in zip(("c", "d", "value"), got, want, strict=True):
        assert g.dtype == F64, (label, name)
        err = relative_error(g.reshape(-1), w.reshape(-1))
        assert err <= RTOL, f"{label} {name}: relative error {err:.3e} > {RTOL}"


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
@pytest.mark.parametrize("cv", ["loo", "none"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_renyi_matches_the_oracle(path, alpha, cv, off_policy):
    s, b, r, log_q = _inputs(12, off_policy)
    for paper in (False, True) if alpha > 0 else (False,):
        got = path("renyi", cv, s, b, r, log_q, None, alpha, paper)
        want = estimator_oracle.coefficients("renyi", cv, s, b, r, log_q, None, alpha, paper)
        assert_matches_oracle(got, want, f"alpha={alpha!r} paper={paper}")


@pytest.mark.parametrize("path", PATHS)
@pytest.mark.parametrize("log_z", [None, -1.3], ids=["batch_log_z", "given_log_z"])
@pytest.mark.parametrize("cv", ["loo", "none"])
@pytest.mark.parametrize("alpha", ALPHAS)
def test_tsallis_matches_the_oracle(path, alpha, cv, log_z):
    s, b, r, log_q = _inputs(12, off_policy=True, seed=1)
    got = path("tsallis", cv, s, b, r, log_q, log_z, alpha, False)
    want = estimator_oracle.coefficients("tsallis", cv, s, b, r, log_q, log_z, alpha, False)
    assert_matches_oracle(got, want, f"alpha={alpha!r}")


@pytest.mark.parametrize("alpha", [-1.0, -0.75, -0.5, -0.2, 0.2, 0.5, 0.6, 0.9, 1.0 - 1e-12, 1.5])
def test_renyi_d_blend_is_the_clamped_line(alpha):
    """beta(alpha) = clamp(2 - 2|alpha|, 0, 1): 1 up to |alpha| = 1/2, 0 from |alpha| = 1."""
    want = 1.0 if abs(alpha) <= 0.5 else (0.0 if abs(alpha) >= 1 else 2 - 2 * abs(alpha))
    assert objectives.renyi_d_blend(alpha) == pytest.approx(want, rel=1e-15, abs=0)


def _mirror_batches(k: int, off_policy: bool):
    """(label, s, b, r, log_q): moderate log-weights, a spread of 1e4, and zero rewards."""
    s, b, r, log_q = _inputs(k, off_policy, seed=2)
    wide = torch.linspace(-1e4, 0.0, k, dtype=F64)[torch.randperm(k, generator=torch.Generator())]
    zero = r.clone()
    zero[: k // 4] = -math.inf
    return [
        ("normal", s, b, r, log_q),
        ("wide", s, b, wide, log_q),
        ("zero_reward", s, b, zero, log_q),
    ]


@pytest.mark.skipif(not _backend.native_available("cpu"), reason="native CPU kernels not built")
@pytest.mark.parametrize("objective", OBJECTIVES)
@pytest.mark.parametrize("off_policy", [False, True], ids=["on", "off"])
def test_native_mirrors_reference_to_1e_12(objective, off_policy):
    """The two float64 paths run the same formulas; they agree to a few ulps, not to 1e-9."""
    family = objective in ("renyi", "tsallis")
    log_zs = {"tb": (0.7,), "reverse_kl": (None, -1.3), "tsallis": (None, -1.3)}
    for label, s, b, r, log_q in _mirror_batches(40, off_policy):
        for alpha in ALPHAS if family else (0.5,):
            if label == "zero_reward" and Objective(objective, "none", alpha).needs_finite_rewards:
                continue
            for cv in ("loo", "none"):
                if objective == "tb" and cv == "loo" and off_policy:
                    continue
                for paper in (False, True) if family and alpha > 0 else (False,):
                    for log_z in log_zs.get(objective, (None,)):
                        lz = None if log_z is None else torch.tensor(log_z, dtype=F64)
                        args = (s, b, r, log_q, lz, objective, cv, alpha, paper)
                        native = torch.ops.gfn_fast.batch_coefficients.default(*args)
                        reference = objectives.coefficients(
                            Objective(objective, cv, alpha, "paper" if paper else "amari"),
                            log_pf=s,
                            log_pb=b,
                            log_reward=r,
                            log_behavior=log_q,
                            log_z=lz,
                        )
                        case = f"{label} alpha={alpha!r} {cv} paper={paper} log_z={log_z}"
                        _assert_fields_within(native, reference, RTOL, case)


def _assert_fields_within(native, reference, rtol, case):
    for name, g, w in zip(objectives.Coefficients._fields, native, reference, strict=True):
        if name == "skipped":
            assert bool(g) == bool(w), (case, name)
            continue
        g, w = g.reshape(-1), w.reshape(-1)
        # Overflow (tsallis with alpha > 1 on a 1e4 spread) must overflow alike on both paths.
        finite = torch.isfinite(w)
        assert torch.equal(finite, torch.isfinite(g)), (case, name)
        assert torch.equal(g[~finite].nan_to_num(), w[~finite].nan_to_num()), (case, name)
        err = relative_error(g[finite], w[finite]) if finite.any() else 0.0
        assert err <= rtol, f"{case} {name}: {err:.3e}"
