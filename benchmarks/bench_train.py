"""Training throughput (trajectories/s) of gfn_fast on torchgfn's 8x8 hypergrid.

One step = sample a batch of 128 trajectories on-policy + loss + backward + Adam, with
2 x 256 LeakyReLU MLPs. Writes benchmarks/results/train_throughput.json in the results
shape of the README's "Benchmarks" section (plus trajectories_per_s and the machine's load
average, since the machine may be shared).

    python benchmarks/bench_train.py [--steps 60] [--threads 1 2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import time
import warnings
from pathlib import Path

import torch

import gfn_fast as gf
from gfn_fast.train.trainer import TrainConfig, Trainer

RESULTS = Path(__file__).parent / "results" / "train_throughput.json"


def _commit() -> str:
    try:
        return subprocess.check_output(["git", "rev-parse", "--short", "HEAD"], text=True).strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def measure(objective: str, threads: int, steps: int, warmup: int = 10) -> dict:
    """Median step time of `steps` training steps after `warmup` ones."""
    config = TrainConfig(
        env="hypergrid",
        preset="torchgfn",
        objective=objective,
        batch_size=128,
        hidden=256,
        layers=2,
        steps=warmup + steps,
        threads=threads,
    )
    trainer = Trainer(config)
    times = []
    for i in range(warmup + steps):
        start = time.perf_counter()
        trainer.train_step()
        if i >= warmup:
            times.append(time.perf_counter() - start)
    median = statistics.median(times)
    return {
        "bench": "train_step/hypergrid8x8",
        "shape": {"batch": 128, "hidden": 256, "layers": 2, "objective": objective},
        "dtype": "float32",
        "impl": f"gfn_fast[{gf.backend()}]",
        "threads": threads,
        "median_ms": round(median * 1e3, 3),
        "trajectories_per_s": round(128 / median, 1),
        "gbps": None,
        "peak_mem_mb": None,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--objectives", nargs="+", default=["tb", "renyi"])
    args = parser.parse_args()
    warnings.filterwarnings("ignore", message=".*reference backend.*")
    rows = [measure(o, t, args.steps) for t in args.threads for o in args.objectives]
    result = {
        "machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.platform()}",
        "torch": torch.__version__,
        "commit": _commit(),
        "threads": max(args.threads),
        "backend": gf.backend(),
        "load_average_1m_after": os.getloadavg()[0],
        "note": "steps timed from the untrained policy (the start of training), after 10 "
        "warm-up steps; one step = sample 128 trajectories + loss + backward + Adam",
        "rows": rows,
        "ratios": {},
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=1) + "\n")
    for row in rows:
        print(
            f"{row['shape']['objective']:>6} threads={row['threads']}: "
            f"{row['median_ms']:.1f} ms/step, {row['trajectories_per_s']:.0f} trajectories/s"
        )


if __name__ == "__main__":
    main()
