"""Every public function compiles with torch.compile(fullgraph=True), in every layout, with
its default validate=True (value checks are skipped while compiling), and gives eager's
values and gradients."""

from __future__ import annotations

import pytest
import torch

import gfn_fast as gf
from tests.helpers import backend_fixture

BACKENDS = ["reference", "cpu"]


backend = backend_fixture(BACKENDS)


def layouts(steps_extra=()):
    """(name, values shape, kwargs) of the padded, full-row and packed layouts."""
    lengths = torch.tensor([3, 0, 5, 2])
    offsets = torch.tensor([1, 4, 4, 9, 11], dtype=torch.int32)
    return [
        ("padded", (4, 5, *steps_extra), {"lengths": lengths}),
        ("full", (4, 5, *steps_extra), {}),
        ("packed", (12, *steps_extra), {"offsets": offsets}),
    ]


def compare(fn, *inputs):
    """fn compiled (fullgraph) against eager: equal outputs and input gradients."""
    torch._dynamo.reset()  # the cases share code objects: no recompile limit across them
    compiled = torch.compile(fn, fullgraph=True, backend="aot_eager")
    eager_inputs = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    compiled_inputs = [x.detach().requires_grad_(x.is_floating_point()) for x in inputs]
    expected = fn(*eager_inputs)
    got = compiled(*compiled_inputs)
    torch.testing.assert_close(got, expected)
    expected.sum().backward()
    got.sum().backward()
    for a, b in zip(compiled_inputs, eager_inputs, strict=True):
        if b.grad is not None:
            torch.testing.assert_close(a.grad, b.grad)


@pytest.mark.parametrize("layout", ["padded", "full", "packed"])
def test_segment_logprob(backend, layout):
    name, shape, kwargs = next(c for c in layouts() if c[0] == layout)
    values = torch.randn(shape)
    compare(lambda v: gf.segment_logprob(v, **kwargs), values)


@pytest.mark.parametrize("layout", ["padded", "full", "packed"])
@pytest.mark.parametrize("masked", [False, True])
def test_logprob_from_logits(backend, layout, masked):
    name, shape, kwargs = next(c for c in layouts((6,)) if c[0] == layout)
    logits = torch.randn(shape)
    actions = torch.randint(0, 6, shape[:-1])
    mask = None
    if masked:
        mask = torch.rand(shape) > 0.4
        mask.scatter_(-1, actions.unsqueeze(-1), True)
    compare(lambda x: gf.logprob_from_logits(x, actions, action_mask=mask, **kwargs), logits)


@pytest.mark.parametrize("layout", ["per-trajectory", "padded", "full", "packed"])
def test_divergence_loss_and_module(backend, layout):
    if layout == "per-trajectory":
        shape, kwargs = (4,), {}
    else:
        _, shape, kwargs = next(c for c in layouts() if c[0] == layout)
    log_pf = -torch.rand(shape)
    log_pb = -torch.rand(shape)
    log_reward = torch.randn(4)

    def loss(pf, pb):
        return gf.divergence_loss("renyi", log_pf=pf, log_pb=pb, log_reward=log_reward, **kwargs)[0]

    compare(loss, log_pf, log_pb)
    module = gf.nn.TsallisLoss(alpha=0.3, learn_log_z=True)
    compare(lambda pf: module(pf, None, log_reward, **kwargs)[0], log_pf)
