"""The Jukes-Cantor (JC69) model of nucleotide substitution: a seeded simulator, and the
likelihood of forests by Felsenstein's pruning algorithm, vectorised over forests and sites.

Under JC69 every nucleotide is equally likely at the root (pi = 1/4) and, along a branch of
length t (expected substitutions per site), a site is redrawn uniformly from the four
nucleotides with probability c = 1 - exp(-4 t / 3), else kept:
P(j | i, t) = (1 - c) delta_ij + c / 4.
"""

from __future__ import annotations

import math

import torch

from gfn_fast.train.envs.forests import Forests

NUCLEOTIDES = 4


def redraw_probability(branch_length: float) -> float:
    """c = 1 - exp(-4 t / 3) for t = `branch_length` (by expm1: exact for tiny t).

    Raises:
        ValueError: branch_length not positive and finite.
    """
    if not (branch_length > 0 and math.isfinite(branch_length)):
        raise ValueError(f"branch_length: expected a positive finite number, got {branch_length}")
    return -math.expm1(-4.0 * branch_length / 3.0)


def transition_matrix(branch_length: float) -> torch.Tensor:
    """[4, 4] float64 P(child j | parent i) along a branch of `branch_length`."""
    redraw = redraw_probability(branch_length)
    same = torch.eye(NUCLEOTIDES, dtype=torch.float64)
    return (1 - redraw) * same + redraw / NUCLEOTIDES


def random_tree(forests: Forests, generator: torch.Generator) -> torch.Tensor:
    """[n - 1] the clades of a random rooted tree: join a uniformly random pair of trees
    until one is left (the coalescent's topology distribution)."""
    state = forests.empty(1)
    for _ in range(forests.leaves - 1):
        allowed = forests.joinable(state)[0].nonzero()[:, 0]
        choice = allowed[torch.randint(len(allowed), (1,), generator=generator)]
        state = forests.join(state, choice)
    return state[0]


def simulate(
    tree: torch.Tensor, forests: Forests, sites: int, branch_length: float, generator
) -> torch.Tensor:
    """[n, sites] int64 nucleotides (0..3) at the leaves of `tree` [n - 1] (clades), drawn
    under JC69 with every branch of length `branch_length`: uniform at the root, then
    each child resampled from P(. | parent) down the tree."""
    transition = transition_matrix(branch_length)
    clades = sorted(tree.tolist(), reverse=True)  # parents before children
    full = clades[0]
    states = {full: torch.randint(NUCLEOTIDES, (sites,), generator=generator)}
    for clade in clades:
        for child in _children(clade, clades):
            probabilities = transition[states[clade]]
            states[child] = torch.multinomial(probabilities, 1, generator=generator)[:, 0]
    return torch.stack([states[1 << leaf] for leaf in range(forests.leaves)])


def _children(clade: int, clades: list[int]) -> list[int]:
    """The two child clades of `clade` in the tree with internal clades `clades`."""
    inner = [c for c in clades if c != clade and c & clade == c]
    maximal = [c for c in inner if not any(c != d and c & d == c for d in inner)]
    covered = 0
    for c in maximal:
        covered |= c
    rest = clade & ~covered
    singles = [1 << leaf for leaf in range(rest.bit_length()) if rest >> leaf & 1]
    return maximal + singles


def forest_log_likelihood(
    forests: Forests, states: torch.Tensor, data: torch.Tensor, branch_length: float
) -> torch.Tensor:
    """[B] float64 log P(data | forest) of forests `states` [B, n - 1], every branch of
    length `branch_length`: the sum over the forest's trees of their JC69 log-likelihoods
    (for a complete tree, its likelihood), by Felsenstein's pruning algorithm.

    Conditional likelihoods [B, n, patterns, 4] are kept per tree (indexed by its lowest
    leaf) and rescaled at every join, so that very short branches (t = 1e-100, where each
    change costs a factor t / 3) do not underflow.

    Args:
        data: [n, sites] int64 nucleotides in 0..3.
    """
    batch, device = states.shape[0], states.device
    redraw = redraw_probability(branch_length)

    def up_branch(partial):
        """sum_j P(j | i, t) partial[..., j], by JC69's closed form."""
        return (1 - redraw) * partial + redraw / NUCLEOTIDES * partial.sum(-1, keepdim=True)

    # Equal sites (columns of data) have equal likelihoods: compute each pattern once.
    patterns, counts = torch.unique(data.to(device), dim=1, return_counts=True)
    leaves = torch.nn.functional.one_hot(patterns, NUCLEOTIDES).double()
    partial = leaves.expand(batch, -1, -1, -1).clone()  # [B, n, sites, 4], updated in place
    log_scale = torch.zeros(partial.shape[:3], dtype=torch.float64, device=device)
    used, left, right = forests.merge_schedule(states)
    for k in range(states.shape[1]):
        rows = used[:, k].nonzero()[:, 0]
        a, b = left[rows, k], right[rows, k]
        joined = up_branch(partial[rows, a]) * up_branch(partial[rows, b])
        scale = joined.amax(-1, keepdim=True)
        log_scale[rows, a] = log_scale[rows, a] + log_scale[rows, b] + scale[..., 0].log()
        partial[rows, a] = joined / scale
    per_tree = (partial.sum(-1) / NUCLEOTIDES).log() + log_scale  # [B, n, patterns]
    named = forests.tree_names(states)
    return torch.where(named, per_tree @ counts.double(), 0.0).sum(-1)
