"""Brute force over every complete trajectory of a tiny discrete environment, one state at
a time in plain Python: the oracle for the vectorised envs and the exact metrics."""

from __future__ import annotations

import math

import torch

from gfn_fast.train import envs

TINY_ENVS = {
    "hypergrid-2d": lambda: envs.HyperGrid(ndim=2, height=3, r0=0.1),
    "hypergrid-3d": lambda: envs.HyperGrid(ndim=3, height=2, r0=1e-3),
    "sets": lambda: envs.Sets(pool=5, size=3, seed=1),
    "sequences": lambda: envs.make("sequences", "tiny"),
    "phylo": lambda: envs.make("phylo", "tiny"),
}


def trajectories(env):
    """Yield (states, actions) of every complete trajectory: lists of [W] tensors and ints."""

    def extend(states, actions):
        state = states[-1]
        if bool(env.is_terminal(state[None])[0]):
            yield states, actions
            return
        allowed = env.forward_mask(state[None])[0].nonzero()[:, 0].tolist()
        for action in allowed:
            child = env.step(state[None], torch.tensor([action]))[0]
            yield from extend(states + [child], actions + [action])

    yield from extend([env.initial_states(1)[0]], [])


def terminal_probabilities(env, policy) -> dict[int, float]:
    """{state code: p_T(x)} summing p_F over every trajectory, one step at a time."""
    p_t: dict[int, float] = {}
    with torch.no_grad():
        for states, actions in trajectories(env):
            probability = 1.0
            for state, action in zip(states[:-1], actions, strict=True):
                logits = policy(env.features(state[None]))[0].double()
                logits = logits.masked_fill(~env.forward_mask(state[None])[0], -math.inf)
                probability *= float(logits.softmax(-1)[action])
            code = int(env.state_code(states[-1][None])[0])
            p_t[code] = p_t.get(code, 0.0) + probability
    return p_t
