"""Train a GFlowNet with any objective of `gf.divergence_loss`.

    trainer = Trainer(TrainConfig(env="hypergrid", objective="renyi"), out="runs/a")
    final = trainer.run()

The trainer samples on- or off-policy batches, takes Adam steps (lr 1e-3 for the policy,
1e-1 for a learned log Z, both decayed polynomially to 0, as in the paper), evaluates the
exact L1 (discrete) or JS (continuous) every `eval_every` steps, shows a tqdm bar, writes
OUT/metrics.csv and OUT/metrics.json, and checkpoints to OUT/checkpoint.pt. A resumed run
continues bit-for-bit (parameters, optimiser, schedule and every RNG state are saved), and
Ctrl-C saves a checkpoint before stopping.

`compile=True` compiles the policy networks and the loss with torch.compile. `nproc=N`
splits each batch into N shards, each with its own random stream; `launch` trains them in
N processes (DDP on CPU with gloo: gradients are averaged over the processes and the batch
statistics are global), while a Trainer without a process group samples all N shards itself,
which gives the same run in one process. In N processes, rank 0 evaluates and writes the
files, and checkpoints are written at every evaluation.
"""

from __future__ import annotations

import csv
import json
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import gfn_fast as gf
from gfn_fast.train import envs
from gfn_fast.train.envs.base import ContinuousEnv
from gfn_fast.train.metrics import ModeTracker, exact_l1, jensen_shannon
from gfn_fast.train.policies import make_policy
from gfn_fast.train.sampler import LAYOUTS, concatenate, sample_trajectories


@dataclass(frozen=True)
class TrainConfig:
    """Everything that defines a run. Fields left None take the env's entry of ENV_DEFAULTS.

    control_variate None means "none" for tb (the classic estimator) and "loo" otherwise.
    compile: torch.compile the policy networks and the loss with `compile_backend`.
    nproc: shards per batch (see the module docstring); `launch` runs one process per shard.
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
    layout: str = "padded"
    threads: int = 1
    device: str = "cpu"
    compile: bool = False
    compile_backend: str = "inductor"
    nproc: int = 1


# Per environment: tuned so the defaults train well within about a minute on 2 cores.
# The policy lr is the paper's 1e-3 except on hypergrid, where 3e-3 with batch 128 reaches
# exact L1 < 0.05 in about 10 s (tb) to 15 s (renyi) on 2 busy cores.
ENV_DEFAULTS = {
    "hypergrid": {"steps": 400, "batch_size": 128, "lr": 3e-3, "eval_every": 25},
    "sets": {"steps": 400, "batch_size": 128, "lr": 1e-3, "eval_every": 20},
    "sequences": {"steps": 500, "batch_size": 128, "lr": 1e-3, "eval_every": 50},
    "gmm": {"steps": 1000, "batch_size": 128, "lr": 1e-3, "eval_every": 100},
    "banana": {"steps": 1000, "batch_size": 128, "lr": 1e-3, "eval_every": 100},
    "phylo": {"steps": 300, "batch_size": 64, "lr": 1e-3, "eval_every": 50},
}


def resolve(config: TrainConfig) -> TrainConfig:
    """`config` with its None fields filled in, checked.

    Raises:
        ValueError: unknown env, objective, layout or compile backend; non-positive sizes;
            fewer trajectories than processes; tb with "loo" off-policy.
    """
    if config.env not in ENV_DEFAULTS:
        raise ValueError(f"env: expected one of {tuple(ENV_DEFAULTS)}, got {config.env!r}")
    if config.objective not in gf.OBJECTIVES:
        raise ValueError(f"objective: expected one of {gf.OBJECTIVES}, got {config.objective!r}")
    if config.layout not in LAYOUTS:
        raise ValueError(f"layout: expected one of {LAYOUTS}, got {config.layout!r}")
    filled = {k: v for k, v in ENV_DEFAULTS[config.env].items() if getattr(config, k) is None}
    if config.control_variate is None:
        filled["control_variate"] = "none" if config.objective == "tb" else "loo"
    config = replace(config, **filled)
    for name in ("steps", "batch_size", "eval_every", "threads", "nproc"):
        if getattr(config, name) < 1:
            raise ValueError(f"{name}: expected >= 1, got {getattr(config, name)}")
    if config.batch_size < config.nproc:
        raise ValueError(
            f"batch_size: expected >= nproc (one trajectory per process at least), got "
            f"{config.batch_size} for nproc={config.nproc}"
        )
    backends = torch.compiler.list_backends(exclude_tags=())
    if config.compile and config.compile_backend not in backends:
        raise ValueError(
            f"compile_backend: expected one of {backends}, got {config.compile_backend!r}"
        )
    off_policy = config.epsilon > 0 or config.temperature != 1.0
    if config.objective == "tb" and config.control_variate == "loo" and off_policy:
        raise ValueError(
            'control_variate: "loo" for tb is unbiased only on-policy, but epsilon/temperature '
            'make the batch off-policy; use "none"'
        )
    return config


def shard_sizes(batch_size: int, nproc: int) -> list[int]:
    """Trajectories per shard: `batch_size` split as evenly as possible, larger shards first."""
    base, extra = divmod(batch_size, nproc)
    return [base + (shard < extra) for shard in range(nproc)]


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard `shard`'s sampling stream (shard 0 keeps `seed`; the others do not
    collide with any seed below 2**32)."""
    return seed + shard * 2**32


class Trainer:
    """One training run; see the module docstring.

    Args:
        config: the run's settings (None fields are resolved per env).
        out: directory for metrics.csv, metrics.json and checkpoint.pt (None: no files;
            only rank 0 of a process group writes).
        process_group: the torch.distributed group of a `launch`ed run, with config.nproc
            ranks; each rank samples the shard of its rank. None: sample every shard here.

    Raises:
        ValueError: a bad config (see `resolve`), or a process group of the wrong size.
    """

    def __init__(self, config: TrainConfig, out: str | Path | None = None, process_group=None):
        self.config = config = resolve(config)
        self.process_group = process_group
        self.rank = 0
        self.shards = list(range(config.nproc))
        if process_group is not None:
            if dist.get_world_size(process_group) != config.nproc:
                raise ValueError(
                    f"process_group: expected config.nproc={config.nproc} ranks, got "
                    f"{dist.get_world_size(process_group)}"
                )
            self.rank = dist.get_rank(process_group)
            self.shards = [self.rank]
        self.out = None if out is None or self.rank != 0 else Path(out)
        torch.set_num_threads(config.threads)
        torch.manual_seed(config.seed)
        self.device = torch.device(config.device)
        self.env = envs.make(config.env, config.preset)
        options = {"deep_set": config.deep_set, "learn_pb": config.learn_pb}
        if isinstance(self.env, ContinuousEnv):
            options = {}
        self.policy = make_policy(self.env, config.hidden, config.layers, **options).to(self.device)
        self._divergence_loss = gf.divergence_loss
        if config.compile:
            # In place, so the state_dict (and the checkpoint) keeps the eager names.
            for network in self.policy.children():
                network.compile(backend=config.compile_backend)
            self._divergence_loss = torch.compile(
                gf.divergence_loss, fullgraph=True, backend=config.compile_backend
            )
        groups = [{"params": list(self.policy.parameters()), "lr": config.lr}]
        self.log_z = None
        if config.objective == "tb":
            self.log_z = torch.nn.Parameter(torch.zeros((), device=self.device))
            groups.append({"params": [self.log_z], "lr": config.lr_log_z})
        self.optimizer = torch.optim.Adam(groups)
        self.schedule = torch.optim.lr_scheduler.LambdaLR(
            self.optimizer, lambda step: max(0.0, 1 - step / config.steps) ** config.lr_decay_power
        )
        self.sizes = shard_sizes(config.batch_size, config.nproc)
        self.generators = [
            torch.Generator(self.device).manual_seed(shard_seed(config.seed, shard))
            for shard in self.shards
        ]
        self.modes = None if isinstance(self.env, ContinuousEnv) else ModeTracker(self.env)
        self.step = 0
        self.trajectories = 0
        self.seconds = 0.0
        self.curve: list[dict] = []
        self._losses: list[float] = []
        self._ess: list[float] = []

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> None:
        """Sample a batch, take one optimiser step, advance the schedule."""
        stats, terminal = self.compute_gradients()
        if self.process_group is not None:
            self._average_gradients()
        self.optimizer.step()
        self.schedule.step()
        self.step += 1
        self.trajectories += self.config.batch_size
        self._losses.append(float(stats["value"]))
        self._ess.append(float(stats["ess"]))
        if self.modes is not None:
            self.modes.update(terminal)

    def compute_gradients(self) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        """Sample this process's shards and set the parameters' .grad to the loss gradient
        (under a process group: this rank's share, before averaging over the ranks).

        Returns:
            (stats of `gf.divergence_loss`, the sampled terminal states [B_local, W]).
        """
        config = self.config
        batch = concatenate(
            [
                sample_trajectories(
                    self.env,
                    self.policy,
                    self.sizes[shard],
                    generator=generator,
                    epsilon=config.epsilon,
                    temperature=config.temperature,
                    device=self.device,
                )
                for shard, generator in zip(self.shards, self.generators, strict=True)
            ]
        )
        inputs = batch.loss_inputs(config.layout)
        if config.objective == "tb":
            inputs["log_behavior"] = None  # TB's gradient is valid for any sampler
        loss, stats = self._divergence_loss(
            config.objective,
            **inputs,
            alpha=config.alpha,
            control_variate=config.control_variate,
            log_z=self.log_z,
            normalization=config.normalization,
            process_group=self.process_group,
            validate=not config.compile,  # the checks sync with the host: no full graph
        )
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        return stats, batch.terminal

    def _parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    def _average_gradients(self) -> None:
        """Average the gradients over the process group in one all-reduce, as DDP does."""
        parameters = self._parameters()
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in parameters])
        dist.all_reduce(flat, group=self.process_group)
        flat /= dist.get_world_size(self.process_group)
        for p, grad in zip(parameters, flat.split([p.numel() for p in parameters]), strict=True):
            p.grad.copy_(grad.view_as(p))

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """The current record: the metric, counters, and means over steps since the last one.

        Under a process group every rank calls it: the modes found are merged, rank 0
        computes the record and every rank returns it.
        """
        if self.process_group is None:
            return self._record_here()
        if self.modes is not None:
            found = [None] * dist.get_world_size(self.process_group)
            dist.all_gather_object(found, self.modes.found, group=self.process_group)
            self.modes.found = set().union(*found)
        box = [self._record_here() if self.rank == 0 else None]
        source = dist.get_global_rank(self.process_group, 0)
        dist.broadcast_object_list(box, src=source, group=self.process_group)
        self._losses, self._ess = [], []
        return box[0]

    def _record_here(self) -> dict:
        """`evaluate`'s record, computed in this process."""
        record = {
            "step": self.step,
            "trajectories": self.trajectories,
            "seconds": round(self.seconds, 3),
            "objective": self.config.objective,
        }
        if isinstance(self.env, ContinuousEnv):
            generator = torch.Generator(self.device).manual_seed(self.config.seed + 1)
            record["js"] = jensen_shannon(self.env, self.policy, self.config.js_samples, generator)
        else:
            # None (JSON null) where the state space is too large to enumerate.
            enumerable = getattr(self.env, "enumerable", True)
            record["exact_l1"] = exact_l1(self.env, self.policy) if enumerable else None
            record["modes"] = len(self.modes.found)
        # None (JSON null) before the first step.
        record["loss"] = statistics.fmean(self._losses) if self._losses else None
        record["ess"] = statistics.fmean(self._ess) if self._ess else None
        if self.log_z is not None:
            record["log_z"] = float(self.log_z.detach())
        self._losses, self._ess = [], []
        return record

    @property
    def metric_name(self) -> str:
        return "js" if isinstance(self.env, ContinuousEnv) else "exact_l1"

    # -- the loop ---------------------------------------------------------------------------
    def run(self, until: int | None = None, progress: bool = True) -> dict:
        """Train up to step `until` (default: config.steps); returns the last record.

        Ctrl-C saves a checkpoint (when `out` is set) and re-raises KeyboardInterrupt.
        """
        until = self.config.steps if until is None else min(until, self.config.steps)
        bar = _progress_bar(total=self.config.steps, initial=self.step, enabled=progress)
        started = time.perf_counter() - self.seconds
        try:
            if not self.curve:
                self._record(self.evaluate(), bar)
            while self.step < until:
                self.train_step()
                self.seconds = time.perf_counter() - started
                bar.update(1)
                if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
                    self._record(self.evaluate(), bar)
                    if self.process_group is not None:
                        self.save()
                    self.seconds = time.perf_counter() - started
        except KeyboardInterrupt:
            # Ranks stop at different points, so a process group cannot agree on a new
            # checkpoint; the one of the last evaluation stands.
            if self.process_group is None:
                self.save()
            raise
        finally:
            bar.close()
        self.save()
        return self.curve[-1]

    def _record(self, record: dict, bar) -> None:
        self.curve.append(record)
        rate = self.trajectories / self.seconds if self.seconds > 0 else 0.0
        bar.set_postfix(
            loss=_short(record["loss"]),
            **{self.metric_name: _short(record[self.metric_name])},
            traj_per_s=f"{rate:.0f}",
        )
        self.write_logs()

    # -- files ------------------------------------------------------------------------------
    def write_logs(self) -> None:
        """OUT/metrics.json (last record's keys, plus `config` and `curve`) and metrics.csv."""
        if self.out is None or not self.curve:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        summary = {**self.curve[-1], "config": asdict(self.config), "curve": self.curve}
        (self.out / "metrics.json").write_text(json.dumps(summary, indent=1))
        columns = list(dict.fromkeys(key for record in self.curve for key in record))
        with open(self.out / "metrics.csv", "w", newline="") as handle:
            writer = csv.DictWriter(handle, columns)
            writer.writeheader()
            writer.writerows(self.curve)

    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit, RNG states included (the trainer draws
        only from torch's RNGs: one generator per shard for sampling, the global one at init).

        Under a process group every rank calls it (it gathers every shard's generator).
        """
        generators = [g.get_state() for g in self.generators]
        if self.process_group is not None:
            gathered = [None] * dist.get_world_size(self.process_group)
            dist.all_gather_object(gathered, generators[0], group=self.process_group)
            generators = gathered
        return {
            "config": asdict(self.config),
            "policy": self.policy.state_dict(),
            "log_z": None if self.log_z is None else self.log_z.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "schedule": self.schedule.state_dict(),
            "generators": generators,
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "counters": {
                "step": self.step,
                "trajectories": self.trajectories,
                "seconds": self.seconds,
            },
            "curve": self.curve,
            "pending": {"losses": self._losses, "ess": self._ess},
            "modes": None if self.modes is None else sorted(self.modes.found),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved (the config must match this trainer's)."""
        self.policy.load_state_dict(state["policy"])
        if self.log_z is not None:
            with torch.no_grad():
                self.log_z.copy_(state["log_z"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.schedule.load_state_dict(state["schedule"])
        # Checkpoints from before sharding hold the one generator of shard 0.
        generators = state.get("generators") or [state["generator"]]
        for shard, generator in zip(self.shards, self.generators, strict=True):
            generator.set_state(generators[shard])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] is not None and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        self.step = state["counters"]["step"]
        self.trajectories = state["counters"]["trajectories"]
        self.seconds = state["counters"]["seconds"]
        self.curve = list(state["curve"])
        self._losses = list(state["pending"]["losses"])
        self._ess = list(state["pending"]["ess"])
        if self.modes is not None:
            self.modes.found = set(state["modes"])

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the checkpoint to `path` (default OUT/checkpoint.pt); returns where.

        Under a process group every rank calls it; only rank 0 writes.
        """
        state = self.state_dict() if self.process_group is not None else None
        if self.rank != 0:
            return None
        if path is None:
            if self.out is None:
                return None
            path = self.out / "checkpoint.pt"
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        temporary = path.with_suffix(".tmp")
        torch.save(self.state_dict() if state is None else state, temporary)
        temporary.replace(path)  # atomic: a Ctrl-C mid-write never corrupts the checkpoint
        return path

    @classmethod
    def resume(
        cls, checkpoint: str | Path, out: str | Path | None = None, process_group=None
    ) -> Trainer:
        """A trainer restored from `checkpoint`, writing to `out` (default: its directory)."""
        checkpoint = Path(checkpoint)
        state = torch.load(checkpoint, weights_only=False)
        trainer = cls(_config_of(state), checkpoint.parent if out is None else out, process_group)
        trainer.load_state_dict(state)
        return trainer


def _config_of(state: dict) -> TrainConfig:
    known = {f.name for f in fields(TrainConfig)}
    return TrainConfig(**{k: v for k, v in state["config"].items() if k in known})


def checkpoint_config(checkpoint: str | Path) -> TrainConfig:
    """The config a checkpoint was trained with."""
    return _config_of(torch.load(checkpoint, weights_only=False))


def launch(
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    progress: bool = True,
) -> dict:
    """Train `config` (or continue the checkpoint `resume`) in config.nproc processes.

    The processes are spawned with torch.multiprocessing and joined by a gloo process group
    on CPU; each runs a `Trainer` over its shard of every batch. Rank 0 shows the progress
    bar and writes to `out` (a resumed run: default the checkpoint's directory).

    Returns:
        The last record, as `Trainer.run` returns it.

    Raises:
        ValueError: neither or both of config and resume, or a bad config (see `resolve`).
    """
    if (config is None) == (resume is None):
        raise ValueError("config, resume: expected exactly one of them")
    nproc = resolve(checkpoint_config(resume) if config is None else config).nproc
    context = mp.get_context("spawn")
    results = context.SimpleQueue()
    with tempfile.TemporaryDirectory() as rendezvous:
        store = f"file://{Path(rendezvous) / 'store'}"
        mp.spawn(
            _launched,
            args=(nproc, store, config, out, resume, progress, results),
            nprocs=nproc,
            join=True,
        )
    return results.get()


def _launched(rank, nproc, store, config, out, resume, progress, results) -> None:
    """One process of `launch`."""
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=nproc)
    try:
        group = dist.group.WORLD
        if resume is None:
            trainer = Trainer(config, out, group)
        else:
            trainer = Trainer.resume(resume, out, group)
        final = trainer.run(progress=progress and rank == 0)
        if rank == 0:
            results.put(final)
    finally:
        dist.destroy_process_group()


def _short(value: float | None) -> str:
    return "-" if value is None else f"{value:.4g}"


def _progress_bar(total: int, initial: int, enabled: bool):
    from tqdm.auto import tqdm  # the "train" extra

    return tqdm(total=total, initial=initial, disable=not enabled, unit="step", dynamic_ncols=True)
