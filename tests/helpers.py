"""Shared by the tests: one intra-op thread, the reference backend, a backend fixture."""

from __future__ import annotations

import contextlib

import pytest
import torch

import gfn_fast as gf


@contextlib.contextmanager
def one_thread():
    """Run the block on one intra-op thread (for thread-count independence checks)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


@contextlib.contextmanager
def reference_backend():
    """Route gfn_fast's ops to the pure-PyTorch reference inside the block."""
    previous = gf.backend()
    gf.use_backend("reference")
    try:
        yield
    finally:
        gf.use_backend(previous)


def backend_fixture(backends):
    """A pytest fixture running each test under every backend of `backends` in turn."""

    @pytest.fixture(params=backends)
    def backend(request):
        gf.use_backend(request.param)
        try:
            yield request.param
        finally:
            gf.use_backend(None)

    return backend
