"""Backend selection: native when built, a working reference with one warning when not."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest
import torch

import gfn_fast as gf
from gfn_fast import _backend


def run_python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)], capture_output=True, text=True, timeout=120
    )


def test_missing_extension_falls_back_with_one_warning():
    result = run_python(
        """
        import sys, warnings
        sys.modules["gfn_fast._C"] = None  # simulate a build without the extension
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            import torch, gfn_fast as gf
            assert gf.backend() == "reference"
            assert gf.backend() == "reference"
            loss, _ = gf.divergence_loss(
                "renyi", log_pf=torch.zeros(3), log_reward=torch.zeros(3))
        messages = [str(w.message) for w in caught if "reference backend" in str(w.message)]
        assert len(messages) == 1, messages
        assert "gfn_fast._C" in messages[0]
        print(gf.build_info()["native"])
        """
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == "False"


def test_use_backend_forces_and_restores():
    detected = gf.backend()
    gf.use_backend("reference")
    try:
        assert gf.backend() == "reference"
    finally:
        gf.use_backend(None)
    assert gf.backend() == detected


def test_use_backend_rejects_unknown_names():
    with pytest.raises(ValueError, match=r"use_backend: name: expected one of .*'cuda_emulated'"):
        gf.use_backend("tpu")


def test_unknown_environment_backend_is_an_error_naming_the_valid_ones():
    result = subprocess.run(
        [sys.executable, "-c", "import gfn_fast"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GFN_FAST_BACKEND": "tpu"},
    )
    assert result.returncode != 0
    assert "GFN_FAST_BACKEND='tpu'" in result.stderr
    assert "'cpu', 'cuda_emulated', 'reference'" in result.stderr


@pytest.mark.parametrize("name", ["cpu", "cuda_emulated", "reference"])
def test_environment_backend_is_the_default(name):
    result = subprocess.run(
        [sys.executable, "-c", "import gfn_fast as gf; gf.use_backend(None); print(gf.backend())"],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "GFN_FAST_BACKEND": name},
    )
    if name == "cuda_emulated" and not _backend.native_available("cuda_emulated"):
        assert "is not built" in result.stderr
        return
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


@pytest.mark.skipif(
    not _backend.native_available("cuda_emulated"), reason="gfn_fast._C_cuda_emulated not built"
)
def test_cuda_emulated_routes_every_op_through_the_emulated_kernels():
    _backend._emulated.reset_traffic()
    gf.use_backend("cuda_emulated")
    try:
        assert gf.backend() == "cuda_emulated"
        log_pf = torch.randn(6, 5, requires_grad=True)
        lengths = torch.tensor([5, 0, 3, 2, 5, 1])
        loss, _ = gf.divergence_loss(
            "renyi", log_pf=log_pf, log_reward=torch.randn(6), lengths=lengths
        )
        loss.backward()
        logits = torch.randn(6, 5, 4, requires_grad=True)
        actions = torch.randint(0, 4, (6, 5))
        gf.logprob_from_logits(logits, actions, lengths=lengths).sum().backward()
        gf.segment_logprob(log_pf, lengths=lengths).sum().backward()
        gf.ops.batch_coefficients(
            torch.randn(6), None, torch.randn(6), None, None, gf.Objective("forward_kl")
        )
    finally:
        gf.use_backend(None)
    traffic = _backend._emulated.traffic()
    expected = {
        "batch_coefficients",
        "divergence_loss_fused",
        "divergence_loss_backward",
        "logprob_from_logits",
        "logprob_from_logits_backward",
        "segment_sum",
        "segment_sum_backward",
    }
    assert expected <= set(traffic), traffic
    assert all(t["launches"] >= 1 and t["bytes_read"] > 0 for t in traffic.values())
