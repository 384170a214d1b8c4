"""Training throughput against gfnx (JAX) and torchgfn, side by side in one process (issue 12).

gfnx 0.0.1 (the package on PyPI) ships environments, rollouts and metrics but no training
loop; its TB baseline is a script in its repository, with one MLP for p_F and p_B. So the
gfnx side here is a TB step written on gfnx's own pieces, on the task and network of
`bench_e2e_torchgfn.py`: gfnx's HypergridEnvironment (dim 2, side 8) with its general
reward module at torchgfn's constants (R0 = 0.1, R1 = 0.5, R2 = 2), separate p_F and p_B
MLPs (2 hidden layers of 256, LeakyReLU, as one matmul per layer over all rows: equinox's
per-example MLP under vmap took 1.6x longer for the loss and its gradient, 516 against 316
ms at batch 1024), on-policy TB, Adam at lr 1e-3 and 1e-1 for log Z. The whole step is one
jitted function: `gfnx.utils.forward_rollout` (padded to the env's max length, as gfnx
rolls out), both networks over the [B, T + 1] observations, the loss, its gradient and
Adam. The gfn_fast and torchgfn sides are `bench_e2e_torchgfn`'s runs (gfn_fast: its
trainer's choices at this size).

Every implementation runs on one CPU core with one thread (the process is pinned to CPU
0; XLA's CPU threading is off before jax is imported), in alternating rounds of steps,
after a warm-up that includes gfnx's compilation. Reported per batch size:
trajectories/s (batch / median step time) and each one's ratio to gfnx's (gfn_fast both
with distinct states, its default at this size, and on all states). Time to an L1 target
is not measured on the gfnx side.

gfnx pins numpy 1.26.4, so this runs in a virtualenv of its own (README, "Benchmarks"):

    python -m venv /tmp/gfnx && source /tmp/gfnx/bin/activate
    pip install torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu
    pip install gfnx==0.0.1 optax tqdm
    pip install --no-deps torchgfn==2.4.1 && pip install tensordict einops dill \\
        torch_geometric linear-attention-transformer
    PYTHONPATH=. python benchmarks/bench_e2e_gfnx.py
"""

from __future__ import annotations

import os

os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false intra_op_parallelism_threads=1"

import argparse  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import gfnx  # noqa: E402
import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import optax  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, str(Path(__file__).parent))
from bench_e2e_torchgfn import GfnFastRun, TorchgfnRun, commit  # noqa: E402

RESULTS = Path(__file__).parent / "results" / "e2e_gfnx.json"
BENCH = "e2e_gfnx_hypergrid_8x8"


class GfnxRun:
    """TB on gfnx's hypergrid, rollout and loss in one jitted step (see the docstring)."""

    impl = "gfnx"

    def __init__(self, seed: int, batch_size: int, args: argparse.Namespace):
        self.batch_size = batch_size
        reward = gfnx.reward.hypergrid.GeneralHypergridRewardModule(R0=0.1, R1=0.5, R2=2.0)
        self.env = gfnx.environment.HypergridEnvironment(reward, dim=2, side=8)
        self.env_params = self.env.init(jax.random.PRNGKey(seed))
        key, pf_key, pb_key = jax.random.split(jax.random.PRNGKey(seed), 3)
        sizes = [self.env.observation_space.shape[0]] + [args.hidden] * args.layers
        self.params = {
            "pf": _mlp_init(sizes + [self.env.action_space.n], pf_key),
            "pb": _mlp_init(sizes + [self.env.backward_action_space.n], pb_key),
            "log_z": jnp.zeros(()),
        }
        self.optimizer = optax.multi_transform(
            {"net": optax.adam(args.lr), "log_z": optax.adam(args.lr_log_z)},
            lambda tree: {
                "pf": jax.tree.map(lambda _: "net", tree["pf"]),
                "pb": jax.tree.map(lambda _: "net", tree["pb"]),
                "log_z": "log_z",
            },
        )
        self.opt_state = self.optimizer.init(self.params)
        self.key = key
        self._step = jax.jit(self._train_step)

    def _loss(self, params, traj):
        env, env_params = self.env, self.env_params
        pf_logits = _mlp_rows(params["pf"], traj.obs)
        invalid = jax.vmap(env.get_invalid_mask, in_axes=(1, None), out_axes=1)(
            traj.state, env_params
        )
        log_pf = jax.nn.log_softmax(gfnx.utils.mask_logits(pf_logits, invalid), axis=-1)
        log_pf = jnp.take_along_axis(log_pf, traj.action[..., None], axis=-1)[..., 0]
        log_pf = jnp.where(traj.pad, 0.0, log_pf).sum(1)
        parents = jax.tree.map(lambda x: x[:, :-1], traj.state)
        children = jax.tree.map(lambda x: x[:, 1:], traj.state)
        back = jax.vmap(env.get_backward_action, in_axes=(1, 1, 1, None), out_axes=1)(
            parents, traj.action[:, :-1], children, env_params
        )
        pb_logits = _mlp_rows(params["pb"], traj.obs[:, 1:])
        invalid_back = jax.vmap(env.get_invalid_backward_mask, in_axes=(1, None), out_axes=1)(
            children, env_params
        )
        log_pb = jax.nn.log_softmax(gfnx.utils.mask_logits(pb_logits, invalid_back), axis=-1)
        log_pb = jnp.take_along_axis(log_pb, back[..., None], axis=-1)[..., 0]
        done_before = traj.pad[:, :-1]
        log_pb = jnp.where(done_before, 0.0, log_pb).sum(1)
        log_reward = jnp.where(done_before, 0.0, traj.log_gfn_reward[:, :-1]).sum(1)
        return jnp.mean((params["log_z"] + log_pf - log_pb - log_reward) ** 2)

    def _train_step(self, params, opt_state, key):
        key, rollout_key = jax.random.split(key)

        def policy(_, obs, pf):
            return _mlp_rows(pf, obs), {}

        traj, _ = gfnx.utils.forward_rollout(
            rng_key=rollout_key,
            num_envs=self.batch_size,
            policy_fn=policy,
            policy_params=jax.lax.stop_gradient(params["pf"]),
            env=self.env,
            env_params=self.env_params,
        )
        loss, grads = jax.value_and_grad(self._loss)(params, traj)
        updates, opt_state = self.optimizer.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, key, loss

    def step(self) -> None:
        self.params, self.opt_state, self.key, loss = self._step(
            self.params, self.opt_state, self.key
        )
        loss.block_until_ready()


def _mlp_init(sizes: list[int], key) -> list[tuple]:
    """(W [in, out], b [out]) per layer, uniform in +-1/sqrt(in) (torch's nn.Linear)."""
    layers = []
    for fan_in, fan_out, layer_key in zip(
        sizes, sizes[1:], jax.random.split(key, len(sizes) - 1), strict=False
    ):
        w_key, b_key = jax.random.split(layer_key)
        bound = fan_in**-0.5
        w = jax.random.uniform(w_key, (fan_in, fan_out), minval=-bound, maxval=bound)
        layers.append((w, jax.random.uniform(b_key, (fan_out,), minval=-bound, maxval=bound)))
    return layers


def _mlp_rows(layers: list[tuple], x):
    """The MLP on x [..., in] -> [..., out]: one matmul per layer over all leading rows."""
    rows = x.reshape(-1, x.shape[-1])
    for index, (w, b) in enumerate(layers):
        rows = rows @ w + b
        if index < len(layers) - 1:
            rows = jax.nn.leaky_relu(rows)
    return rows.reshape(*x.shape[:-1], rows.shape[-1])


def measure(batch_size: int, args: argparse.Namespace) -> dict:
    runs = [
        GfnxRun(args.seed, batch_size, args),
        GfnFastRun("fp32", args.seed, batch_size, args),
        GfnFastRun("fp32_all_states", args.seed, batch_size, args),
        TorchgfnRun(args.seed, batch_size, args),
    ]
    times = {run.impl: [] for run in runs}
    for run in runs:  # warm-up, gfnx's compilation included
        for _ in range(args.warmup):
            run.step()
    for _ in range(args.rounds):
        for run in runs:
            for _ in range(args.steps_per_round):
                started = time.perf_counter()
                run.step()
                times[run.impl].append(time.perf_counter() - started)
    shape = {
        "ndim": 2,
        "height": 8,
        "batch": batch_size,
        "hidden": args.hidden,
        "layers": args.layers,
        "objective": "tb",
    }
    medians = {impl: statistics.median(values) for impl, values in times.items()}
    rows = [
        {
            "bench": BENCH,
            "shape": shape,
            "dtype": "float32",
            "impl": impl,
            "median_ms": median * 1e3,
            "gbps": None,
            "peak_mem_mb": None,
            "trajectories_per_s": batch_size / median,
        }
        for impl, median in medians.items()
    ]
    ratios = {
        f"{BENCH}_b{batch_size}_traj_per_s/{impl}_vs_gfnx": medians["gfnx"] / median
        for impl, median in medians.items()
        if impl != "gfnx"
    }
    return rows, ratios


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[128, 1024])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-log-z", type=float, default=1e-1)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--steps-per-round", type=int, default=5)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    args.threads = 1
    os.sched_setaffinity(0, {0})  # one core for all three
    torch.set_num_threads(1)
    rows, ratios = [], {}
    for batch_size in args.batch_sizes:
        batch_rows, batch_ratios = measure(batch_size, args)
        rows += batch_rows
        ratios |= batch_ratios
        speed = ", ".join(f"{r['impl']} {r['trajectories_per_s']:.0f}" for r in batch_rows)
        print(f"B={batch_size}: trajectories/s {speed}")
    for key, value in ratios.items():
        print(f"{key} {value:.2f}")
    out = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cpus, {platform.python_version()}",
        "torch": torch.__version__,
        "jax": jax.__version__,
        "gfnx": "0.0.1",
        "commit": commit(),
        "threads": 1,
        "settings": {k: v for k, v in vars(args).items() if k != "out"},
        "rows": rows,
        "ratios": ratios,
    }
    args.out.write_text(json.dumps(out, indent=1) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
