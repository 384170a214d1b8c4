"""nn.Module wrappers of `divergence_loss`, one per objective (`gf.nn.RenyiLoss(alpha=0.5)`)."""

from __future__ import annotations

import torch

from gfn_fast.losses import divergence_loss


class DivergenceLoss(torch.nn.Module):
    """Base wrapper: forward(log_pf, log_pb, log_reward, ...) -> (loss, stats).

    A learned log Z (`learn_log_z=True`) is a parameter of the module, initialised to
    `init_log_z`, and passed to `divergence_loss` as `log_z`.
    """

    objective: str = ""

    def __init__(
        self,
        *,
        alpha: float = 0.5,
        control_variate: str = "loo",
        normalization: str = "amari",
        learn_log_z: bool = False,
        init_log_z: float = 0.0,
        validate: bool = True,
    ):
        super().__init__()
        self.alpha = alpha
        self.control_variate = control_variate
        self.normalization = normalization
        self.validate = validate
        self.log_z = torch.nn.Parameter(torch.tensor(float(init_log_z))) if learn_log_z else None

    def forward(
        self,
        log_pf: torch.Tensor,
        log_pb: torch.Tensor | None,
        log_reward: torch.Tensor,
        *,
        lengths: torch.Tensor | None = None,
        offsets: torch.Tensor | None = None,
        log_behavior: torch.Tensor | None = None,
        log_z: torch.Tensor | float | None = None,
    ):
        """See `gfn_fast.divergence_loss`; `log_z` defaults to the module's parameter."""
        return divergence_loss(
            self.objective,
            log_pf=log_pf,
            log_pb=log_pb,
            log_reward=log_reward,
            lengths=lengths,
            offsets=offsets,
            alpha=self.alpha,
            control_variate=self.control_variate,
            log_z=self.log_z if log_z is None else log_z,
            log_behavior=log_behavior,
            normalization=self.normalization,
            validate=self.validate,
        )

    def extra_repr(self) -> str:
        return f"alpha={self.alpha}, control_variate={self.control_variate!r}"


class TBLoss(DivergenceLoss):
    """Trajectory balance with a learned log Z parameter."""

    objective = "tb"

    def __init__(self, *, control_variate: str = "none", init_log_z: float = 0.0, **kwargs):
        super().__init__(
            control_variate=control_variate, learn_log_z=True, init_log_z=init_log_z, **kwargs
        )


class VarGradLoss(DivergenceLoss):
    """Log-partition variance (VarGrad); needs no log Z."""

    objective = "vargrad"


class ReverseKLLoss(DivergenceLoss):
    """KL(p_F || pi) with the leave-one-out control variate by default."""

    objective = "reverse_kl"


class ForwardKLLoss(DivergenceLoss):
    """KL(pi || p_F), self-normalised importance weights."""

    objective = "forward_kl"


class RenyiLoss(DivergenceLoss):
    """Renyi-alpha divergence, self-normalised."""

    objective = "renyi"


class TsallisLoss(DivergenceLoss):
    """Tsallis/Amari-alpha divergence; `learn_log_z=True` learns its reference log Z."""

    objective = "tsallis"
