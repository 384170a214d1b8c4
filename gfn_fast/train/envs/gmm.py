"""Gaussian mixture in 2-D: 9 equal components at (i, j), i, j in {0, 1, 2}, variance 0.1."""

from __future__ import annotations

import math

import torch

from gfn_fast.train.envs.base import ContinuousEnv

PRESETS = {"paper": {}}


class GaussianMixture(ContinuousEnv):
    """Normalised target density R(x) = mean_k N(x; mu_k, variance I) (so log Z = 0)."""

    center = (1.0, 1.0)
    scale = (1.0, 1.0)

    def __init__(self, variance: float = 0.1):
        if variance <= 0:
            raise ValueError(f"variance: expected > 0, got {variance}")
        self.variance = variance
        grid = torch.arange(3, dtype=torch.float32)
        self.means = torch.cartesian_prod(grid, grid)

    def log_reward(self, x):
        squared = ((x[:, None, :] - self.means.to(x.device)) ** 2).sum(-1)
        log_normal = -squared / (2 * self.variance) - math.log(2 * math.pi * self.variance)
        return torch.logsumexp(log_normal, 1) - math.log(self.means.shape[0])

    def sample_target(self, n, generator=None):
        device = None if generator is None else generator.device
        component = torch.randint(self.means.shape[0], (n,), generator=generator, device=device)
        noise = torch.randn(n, 2, generator=generator, device=device) * math.sqrt(self.variance)
        return self.means.to(device)[component] + noise
