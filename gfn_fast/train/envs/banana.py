"""Banana in 2-D: (x1, x2 + x1^2 + 1) ~ N(0, [[1, rho], [rho, 1]]), rho = 0.9.

The map x -> (x1, x2 + x1^2 + 1) has Jacobian 1, so the target density is exact and
normalised, and exact samples are x1 = u, x2 = v - u^2 - 1 for (u, v) from the Gaussian.
"""

from __future__ import annotations

import math

import torch

from gfn_fast.train.envs.base import ContinuousEnv

PRESETS = {"paper": {}}


class Banana(ContinuousEnv):
    """Normalised target density (log Z = 0)."""

    center = (0.0, -2.0)
    scale = (1.0, 2.0)

    def __init__(self, correlation: float = 0.9):
        if not -1 < correlation < 1:
            raise ValueError(f"correlation: expected in (-1, 1), got {correlation}")
        self.correlation = correlation

    def log_reward(self, x):
        u = x[:, 0]
        v = x[:, 1] + u**2 + 1
        rho = self.correlation
        quadratic = (u**2 - 2 * rho * u * v + v**2) / (1 - rho**2)
        return -0.5 * quadratic - math.log(2 * math.pi) - 0.5 * math.log(1 - rho**2)

    def sample_target(self, n, generator=None):
        device = None if generator is None else generator.device
        u, z = torch.randn(2, n, generator=generator, device=device)
        v = self.correlation * u + math.sqrt(1 - self.correlation**2) * z
        return torch.stack([u, v - u**2 - 1], 1)
