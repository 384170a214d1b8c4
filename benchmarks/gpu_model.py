"""A model of the GPU benchmark on an H200, built from counts, for when no GPU is at hand.

    python benchmarks/gpu_model.py [--out benchmarks/results/h200_model.json] [--dry-run]

For each case of benchmarks/bench_gpu.py (forward + backward):
- "native": the CUDA kernels, run by the cuda_emulated backend on the CPU. The emulator counts
  the distinct 32-byte sectors of global memory each launch reads and writes (a GPU's DRAM
  traffic when its caches keep what one launch reads, and a warp's loads of one address are
  one transaction), and the launches.
- "eager": the pure-PyTorch reference. Each aten operation that is not a view is taken as one
  kernel that reads each of its tensor inputs and writes each of its outputs once.
- "compulsory" (bench_gpu.py's byte count): each input read once where a segment holds it,
  each output written once (logprob: the logits read by the forward and again by the
  backward, which recomputes the softmax).
Two modelled times, both models and not measurements (benchmarks/gpu/run.sh measures):
- "memory": bytes / the H200's measured device-to-device copy bandwidth (4.3 TB/s, read +
  write, from the device notes), a floor that ignores launch latency;
- "memory + launches": that plus an assumed 2 us per kernel launch (the gap between
  back-to-back kernels on a stream, a typical figure, not measured here; PyTorch's eager
  dispatch costs more per operation on the CPU side).
Results go to benchmarks/results/h200_model.json in the results shape.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves

import gfn_fast as gf
from gfn_fast import _backend

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_gpu import gpu_cases  # noqa: E402

H200_COPY_BYTES_PER_S = 4.3e12
ASSUMED_LAUNCH_S = 2e-6
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class EagerTraffic(TorchDispatchMode):
    """Counts the aten operations that are not views, and the bytes of their tensors."""

    def __init__(self):
        super().__init__()
        self.launches = 0
        self.bytes = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if not func.is_view:
            tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
            self.launches += 1
            self.bytes += sum(t.numel() * t.element_size() for t in tensors)
        return out


def native_traffic(step) -> dict:
    _backend._emulated.reset_traffic()
    step()
    by_op = _backend._emulated.traffic()
    totals = {key: sum(t[key] for t in by_op.values()) for key in next(iter(by_op.values()))}
    return {**totals, "by_op": by_op}


def eager_traffic(step) -> dict:
    with EagerTraffic() as counter:
        step()
    return {"launches": counter.launches, "bytes": counter.bytes}


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _ms(nbytes: int, launches: int = 0) -> float:
    return (nbytes / H200_COPY_BYTES_PER_S + launches * ASSUMED_LAUNCH_S) * 1e3


def model(dry: bool, log) -> dict:
    rows, ratios, details = [], {}, {}
    for case in gpu_cases(dry):
        fn, make_step, compulsory = case.make("cpu")
        gf.use_backend("cuda_emulated")
        try:
            native = native_traffic(make_step(fn))
        finally:
            gf.use_backend(None)
        gf.use_backend("reference")
        try:
            eager = eager_traffic(make_step(fn))
        finally:
            gf.use_backend(None)
        native_bytes = native["sector_bytes_read"] + native["sector_bytes_written"]
        for impl, nbytes, launches in (
            ("native", native_bytes, native["launches"]),
            ("eager", eager["bytes"], eager["launches"]),
        ):
            rows.append(
                {
                    "bench": case.name,
                    "shape": case.shape,
                    "dtype": case.dtype,
                    "impl": impl,
                    "median_ms": round(_ms(nbytes), 5),
                    "gbps": H200_COPY_BYTES_PER_S / 1e9,
                    "peak_mem_mb": None,
                    "bytes": nbytes,
                    "launches": launches,
                    "model": True,
                    "with_launches_ms": round(_ms(nbytes, launches), 5),
                }
            )
        ratios[f"{case.name}/native_bytes_vs_compulsory"] = round(native_bytes / compulsory, 4)
        ratios[f"{case.name}/memory_native_vs_eager"] = round(
            _ms(eager["bytes"]) / _ms(native_bytes), 3
        )
        ratios[f"{case.name}/with_launches_native_vs_eager"] = round(
            _ms(eager["bytes"], eager["launches"]) / _ms(native_bytes, native["launches"]), 3
        )
        details[case.name] = {"compulsory_bytes": compulsory, "native": native, "eager": eager}
        log(
            f"{case.name}: native {native_bytes / 1e6:.1f} MB in {native['launches']} launches "
            f"({native_bytes / compulsory:.3f}x compulsory), eager {eager['bytes'] / 1e6:.1f} MB "
            f"in {eager['launches']} launches: modelled {_ms(native_bytes):.4f} ms vs "
            f"{_ms(eager['bytes']):.4f} ms (memory), "
            f"{_ms(native_bytes, native['launches']):.4f} vs "
            f"{_ms(eager['bytes'], eager['launches']):.4f} ms (+ launches)"
        )
    return {
        "machine": "H200 model: bytes from the cuda_emulated counters at 4.3 TB/s, plus an "
        "assumed 2 us per launch (not measured)",
        "torch": torch.__version__,
        "commit": _commit(),
        "threads": torch.get_num_threads(),
        "model": True,
        "host": f"{platform.node()} ({platform.machine()})",
        "copy_bytes_per_s": H200_COPY_BYTES_PER_S,
        "assumed_launch_s": ASSUMED_LAUNCH_S,
        "rows": rows,
        "ratios": ratios,
        "details": details,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks/results/h200_model.json"))
    parser.add_argument("--dry-run", action="store_true", help="the benchmark's tiny shapes")
    args = parser.parse_args(argv)
    if not _backend.native_available("cuda_emulated"):
        print("gpu_model: needs the cuda_emulated backend (GFN_FAST_CUDA_EMULATION=1 build)")
        return 2
    result = model(args.dry_run, lambda msg: print(msg, flush=True))
    with open(args.out, "w") as f:
        json.dump(result, f, indent=2)
        f.write("\n")
    print(f"gpu_model: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
