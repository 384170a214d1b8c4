"""GPU benchmark of the gfn_fast CUDA kernels against the reference, eager and compiled.

    python benchmarks/bench_gpu.py --out results.json          # on a GPU (benchmarks/gpu/run.sh)
    python benchmarks/bench_gpu.py --dry-run --out /tmp/x.json # tiny shapes on CPU: a smoke test

Benchmarks (forward + backward each; CUDA events, warm-up, median of >= 20 runs):
- fused divergence loss, renyi alpha=0.5 "loo", per-step fp32 log p_F and log p_B, padded:
  B=65536, T=256 and B=256, T=32;
- logprob_from_logits, B=4096, T=128, A=512, bf16 logits.
Each runs as "native" (the CUDA kernels), "eager" (the pure-PyTorch reference) and
"compiled" (torch.compile of the reference). Achieved GB/s are compared with a measured
device-to-device copy of the same number of bytes; peak extra memory is recorded; kernel
launches of the native runs are counted with torch.profiler.

The JSON follows the results shape of the README's "Benchmarks", plus "cuda", "gpu",
"launches" and "targets" (issue 4's performance targets, each with its measured value and
whether it is met).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass

import torch

import gfn_fast as gf
from gfn_fast import ops

GB = 1e9


def _commit() -> str:
    if os.environ.get("GFN_FAST_COMMIT"):
        return os.environ["GFN_FAST_COMMIT"]
    try:
        root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, check=True
        )
        return out.stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


class Timer:
    """Median wall time of fn (ms): CUDA events on a GPU, perf_counter on CPU."""

    def __init__(self, device: str, reps: int, warmup: int):
        self.device, self.reps, self.warmup = device, reps, warmup

    def sync(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    def __call__(self, fn: Callable[[], object]) -> float:
        for _ in range(self.warmup):
            fn()
        self.sync()
        times = []
        for _ in range(self.reps):
            if self.device == "cuda":
                start = torch.cuda.Event(enable_timing=True)
                end = torch.cuda.Event(enable_timing=True)
                start.record()
                fn()
                end.record()
                end.synchronize()
                times.append(start.elapsed_time(end))
            else:
                t0 = time.perf_counter()
                fn()
                times.append((time.perf_counter() - t0) * 1e3)
        return statistics.median(times)

    def peak_extra_mb(self, fn: Callable[[], object]) -> float | None:
        """Peak memory allocated by one call above what was allocated before it (MB)."""
        if self.device != "cuda":
            return None
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        out = fn()
        torch.cuda.synchronize()
        peak = torch.cuda.max_memory_allocated() - base
        del out
        return peak / 1e6


def copy_gbps(timer: Timer, nbytes: int, device: str) -> float:
    """Achieved GB/s (bytes read + written) of a copy moving `nbytes` in total."""
    n = max(nbytes // 2 // 4, 1)
    src = torch.empty(n, dtype=torch.float32, device=device).normal_()
    dst = torch.empty_like(src)
    ms = timer(lambda: dst.copy_(src))
    return 2 * n * 4 / (ms / 1e3) / GB


def count_kernels(fn: Callable[[], object], device: str) -> tuple[int, list[str]] | None:
    if device != "cuda":
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    names = [
        e.name
        for e in prof.events()
        if e.device_type == torch.autograd.DeviceType.CUDA
        and "memcpy" not in e.name.lower()
        and "memset" not in e.name.lower()
    ]
    return len(names), names


class Backend:
    """Runs a function under the native or the reference backend."""

    def __init__(self, name: str):
        self.name = name

    def __enter__(self):
        gf.use_backend("reference" if self.name == "reference" else None)

    def __exit__(self, *exc):
        gf.use_backend(None)


def loss_case(batch: int, steps: int, device: str, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    log_pf = -torch.rand(batch, steps, generator=g, device=device)
    log_pb = -torch.rand(batch, steps, generator=g, device=device)
    log_reward = torch.randn(batch, generator=g, device=device)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=g, device=device)
    lengths[0] = steps
    pf = log_pf.requires_grad_()
    pb = log_pb.requires_grad_()
    seed_grad = torch.ones((), device=device)

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

    def step(fn):
        def run():
            loss = fn(pf, pb)
            return torch.autograd.grad(loss, (pf, pb), seed_grad)

        return run

    # Compulsory bytes: both per-step inputs read inside the segments, both [B, T] gradients
    # written (zero on the padding), lengths and rewards read once.
    inside = int(lengths.sum())
    nbytes = 4 * 2 * inside + 4 * 2 * batch * steps + (8 + 4) * batch
    return loss_fn, step, nbytes


def logprob_case(batch: int, steps: int, num_actions: int, device: str, dtype, seed: int = 0):
    g = torch.Generator(device=device).manual_seed(seed)
    logits = torch.randn(batch, steps, num_actions, generator=g, device=device).to(dtype)
    actions = torch.randint(0, num_actions, (batch, steps), generator=g, device=device)
    lengths = torch.randint(steps // 2, steps + 1, (batch,), generator=g, device=device)
    leaf = logits.requires_grad_()
    grad_out = torch.ones(batch, device=device)

    def logprob_fn(x):
        return ops.logprob_from_logits(x, actions, None, lengths, None)

    def step(fn):
        def run():
            return torch.autograd.grad(fn(leaf), leaf, grad_out)

        return run

    # Compulsory bytes: the forward reads the logits of every step inside a segment and its
    # action, the backward reads them again (it recomputes the softmax instead of storing it)
    # and writes the whole [B, T, A] gradient; lengths are read once.
    inside = int(lengths.sum())
    row = num_actions * logits.element_size()
    nbytes = 2 * inside * (row + 8) + batch * steps * row + 8 * batch
    return logprob_fn, step, nbytes


@dataclass(frozen=True)
class GpuCase:
    """One benchmark: name, shape and dtype for the results, and make(device) -> (fn, step,
    bytes the op must move)."""

    name: str
    shape: dict
    dtype: str
    make: Callable[[str], tuple]


def gpu_cases(dry: bool) -> list[GpuCase]:
    """The benchmark's shapes (tiny ones for a dry run); benchmarks/gpu_model.py models them."""
    loss_shapes = [(8, 16), (4, 8)] if dry else [(65536, 256), (256, 32)]
    batch, steps, num_actions = (8, 32, 16) if dry else (4096, 128, 512)
    cases = [
        GpuCase(
            f"fused_loss_renyi_loo_B{b}_T{t}",
            {"B": b, "T": t, "alpha": 0.5, "control_variate": "loo"},
            "float32",
            functools.partial(loss_case, b, t),
        )
        for b, t in loss_shapes
    ]
    cases.append(
        GpuCase(
            f"logprob_from_logits_B{batch}_T{steps}_A{num_actions}",
            {"B": batch, "T": steps, "A": num_actions},
            "bfloat16",
            lambda device: logprob_case(batch, steps, num_actions, device, torch.bfloat16),
        )
    )
    return cases


def run_bench(
    name: str,
    shape: dict,
    dtype: str,
    fn,
    step,
    nbytes: int,
    timer: Timer,
    device: str,
    impls: list[str],
    rows: list,
    launches: dict,
    copy: float,
    log,
) -> dict[str, dict]:
    results = {}
    for impl in impls:
        backend = "native" if impl == "native" else "reference"
        with Backend(backend):
            body = torch.compile(fn) if impl == "compiled" else fn
            run = step(body)
            t0 = time.perf_counter()
            ms = timer(run)
            peak = timer.peak_extra_mb(run)
            if impl == "native":
                counted = count_kernels(run, device)
                if counted is not None:
                    launches[name] = {"kernels": counted[0], "names": counted[1]}
        gbps = nbytes / (ms / 1e3) / GB
        row = {
            "bench": name,
            "shape": shape,
            "dtype": dtype,
            "impl": impl,
            "median_ms": round(ms, 5),
            "gbps": round(gbps, 2),
            "peak_mem_mb": None if peak is None else round(peak, 2),
        }
        rows.append(row)
        results[impl] = row
        log(
            f"{name:<28} {impl:<9} {ms:10.4f} ms  {gbps:8.1f} GB/s ({gbps / copy:5.1%} of copy)"
            f"  peak {row['peak_mem_mb']} MB  [{time.perf_counter() - t0:.1f} s]"
        )
    return results


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", required=True, help="results JSON path")
    parser.add_argument("--reps", type=int, default=25, help="timed runs (median; >= 20)")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--dry-run", action="store_true", help="tiny shapes on CPU, no compile")
    parser.add_argument("--no-compile", action="store_true", help="skip torch.compile rows")
    args = parser.parse_args(argv)

    dry = args.dry_run
    device = "cpu" if dry else "cuda"
    if not dry and not torch.cuda.is_available():
        print("bench_gpu: no GPU; use --dry-run for a CPU smoke test", file=sys.stderr)
        return 2
    if not dry and gf.backend() != "cuda":
        print(f"bench_gpu: the CUDA kernels are not available (backend {gf.backend()!r})")
        return 2
    reps = 3 if dry else max(args.reps, 20)
    timer = Timer(device, reps, 1 if dry else args.warmup)
    impls = ["native", "eager"] if gf.backend() != "reference" else ["eager"]
    if not dry and not args.no_compile:
        impls.append("compiled")

    def log(msg: str) -> None:
        print(msg, flush=True)

    gpu = torch.cuda.get_device_name() if device == "cuda" else "none"
    log(f"bench_gpu: torch {torch.__version__}, CUDA {torch.version.cuda}, GPU {gpu}")
    rows: list[dict] = []
    launches: dict = {}
    copies: dict = {}

    cases = gpu_cases(dry)
    big, small, lp = (case.name for case in cases)
    wanted = [
        (f"{big}/native_copy_fraction", ">=", 0.8),
        (f"{big}/native_vs_eager", ">=", 5.0),
        (f"{big}/native_vs_compiled", ">=", 1.5),
        (f"{small}/native_vs_eager", ">=", 5.0),
        (f"{lp}/native_vs_eager", ">=", 2.0),
        (f"{lp}/native_vs_compiled", ">=", 1.3),
        (f"{lp}/native_copy_fraction", ">=", 0.6),
        (f"{lp}/peak_mem_native_over_eager", "<=", 1 / 3),
    ]
    results_by_bench: dict[str, dict] = {}

    def write_results() -> dict:
        """Ratios and targets from the rows so far; (re)writes the JSON (partial until the end)."""
        ratios: dict[str, float] = {}
        for bench, res in results_by_bench.items():
            if "native" not in res:
                continue
            native = res["native"]
            ratios[f"{bench}/native_copy_fraction"] = round(native["gbps"] / copies[bench], 4)
            for other in ("eager", "compiled"):
                if other in res:
                    ratios[f"{bench}/native_vs_{other}"] = round(
                        res[other]["median_ms"] / native["median_ms"], 3
                    )
                    if native["peak_mem_mb"] and res[other]["peak_mem_mb"]:
                        ratios[f"{bench}/peak_mem_native_over_{other}"] = round(
                            native["peak_mem_mb"] / res[other]["peak_mem_mb"], 4
                        )
        targets = {}
        for key, op, bound in wanted:
            value = ratios.get(key)
            ok = None if value is None else (value >= bound if op == ">=" else value <= bound)
            targets[key] = {"value": value, "target": f"{op} {bound:.3g}", "met": ok}
        for bench, info in launches.items():
            if bench.startswith("fused_loss"):
                targets[f"{bench}/launches"] = {
                    "value": info["kernels"],
                    "target": "<= 3",
                    "met": info["kernels"] <= 3,
                }
        result = {
            "machine": f"{gpu} / {platform.node()} ({platform.machine()})",
            "gpu": gpu,
            "torch": torch.__version__,
            "cuda": torch.version.cuda,
            "commit": _commit(),
            "threads": torch.get_num_threads(),
            "dry_run": dry,
            "complete": len(results_by_bench) == len(cases),
            "rows": rows,
            "ratios": ratios,
            "copy_gbps": {k: round(v, 2) for k, v in copies.items()},
            "launches": launches,
            "targets": targets,
        }
        os.makedirs(os.path.dirname(os.path.abspath(args.out)), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
        return result

    for case in cases:
        fn, step, nbytes = case.make(device)
        copy = copy_gbps(timer, nbytes, device)
        copies[case.name] = copy
        log(f"{case.name}: copy of {nbytes / 1e6:.1f} MB at {copy:.1f} GB/s")
        results_by_bench[case.name] = run_bench(
            case.name,
            case.shape,
            case.dtype,
            fn,
            step,
            nbytes,
            timer,
            device,
            impls,
            rows,
            launches,
            copy,
            log,
        )
        write_results()

    targets = write_results()["targets"]
    for key, target in targets.items():
        log(f"target {key}: {target['value']} ({target['target']}) met={target['met']}")
    log(f"bench_gpu: wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
