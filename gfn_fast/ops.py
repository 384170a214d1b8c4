"""Python face of each op: native dispatch and fake (meta) kernels.

Every op exists as `torch.ops.gfn_fast.*` (C++/CUDA kernels; schemas in csrc/op_schemas.h),
as `torch.ops.gfn_fast_emulated.*` (the CUDA kernels run on the CPU by emulation, when that
extension is built) and as the pure-PyTorch oracle in gfn_fast/reference.py. The functions
here pick one per call (`_backend.kernel_library`). Fake kernels are registered with
torch.library for every loaded library, so torch.compile(fullgraph=True) traces the native
ops and torch.library.opcheck passes. The autograd of segment_sum, logprob_from_logits and
divergence_loss_fused is registered in C++ (csrc/autograd.h): torch.library's Python
autograd wrapper cost as much as a kernel.

Op contracts (shared by every implementation):
- segment_sum(values, lengths?, offsets?) -> [B] in the accumulation dtype (float64 for
  float64 values, float32 otherwise). Padded: values [B, T], lengths [B] (None: full rows).
  Packed: values [N], offsets [B + 1] (int32 or int64, non-decreasing).
- segment_sum_backward(grad [B], lengths?, offsets?, shape, dtype) -> tensor of `shape` and
  `dtype`: grad[b] on the steps of segment b, zero elsewhere.
- logprob_from_logits(logits, actions, action_mask?, lengths?, offsets?) -> (logprob [B],
  step_lse): logits [B, T, A] or [N, A]; step_lse [B, T] or [N] holds the masked
  logsumexp per step in float64 (0 outside every segment), saved for the backward.
- logprob_from_logits_backward(grad [B], logits, actions, action_mask?, step_lse, lengths?,
  offsets?) -> grad_logits shaped and typed like logits:
  grad[b] * (onehot(action) - softmax(masked logits)) inside segments, 0 elsewhere.
- batch_coefficients(log_pf [K], log_pb? [K], log_reward [K], log_behavior? [K], log_z? [],
  objective, control_variate, alpha, paper_normalization) -> (c, d, e, value, ess,
  log_z_hat, skipped): exactly gfn_fast.objectives.coefficients.
- divergence_loss_fused(step_log_pf, step_log_pb?, log_reward, log_behavior?, log_z?,
  lengths?, offsets?, ...) -> the same 7 outputs, from per-step inputs. Its `value` output
  is differentiable: its gradient is the surrogate's (grad * c[b] on each step of
  step_log_pf, grad * d[b] on step_log_pb, grad * e on log_z).
- divergence_loss_backward(grad_loss [], c, d, e, lengths?, offsets?, shape, pf_dtype,
  pb_dtype?) -> (grad_step_log_pf, grad_step_log_pb, grad_log_z); pb_dtype None (no
  step_log_pb) returns an empty grad_step_log_pb and writes nothing for it.
"""

from __future__ import annotations

import torch

from gfn_fast import _backend, reference
from gfn_fast._checks import accumulation_dtype
from gfn_fast.objective import Objective
from gfn_fast.objectives import Coefficients

# ----------------------------------------------------------------------------------------
# segment_sum
# ----------------------------------------------------------------------------------------


def segment_sum(values, lengths=None, offsets=None) -> torch.Tensor:
    """[B] per-segment sums (see the module docstring for layouts)."""
    library = _backend.kernel_library(values)
    if library is not None:
        return library.segment_sum.default(values, lengths, offsets)
    return reference.segment_sum(values, lengths, offsets)


def _batch_size(values, lengths, offsets) -> int:
    return offsets.shape[0] - 1 if offsets is not None else values.shape[0]


def _segment_sum_fake(values, lengths, offsets):
    return values.new_empty(
        (_batch_size(values, lengths, offsets),), dtype=accumulation_dtype(values.dtype)
    )


def _segment_sum_backward_fake(grad, lengths, offsets, shape, dtype):
    return grad.new_empty(shape, dtype=dtype)


# ----------------------------------------------------------------------------------------
# logprob_from_logits
# ----------------------------------------------------------------------------------------


def logprob_from_logits(logits, actions, action_mask=None, lengths=None, offsets=None):
    """[B] per-trajectory sums of log softmax(masked logits)[action]."""
    library = _backend.kernel_library(logits)
    if library is not None:
        logprob, _ = library.logprob_from_logits.default(
            logits, actions, action_mask, lengths, offsets
        )
        return logprob
    return reference.logprob_from_logits(logits, actions, action_mask, lengths, offsets)


def _logprob_fake(logits, actions, action_mask, lengths, offsets):
    batch = _batch_size(actions, lengths, offsets)
    acc = accumulation_dtype(logits.dtype)
    return (
        logits.new_empty((batch,), dtype=acc),
        logits.new_empty(actions.shape, dtype=torch.float64),
    )


def _logprob_backward_fake(grad, logits, actions, action_mask, step_lse, lengths, offsets):
    # Contiguous, as every kernel writes it (empty_like would keep a transposed input's strides).
    return logits.new_empty(logits.shape)


# ----------------------------------------------------------------------------------------
# batch_coefficients and the fused loss
# ----------------------------------------------------------------------------------------


def batch_coefficients(
    log_pf, log_pb, log_reward, log_behavior, log_z, objective: Objective, process_group=None
) -> Coefficients:
    """Detached (c, d, e, value, ess, log_z_hat, skipped) for per-trajectory [K] inputs.

    A batch split across a process group always takes the reference path: its few global
    statistics are all-reduced between the reductions (gfn_fast.batch_reduce).
    """
    args = (
        log_pf.detach(),
        None if log_pb is None else log_pb.detach(),
        log_reward.detach(),
        None if log_behavior is None else log_behavior.detach(),
        None if log_z is None else log_z.detach(),
        *objective.op_arguments,
    )
    library = None if process_group is not None else _backend.kernel_library(log_pf)
    if library is not None:
        return Coefficients(*library.batch_coefficients.default(*args))
    return reference.batch_coefficients(*args, process_group)


def _coefficients_like(log_reward: torch.Tensor, dtype: torch.dtype):
    """Empty (c, d, e, value, ess, log_z_hat, skipped) for a batch shaped like log_reward."""
    acc = accumulation_dtype(dtype)
    scalars = [log_reward.new_empty((), dtype=acc) for _ in range(4)]
    per_trajectory = [log_reward.new_empty(log_reward.shape, dtype=acc) for _ in range(2)]
    return (*per_trajectory, *scalars, log_reward.new_empty((), dtype=torch.bool))


def _coefficients_fake(log_pf, log_pb, log_reward, *_):
    return _coefficients_like(log_reward, log_pf.dtype)


def _fused_fake(step_log_pf, step_log_pb, log_reward, *_):
    return _coefficients_like(log_reward, step_log_pf.dtype)


def _fused_backward_fake(grad, c, d, e, lengths, offsets, shape, pf_dtype, pb_dtype):
    grad_pb_shape = (0,) if pb_dtype is None else shape
    return (
        grad.new_empty(shape, dtype=pf_dtype),
        grad.new_empty(grad_pb_shape, dtype=pf_dtype if pb_dtype is None else pb_dtype),
        torch.empty_like(e),
    )


def divergence_from_steps(
    library,
    step_log_pf,
    step_log_pb,
    log_reward,
    log_behavior,
    log_z,
    lengths,
    offsets,
    objective: Objective,
) -> tuple[torch.Tensor, Coefficients]:
    """(loss, coefficients) from per-step log-probabilities, through the fused op of `library`
    (a torch.ops library from `_backend.kernel_library`).

    The loss equals `value`; its gradient is the surrogate's (module docstring).
    """
    out = library.divergence_loss_fused.default(
        step_log_pf,
        step_log_pb,
        log_reward.detach(),
        None if log_behavior is None else log_behavior.detach(),
        log_z,
        lengths,
        offsets,
        *objective.op_arguments,
    )
    # Only `value` carries autograd; the other outputs are non-differentiable already.
    c, d, e, value, ess, log_z_hat, skipped = out
    return value, Coefficients(c, d, e, value.detach(), ess, log_z_hat, skipped)


def _register(library: str) -> None:
    """Fake kernels for the ops of `library` (a loaded one); their autograd is registered in
    C++ (csrc/autograd.h)."""
    fakes = {
        "segment_sum": _segment_sum_fake,
        "segment_sum_backward": _segment_sum_backward_fake,
        "logprob_from_logits": _logprob_fake,
        "logprob_from_logits_backward": _logprob_backward_fake,
        "batch_coefficients": _coefficients_fake,
        "divergence_loss_fused": _fused_fake,
        "divergence_loss_backward": _fused_backward_fake,
    }
    for name, fake in fakes.items():
        torch.library.register_fake(f"{library}::{name}", fake)


if _backend._native is not None:
    _register(_backend.NATIVE_LIBRARY)
if _backend._emulated is not None:
    _register(_backend.EMULATED_LIBRARY)
