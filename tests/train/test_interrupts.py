"""SIGINT and SIGTERM stop a run at a step boundary with a checkpoint, and the resumed run
ends bit-for-bit where the uninterrupted run ends: in process, and for `gfn-fast train` run as
a subprocess and signalled at random moments."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from gfn_fast.train.cli import main
from gfn_fast.train.trainer import Interrupted, TrainConfig, Trainer

ROOT = Path(__file__).resolve().parents[2]
TINY = {"steps": 8, "batch_size": 16, "eval_every": 3, "hidden": 16, "layers": 1}
# Off-policy with a learned p_B: every random stream and the optimiser state matter.
CONFIG = TrainConfig(objective="renyi", learn_pb=True, epsilon=0.1, **TINY)


def _without_seconds(curve):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in curve]


def _assert_same_run(a: Trainer, b: Trainer):
    assert a.step == b.step and a.trajectories == b.trajectories
    for (name, p), q in zip(
        a.policy.state_dict().items(), b.policy.state_dict().values(), strict=True
    ):
        assert torch.equal(p, q), name
    assert _without_seconds(a.curve) == _without_seconds(b.curve)


@pytest.fixture(scope="module")
def uninterrupted():
    trainer = Trainer(CONFIG)
    trainer.run(progress=False)
    return trainer


def _signal_mid_step(trainer, monkeypatch, at_step, signum):
    """Deliver `signum` to this process in the middle of step `at_step` (after sampling)."""
    original = trainer.compute_gradients

    def compute_gradients():
        result = original()
        if trainer.step == at_step:
            os.kill(os.getpid(), signum)
        return result

    monkeypatch.setattr(trainer, "compute_gradients", compute_gradients)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["SIGINT", "SIGTERM"])
@pytest.mark.parametrize("at_step", [0, 4])
def test_a_signal_mid_step_stops_at_the_next_boundary_and_resumes_bitwise(
    uninterrupted, tmp_path, monkeypatch, signum, at_step
):
    trainer = Trainer(CONFIG, tmp_path)
    _signal_mid_step(trainer, monkeypatch, at_step, signum)
    with pytest.raises(Interrupted) as stopped:
        trainer.run(progress=False)
    assert stopped.value.step == at_step + 1  # the step under way was finished
    assert stopped.value.signal == signum and stopped.value.exit_status == 128 + signum
    assert stopped.value.checkpoint == tmp_path / "checkpoint.pt"
    resumed = Trainer.resume(tmp_path / "checkpoint.pt")
    assert resumed.step == at_step + 1
    resumed.run(progress=False)
    _assert_same_run(uninterrupted, resumed)
    assert signal.getsignal(signum) is signal.default_int_handler or signum != signal.SIGINT


def test_an_exception_mid_step_leaves_the_last_boundary_checkpoint(
    uninterrupted, tmp_path, monkeypatch
):
    """A crash (or a KeyboardInterrupt without our handler) never saves a half-done step:
    the checkpoint of the last evaluation stands, and resuming from it is exact."""
    trainer = Trainer(CONFIG, tmp_path)
    original = trainer.compute_gradients

    def crashing():
        result = original()  # the random streams have advanced
        if trainer.step == 5:
            raise KeyboardInterrupt
        return result

    monkeypatch.setattr(trainer, "compute_gradients", crashing)
    with pytest.raises(KeyboardInterrupt) as raised:
        trainer.run(progress=False)
    assert not isinstance(raised.value, Interrupted)
    resumed = Trainer.resume(tmp_path / "checkpoint.pt")
    assert resumed.step == 3  # the evaluation before the crash (eval_every=3)
    resumed.run(progress=False)
    _assert_same_run(uninterrupted, resumed)


def test_a_checkpoint_is_written_at_every_evaluation(tmp_path, monkeypatch):
    trainer = Trainer(CONFIG, tmp_path)
    saved = []
    original = trainer.save

    def save(path=None):
        written = original(path)
        saved.append((trainer.step, torch.load(written, weights_only=True)["counters"]["step"]))
        return written

    monkeypatch.setattr(trainer, "save", save)
    trainer.run(progress=False)
    assert saved == [(step, step) for step in (0, 3, 6, 8)]


# -- `gfn-fast train` in a subprocess ---------------------------------------------------------
ARGS = [
    "--env", "hypergrid", "--objective", "renyi", "--learn-pb", "--epsilon", "0.1",
    "--steps", "120", "--batch-size", "32", "--eval-every", "10", "--hidden", "32",
    "--no-progress",
]  # fmt: skip


def _command(*args):
    return [sys.executable, "-m", "gfn_fast", "train", *args]


def _environment():
    return {**os.environ, "PYTHONPATH": str(ROOT)}


def _interrupted_run(command, signum, delay, checkpoint: Path | None):
    """Start `command`; if `checkpoint` is given, wait until the run writes it (training has
    begun); sleep `delay`, then send `signum`. Returns (exit status, stderr)."""
    before = checkpoint.stat().st_mtime_ns if checkpoint is not None and checkpoint.exists() else 0
    process = subprocess.Popen(
        command,
        cwd=ROOT,
        env=_environment(),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while checkpoint is not None and process.poll() is None and _mtime(checkpoint) == before:
        assert time.monotonic() < deadline, "the run never wrote a checkpoint"
        time.sleep(0.005)
    time.sleep(delay)
    process.send_signal(signum)
    _, err = process.communicate(timeout=120)
    return process.returncode, err


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """The uninterrupted run (of the same command, in this process: the run does not depend
    on the process): its final metrics and final parameters."""
    out = tmp_path_factory.mktemp("reference")
    assert main(["train", *ARGS, "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    return metrics, torch.load(out / "checkpoint.pt", weights_only=True)["policy"]


def _mtime(path: Path) -> int:
    return path.stat().st_mtime_ns if path.exists() else 0


def _next_command(out: Path):
    """Resume from the checkpoint, or start over if none was written yet."""
    checkpoint = out / "checkpoint.pt"
    if checkpoint.exists():
        return _command("--resume", str(checkpoint), "--no-progress")
    return _command(*ARGS, "--out", str(out), "--overwrite")


def _chain_of_interrupts(out: Path, plan, seconds: float, rng: random.Random):
    """For each (signal, during_training) of `plan`: run or resume, and send the signal at a
    random moment (of the training loop, or of the whole process); then resume until the run
    completes. Returns the exit statuses of the signalled processes."""
    checkpoint = out / "checkpoint.pt"
    statuses = []
    for signum, during_training in plan:
        delay = rng.uniform(0, seconds)
        watched = checkpoint if during_training else None
        status, err = _interrupted_run(_next_command(out), signum, delay, watched)
        statuses.append(status)
        if _complete(out):  # it finished before the signal came (maybe while exiting)
            break
        if during_training:  # the handler was in place: a clean stop
            assert status == 128 + signum, err
        if status == 128 + signum:
            assert f"stopped by {signal.Signals(signum).name} at step" in err
            assert "Traceback" not in err and checkpoint.exists()
    finished = subprocess.run(
        _next_command(out), cwd=ROOT, env=_environment(), capture_output=True, text=True
    )
    assert finished.returncode == 0, finished.stderr
    return statuses


def _complete(out: Path) -> bool:
    metrics = out / "metrics.json"
    return metrics.exists() and json.loads(metrics.read_text())["step"] == 120


def _assert_equals_reference(out, reference):
    metrics, parameters = reference
    resumed = json.loads((out / "metrics.json").read_text())
    assert _without_seconds(resumed["curve"]) == _without_seconds(metrics["curve"])
    assert resumed["step"] == metrics["step"] == 120
    state = torch.load(out / "checkpoint.pt", weights_only=True)
    for name, want in parameters.items():
        assert torch.equal(state["policy"][name], want), name


def test_gfn_fast_train_signalled_at_random_moments_resumes_bitwise(reference, tmp_path):
    """SIGINT, then SIGTERM, each at a random moment of the training loop."""
    metrics, _ = reference
    rng = random.Random()
    plan = [(signal.SIGINT, True), (signal.SIGTERM, True)]
    # Within the first 70% of the training time: the first signal lands mid-training.
    statuses = _chain_of_interrupts(tmp_path, plan, 0.7 * metrics["seconds"], rng)
    assert statuses[0] == 130
    _assert_equals_reference(tmp_path, reference)


@pytest.mark.slow
@pytest.mark.parametrize("trial", range(4))
def test_gfn_fast_train_signalled_at_any_moment_resumes_bitwise(reference, tmp_path, trial):
    """Signals at any moment, start-up included (then there may be no checkpoint yet)."""
    rng = random.Random(trial)
    signals = [rng.choice([signal.SIGINT, signal.SIGTERM]) for _ in range(5)]
    plan = [(signum, rng.random() < 0.5) for signum in signals]
    _chain_of_interrupts(tmp_path, plan, 3.0, rng)
    _assert_equals_reference(tmp_path, reference)
