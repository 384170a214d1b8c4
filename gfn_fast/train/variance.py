"""`gfn-fast variance`: how much the control variates cut the policy-gradient variance.

The paper's Fig. 2. For each objective, batch size K and policy ("initial": at
initialisation; "trained": after some training steps with that objective), R independent
batches of K on-policy trajectories are drawn at the fixed policy. Each batch gives one
gradient of the loss with respect to the policy's parameters per control variate ("none"
and "loo" are evaluated on the same batches, so their comparison is paired); the total
variance is the trace of the sample covariance of the R gradients.

    rows = measure(TrainConfig(env="sets", preset="small"), ("reverse_kl",), (32, 128, 512))
    write(rows, "V")  # V/variance.json, V/variance.png
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import torch

import gfn_fast as gf
from gfn_fast.train.sampler import sample_trajectories
from gfn_fast.train.trainer import TrainConfig, Trainer, resolve

POLICIES = ("initial", "trained")
DEFAULT_OBJECTIVES = ("reverse_kl", "forward_kl", "renyi", "tsallis")
DEFAULT_BATCH_SIZES = tuple(2**i for i in range(5, 11))
DEFAULT_REPEATS = 32
# The "trained" policy: this fraction of the env's (or --steps') training schedule.
TRAINED_FRACTION = 0.25


def total_variance(gradients: torch.Tensor) -> float:
    """Trace of the unbiased sample covariance of R gradient samples.

    Args:
        gradients: [R, P], one flattened gradient per row, R >= 2.

    Returns:
        sum_p (1 / (R - 1)) sum_r (g_rp - mean_r g_rp)^2, computed in float64.

    Raises:
        ValueError: not a 2-D tensor, or fewer than 2 rows.
    """
    if gradients.dim() != 2 or gradients.shape[0] < 2:
        raise ValueError(
            f"gradients: expected a [R, P] tensor with R >= 2 samples, got shape "
            f"{tuple(gradients.shape)}"
        )
    g = gradients.double()
    return float((g - g.mean(0)).pow(2).sum() / (g.shape[0] - 1))


def control_variates_of(objective: str) -> tuple[str, ...]:
    """The estimators compared for `objective`: vargrad has no control-variate option."""
    return ("none",) if objective == "vargrad" else ("none", "loo")


def gradient_samples(
    env,
    policy: torch.nn.Module,
    objective: str,
    batch_size: int,
    repeats: int,
    generator: torch.Generator,
    *,
    alpha: float = 0.5,
    normalization: str = "amari",
    log_z: torch.Tensor | None = None,
    layout: str = "packed",
) -> dict[str, torch.Tensor]:
    """{control variate: [repeats, P]} flattened gradients of `objective`'s loss with respect
    to the policy's parameters (float64), one row per independent batch.

    Every repeat samples a fresh on-policy batch of `batch_size` trajectories from `policy`
    with `generator`; every control variate of `control_variates_of(objective)` is evaluated
    on that same batch. The policy is not changed. alpha, normalization and log_z (tb) are
    passed to `gf.divergence_loss`.
    """
    parameters = [p for p in policy.parameters() if p.requires_grad]
    variates = control_variates_of(objective)
    samples: dict[str, list[torch.Tensor]] = {cv: [] for cv in variates}
    for _ in range(repeats):
        batch = sample_trajectories(env, policy, batch_size, generator=generator, layout=layout)
        inputs = batch.loss_inputs()
        for cv in variates:
            loss, _ = gf.divergence_loss(
                objective,
                **inputs,
                alpha=alpha,
                control_variate=cv,
                log_z=log_z,
                normalization=normalization,
            )
            grads = torch.autograd.grad(loss, parameters, retain_graph=True, allow_unused=True)
            flat = [
                torch.zeros_like(p).flatten() if g is None else g.flatten()
                for p, g in zip(parameters, grads, strict=True)
            ]
            samples[cv].append(torch.cat(flat).double())
    return {cv: torch.stack(rows) for cv, rows in samples.items()}


def check_request(
    config: TrainConfig,
    objectives: tuple[str, ...],
    batch_sizes: tuple[int, ...],
    repeats: int,
    train_steps: int | None,
) -> int:
    """The checks of `measure`'s arguments (before any training); returns train_steps.

    Raises:
        ValueError: as `measure`.
    """
    if not objectives:
        raise ValueError(f"objectives: expected at least one of {gf.OBJECTIVES}, got none")
    for objective in objectives:
        if objective not in gf.OBJECTIVES:
            raise ValueError(f"objectives: expected names in {gf.OBJECTIVES}, got {objective!r}")
    if not batch_sizes or min(batch_sizes) < 2:
        raise ValueError(f"batch_sizes: expected sizes >= 2, got {tuple(batch_sizes)}")
    if repeats < 2:
        raise ValueError(f"repeats: expected >= 2 batches to estimate a variance, got {repeats}")
    if config.epsilon > 0 or config.temperature != 1.0:
        raise ValueError(
            f"epsilon, temperature: the variance is measured on-policy, got "
            f"epsilon={config.epsilon}, temperature={config.temperature}"
        )
    steps = resolve(config).steps
    train_steps = round(TRAINED_FRACTION * steps) if train_steps is None else train_steps
    if not 0 <= train_steps <= steps:
        raise ValueError(f"train_steps: expected in [0, {steps}] (the schedule), got {train_steps}")
    return train_steps


def measure(
    config: TrainConfig,
    objectives: tuple[str, ...] = DEFAULT_OBJECTIVES,
    batch_sizes: tuple[int, ...] = DEFAULT_BATCH_SIZES,
    repeats: int = DEFAULT_REPEATS,
    train_steps: int | None = None,
) -> list[dict]:
    """Total gradient variance per objective, control variate, batch size and policy.

    Args:
        config: the task and policy settings (env, preset, alpha, hidden, layers, seed, ...);
            its objective and control_variate are replaced per run, and its batch size and
            lr schedule are those of the training that makes the "trained" policy.
        objectives: names of `gf.OBJECTIVES`.
        batch_sizes: K values, each >= 2 (the leave-one-out estimators need 2).
        repeats: R independent batches per (policy, K), >= 2.
        train_steps: optimiser steps of the "trained" policy (default: TRAINED_FRACTION of
            the schedule's steps).

    Returns:
        Rows {"objective", "control_variate", "batch_size", "grad_variance", "repeats",
        "policy"}, with "policy" "initial" or "trained". Each (policy, K) draws its batches
        from its own fixed seed, so rows do not depend on which other K are measured.

    Raises:
        ValueError: no or an unknown objective, a batch size < 2, repeats < 2, train_steps < 0,
            an off-policy config, or a bad config (see `trainer.resolve`).
    """
    train_steps = check_request(config, objectives, batch_sizes, repeats, train_steps)
    rows = []
    for objective in objectives:
        trainer = Trainer(replace(config, objective=objective, control_variate=None))
        for policy_index, policy in enumerate(POLICIES):
            if policy == "trained":
                for _ in range(train_steps):
                    trainer.train_step()
            for batch_size in batch_sizes:
                seed = _measurement_seed(config.seed, policy_index, batch_size)
                generator = torch.Generator(trainer.device).manual_seed(seed)
                samples = gradient_samples(
                    trainer.env,
                    trainer.policy,
                    objective,
                    batch_size,
                    repeats,
                    generator,
                    alpha=config.alpha,
                    normalization=config.normalization,
                    log_z=trainer.log_z,
                    layout=trainer.config.layout,
                )
                for cv, gradients in samples.items():
                    rows.append(
                        {
                            "objective": objective,
                            "control_variate": cv,
                            "batch_size": batch_size,
                            "grad_variance": total_variance(gradients),
                            "repeats": repeats,
                            "policy": policy,
                        }
                    )
    return rows


def _measurement_seed(seed: int, policy_index: int, batch_size: int) -> int:
    """A sampling seed per (run seed, policy, K), apart from the trainer's own streams."""
    return 1_000_003 * (seed + 1) + 7919 * policy_index + batch_size


def write(rows: list[dict], out: str | Path, title: str = "") -> tuple[Path, Path]:
    """OUT/variance.json ({"rows": rows}) and OUT/variance.png; returns their paths."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out / "variance.json", out / "variance.png"
    json_path.write_text(json.dumps({"rows": rows}, indent=1))
    plot(rows, png_path, title)
    return json_path, png_path


def plot(rows: list[dict], path: Path, title: str = "") -> None:
    """Log-log PNG of variance against batch size: one panel per policy, one colour per
    objective, solid with the leave-one-out control variate, dashed without."""
    import matplotlib  # the "train" extra

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    policies = [p for p in POLICIES if any(row["policy"] == p for row in rows)]
    objectives = list(dict.fromkeys(row["objective"] for row in rows))
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    figure, axes = plt.subplots(1, len(policies), figsize=(5.2 * len(policies), 4.2), squeeze=False)
    for panel, policy in zip(axes[0], policies, strict=True):
        for index, objective in enumerate(objectives):
            for cv, style in (("loo", "-"), ("none", "--")):
                points = sorted(
                    (row["batch_size"], row["grad_variance"])
                    for row in rows
                    if (row["policy"], row["objective"], row["control_variate"])
                    == (policy, objective, cv)
                )
                if points:
                    x, y = zip(*points, strict=True)
                    label = f"{objective} ({'loo' if cv == 'loo' else 'no CV'})"
                    panel.plot(
                        x, y, style, marker="o", color=colours[index % len(colours)], label=label
                    )
        panel.set_xscale("log", base=2)
        panel.set_yscale("log")
        panel.set_xlabel("batch size K")
        panel.set_ylabel("total gradient variance (trace of covariance)")
        panel.set_title(f"{title} {policy} policy".strip())
        panel.legend(fontsize=7)
    figure.tight_layout()
    figure.savefig(path, dpi=120)
    plt.close(figure)


def summary_table(rows: list[dict]) -> str:
    """A Markdown table: per objective, policy and K, the variance without and with the
    leave-one-out control variate and their ratio (how many times loo cuts it)."""
    lines = [
        "| objective | policy | K | variance, no CV | variance, loo | none / loo |",
        "|---|---|---|---|---|---|",
    ]
    by_key = {(r["objective"], r["policy"], r["batch_size"], r["control_variate"]): r for r in rows}
    for objective, policy, k, cv in by_key:
        if cv != "none":
            continue
        none = by_key[objective, policy, k, "none"]["grad_variance"]
        loo = by_key.get((objective, policy, k, "loo"))
        if loo is None:
            lines.append(f"| {objective} | {policy} | {k} | {none:.3g} | - | - |")
            continue
        ratio = none / loo["grad_variance"] if loo["grad_variance"] > 0 else float("inf")
        lines.append(
            f"| {objective} | {policy} | {k} | {none:.3g} | {loo['grad_variance']:.3g} | "
            f"{ratio:.3g} |"
        )
    return "\n".join(lines)
