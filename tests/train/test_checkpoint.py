"""Checkpoint files: tensors and plain data only, loaded without running code, refused with
a clear error when missing, truncated, foreign or hostile, and written atomically."""

from __future__ import annotations

import json
from dataclasses import asdict

import pytest
import torch

from gfn_fast.train.cli import main
from gfn_fast.train.trainer import CheckpointError, TrainConfig, Trainer, load_checkpoint
from gfn_fast.train.trainer import checkpoint as checkpoint_module

TINY = {"steps": 4, "batch_size": 8, "eval_every": 2, "hidden": 8, "layers": 1}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A genuine checkpoint of a 4-step run, to copy and tamper with."""
    out = tmp_path_factory.mktemp("run")
    Trainer(TrainConfig(objective="renyi", **TINY), out).run(progress=False)
    return out / "checkpoint.pt"


class _Payload:
    """Unpickling this runs `exec`: the canonical pickle attack (writes a marker file)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').write('pwned')",)


def _hostile_copy(checkpoint, path, marker):
    state = torch.load(checkpoint, weights_only=True)
    state["counters"]["step"] = _Payload(marker)  # looks like any other checkpoint
    torch.save(state, path)
    return path


def test_the_payload_runs_when_unpickled_in_full(checkpoint, tmp_path):
    """The attack of the next test is real: a full unpickle (what resume used to do) runs it."""
    marker = tmp_path / "marker"
    hostile = _hostile_copy(checkpoint, tmp_path / "hostile.pt", marker)
    torch.load(hostile, weights_only=False)
    assert marker.read_text() == "pwned"


def test_a_checkpoint_carrying_a_pickle_payload_is_refused_and_never_runs(
    checkpoint, tmp_path, capsys
):
    marker = tmp_path / "marker"
    hostile = _hostile_copy(checkpoint, tmp_path / "hostile.pt", marker)
    with pytest.raises(CheckpointError, match="holds an object of exec.*refusing to unpickle"):
        Trainer.resume(hostile)
    assert main(["train", "--resume", str(hostile), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gfn-fast: error: checkpoint") and error.count("\n") == 1
    assert "hostile.pt" in error and "arbitrary code" in error
    assert not marker.exists()


def test_checkpoints_hold_only_tensors_and_plain_data_with_the_config_as_json(checkpoint):
    state = torch.load(checkpoint, weights_only=True)  # would raise on any other object
    config = Trainer.resume(checkpoint).config
    assert json.loads(state["config"]) == asdict(config)
    assert isinstance(load_checkpoint(checkpoint)["config"], TrainConfig)


def test_saving_refuses_objects_it_could_not_load_back(tmp_path):
    with pytest.raises(TypeError, match=r"state\['extra'\]: set is not a tensor"):
        checkpoint_module.save_checkpoint(tmp_path / "c.pt", {"extra": {1, 2}})
    assert not list(tmp_path.iterdir())


def _truncated(checkpoint, path):
    path.write_bytes(checkpoint.read_bytes()[:1000])
    return path


def _text(_checkpoint, path):
    path.write_text('{"not": "a checkpoint"}')
    return path


def _foreign(_checkpoint, path):
    torch.save({"weights": torch.zeros(3)}, path)
    return path


def _other_format(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)
    state["format"] = "gfn_fast.train.checkpoint/0"
    torch.save(state, path)
    return path


def _bad_config(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)
    state["config"] = state["config"].replace('"steps": 4', '"steps": -4')
    torch.save(state, path)
    return path


def _unknown_field(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)
    state["config"] = json.dumps({**json.loads(state["config"]), "new_field": 1})
    torch.save(state, path)
    return path


def _without(checkpoint, path, *names):
    """The checkpoint with its config lacking `names` (as an earlier version wrote it)."""
    state = torch.load(checkpoint, weights_only=True)
    values = json.loads(state["config"])
    state["config"] = json.dumps({k: v for k, v in values.items() if k not in names})
    torch.save(state, path)
    return path


def _missing_field(checkpoint, path):
    return _without(checkpoint, path, "hidden", "distinct_states")


def _mismatched_shapes(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)
    state["config"] = state["config"].replace('"hidden": 8', '"hidden": 16')
    torch.save(state, path)
    return path


def _missing_entry(checkpoint, path):
    state = torch.load(checkpoint, weights_only=True)
    del state["optimizer"]
    torch.save(state, path)
    return path


BROKEN = {
    "truncated": (_truncated, "not a readable checkpoint"),
    "json-text": (_text, "not a readable checkpoint"),
    "foreign-torch-file": (_foreign, "not a gfn_fast checkpoint"),
    "other-format-version": (_other_format, "not a gfn_fast checkpoint of format"),
    "invalid-config": (_bad_config, "config is invalid: steps: expected >= 1"),
    "unknown-config-field": (_unknown_field, r"unknown fields \['new_field'\]"),
    "missing-config-field": (_missing_field, r"missing fields \['hidden'\]\)"),
    "state-does-not-fit": (_mismatched_shapes, "does not fit its config"),
    "missing-entry": (_missing_entry, "entry 'optimizer' should be a dict"),
}


@pytest.mark.parametrize("kind", list(BROKEN))
def test_broken_checkpoints_are_refused_with_one_line_naming_the_file(
    kind, checkpoint, tmp_path, capsys
):
    make, message = BROKEN[kind]
    path = make(checkpoint, tmp_path / "broken.pt")
    with pytest.raises(CheckpointError, match=message):
        Trainer.resume(path)
    assert main(["train", "--resume", str(path), "--no-progress"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("gfn-fast: error: ") and error.count("\n") == 1
    assert "broken.pt" in error or kind == "state-does-not-fit"


def test_a_checkpoint_lacking_only_settings_a_resume_may_change_resumes(checkpoint, tmp_path):
    """Fields added since a checkpoint was written, which a resumed run may change anyway
    (how it runs, not what it computes), take their defaults; any other is refused above."""
    fillable = ("distinct_states", "record_activations", "keep_graph")
    old = _without(checkpoint, tmp_path / "old.pt", *fillable)
    assert not set(fillable) & set(json.loads(torch.load(old, weights_only=True)["config"]))
    resumed = Trainer.resume(old).config
    assert resumed == Trainer.resume(checkpoint).config  # the defaults it was written with


def test_missing_file_and_directory_are_refused(checkpoint, tmp_path):
    with pytest.raises(CheckpointError, match="no such file"):
        load_checkpoint(tmp_path / "absent.pt")
    with pytest.raises(CheckpointError, match="is a directory.*did you mean"):
        load_checkpoint(checkpoint.parent)


def test_a_crash_while_writing_keeps_the_previous_checkpoint(checkpoint, tmp_path, monkeypatch):
    target = tmp_path / "checkpoint.pt"
    target.write_bytes(checkpoint.read_bytes())

    def crash(state, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", crash)
    state = torch.load(checkpoint, weights_only=True)
    with pytest.raises(OSError, match="disk full"):
        checkpoint_module.save_checkpoint(target, state)
    assert target.read_bytes() == checkpoint.read_bytes()
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]  # no temporary left
