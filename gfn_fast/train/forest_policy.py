"""A message-passing policy over forests of rooted binary trees (the phylo environment).

`ForestEncoder` embeds every tree of a forest. A leaf starts from a linear map of its
species' one-hot sequence; each internal node applies a GIN update to the sum of its two
children's embeddings, h = MLP(h_left + h_right), replayed bottom-up in the forest's merge
order (`Forests.merge_schedule`). So a root's embedding summarises its whole subtree,
whatever the tree's depth (a fixed number of GIN rounds over the edges would see only that
many hops), and it does not depend on the order of the children or of the trees.

`ForestScorer` turns the root embeddings into logits: for a join of trees (a, b), or a split
of tree a, an MLP of the sum of the embeddings involved and of the forest's context (the
sum of all its root embeddings). The first layer is applied per tree and summed, which is
the same map as on the summed embeddings and cheaper on the n (n - 1) / 2 pairs.
"""

from __future__ import annotations

import torch
from torch import nn

from gfn_fast.train.envs.jc69 import NUCLEOTIDES
from gfn_fast.train.envs.phylo import Phylogenetics
from gfn_fast.train.policies import check_policy_options, mlp


class ForestEncoder(nn.Module):
    """[B, n - 1] clade bitmasks -> [B, n, hidden] embedding of the tree each leaf names
    (rows of leaves that name no tree hold stale values: mask them with `tree_names`)."""

    def __init__(self, env: Phylogenetics, hidden: int, layers: int):
        super().__init__()
        self.forests = env.forests
        sequences = nn.functional.one_hot(env.data, NUCLEOTIDES).flatten(1).float()  # [n, 4 sites]
        self.register_buffer("sequences", sequences)
        self.leaf = nn.Linear(sequences.shape[1], hidden)
        self.update = mlp(hidden, hidden, hidden, layers)

    def forward(self, states: torch.Tensor) -> torch.Tensor:
        batch = states.shape[0]
        h = self.leaf(self.sequences).expand(batch, -1, -1)
        rows = torch.arange(batch, device=states.device)
        leaves = torch.arange(self.forests.leaves, device=states.device)
        used, left, right = self.forests.merge_schedule(states)
        for k in range(states.shape[1]):
            if not used[:, k].any():
                continue  # unused in every row: skip the MLP (a host sync, worth ~half the work)
            joined = self.update(h[rows, left[:, k]] + h[rows, right[:, k]])
            target = (leaves == left[:, k, None]) & used[:, k, None]
            h = torch.where(target[:, :, None], joined[:, None], h)
        return h


class ForestScorer(nn.Module):
    """Logits [B, A] for A groups of trees: `groups` [A, g] leaves naming the trees of each
    (pairs for joins, single leaves for splits), from a `ForestEncoder` of its own."""

    def __init__(self, env: Phylogenetics, groups: torch.Tensor, hidden: int, layers: int):
        super().__init__()
        self.forests = env.forests
        self.register_buffer("groups", groups)
        self.encoder = ForestEncoder(env, hidden, layers)
        self.per_tree = nn.Linear(hidden, hidden, bias=False)
        self.context = nn.Linear(hidden, hidden)
        rest = mlp(hidden, 1, hidden, layers - 1) if layers > 1 else nn.Linear(hidden, 1)
        self.head = nn.Sequential(nn.LeakyReLU(), rest)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        states = features.long()
        h = self.encoder(states)
        names = self.forests.tree_names(states)
        context = self.context((h * names[:, :, None]).sum(1))  # [B, hidden]
        per_tree = self.per_tree(h)
        first = context[:, None] + sum(per_tree[:, group] for group in self.groups.T)
        return self.head(first)[..., 0]


class ForestPolicy(nn.Module):
    """p_F over joins (and a learned p_B over splits) for `Phylogenetics`, with the same
    interface as `DiscretePolicy`: forward(features) -> [B, n_actions] logits.

    Args:
        env: the phylo environment (gives the species' sequences and the pairs).
        hidden, layers: embedding width and the depth of each MLP (the paper: 64 and 2).
        deep_set: not available here (sets only); raises if True.
        learn_pb: learn p_B with a second scorer; otherwise p_B is uniform over splits.

    Raises:
        ValueError: deep_set, or hidden / layers < 1.
    """

    def __init__(
        self,
        env: Phylogenetics,
        hidden: int = 64,
        layers: int = 2,
        deep_set: bool = False,
        learn_pb: bool = False,
    ):
        super().__init__()
        check_policy_options(type(env), deep_set=deep_set, learn_pb=learn_pb)
        if hidden < 1 or layers < 1:
            raise ValueError(f"hidden, layers: expected >= 1, got {hidden}, {layers}")
        self.forward_net = ForestScorer(env, env.forests.pairs, hidden, layers)
        self.backward_net = None
        self.learned_pb = learn_pb  # the capability the sampler reads
        if learn_pb:
            leaves = torch.arange(env.species)[:, None]
            self.backward_net = ForestScorer(env, leaves, hidden, layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, n - 1] features -> [B, n (n - 1) / 2] unmasked join logits."""
        return self.forward_net(features)

    def backward_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, n - 1] features -> [B, n] unmasked split logits."""
        if self.backward_net is None:
            raise ValueError("learn_pb: this policy has a uniform p_B; build it with learn_pb=True")
        return self.backward_net(features)
