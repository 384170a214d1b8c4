"""How close a trained sampler is to its target.

- `exact_terminal_distribution`: p_T(x) for every terminal x, computed exactly by dynamic
  programming over the state DAG, level by level (each action moves one level down). In a
  tree (sequences) no states merge, so this is the product along each unique trajectory.
- `exact_l1`: sum_x |p_T(x) - R(x)/Z| from it.
- `monte_carlo_l1`: the same L1 where X is too large to enumerate, with p_T(x) estimated as
  the paper does, by importance sampling over backward trajectories, and its standard error.
- `jensen_shannon`: JS(p_T, target) for the continuous tasks, by Monte Carlo with exact
  densities on both sides.
- `ModeTracker`: how many distinct high-reward terminal states training has sampled.
"""

from __future__ import annotations

import math

import torch

from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv, unique_states
from gfn_fast.train.rollout import rollout
from gfn_fast.train.sampler import continuous_log_pt, sample_backward, sample_trajectories

# Frontier rows evaluated by the policy at once: bounds memory on large levels.
POLICY_CHUNK = 65536


@torch.no_grad()
def exact_terminal_distribution(
    env: DiscreteEnv, policy: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """Exact terminal distribution of the forward policy.

    Returns:
        (terminal, p_t): every terminal state [M, W] in ascending `env.state_code` order, and
        [M] float64 p_T(x) (sums to 1).

    Raises:
        ValueError: the environment is too large to enumerate (`env.enumerable` is False).
    """
    if not env.enumerable:
        raise ValueError(
            f"env: {type(env).__name__} with these sizes has too many states to enumerate; "
            "use a smaller preset for exact metrics"
        )
    device = next(policy.parameters()).device
    frontier = env.initial_states(1, device)
    flow = torch.ones(1, dtype=torch.float64, device=device)
    terminal, terminal_flow = [], []
    while frontier.shape[0]:
        probabilities = _forward_probabilities(env, policy, frontier)
        parent, action, children = env.expand(frontier)
        children, inverse = unique_states(env, children)
        child_flow = flow.new_zeros(children.shape[0]).index_add(
            0, inverse, flow[parent] * probabilities[parent, action]
        )
        done = env.is_terminal(children)
        terminal.append(children[done])
        terminal_flow.append(child_flow[done])
        frontier, flow = children[~done], child_flow[~done]
    terminal, inverse = unique_states(env, torch.cat(terminal))
    p_t = flow.new_zeros(terminal.shape[0]).index_add(0, inverse, torch.cat(terminal_flow))
    return terminal, p_t


def _forward_probabilities(env, policy, states) -> torch.Tensor:
    chunks = []
    for start in range(0, states.shape[0], POLICY_CHUNK):
        part = states[start : start + POLICY_CHUNK]
        logits = policy(env.features(part)).double()
        chunks.append(logits.masked_fill(~env.forward_mask(part), -torch.inf).softmax(-1))
    return torch.cat(chunks)


def target_distribution(env: DiscreteEnv, terminal: torch.Tensor) -> torch.Tensor:
    """[M] float64 R(x)/Z over the enumerated terminal states [M, W]."""
    return env.log_reward(terminal).double().softmax(0)


def exact_l1(env: DiscreteEnv, policy: torch.nn.Module) -> float:
    """sum_x |p_T(x) - R(x)/Z| over every terminal x, exactly (see module docstring)."""
    terminal, p_t = exact_terminal_distribution(env, policy)
    return float((p_t - target_distribution(env, terminal)).abs().sum())


@torch.no_grad()
def monte_carlo_l1(
    env: DiscreteEnv,
    policy: torch.nn.Module,
    samples: int = 512,
    backward_samples: int = 64,
    generator: torch.Generator | None = None,
) -> tuple[float, float]:
    """Monte Carlo estimate of sum_x |p_T(x) - R(x)/Z|, and its standard error.

    Since both distributions sum to 1, L1 = 2 sum_x (p_T(x) - pi(x))_+
    = 2 E_{x ~ p_T}[(1 - pi(x) / p_T(x))_+], pi = R/Z, a mean of values in [0, 2] over
    `samples` terminal states x drawn from the policy. pi(x) is exact (`env.log_partition`);
    p_T(x) is estimated as in the paper, by importance sampling over `backward_samples`
    trajectories tau_m ~ p_B(. | x): p_T(x) ~ mean_m p_F(tau_m) / p_B(tau_m | x).

    The standard error is that of the mean over x, each term with its own backward draws,
    so it covers both sources of noise. The plug-in of the estimated p_T(x) leaves a bias
    that vanishes as backward_samples grows and as p_F(tau)/p_B(tau | x) becomes constant
    in tau (a trained policy); tests/train/test_metrics.py measures it against exact_l1.

    Raises:
        ValueError: samples < 2 or backward_samples < 1, or no closed-form log Z.
    """
    if samples < 2 or backward_samples < 1:
        raise ValueError(
            f"samples, backward_samples: expected >= 2 and >= 1, got {samples}, {backward_samples}"
        )
    log_pi_offset = env.log_partition()
    x = rollout(env, policy, samples, generator=generator).terminal
    log_pf, log_pb = sample_backward(
        env, policy, x.repeat_interleave(backward_samples, 0), generator
    )
    log_ratio = (log_pf - log_pb).double().view(samples, backward_samples)
    log_pt = torch.logsumexp(log_ratio, 1) - math.log(backward_samples)
    log_pi = env.log_reward(x).double() - log_pi_offset
    terms = 2 * (1 - torch.exp(log_pi - log_pt)).clamp_min(0)
    return float(terms.mean()), float(terms.std() / math.sqrt(samples))


@torch.no_grad()
def jensen_shannon(
    env: ContinuousEnv,
    policy: torch.nn.Module,
    samples: int = 20000,
    generator: torch.Generator | None = None,
) -> float:
    """JS(p_T || R/Z) in nats (in [0, log 2]) from `samples` draws of each side.

    Both densities are exact (p_T(x) = p_F of x's unique trajectory; R is normalised), so
    the only error is Monte Carlo: JS = (E_p[log p/m] + E_q[log q/m]) / 2, m = (p + q) / 2.
    """
    batch = sample_trajectories(env, policy, samples, generator=generator)
    log_p_at_p = batch.log_pf
    log_q_at_p = batch.log_reward
    x = env.sample_target(samples, generator).to(log_p_at_p.device)
    log_p_at_q = continuous_log_pt(env, policy, x)
    log_q_at_q = env.log_reward(x)

    def log_m(log_p, log_q):
        return torch.logaddexp(log_p, log_q) - math.log(2.0)

    js = 0.5 * (log_p_at_p - log_m(log_p_at_p, log_q_at_p)).mean()
    js = js + 0.5 * (log_q_at_q - log_m(log_p_at_q, log_q_at_q)).mean()
    return float(js.clamp(0.0, math.log(2.0)))


class ModeTracker:
    """Counts distinct modes, terminal states with R(x) >= max R / 2, seen so far."""

    def __init__(self, env: DiscreteEnv):
        self.env = env
        self.threshold = env.max_log_reward() - math.log(2.0)
        self.found: set[int] = set()

    def update(self, terminal: torch.Tensor, log_reward: torch.Tensor | None = None) -> int:
        """Add the modes among `terminal` [B, W] (`log_reward` [B]: their log R, when
        already computed); returns the running count."""
        if log_reward is None:
            log_reward = self.env.log_reward(terminal)
        modes = terminal[log_reward >= self.threshold]
        self.found.update(self.env.state_code(modes).tolist())
        return len(self.found)
