"""The phylo environment: tree counts, the JC69 likelihood against brute force, the
simulator, uniform p_B, and the forest policy's symmetries."""

from __future__ import annotations

import itertools
import json
import math

import pytest
import torch

from gfn_fast.train import envs
from gfn_fast.train.cli import main
from gfn_fast.train.envs.forests import Forests
from gfn_fast.train.envs.jc69 import forest_log_likelihood, simulate
from gfn_fast.train.envs.phylo import Phylogenetics, tree_count
from gfn_fast.train.policies import make_policy


def rooted_trees(leaves: list[int]):
    """Every rooted binary tree on `leaves` as a nested tuple, by inserting the last leaf
    above every node of every tree on the others (independent of the env's forests)."""
    if len(leaves) == 1:
        yield leaves[0]
        return

    def insertions(tree, leaf):
        yield (tree, leaf)
        if isinstance(tree, tuple):
            left, right = tree
            for grafted in insertions(left, leaf):
                yield (grafted, right)
            for grafted in insertions(right, leaf):
                yield (left, grafted)

    for tree in rooted_trees(leaves[:-1]):
        yield from insertions(tree, leaves[-1])


def clades(tree) -> list[int]:
    """The internal clades (bitmasks) of a nested-tuple tree."""
    found: list[int] = []

    def visit(node) -> int:
        if not isinstance(node, tuple):
            return 1 << node
        clade = visit(node[0]) | visit(node[1])
        found.append(clade)
        return clade

    visit(tree)
    return found


def as_states(trees) -> torch.Tensor:
    return torch.tensor([sorted(clades(tree)) for tree in trees])


def jc69(i: int, j: int, t: float) -> float:
    return 0.25 + ((i == j) - 0.25) * math.exp(-4 * t / 3)


def brute_force_log_likelihood(tree, data: torch.Tensor, t: float) -> float:
    """log P(data | tree): per site, the sum over every assignment of nucleotides to the
    internal nodes of pi(root) * prod over branches P(child | parent, t)."""
    internal: list[tuple] = []  # internal node k is internal[k]; the root is 0
    branches: list[tuple[int, int | None, int | None]] = []  # (parent, child node, child leaf)

    def collect(node) -> int:
        k = len(internal)
        internal.append(node)
        for child in node:
            if isinstance(child, tuple):
                branches.append((k, collect(child), None))
            else:
                branches.append((k, None, child))
        return k

    collect(tree)
    total = 0.0
    for site in data.T.tolist():
        likelihood = 0.0
        for states in itertools.product(range(4), repeat=len(internal)):
            probability = 0.25
            for parent, node, leaf in branches:
                child = states[node] if leaf is None else site[leaf]
                probability *= jc69(states[parent], child, t)
            likelihood += probability
        total += math.log(likelihood)
    return total


@pytest.mark.parametrize("species, count", [(2, 1), (3, 3), (4, 15), (5, 105)])
def test_every_rooted_tree_is_a_terminal_state_once(species, count):
    env = Phylogenetics(species=species, sites=3)
    found = env.terminal_states()
    assert len(found) == count == tree_count(species)
    expected = as_states(rooted_trees(list(range(species))))
    assert len(expected) == count
    assert set(env.state_code(found).tolist()) == set(env.state_code(expected).tolist())


@pytest.mark.slow
def test_seven_species_have_10395_trees_and_an_exact_log_partition():
    env = envs.make("phylo", "paper")
    trees = env.terminal_states()
    assert len(trees) == 10395
    expected = as_states(rooted_trees(list(range(7))))
    assert torch.equal(env.state_code(trees).sort().values, env.state_code(expected).sort().values)
    log_z = float(torch.logsumexp(env.log_reward(expected).double(), 0))
    assert env.log_partition() == pytest.approx(log_z, abs=1e-6)


@pytest.mark.parametrize(
    "tree, t",
    [
        ((0, 1), 0.3),
        (((0, 1), (2, 3)), 0.3),
        ((((0, 2), 1), 3), 0.05),
        ((((0, 4), (1, 3)), 2), 1.5),
    ],
)
def test_likelihood_matches_a_brute_force_sum_over_internal_states(tree, t):
    species = max(clades(tree)).bit_length()
    data = torch.randint(4, (species, 6), generator=torch.Generator().manual_seed(species))
    states = as_states([tree])
    forests = Forests(species)
    got = float(forest_log_likelihood(forests, states, data, t)[0])
    assert got == pytest.approx(brute_force_log_likelihood(tree, data, t), abs=1e-10)


def test_forest_likelihood_is_the_product_over_its_trees():
    data = torch.randint(4, (5, 8), generator=torch.Generator().manual_seed(0))
    forests = Forests(5)
    # The forest {((0, 3), 4), 1, 2}: clades 0b01001 and 0b11001, two unused slots.
    forest = torch.tensor([[0, 0, 0b01001, 0b11001]])
    tree = brute_force_log_likelihood(((0, 3), 4), data, 0.3)
    singles = 2 * data.shape[1] * math.log(0.25)  # a lone leaf: pi = 1/4 per site
    got = float(forest_log_likelihood(forests, forest, data, 0.3)[0])
    assert got == pytest.approx(tree + singles, abs=1e-10)
    s0 = float(forest_log_likelihood(forests, forests.empty(1), data, 0.3)[0])
    assert s0 == pytest.approx(5 * data.shape[1] * math.log(0.25), abs=1e-10)


def fitch_changes(tree, site: list[int]) -> int:
    """The fewest changes that explain `site` (a nucleotide per leaf) on `tree` (Fitch)."""

    def visit(node) -> tuple[set[int], int]:
        if not isinstance(node, tuple):
            return {site[node]}, 0
        (left, m), (right, n) = visit(node[0]), visit(node[1])
        common = left & right
        return (common, m + n) if common else (left | right, m + n + 1)

    return visit(tree)[1]


def test_likelihood_does_not_underflow_on_very_short_branches():
    # On branches of length t -> 0 each change costs a factor t / 3, so log L ~ M log(t / 3)
    # with M the parsimony score (the other terms are O(1) per site). A site needing 4
    # changes has likelihood ~1e-400 at t = 1e-100: 0.0 without rescaling.
    data = torch.randint(4, (8, 40), generator=torch.Generator().manual_seed(0))
    tree = next(rooted_trees(list(range(8))))
    t = 1e-100
    log_likelihood = float(forest_log_likelihood(Forests(8), as_states([tree]), data, t)[0])
    changes = sum(fitch_changes(tree, site) for site in data.T.tolist())
    # |O(1) terms| <= 40 sites * log(4 * 14**4) (at most 14**4 ways to place 4 changes).
    assert math.isfinite(log_likelihood)
    assert abs(log_likelihood - changes * math.log(t / 3)) < 40 * math.log(4 * 14**4)


def test_reward_is_likelihood_times_the_uniform_prior_over_the_greedy_trees():
    env = Phylogenetics(species=5, sites=12, seed=1)
    trees = env.terminal_states()
    log_joint = env.log_likelihood(trees) - math.log(105)
    reference = env.log_likelihood(env.reference_tree[None])[0] - math.log(105)
    assert env.log_reward_shift == pytest.approx(float(reference), abs=1e-12)
    assert torch.allclose(env.log_reward(trees).double(), log_joint - reference, atol=1e-5)
    # The reference is the greedy tree: from s0, each join is the most likely one.
    state = env.initial_states(1)
    while not env.is_terminal(state)[0]:
        children = [env.step(state, torch.tensor([a])) for a in range(env.n_actions)]
        allowed = env.forward_mask(state)[0]
        best = max(
            (c for c, ok in zip(children, allowed, strict=True) if ok),
            key=lambda c: float(env.log_likelihood(c)[0]),
        )
        state = best
    assert torch.equal(state[0], env.reference_tree)


def test_simulator_is_seeded_and_follows_jc69():
    a, b = Phylogenetics(seed=3), Phylogenetics(seed=3)
    assert torch.equal(a.data, b.data) and torch.equal(a.true_tree, b.true_tree)
    assert not torch.equal(a.data, Phylogenetics(seed=4).data)
    assert a.data.shape == (7, 25) and a.is_terminal(a.true_tree[None]).all()
    # Two leaves under one root, branches t each: they differ with probability
    # 3/4 (1 - exp(-4 (2 t) / 3)) (JC69 along the path of length 2 t).
    forests, t, sites = Forests(2), 0.3, 40000
    data = simulate(torch.tensor([0b11]), forests, sites, t, torch.Generator().manual_seed(0))
    differ = float((data[0] != data[1]).double().mean())
    expected = 0.75 * (1 - math.exp(-8 * t / 3))
    assert differ == pytest.approx(expected, abs=5 * math.sqrt(expected / sites))
    assert data.min() >= 0 and data.max() <= 3
    # Every nucleotide is equally likely at a leaf.
    counts = torch.bincount(data.flatten(), minlength=4).double() / data.numel()
    assert torch.allclose(counts, torch.full((4,), 0.25, dtype=torch.float64), atol=0.01)


def test_pb_is_uniform_over_the_splits_of_non_leaf_trees():
    env = Phylogenetics(species=5, sites=2)
    # {((0, 1), 2), (3, 4)}: two trees to split; s0 and leaves have nothing to split.
    forest = torch.tensor([[0, 0b00011, 0b00111, 0b11000]])
    assert env.backward_mask(forest).tolist() == [[True, False, False, True, False]]
    assert float(env.log_pb_uniform(forest)[0]) == pytest.approx(-math.log(2))
    split = [env.backward_step(forest, torch.tensor([leaf]))[0].tolist() for leaf in (0, 3)]
    assert set(map(tuple, split)) == {(0, 0, 0b00011, 0b11000), (0, 0, 0b00011, 0b00111)}


def test_forest_policy_is_equivariant_to_relabelling_the_species():
    env = Phylogenetics(species=5, sites=6, seed=2)
    torch.manual_seed(0)
    policy = make_policy(env)
    permutation = torch.tensor([3, 0, 4, 1, 2])  # new label of each old species
    relabelled = Phylogenetics(species=5, sites=6, seed=2)
    relabelled.data = torch.empty_like(env.data)
    relabelled.data[permutation] = env.data
    moved = make_policy(relabelled)
    moved.load_state_dict({**policy.state_dict(), **_sequence_buffers(moved)})
    forest = torch.tensor([[0, 0b00011, 0b00111, 0b11000]])

    def relabel(clade: int) -> int:
        return sum(1 << int(permutation[leaf]) for leaf in range(5) if clade >> leaf & 1)

    moved_forest = torch.tensor([sorted(relabel(c) for c in forest[0].tolist())])
    with torch.no_grad():
        logits = policy(env.features(forest))[0]
        moved_logits = moved(relabelled.features(moved_forest))[0]
    pair_index = {tuple(p): i for i, p in enumerate(env.forests.pairs.tolist())}
    allowed = env.forward_mask(forest)[0]
    for i, (a, b) in enumerate(env.forests.pairs.tolist()):
        if not allowed[i]:
            continue
        # The tree named a is named by the lowest relabelled leaf of its clade.
        roots = env.forests.root_clades(forest)[0]
        names = sorted(min(_leaves(relabel(int(roots[x])))) for x in (a, b))
        j = pair_index[tuple(names)]
        assert float(moved_logits[j]) == pytest.approx(float(logits[i]), abs=1e-5)


def _sequence_buffers(policy) -> dict:
    return {k: v for k, v in policy.state_dict().items() if k.endswith("sequences")}


def _leaves(clade: int) -> list[int]:
    return [leaf for leaf in range(clade.bit_length()) if clade >> leaf & 1]


def test_bad_settings_raise_clear_errors():
    with pytest.raises(ValueError, match="species: expected 2 to 8"):
        Phylogenetics(species=9)
    with pytest.raises(ValueError, match="sites: expected >= 1"):
        Phylogenetics(sites=0)
    with pytest.raises(ValueError, match="mutation_rate: expected a positive"):
        Phylogenetics(mutation_rate=0.0)
    with pytest.raises(ValueError, match="deep_set"):
        make_policy(envs.make("phylo", "tiny"), deep_set=True)


@pytest.mark.slow
def test_cli_renyi_on_the_paper_preset_halves_the_exact_l1(tmp_path):
    """The acceptance run: `gfn-fast train --env phylo --preset paper --objective renyi
    --steps 300 --eval-every 50` (about a minute on 2 busy cores)."""
    argv = ["train", "--env", "phylo", "--preset", "paper", "--objective", "renyi"]
    argv += ["--steps", "300", "--eval-every", "50", "--no-progress", "--out", str(tmp_path)]
    assert main(argv) == 0
    curve = [
        record["exact_l1"]
        for record in json.loads((tmp_path / "metrics.json").read_text())["curve"]
    ]
    assert len(curve) == 7 and all(math.isfinite(value) for value in curve)
    assert curve[-1] <= curve[0] / 2
