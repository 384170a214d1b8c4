"""`gfn-fast compare`: every objective on one task over seeds, and a Table-1-like summary."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, replace
from pathlib import Path

import gfn_fast as gf
from gfn_fast.train.trainer import StopOnSignals, TrainConfig, Trainer, resolve
from gfn_fast.train.trainer.evaluation import metric_of
from gfn_fast.train.trainer.logs import short

COMPARED_OBJECTIVES = ("tb", "vargrad", "reverse_kl", "forward_kl", "renyi", "tsallis")


@dataclass(frozen=True)
class PlannedRun:
    """One run of a comparison: its objective, seed and resolved config."""

    objective: str
    seed: int
    config: TrainConfig


def plan(
    config: TrainConfig, objectives: tuple[str, ...] = COMPARED_OBJECTIVES, seeds: int = 3
) -> list[PlannedRun]:
    """Every run of a comparison, each config resolved (checked) before anything trains.

    `config.control_variate` applies to the divergence objectives (default "loo"); tb always
    uses its classic estimator ("none").

    Raises:
        ValueError: seeds < 1, no objectives, an unknown or repeated objective, or a bad
            config for any run (see `resolve`).
    """
    if isinstance(seeds, bool) or not isinstance(seeds, int) or seeds < 1:
        raise ValueError(f"seeds: expected an integer >= 1, got {seeds!r}")
    if not objectives:
        raise ValueError("objectives: expected at least one objective, got none")
    unknown = [name for name in objectives if name not in gf.OBJECTIVES]
    if unknown:
        raise ValueError(
            f"objectives: unknown {', '.join(map(repr, unknown))}; expected names from "
            f"{', '.join(gf.OBJECTIVES)}"
        )
    repeated = sorted({name for name in objectives if objectives.count(name) > 1})
    if repeated:
        raise ValueError(f"objectives: {', '.join(map(repr, repeated))} given more than once")
    runs = []
    for objective in objectives:
        control_variate = None if objective == "tb" else config.control_variate
        for seed in range(seeds):
            run_config = replace(
                config, objective=objective, seed=seed, control_variate=control_variate
            )
            runs.append(PlannedRun(objective, seed, resolve(run_config)))
    return runs


def compare(
    config: TrainConfig,
    objectives: tuple[str, ...] = COMPARED_OBJECTIVES,
    seeds: int = 3,
    out: str | Path | None = None,
    progress: bool = True,
    stop: StopOnSignals | None = None,
) -> dict[str, list[list[dict]]]:
    """Train every objective with seeds 0 .. seeds - 1 at otherwise equal settings (see
    `plan`, which checks every run first). Runs write to OUT/<objective>/seed<k>/. With
    `progress`, each run shows one bar labelled "[k/N] objective seed s", and a line with
    its result when it ends.

    Returns:
        {objective: [curve of each seed]}, each curve a list of records.

    Raises:
        ValueError: see `plan`; nothing has trained then.
        Interrupted: SIGINT or SIGTERM (or `stop`) stopped the current run, after its
            checkpoint; the later runs did not start.
    """
    return train_planned(plan(config, objectives, seeds), out, progress, stop)


def train_planned(
    runs: list[PlannedRun],
    out: str | Path | None = None,
    progress: bool = True,
    stop: StopOnSignals | None = None,
) -> dict[str, list[list[dict]]]:
    """Train the runs of `plan` in order (see `compare`)."""
    if stop is None:
        with StopOnSignals() as own:
            return train_planned(runs, out, progress, own)
    curves: dict[str, list[list[dict]]] = {}
    for index, run in enumerate(runs, 1):
        run_out = None if out is None else Path(out) / run.objective / f"seed{run.seed}"
        trainer = Trainer(run.config, run_out)
        label = f"[{index}/{len(runs)}] {run.objective} seed {run.seed}"
        final = trainer.run(progress=progress, stop=stop, label=label)
        if progress:
            _announce(f"{label}: {_summary(final)}")
        curves.setdefault(run.objective, []).append(trainer.curve)
    return curves


def _summary(record: dict) -> str:
    metric = metric_of(record)
    return (
        f"{metric} {short(record[metric])} after {record['trajectories']} trajectories, "
        f"{record['seconds']:.1f} s"
    )


def _announce(line: str) -> None:
    from tqdm.auto import tqdm  # the "train" extra; writes around an active bar

    tqdm.write(line)


def summary_table(curves: dict[str, list[list[dict]]]) -> str:
    """A Markdown table like the paper's Table 1, mean ± std over seeds: the final metric,
    its mean over the curve (lower = faster convergence), and modes found (discrete tasks).
    For the Monte Carlo L1, the final cell also gives the estimate's standard error (of the
    mean over seeds)."""
    metric = metric_of(next(iter(curves.values()))[0][-1])
    rows = [
        f"| objective | final {metric} | mean {metric} over the curve | modes found "
        "| trajectories | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for objective, runs in curves.items():
        final_cell = _mean_std([run[-1][metric] for run in runs])
        if f"{metric}_se" in runs[0][-1]:
            final_cell += f" (s.e. {seed_mean_error([run[-1] for run in runs], metric):.3f})"
        average = [statistics.fmean(record[metric] for record in run) for run in runs]
        modes = [run[-1].get("modes") for run in runs]
        seconds = statistics.fmean(run[-1]["seconds"] for run in runs)
        rows.append(
            f"| {objective} | {final_cell} | {_mean_std(average)} | "
            f"{'-' if None in modes else _mean_std(modes, 1)} | "
            f"{runs[0][-1]['trajectories']} | {seconds:.1f} |"
        )
    return "\n".join(rows)


def seed_mean_error(records: list[dict], metric: str) -> float:
    """Standard error of the mean over seeds of independent estimates with errors `_se`."""
    return sum(record[f"{metric}_se"] ** 2 for record in records) ** 0.5 / len(records)


def _mean_std(values: list[float], digits: int = 3) -> str:
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"
