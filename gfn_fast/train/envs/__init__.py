"""Batched, vectorised GFlowNet environments and their presets.

env = gfn_fast.train.envs.make("hypergrid", preset="torchgfn")
"""

from __future__ import annotations

from gfn_fast.train.envs import banana, gmm, hypergrid, phylo, sequences, sets
from gfn_fast.train.envs.banana import Banana
from gfn_fast.train.envs.base import ContinuousEnv, DiscreteEnv
from gfn_fast.train.envs.gmm import GaussianMixture
from gfn_fast.train.envs.hypergrid import HyperGrid
from gfn_fast.train.envs.phylo import Phylogenetics
from gfn_fast.train.envs.sequences import Sequences
from gfn_fast.train.envs.sets import Sets

# name -> (class, presets, default preset)
REGISTRY = {
    "hypergrid": (HyperGrid, hypergrid.PRESETS, "torchgfn"),
    "sets": (Sets, sets.PRESETS, "small"),
    "sequences": (Sequences, sequences.PRESETS, "paper"),
    "gmm": (GaussianMixture, gmm.PRESETS, "paper"),
    "banana": (Banana, banana.PRESETS, "paper"),
    "phylo": (Phylogenetics, phylo.PRESETS, "paper"),
}

__all__ = [
    "REGISTRY",
    "Banana",
    "ContinuousEnv",
    "DiscreteEnv",
    "GaussianMixture",
    "HyperGrid",
    "Phylogenetics",
    "Sequences",
    "Sets",
    "make",
]


def make(name: str, preset: str | None = None, **overrides) -> DiscreteEnv | ContinuousEnv:
    """Build environment `name` from `preset` (its default when None), with keyword overrides.

    Raises:
        ValueError: unknown name or preset.
    """
    if name not in REGISTRY:
        raise ValueError(f"env: expected one of {tuple(REGISTRY)}, got {name!r}")
    cls, presets, default = REGISTRY[name]
    preset = default if preset is None else preset
    if preset not in presets:
        raise ValueError(f"preset: expected one of {tuple(presets)} for {name}, got {preset!r}")
    return cls(**{**presets[preset], **overrides})
