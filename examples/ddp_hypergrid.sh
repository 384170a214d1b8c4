#!/usr/bin/env bash
# DDP training on CPU: 2 processes (gloo), each sampling half of every batch of 128
# trajectories; the renyi batch statistics are global, the gradients averaged over the
# processes. Rank 0 evaluates and writes runs/ddp/metrics.{json,csv} and checkpoint.pt.
# The same run in one process: Trainer(TrainConfig(..., nproc=2)).run() samples both halves.
set -euo pipefail
gfn-fast train --env hypergrid --preset torchgfn --objective renyi --nproc 2 --out runs/ddp "$@"
# Continue it (the checkpoint's config, so 2 processes again):
#   gfn-fast train --resume runs/ddp/checkpoint.pt
