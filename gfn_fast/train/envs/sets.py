"""Set generation: add one unused element of a pool of D at a time until the set has N.

log R(x) = sum_{d in x} f(d), with f(d) ~ Uniform(-scale, scale) drawn once from `seed`.
"""

from __future__ import annotations

import math

import torch

from gfn_fast.train.envs.base import DiscreteEnv

PRESETS = {
    # The paper's size: C(32, 16) = 6e8 sets, too many to enumerate.
    "paper": {"pool": 32, "size": 16},
    # Small enough for exact metrics: C(12, 6) = 924 sets, 2510 states.
    "small": {"pool": 12, "size": 6},
    # The largest size whose exact metrics stay cheap on a laptop: 12870 sets, 39203 states.
    "medium": {"pool": 16, "size": 8},
}

# Enumerate (for exact metrics) only up to this many states.
MAX_ENUMERATED_STATES = 2_000_000


class Sets(DiscreteEnv):
    """States [B, D] int64 membership flags. Actions and backward actions: element index."""

    feature_layout = "membership"

    def __init__(self, pool: int = 12, size: int = 6, scale: float = 1.0, seed: int = 0):
        if not 1 <= size <= pool:
            raise ValueError(f"size: expected 1 <= size <= pool = {pool}, got {size}")
        if pool > 62:
            raise ValueError(f"pool: expected at most 62 elements (int64 state codes), got {pool}")
        self.pool, self.size = pool, size
        generator = torch.Generator().manual_seed(seed)
        self.f = (torch.rand(pool, generator=generator, dtype=torch.float64) * 2 - 1) * scale
        self.n_actions = pool
        self.n_backward_actions = pool
        self.max_length = size
        self.feature_dim = pool
        self.state_radix = (2,) * pool
        n_states = sum(math.comb(pool, k) for k in range(size + 1))
        self.enumerable = n_states <= MAX_ENUMERATED_STATES

    def initial_states(self, batch_size, device=None):
        return torch.zeros(batch_size, self.pool, dtype=torch.int64, device=device)

    def forward_mask(self, states):
        running = states.sum(-1, keepdim=True) < self.size
        return (states == 0) & running

    def step(self, states, actions):
        return states + torch.nn.functional.one_hot(actions, self.pool)

    def backward_mask(self, states):
        return states == 1

    def backward_step(self, states, backward_actions):
        return states - torch.nn.functional.one_hot(backward_actions, self.pool)

    def backward_action(self, states, actions):
        return actions

    def forward_action(self, parents, children):
        return (children - parents).argmax(-1)  # the one column that grew

    def is_terminal(self, states):
        return states.sum(-1) == self.size

    def log_reward(self, states):
        return (states.double() @ self.f.to(states.device)).float()

    def features(self, states):
        return states.float()

    def max_log_reward(self):
        return float(self.f.topk(self.size).values.sum())

    def log_partition(self):
        """log e_N(exp f): the elementary symmetric polynomial, by its O(D N) recursion."""
        log_e = torch.full((self.size + 1,), -math.inf, dtype=torch.float64)
        log_e[0] = 0.0
        for value in self.f:
            log_e[1:] = torch.logaddexp(log_e[1:], log_e[:-1] + value)
        return float(log_e[-1])
