"""Test ids: torch dtypes by name (test_parity[cpu-float32-...]), so -k can select them."""

from __future__ import annotations

import torch


def pytest_make_parametrize_id(config, val, argname):
    if isinstance(val, torch.dtype):
        return str(val).removeprefix("torch.")
    return None
