"""CPU benchmarks: native kernels vs the eager reference vs torch.compile(reference).

Run as a script to time everything side by side on 2 threads and write
benchmarks/results/cpu.json (the results shape of the README's "Benchmarks"):

    python benchmarks/bench_cpu.py [--quick] [--out benchmarks/results/cpu.json]

or through pytest-benchmark (same cases, pytest-benchmark's own statistics):

    python -m pytest benchmarks/bench_cpu.py --benchmark-only

Each case is forward + backward; its implementations are timed in alternating rounds, so
that the drift of a shared machine falls on all of them alike. GB/s counts the bytes the op
must move (inputs read once, gradients written once) and is set against a clone() of the
same number of bytes, timed in the same run. Peak extra memory (logprob case) is the
high-water mark of the CPU allocations made during forward + backward, from the torch
profiler's memory events at op granularity, minus the [B, T, A] gradient that every
implementation returns (so it counts only the intermediates: saved softmax / log-softmax
tensors, masks, per-step buffers).

The fused-loss cases also time "memory_floor": the same autograd step with no batch math at
all, only torch's own row sums of both inputs forward and a fill of both gradients backward.
Where memory dominates (4096x256), no implementation that reads the inputs and writes the
gradients gets much below it, so <impl> / memory_floor bounds the speed-up over <impl> that
a kernel can show there. At small shapes it is mostly the overhead of a Python
autograd.Function, which a C++ one undercuts: no bound there.

The logprob case also times "exp_floor": torch.exp over its valid logits twice, the exps
that a forward (normalise) and a backward (recompute the softmax) cannot avoid, at
PyTorch's own vectorised exp. The kernel is bound by them, not by memory, wherever
exp_floor takes longer than the clone.

ratios: "<bench>/native_vs_<impl>" = median time of <impl> / median time of native (how many
times faster native is); "<bench>/floor_bound_vs_<impl>" = median time of <impl> / median
time of memory_floor; "<bench>/native_vs_copy_floor" = median time of native / that of the
clone moving the same bytes (how many times its memory-bandwidth floor native takes);
"<bench>/native_vs_exp_floor" and "<bench>/exp_floor_vs_copy_floor" likewise;
"<bench>/peak_mem_native_vs_eager" = native peak / eager peak.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import pytest
import torch

import gfn_fast as gf

THREADS = 2
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclass
class Case:
    bench: str
    shape: dict
    dtype: str
    bytes_moved: int
    make: Callable[[str], Callable[[], None]]  # impl -> a closure running fwd + bwd
    impls: tuple[str, ...] = ("native", "eager", "compiled")
    memory: bool = False
    extra: dict = field(default_factory=dict)


def _with_backend(impl: str, fn: Callable[[], None]) -> Callable[[], None]:
    """Runs fn under the backend of `impl` (native: auto-detected; else the reference)."""

    def run():
        gf.use_backend(None if impl == "native" else "reference")
        try:
            fn()
        finally:
            gf.use_backend(None)

    return run


def _fused_case(batch: int, steps: int) -> Case:
    gen = torch.Generator().manual_seed(0)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=gen)
    log_pf = (-torch.rand(batch, steps, generator=gen)).requires_grad_(True)
    log_pb = (-torch.rand(batch, steps, generator=gen)).requires_grad_(True)
    log_reward = torch.randn(batch, generator=gen)

    def loss_fn(pf, pb):
        loss, _ = gf.divergence_loss(
            "renyi",
            log_pf=pf,
            log_pb=pb,
            log_reward=log_reward,
            lengths=lengths,
            alpha=0.5,
            control_variate="loo",
            validate=False,
        )
        return loss

    def make(impl: str):
        fn = loss_fn
        if impl == "compiled":
            fn = torch.compile(loss_fn, fullgraph=True, dynamic=False)
        if impl == "memory_floor":
            fn = _MemoryFloor.apply

        def step():
            log_pf.grad = log_pb.grad = None
            fn(log_pf, log_pb).backward()

        return _with_backend(impl, step)

    element_bytes = batch * steps * 4
    return Case(
        bench=f"divergence_loss_renyi_loo_fwd_bwd_{batch}x{steps}",
        shape={"B": batch, "T": steps},
        dtype="float32",
        bytes_moved=4 * element_bytes,  # read log_pf, log_pb; write both gradients
        make=make,
        # The floor bounds kernels only where memory dominates (module docstring).
        impls=("native", "eager", "compiled")
        + (("memory_floor",) if batch * steps >= 1 << 20 else ()),
    )


class _MemoryFloor(torch.autograd.Function):
    """Reads both per-step inputs and writes both gradients, with no batch math."""

    @staticmethod
    def forward(ctx, log_pf, log_pb):
        ctx.shape = log_pf.shape
        return (log_pf.sum(1) + log_pb.sum(1)).sum()

    @staticmethod
    def backward(ctx, grad):
        return torch.empty(ctx.shape).fill_(1.0), torch.empty(ctx.shape).fill_(-1.0)


def _logprob_case(batch: int, steps: int, actions: int) -> Case:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(batch, steps, actions, generator=gen).requires_grad_(True)
    chosen = torch.randint(0, actions, (batch, steps), generator=gen)
    mask = torch.rand(batch, steps, actions, generator=gen) < 0.7
    mask.scatter_(-1, chosen.unsqueeze(-1), True)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=gen)

    def logprob_fn(x):
        # The op-level entry (no host-syncing argument checks) for every implementation.
        return gf.ops.logprob_from_logits(x, chosen, mask, lengths, None)

    def make(impl: str):
        if impl == "exp_floor":
            return _exp_floor(logits.detach()[torch.arange(steps) < lengths[:, None]])
        fn = logprob_fn
        if impl == "compiled":
            # The reference checks action ranges on the host (a graph break), so no fullgraph.
            fn = torch.compile(logprob_fn, dynamic=False)

        def step():
            logits.grad = None
            fn(logits).sum().backward()

        return _with_backend(impl, step)

    n_logits = batch * steps * actions
    # forward reads logits + mask; backward reads them again and writes the gradient.
    return Case(
        bench=f"logprob_from_logits_fwd_bwd_{batch}x{steps}x{actions}",
        shape={"B": batch, "T": steps, "A": actions},
        dtype="float32",
        bytes_moved=2 * (4 * n_logits + n_logits) + 4 * n_logits,
        make=make,
        impls=("native", "eager", "compiled", "exp_floor"),
        memory=True,
        extra={"grad_mb": 4 * n_logits / 2**20},
    )


def _exp_floor(rows: torch.Tensor) -> Callable[[], None]:
    """The exps of a log-softmax forward and backward, and nothing else: torch.exp over the
    [N, A] logits of the valid steps, twice (one exp per logit to normalise, one to
    recompute the softmax for the gradient; saving the softmax instead costs a [N, A]
    buffer written and read)."""
    out = torch.empty_like(rows)

    def step():
        torch.exp(rows, out=out)
        torch.exp(rows, out=out)

    return step


def cases(quick: bool = False) -> list[Case]:
    if quick:
        return [_fused_case(512, 64), _fused_case(128, 16), _logprob_case(128, 16, 64)]
    return [_fused_case(4096, 256), _fused_case(128, 16), _logprob_case(1024, 64, 64)]


def _samples(fn: Callable[[], None], min_runs: int, budget_s: float) -> list[float]:
    times = []
    start = time.perf_counter()
    while len(times) < min_runs or (time.perf_counter() - start < budget_s and len(times) < 500):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def _median_ms(fn: Callable[[], None], min_runs: int = 20, budget_s: float = 2.0) -> float:
    for _ in range(3):
        fn()
    return 1e3 * statistics.median(_samples(fn, min_runs, budget_s))


def _interleaved_median_ms(fns: dict[str, Callable[[], None]], rounds: int = 8) -> dict:
    """Median ms of each fn, sampled in alternating rounds so that the machine's drift (this
    shared machine's speed moves by 2x within minutes) falls on every implementation alike."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    samples = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            samples[name] += _samples(fn, min_runs=5, budget_s=0.25)
    return {name: 1e3 * statistics.median(times) for name, times in samples.items()}


def _peak_extra_mb(fn: Callable[[], None]) -> float:
    """High-water mark (MB) of CPU allocations made while fn runs."""
    fn()
    with torch.profiler.profile(
        activities=[torch.profiler.ProfilerActivity.CPU], profile_memory=True
    ) as prof:
        fn()
    # Each allocation / free is attributed to the innermost op (self memory); a running sum
    # in time order gives the high-water mark at op granularity.
    events = [e for e in prof.events() if e.self_cpu_memory_usage]
    events.sort(key=lambda e: e.time_range.start)
    current = peak = 0
    for event in events:
        current += event.self_cpu_memory_usage
        peak = max(peak, current)
    return peak / 2**20


def _commit() -> str:
    try:
        out = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def _machine() -> str:
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} CPUs"


def run(quick: bool = False) -> dict:
    torch.set_num_threads(THREADS)
    rows, ratios = [], {}
    for case in cases(quick):
        fns = {impl: case.make(impl) for impl in case.impls}
        # The copy floor: a clone() reading and writing the bytes the op must move, timed in
        # the same alternating rounds.
        src = torch.empty(max(1, case.bytes_moved // 8), dtype=torch.float32).uniform_()
        fns["clone"] = src.clone
        times = _interleaved_median_ms(fns)
        mems = {}
        for impl in case.impls:
            fn = fns[impl]
            # Beyond the inputs and the gradient every implementation must return.
            grad_mb = case.extra.get("grad_mb", 0.0)
            mems[impl] = _peak_extra_mb(fn) - grad_mb if case.memory else None
            rows.append(
                {
                    "bench": case.bench,
                    "shape": case.shape,
                    "dtype": case.dtype,
                    "impl": impl,
                    "median_ms": round(times[impl], 4),
                    "gbps": round(case.bytes_moved / (times[impl] * 1e-3) / 1e9, 2),
                    "peak_mem_mb": None if mems[impl] is None else round(mems[impl], 2),
                }
            )
            print(f"{case.bench:48s} {impl:12s} {times[impl]:9.3f} ms", file=sys.stderr)
        clone_ms = times["clone"]
        rows.append(
            {
                "bench": case.bench,
                "shape": case.shape,
                "dtype": case.dtype,
                "impl": "clone",
                "median_ms": round(clone_ms, 4),
                "gbps": round(2 * src.numel() * 4 / (clone_ms * 1e-3) / 1e9, 2),
                "peak_mem_mb": None,
            }
        )
        for impl in case.impls:
            if impl not in ("native", "memory_floor", "exp_floor"):
                ratios[f"{case.bench}/native_vs_{impl}"] = round(times[impl] / times["native"], 2)
        if case.bytes_moved >= 1 << 24:  # below, call overhead and not memory bounds a kernel
            ratios[f"{case.bench}/native_vs_copy_floor"] = round(times["native"] / clone_ms, 2)
        if "exp_floor" in times:
            ratios[f"{case.bench}/native_vs_exp_floor"] = round(
                times["native"] / times["exp_floor"], 2
            )
            ratios[f"{case.bench}/exp_floor_vs_copy_floor"] = round(
                times["exp_floor"] / clone_ms, 2
            )
        if "memory_floor" in times:
            for impl in ("eager", "compiled"):
                ratios[f"{case.bench}/floor_bound_vs_{impl}"] = round(
                    times[impl] / times["memory_floor"], 2
                )
        if case.memory:
            ratios[f"{case.bench}/peak_mem_native_vs_eager"] = round(
                mems["native"] / max(mems["eager"], 1e-9), 3
            )
    return {
        "machine": _machine(),
        "torch": torch.__version__,
        "commit": _commit(),
        "threads": THREADS,
        "rows": rows,
        "ratios": ratios,
    }


# ----------------------------------------------------------------------------------------
# pytest-benchmark entry points
# ----------------------------------------------------------------------------------------

_CASES = {case.bench: case for case in cases()}


@pytest.mark.parametrize("impl", ["native", "eager", "compiled", "memory_floor", "exp_floor"])
@pytest.mark.parametrize("bench", sorted(_CASES))
def test_cpu_benchmark(benchmark, bench, impl):
    torch.set_num_threads(THREADS)
    case = _CASES[bench]
    if impl not in case.impls:
        pytest.skip(f"{bench} has no {impl} variant")
    fn = case.make(impl)
    fn()  # compile / warm up outside the timing
    benchmark.extra_info.update(
        {"shape": case.shape, "dtype": case.dtype, "bytes_moved": case.bytes_moved}
    )
    benchmark(fn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small shapes (smoke test)")
    parser.add_argument("--out", default=os.path.join(ROOT, "benchmarks", "results", "cpu.json"))
    args = parser.parse_args()
    if gf.backend() == "reference":
        raise SystemExit("native CPU kernels are not built: nothing to compare")
    result = run(args.quick)
    text = json.dumps(result, indent=2) + "\n"
    if args.quick:
        print(text)
        return
    with open(args.out, "w") as f:
        f.write(text)
    print(text)


if __name__ == "__main__":
    main()
