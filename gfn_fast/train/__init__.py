"""The training application built on the gfn_fast loss library.

Environments (`gfn_fast.train.envs`), policies, the sampler, the trainer, exact metrics,
`compare` and the `gfn-fast` command. `import gfn_fast` does not import any of it.

    from gfn_fast.train import TrainConfig, Trainer
    Trainer(TrainConfig(env="hypergrid", preset="torchgfn"), out="runs/demo").run()
"""

from __future__ import annotations

from gfn_fast.train.trainer import TrainConfig, Trainer

__all__ = ["TrainConfig", "Trainer"]
