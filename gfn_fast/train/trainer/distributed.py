"""Shards of a batch, in one process or in one process per shard.

Every batch is split into `nproc` shards, each sampled from its own random stream. A run in
one process samples every shard itself (`LocalShards`); `launch` runs one process per shard,
joined by a gloo process group on CPU (`ProcessGroupShards`): gradients are averaged over
the processes as DDP does, the loss's batch statistics are global (the loss gets the process
group), and rank 0 evaluates and writes. Both give the same run, up to float rounding.

The trainer calls the same methods in both cases; in one process they are identities.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from gfn_fast.train.trainer.checkpoint import load_checkpoint
from gfn_fast.train.trainer.config import resolve
from gfn_fast.train.trainer.interrupts import Interrupted, StopOnSignals, signals_ignored


def shard_sizes(batch_size: int, nproc: int) -> list[int]:
    """Trajectories per shard: `batch_size` split as evenly as possible, larger shards first."""
    base, extra = divmod(batch_size, nproc)
    return [base + (shard < extra) for shard in range(nproc)]


def shard_seed(seed: int, shard: int) -> int:
    """The seed of shard `shard`'s sampling stream (shard 0 keeps `seed`; the others do not
    collide with any seed below 2**32)."""
    return seed + shard * 2**32


class LocalShards:
    """Every shard sampled in this process."""

    process_group = None
    rank = 0

    def __init__(self, nproc: int):
        self.shards = list(range(nproc))

    def average_gradients(self, parameters: list[torch.Tensor]) -> None:
        """Nothing to do: this process's backward pass saw the whole batch."""

    def any(self, flag: bool) -> bool:
        """Whether `flag` is set in any process."""
        return flag

    def union(self, items: set) -> set:
        """The union of `items` over the processes."""
        return items

    def from_rank0(self, make: Callable[[], object]) -> object:
        """`make()` computed on rank 0 and given to every process."""
        return make()

    def gather(self, values: list) -> list:
        """The values of every shard, in shard order, from each process's own list."""
        return values


class ProcessGroupShards(LocalShards):
    """The one shard of this process's rank in a process group of `nproc` ranks.

    Raises:
        ValueError: the group does not have `nproc` ranks.
    """

    def __init__(self, process_group, nproc: int):
        world = dist.get_world_size(process_group)
        if world != nproc:
            raise ValueError(f"process_group: expected config.nproc={nproc} ranks, got {world}")
        self.process_group = process_group
        self.rank = dist.get_rank(process_group)
        self.shards = [self.rank]
        self._world = world

    def average_gradients(self, parameters):
        """Average the gradients over the processes in one all-reduce, as DDP does."""
        for p in parameters:
            if p.grad is None:
                p.grad = torch.zeros_like(p)
        flat = torch.cat([p.grad.flatten() for p in parameters])
        dist.all_reduce(flat, group=self.process_group)
        flat /= self._world
        for p, grad in zip(parameters, flat.split([p.numel() for p in parameters]), strict=True):
            p.grad.copy_(grad.view_as(p))

    def any(self, flag):
        value = torch.tensor([float(flag)])
        dist.all_reduce(value, op=dist.ReduceOp.MAX, group=self.process_group)
        return bool(value.item())

    def union(self, items):
        gathered = [None] * self._world
        dist.all_gather_object(gathered, items, group=self.process_group)
        return set().union(*gathered)

    def from_rank0(self, make):
        box = [make() if self.rank == 0 else None]
        source = dist.get_global_rank(self.process_group, 0)
        dist.broadcast_object_list(box, src=source, group=self.process_group)
        return box[0]

    def gather(self, values):
        gathered = [None] * self._world
        dist.all_gather_object(gathered, values[0], group=self.process_group)
        return gathered


def shard_group(process_group, nproc: int) -> LocalShards:
    """The shards of this process: all of them without a process group."""
    if process_group is None:
        return LocalShards(nproc)
    return ProcessGroupShards(process_group, nproc)


def launch(
    config=None,
    out: str | Path | None = None,
    *,
    resume: str | Path | None = None,
    changes: dict | None = None,
    progress: bool = True,
    label: str | None = None,
    stop: StopOnSignals | None = None,
) -> dict:
    """Train `config` (or continue the checkpoint `resume`, with `changes` as
    `Trainer.resume` takes them) in config.nproc processes.

    The processes are spawned with torch.multiprocessing and joined by a gloo process group
    on CPU; each runs a `Trainer` over its shard of every batch. Rank 0 shows the progress
    bar and writes to `out` (a resumed run: default the checkpoint's directory). SIGINT or
    SIGTERM sent to this process (or to the workers, or `stop`, an entered
    `StopOnSignals`, requested) stops every worker at the same step boundary, after that
    step's checkpoint. The workers start with both signals ignored, until their handlers
    are installed.

    Returns:
        The last record, as `Trainer.run` returns it.

    Raises:
        ValueError: neither or both of config and resume, or a bad config (see `resolve`).
        CheckpointError: `resume` is not a readable checkpoint.
        Interrupted: the run was stopped by a signal (its checkpoint is written).
    """
    if (config is None) == (resume is None):
        raise ValueError("config, resume: expected exactly one of them")
    nproc = (load_checkpoint(resume)["config"] if config is None else resolve(config)).nproc
    if stop is None:
        with StopOnSignals() as own:
            return launch(
                config,
                out,
                resume=resume,
                changes=changes,
                progress=progress,
                label=label,
                stop=own,
            )
    context = mp.get_context("spawn")
    results, stopping = context.SimpleQueue(), context.Event()
    with tempfile.TemporaryDirectory() as rendezvous:
        store = f"file://{Path(rendezvous) / 'store'}"
        args = (nproc, store, config, out, resume, changes, progress, label, results, stopping)
        with signals_ignored():  # until each worker has its own handlers
            workers = mp.start_processes(
                _worker, args=args, nprocs=nproc, join=False, start_method="spawn"
            )
        while not workers.join(timeout=0.2):
            if stop.requested:  # e.g. from `kill`, which reaches only this process
                stopping.set()
    outcome = results.get()
    if outcome["interrupted"]:
        raise Interrupted(stop.signal, outcome["step"], outcome["checkpoint"])
    return outcome["record"]


def _worker(rank, nproc, store, config, out, resume, changes, progress, label, results, stopping):
    """One process of `launch`: stops on its own signals or when `stopping` is set."""
    from gfn_fast.train.trainer.loop import Trainer  # loop imports this module

    with StopOnSignals(shared=stopping) as stop:
        dist.init_process_group("gloo", init_method=store, rank=rank, world_size=nproc)
        try:
            group = dist.group.WORLD
            if resume is None:
                trainer = Trainer(config, out, group)
            else:
                trainer = Trainer.resume(resume, out, group, **(changes or {}))
            try:
                record = trainer.run(progress=progress and rank == 0, stop=stop, label=label)
                outcome = {"interrupted": False, "record": record}
            except Interrupted as interrupted:
                outcome = {
                    "interrupted": True,
                    "step": interrupted.step,
                    "checkpoint": interrupted.checkpoint,
                }
            if rank == 0:
                results.put(outcome)
            dist.barrier()  # no process closes its connections while another still uses them
        finally:
            dist.destroy_process_group()
