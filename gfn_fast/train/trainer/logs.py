"""What a run shows and writes as it goes: the progress bar, metrics.json and metrics.csv."""

from __future__ import annotations

import csv
import json
from dataclasses import asdict
from pathlib import Path

from gfn_fast.train.trainer.checkpoint import atomic_write
from gfn_fast.train.trainer.config import TrainConfig
from gfn_fast.train.trainer.evaluation import metric_of


def write_metrics(out: Path, config: TrainConfig, curve: list[dict]) -> None:
    """OUT/metrics.json (the last record's keys, plus `config` and `curve`) and
    OUT/metrics.csv (one row per record), each written atomically."""
    summary = {**curve[-1], "config": asdict(config), "curve": curve}
    atomic_write(out / "metrics.json", lambda handle: json.dump(summary, handle, indent=1))
    columns = list(dict.fromkeys(key for record in curve for key in record))

    def write_csv(handle) -> None:
        writer = csv.DictWriter(handle, columns)
        writer.writeheader()
        writer.writerows(curve)

    atomic_write(out / "metrics.csv", write_csv)


class ProgressBar:
    """A tqdm bar over the steps of one run, showing the latest record. A labelled bar (one
    run of several) disappears when it closes, so that only the current run's bar shows."""

    def __init__(self, total: int, initial: int, enabled: bool, label: str | None = None):
        from tqdm.auto import tqdm  # the "train" extra

        self._bar = tqdm(
            total=total,
            initial=initial,
            disable=not enabled,
            desc=label,
            leave=label is None,
            unit="step",
            dynamic_ncols=True,
        )

    def update(self, steps: int = 1) -> None:
        self._bar.update(steps)

    def show(self, record: dict, trajectories_per_s: float) -> None:
        metric = metric_of(record)
        self._bar.set_postfix(
            loss=short(record["loss"]),
            **{metric: short(record[metric])},
            traj_per_s=f"{trajectories_per_s:.0f}",
        )

    def close(self) -> None:
        self._bar.close()


def short(value: float | None) -> str:
    """A compact rendering of a metric: 4 significant digits, "-" for None."""
    return "-" if value is None else f"{value:.4g}"
