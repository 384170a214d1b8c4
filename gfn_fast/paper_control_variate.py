"""The paper's score-function control variate (its Eq. 6), for reproduction only.

G - a C with C = grad_theta sum_k log p_F(tau_k) and a = <G, C> / (eps + ||C||^2) taken
from the same batch. This is BIASED: a depends on the batch it corrects, and the bias does
not vanish as K grows (MATH.md measured a relative bias of 0.14 to 0.20 at K = 128, against
at most 0.013 for the leave-one-out estimators). Never use it as a default; gfn_fast's
"loo" control variates are unbiased.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


def paper_score_control_variate(
    objective_grads: Sequence[torch.Tensor],
    score_grads: Sequence[torch.Tensor],
    eps: float = 1e-8,
) -> tuple[list[torch.Tensor], torch.Tensor]:
    """Corrected parameter gradients G - a C and the coefficient a (biased; see module doc).

    Args:
        objective_grads: G, the parameter gradients of the objective (one per parameter).
        score_grads: C, the parameter gradients of sum_k log p_F(tau_k), same shapes.
        eps: added to ||C||^2.

    Raises:
        ValueError: the two lists differ in length or in a shape.
    """
    if len(objective_grads) != len(score_grads):
        raise ValueError(
            f"score_grads: expected {len(objective_grads)} tensors like objective_grads, "
            f"got {len(score_grads)}"
        )
    for i, (g, c) in enumerate(zip(objective_grads, score_grads, strict=True)):
        if g.shape != c.shape:
            raise ValueError(
                f"score_grads[{i}]: expected shape {tuple(g.shape)} like objective_grads[{i}], "
                f"got {tuple(c.shape)}"
            )
    dot = sum((g * c).sum() for g, c in zip(objective_grads, score_grads, strict=True))
    norm2 = sum((c * c).sum() for c in score_grads)
    a = dot / (eps + norm2)
    return [g - a * c for g, c in zip(objective_grads, score_grads, strict=True)], a
