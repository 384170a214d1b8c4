"""Backend selection: native when built, a working reference with one warning when not."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

import gfn_fast as gf


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
    with pytest.raises(ValueError, match="use_backend: expected one of"):
        gf.use_backend("tpu")
