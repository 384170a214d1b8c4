"""Markdown tables for the README, generated from benchmarks/results/*.json.

    python benchmarks/render_tables.py                      # print every table
    python benchmarks/render_tables.py --readme README.md   # rewrite the marked blocks

With --readme, the text between `<!-- bench:NAME:start -->` and `<!-- bench:NAME:end -->`
(NAME = the JSON file's stem, e.g. cpu) is replaced by that file's table; files without
markers in the README are left out.
"""

from __future__ import annotations

import argparse
import glob
import json
import os
import re

RESULTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "results")


def _shape(shape: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in shape.items())


def _num(value, digits: int = 3) -> str:
    if value is None:
        return "-"
    return f"{value:.{digits}g}" if abs(value) < 1000 else f"{value:.0f}"


def render_model(result: dict) -> str:
    """A model's result file (benchmarks/gpu_model.py): modelled times, bytes and launches."""
    lines = [
        f"**A model, not a measurement.** {result['machine']}; commit {result['commit']}.",
        "",
        "| bench | shape | dtype | impl | MB moved | launches | ms, memory | ms, + launches |",
        "|---|---|---|---|---:|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['bench']} | {_shape(row['shape'])} | {row['dtype']} | {row['impl']} | "
            f"{_num(row['bytes'] / 1e6)} | {row['launches']} | {_num(row['median_ms'])} | "
            f"{_num(row['with_launches_ms'])} |"
        )
    lines += ["", "| ratio (modelled) | value |", "|---|---:|"]
    for key, value in result["ratios"].items():
        lines.append(f"| {key} | {_num(value)} |")
    return "\n".join(lines) + "\n"


def render(result: dict) -> str:
    """One result file as a markdown block: header line, timings table, ratios table."""
    if result.get("model"):
        return render_model(result)
    lines = [
        f"Machine: {result['machine']}; torch {result['torch']}; commit {result['commit']}; "
        f"{result['threads']} threads.",
        "",
        "| bench | shape | dtype | impl | median ms | GB/s | peak extra MB |",
        "|---|---|---|---|---:|---:|---:|",
    ]
    for row in result["rows"]:
        lines.append(
            f"| {row['bench']} | {_shape(row['shape'])} | {row['dtype']} | {row['impl']} | "
            f"{_num(row['median_ms'])} | {_num(row.get('gbps'))} | "
            f"{_num(row.get('peak_mem_mb'))} |"
        )
    lines += _training_table(result)
    if result.get("ratios"):
        lines += ["", "| ratio | value |", "|---|---:|"]
        for key, value in result["ratios"].items():
            lines.append(f"| {key} | {_num(value)} |")
    return "\n".join(lines) + "\n"


def _spread(value) -> str:
    """ "median (min-max)" of a benchmark's {"median", "min", "max"}, or one number."""
    if value is None:
        return "-"
    if isinstance(value, dict):
        return f"{_num(value['median'])} ({_num(value['min'])}-{_num(value['max'])})"
    return _num(value)


def _training_table(result: dict) -> list[str]:
    """End-to-end training rows (trajectories/s, seconds to target, step / floor and step /
    distinct floor over seeds), and the final L1 per seed, where a result file has them."""
    rows = [row for row in result["rows"] if "trajectories_per_s" in row]
    lines = []
    if rows:
        lines += [
            "",
            "| batch | impl | trajectories/s | s to target L1 | step / floor | "
            "step / distinct floor |",
            "|---:|---|---:|---:|---:|---:|",
        ]
        for row in rows:
            lines.append(
                f"| {row['shape'].get('batch', '-')} | {row['impl']} | "
                f"{_spread(row['trajectories_per_s'])} | "
                f"{_spread(row.get('seconds_to_target'))} | "
                f"{_spread(row.get('step_vs_floor'))} | "
                f"{_spread(row.get('step_vs_distinct_floor'))} |"
            )
    for batch, seeds in result.get("final_l1", {}).items():
        impls = [key for key in seeds[0] if key not in ("seed", "steps")]
        lines += ["", f"Final exact L1 at batch {batch} after {seeds[0]['steps']} steps:", ""]
        lines += ["| seed | " + " | ".join(impls) + " |", "|---:|" + "---:|" * len(impls)]
        for seed in seeds:
            values = " | ".join(_num(seed[impl]) for impl in impls)
            lines.append(f"| {seed['seed']} | {values} |")
    return lines


def load_all(directory: str = RESULTS) -> dict[str, dict]:
    out = {}
    for path in sorted(glob.glob(os.path.join(directory, "*.json"))):
        with open(path) as f:
            out[os.path.splitext(os.path.basename(path))[0]] = json.load(f)
    return out


def update_readme(path: str, tables: dict[str, str]) -> list[str]:
    """Rewrites the marked blocks of `path`; returns the names it replaced."""
    with open(path) as f:
        text = f.read()
    replaced = []
    for name, table in tables.items():
        pattern = re.compile(
            rf"(<!-- bench:{re.escape(name)}:start -->\n).*?(<!-- bench:{re.escape(name)}:end -->)",
            re.S,
        )
        text, count = pattern.subn(lambda m, t=table: m.group(1) + t + m.group(2), text)
        if count:
            replaced.append(name)
    with open(path, "w") as f:
        f.write(text)
    return replaced


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=RESULTS)
    parser.add_argument("--readme", help="rewrite the <!-- bench:NAME --> blocks of this file")
    args = parser.parse_args()
    tables = {name: render(result) for name, result in load_all(args.results).items()}
    if args.readme:
        print("updated:", ", ".join(update_readme(args.readme, tables)) or "nothing")
        return
    for name, table in tables.items():
        print(f"### {name}\n\n{table}")


if __name__ == "__main__":
    main()
