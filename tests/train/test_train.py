"""Trainer: bit-for-bit resume, Ctrl-C checkpoints, logs, and the `gfn-fast` command."""

from __future__ import annotations

import json

import pytest
import torch

from gfn_fast.train.cli import main
from gfn_fast.train.trainer import TrainConfig, Trainer, resolve

SMALL = {"steps": 6, "batch_size": 16, "eval_every": 2, "progress": False}


def _config(**overrides):
    settings = {k: v for k, v in SMALL.items() if k != "progress"}
    return TrainConfig(**{**settings, **overrides})


def _comparable(curve):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in curve]


@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "tb"},
        {"objective": "renyi", "epsilon": 0.1, "learn_pb": True, "layout": "packed"},
        {"objective": "tsallis", "env": "sets", "deep_set": True},
        {"objective": "forward_kl", "env": "gmm", "js_samples": 256},
        {"objective": "tb", "env": "phylo", "preset": "tiny", "learn_pb": True},
    ],
    ids=["tb", "renyi-offpolicy-learned-pb", "tsallis-sets", "forward-kl-gmm", "tb-phylo"],
)
def test_resumed_run_equals_uninterrupted_run_bitwise(tmp_path, overrides):
    config = _config(**overrides)
    uninterrupted = Trainer(config)
    uninterrupted.run(progress=False)

    first = Trainer(config, tmp_path)
    first.run(until=3, progress=False)
    resumed = Trainer.resume(tmp_path / "checkpoint.pt")
    resumed.run(progress=False)

    for a, b in zip(uninterrupted.policy.parameters(), resumed.policy.parameters(), strict=True):
        assert torch.equal(a, b)
    if uninterrupted.log_z is not None:
        assert torch.equal(uninterrupted.log_z, resumed.log_z)
    assert _comparable(uninterrupted.curve) == _comparable(resumed.curve)


def test_ctrl_c_saves_a_checkpoint(tmp_path, monkeypatch):
    trainer = Trainer(_config(), tmp_path)
    original = trainer.train_step

    def interrupted():
        if trainer.step == 4:
            raise KeyboardInterrupt
        original()

    monkeypatch.setattr(trainer, "train_step", interrupted)
    with pytest.raises(KeyboardInterrupt):
        trainer.run(progress=False)
    assert torch.load(tmp_path / "checkpoint.pt", weights_only=False)["counters"]["step"] == 4


def test_metrics_json_has_the_final_record_and_the_curve(tmp_path):
    Trainer(_config(objective="renyi"), tmp_path).run(progress=False)
    summary = json.loads((tmp_path / "metrics.json").read_text())
    for key in ("exact_l1", "trajectories", "seconds", "objective"):
        assert key in summary and key in summary["curve"][-1]
    assert summary["trajectories"] == 6 * 16 and summary["objective"] == "renyi"
    assert [r["step"] for r in summary["curve"]] == [0, 2, 4, 6]
    assert (tmp_path / "metrics.csv").read_text().startswith("step,trajectories,seconds")


def test_resolve_fills_defaults_and_rejects_bad_settings():
    config = resolve(TrainConfig(env="sets", objective="renyi"))
    assert config.control_variate == "loo" and config.batch_size == 128
    assert resolve(TrainConfig(objective="tb")).control_variate == "none"
    with pytest.raises(ValueError, match="objective"):
        resolve(TrainConfig(objective="kl"))
    with pytest.raises(ValueError, match="only on-policy"):
        resolve(TrainConfig(objective="tb", control_variate="loo", epsilon=0.1))
    with pytest.raises(ValueError, match="steps"):
        resolve(TrainConfig(steps=0))


def test_cli_train_compare_and_info(tmp_path, capsys):
    common = ["--steps", "2", "--batch-size", "8", "--eval-every", "1", "--no-progress"]
    assert (
        main(
            [
                "train",
                "--env",
                "sequences",
                "--preset",
                "tiny",
                "--objective",
                "reverse_kl",
                "--out",
                str(tmp_path / "run"),
                *common,
            ]
        )
        == 0
    )
    assert json.loads((tmp_path / "run" / "metrics.json").read_text())["trajectories"] == 16
    assert (
        main(
            [
                "compare",
                "--env",
                "sets",
                "--preset",
                "small",
                "--seeds",
                "2",
                "--objectives",
                "tb,renyi",
                "--out",
                str(tmp_path / "cmp"),
                *common,
            ]
        )
        == 0
    )
    assert (tmp_path / "cmp" / "curves.png").stat().st_size > 0
    table = (tmp_path / "cmp" / "table.md").read_text()
    assert "| tb |" in table and "| renyi |" in table and "±" in table
    assert main(["info"]) == 0
    assert "backend:" in capsys.readouterr().out
    assert main(["train", "--objective", "tb", "--cv", "loo", "--epsilon", "0.1"]) == 2


def test_sizes_that_do_not_enumerate_train_and_report_no_exact_l1():
    trainer = Trainer(_config(env="sets", preset="paper", steps=1, batch_size=4, eval_every=1))
    final = trainer.run(progress=False)
    assert final["exact_l1"] is None and final["trajectories"] == 4
