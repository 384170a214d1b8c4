"""The `gfn-fast` command: `train`, `compare`, `variance` and `info`.

gfn-fast train --env hypergrid --preset torchgfn --objective renyi --alpha 0.5 --out runs/a
gfn-fast train --env hypergrid --preset torchgfn --objective renyi --nproc 2 --out runs/ddp
gfn-fast compare --env sets --preset small --seeds 3 --out runs/sets
gfn-fast variance --env sets --preset small --objectives reverse_kl --out runs/variance
gfn-fast info
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
from dataclasses import fields
from pathlib import Path

import torch

import gfn_fast as gf
from gfn_fast.train import envs, variance
from gfn_fast.train.compare import COMPARED_OBJECTIVES, compare, summary_table
from gfn_fast.train.trainer import TrainConfig, Trainer, checkpoint_config, launch


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `compare`, one per TrainConfig field."""
    add = parser.add_argument
    add("--env", default="hypergrid", choices=tuple(envs.REGISTRY))
    add("--preset", default=None, help="env preset (default: the env's own)")
    add("--alpha", type=float, default=0.5, help="order of renyi / tsallis")
    add(
        "--cv",
        dest="control_variate",
        choices=gf.CONTROL_VARIATES,
        default=None,
        help='control variate (default: "none" for tb, "loo" otherwise)',
    )
    add("--normalization", choices=("amari", "paper"), default="amari")
    add("--steps", type=int, default=None, help="optimiser steps (default: per env)")
    add("--batch-size", type=int, default=None, help="trajectories per step (default: per env)")
    add("--lr", type=float, default=None, help="policy lr (default: per env, 1e-3 mostly)")
    add("--lr-log-z", type=float, default=1e-1)
    add("--lr-decay-power", type=float, default=1.0, help="polynomial decay of the lr to 0")
    add("--hidden", type=int, default=64)
    add("--layers", type=int, default=2)
    add("--deep-set", action="store_true", help="deep-set policy (sets only)")
    add("--learn-pb", action="store_true", help="learn p_B (default: uniform)")
    add("--epsilon", type=float, default=0.0, help="off-policy: uniform mixing weight")
    add("--temperature", type=float, default=1.0, help="off-policy: tempering of p_F")
    add("--eval-every", type=int, default=None)
    add("--js-samples", type=int, default=20000)
    add("--layout", choices=("padded", "packed"), default="padded")
    add(
        "--threads",
        type=int,
        default=1,
        help="torch threads (1 is fastest for small policies on busy machines)",
    )
    add("--device", default="cpu")
    add("--compile", action="store_true", help="torch.compile the policy networks and the loss")
    add(
        "--compile-backend",
        default="inductor",
        help='torch.compile backend (default "inductor"; "aot_eager" compiles fast)',
    )
    add("--no-progress", action="store_true", help="no tqdm bar")


def _config(args: argparse.Namespace, **fixed) -> TrainConfig:
    values = {f.name: getattr(args, f.name) for f in fields(TrainConfig) if hasattr(args, f.name)}
    return TrainConfig(**{**values, **fixed})


def _train(args: argparse.Namespace) -> int:
    config = checkpoint_config(args.resume) if args.resume else _config(args)
    if config.nproc > 1:
        return _train_distributed(args, config)
    if args.resume:
        trainer = Trainer.resume(args.resume, args.out)
    else:
        trainer = Trainer(config, args.out)
    try:
        final = trainer.run(progress=not args.no_progress)
    except KeyboardInterrupt:
        where = trainer.out / "checkpoint.pt" if trainer.out else "nowhere (no --out)"
        print(f"\ninterrupted at step {trainer.step}; checkpoint saved to {where}", file=sys.stderr)
        return 130
    print(json.dumps(final))
    return 0


def _train_distributed(args: argparse.Namespace, config: TrainConfig) -> int:
    """`_train` in config.nproc processes (see `gfn_fast.train.trainer.launch`)."""
    try:
        if args.resume:
            final = launch(resume=args.resume, out=args.out, progress=not args.no_progress)
        else:
            final = launch(config, args.out, progress=not args.no_progress)
    except KeyboardInterrupt:
        out = args.out or (Path(args.resume).parent if args.resume else None)
        where = Path(out) / "checkpoint.pt" if out else "nowhere (no --out)"
        print(f"\ninterrupted; the checkpoint of the last evaluation is {where}", file=sys.stderr)
        return 130
    print(json.dumps(final))
    return 0


def _compare(args: argparse.Namespace) -> int:
    objectives = tuple(args.objectives.split(","))
    out = Path(args.out)
    curves = compare(
        _config(args, objective="tb"), objectives, args.seeds, out, progress=not args.no_progress
    )
    table = summary_table(curves)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table.md").write_text(table + "\n")
    (out / "curves.json").write_text(json.dumps(curves))
    plot_curves(curves, out / "curves.png", title=f"{args.env} ({args.preset or 'default'})")
    print(table)
    print(f"\nwrote {out / 'table.md'}, {out / 'curves.png'}, {out / 'curves.json'}")
    return 0


def _variance(args: argparse.Namespace) -> int:
    if args.control_variate is not None:
        raise ValueError("--cv: variance measures every control variate; leave --cv out")
    rows = variance.measure(
        _config(args, objective="tb"),
        args.objectives,
        args.batch_sizes,
        args.repeats,
        args.train_steps,
    )
    paths = variance.write(rows, args.out, title=f"{args.env} ({args.preset or 'default'})")
    print(variance.summary_table(rows))
    print(f"\nwrote {paths[0]}, {paths[1]}")
    return 0


def _names(text: str) -> tuple[str, ...]:
    return tuple(name for name in text.split(",") if name)


def _sizes(text: str) -> tuple[int, ...]:
    try:
        return tuple(int(size) for size in text.split(","))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 32,128,512, got {text!r}"
        ) from None


def plot_curves(curves: dict[str, list[list[dict]]], path: Path, title: str = "") -> None:
    """PNG of the metric against trajectories: mean over seeds, shaded min..max."""
    import matplotlib  # the "train" extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = "js" if "js" in next(iter(curves.values()))[0][-1] else "exact_l1"
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for objective, runs in curves.items():
        if runs[0][-1][metric] is None:
            continue  # not enumerable: nothing to draw
        x = [record["trajectories"] for record in runs[0]]
        values = torch.tensor([[record[metric] for record in run] for run in runs])
        axes.plot(x, values.mean(0), label=objective)
        axes.fill_between(x, values.min(0).values, values.max(0).values, alpha=0.2)
    axes.set_xlabel("trajectories sampled")
    axes.set_ylabel("exact L1" if metric == "exact_l1" else "Jensen-Shannon (nats)")
    axes.set_yscale("log")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def _info(_args: argparse.Namespace) -> int:
    print(f"gfn_fast {gf.__version__}")
    print(f"backend: {gf.backend()}")
    print(f"build_info: {json.dumps(gf.build_info(), indent=1, default=str)}")
    print(f"torch {torch.__version__} (CUDA available: {torch.cuda.is_available()})")
    print(f"python {platform.python_version()} on {platform.platform()}")
    for name in ("numpy", "tqdm", "matplotlib"):
        try:
            module = __import__(name)
            print(f"{name} {module.__version__}")
        except ImportError:
            print(f"{name}: not installed")
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of `gfn-fast` (subcommands train, compare, variance, info)."""
    parser = argparse.ArgumentParser(
        prog="gfn-fast", description="Train GFlowNets with divergence objectives."
    )
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one GFlowNet")
    _config_arguments(train)
    train.add_argument("--objective", default="tb", choices=gf.OBJECTIVES)
    train.add_argument("--seed", type=int, default=0)
    train.add_argument(
        "--nproc",
        type=int,
        default=1,
        help="processes (DDP on CPU, gloo); each samples batch_size / nproc trajectories",
    )
    train.add_argument("--out", default=None, help="directory for metrics.json/csv, checkpoint")
    train.add_argument(
        "--resume", default=None, help="checkpoint.pt to continue from (its config is used)"
    )
    train.set_defaults(run=_train)

    comparison = commands.add_parser("compare", help="every objective on one task, over seeds")
    _config_arguments(comparison)
    comparison.add_argument("--objectives", default=",".join(COMPARED_OBJECTIVES))
    comparison.add_argument("--seeds", type=int, default=3)
    comparison.add_argument("--out", default="gfn_fast_compare", help="output directory")
    comparison.set_defaults(run=_compare)

    spread = commands.add_parser(
        "variance", help="policy-gradient variance with and without control variates (Fig. 2)"
    )
    _config_arguments(spread)
    add = spread.add_argument
    add("--objectives", type=_names, default=variance.DEFAULT_OBJECTIVES)
    add("--batch-sizes", type=_sizes, default=variance.DEFAULT_BATCH_SIZES, help="default 32..1024")
    add("--repeats", type=int, default=variance.DEFAULT_REPEATS, help="batches per point")
    add("--train-steps", type=int, default=None, help="steps of the trained policy")
    add("--seed", type=int, default=0)
    add("--out", default="gfn_fast_variance", help="output directory")
    spread.set_defaults(run=_variance)

    info = commands.add_parser("info", help="backend, build and versions")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gfn-fast` and `python -m gfn_fast`; returns the exit status."""
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except ValueError as error:
        print(f"gfn-fast: error: {error}", file=sys.stderr)
        return 2
