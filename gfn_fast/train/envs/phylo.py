"""Bayesian phylogenetic inference: build a rooted binary tree over n species by joins.

A state is a forest of rooted binary trees over the species (see forests.py for the
encoding); s0 has n single-leaf trees. An action joins two trees under a new root; after
n - 1 joins one tree remains and the state is terminal.

Reward: R(x) proportional to P(data | x) P(x), the JC69 likelihood of the tree by
Felsenstein's pruning algorithm times the uniform prior 1 / (2n - 3)!! over rooted binary
topologies. The constant is the joint probability of a reference tree, the one built by
greedy stepwise joins (always the join that most increases the forest's likelihood):
log R(x) = log P(data | x) + log P(x) - `log_reward_shift`. A constant leaves R / Z, the
posterior, unchanged; it brings log Z from about -225 (the paper preset) to a few nats,
the scale the other tasks have, so that TB's learned log Z, which starts at 0, reaches
it in a few dozen steps at the paper's lr. The evidence is log P(data) = log Z +
`log_reward_shift`.

Branch lengths are fixed, and equal to the simulator's: the data are simulated under JC69
on a random tree (joins of uniformly random pairs, from `seed`) whose branches all have
length `mutation_rate` (expected substitutions per site per branch), and the likelihood
gives every branch that same length. So R(x) / Z is the exact posterior over topologies
of the model that generated the data.

Backward policy: uniform over the trees of the state that are not single leaves, each
removable by one split. Every such split gives a distinct parent (a different clade is
removed), every parent arises this way (undoing the join that created one of its roots),
and each step adds one internal node, so the state graph is a DAG graded by the number of
joins; this p_B is therefore a distribution over the parents of every state but s0, and a
valid backward policy.
"""

from __future__ import annotations

import math

import torch

from gfn_fast.train.envs.base import DiscreteEnv
from gfn_fast.train.envs.forests import MAX_LEAVES, Forests
from gfn_fast.train.envs.jc69 import forest_log_likelihood, random_tree, simulate

PRESETS = {
    # The paper's BPI task: 10395 trees, 27007 forests.
    "paper": {"species": 7, "sites": 25, "mutation_rate": 0.3},
    # A tiny instance for tests: 15 trees, 37 forests.
    "tiny": {"species": 4, "sites": 25, "mutation_rate": 0.3},
}


def tree_count(species: int) -> int:
    """(2n - 3)!!: the number of rooted binary trees on n labelled leaves."""
    return math.prod(range(1, 2 * species - 2, 2))


class Phylogenetics(DiscreteEnv):
    """States [B, n - 1] int64 clade bitmasks (forests.py).

    Forward actions: index p of `forests.pairs`, join the trees named (a, b) = pairs[p].
    Backward actions: leaf l, split the tree that l names (its lowest leaf).

    Attributes:
        data: [n, sites] int64 simulated nucleotides; true_tree: [n - 1] the clades of the
            tree that generated them; reference_tree: [n - 1] the greedy tree, whose
            log R is 0; log_reward_shift: its log P(data | x) + log P(x), in float64
            (see the module docstring); forests: the `Forests` helper.

    Raises:
        ValueError: species outside [2, 8], sites < 1, or a mutation_rate that is not
            positive and finite.
    """

    # At most 353,522 forests (8 species): always enumerable. The policy reads the forest's
    # trees (ForestPolicy), not a flat feature vector.
    enumerable = True
    feature_layout = "forest"

    def __init__(
        self, species: int = 7, sites: int = 25, mutation_rate: float = 0.3, seed: int = 0
    ):
        if not 2 <= species <= MAX_LEAVES:
            raise ValueError(
                f"species: expected 2 to {MAX_LEAVES} (the int64 code of a forest holds "
                f"(n - 1) n bits), got {species}"
            )
        if sites < 1:
            raise ValueError(f"sites: expected >= 1, got {sites}")
        if not (mutation_rate > 0 and math.isfinite(mutation_rate)):
            raise ValueError(
                f"mutation_rate: expected a positive finite number, got {mutation_rate}"
            )
        self.species, self.sites, self.mutation_rate = species, sites, mutation_rate
        self.forests = Forests(species)
        generator = torch.Generator().manual_seed(seed)
        self.true_tree = random_tree(self.forests, generator)
        self.data = simulate(self.true_tree, self.forests, sites, mutation_rate, generator)
        self.log_prior = -math.log(tree_count(species))
        self.reference_tree = self._greedy_tree()
        reference = self.log_likelihood(self.reference_tree[None])[0]
        self.log_reward_shift = float(reference) + self.log_prior
        self.n_actions = len(self.forests.pairs)
        self.n_backward_actions = species
        self.max_length = species - 1
        self.feature_dim = species - 1
        self.state_radix = (2**species,) * (species - 1)

    def initial_states(self, batch_size, device=None):
        return self.forests.empty(batch_size, device)

    def forward_mask(self, states):
        return self.forests.joinable(states)

    def step(self, states, actions):
        return self.forests.join(states, actions)

    def backward_mask(self, states):
        return self.forests.splittable(states)

    def backward_step(self, states, backward_actions):
        return self.forests.split(states, backward_actions)

    def backward_action(self, states, actions):
        return self.forests.pairs.to(states.device)[actions, 0]

    def is_terminal(self, states):
        return states[:, 0] > 0

    def log_likelihood(self, states: torch.Tensor) -> torch.Tensor:
        """[B] float64 JC69 log P(data | forest), the sum over the forest's trees."""
        return forest_log_likelihood(self.forests, states, self.data, self.mutation_rate)

    def log_reward(self, states):
        return (self.log_likelihood(states) + (self.log_prior - self.log_reward_shift)).float()

    def _greedy_tree(self) -> torch.Tensor:
        """[n - 1] the tree of greedy stepwise joins: each join maximises the likelihood of
        the forest it makes (the likelihood of a forest is the product over its trees)."""
        state = self.initial_states(1)
        while not self.is_terminal(state)[0]:
            _, _, children = self.expand(state)
            state = children[self.log_likelihood(children).argmax()][None]
        return state[0]

    def features(self, states):
        """[B, n - 1] float32 clade bitmasks (exact below 2**24), decoded by the forest
        encoder (`gfn_fast.train.forest_policy`)."""
        return states.float()
