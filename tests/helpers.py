"""Context managers shared by the tests: one intra-op thread, the reference backend."""

from __future__ import annotations

import contextlib

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
