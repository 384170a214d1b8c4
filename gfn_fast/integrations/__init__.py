"""Adapters to other GFlowNet libraries; each is an optional dependency, imported on use.

- `gfn_fast.integrations.torchgfn`: torchgfn `Trajectories` -> `divergence_loss` inputs,
  and `DivergenceGFlowNet`, a torchgfn GFlowNet trained with any gfn_fast objective.
  Needs the extra: ``pip install "gfn_fast[torchgfn]"``.
- `gfn_fast.integrations.torchgfn_exact`: exact terminal distribution and L1 of a
  torchgfn policy on an enumerable torchgfn environment (e.g. HyperGrid).

Importing `gfn_fast` never imports these modules.
"""
