"""Reuse the rollout's forward of p_F in the batched pass: record a plain MLP's activations
while the no-grad rollout runs it, then differentiate them with one batched backward.

The batched pass needs the gradient of the loss w.r.t. the p_F MLP's parameters at the N
visited states, and the rollout has already run that MLP's forward on them, step by step.
`MLPRecorder` runs that forward itself, writing every layer's input and the output into
preallocated [capacity, width] buffers (the steps' rows one after another); `outputs` then
gives those outputs in the rollout's row order (a row once per trajectory that it stands
for), as a tensor whose backward computes every layer's weight and bias gradients with one
matmul over all recorded rows. A training step then
costs the rollout's forward plus one batched backward, without a second forward of p_F.

Exact: the backward is autograd's backward of nn.Linear and nn.LeakyReLU applied to the
recorded activations (a LeakyReLU with a positive slope keeps the sign of its input, so its
output alone gives its derivative). Under autocast (`--precision bf16`) it computes as
autocast would: weights and activations in the autocast dtype, matmuls accumulating in
float32 inside, and float32 parameter gradients. Only for networks it knows how to
differentiate (see `recordable`); the rollout runs the policy as it is otherwise.
"""

from __future__ import annotations

import torch
from torch import nn

from gfn_fast.train.precision import padded_rows


def recordable(network: nn.Module | None) -> bool:
    """Whether `network` is an nn.Sequential of Linear layers with LeakyReLUs (slope > 0)
    between them, with float32 parameters (on one device), run eagerly (not
    torch.compile'd): the networks whose backward `MLPRecorder` computes."""
    if not isinstance(network, nn.Sequential) or network._compiled_call_impl is not None:
        return False
    layers = list(network)
    linears, activations = layers[::2], layers[1::2]
    if not layers or len(layers) % 2 == 0:
        return False
    if not all(type(layer) is nn.Linear and layer.bias is not None for layer in linears):
        return False
    if not all(type(layer) is nn.LeakyReLU and layer.negative_slope > 0 for layer in activations):
        return False
    return all(
        layer.weight.dtype == torch.float32 and layer.bias.dtype == torch.float32
        for layer in linears
    )


class MLPRecorder:
    """Runs a `recordable` MLP on the rollout's steps (under no_grad) and keeps what its
    backward needs: each Linear's input, and the output, for up to `capacity` rows.

    It computes in float32, or in the autocast dtype where autocast is on for the
    network's device. On CPU, reduced-precision matmuls run on padded row counts (see
    `precision.padded_rows`): oneDNN builds a kernel for every new shape.
    """

    def __init__(self, network: nn.Sequential, capacity: int):
        layers = list(network)
        self.linears: list[nn.Linear] = layers[::2]
        self.slopes = [layer.negative_slope for layer in layers[1::2]]
        weight = self.linears[0].weight
        device = weight.device.type
        autocast = torch.is_autocast_enabled(device)
        self.dtype = torch.get_autocast_dtype(device) if autocast else torch.float32
        self.pad = device == "cpu" and self.dtype != torch.float32
        # (bias, W^T) per layer in the compute dtype, once: addmm(bias, x, W^T) is
        # nn.Linear on a 2-D input. Padding needs room past the last row.
        self.affine = [
            (layer.bias.to(self.dtype), layer.weight.to(self.dtype).t()) for layer in self.linears
        ]
        rows = capacity + (capacity // 8 + 16 if self.pad else 0)
        widths = [layer.in_features for layer in self.linears]
        self.inputs = [weight.new_empty(rows, width, dtype=self.dtype) for width in widths]
        self.output = weight.new_empty(rows, self.linears[-1].out_features, dtype=self.dtype)
        self.rows = 0

    def __call__(self, features: torch.Tensor) -> torch.Tensor:
        """[n, F] -> [n, out] the network's output on the next n rows (recorded)."""
        n = features.shape[0]
        start = self.rows
        end = start + (padded_rows(n) if self.pad and n else n)
        x = self.inputs[0][start:end]
        x[:n].copy_(features)
        if end - start > n:  # padding rows repeat the last one (finite, overwritten next)
            x[n:].copy_(features[-1:].expand(end - start - n, -1))
        hidden = zip(self.affine[:-1], self.slopes, self.inputs[1:], strict=True)
        for (bias, weight_t), slope, buffer in hidden:
            h = torch.addmm(bias, x, weight_t, out=buffer[start:end])
            x = torch.nn.functional.leaky_relu_(h, slope)
        bias, weight_t = self.affine[-1]
        self.rows = start + n
        return torch.addmm(bias, x, weight_t, out=self.output[start:end])[:n]

    def outputs(self, index: torch.Tensor | None = None) -> torch.Tensor:
        """[M, out] the recorded outputs gathered by `index` [M] (row index[i] of the
        recording; None: every row, as recorded), differentiable w.r.t. the network's
        parameters. A row may appear any number of times (a rollout runs the policy once
        per distinct state): the backward sums its gradients before its matmuls.
        """
        if self.pad:  # the backward's padded last block reads these rows (times zero)
            last = (self.rows - 1) // BLOCK_ROWS * BLOCK_ROWS if self.rows else 0
            for buffer in self.inputs:
                buffer[self.rows : last + padded_rows(self.rows - last)].zero_()
        parameters = [p for layer in self.linears for p in (layer.weight, layer.bias)]
        return _RecordedMLP.apply(self, index, *parameters)


def run_recorded(network: nn.Sequential, features: torch.Tensor) -> torch.Tensor:
    """`network(features)` [M, F] -> [M, out] for a `recordable` network, differentiable
    through `MLPRecorder`'s backward (in blocks of rows) instead of autograd's graph."""
    with torch.no_grad():
        recorder = MLPRecorder(network, features.shape[0])
        recorder(features)
    return recorder.outputs()


# The backward runs over blocks of rows: a block's activations and gradients stay in cache
# from one layer to the next (measured 1.3x faster than whole-batch matmuls at 8,000 rows
# of 256, the same at 1,000).
BLOCK_ROWS = 512


class _RecordedMLP(torch.autograd.Function):
    """Forward: the recorded outputs, gathered. Backward: the gradients of every Linear's
    weight and bias, by backpropagating through the recorded activations."""

    @staticmethod
    def forward(ctx, recorder: MLPRecorder, index: torch.Tensor | None, *parameters):
        rows = recorder.rows
        ctx.slopes, ctx.gathered, ctx.rows = recorder.slopes, index is not None, rows
        ctx.dtype, ctx.pad = recorder.dtype, recorder.pad
        # Saved, so that autograd's version check catches a later in-place change.
        saved = (*parameters[::2], *recorder.inputs)
        ctx.save_for_backward(*saved, *([index] if ctx.gathered else []))
        output = recorder.output[:rows]
        return output.index_select(0, index) if ctx.gathered else output.clone()

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        saved = ctx.saved_tensors
        count = len(saved) // 2
        weights = [w.to(ctx.dtype) for w in saved[:count]]
        inputs = saved[count : 2 * count]
        if ctx.gathered:  # each recorded row's gradient: the sum of its copies', in float32
            summed = grad.new_zeros(ctx.rows, grad.shape[1], dtype=torch.float32)
            grad = summed.index_add_(0, saved[-1], grad.float())
        grad = grad.to(ctx.dtype)
        weight_grads: list[torch.Tensor | None] = [None] * count
        bias_grads: list[torch.Tensor | None] = [None] * count
        for start in range(0, ctx.rows, BLOCK_ROWS):
            g = grad[start : start + BLOCK_ROWS]
            rows = padded_rows(g.shape[0]) if ctx.pad else g.shape[0]
            if rows > g.shape[0]:  # zero gradient rows: kernel shapes that repeat
                g = torch.cat([g, g.new_zeros(rows - g.shape[0], g.shape[1])])
            for i in reversed(range(count)):
                x = inputs[i][start : start + rows]
                bias_grad = g.sum(0, dtype=torch.float32)
                if weight_grads[i] is None:
                    weight_grads[i], bias_grads[i] = g.t().mm(x).float(), bias_grad
                else:  # float32 accumulates in place; a reduced dtype adds its product
                    weight_grad = weight_grads[i]
                    if x.dtype == torch.float32:
                        weight_grad.addmm_(g.t(), x)
                    else:
                        weight_grad.add_(g.t().mm(x))
                    bias_grads[i].add_(bias_grad)
                if i:
                    g = torch.ops.aten.leaky_relu_backward(
                        g.mm(weights[i]), x, ctx.slopes[i - 1], True
                    )
        pairs = zip(weight_grads, bias_grads, strict=True)
        return None, None, *(grad for pair in pairs for grad in pair)
