"""Train a GFlowNet with any objective of `gf.divergence_loss`: `Trainer` and its parts.

    trainer = Trainer(TrainConfig(env="hypergrid", objective="renyi"), out="runs/a")
    final = trainer.run()

- `config`: TrainConfig, ENV_DEFAULTS, resolve (every check of a setting);
- `loop`: Trainer, the training loop;
- `evaluation`: the metric of each kind of environment (exact L1, Monte Carlo L1, JS);
- `checkpoint`: checkpoint files of tensors and plain data, loaded without unpickling code;
- `logs`: the progress bar, metrics.json and metrics.csv;
- `interrupts`: SIGINT / SIGTERM stop a run at a step boundary, after a checkpoint;
- `distributed`: shards of a batch, in this process or in `launch`ed processes.
"""

from __future__ import annotations

from gfn_fast.train.trainer.checkpoint import CheckpointError, load_checkpoint
from gfn_fast.train.trainer.config import (
    ENV_DEFAULTS,
    RESUMABLE_CHANGES,
    TrainConfig,
    resolve,
)
from gfn_fast.train.trainer.distributed import launch, shard_seed, shard_sizes
from gfn_fast.train.trainer.interrupts import Interrupted, StopOnSignals
from gfn_fast.train.trainer.loop import Trainer, checkpoint_config

__all__ = [
    "ENV_DEFAULTS",
    "RESUMABLE_CHANGES",
    "CheckpointError",
    "Interrupted",
    "StopOnSignals",
    "TrainConfig",
    "Trainer",
    "checkpoint_config",
    "launch",
    "load_checkpoint",
    "resolve",
    "shard_seed",
    "shard_sizes",
]
