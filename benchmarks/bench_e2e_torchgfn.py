"""End-to-end training speed against torchgfn (issue 6, item 4), side by side in one run.

Task: HyperGrid 8x8, R0=0.1, R1=0.5, R2=2 (torchgfn's default). Network: 2 hidden layers
of 256, separate p_F and p_B MLPs. Same batch size, Adam with the same constant learning
rates (policy lr, log Z lr_log_z), on-policy, one thread. For each implementation
(torchgfn's TBGFlowNet; gfn_fast's Trainer with each --objectives entry) and each seed it
trains until the exact L1 between p_T and R/Z drops below --target (or --max-steps /
--max-seconds run out) and records:

- trajectories/s: batch / median training-step time (sample + loss + backward + Adam);
- seconds (and steps) to exact L1 < target, counting training steps only: the exact L1,
  evaluated every --eval-every steps, is off the clock on both sides.

Results go to benchmarks/results/e2e.json in the README's results shape: one row per
(implementation, objective) with medians over seeds, per-seed details under "seeds",
and ratios gfn_fast / torchgfn for throughput and torchgfn / gfn_fast for time to target
(> 1 means gfn_fast is better in both). Run from the repository root:

    python benchmarks/bench_e2e_torchgfn.py                 # 3 seeds, tb and renyi
    python benchmarks/bench_e2e_torchgfn.py --profile       # also: where a step's time goes
"""

from __future__ import annotations

import argparse
import cProfile
import json
import os
import platform
import pstats
import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import torch
from gfn.estimators import DiscretePolicyEstimator
from gfn.gflownet import TBGFlowNet
from gfn.gym import HyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.utils.modules import MLP

import gfn_fast as gf
from gfn_fast.integrations.torchgfn_exact import exact_l1
from gfn_fast.train import metrics
from gfn_fast.train.trainer import TrainConfig, Trainer

BENCH = "e2e_hypergrid_8x8"
RESULTS = Path(__file__).parent / "results" / "e2e.json"


class TorchgfnRun:
    """torchgfn's own TB training loop (its on-policy fast path: saved log-probs)."""

    def __init__(self, seed: int, args: argparse.Namespace):
        torch.manual_seed(seed)
        self.env = HyperGrid(ndim=2, height=8, store_all_states=True)  # R0=0.1 default
        preprocessor = KHotPreprocessor(self.env.height, self.env.ndim)
        n_actions = self.env.n_actions
        pf = DiscretePolicyEstimator(
            MLP(preprocessor.output_dim, n_actions, args.hidden, args.layers),
            n_actions,
            preprocessor,
        )
        pb = DiscretePolicyEstimator(
            MLP(preprocessor.output_dim, n_actions - 1, args.hidden, args.layers),
            n_actions,
            preprocessor,
            is_backward=True,
        )
        self.gflownet = TBGFlowNet(pf, pb)
        self.optimizer = torch.optim.Adam(
            [
                {"params": self.gflownet.pf_pb_parameters(), "lr": args.lr},
                {"params": self.gflownet.logz_parameters(), "lr": args.lr_log_z},
            ]
        )
        self.batch_size = args.batch_size

    def step(self) -> None:
        trajectories = self.gflownet.sample_trajectories(
            self.env, self.batch_size, save_logprobs=True
        )
        loss = self.gflownet.loss(self.env, trajectories, recalculate_all_logprobs=False)
        self.optimizer.zero_grad()
        loss.backward()
        self.optimizer.step()

    def exact_l1(self) -> float:
        return exact_l1(self.env, self.gflownet.pf)


class GfnFastRun:
    """gfn_fast's Trainer on the same task and network, one `train_step` per step."""

    def __init__(self, objective: str, seed: int, args: argparse.Namespace):
        config = TrainConfig(
            env="hypergrid",
            preset="torchgfn",
            objective=objective,
            alpha=args.alpha,
            batch_size=args.batch_size,
            lr=args.lr,
            lr_log_z=args.lr_log_z,
            lr_decay_power=0.0,  # constant learning rates, as on the torchgfn side
            steps=args.max_steps,
            hidden=args.hidden,
            layers=args.layers,
            learn_pb=True,
            seed=seed,
            threads=args.threads,
        )
        self.trainer = Trainer(config)

    def step(self) -> None:
        self.trainer.train_step()

    def exact_l1(self) -> float:
        return metrics.exact_l1(self.trainer.env, self.trainer.policy)


def measure(run, args: argparse.Namespace) -> dict:
    """Trains `run` to exact L1 < target; times training steps only."""
    step_seconds: list[float] = []
    train_seconds, l1 = 0.0, run.exact_l1()
    reached = None
    while len(step_seconds) < args.max_steps and train_seconds < args.max_seconds:
        started = time.perf_counter()
        run.step()
        step_seconds.append(time.perf_counter() - started)
        train_seconds += step_seconds[-1]
        if len(step_seconds) % args.eval_every == 0:
            l1 = run.exact_l1()
            if l1 < args.target:
                reached = {"steps": len(step_seconds), "seconds": train_seconds}
                break
    median_step = statistics.median(step_seconds)
    return {
        "median_ms": 1e3 * median_step,
        "trajectories_per_s": args.batch_size / median_step,
        "steps_to_target": None if reached is None else reached["steps"],
        "seconds_to_target": None if reached is None else reached["seconds"],
        "steps": len(step_seconds),
        "final_l1": l1,
    }


def profile(make_run: Callable[[], object], steps: int, label: str) -> None:
    """Prints the functions that take a training step's time (cProfile, cumulative)."""
    run = make_run()
    run.step()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        run.step()
    profiler.disable()
    print(f"\n--- profile: {label}, {steps} steps ---")
    pstats.Stats(profiler).sort_stats("cumulative").print_stats(18)


def summarise(impl: str, objective: str, seeds: list[dict], args) -> dict:
    """One results row: medians over seeds; time to target only when every seed reached it."""
    reached = [s["seconds_to_target"] for s in seeds]
    return {
        "bench": BENCH,
        "shape": {
            "ndim": 2,
            "height": 8,
            "r0": 0.1,
            "batch": args.batch_size,
            "hidden": args.hidden,
            "layers": args.layers,
            "objective": objective,
            "target_l1": args.target,
        },
        "dtype": "float32",
        "impl": impl,
        "median_ms": statistics.median(s["median_ms"] for s in seeds),
        "gbps": None,
        "peak_mem_mb": None,
        "trajectories_per_s": statistics.median(s["trajectories_per_s"] for s in seeds),
        "seconds_to_target": None if None in reached else statistics.median(reached),
        "seeds": seeds,
    }


def ratios(rows: list[dict]) -> dict[str, float]:
    """gfn_fast vs torchgfn TB: throughput (ours / theirs), time to target (theirs / ours)."""
    baseline = next(row for row in rows if row["impl"] == "torchgfn")
    out = {}
    for row in rows:
        if row["impl"] == "torchgfn":
            continue
        name = f"gfn_fast_{row['shape']['objective']}_vs_torchgfn_tb"
        out[f"{BENCH}_traj_per_s/{name}"] = (
            row["trajectories_per_s"] / baseline["trajectories_per_s"]
        )
        if row["seconds_to_target"] and baseline["seconds_to_target"]:
            out[f"{BENCH}_time_to_l1/{name}"] = (
                baseline["seconds_to_target"] / row["seconds_to_target"]
            )
    return out


def commit() -> str:
    try:
        return subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=True
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--objectives",
        nargs="*",
        default=["tb", "renyi"],
        help="gfn_fast objectives to run (none: torchgfn only)",
    )
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-log-z", type=float, default=1e-1)
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=10)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile 20 steps of each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    runs: list[tuple[str, str, Callable[[int], object]]] = [
        ("torchgfn", "tb", lambda seed: TorchgfnRun(seed, args))
    ]
    for objective in args.objectives:
        runs.append(("gfn_fast", objective, lambda seed, o=objective: GfnFastRun(o, seed, args)))

    rows = []
    for impl, objective, make_run in runs:
        seeds = []
        for seed in args.seeds:
            result = {"seed": seed, **measure(make_run(seed), args)}
            seeds.append(result)
            print(
                f"{impl:9s} {objective:10s} seed {seed}: {result['trajectories_per_s']:8.0f} "
                f"traj/s, L1 < {args.target} after {result['steps_to_target']} steps / "
                f"{result['seconds_to_target']} s (final L1 {result['final_l1']:.4f})",
                flush=True,
            )
        rows.append(summarise(impl, objective, seeds, args))
        if args.profile:
            profile(lambda make_run=make_run: make_run(0), 20, f"{impl} {objective}")

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "torch": torch.__version__,
        "commit": commit(),
        "threads": args.threads,
        "backend": gf.backend(),
        "rows": rows,
        "ratios": ratios(rows),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["ratios"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
