"""How a run is measured, one class per kind of environment, chosen from the capabilities the
environment declares:

- `ExactL1`: discrete and enumerable: the exact L1 (dynamic programming over the DAG).
- `MonteCarloL1`: discrete but too large to enumerate: the paper's Monte Carlo L1, with its
  standard error.
- `JensenShannon`: continuous: JS between the terminal distribution and the target.

Discrete evaluations also count the modes found by the training batches.
"""

from __future__ import annotations

import torch

from gfn_fast.train.metrics import ModeTracker, exact_l1, jensen_shannon, monte_carlo_l1

# Every metric a record can carry, in the order `metric_of` looks for them.
METRICS = ("exact_l1", "mc_l1", "js")

# Human-readable names of the metrics (plots and tables).
METRIC_LABELS = {
    "exact_l1": "exact L1",
    "mc_l1": "Monte Carlo L1",
    "js": "Jensen-Shannon (nats)",
}


def metric_of(record: dict) -> str:
    """The metric `record` carries, one of METRICS."""
    return next(name for name in METRICS if name in record)


class Evaluation:
    """Measures a policy against its target; records what training sampled.

    metric: the record key of the metric (one of METRICS).
    notice: a sentence for the user about how the metric is obtained, or None.
    """

    metric: str
    notice: str | None = None

    def observe(self, terminal: torch.Tensor, log_reward: torch.Tensor) -> None:
        """Take note of the terminal states [B, W] of one training batch, and their log R."""

    def measure(self, policy: torch.nn.Module) -> dict:
        """{metric: value, ...} for `policy` now."""
        raise NotImplementedError

    def merge(self, shards) -> None:
        """Combine what every process observed (see `distributed`)."""

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        del state  # nothing to restore


class _DiscreteEvaluation(Evaluation):
    """An L1 metric plus the count of distinct modes (R(x) >= max R / 2) sampled so far."""

    def __init__(self, env):
        self.env = env
        self.modes = ModeTracker(env)

    def observe(self, terminal, log_reward):
        self.modes.update(terminal, log_reward)

    def measure(self, policy):
        return {**self.l1(policy), "modes": len(self.modes.found)}

    def l1(self, policy) -> dict:
        raise NotImplementedError

    def merge(self, shards):
        self.modes.found = shards.union(self.modes.found)

    def state_dict(self):
        return {"modes": sorted(self.modes.found)}

    def load_state_dict(self, state):
        self.modes.found = set(state["modes"])


class ExactL1(_DiscreteEvaluation):
    metric = "exact_l1"

    def l1(self, policy):
        return {"exact_l1": exact_l1(self.env, policy)}


class MonteCarloL1(_DiscreteEvaluation):
    """`metrics.monte_carlo_l1` with the config's sample counts, from a fixed random stream
    (the same draws at every evaluation, independent of training, so resumes are exact)."""

    metric = "mc_l1"

    def __init__(self, env, config, device):
        super().__init__(env)
        self.samples, self.backward_samples = config.mc_samples, config.mc_backward_samples
        self.seed, self.device = config.seed + 1, device
        self.notice = (
            f"{config.env} (preset {config.preset}) has too many states to "
            f"enumerate: reporting mc_l1, the paper's Monte Carlo estimate of the L1 "
            f"(p_T(x) by importance sampling over {self.backward_samples} backward "
            f"trajectories for each of {self.samples} sampled x), with its standard error "
            f"mc_l1_se, instead of the exact L1"
        )

    def l1(self, policy):
        generator = torch.Generator(self.device).manual_seed(self.seed)
        value, error = monte_carlo_l1(
            self.env, policy, self.samples, self.backward_samples, generator
        )
        return {"mc_l1": value, "mc_l1_se": error}


class JensenShannon(Evaluation):
    """`metrics.jensen_shannon` from a fixed random stream (as `MonteCarloL1`)."""

    metric = "js"

    def __init__(self, env, config, device):
        self.env, self.samples = env, config.js_samples
        self.seed, self.device = config.seed + 1, device

    def measure(self, policy):
        generator = torch.Generator(self.device).manual_seed(self.seed)
        return {"js": jensen_shannon(self.env, policy, self.samples, generator)}


def evaluation_for(env, config, device: torch.device) -> Evaluation:
    """The evaluation that fits the capabilities `env` declares (see the module docstring)."""
    if env.action_space == "continuous":
        return JensenShannon(env, config, device)
    if env.enumerable:
        return ExactL1(env)
    return MonteCarloL1(env, config, device)
