"""Hypergrid: walk on {0..H-1}^ndim by adding 1 to a coordinate, or stop.

Reward as in torchgfn's HyperGrid and the thesis: with a_i = |x_i / (H - 1) - 0.5|,
R(x) = R0 + R1 * prod_i 1[0.25 < a_i] + R2 * prod_i 1[0.3 < a_i < 0.4].
"""

from __future__ import annotations

import torch

from gfn_fast.train.envs.base import DiscreteEnv

PRESETS = {
    # The thesis's sparse grid: the low-reward plateau is 2000x below the modes.
    "sparse": {"ndim": 2, "height": 12, "r0": 1e-3, "r1": 0.5, "r2": 2.0},
    # torchgfn's default HyperGrid.
    "torchgfn": {"ndim": 2, "height": 8, "r0": 0.1, "r1": 0.5, "r2": 2.0},
}


class HyperGrid(DiscreteEnv):
    """States [B, ndim + 1]: the coordinates, then a done flag set by the stop action.

    Forward actions: 0..ndim-1 add 1 to that coordinate (while below H - 1); ndim stops.
    Backward actions: 0..ndim-1 subtract 1 from that coordinate; ndim undoes the stop (the
    only way back from a done state).
    """

    def __init__(
        self, ndim: int = 2, height: int = 8, r0: float = 0.1, r1: float = 0.5, r2: float = 2.0
    ):
        if ndim < 1 or height < 2:
            raise ValueError(
                f"ndim, height: expected ndim >= 1 and height >= 2, got {ndim}, {height}"
            )
        if r0 < 0 or r1 < 0 or r2 < 0 or r0 + r1 + r2 <= 0:
            raise ValueError(
                f"r0, r1, r2: expected non-negative with a positive sum, got {r0}, {r1}, {r2}"
            )
        self.ndim, self.height = ndim, height
        self.r0, self.r1, self.r2 = r0, r1, r2
        self.n_actions = ndim + 1
        self.n_backward_actions = ndim + 1
        self.max_length = ndim * (height - 1) + 1
        self.feature_dim = ndim * height
        self.state_radix = (height,) * ndim + (2,)
        # Small constants of the hot path, copied once to each device they are used on:
        # indexing an identity replaces one_hot, whose range check costs more than the
        # lookup; `limits` holds, per state column, the value its forward action needs to
        # stay below.
        # `band` holds, per coordinate value, 0 (plateau), 1 (outer band) or 2 (ring, which
        # lies inside the outer band): R depends on the least band of a state's coordinates
        # alone, so log R is one lookup in `log_rewards` (the formula, evaluated per band).
        a = (torch.arange(height).float() / (height - 1) - 0.5).abs()
        outer, ring = torch.tensor([0.0, 1.0, 1.0]), torch.tensor([0.0, 0.0, 1.0])
        self._tables = {
            "features": torch.eye(height),
            "moves": torch.eye(ndim + 1, dtype=torch.int64),
            "limits": torch.tensor([height - 1] * ndim + [1]),
            "band": (a > 0.25).long() + ((a > 0.3) & (a < 0.4)).long(),
            "log_rewards": torch.log(r0 + r1 * outer + r2 * ring),
        }
        self._on_device: dict = {}

    def _table(self, name: str, device) -> torch.Tensor:
        key = (name, device)
        if key not in self._on_device:
            self._on_device[key] = self._tables[name].to(device)
        return self._on_device[key]

    def initial_states(self, batch_size, device=None):
        return torch.zeros(batch_size, self.ndim + 1, dtype=torch.int64, device=device)

    def forward_mask(self, states):
        # A done state's columns are lifted past every limit: no action left.
        lifted = states.add(states[:, -1:], alpha=self.height)
        return lifted < self._table("limits", states.device)

    def step(self, states, actions):
        return states + self._table("moves", states.device)[actions]

    def backward_mask(self, states):
        done = states[:, -1:] == 1
        shrink = (states[:, : self.ndim] > 0) & ~done
        return torch.cat([shrink, done], 1)

    def backward_step(self, states, backward_actions):
        return states - torch.nn.functional.one_hot(backward_actions, self.ndim + 1)

    def backward_action(self, states, actions):
        return actions

    def forward_action(self, parents, children):
        return (children - parents).argmax(-1)  # the one column that grew

    def is_terminal(self, states):
        return states[:, -1] == 1

    def log_reward(self, states):
        band = self._table("band", states.device)[states[:, : self.ndim]].amin(-1)
        return self._table("log_rewards", states.device)[band]

    def features(self, states):
        return self._table("features", states.device)[states[:, : self.ndim]].flatten(1)
