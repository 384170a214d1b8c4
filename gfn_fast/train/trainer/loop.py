"""The training loop: `Trainer`, one run of one config.

Its parts live beside it: the config and its checks (`config`), how a run is measured
(`evaluation`), the checkpoint files (`checkpoint`), the progress bar and metric files
(`logs`), signals (`interrupts`), shards in one or several processes (`distributed`), the
allocator setting that keeps a step's freed memory for the next one (`allocator`), and the
collector setting that keeps the run's long-lived objects out of full collections
(`collector`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from gfn_fast.losses import objective_loss
from gfn_fast.train import envs
from gfn_fast.train.policies import make_policy
from gfn_fast.train.precision import autocast
from gfn_fast.train.rollout import concatenate, rollout
from gfn_fast.train.scoring import TrajectoryBatch, score
from gfn_fast.train.trainer.allocator import keep_freed_memory
from gfn_fast.train.trainer.checkpoint import (
    FORMAT,
    CheckpointError,
    config_to_json,
    load_checkpoint,
    save_checkpoint,
)
from gfn_fast.train.trainer.collector import long_lived_frozen
from gfn_fast.train.trainer.config import RESUMABLE_CHANGES, TrainConfig, objective_of, resolve
from gfn_fast.train.trainer.distributed import shard_group, shard_seed, shard_sizes
from gfn_fast.train.trainer.evaluation import evaluation_for
from gfn_fast.train.trainer.interrupts import Interrupted, StopOnSignals
from gfn_fast.train.trainer.logs import ProgressBar, write_metrics


class Trainer:
    """One training run.

    The trainer samples on- or off-policy batches, takes Adam steps (lr `config.lr` for the
    policy, `config.lr_log_z` for tb's learned log Z, both decayed polynomially to 0 over
    `config.steps`, as in the paper), evaluates every `eval_every` steps (see
    `evaluation`), shows a tqdm bar and writes OUT/metrics.json, OUT/metrics.csv and
    OUT/checkpoint.pt. The records' `seconds` count training steps only: evaluations and
    checkpoints are off the clock. A resumed run continues bit-for-bit: parameters,
    optimiser state, counters and every random stream are saved, always at a step boundary
    (the learning rates are a function of the step).

        trainer = Trainer(TrainConfig(env="hypergrid", objective="renyi"), out="runs/a")
        final = trainer.run()

    Args:
        config: the run's settings (None fields are resolved per env).
        out: directory for the files (None: no files; only rank 0 of a process group writes).
        process_group: the torch.distributed group of a `launch`ed run, with config.nproc
            ranks; each rank samples the shard of its rank. None: sample every shard here.

    Raises:
        ValueError: a bad config (see `resolve`), or a process group of the wrong size.
    """

    def __init__(self, config: TrainConfig, out: str | Path | None = None, process_group=None):
        self.config = config = resolve(config)
        self.shards = shard_group(process_group, config.nproc)
        self.out = None if out is None or self.shards.rank != 0 else Path(out)
        torch.set_num_threads(config.threads)
        keep_freed_memory()  # process-wide, like the thread count (see `allocator`)
        torch.manual_seed(config.seed)
        self.device = torch.device(config.device)
        self.env = envs.make(config.env, config.preset)
        self.policy = make_policy(
            self.env,
            config.hidden,
            config.layers,
            deep_set=config.deep_set,
            learn_pb=config.learn_pb,
        ).to(self.device)
        self.objective = objective_of(config)
        self._loss = objective_loss
        if config.compile:
            # In place, so the state_dict (and the checkpoint) keeps the eager names.
            for network in self.policy.children():
                network.compile(backend=config.compile_backend)
            self._loss = torch.compile(
                objective_loss, fullgraph=True, backend=config.compile_backend
            )
        groups = [{"params": list(self.policy.parameters()), "lr": config.lr}]
        self.log_z = None
        if config.objective == "tb":
            self.log_z = torch.nn.Parameter(torch.zeros((), device=self.device))
            groups.append({"params": [self.log_z], "lr": config.lr_log_z})
        # fused: one kernel for every parameter (the per-tensor loop costs ~1 ms a step).
        self.optimizer = torch.optim.Adam(groups, fused=True)
        self._base_lrs = [group["lr"] for group in groups]
        self.sizes = shard_sizes(config.batch_size, config.nproc)
        self.generators = [
            torch.Generator(self.device).manual_seed(shard_seed(config.seed, shard))
            for shard in self.shards.shards
        ]
        self.evaluation = evaluation_for(self.env, config, self.device)
        self.step = 0
        self.trajectories = 0
        self.seconds = 0.0
        self.curve: list[dict] = []
        self._losses: list[float] = []
        self._ess: list[float] = []
        self._saved_step: int | None = None

    def _set_learning_rates(self) -> None:
        """The rates of this step: a function of the step alone (nothing to checkpoint), so
        that a run resumed with more steps decays over its new length from where it is."""
        factor = max(0.0, 1 - self.step / self.config.steps) ** self.config.lr_decay_power
        for group, base in zip(self.optimizer.param_groups, self._base_lrs, strict=True):
            group["lr"] = base * factor

    @property
    def process_group(self):
        """The torch.distributed group of a `launch`ed run, or None."""
        return self.shards.process_group

    @property
    def metric_name(self) -> str:
        """The record key of this run's metric ("exact_l1", "mc_l1" or "js")."""
        return self.evaluation.metric

    @property
    def checkpoint_path(self) -> Path | None:
        return None if self.out is None else self.out / "checkpoint.pt"

    # -- one step ---------------------------------------------------------------------------
    def train_step(self) -> None:
        """Sample a batch, take one optimiser step at this step's learning rates."""
        stats, batch = self.compute_gradients()
        self.shards.average_gradients(self._parameters())
        self._set_learning_rates()
        self.optimizer.step()
        self.step += 1
        self.trajectories += self.config.batch_size
        self._losses.append(float(stats["value"]))
        self._ess.append(float(stats["ess"]))
        self.evaluation.observe(batch.terminal, batch.log_reward)

    def compute_gradients(self) -> tuple[dict[str, torch.Tensor], TrajectoryBatch]:
        """Sample this process's shards and set the parameters' .grad to the loss gradient
        (under a process group: this rank's share, before averaging over the ranks).

        Returns:
            (stats of `gf.divergence_loss`, this process's scored `TrajectoryBatch`).
        """
        config = self.config
        # The loss checks its values (NaN, inf) but syncs with the host: not when compiled.
        validate = not config.compile
        with self.autocast():
            sampled = concatenate(
                [
                    rollout(
                        self.env,
                        self.policy,
                        self.sizes[shard],
                        generator=generator,
                        epsilon=config.epsilon,
                        temperature=config.temperature,
                        layout=config.layout,
                        keep_graph=config.keep_graph,
                        record_activations=config.record_activations,
                        distinct_states=config.distinct_states,
                        device=self.device,
                    )
                    for shard, generator in zip(self.shards.shards, self.generators, strict=True)
                ]
            )
            # The rollout's layout and actions are valid by construction: no index checks.
            batch = score(
                self.env,
                self.policy,
                sampled,
                validate=False,
                distinct_states=config.distinct_states,
            )
        inputs = batch.loss_inputs()
        if config.objective == "tb":
            inputs["log_behavior"] = None  # TB's gradient is valid for any sampler
        loss, stats = self._loss(
            self.objective,
            **inputs,
            log_z=self.log_z,
            process_group=self.process_group,
            validate=validate,
            caller="Trainer",
        )
        for parameter in self._parameters():  # zero_grad(set_to_none=True), minus its overhead
            parameter.grad = None
        loss.backward()
        return stats, batch

    def autocast(self):
        """The context of the policy networks' precision (`config.precision`)."""
        return autocast(self.config.precision, self.device)

    def _parameters(self) -> list[torch.Tensor]:
        return [p for group in self.optimizer.param_groups for p in group["params"]]

    # -- evaluation -------------------------------------------------------------------------
    def evaluate(self) -> dict:
        """The current record: the metric, counters, and means over steps since the last one.

        Under a process group every rank calls it: what the ranks observed is merged, rank 0
        computes the record and every rank returns it.
        """
        self.evaluation.merge(self.shards)
        record = self.shards.from_rank0(self._record_here)
        self._losses, self._ess = [], []
        return record

    def _record_here(self) -> dict:
        record = {
            "step": self.step,
            "trajectories": self.trajectories,
            "seconds": round(self.seconds, 3),
            "objective": self.config.objective,
            **self._measure(),
            # None (JSON null) before the first step.
            "loss": statistics.fmean(self._losses) if self._losses else None,
            "ess": statistics.fmean(self._ess) if self._ess else None,
        }
        if self.log_z is not None:
            record["log_z"] = float(self.log_z.detach())
        return record

    def _measure(self) -> dict:
        """The metric of the policy as it samples: in the run's precision."""
        with self.autocast():
            return self.evaluation.measure(self.policy)

    # -- the loop ---------------------------------------------------------------------------
    def run(
        self,
        until: int | None = None,
        progress: bool = True,
        *,
        stop: StopOnSignals | None = None,
        label: str | None = None,
    ) -> dict:
        """Train up to step `until` (default: config.steps); returns the last record.

        SIGINT and SIGTERM stop the run at the next step boundary: it writes that step's
        checkpoint (when `out` is set) and raises `Interrupted`. `stop` is the
        `StopOnSignals` to obey (default: one entered for this call). Checkpoints are also
        written at every evaluation and at the end. `label` names the progress bar.
        """
        if stop is None:
            with StopOnSignals() as own:
                return self.run(until, progress, stop=own, label=label)
        until = self.config.steps if until is None else min(until, self.config.steps)
        bar = ProgressBar(self.config.steps, self.step, progress, label)
        with long_lived_frozen(), contextlib.closing(bar):
            if not self.curve:
                self._record(self.evaluate(), bar)
            while self.step < until:
                if self.shards.any(stop.requested):  # every process stops at the same step
                    raise Interrupted(stop.signal, self.step, self.save())
                # The clock counts training steps only: evaluations and checkpoints are off
                # it, as in the benchmarks, so seconds and trajectories/s measure training.
                started = time.perf_counter()
                self.train_step()
                self.seconds += time.perf_counter() - started
                bar.update(1)
                if self.step % self.config.eval_every == 0 or self.step == self.config.steps:
                    self._record(self.evaluate(), bar)
        if self._saved_step != self.step:
            self.save()
        return self.curve[-1]

    def _record(self, record: dict, bar: ProgressBar) -> None:
        """Append `record`, show it, and write the checkpoint, then the metric files (so that
        a directory with metrics always has a checkpoint to resume from)."""
        self.curve.append(record)
        bar.show(record, self.trajectories / self.seconds if self.seconds > 0 else 0.0)
        self.save()
        if self.out is not None:
            write_metrics(self.out, self.config, self.curve)

    # -- checkpoints ------------------------------------------------------------------------
    def state_dict(self) -> dict:
        """Everything needed to continue bit-for-bit, as tensors and plain data (the config
        as JSON), RNG states included: the trainer draws only from torch's RNGs, one
        generator per shard for sampling and the global one at init.

        Under a process group every rank calls it (it gathers every shard's generator).
        """
        return {
            "format": FORMAT,
            "config": config_to_json(self.config),
            "policy": self.policy.state_dict(),
            "log_z": None if self.log_z is None else self.log_z.detach().clone(),
            "optimizer": self.optimizer.state_dict(),
            "generators": self.shards.gather([g.get_state() for g in self.generators]),
            "torch_rng": torch.get_rng_state(),
            "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else None,
            "counters": {
                "step": self.step,
                "trajectories": self.trajectories,
                "seconds": self.seconds,
            },
            "curve": self.curve,
            "pending": {"losses": self._losses, "ess": self._ess},
            "evaluation": self.evaluation.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        """Restore what `state_dict` saved, as `load_checkpoint` returns it (its config must
        be this trainer's, up to RESUMABLE_CHANGES).

        Raises:
            CheckpointError: the state does not fit this trainer (shapes, generators, ...).
        """
        try:
            self.policy.load_state_dict(state["policy"])
            if self.log_z is not None:
                with torch.no_grad():
                    self.log_z.copy_(state["log_z"])
            self.optimizer.load_state_dict(state["optimizer"])
            generators = state["generators"]
            for shard, generator in zip(self.shards.shards, self.generators, strict=True):
                generator.set_state(generators[shard])
            torch.set_rng_state(state["torch_rng"])
            if state["cuda_rng"] is not None and torch.cuda.is_available():
                torch.cuda.set_rng_state_all(state["cuda_rng"])
            self.step = int(state["counters"]["step"])
            self.trajectories = int(state["counters"]["trajectories"])
            self.seconds = float(state["counters"]["seconds"])
            self.curve = list(state["curve"])
            self._losses = list(state["pending"]["losses"])
            self._ess = list(state["pending"]["ess"])
            self.evaluation.load_state_dict(state["evaluation"])
        except (RuntimeError, ValueError, TypeError, KeyError, IndexError) as error:
            raise CheckpointError(
                f"checkpoint: its state does not fit its config "
                f"({type(error).__name__}: {str(error).strip().splitlines()[0]})"
            ) from None
        self._saved_step = self.step

    def save(self, path: str | Path | None = None) -> Path | None:
        """Write the checkpoint atomically to `path` (default OUT/checkpoint.pt); returns
        where (None: nowhere to write).

        Under a process group every rank calls it; only rank 0 writes.
        """
        state = self.state_dict()  # collective under a process group
        self._saved_step = self.step  # on every rank, which must agree on the next save
        path = self.checkpoint_path if path is None else Path(path)
        if self.shards.rank != 0 or path is None:
            return None
        save_checkpoint(path, state)
        return path

    @classmethod
    def resume(
        cls,
        checkpoint: str | Path,
        out: str | Path | None = None,
        process_group=None,
        **changes,
    ) -> Trainer:
        """A trainer restored from `checkpoint`, writing to `out` (default: its directory).

        `changes` may set the fields of RESUMABLE_CHANGES, e.g. steps=2000 to extend a run
        (the learning rate then decays over the new length from the step reached).

        Raises:
            CheckpointError: not a readable checkpoint (see `load_checkpoint`).
            ValueError: a change outside RESUMABLE_CHANGES, or steps below the step reached.
        """
        refused = sorted(set(changes) - set(RESUMABLE_CHANGES))
        if refused:
            raise ValueError(
                f"{', '.join(refused)}: a resumed run keeps its checkpoint's settings; "
                f"only {', '.join(RESUMABLE_CHANGES)} may change"
            )
        checkpoint = Path(checkpoint)
        state = load_checkpoint(checkpoint)
        config = resolve(replace(state["config"], **changes))
        reached = int(state["counters"]["step"])
        if config.steps < reached:
            raise ValueError(
                f"steps: expected at least the {reached} steps the checkpoint has reached, "
                f"got {config.steps}"
            )
        trainer = cls(config, checkpoint.parent if out is None else out, process_group)
        trainer.load_state_dict(state)
        return trainer


def checkpoint_config(checkpoint: str | Path) -> TrainConfig:
    """The config a checkpoint was trained with.

    Raises:
        CheckpointError: not a readable checkpoint (see `load_checkpoint`).
    """
    return load_checkpoint(checkpoint)["config"]
