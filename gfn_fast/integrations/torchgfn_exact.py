"""Exact terminal distribution p_T of a torchgfn forward policy on an enumerable env.

For a discrete torchgfn environment whose states can be enumerated (`all_states`,
`get_states_indices`, e.g. HyperGrid with store_all_states=True) and whose transitions
form a DAG, the state flow F(s) = P(a trajectory visits s) satisfies
F = sum_t m_t with m_0 = one-hot(s_0) and m_{t+1}(s') = sum_s m_t(s) p_F(s' | s);
the DAG makes m_t exactly 0 after the longest path. Then p_T(x) = F(x) p_F(exit | x).
Cost: (longest path) x (states x actions), one policy evaluation over all states.

Needs torchgfn (``pip install "gfn_fast[torchgfn]"``); `import gfn_fast` does not.
"""

from __future__ import annotations

import torch

try:
    from gfn.env import DiscreteEnv
    from gfn.estimators import DiscretePolicyEstimator
except ImportError as error:  # pragma: no cover - exercised only without torchgfn
    raise ImportError(
        "gfn_fast.integrations.torchgfn_exact needs torchgfn 2.4.1, which is not installed "
        f"({error}). Install the extra: pip install 'gfn_fast[torchgfn]' "
        "(or pip install torchgfn==2.4.1)."
    ) from error


@torch.no_grad()
def terminal_distribution(env: DiscreteEnv, pf: DiscretePolicyEstimator) -> torch.Tensor:
    """Exact p_T over `env.all_states` (in `env.get_states_indices` order) for policy `pf`.

    Args:
        env: an enumerable torchgfn DiscreteEnv with acyclic transitions (HyperGrid
            needs store_all_states=True).
        pf: a forward DiscretePolicyEstimator for `env`.

    Returns:
        [n_states] float64 probabilities summing to 1; index i is the state with
        `env.get_states_indices(state) == i`, the order of `env.true_dist()`.

    Raises:
        ValueError: pf is a backward estimator, or the env cannot enumerate its states
            or has a cycle.
    """
    if pf.is_backward:
        raise ValueError("pf: expected a forward policy estimator, got a backward one")
    states = env.all_states
    if states is None:
        raise ValueError(
            "env: cannot enumerate its states (for HyperGrid pass store_all_states=True)"
        )
    n_states = len(states)
    probs = pf.to_probability_distribution(states, pf(states)).probs
    probs = probs.reshape(n_states, env.n_actions).to(torch.float64)
    exit_index = int(env.exit_action.item())
    source, target, weight = [], [], []
    for action in range(env.n_actions):
        if action == exit_index:
            continue
        allowed = states.forward_masks[:, action]
        parents = torch.nonzero(allowed).squeeze(-1)
        action_tensor = torch.full((len(parents), 1), action, device=parents.device)
        children = env.step(states[parents], env.actions_from_tensor(action_tensor))
        source.append(parents)
        target.append(env.get_states_indices(children))
        weight.append(probs[parents, action])
    source, target, weight = torch.cat(source), torch.cat(target), torch.cat(weight)

    flow = torch.zeros(n_states, dtype=torch.float64, device=probs.device)
    mass = torch.zeros_like(flow)
    mass[env.get_states_indices(env.States(env.s0.unsqueeze(0)))] = 1.0
    for _ in range(n_states):
        flow += mass
        mass = torch.zeros_like(flow).index_add_(0, target, mass[source] * weight)
        if not bool(mass.any()):
            return flow * probs[:, exit_index]
    raise ValueError(f"env: probability mass still moving after {n_states} steps; not a DAG")


def exact_l1(env: DiscreteEnv, pf: DiscretePolicyEstimator) -> float:
    """sum_x |p_T(x) - R(x)/Z| for policy `pf`, with the target from `env.true_dist()`.

    Raises:
        ValueError: as `terminal_distribution`.
    """
    target = env.true_dist().to(torch.float64)
    return float((terminal_distribution(env, pf) - target).abs().sum())
