"""`TrainConfig`, everything that defines a run, and `resolve`, which fills it in and checks it.

Every check of a user's setting lives here, so that a bad setting is refused before anything
trains (the `gfn-fast` command turns these errors into one line and exit code 2).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields, replace

import torch

import gfn_fast as gf
from gfn_fast.train import envs
from gfn_fast.train.policies import check_policy_options
from gfn_fast.train.precision import PRECISIONS
from gfn_fast.train.rollout import LAYOUTS, check_behaviour


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Fields left None take the env's entry of ENV_DEFAULTS
    (preset: the env's default preset).

    control_variate None means "none" for tb (the classic estimator) and "loo" otherwise.
    layout: how a batch is rolled out and scored (see `rollout`): "packed" (the running
        trajectories only, one host sync per step) or "padded" (all B rows for max_length
        steps, no host sync); None: "packed" on CPU, "padded" on CUDA.
    keep_graph: keep the autograd graph of the rollout's per-step p_F outputs instead of a
        no-grad rollout and one batched forward of p_F (same estimator, same samples).
        None: chosen by measurement (README, "Benchmarks"): True in fp32 at batch sizes
        from KEEP_GRAPH_FROM_BATCH on (it saves a forward of p_F), False otherwise (in bf16
        the per-step graphs cost more than the forward they save). Where
        record_activations applies, it takes precedence.
    record_activations: where p_F is a plain MLP (`recorded_mlp.recordable`: float32
        parameters, not compiled; in fp32 or bf16), record its activations in the rollout
        and backpropagate through them in the batched pass, instead of the batched forward
        or the kept graph (same estimator, same samples). None: on (measured faster than
        both at batch 128 and 1024, README "Benchmarks").
    distinct_states: run the policy networks once per distinct state of a rollout step
        and of a batch, not once per visit (same estimator, same samples; see
        `gfn_fast.train.distinct`). None: on CPU, on where the networks' work per batch,
        hidden**2 * batch_size, is at least DISTINCT_FROM_WORK (finding the distinct
        states costs more than small networks save); off on CUDA (it is a host sync per
        step, which the padded CUDA rollout avoids).
    precision: "fp32", or "bf16" (autocast of the policy networks; log-softmax and the loss
        stay float32).
    compile: torch.compile the policy networks and the loss with `compile_backend`.
    nproc: shards per batch, each with its own random stream (`launch` runs one process per
        shard; a Trainer without a process group samples them all).
    js_samples: Monte Carlo samples of each side of the Jensen-Shannon metric (continuous).
    mc_samples, mc_backward_samples: terminal states, and backward trajectories per state,
        of the Monte Carlo L1 (discrete envs too large to enumerate). With 64 backward
        trajectories its bias stays within its standard error on trained sets policies
        (README, "The gfn-fast command").
    """

    env: str = "hypergrid"
    preset: str | None = None
    objective: str = "tb"
    alpha: float = 0.5
    control_variate: str | None = None
    normalization: str = "amari"
    steps: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    lr_log_z: float = 1e-1
    lr_decay_power: float = 1.0
    hidden: int = 64
    layers: int = 2
    deep_set: bool = False
    learn_pb: bool = False
    epsilon: float = 0.0
    temperature: float = 1.0
    seed: int = 0
    eval_every: int | None = None
    js_samples: int = 20000
    mc_samples: int = 512
    mc_backward_samples: int = 64
    layout: str | None = None
    keep_graph: bool | None = None
    record_activations: bool | None = None
    distinct_states: bool | None = None
    precision: str = "fp32"
    threads: int = 1
    device: str = "cpu"
    compile: bool = False
    compile_backend: str = "inductor"
    nproc: int = 1


# Per environment: tuned so the defaults train well within about a minute on 2 cores.
# The policy lr is the paper's 1e-3 except on hypergrid, where 3e-3 with batch 128 reaches
# exact L1 < 0.05 in a few seconds (README, "The gfn-fast command").
ENV_DEFAULTS = {
    "hypergrid": {"steps": 400, "batch_size": 128, "lr": 3e-3, "eval_every": 25},
    "sets": {"steps": 400, "batch_size": 128, "lr": 1e-3, "eval_every": 20},
    "sequences": {"steps": 500, "batch_size": 128, "lr": 1e-3, "eval_every": 50},
    "gmm": {"steps": 1000, "batch_size": 128, "lr": 1e-3, "eval_every": 100},
    "banana": {"steps": 1000, "batch_size": 128, "lr": 1e-3, "eval_every": 100},
    "phylo": {"steps": 300, "batch_size": 64, "lr": 1e-3, "eval_every": 50},
}

# Settings a resumed run may change: they change how the run executes or how long it
# goes on, not what it computes. Any other change would make it another run.
RESUMABLE_CHANGES = (
    "steps",
    "eval_every",
    "threads",
    "compile",
    "compile_backend",
    "keep_graph",
    "record_activations",
    "distinct_states",
)

# The batch size from which the graph-keeping rollout measured faster in fp32 (1.1x at 1024,
# within noise of the no-grad rollout at 128; HyperGrid 8x8, 2 x 256 MLPs, one thread).
KEEP_GRAPH_FROM_BATCH = 512

# The networks' work per batch, hidden**2 * batch_size, from which running them once per
# distinct state measured faster on CPU (one thread, default envs and lrs): hidden 64 at
# batch 128 (2**19) ran 3-7% slower with it (hypergrid, sets), hidden 128 at batch 128
# (2**21) 10-21% faster, hidden 64 at batch 1024 (2**22) 31% faster (hypergrid 8x8).
DISTINCT_FROM_WORK = 2**20

# The one seed range whose shard streams never collide (see `shard_seed`).
SEED_LIMIT = 2**32

_POSITIVE_INTS = ("steps", "batch_size", "eval_every", "threads", "nproc", "hidden", "layers")
_POSITIVE_INTS += ("js_samples", "mc_backward_samples")
_POSITIVE_FLOATS = ("lr", "lr_log_z")
_OPTIONAL_BOOLS = ("keep_graph", "record_activations", "distinct_states")
_STRINGS = ("env", "objective", "control_variate", "normalization", "layout", "device")
_STRINGS += ("compile_backend", "precision")


def resolve(config: TrainConfig) -> TrainConfig:
    """`config` with its None fields filled in, checked.

    Raises:
        ValueError: a setting of the wrong type or out of range (each message names the
            field, what was expected and what was given): unknown env, preset, objective,
            layout, device or compile backend; non-positive sizes, rates or sample counts;
            fewer trajectories than processes; a policy option the env does not support;
            objective settings the loss rules out (e.g. tb with "loo" off-policy).
    """
    if not isinstance(config, TrainConfig):
        raise ValueError(f"config: expected a TrainConfig, got {type(config).__name__}")
    if config.env not in ENV_DEFAULTS or config.env not in envs.REGISTRY:
        raise ValueError(f"env: expected one of {tuple(ENV_DEFAULTS)}, got {config.env!r}")
    env_type, presets, default_preset = envs.REGISTRY[config.env]
    if config.preset is not None and config.preset not in presets:
        raise ValueError(
            f"preset: expected one of {tuple(presets)} for {config.env}, got {config.preset!r}"
        )
    filled = {k: v for k, v in ENV_DEFAULTS[config.env].items() if getattr(config, k) is None}
    if config.preset is None:
        filled["preset"] = default_preset
    if config.control_variate is None:
        filled["control_variate"] = "none" if config.objective == "tb" else "loo"
    if config.layout is None:
        filled["layout"] = "padded" if _is_cuda(config.device) else "packed"
    config = replace(config, **filled)
    if config.keep_graph is None:
        fp32 = config.precision == "fp32"
        large = isinstance(config.batch_size, int) and config.batch_size >= KEEP_GRAPH_FROM_BATCH
        config = replace(config, keep_graph=fp32 and large)
    if config.record_activations is None:
        config = replace(config, record_activations=True)
    if config.distinct_states is None:
        work = (
            config.hidden**2 * config.batch_size
            if _are_ints(config.hidden, config.batch_size)
            else 0
        )
        config = replace(
            config, distinct_states=not _is_cuda(config.device) and work >= DISTINCT_FROM_WORK
        )
    _check_types(config)
    for name in _POSITIVE_INTS:
        if getattr(config, name) < 1:
            raise ValueError(f"{name}: expected >= 1, got {getattr(config, name)}")
    if config.mc_samples < 2:
        raise ValueError(
            f"mc_samples: expected >= 2 (for a standard error), got {config.mc_samples}"
        )
    for name in _POSITIVE_FLOATS:
        if not 0 < getattr(config, name) < math.inf:
            raise ValueError(f"{name}: expected a finite number > 0, got {getattr(config, name)}")
    if not 0 <= config.lr_decay_power < math.inf:
        raise ValueError(
            f"lr_decay_power: expected a finite number >= 0, got {config.lr_decay_power}"
        )
    if not 0 <= config.seed < SEED_LIMIT:
        raise ValueError(f"seed: expected an integer in [0, 2**32), got {config.seed}")
    if config.layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {config.layout!r}")
    if config.precision not in PRECISIONS:
        raise ValueError(f"precision: expected one of {PRECISIONS}, got {config.precision!r}")
    off_policy = config.epsilon > 0 or config.temperature != 1.0
    check_behaviour(env_type, config.epsilon, config.temperature)
    # The loss's own rules (names, alpha, normalisation, tb's "loo" on-policy only, ...).
    objective_of(config).check_batch(
        config.batch_size, has_log_z=config.objective == "tb", off_policy=off_policy
    )
    check_policy_options(env_type, deep_set=config.deep_set, learn_pb=config.learn_pb)
    if config.batch_size < config.nproc:
        raise ValueError(
            f"batch_size: expected >= nproc (one trajectory per process at least), got "
            f"{config.batch_size} for nproc={config.nproc}"
        )
    _check_device(config)
    if config.compile:
        backends = torch.compiler.list_backends(exclude_tags=())  # imports dynamo: slow
        if config.compile_backend not in backends:
            raise ValueError(
                f"compile_backend: expected one of {backends}, got {config.compile_backend!r}"
            )
    return config


def objective_of(config: TrainConfig) -> gf.Objective:
    """The run's checked objective settings (the trainer learns log Z for tb)."""
    return gf.Objective(
        config.objective, config.control_variate, config.alpha, config.normalization
    )


def _check_types(config: TrainConfig) -> None:
    """ValueError for a field of the wrong type (a config may come from a checkpoint file)."""
    for field in fields(config):
        value = getattr(config, field.name)
        if field.name == "preset":
            expected, ok = "a string or None", value is None or isinstance(value, str)
        elif field.name in _STRINGS:
            expected, ok = "a string", isinstance(value, str)
        elif isinstance(field.default, bool) or field.name in _OPTIONAL_BOOLS:
            expected, ok = "True or False", isinstance(value, bool)
        elif field.name in _POSITIVE_INTS or field.name in ("seed", "mc_samples"):
            expected, ok = "an integer", isinstance(value, int) and not isinstance(value, bool)
        else:  # the real-valued settings
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
            ok = ok and math.isfinite(value)
            expected = "a finite real number"
        if not ok:
            raise ValueError(f"{field.name}: expected {expected}, got {value!r}")


def _are_ints(*values: object) -> bool:
    """Whether every value is an int (not a bool): `_check_types` refuses the others later."""
    return all(isinstance(value, int) and not isinstance(value, bool) for value in values)


def _is_cuda(device: object) -> bool:
    """Whether `device` names a CUDA device (anything else is checked by `_check_device`)."""
    return isinstance(device, str) and device.startswith("cuda")


def _check_device(config: TrainConfig) -> None:
    try:
        device = torch.device(config.device)
    except RuntimeError:
        device = None
    if (
        device is None
        or device.type not in ("cpu", "cuda")
        or (device.type == "cpu" and device.index not in (None, 0))
    ):
        raise ValueError(f'device: expected "cpu", "cuda" or "cuda:<index>", got {config.device!r}')
    if device.type == "cuda":
        if not torch.cuda.is_available():
            built = "without CUDA" if torch.version.cuda is None else "with CUDA, but sees no GPU"
            raise ValueError(
                f"device: {config.device!r} needs a GPU, but this torch "
                f"({torch.__version__}) was built {built}; use --device cpu"
            )
        if (device.index or 0) >= torch.cuda.device_count():
            raise ValueError(
                f"device: {config.device!r} does not exist, this machine has "
                f"{torch.cuda.device_count()} GPU(s)"
            )
        if config.nproc > 1:
            raise ValueError(
                f"nproc: {config.nproc} processes train on CPU (gloo), got device={config.device!r}"
            )
