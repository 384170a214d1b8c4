"""nn.Module wrappers of `divergence_loss`, one per objective (`gf.nn.RenyiLoss(alpha=0.5)`)."""

from __future__ import annotations

import torch

from gfn_fast import _checks
from gfn_fast.losses import objective_loss
from gfn_fast.objective import LEARNED_LOG_Z, Objective


class DivergenceLoss(torch.nn.Module):
    """Base wrapper: forward(log_pf, log_pb, log_reward, ...) -> (loss, stats).

    The objective's settings are checked when the module is built (`gfn_fast.Objective`).
    A learned log Z (`learn_log_z=True`) is a parameter of the module, initialised to
    `init_log_z`, and passed to `divergence_loss` as `log_z`. `process_group` splits every
    batch across processes, as in `divergence_loss`.

    Raises:
        ValueError: invalid settings (unknown control variate or normalisation, a
            non-finite alpha, learn_log_z where the objective has no log Z to learn, ...).
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
        process_group=None,
        validate: bool = True,
    ):
        super().__init__()
        name = type(self).__name__
        with _checks.errors_of(name):
            self.spec = Objective(self.objective, control_variate, alpha, normalization)
            init = _checks.real_scalar_tensor("init_log_z", init_log_z, torch.zeros(()))
            _checks.require_process_group(process_group)
            if learn_log_z and self.objective not in LEARNED_LOG_Z:
                raise ValueError(
                    f"learn_log_z: only {LEARNED_LOG_Z} learn a log Z, got {self.objective!r}"
                )
        self.process_group = process_group
        self.validate = validate
        self.log_z = torch.nn.Parameter(init.float()) if learn_log_z else None

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
        return objective_loss(
            self.spec,
            log_pf=log_pf,
            log_pb=log_pb,
            log_reward=log_reward,
            lengths=lengths,
            offsets=offsets,
            log_z=self.log_z if log_z is None else log_z,
            log_behavior=log_behavior,
            process_group=self.process_group,
            validate=self.validate,
            caller=type(self).__name__,
        )

    def extra_repr(self) -> str:
        spec = self.spec
        return (
            f"alpha={spec.alpha}, control_variate={spec.control_variate!r}, "
            f"normalization={spec.normalization!r}"
        )


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
