"""Forests of rooted binary trees over n labelled leaves, stored as sorted clade bitmasks.

A forest is a row of n - 1 int64 values: the clades (leaf sets, as bitmasks) of its internal
nodes in ascending order, 0 for an unused slot (the zeros come first). A rooted binary
forest is determined by its set of clades, so two join orders that build the same forest
give the same row. A subset is numerically smaller than its supersets, so ascending order
lists every internal node after its children: replaying the clades left to right rebuilds
the forest bottom-up (`merge_schedule`), which is what both Felsenstein's pruning and the
forest encoder need.

A tree of the forest is named by its lowest leaf. Joining the trees named a < b makes a tree
named a; splitting tree a (removing its root clade) gives back its two subtrees.
"""

from __future__ import annotations

import torch

# State codes are radix 2**n numbers with n - 1 digits: (n - 1) * n bits must fit in int64.
MAX_LEAVES = 8


class Forests:
    """Vectorised operations on batches of forests [B, n - 1] over `leaves` leaves.

    Attributes:
        leaves: n.
        pairs: [n (n - 1) / 2, 2] int64 (a, b), a < b, in lexicographic order: join action
            p merges the trees named pairs[p, 0] and pairs[p, 1].

    Raises:
        ValueError: leaves outside [2, MAX_LEAVES].
    """

    def __init__(self, leaves: int):
        if not 2 <= leaves <= MAX_LEAVES:
            raise ValueError(
                f"leaves: expected 2 to {MAX_LEAVES} (a forest's int64 state code holds "
                f"(n - 1) * n bits), got {leaves}"
            )
        self.leaves = leaves
        self.pairs = torch.combinations(torch.arange(leaves), 2)
        # lowest_leaf[c] = index of the lowest set bit of clade c (0 for the empty clade).
        self._lowest_leaf = torch.tensor(
            [(c & -c).bit_length() - 1 if c else 0 for c in range(2**leaves)]
        )

    def empty(self, batch_size: int, device=None) -> torch.Tensor:
        """[batch_size, n - 1] forests of n single leaves (no internal node)."""
        return torch.zeros(batch_size, self.leaves - 1, dtype=torch.int64, device=device)

    def leaf_bits(self, device=None) -> torch.Tensor:
        """[n] the singleton clades 1 << l."""
        return 1 << torch.arange(self.leaves, device=device)

    def lowest_leaf(self, clades: torch.Tensor) -> torch.Tensor:
        """The lowest leaf of each clade (any shape; 0 for the empty clade)."""
        return self._lowest_leaf.to(clades.device)[clades]

    def contains(self, clades: torch.Tensor) -> torch.Tensor:
        """[..., n] bool: leaf l is in clade (any shape [...])."""
        leaves = torch.arange(self.leaves, device=clades.device)
        return ((clades[..., None] >> leaves) & 1).bool()

    def root_clades(self, states: torch.Tensor) -> torch.Tensor:
        """[B, n] the clade of the tree holding each leaf (its largest clade; 1 << l alone)."""
        inside = self.contains(states).transpose(1, 2)  # [B, n, n - 1]
        largest = (states[:, None, :] * inside).amax(-1)
        return torch.where(largest > 0, largest, self.leaf_bits(states.device))

    def tree_names(self, states: torch.Tensor) -> torch.Tensor:
        """[B, n] bool: leaf l is the lowest leaf of its tree (so it names a tree)."""
        below = self.leaf_bits(states.device) - 1
        return (self.root_clades(states) & below) == 0

    def joinable(self, states: torch.Tensor) -> torch.Tensor:
        """[B, n (n - 1) / 2] bool: pair p names two trees of the forest (none if one tree)."""
        names = self.tree_names(states)
        a, b = self.pairs.to(states.device).unbind(-1)
        return names[:, a] & names[:, b]

    def splittable(self, states: torch.Tensor) -> torch.Tensor:
        """[B, n] bool: leaf l names a tree of the forest that is not a single leaf."""
        not_leaf = self.root_clades(states) != self.leaf_bits(states.device)
        return self.tree_names(states) & not_leaf

    def join(self, states: torch.Tensor, pairs: torch.Tensor) -> torch.Tensor:
        """Forests after joining the trees named by `pairs` [B] (indices into `self.pairs`)
        under a new root; the forests must have more than one tree."""
        roots = self.root_clades(states)
        a, b = self.pairs.to(states.device)[pairs].unbind(-1)
        rows = torch.arange(states.shape[0], device=states.device)
        joined = roots[rows, a] | roots[rows, b]
        # Sorted ascending, column 0 is an unused slot whenever two trees remain to join.
        return torch.cat([joined[:, None], states[:, 1:]], 1).sort(-1).values

    def split(self, states: torch.Tensor, names: torch.Tensor) -> torch.Tensor:
        """Forests after removing the root of the tree named `names` [B] (not a leaf)."""
        roots = self.root_clades(states).gather(1, names[:, None])
        return torch.where(states == roots, 0, states).sort(-1).values

    def merge_schedule(
        self, states: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """How to rebuild each forest bottom-up: the joins its clades record, in order.

        Replaying the clades in ascending order, clade k joins two trees of the forest built
        so far; they are named here by their lowest leaves (the joined tree takes the name
        `left`).

        Returns:
            (used, left, right): [B, n - 1] each; used is False on unused slots (whose left
            and right are 0 and must be ignored).
        """
        roots = self.leaf_bits(states.device).expand(states.shape[0], -1)
        lefts, rights = [], []
        for k in range(states.shape[1]):
            clade = states[:, k]
            left = self.lowest_leaf(clade)
            left_tree = roots.gather(1, left[:, None])[:, 0]
            lefts.append(left)
            rights.append(self.lowest_leaf(clade & ~left_tree))
            roots = torch.where(self.contains(clade), clade[:, None], roots)
        return states > 0, torch.stack(lefts, 1), torch.stack(rights, 1)
