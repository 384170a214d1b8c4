"""Train torchgfn's HyperGrid with gfn_fast's Renyi-alpha and Tsallis-alpha objectives.

The model is pure torchgfn (HyperGrid, k-hot preprocessor, MLP p_F and p_B estimators,
its Sampler); only the loss is gfn_fast's, through `DivergenceGFlowNet`. Every
`--eval-every` steps it prints the exact L1 between the sampler's terminal distribution
and R/Z (HyperGrid.true_dist()).

    pip install tensordict einops dill torch_geometric linear-attention-transformer
    pip install --no-deps torchgfn==2.4.1    # its numpy<2 pin is not needed (README)
    python examples/torchgfn_hypergrid.py                      # short run, both objectives
    python examples/torchgfn_hypergrid.py --steps 1000 --objectives renyi --alpha 0.5
"""

from __future__ import annotations

import argparse
import time

import torch
from gfn.estimators import DiscretePolicyEstimator
from gfn.gym import HyperGrid
from gfn.preprocessors import KHotPreprocessor
from gfn.utils.modules import MLP

from gfn_fast.integrations.torchgfn import DivergenceGFlowNet
from gfn_fast.integrations.torchgfn_exact import exact_l1


def build(objective: str, args: argparse.Namespace) -> tuple[HyperGrid, DivergenceGFlowNet]:
    """torchgfn's HyperGrid and separate p_F / p_B MLPs, trained by `objective`."""
    env = HyperGrid(ndim=args.ndim, height=args.height, store_all_states=True)
    preprocessor = KHotPreprocessor(env.height, env.ndim)
    pf = DiscretePolicyEstimator(
        MLP(preprocessor.output_dim, env.n_actions, hidden_dim=args.hidden),
        env.n_actions,
        preprocessor,
    )
    pb = DiscretePolicyEstimator(
        MLP(preprocessor.output_dim, env.n_actions - 1, hidden_dim=args.hidden),
        env.n_actions,
        preprocessor,
        is_backward=True,
    )
    # Tsallis learns log Z as its reference (MATH.md); Renyi is self-normalised.
    gflownet = DivergenceGFlowNet(
        pf, pb, objective, alpha=args.alpha, learn_log_z=objective == "tsallis"
    )
    return env, gflownet


def train(objective: str, args: argparse.Namespace) -> float:
    """Trains one model on-policy; returns the final exact L1."""
    torch.manual_seed(args.seed)
    env, gflownet = build(objective, args)
    groups = [{"params": gflownet.pf_pb_parameters(), "lr": args.lr}]
    if gflownet.logZ is not None:
        groups.append({"params": gflownet.logz_parameters(), "lr": args.lr_log_z})
    optimizer = torch.optim.Adam(groups)
    started = time.perf_counter()
    for step in range(1, args.steps + 1):
        trajectories = gflownet.sample_trajectories(env, args.batch_size, save_logprobs=True)
        optimizer.zero_grad()
        loss = gflownet.loss(env, trajectories, recalculate_all_logprobs=False)
        loss.backward()
        optimizer.step()
        if step % args.eval_every == 0 or step == args.steps:
            l1 = exact_l1(env, gflownet.pf)
            print(
                f"{objective:8s} step {step:5d}  loss {loss.item():9.4f}  "
                f"ess {gflownet.last_stats['ess'].item():6.1f}  exact L1 {l1:.4f}  "
                f"{time.perf_counter() - started:6.1f} s"
            )
    return l1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--objectives", nargs="+", default=["renyi", "tsallis"])
    parser.add_argument("--alpha", type=float, default=0.5)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--ndim", type=int, default=2)
    parser.add_argument("--height", type=int, default=8)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--lr-log-z", type=float, default=1e-1)
    parser.add_argument("--eval-every", type=int, default=25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    for objective in args.objectives:
        train(objective, args)


if __name__ == "__main__":
    main()
