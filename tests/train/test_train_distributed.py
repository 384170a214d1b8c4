"""`gfn-fast train --nproc N` / `launch`: N gloo processes train exactly the run that one
process gives on the same shards."""

from __future__ import annotations

import random
import signal
import threading
import time

import pytest
import torch
import torch.distributed as dist

from gfn_fast.train.trainer import (
    Interrupted,
    StopOnSignals,
    TrainConfig,
    Trainer,
    launch,
    resolve,
    shard_sizes,
)

# 11 trajectories: uneven shards of 6 and 5.
TINY = {"steps": 4, "batch_size": 11, "eval_every": 2, "hidden": 16, "layers": 1, "nproc": 2}


def _comparable(curve):
    return [{k: v for k, v in record.items() if k != "seconds"} for record in curve]


@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_two_processes_equal_one_process_on_the_same_shards(tmp_path):
    config = TrainConfig(objective="renyi", learn_pb=True, **TINY)
    final = launch(config, tmp_path, progress=False)
    single = Trainer(config)  # samples both shards itself
    want = single.run(progress=False)
    assert final["step"] == want["step"] == 4 and final["trajectories"] == want["trajectories"]
    state = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    # One all-reduce of the gradients against one backward pass: equal up to rounding.
    for name, want in single.policy.state_dict().items():
        torch.testing.assert_close(state["policy"][name], want, rtol=1e-5, atol=1e-6)
    assert state["counters"]["trajectories"] == 4 * 11
    assert len(state["generators"]) == 2
    curve, want_curve = _comparable(state["curve"]), _comparable(single.curve)
    assert [r["modes"] for r in curve] == [r["modes"] for r in want_curve]
    for record, want in zip(curve, want_curve, strict=True):
        assert record.keys() == want.keys()
        for key in ("exact_l1", "loss", "ess"):
            if want[key] is None:  # e.g. no loss before the first step
                assert record[key] is None
            else:
                assert record[key] == pytest.approx(want[key], rel=1e-5, abs=1e-6)


def test_shards_split_the_batch_and_keep_one_process_runs_unchanged():
    assert shard_sizes(11, 2) == [6, 5] and shard_sizes(128, 3) == [43, 43, 42]
    config = TrainConfig(steps=1, batch_size=8, eval_every=1)
    one = Trainer(config)
    assert one.sizes == [8] and one.generators[0].initial_seed() == 0
    with pytest.raises(ValueError, match="batch_size"):
        resolve(TrainConfig(batch_size=2, nproc=3))
    with pytest.raises(ValueError, match="nproc"):
        resolve(TrainConfig(nproc=0))
    with pytest.raises(ValueError, match="config, resume"):
        launch()


@pytest.mark.slow
@pytest.mark.skipif(not dist.is_available(), reason="torch.distributed is not available")
def test_a_launched_run_stopped_by_sigterm_resumes_bitwise(tmp_path):
    """SIGTERM to the launching process reaches every worker; they stop at the same step,
    and the resumed run equals the uninterrupted one (both in 2 processes) bit for bit."""
    config = TrainConfig(objective="renyi", **{**TINY, "steps": 120, "eval_every": 20})
    launch(config, tmp_path / "whole", progress=False)
    stop = StopOnSignals()

    def signal_once_training():  # as the handler of a SIGTERM would, from another thread
        while not (tmp_path / "cut" / "checkpoint.pt").exists():
            time.sleep(0.01)
        time.sleep(random.uniform(0.0, 0.3))
        stop.request(signal.SIGTERM)

    threading.Thread(target=signal_once_training, daemon=True).start()
    with pytest.raises(Interrupted) as stopped:
        launch(config, tmp_path / "cut", progress=False, stop=stop)
    assert stopped.value.signal == signal.SIGTERM and 0 <= stopped.value.step < 120
    launch(resume=tmp_path / "cut" / "checkpoint.pt", progress=False)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)
    cut = torch.load(tmp_path / "cut" / "checkpoint.pt", weights_only=True)
    for name, want in whole["policy"].items():
        assert torch.equal(cut["policy"][name], want), name
    assert _comparable(cut["curve"]) == _comparable(whole["curve"])
