"""Autoregressive sequences: append one of D symbols, or the end token, up to length N.

log R(x) = sum_i g(i) f(x_i) over the positions i of x, with f(d) ~ Uniform(-scale, scale)
and g(i) ~ Uniform(0, 1) drawn once from `seed`. Each sequence has one trajectory (p_B = 1).
"""

from __future__ import annotations

import torch

from gfn_fast.train.envs.base import DiscreteEnv

PRESETS = {
    # The paper's alphabet and length: 299592 sequences, enumerated for exact metrics.
    "paper": {"alphabet": 8, "length": 6},
    # A tiny instance for tests: 84 sequences.
    "tiny": {"alphabet": 4, "length": 3},
}


class Sequences(DiscreteEnv):
    """States [B, N + 1]: tokens (0 = empty, 1..D = symbols), then a done flag.

    Forward actions 0..D-1 append symbol d + 1; action D ends a non-empty sequence. A
    sequence of length N is terminal without the end token. The single backward action
    removes the end flag, else the last symbol.
    """

    is_tree = True

    def __init__(self, alphabet: int = 8, length: int = 6, scale: float = 2.0, seed: int = 0):
        if alphabet < 1 or length < 1:
            raise ValueError(f"alphabet, length: expected >= 1, got {alphabet}, {length}")
        self.alphabet, self.length = alphabet, length
        generator = torch.Generator().manual_seed(seed)
        self.f = (torch.rand(alphabet, generator=generator, dtype=torch.float64) * 2 - 1) * scale
        self.g = torch.rand(length, generator=generator, dtype=torch.float64)
        self.n_actions = alphabet + 1
        self.n_backward_actions = 1
        self.max_length = length
        self.feature_dim = length * (alphabet + 1)
        self.state_radix = (alphabet + 1,) * length + (2,)

    def initial_states(self, batch_size, device=None):
        return torch.zeros(batch_size, self.length + 1, dtype=torch.int64, device=device)

    def _sequence_length(self, states):
        return (states[:, : self.length] > 0).sum(-1)

    def forward_mask(self, states):
        n = self._sequence_length(states)[:, None]
        running = (states[:, -1:] == 0) & (n < self.length)
        symbols = running.expand(-1, self.alphabet)
        return torch.cat([symbols, running & (n > 0)], 1)

    def step(self, states, actions):
        n = self._sequence_length(states)
        end = actions == self.alphabet
        position = torch.where(end, self.length, n)
        value = torch.where(end, 1, actions + 1)
        return states.scatter(1, position[:, None], value[:, None])

    def backward_mask(self, states):
        return (states != 0).any(-1, keepdim=True)

    def backward_step(self, states, backward_actions):
        n = self._sequence_length(states)
        done = states[:, -1] == 1
        position = torch.where(done, self.length, n - 1)
        return states.scatter(1, position[:, None], 0)

    def backward_action(self, states, actions):
        return torch.zeros_like(actions)

    def is_terminal(self, states):
        return (states[:, -1] == 1) | (self._sequence_length(states) == self.length)

    def log_reward(self, states):
        tokens = states[:, : self.length]
        f = torch.cat([torch.zeros(1, dtype=torch.float64), self.f]).to(states.device)
        return (f[tokens] * self.g.to(states.device)).sum(-1).float()

    def features(self, states):
        onehot = torch.nn.functional.one_hot(states[:, : self.length], self.alphabet + 1)
        return onehot.flatten(1).float()

    def max_log_reward(self):
        best_per_position = (self.g[:, None] * self.f[None, :]).max(-1).values
        return float(best_per_position.cumsum(0).max())

    def log_partition(self):
        """log sum_{k=1..N} prod_{i<k} sum_d exp(g(i) f(d)): position terms factorise."""
        per_position = torch.logsumexp(self.g[:, None] * self.f[None, :], -1)
        return float(torch.logsumexp(per_position.cumsum(0), 0))
