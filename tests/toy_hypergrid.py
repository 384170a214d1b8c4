"""An enumerable toy: the 3x3 hypergrid with tabular softmax policies, in float64.

States (i, j) in {0, 1, 2}^2 start at (0, 0); a forward action adds 1 to a coordinate or
stops. Its 19 complete trajectories are enumerated, so every expectation over batches of
K trajectories can be computed exactly, and the divergences themselves have closed forms
whose gradients autograd gives exactly.
"""

from __future__ import annotations

import itertools
import math

import torch

HEIGHT = 3
STOP = 2
F64 = torch.float64


def _index(i: int, j: int) -> int:
    return i * HEIGHT + j


def enumerate_trajectories() -> list[list[tuple[int, int]]]:
    """Every complete trajectory as its list of visited states, ending at the terminal one."""
    trajectories = []

    def extend(path):
        trajectories.append(path)
        i, j = path[-1]
        if i + 1 < HEIGHT:
            extend(path + [(i + 1, j)])
        if j + 1 < HEIGHT:
            extend(path + [(i, j + 1)])

    extend([(0, 0)])
    return trajectories


class ToyHypergrid:
    """Tabular p_F(theta) over {right, up, stop} and p_B(phi) over {from left, from below}."""

    def __init__(self, seed: int = 0):
        gen = torch.Generator().manual_seed(seed)
        cells = HEIGHT * HEIGHT
        self.theta = (0.7 * torch.randn(cells, 3, generator=gen, dtype=F64)).requires_grad_()
        self.phi = (0.7 * torch.randn(cells, 2, generator=gen, dtype=F64)).requires_grad_()
        self.log_reward_grid = torch.randn(cells, generator=gen, dtype=F64)
        self.trajectories = enumerate_trajectories()
        self.terminal = torch.tensor([_index(*t[-1]) for t in self.trajectories])
        self.log_reward = self.log_reward_grid[self.terminal]
        self.log_z = torch.logsumexp(self.log_reward_grid, 0)

    def _forward_logp(self, theta: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(HEIGHT * HEIGHT, 3, dtype=torch.bool)
        for i, j in itertools.product(range(HEIGHT), repeat=2):
            mask[_index(i, j), 0] = i + 1 < HEIGHT
            mask[_index(i, j), 1] = j + 1 < HEIGHT
        return torch.log_softmax(theta.masked_fill(~mask, -math.inf), dim=1)

    def _backward_logp(self, phi: torch.Tensor) -> torch.Tensor:
        mask = torch.ones(HEIGHT * HEIGHT, 2, dtype=torch.bool)
        for i, j in itertools.product(range(HEIGHT), repeat=2):
            mask[_index(i, j), 0] = i > 0
            mask[_index(i, j), 1] = j > 0
        safe = phi.masked_fill(~mask, -math.inf)
        # (0, 0) has no parent; its row is never used.
        safe = torch.where(mask.any(1, keepdim=True), safe, torch.zeros_like(safe))
        return torch.log_softmax(safe, dim=1)

    def log_pf(self, theta: torch.Tensor | None = None) -> torch.Tensor:
        """[19] log p_F(tau) as a differentiable function of theta."""
        table = self._forward_logp(self.theta if theta is None else theta)
        out = []
        for path in self.trajectories:
            total = table[_index(*path[-1]), STOP]
            for (i, j), (ni, _nj) in zip(path[:-1], path[1:], strict=True):
                total = total + table[_index(i, j), 0 if ni > i else 1]
            out.append(total)
        return torch.stack(out)

    def log_pb(self, phi: torch.Tensor | None = None) -> torch.Tensor:
        """[19] log p_B(tau | x) as a differentiable function of phi."""
        table = self._backward_logp(self.phi if phi is None else phi)
        out = []
        for path in self.trajectories:
            total = torch.zeros((), dtype=F64)
            for (i, _j), (ni, nj) in zip(path[:-1], path[1:], strict=True):
                total = total + table[_index(ni, nj), 0 if ni > i else 1]
            out.append(total)
        return torch.stack(out)

    def jacobians(self) -> tuple[torch.Tensor, torch.Tensor]:
        """d log p_F / d theta [19, P_theta] and d log p_B / d phi [19, P_phi]."""
        js = torch.autograd.functional.jacobian(self.log_pf, self.theta.detach())
        jb = torch.autograd.functional.jacobian(self.log_pb, self.phi.detach())
        return js.reshape(len(self.trajectories), -1), jb.reshape(len(self.trajectories), -1)

    def log_target(self) -> torch.Tensor:
        """[19] log pi(tau) = log p_B(tau | x) + log R(x) - log Z (differentiable in phi)."""
        return self.log_pb() + self.log_reward - self.log_z

    def behaviour_log_q(self, seed: int = 1) -> torch.Tensor:
        """[19] log q(tau) of a fixed, different tabular forward policy (off-policy tests)."""
        gen = torch.Generator().manual_seed(seed)
        other = torch.randn(HEIGHT * HEIGHT, 3, generator=gen, dtype=F64)
        return self.log_pf(other).detach()


def all_batches(num_trajectories: int, k: int) -> torch.Tensor:
    """[num_trajectories^k, k] every ordered batch of k trajectory indices."""
    grids = torch.meshgrid(*[torch.arange(num_trajectories)] * k, indexing="ij")
    return torch.stack([g.reshape(-1) for g in grids], dim=1)
