"""`TrainConfig(compile=True)` / `gfn-fast train --compile`: the compiled policy and loss give
the eager gradients."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from gfn_fast.train.cli import build_parser
from gfn_fast.train.trainer import TrainConfig, Trainer, resolve

TINY = {"steps": 2, "batch_size": 8, "eval_every": 1, "hidden": 8, "layers": 1}


@pytest.mark.parametrize("backend", ["aot_eager", pytest.param("inductor", marks=pytest.mark.slow)])
@pytest.mark.parametrize(
    "overrides",
    [
        {"objective": "renyi", "learn_pb": True},
        {"objective": "tb", "layout": "packed", "epsilon": 0.1},
    ],
    ids=["renyi-learned-pb", "tb-packed-offpolicy"],
)
def test_compiled_gradients_equal_eager_gradients(overrides, backend):
    config = TrainConfig(**TINY, **overrides)
    eager = Trainer(config)
    compiled = Trainer(replace(config, compile=True, compile_backend=backend))
    assert compiled.policy.state_dict().keys() == eager.policy.state_dict().keys()
    for _ in range(2):  # two batches of different lengths: the compiled code is reused
        want_stats, want = eager.compute_gradients()
        stats, batch = compiled.compute_gradients()
        assert torch.equal(batch.terminal, want.terminal)  # the same batch was sampled
        torch.testing.assert_close(stats["value"], want_stats["value"])
        for p, q in zip(compiled._parameters(), eager._parameters(), strict=True):
            torch.testing.assert_close(p.grad, q.grad)
    final = compiled.run(progress=False)
    assert final["step"] == TINY["steps"] and final["exact_l1"] > 0


def test_compile_flag_and_backend_are_checked():
    args = build_parser().parse_args(["train", "--compile", "--compile-backend", "aot_eager"])
    assert args.compile and args.compile_backend == "aot_eager"
    assert resolve(TrainConfig(compile=True)).compile_backend == "inductor"
    with pytest.raises(ValueError, match="compile_backend"):
        resolve(TrainConfig(compile=True, compile_backend="nope"))
