"""Trainer: bit-for-bit resume, metric files, config checks, the metric of each env kind."""

from __future__ import annotations

import gc
import json
import platform
import time
from dataclasses import replace

import pytest
import torch

from gfn_fast.train.trainer import TrainConfig, Trainer, resolve
from gfn_fast.train.trainer.allocator import keep_freed_memory

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
    assert resolve(TrainConfig()).record_activations is True
    with pytest.raises(ValueError, match="record_activations"):
        resolve(TrainConfig(record_activations="yes"))
    # Distinct states where the networks' work pays for finding them (CUDA: off).
    assert resolve(TrainConfig()).distinct_states is False  # hidden 64, batch 128
    assert resolve(TrainConfig(hidden=128)).distinct_states is True
    assert resolve(TrainConfig(batch_size=1024)).distinct_states is True
    assert resolve(TrainConfig(hidden=128, distinct_states=False)).distinct_states is False
    with pytest.raises(ValueError, match="distinct_states: expected True or False"):
        resolve(TrainConfig(distinct_states=1))


def test_the_trainer_keeps_freed_memory_on_glibc():
    applied = keep_freed_memory()
    assert applied == (platform.system() == "Linux" and platform.libc_ver()[0] == "glibc")


def test_seconds_count_training_steps_only(monkeypatch):
    trainer = Trainer(_config(steps=2, eval_every=1))
    evaluate = Trainer.evaluate

    def slow(self):
        time.sleep(0.25)
        return evaluate(self)

    monkeypatch.setattr(Trainer, "evaluate", slow)
    started = time.perf_counter()
    final = trainer.run(progress=False)
    assert time.perf_counter() - started > 0.75  # three evaluations ran
    assert 0 < final["seconds"] < 0.25  # and none of them is on the clock


def test_run_keeps_the_objects_alive_at_its_start_out_of_collections(monkeypatch):
    trainer = Trainer(_config(steps=2))
    frozen_during = []
    train_step = Trainer.train_step

    def observed(self):
        frozen_during.append(gc.get_freeze_count())
        train_step(self)

    monkeypatch.setattr(Trainer, "train_step", observed)
    assert gc.get_freeze_count() == 0
    trainer.run(progress=False)
    assert len(frozen_during) == 2 and min(frozen_during) > 10_000  # the imports at least
    assert gc.get_freeze_count() == 0  # an in-process caller gets its collector back


def test_sizes_that_do_not_enumerate_report_the_monte_carlo_l1():
    config = _config(env="sets", preset="paper", steps=1, batch_size=4, eval_every=1)
    trainer = Trainer(replace(config, mc_samples=32, mc_backward_samples=2))
    final = trainer.run(progress=False)
    assert trainer.metric_name == "mc_l1" and "exact_l1" not in final
    assert 0 <= final["mc_l1"] <= 2 and final["mc_l1_se"] > 0 and final["trajectories"] == 4
    assert "too many states to enumerate" in trainer.evaluation.notice
