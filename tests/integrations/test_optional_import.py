"""torchgfn is optional: gfn_fast imports without it, the adapter says how to install it."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


def test_import_gfn_fast_does_not_import_torchgfn():
    code = "import sys, gfn_fast, gfn_fast.integrations; assert 'gfn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.mark.parametrize("module", ["torchgfn", "torchgfn_exact"])
def test_adapter_without_torchgfn_names_the_extra(monkeypatch, module):
    name = f"gfn_fast.integrations.{module}"
    monkeypatch.delitem(sys.modules, name, raising=False)
    for loaded in [m for m in sys.modules if m == "gfn" or m.startswith("gfn.")]:
        monkeypatch.delitem(sys.modules, loaded)
    monkeypatch.setitem(sys.modules, "gfn", None)  # makes `import gfn...` fail
    with pytest.raises(ImportError, match=r"gfn_fast\[torchgfn\]"):
        importlib.import_module(name)
