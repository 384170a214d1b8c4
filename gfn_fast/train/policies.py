"""Policies: LeakyReLU MLPs over an environment's state features.

`DiscretePolicy` gives masked-softmax logits for p_F (and for p_B when learned; p_B is
uniform over parents by default, as in the paper). `GaussianMixturePolicy` gives, for the
continuous tasks, a mixture of 1-D Gaussians over the next coordinate.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv


def mlp(in_dim: int, out_dim: int, hidden: int = 64, layers: int = 2) -> nn.Sequential:
    """`layers` hidden LeakyReLU layers of width `hidden`, then a linear output."""
    if hidden < 1 or layers < 1:
        raise ValueError(f"hidden, layers: expected >= 1, got {hidden}, {layers}")
    blocks: list[nn.Module] = []
    width = in_dim
    for _ in range(layers):
        blocks += [nn.Linear(width, hidden), nn.LeakyReLU()]
        width = hidden
    blocks.append(nn.Linear(width, out_dim))
    return nn.Sequential(*blocks)


class DeepSet(nn.Module):
    """Permutation-invariant encoder of a membership vector [B, D]: rho(sum_{d in x} phi(e_d))."""

    def __init__(self, pool: int, out_dim: int, hidden: int = 64, layers: int = 2):
        super().__init__()
        self.embedding = nn.Parameter(torch.randn(pool, hidden) / math.sqrt(hidden))
        self.phi = mlp(hidden, hidden, hidden, 1)
        self.rho = mlp(hidden, out_dim, hidden, layers)

    def forward(self, membership: torch.Tensor) -> torch.Tensor:
        return self.rho(membership @ self.phi(self.embedding))


class DiscretePolicy(nn.Module):
    """Forward logits [B, n_actions] (and learned backward logits) from env features.

    Args:
        env: a discrete environment (gives feature and action sizes).
        hidden, layers: MLP width and depth (the paper: 64 and 2).
        deep_set: encode the state with `DeepSet` (envs whose `feature_layout` is
            "membership", such as sets).
        learn_pb: learn p_B with a second network; otherwise p_B is uniform over parents.

    Attributes:
        learned_pb: whether `backward_logits` exists (the capability the sampler reads).

    Raises:
        ValueError: deep_set for another feature layout, or learn_pb for a tree.
    """

    def __init__(
        self,
        env: DiscreteEnv,
        hidden: int = 64,
        layers: int = 2,
        deep_set: bool = False,
        learn_pb: bool = False,
    ):
        super().__init__()
        check_policy_options(type(env), deep_set=deep_set, learn_pb=learn_pb)

        def network(out_dim):
            if deep_set:
                return DeepSet(env.feature_dim, out_dim, hidden, layers)
            return mlp(env.feature_dim, out_dim, hidden, layers)

        self.learned_pb = learn_pb
        self.forward_net = network(env.n_actions)
        self.backward_net = network(env.n_backward_actions) if learn_pb else None

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, F] features -> [B, n_actions] unmasked forward logits."""
        return self.forward_net(features)

    @property
    def forward_mlp(self) -> nn.Module:
        """The network that `forward` runs, as it is (the rollout may record it)."""
        return self.forward_net

    def backward_logits(self, features: torch.Tensor) -> torch.Tensor:
        """[B, F] features -> [B, n_backward_actions] unmasked backward logits."""
        if self.backward_net is None:
            raise ValueError("learn_pb: this policy has a uniform p_B; build it with learn_pb=True")
        return self.backward_net(features)

    @property
    def backward_mlp(self) -> nn.Module | None:
        """The network that `backward_logits` runs, as it is (None: p_B is not learned)."""
        return self.backward_net


class GaussianMixturePolicy(nn.Module):
    """p_F(next coordinate | state) = sum_k w_k N(mu_k, sigma_k^2), from an MLP.

    Means and scales are relative to the env's per-coordinate `center` and `scale`, and the
    components start spread over center +- 1.5 scale so that early samples cover the target.
    p_B = 1 on these tasks (`learned_pb` is False); `deep_set` and `learn_pb` are accepted
    only as False, so that every policy type takes the same options.

    Raises:
        ValueError: components < 1, or deep_set / learn_pb set.
    """

    learned_pb = False

    def __init__(
        self,
        env: ContinuousEnv,
        hidden: int = 64,
        layers: int = 2,
        components: int = 6,
        deep_set: bool = False,
        learn_pb: bool = False,
    ):
        super().__init__()
        if components < 1:
            raise ValueError(f"components: expected >= 1, got {components}")
        check_policy_options(type(env), deep_set=deep_set, learn_pb=learn_pb)
        self.components = components
        self.net = mlp(env.feature_dim, 3 * components, hidden, layers)
        self.register_buffer("center", torch.tensor(env.center))
        self.register_buffer("scale", torch.tensor(env.scale))
        with torch.no_grad():
            output = self.net[-1]
            output.weight.mul_(0.1)
            output.bias.zero_()
            output.bias[components : 2 * components] = torch.linspace(-1.5, 1.5, components)
            output.bias[2 * components :] = math.log(0.5)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """[B, F] features -> [B, 3 * components] the network's raw output, read by
        `log_prob_of` and `sample_of` (the rollout runs the network once per step, the
        batched pass once over every visited state)."""
        return self.net(features)

    @property
    def forward_mlp(self) -> nn.Module:
        """The network that `forward` runs, as it is (the rollout may record it)."""
        return self.net

    def _mixture(self, output: torch.Tensor, features: torch.Tensor):
        # float32 from here on: under bf16 autocast only the network runs in bf16.
        logits, means, log_stds = output.float().chunk(3, -1)
        coordinate = features[:, -2:].argmax(-1)  # the env's one-hot of the next coordinate
        center, scale = self.center[coordinate, None], self.scale[coordinate, None]
        stds = scale * log_stds.clamp(-6.0, 2.0).exp()
        return logits.log_softmax(-1), center + scale * means, stds

    def log_prob_of(
        self, output: torch.Tensor, features: torch.Tensor, values: torch.Tensor
    ) -> torch.Tensor:
        """[B] log-density of `values` [B] under the mixture that `output` = forward(features)
        describes at `features` [B, F]; differentiable w.r.t. output."""
        log_weights, means, stds = self._mixture(output, features)
        log_normal = (
            -0.5 * ((values[:, None] - means) / stds) ** 2
            - stds.log()
            - 0.5 * math.log(2 * math.pi)
        )
        return torch.logsumexp(log_weights + log_normal, -1)

    def sample_of(
        self,
        output: torch.Tensor,
        features: torch.Tensor,
        generator: torch.Generator | None = None,
    ) -> torch.Tensor:
        """[B] values drawn from the mixture that `output` = forward(features) describes
        (no gradient)."""
        with torch.no_grad():
            log_weights, means, stds = self._mixture(output, features)
            k = sample_categorical(log_weights, generator)[:, None]
            noise = torch.randn(features.shape[0], generator=generator, device=features.device)
            return means.gather(1, k)[:, 0] + stds.gather(1, k)[:, 0] * noise

    def log_prob(self, features: torch.Tensor, values: torch.Tensor) -> torch.Tensor:
        """[B] log-density of `values` [B] under the mixture at `features` [B, F]."""
        return self.log_prob_of(self(features), features, values)

    def sample(
        self, features: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """[B] values drawn from the mixture at `features` (no gradient)."""
        with torch.no_grad():
            return self.sample_of(self(features), features, generator)


def gumbel_noise(
    shape: tuple[int, ...], generator: torch.Generator | None = None, device=None
) -> torch.Tensor:
    """Standard Gumbel draws of `shape` (float32): argmax(logits + noise) samples softmax."""
    u = torch.rand(shape, generator=generator, device=device)
    return -torch.log(-torch.log(u.clamp(1e-20, 1 - 1e-7)))


def sample_categorical(
    logits: torch.Tensor, generator: torch.Generator | None = None
) -> torch.Tensor:
    """[B] one draw per row of softmax(`logits` [B, A]) by the Gumbel-max trick.

    -inf logits are never drawn as long as a row has a finite entry.
    """
    noise = gumbel_noise(tuple(logits.shape), generator, logits.device)
    return (logits.detach() + noise).argmax(-1)


def check_policy_options(env_type: type, *, deep_set: bool = False, learn_pb: bool = False):
    """ValueError unless the capabilities `env_type` declares allow these policy options.

    Reads only class-level declarations, so a config can be checked before any env is built.
    """
    if deep_set and env_type.feature_layout != "membership":
        raise ValueError(
            f"deep_set: needs membership features (the sets environment), but "
            f"{env_type.__name__} has {env_type.feature_layout!r} features"
        )
    if learn_pb and env_type.is_tree:
        raise ValueError(f"learn_pb: {env_type.__name__} is a tree (p_B = 1), nothing to learn")


# One policy type per declared action space.
POLICY_TYPES = {"discrete": DiscretePolicy, "continuous": GaussianMixturePolicy}


def make_policy(env, hidden: int = 64, layers: int = 2, **options) -> nn.Module:
    """The policy type for `env`'s declared capabilities: ForestPolicy for forests of trees
    (phylo), else by action space, DiscretePolicy or GaussianMixturePolicy.

    `options` (deep_set, learn_pb, ...) go to that type, which checks them.
    """
    from gfn_fast.train.forest_policy import ForestPolicy  # it builds on mlp() from here

    if env.feature_layout == "forest":
        return ForestPolicy(env, hidden, layers, **options)
    return POLICY_TYPES[env.action_space](env, hidden, layers, **options)
