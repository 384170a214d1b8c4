"""End-to-end training speed against torchgfn, side by side in one run (issue 12).

Task: HyperGrid 8x8, R0=0.1, R1=0.5, R2=2 (torchgfn's default). Network: 2 hidden layers
of 256 with LeakyReLU on both sides (torchgfn's MLP with activation_fn="leaky_relu"),
separate p_F and p_B MLPs. Same batch size, Adam with the same constant learning rates
(policy lr, log Z lr_log_z), TB on-policy, one thread. For each batch size and seed, every
implementation -- torchgfn's TBGFlowNet, and gfn_fast's Trainer in each --variants entry
(fp32 and bf16 as the trainer's defaults: networks run once per distinct state, with the
recorded activations of the rollout; then, on every visited state, with the recorded
activations, with a second forward, and keeping the rollout's graph) -- trains in
alternating rounds of --eval-every steps until the exact L1 between p_T and R/Z drops
below --target, so that the machine's noise falls on all of them alike. Recorded per run:

- trajectories/s: batch / median training-step time (sample + loss + backward + Adam);
- seconds (and steps) to exact L1 < target, counting training steps only: the exact L1
  is evaluated off the clock on both sides;
- the compute floor, measured in every round on the states of a fresh batch of the
  gfn_fast run: the forward and backward of the p_F and p_B MLPs over those states (fp32,
  and bf16 under autocast), and each run's step time over it; and the same over the
  batch's distinct states only (the "distinct floor"), for the variants that run the
  networks once per distinct state;
- with --final-steps K, fp32 and bf16 train K steps each (alternating) and report the
  final exact L1 per seed: whether bf16 holds the L1.

Results go to benchmarks/results/e2e.json in the README's results shape (rows with medians
over seeds, per-seed details and ranges), with ratios gfn_fast / torchgfn for throughput,
torchgfn / gfn_fast for time to target (> 1 means gfn_fast is better in both), and step /
floor. --profile writes benchmarks/results/e2e_profile.txt (cProfile of both). Run from the
repository root:

    python benchmarks/bench_e2e_torchgfn.py --batch-sizes 128 1024 --final-steps 400 --profile
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import platform
import pstats
import statistics
import subprocess
import time
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
from gfn_fast.train.envs.base import unique_states
from gfn_fast.train.rollout import rollout
from gfn_fast.train.trainer import TrainConfig, Trainer
from gfn_fast.train.trainer.collector import long_lived_frozen

BENCH = "e2e_hypergrid_8x8"
RESULTS = Path(__file__).parent / "results" / "e2e.json"
PROFILE = Path(__file__).parent / "results" / "e2e_profile.txt"
# gfn_fast variants: TrainConfig settings beside the shared ones. fp32 and bf16 are the
# trainer's choices at this size: the networks run once per distinct state, and p_F's
# gradient goes through the activations the rollout recorded. The others run the networks
# on every visited state, and take p_F's gradient through the recorded activations, a
# second batched forward, or the rollout's kept graph.
_GRADIENT_PATHS = {
    "recorded": {"record_activations": True},
    "batched_forward": {"record_activations": False, "keep_graph": False},
    "keep_graph": {"record_activations": False, "keep_graph": True},
}
VARIANTS = {
    name: {"precision": precision, "distinct_states": distinct, **_GRADIENT_PATHS[path]}
    for name, precision, distinct, path in (
        ("fp32", "fp32", True, "recorded"),
        ("fp32_all_states", "fp32", False, "recorded"),
        ("fp32_batched_forward", "fp32", False, "batched_forward"),
        ("fp32_keep_graph", "fp32", False, "keep_graph"),
        ("bf16", "bf16", True, "recorded"),
        ("bf16_all_states", "bf16", False, "recorded"),
        ("bf16_keep_graph", "bf16", False, "keep_graph"),
    )
}


class TorchgfnRun:
    """torchgfn's own TB training loop (its on-policy fast path: saved log-probs)."""

    impl = "torchgfn"
    distinct_states = False

    def __init__(self, seed: int, batch_size: int, args: argparse.Namespace):
        torch.manual_seed(seed)
        self.env = HyperGrid(ndim=2, height=8, store_all_states=True)  # R0=0.1 default
        preprocessor = KHotPreprocessor(self.env.height, self.env.ndim)
        n_actions = self.env.n_actions
        pf = DiscretePolicyEstimator(
            MLP(
                preprocessor.output_dim,
                n_actions,
                args.hidden,
                args.layers,
                activation_fn="leaky_relu",
            ),
            n_actions,
            preprocessor,
        )
        pb = DiscretePolicyEstimator(
            MLP(
                preprocessor.output_dim,
                n_actions - 1,
                args.hidden,
                args.layers,
                activation_fn="leaky_relu",
            ),
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
        self.batch_size = batch_size

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

    def __init__(self, variant: str, seed: int, batch_size: int, args: argparse.Namespace):
        self.impl = f"gfn_fast_{variant}"
        self.batch_size = batch_size
        config = TrainConfig(
            env="hypergrid",
            preset="torchgfn",
            objective="tb",
            batch_size=batch_size,
            lr=args.lr,
            lr_log_z=args.lr_log_z,
            lr_decay_power=0.0,  # constant learning rates, as on the torchgfn side
            steps=100_000,
            hidden=args.hidden,
            layers=args.layers,
            learn_pb=True,
            seed=seed,
            threads=args.threads,
            **VARIANTS[variant],
        )
        self.trainer = Trainer(config)
        self.distinct_states = self.trainer.config.distinct_states

    def step(self) -> None:
        self.trainer.train_step()

    def exact_l1(self) -> float:
        with self.trainer.autocast():  # the policy as it samples
            return metrics.exact_l1(self.trainer.env, self.trainer.policy)


def floor_ms(
    trainer: Trainer, precision: str, distinct: bool = False, repeats: int = 3
) -> tuple[float, int]:
    """(median ms, N) of the forward and backward of p_F and p_B over the N states of a
    fresh batch of `trainer`'s policy: the work that no implementation running the networks
    on every visited state can avoid. `distinct`: over the batch's distinct parents and
    children only, the work left to one that runs them once per distinct state."""
    policy, env = trainer.policy, trainer.env
    with torch.no_grad():
        sampled = rollout(env, policy, trainer.config.batch_size, generator=torch.Generator())
    parents, children = sampled.parents, sampled.children
    if distinct:
        parents, children = unique_states(env, parents)[0], unique_states(env, children)[0]
    parents, children = env.features(parents), env.features(children)
    times = []
    for _ in range(repeats + 1):  # the first one builds bf16 kernels for this shape
        started = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
            total = policy(parents).float().sum() + policy.backward_logits(children).float().sum()
        total.backward()
        times.append(time.perf_counter() - started)
    policy.zero_grad(set_to_none=True)
    return 1e3 * statistics.median(times[1:]), parents.shape[0]


def race(runs: list, args: argparse.Namespace) -> list[dict]:
    """Train every run in alternating rounds of eval_every steps until each reaches the
    target L1 (or max_steps / max_seconds); per round, the floor on the gfn_fast states."""
    state = [
        {"steps": [], "seconds": 0.0, "reached": None, "l1": run.exact_l1(), "ratio": []}
        for run in runs
    ]
    for record in state:
        record["distinct_ratio"] = []
    reference = next(run for run in runs if run.impl != "torchgfn").trainer
    floors = {name: [] for name in ("fp32", "bf16", "fp32_distinct", "bf16_distinct")}
    for round_index in range(args.max_steps // args.eval_every):
        pending = [i for i, s in enumerate(state) if s["reached"] is None]
        if not pending or all(state[i]["seconds"] > args.max_seconds for i in pending):
            break
        order = pending if round_index % 2 == 0 else pending[::-1]
        round_steps = {}
        for i in order:
            run, record = runs[i], state[i]
            times = []
            for _ in range(args.eval_every):
                started = time.perf_counter()
                run.step()
                times.append(time.perf_counter() - started)
            record["steps"] += times
            record["seconds"] += sum(times)
            round_steps[i] = statistics.median(times)
            record["l1"] = run.exact_l1()
            if record["l1"] < args.target:
                record["reached"] = {"steps": len(record["steps"]), "seconds": record["seconds"]}
        for name in floors:
            precision = name.split("_")[0]
            floors[name].append(floor_ms(reference, precision, name.endswith("distinct")))
        for i, step in round_steps.items():
            precision = "bf16" if "bf16" in runs[i].impl else "fp32"
            state[i]["ratio"].append(1e3 * step / floors[precision][-1][0])
            if runs[i].distinct_states:
                floor = floors[f"{precision}_distinct"][-1][0]
                state[i]["distinct_ratio"].append(1e3 * step / floor)
    results = []
    for run, record in zip(runs, state, strict=True):
        median_step = statistics.median(record["steps"])
        reached = record["reached"]
        results.append(
            {
                "impl": run.impl,
                "median_ms": 1e3 * median_step,
                "trajectories_per_s": run.batch_size / median_step,
                "steps_to_target": None if reached is None else reached["steps"],
                "seconds_to_target": None if reached is None else reached["seconds"],
                "steps": len(record["steps"]),
                "final_l1": record["l1"],
                "step_vs_floor": statistics.median(record["ratio"]),
            }
        )
        if record["distinct_ratio"]:
            results[-1]["step_vs_distinct_floor"] = statistics.median(record["distinct_ratio"])
    for precision, values in floors.items():
        results.append(
            {
                "impl": f"floor_{precision}",
                "median_ms": statistics.median(ms for ms, _ in values),
                "states": statistics.median(n for _, n in values),
            }
        )
    return results


def final_l1(seed: int, batch_size: int, args: argparse.Namespace) -> dict[str, float]:
    """Exact L1 after args.final_steps steps of fp32 and of bf16 (alternating chunks)."""
    runs = [GfnFastRun(variant, seed, batch_size, args) for variant in ("fp32", "bf16")]
    for _ in range(args.final_steps // args.eval_every):
        for run in runs:
            for _ in range(args.eval_every):
                run.step()
    return {run.impl: run.exact_l1() for run in runs}


def profile_text(make_run, steps: int, label: str) -> str:
    """The functions that take a training step's time (cProfile, cumulative)."""
    run = make_run()
    for _ in range(3):
        run.step()  # warm-up
    profiler = cProfile.Profile()
    profiler.enable()
    for _ in range(steps):
        run.step()
    profiler.disable()
    out = io.StringIO()
    pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(25)
    return f"\n--- profile: {label}, {steps} steps (sorted by own time) ---\n{out.getvalue()}"


def _spread(values: list[float]) -> dict:
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


def summarise(batch_size: int, impl: str, seeds: list[dict], args) -> dict:
    """One results row: medians over seeds (ranges beside); time to target only when every
    seed reached it."""
    shape = {"ndim": 2, "height": 8, "r0": 0.1, "batch": batch_size, "hidden": args.hidden}
    shape.update({"layers": args.layers, "objective": "tb", "target_l1": args.target})
    dtype = "bfloat16" if "bf16" in impl else "float32"
    row = {
        "bench": BENCH,
        "shape": shape,
        "dtype": dtype,
        "impl": impl,
        "median_ms": statistics.median(s["median_ms"] for s in seeds),
        "gbps": None,
        "peak_mem_mb": None,
        "seeds": seeds,
    }
    if impl.startswith("floor"):
        row["states"] = statistics.median(s["states"] for s in seeds)
        return row
    reached = [s["seconds_to_target"] for s in seeds]
    row["trajectories_per_s"] = _spread([s["trajectories_per_s"] for s in seeds])
    row["seconds_to_target"] = None if None in reached else _spread(reached)
    row["step_vs_floor"] = _spread([s["step_vs_floor"] for s in seeds])
    if "step_vs_distinct_floor" in seeds[0]:
        row["step_vs_distinct_floor"] = _spread([s["step_vs_distinct_floor"] for s in seeds])
    return row


def ratios(rows: list[dict]) -> dict[str, float]:
    """Per batch size: gfn_fast vs torchgfn (throughput ours / theirs, time to target
    theirs / ours), the median over seeds of the per-seed ratios; and step / floor."""
    out = {}
    for row in rows:
        batch = row["shape"]["batch"]
        if row["impl"].startswith("floor"):
            continue
        out[f"{BENCH}_b{batch}_step_vs_floor/{row['impl']}"] = row["step_vs_floor"]["median"]
        if "step_vs_distinct_floor" in row:
            distinct = row["step_vs_distinct_floor"]["median"]
            out[f"{BENCH}_b{batch}_step_vs_distinct_floor/{row['impl']}"] = distinct
        if row["impl"] == "torchgfn":
            continue
        baseline = next(r for r in rows if r["impl"] == "torchgfn" and r["shape"]["batch"] == batch)
        name = f"{row['impl']}_vs_torchgfn"
        pairs = list(zip(row["seeds"], baseline["seeds"], strict=True))
        speed = [
            ours["trajectories_per_s"] / theirs["trajectories_per_s"] for ours, theirs in pairs
        ]
        out[f"{BENCH}_b{batch}_traj_per_s/{name}"] = statistics.median(speed)
        times = [
            theirs["seconds_to_target"] / ours["seconds_to_target"]
            for ours, theirs in pairs
            if ours["seconds_to_target"] and theirs["seconds_to_target"]
        ]
        if len(times) == len(pairs):
            out[f"{BENCH}_b{batch}_time_to_l1/{name}"] = statistics.median(times)
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
    parser.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-log-z", type=float, default=1e-1)
    parser.add_argument("--target", type=float, default=0.05)
    parser.add_argument("--eval-every", type=int, default=5)
    parser.add_argument("--max-steps", type=int, default=3000)
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--final-steps", type=int, default=0, help="0: skip the final-L1 runs")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--profile", action="store_true", help="also profile 10 steps of each")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    rows, final = [], {}
    for batch_size in args.batch_sizes:
        per_impl: dict[str, list[dict]] = {}
        for seed in args.seeds:
            runs = [TorchgfnRun(seed, batch_size, args)]
            runs += [GfnFastRun(variant, seed, batch_size, args) for variant in args.variants]
            with long_lived_frozen():  # as `Trainer.run` does; the runs share the process
                results = race(runs, args)
            for result in results:
                per_impl.setdefault(result["impl"], []).append({"seed": seed, **result})
                if "trajectories_per_s" in result:
                    print(
                        f"B={batch_size} seed {seed} {result['impl']:24s} "
                        f"{result['trajectories_per_s']:8.0f} traj/s, "
                        f"{result['step_vs_floor']:.2f}x floor, L1 < {args.target} after "
                        f"{result['steps_to_target']} steps / {result['seconds_to_target']} s",
                        flush=True,
                    )
            if args.final_steps:
                final.setdefault(str(batch_size), []).append(
                    {"seed": seed, "steps": args.final_steps, **final_l1(seed, batch_size, args)}
                )
                print(f"B={batch_size} seed {seed} final L1: {final[str(batch_size)][-1]}")
        rows += [summarise(batch_size, impl, seeds, args) for impl, seeds in per_impl.items()]

    if args.profile:
        batch = args.batch_sizes[0]
        text = profile_text(lambda: TorchgfnRun(0, batch, args), 10, f"torchgfn, batch {batch}")
        text += profile_text(
            lambda: GfnFastRun("fp32", 0, batch, args), 10, f"gfn_fast fp32, batch {batch}"
        )
        PROFILE.write_text(text)
        print(f"wrote {PROFILE}")

    results = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "torch": torch.__version__,
        "commit": commit(),
        "threads": args.threads,
        "backend": gf.backend(),
        "load_average_1m_after": os.getloadavg()[0],
        "rows": rows,
        "ratios": ratios(rows),
        "final_l1": final,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(results, indent=1) + "\n")
    print(json.dumps(results["ratios"], indent=1))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
