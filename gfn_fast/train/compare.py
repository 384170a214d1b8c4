"""`gfn-fast compare`: every objective on one task over seeds, and a Table-1-like summary."""

from __future__ import annotations

import statistics
from dataclasses import replace
from pathlib import Path

from gfn_fast.train.trainer import TrainConfig, Trainer

COMPARED_OBJECTIVES = ("tb", "vargrad", "reverse_kl", "forward_kl", "renyi", "tsallis")


def compare(
    config: TrainConfig,
    objectives: tuple[str, ...] = COMPARED_OBJECTIVES,
    seeds: int = 3,
    out: str | Path | None = None,
    progress: bool = True,
) -> dict[str, list[list[dict]]]:
    """Train every objective with seeds 0..seeds-1 at otherwise equal settings.

    `config.control_variate` applies to the divergence objectives (default "loo"); tb always
    uses its classic estimator ("none"). Runs write to OUT/<objective>/seed<k>/.

    Returns:
        {objective: [curve of seed 0, curve of seed 1, ...]}, each curve a list of records.

    Raises:
        ValueError: seeds < 1, an unknown objective, or a bad config (see `resolve`).
    """
    if seeds < 1:
        raise ValueError(f"seeds: expected >= 1, got {seeds}")
    curves: dict[str, list[list[dict]]] = {}
    for objective in objectives:
        curves[objective] = []
        for seed in range(seeds):
            control_variate = None if objective == "tb" else config.control_variate
            run_config = replace(
                config, objective=objective, seed=seed, control_variate=control_variate
            )
            run_out = None if out is None else Path(out) / objective / f"seed{seed}"
            trainer = Trainer(run_config, run_out)
            trainer.run(progress=progress)
            curves[objective].append(trainer.curve)
    return curves


def summary_table(curves: dict[str, list[list[dict]]]) -> str:
    """A Markdown table like the paper's Table 1, mean ± std over seeds: the final metric,
    its mean over the curve (lower = faster convergence), and modes found (discrete tasks)."""
    metric = "js" if "js" in next(iter(curves.values()))[0][-1] else "exact_l1"
    rows = [
        f"| objective | final {metric} | mean {metric} over the curve | modes found "
        "| trajectories | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for objective, runs in curves.items():
        final = [run[-1][metric] for run in runs]
        average = [_curve_mean([record[metric] for record in run]) for run in runs]
        modes = [run[-1].get("modes") for run in runs]
        seconds = statistics.fmean(run[-1]["seconds"] for run in runs)
        rows.append(
            f"| {objective} | {_mean_std(final)} | {_mean_std(average)} | "
            f"{'-' if None in modes else _mean_std(modes, 1)} | "
            f"{runs[0][-1]['trajectories']} | {seconds:.1f} |"
        )
    return "\n".join(rows)


def _curve_mean(values: list[float | None]) -> float | None:
    return None if None in values else statistics.fmean(values)


def _mean_std(values: list[float | None], digits: int = 3) -> str:
    if None in values:
        return "n/a (too large to enumerate)"
    spread = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.fmean(values):.{digits}f} ± {spread:.{digits}f}"
