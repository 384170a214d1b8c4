"""The `gfn-fast` command: `train`, `compare`, `variance` and `info`.

gfn-fast train --env hypergrid --preset torchgfn --objective renyi --alpha 0.5 --out runs/a
gfn-fast train --env hypergrid --preset torchgfn --objective renyi --nproc 2 --out runs/ddp
gfn-fast train --resume runs/a/checkpoint.pt --steps 2000
gfn-fast compare --env sets --preset small --seeds 3 --out runs/sets
gfn-fast variance --env sets --preset small --objectives reverse_kl --out runs/variance
gfn-fast info

A mistake in the command line (a bad option, a missing or foreign checkpoint, an output
directory that cannot be used, a device this machine lacks) is reported in one line,
`gfn-fast: error: ...`, with exit status 2, before anything trains. Anything that fails
later is a bug and shows its traceback. SIGINT and SIGTERM stop a run at a step boundary,
after its checkpoint (exit status 130 and 143).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import re
import sys
import tempfile
from dataclasses import fields, replace
from pathlib import Path

import torch

import gfn_fast as gf
from gfn_fast.train import envs, variance
from gfn_fast.train.compare import (
    COMPARED_OBJECTIVES,
    plan,
    seed_mean_error,
    summary_table,
    train_planned,
)
from gfn_fast.train.trainer import (
    ENV_DEFAULTS,
    RESUMABLE_CHANGES,
    Interrupted,
    StopOnSignals,
    TrainConfig,
    Trainer,
    launch,
    load_checkpoint,
    resolve,
)
from gfn_fast.train.trainer.evaluation import METRIC_LABELS, evaluation_for, metric_of


class UsageError(Exception):
    """A mistake in the command line: one line on stderr and exit status 2."""


class _Parser(argparse.ArgumentParser):
    """argparse, with its errors in gfn-fast's one-line form."""

    def error(self, message: str):
        raise UsageError(f"{message} (see '{self.prog} --help')")


@contextlib.contextmanager
def _user_errors():
    """Turn the errors of checking the user's input into UsageError. Only the preparation
    of a command runs under it: an error during training is a bug, with its traceback."""
    try:
        yield
    except ValueError as error:
        raise UsageError(_as_flags(str(error))) from None
    except OSError as error:
        raise UsageError(str(error)) from None


def _as_flags(message: str) -> str:
    """A settings check's message in the command's terms: the field names it starts with,
    and its name=value hints, as flags ("batch_size: ..." -> "--batch-size: ...", 'use
    control_variate="none"' -> "use --cv none")."""
    head, colon, rest = message.partition(": ")
    names = head.split(", ")
    if colon and all(name in _FIELDS for name in names):
        message = ", ".join(map(_flag, names)) + colon + rest

    def hint(match: re.Match) -> str:
        name, value = match[1], match[3]
        return f"{_flag(name)} {value}" if name in _FIELDS - _SWITCHES else match[0]

    return re.sub(r'\b([a-z_]+)=("?)([^\s",;)]+)\2', hint, message)


def _default(name: str) -> str:
    """TrainConfig's default of field `name`, for help texts."""
    default = next(f.default for f in fields(TrainConfig) if f.name == name)
    return repr(default) if isinstance(default, str) else str(default)


def _per_env(name: str) -> str:
    return ", ".join(f"{env} {values[name]}" for env, values in ENV_DEFAULTS.items())


def _config_arguments(parser: argparse.ArgumentParser) -> None:
    """Options shared by `train` and `compare`, one per TrainConfig field. Their argparse
    default is None ("not given"); TrainConfig and ENV_DEFAULTS give the values."""
    add = parser.add_argument
    add("--env", choices=tuple(envs.REGISTRY), help=f"environment (default: {_default('env')})")
    add("--preset", help="env preset (default: the env's own; the list is below)")
    add("--alpha", type=float, help=f"order of renyi / tsallis (default: {_default('alpha')})")
    add(
        "--cv",
        dest="control_variate",
        choices=gf.CONTROL_VARIATES,
        help='control variate (default: "none" for tb, "loo" otherwise)',
    )
    add(
        "--normalization",
        choices=("amari", "paper"),
        help=f"scaling of renyi / tsallis (default: {_default('normalization')})",
    )
    add("--steps", type=int, help=f"optimiser steps (default per env: {_per_env('steps')})")
    add(
        "--batch-size",
        type=int,
        help=f"trajectories per step (default per env: {_per_env('batch_size')})",
    )
    add("--lr", type=float, help=f"policy learning rate (default per env: {_per_env('lr')})")
    add(
        "--lr-log-z",
        type=float,
        help=f"learning rate of tb's log Z (default: {_default('lr_log_z')})",
    )
    add(
        "--lr-decay-power",
        type=float,
        help=f"power of the lr's polynomial decay to 0 (default: {_default('lr_decay_power')})",
    )
    add("--hidden", type=int, help=f"width of the policy MLPs (default: {_default('hidden')})")
    add("--layers", type=int, help=f"hidden layers of the MLPs (default: {_default('layers')})")
    add("--deep-set", action="store_true", default=None, help="deep-set policy (sets only)")
    add("--learn-pb", action="store_true", default=None, help="learn p_B (default: uniform)")
    add(
        "--epsilon",
        type=float,
        help=f"off-policy: weight of the uniform in the behaviour (default: {_default('epsilon')})",
    )
    add(
        "--temperature",
        type=float,
        help=f"off-policy: tempering of p_F in the behaviour (default: {_default('temperature')})",
    )
    add(
        "--eval-every",
        type=int,
        help=f"steps between evaluations and checkpoints (default per env: "
        f"{_per_env('eval_every')})",
    )
    add(
        "--js-samples",
        type=int,
        help=f"samples per side of the Jensen-Shannon metric (default: {_default('js_samples')})",
    )
    add(
        "--mc-samples",
        type=int,
        help=f"Monte Carlo L1: sampled terminal states (default: {_default('mc_samples')})",
    )
    add(
        "--mc-backward-samples",
        type=int,
        help=f"Monte Carlo L1: backward trajectories per state (default: "
        f"{_default('mc_backward_samples')})",
    )
    add(
        "--layout",
        choices=("packed", "padded"),
        help="rollout and batched pass over the running trajectories only, one host sync a "
        "step (packed), or over all rows for max_length steps, no sync (padded) (default: "
        "packed on CPU, padded on CUDA)",
    )
    add(
        "--keep-graph",
        action="store_true",
        default=None,
        help="where p_F's activations are not recorded (see --no-record-activations), keep "
        "the rollout's autograd graph of p_F instead of one batched forward after a no-grad "
        "rollout (same estimator and samples; default: on in fp32 from batch 512, where it "
        "measured faster)",
    )
    add(
        "--no-record-activations",
        dest="record_activations",
        action="store_false",
        default=None,
        help="run p_F again in the batched pass (or keep the rollout's graph with "
        "--keep-graph) instead of backpropagating through the activations that the "
        "rollout recorded (default: recorded, where p_F is a plain MLP)",
    )
    add(
        "--distinct-states",
        dest="distinct_states",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="run the policy networks once per distinct state of a rollout step and of a "
        "batch instead of on every visited state (same estimator and samples; default: on "
        "CPU where hidden**2 * batch size >= 2**20, where it measured faster; off on CUDA, "
        "where it would add a host sync per step)",
    )
    add(
        "--precision",
        choices=("fp32", "bf16"),
        help=f"policy networks in fp32 or bf16 autocast; log-softmax and loss stay fp32 "
        f"(default: {_default('precision')})",
    )
    add(
        "--threads",
        type=int,
        help=f"torch threads; 1 is fastest for small policies on busy machines "
        f"(default: {_default('threads')})",
    )
    add("--device", help=f'"cpu", "cuda" or "cuda:<index>" (default: {_default("device")})')
    add(
        "--compile",
        action="store_true",
        default=None,
        help="torch.compile the policy networks and the loss",
    )
    add(
        "--compile-backend",
        help=f'torch.compile backend ("aot_eager" compiles fast; default: '
        f"{_default('compile_backend')})",
    )
    add("--no-progress", action="store_true", help="no progress bar")
    add(
        "--overwrite",
        action="store_true",
        help="write into a non-empty --out directory, replacing the files a run writes",
    )


def _presets_epilog() -> str:
    lines = ["presets (--env NAME --preset PRESET; the first of each env is its default):"]
    for name, (_, presets, default) in envs.REGISTRY.items():
        ordered = [default] + [preset for preset in presets if preset != default]
        for preset in ordered:
            settings = ", ".join(f"{k}={v}" for k, v in presets[preset].items())
            lines.append(f"  {name} {preset}: {settings or 'no settings'}")
    return "\n".join(lines)


def _given(args: argparse.Namespace) -> dict:
    """The TrainConfig fields given on the command line."""
    names = (f.name for f in fields(TrainConfig))
    return {name: getattr(args, name) for name in names if getattr(args, name, None) is not None}


# Config fields whose flag is not "--" + the field's name with dashes.
_FLAG_OF = {
    "control_variate": "--cv",
    "record_activations": "--no-record-activations",
    "distinct_states": "--[no-]distinct-states",
}


# The names a settings check may use for what the user gave: TrainConfig's fields, and
# compare's own options; the switches among them take no value.
_FIELDS = frozenset(field.name for field in fields(TrainConfig)) | {"objectives", "seeds"}
_SWITCHES = frozenset(
    field.name for field in fields(TrainConfig) if field.type in ("bool", "bool | None")
)


def _flag(name: str) -> str:
    return _FLAG_OF.get(name, "--" + name.replace("_", "-"))


# -- train ----------------------------------------------------------------------------------
def _train(args: argparse.Namespace) -> int:
    stop = args.stop
    with _user_errors():
        if args.resume:
            config, out, changes = _prepare_resume(args)
        else:
            config, changes = resolve(TrainConfig(**_given(args))), {}
            out = _prepare_out(args.out, args.overwrite)
        # Built here also for config.nproc processes: it checks the whole checkpoint.
        trainer = Trainer.resume(args.resume, out, **changes) if args.resume else None
        if trainer is not None and trainer.step >= config.steps:
            return _already_complete(args.resume, trainer)
        if trainer is None and config.nproc == 1:
            trainer = Trainer(config, out)
        _notify(_evaluation_notice(config))
    try:
        if config.nproc > 1:
            progress = not args.no_progress
            if args.resume:
                final = launch(
                    resume=args.resume, out=out, changes=changes, progress=progress, stop=stop
                )
            else:
                final = launch(config, out, progress=progress, stop=stop)
        else:
            final = trainer.run(progress=not args.no_progress, stop=stop)
    except Interrupted as interrupted:
        return _report_interrupt(interrupted)
    print(json.dumps(final))
    return 0


def _prepare_resume(args: argparse.Namespace):
    """(config, out, changes) of `train --resume`, or UsageError for flags that
    would change what the checkpoint's run means."""
    state = load_checkpoint(args.resume)
    saved = state["config"]
    changes = {name: value for name, value in _given(args).items() if value != getattr(saved, name)}
    refused = [name for name in changes if name not in RESUMABLE_CHANGES]
    if refused:
        detail = ", ".join(
            f"{_flag(name)} {changes[name]} (the run has {getattr(saved, name)!r})"
            for name in refused
        )
        allowed = ", ".join(_flag(name) for name in RESUMABLE_CHANGES)
        raise UsageError(
            f"{detail}: a resumed run keeps its checkpoint's settings; with --resume, only "
            f"{allowed}, --out and --overwrite may differ"
        )
    checkpoint_dir = Path(args.resume).parent
    out = checkpoint_dir
    if args.out is not None and Path(args.out).resolve() != checkpoint_dir.resolve():
        out = _prepare_out(args.out, args.overwrite)
    return resolve(replace(saved, **changes)), out, changes


def _already_complete(checkpoint: str, trainer: Trainer) -> int:
    _notify(
        f"the run of {checkpoint} is already complete ({trainer.step} of "
        f"{trainer.config.steps} steps); give --steps N with N > {trainer.step} to extend it"
    )
    print(json.dumps(trainer.curve[-1]))
    return 0


def _report_interrupt(interrupted: Interrupted) -> int:
    if interrupted.checkpoint is None:
        where = "no checkpoint written (no --out)"
    else:
        where = (
            f"checkpoint saved to {interrupted.checkpoint}; continue with: "
            f"gfn-fast train --resume {interrupted.checkpoint}"
        )
    print(
        f"\ngfn-fast: stopped by {interrupted.signal_name} at step {interrupted.step}; {where}",
        file=sys.stderr,
    )
    return interrupted.exit_status


def _prepare_out(out: str | None, overwrite: bool) -> Path | None:
    """`out` as a directory that exists and can be written, empty unless `overwrite`.

    Raises:
        UsageError: a file, a non-empty directory without overwrite, or not creatable or
            writable (the OSError's message).
    """
    if out is None:
        return None
    path = Path(out)
    if path.exists() and not path.is_dir():
        raise UsageError(f"--out {out}: is a file, expected a directory")
    if path.is_dir() and any(path.iterdir()) and not overwrite:
        held = sorted(child.name for child in path.iterdir())
        shown = ", ".join(held[:5]) + (", ..." if len(held) > 5 else "")
        hint = ""
        if (path / "checkpoint.pt").is_file():
            hint = f", or --resume {path / 'checkpoint.pt'} to continue the run there"
        raise UsageError(
            f"--out {out}: directory is not empty (it holds {shown}); give --overwrite to "
            f"replace the files a new run writes{hint}"
        )
    try:
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=path):
            pass
    except OSError as error:
        raise UsageError(f"--out {out}: cannot write there ({error.strerror or error})") from None
    return path


def _evaluation_notice(config: TrainConfig) -> str | None:
    env = envs.make(config.env, config.preset)
    return evaluation_for(env, config, torch.device(config.device)).notice


def _notify(message: str | None) -> None:
    if message:
        print(f"gfn-fast: notice: {message}", file=sys.stderr)


# -- compare --------------------------------------------------------------------------------
def _compare(args: argparse.Namespace) -> int:
    stop = args.stop
    with _user_errors():
        objectives = tuple(name.strip() for name in args.objectives.split(","))
        runs = plan(TrainConfig(**_given(args)), objectives, args.seeds)
        out = _prepare_out(args.out, args.overwrite)
        first = runs[0].config
        _notify(_evaluation_notice(first))
        if "tb" in objectives and args.control_variate not in (None, "none"):
            _notify(
                f"--cv {args.control_variate} applies to the divergence objectives; tb "
                "trains with its classic estimator (--cv none)"
            )
        plotting = _matplotlib_available()
        if not plotting:
            _notify(
                "matplotlib is not installed: writing the table without curves.png "
                "(pip install matplotlib, or the 'train' extra, to plot)"
            )
    try:
        curves = train_planned(runs, out, progress=not args.no_progress, stop=stop)
    except Interrupted as interrupted:
        return _report_interrupt(interrupted)
    table = summary_table(curves)
    (out / "table.md").write_text(table + "\n")
    (out / "curves.json").write_text(json.dumps(curves))
    written = [out / "table.md", out / "curves.json"]
    if plotting:
        plot_curves(curves, out / "curves.png", title=f"{first.env} ({first.preset})")
        written.insert(1, out / "curves.png")
    print(table)
    print(f"\nwrote {', '.join(map(str, written))}")
    return 0


def _variance(args: argparse.Namespace) -> int:
    with _user_errors():
        if args.control_variate is not None:
            raise ValueError("--cv: variance measures every control variate; leave --cv out")
        config = resolve(TrainConfig(**{**_given(args), "objective": "tb"}))
        out = _prepare_out(args.out, args.overwrite)
        variance.check_request(
            config, args.objectives, args.batch_sizes, args.repeats, args.train_steps
        )
    rows = variance.measure(
        config, args.objectives, args.batch_sizes, args.repeats, args.train_steps
    )
    paths = variance.write(rows, out, title=f"{config.env} ({config.preset})")
    print(variance.summary_table(rows))
    print(f"\nwrote {', '.join(map(str, paths))}")
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


def _matplotlib_available() -> bool:
    try:
        import matplotlib  # noqa: F401 -- the "train" extra
    except ImportError:
        return False
    return True


def plot_curves(curves: dict[str, list[list[dict]]], path: Path, title: str = "") -> None:
    """PNG of the metric against trajectories: mean over seeds, shaded min..max; for the
    Monte Carlo L1, error bars of +- 1 standard error of the mean over seeds."""
    import matplotlib  # the "train" extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = metric_of(next(iter(curves.values()))[0][-1])
    figure, axes = plt.subplots(figsize=(6.4, 4.2))
    for objective, runs in curves.items():
        x = [record["trajectories"] for record in runs[0]]
        values = torch.tensor([[record[metric] for record in run] for run in runs])
        (line,) = axes.plot(x, values.mean(0), label=objective)
        axes.fill_between(x, values.min(0).values, values.max(0).values, alpha=0.2)
        if f"{metric}_se" in runs[0][0]:
            errors = [seed_mean_error(list(records), metric) for records in zip(*runs, strict=True)]
            axes.errorbar(x, values.mean(0), yerr=errors, fmt="none", ecolor=line.get_color())
    axes.set_xlabel("trajectories sampled")
    axes.set_ylabel(METRIC_LABELS[metric])
    axes.set_yscale("log")
    axes.set_title(title)
    axes.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


# -- info -----------------------------------------------------------------------------------
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
    """The argument parser of `gfn-fast` (subcommands train, compare, variance, info). Its errors
    raise UsageError instead of exiting."""
    parser = _Parser(prog="gfn-fast", description="Train GFlowNets with divergence objectives.")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser(
        "train",
        help="train one GFlowNet",
        description="Train one GFlowNet. SIGINT (Ctrl-C) and SIGTERM stop it at a step\n"
        "boundary, after a checkpoint; --resume continues it bit-for-bit.",
        epilog=_presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arguments(train)
    train.add_argument(
        "--objective", choices=gf.OBJECTIVES, help=f"the loss (default: {_default('objective')})"
    )
    train.add_argument("--seed", type=int, help=f"random seed (default: {_default('seed')})")
    train.add_argument(
        "--nproc",
        type=int,
        help="processes (DDP on CPU, gloo); each samples batch_size / nproc trajectories "
        f"(default: {_default('nproc')})",
    )
    train.add_argument(
        "--out", help="directory for metrics.json, metrics.csv and checkpoint.pt (default: none)"
    )
    train.add_argument(
        "--resume",
        help="checkpoint.pt to continue from, with its settings; --steps N extends the run "
        f"(the lr then decays over N steps); {', '.join(map(_flag, RESUMABLE_CHANGES))} may "
        "change; writes to its directory unless --out is given",
    )
    train.set_defaults(run=_train)

    comparison = commands.add_parser(
        "compare",
        help="every objective on one task, over seeds",
        description="Train every objective with seeds 0..S-1 and write OUT/table.md,\n"
        "OUT/curves.png, OUT/curves.json and each run's files in OUT/<objective>/seed<k>.",
        epilog=_presets_epilog(),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    _config_arguments(comparison)
    comparison.add_argument(
        "--objectives",
        default=",".join(COMPARED_OBJECTIVES),
        help=f"comma-separated objectives (default: {','.join(COMPARED_OBJECTIVES)})",
    )
    comparison.add_argument("--seeds", type=int, default=3, help="seeds per objective (default: 3)")
    comparison.add_argument(
        "--out", default="gfn_fast_compare", help="output directory (default: gfn_fast_compare)"
    )
    comparison.set_defaults(run=_compare)

    spread = commands.add_parser(
        "variance", help="policy-gradient variance with and without control variates (Fig. 2)"
    )
    _config_arguments(spread)
    add = spread.add_argument
    add("--objectives", type=_names, default=variance.DEFAULT_OBJECTIVES)
    add("--batch-sizes", type=_sizes, default=variance.DEFAULT_BATCH_SIZES, help="default 32..1024")
    add("--repeats", type=int, default=variance.DEFAULT_REPEATS, help="batches per point")
    add(
        "--train-steps",
        type=int,
        default=None,
        help="optimiser steps the 'trained' policy takes, along the learning-rate schedule "
        "of --steps (which sets only that schedule's length here; default: "
        f"{variance.TRAINED_FRACTION:g} of --steps)",
    )
    add("--seed", type=int, default=0)
    add("--out", default="gfn_fast_variance", help="output directory")
    spread.set_defaults(run=_variance)

    info = commands.add_parser("info", help="backend, build and versions")
    info.set_defaults(run=_info)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of `gfn-fast` and `python -m gfn_fast`; returns the exit status."""
    with StopOnSignals() as stop:  # from the start: a signal during setup still checkpoints
        try:
            args = build_parser().parse_args(argv)
            args.stop = stop  # the commands that train obey it
            return args.run(args)
        except UsageError as error:
            print(f"gfn-fast: error: {error}", file=sys.stderr)
            return 2
        except SystemExit as exit_:  # --help
            return exit_.code if isinstance(exit_.code, int) else 0
