"""Interfaces shared by the batched environments.

A discrete environment holds no per-trajectory state: states are int64 tensors [B, W]
and every method maps a batch of states to a batch of results, on the states' device.
Every action moves one level down a DAG (one step further from the initial state), so
the exact terminal distribution is a level-by-level dynamic programme (see metrics.py).
"""

from __future__ import annotations

import functools
import math

import torch


class DiscreteEnv:
    """A GFlowNet over a finite DAG of states, stepped for a whole batch at once.

    Subclasses set `n_actions`, `n_backward_actions`, `max_length` (most forward steps of a
    trajectory), `feature_dim` and `state_radix` (per state column, an upper bound on its
    values plus one, used to give every state a unique int64 code), declare the capabilities
    below where they differ from the defaults, and implement the methods that raise below.

    Capabilities (declared, so that policies, the sampler and the trainer never probe):
        action_space: "discrete" (masked categorical actions; `DiscretePolicy`).
        is_tree: each state has one parent, so p_B = 1 (no learned p_B).
        enumerable: the states are few enough to enumerate, so metrics are exact; False
            for sizes that are not (the trainer then reports the Monte Carlo L1).
        feature_layout: "flat" (any vector), "membership" (a 0/1 vector over a pool of
            `feature_dim` elements: the input of a deep-set policy), or "forest" (states
            are forests of trees, read by `ForestPolicy`).
    """

    n_actions: int
    n_backward_actions: int
    max_length: int
    feature_dim: int
    state_radix: tuple[int, ...]
    action_space: str = "discrete"
    is_tree: bool = False
    enumerable: bool = True
    feature_layout: str = "flat"

    def initial_states(self, batch_size: int, device=None) -> torch.Tensor:
        """[batch_size, W] int64 copies of the initial state s0."""
        raise NotImplementedError

    def forward_mask(self, states: torch.Tensor) -> torch.Tensor:
        """[B, n_actions] bool: the actions allowed in each state (all False if terminal)."""
        raise NotImplementedError

    def step(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """Children of `states` [B, W] under allowed `actions` [B] (int64)."""
        raise NotImplementedError

    def backward_mask(self, states: torch.Tensor) -> torch.Tensor:
        """[B, n_backward_actions] bool: the ways back to a parent (all False at s0)."""
        raise NotImplementedError

    def backward_step(self, states: torch.Tensor, backward_actions: torch.Tensor) -> torch.Tensor:
        """Parents of `states` [B, W] under allowed `backward_actions` [B]."""
        raise NotImplementedError

    def backward_action(self, states: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        """[B] the backward action that undoes `actions` taken from `states`."""
        raise NotImplementedError

    def forward_action(self, parents: torch.Tensor, children: torch.Tensor) -> torch.Tensor:
        """[B] the forward action that leads from `parents` [B, W] to `children` [B, W].

        Generic: tries every allowed action and matches state codes (B * n_actions steps);
        environments override it with a closed form.
        """
        row, action = self.forward_mask(parents).nonzero(as_tuple=True)
        reached = self.state_code(self.step(parents[row], action)) == self.state_code(children)[row]
        taken = torch.full((parents.shape[0],), -1, dtype=torch.int64, device=parents.device)
        return taken.index_put((row[reached],), action[reached])

    def is_terminal(self, states: torch.Tensor) -> torch.Tensor:
        """[B] bool: the state is a finished object x (no forward action left)."""
        raise NotImplementedError

    def log_reward(self, states: torch.Tensor) -> torch.Tensor:
        """[B] float32 log R(x) of terminal states."""
        raise NotImplementedError

    def features(self, states: torch.Tensor) -> torch.Tensor:
        """[B, feature_dim] float32 policy input."""
        raise NotImplementedError

    def max_log_reward(self) -> float:
        """max_x log R(x), by enumeration unless a subclass knows it in closed form."""
        return float(self.log_reward(self.terminal_states()).max())

    @property
    def state_codes_exact(self) -> bool:
        """Whether `state_code` is exact: the product of `state_radix` fits in int64."""
        return math.prod(self.state_radix) < 2**63

    def state_code(self, states: torch.Tensor) -> torch.Tensor:
        """[B] int64 code, equal for equal states and distinct otherwise (where
        `state_codes_exact`; larger state spaces would wrap around)."""
        places = _place_values(self.state_radix, states.device)
        if states.device.type == "cpu":  # one int64 matrix-vector product: 4x faster
            return states.mv(places)
        return (states * places).sum(-1)  # (CUDA has no int64 matmul)

    def log_pb_uniform(self, states: torch.Tensor) -> torch.Tensor:
        """[B] log of the uniform backward probability into `states`: -log(#parents)."""
        parents = self.backward_mask(states).sum(-1).clamp_min(1)
        return -torch.log(parents.to(torch.float32))

    def expand(self, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Every allowed transition out of `states` [B, W].

        Returns (parent [M] index into states, action [M], child [M, W]).
        """
        parent, action = self.forward_mask(states).nonzero(as_tuple=True)
        return parent, action, self.step(states[parent], action)

    def terminal_states(self, device=None) -> torch.Tensor:
        """[M, W] every terminal state, in ascending `state_code` order (breadth-first)."""
        frontier = self.initial_states(1, device)
        terminals = []
        while frontier.shape[0]:
            _, _, children = self.expand(frontier)
            children = unique_states(self, children)[0]
            done = self.is_terminal(children)
            terminals.append(children[done])
            frontier = children[~done]
        return unique_states(self, torch.cat(terminals))[0]

    def log_partition(self) -> float:
        """Exact log Z = log sum_x R(x), by enumeration unless known in closed form.

        Raises:
            ValueError: the environment is not `enumerable` and has no closed form.
        """
        if not self.enumerable:
            raise ValueError(
                f"env: {type(self).__name__} with these sizes has too many states to "
                "enumerate, and its log Z has no closed form"
            )
        return float(torch.logsumexp(self.log_reward(self.terminal_states()).double(), 0))


@functools.cache
def _place_values(radix: tuple[int, ...], device: torch.device) -> torch.Tensor:
    """[W] the weight of each state column in `state_code` (mixed radix, last column 1),
    modulo 2**64 as int64, so that a state space too large for exact codes wraps around
    (as int64 arithmetic does) instead of failing to build the weights."""
    places = [math.prod(radix[column + 1 :]) % 2**64 for column in range(len(radix))]
    wrapped = [place - 2**64 if place >= 2**63 else place for place in places]
    return torch.tensor(wrapped, dtype=torch.int64, device=device)


def unique_states(env: DiscreteEnv, states: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Distinct rows of `states` [B, W] sorted by code, and [B] the index of each row's copy."""
    codes, inverse = torch.unique(env.state_code(states), return_inverse=True)
    return states[first_rows(inverse, codes.shape[0])], inverse


def first_rows(inverse: torch.Tensor, count: int) -> torch.Tensor:
    """[count] the first row of each of `count` groups, given each row's group `inverse`."""
    first = inverse.new_full((count,), inverse.shape[0])
    return first.scatter_reduce(
        0, inverse, torch.arange(inverse.shape[0], device=inverse.device), "amin"
    )


class ContinuousEnv:
    """A 2-D continuous task: from s0 = (0, 0), step t replaces coordinate t with a real value.

    Each x has exactly one trajectory, so p_B = 1 and p_T(x) = p_F(tau). Subclasses give a
    normalised target density (`log_reward`, log Z = 0), exact target samples, and the
    location/scale of the target per coordinate (used to initialise the policy).

    Capabilities, as `DiscreteEnv` declares them: real-valued actions (a
    `GaussianMixturePolicy`), a tree, not enumerable (the metric is Jensen-Shannon), and
    features (x1, x2, one-hot of the coordinate written next).
    """

    dim: int = 2
    max_length: int = 2
    feature_dim: int = 4  # (x1, x2, one-hot step)
    action_space: str = "continuous"
    is_tree: bool = True
    enumerable: bool = False
    feature_layout: str = "coordinates+next-coordinate"
    center: tuple[float, float]
    scale: tuple[float, float]

    def initial_states(self, batch_size: int, device=None) -> torch.Tensor:
        """[batch_size, 3] float32 states (x1, x2, steps taken)."""
        return torch.zeros(batch_size, 3, device=device)

    def step(self, states: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """Write `values` [B] into the next coordinate of `states` [B, 3]."""
        t = states[:, 2].long()
        coordinate = torch.nn.functional.one_hot(t, self.dim).to(states.dtype)
        x = states[:, : self.dim] * (1 - coordinate) + values[:, None] * coordinate
        return torch.cat([x, (t + 1).to(states.dtype)[:, None]], 1)

    def is_terminal(self, states: torch.Tensor) -> torch.Tensor:
        """[B] bool: both coordinates have been written."""
        return states[:, 2] >= self.dim

    def features(self, states: torch.Tensor) -> torch.Tensor:
        """[B, 4]: the coordinates and a one-hot of the coordinate to write next."""
        t = states[:, 2].long().clamp_max(self.dim - 1)
        onehot = torch.nn.functional.one_hot(t, self.dim).to(states.dtype)
        return torch.cat([states[:, : self.dim], onehot], 1)

    def terminal_objects(self, states: torch.Tensor) -> torch.Tensor:
        """[B, 2] the points x of terminal states."""
        return states[:, : self.dim]

    def log_reward(self, x: torch.Tensor) -> torch.Tensor:
        """[B] normalised log target density at points x [B, 2]."""
        raise NotImplementedError

    def sample_target(self, n: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """[n, 2] exact samples of the target, on the generator's device."""
        raise NotImplementedError

    def log_partition(self) -> float:
        """log Z = 0: the reward is a normalised density."""
        return 0.0
