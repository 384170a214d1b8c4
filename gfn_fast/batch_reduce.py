"""Reductions over the trajectories of a batch: local, or across a torch.distributed group.

The batch step of MATH.md needs only a few global statistics (K, sums, maxima and
logsumexps over the trajectories). With a process group each rank holds a slice of the
batch; all-reducing these scalars makes every coefficient equal to the unsplit batch's.
"""

from __future__ import annotations

import math

import torch


class LocalReduce:
    """The whole batch is on this process."""

    def count(self, local: int) -> int:
        return local

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return x.sum()

    def max(self, x: torch.Tensor) -> torch.Tensor:
        return x.max()

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        return torch.logsumexp(x, dim=0)

    def mean(self, x: torch.Tensor, k: int) -> torch.Tensor:
        return self.sum(x) / k

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=0)


class GroupReduce(LocalReduce):
    """The batch is split across the ranks of `group` (any split, empty slices allowed)."""

    def __init__(self, group):
        import torch.distributed as dist

        self._dist = dist
        self._group = group

    def _all_reduce(self, x: torch.Tensor, op) -> torch.Tensor:
        x = x.detach().clone()
        self._dist.all_reduce(x, op=op, group=self._group)
        return x

    def count(self, local: int) -> int:
        total = torch.tensor([local], dtype=torch.int64)
        return int(self._all_reduce(total, self._dist.ReduceOp.SUM))

    def sum(self, x: torch.Tensor) -> torch.Tensor:
        return self._all_reduce(x.sum(), self._dist.ReduceOp.SUM)

    def max(self, x: torch.Tensor) -> torch.Tensor:
        local = x.max() if x.numel() else x.new_tensor(-math.inf)
        return self._all_reduce(local, self._dist.ReduceOp.MAX)

    def logsumexp(self, x: torch.Tensor) -> torch.Tensor:
        top = self.max(x)
        shift = torch.where(torch.isfinite(top), top, torch.zeros_like(top))
        return shift + torch.log(self.sum(torch.exp(x - shift)))

    def softmax(self, x: torch.Tensor) -> torch.Tensor:
        return torch.exp(x - self.logsumexp(x))
