"""`Objective`: an objective of MATH.md and the settings of its gradient estimator, checked once.

MATH.md's rules about which settings go together live here and nowhere else in Python (the
C++ ops check the same rules for direct calls, in csrc/common/op_config.cpp).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass

OBJECTIVES = ("tb", "vargrad", "reverse_kl", "forward_kl", "renyi", "tsallis")
CONTROL_VARIATES = ("loo", "none")
NORMALIZATIONS = ("amari", "paper")
ALPHA_FAMILY = ("renyi", "tsallis")
# Objectives that use a log Z the caller can learn (tb requires one, tsallis uses it as its
# reference; reverse_kl only reports it in its value).
LEARNED_LOG_Z = ("tb", "tsallis")


def real_number(name: str, value) -> float:
    """`value` as a finite float: Python and NumPy reals; not bools, strings or tensors.

    Raises:
        ValueError: `value` is not a real number, or not finite as a float.
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(
            f"{name}: expected a finite real number, got {type(value).__name__} {value!r}"
        )
    try:
        number = float(value)
    except OverflowError:
        raise ValueError(
            f"{name}: expected a finite real number, got an integer too large for a float "
            f"({len(str(abs(int(value))))} digits)"
        ) from None
    if not math.isfinite(number):
        raise ValueError(f"{name}: expected a finite real number, got {number}")
    return number


@dataclass(frozen=True)
class Objective:
    """An objective of MATH.md with its estimator settings.

    Args:
        name: "tb", "vargrad", "reverse_kl", "forward_kl", "renyi" or "tsallis".
        control_variate: "loo" (leave-one-out) or "none"; ignored by "vargrad".
        alpha: the order of "renyi" and "tsallis" (any finite real; 0 and 1 are forward and
            reverse KL); a Python or NumPy real number.
        normalization: "amari" (divides by alpha (alpha - 1)) or "paper" (alpha times amari,
            for alpha > 0 only).

    Raises:
        ValueError: an unknown name, a non-finite or non-real alpha, or paper normalisation
            with alpha <= 0.
    """

    name: str
    control_variate: str = "loo"
    alpha: float = 0.5
    normalization: str = "amari"

    def __post_init__(self) -> None:
        if self.name not in OBJECTIVES:
            raise ValueError(f"objective: expected one of {OBJECTIVES}, got {self.name!r}")
        if self.control_variate not in CONTROL_VARIATES:
            raise ValueError(
                f"control_variate: expected one of {CONTROL_VARIATES}, got {self.control_variate!r}"
            )
        if self.normalization not in NORMALIZATIONS:
            raise ValueError(
                f"normalization: expected one of {NORMALIZATIONS}, got {self.normalization!r}"
            )
        object.__setattr__(self, "alpha", real_number("alpha", self.alpha))
        if self.paper_normalization and self.alpha <= 0:
            raise ValueError(
                f'alpha: normalization="paper" needs alpha > 0 (its objective is maximised at '
                f'the target for alpha < 0), got alpha={self.alpha}; use normalization="amari"'
            )

    @property
    def paper_normalization(self) -> bool:
        """Whether the paper's scaling applies (only the alpha family has one)."""
        return self.normalization == "paper" and self.name in ALPHA_FAMILY

    @property
    def op_arguments(self) -> tuple[str, str, float, bool]:
        """(objective, control_variate, alpha, paper_normalization) as the ops take them."""
        return self.name, self.control_variate, self.alpha, self.paper_normalization

    @property
    def needs_finite_rewards(self) -> bool:
        """Whether log_reward = -inf makes the divergence infinite (MATH.md edge cases)."""
        if self.name in ("tb", "vargrad", "reverse_kl"):
            return True
        return self.name in ALPHA_FAMILY and self.alpha >= 1.0

    def self_normalised(self, *, has_log_z: bool) -> bool:
        """Whether the estimator's expected gradient is zero at K = 1."""
        if self.name == "tsallis":
            return not has_log_z and self.alpha != 1.0
        return self.name == "forward_kl" or (self.name == "renyi" and self.alpha != 1.0)

    def describe(self) -> str:
        """ "renyi with alpha=0.5", or the objective's name, for messages."""
        if self.name in ALPHA_FAMILY:
            return f"{self.name} with alpha={self.alpha}"
        return self.name

    def check_batch(self, k: int | None, *, has_log_z: bool, off_policy: bool) -> None:
        """The rules that depend on the batch: K trajectories (None when the batch is split
        across processes and K is not known here), a log Z, off-policy sampling.

        Raises:
            ValueError: tb without a log Z, tb "loo" off-policy, K = 0, or "loo" with K < 2.
        """
        if self.name == "tb":
            if not has_log_z:
                raise ValueError("log_z: tb needs a (learned) log Z, got None")
            if self.control_variate == "loo" and off_policy:
                raise ValueError(
                    'control_variate: "loo" for tb is unbiased only on-policy, but the batch is '
                    'off-policy (log_behavior given); use control_variate="none"'
                )
        if k == 0:
            raise ValueError("log_pf: expected at least 1 trajectory, got K=0")
        if self.control_variate == "loo" and self.name != "vargrad" and k is not None:
            if k < 2:
                raise ValueError(
                    f"log_pf: leave-one-out needs at least 2 trajectories, got K={k}; "
                    'use control_variate="none" or a larger batch'
                )
