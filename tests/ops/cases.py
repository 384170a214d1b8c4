"""Inputs of the op suites, on any device: padded and packed layouts with poisoned padding
(NaN values, wild actions) that must never be read, logits batches, per-step loss batches,
per-trajectory batches, and the objectives' cases."""

from __future__ import annotations

import torch

from gfn_fast import reference


def padded(device, batch, steps, dtype, index_dtype=torch.int64, seed=0, full=False):
    """values [B, T] with NaN padding, lengths [B] (some 0, some T), or None when full."""
    g = device.generator(seed)
    on = device.torch_device
    values = torch.randn(batch, steps, generator=g, device=on, dtype=torch.float64).to(dtype)
    if full:
        return values, None
    lengths = torch.randint(0, steps + 1, (batch,), generator=g, device=on)
    if batch > 2:
        lengths[0], lengths[1] = 0, steps
    mask = torch.arange(steps, device=on) >= lengths.unsqueeze(1)
    values = values.masked_fill(mask, float("nan"))
    return values, lengths.to(index_dtype)


def packed(device, batch, max_len, dtype, index_dtype=torch.int64, seed=0, head=3, tail=5):
    """values [N] with NaN outside the segments, offsets [B + 1] (some segments empty)."""
    g = device.generator(seed)
    on = device.torch_device
    lengths = torch.randint(0, max_len + 1, (batch,), generator=g, device=on)
    if batch > 1:
        lengths[0] = 0
    offsets = torch.zeros(batch + 1, dtype=torch.int64, device=on)
    offsets[1:] = torch.cumsum(lengths, 0)
    offsets += head
    total = int(offsets[-1]) + tail
    values = torch.randn(total, generator=g, device=on, dtype=torch.float64).to(dtype)
    values[:head] = float("nan")
    values[int(offsets[-1]) :] = float("nan")
    return values, offsets.to(index_dtype)


def layout_case(device, layout, batch, steps, dtype, index_dtype=torch.int64, seed=0):
    """(values, lengths, offsets) for layout "padded", "full" or "packed"."""
    if layout == "packed":
        values, offsets = packed(device, batch, steps, dtype, index_dtype, seed=seed)
        return values, None, offsets
    values, lengths = padded(device, batch, steps, dtype, index_dtype, seed, layout == "full")
    return values, lengths, None


def outside_mask(shape, lengths, offsets, torch_device) -> torch.Tensor:
    """True on the steps that belong to no segment."""
    positions, _, _ = reference.segment_positions(shape, lengths, offsets, torch_device)
    inside = torch.zeros(torch.Size(shape).numel(), dtype=torch.bool, device=torch_device)
    inside[positions] = True
    return ~inside.reshape(shape)


def logits_batch(
    device, layout, dtype, num_actions=37, with_mask=True, seed=0, batch=11, steps=9, scale=3.0
):
    """(logits, actions, mask, lengths, offsets); NaN logits and wild actions in padding."""
    g = device.generator(seed)
    on = device.torch_device
    if layout == "packed":
        _, offsets = packed(device, batch, steps, torch.float32, seed=seed)
        lengths = None
        shape = (int(offsets[-1]) + 5,)
    else:
        _, lengths = padded(device, batch, steps, torch.float32, seed=seed)
        offsets = None
        shape = (batch, steps)
    logits = scale * torch.randn(*shape, num_actions, generator=g, device=on, dtype=torch.float64)
    logits = logits.to(dtype)
    mask = None
    if with_mask:
        mask = torch.rand(*shape, num_actions, generator=g, device=on) > 0.3
    actions = torch.randint(0, num_actions, shape, generator=g, device=on)
    if mask is not None:  # the chosen action is always allowed
        mask.scatter_(-1, actions.unsqueeze(-1), True)
    outside = outside_mask(shape, lengths, offsets, on)
    logits[outside] = float("nan")
    actions[outside] = -7
    return logits, actions, mask, lengths, offsets


def step_batch(device, layout, dtype, batch=48, steps=24, seed=0, index_dtype=torch.int64):
    """Per-step (log_pf, log_pb, log_reward, lengths, offsets); NaN outside the segments."""
    log_pf, lengths, offsets = layout_case(device, layout, batch, steps, dtype, index_dtype, seed)
    g = device.generator(seed + 1)
    on = device.torch_device
    log_pb = torch.randn(log_pf.shape, generator=g, device=on, dtype=torch.float64).to(dtype)
    log_pb = torch.where(torch.isnan(log_pf), log_pf, -log_pb.abs())
    log_pf = -log_pf.abs()
    log_reward = torch.randn(batch, generator=g, device=on, dtype=torch.float64).to(dtype)
    return log_pf, log_pb, log_reward, lengths, offsets


def batch_inputs(device, k, dtype, off_policy, seed=0, spread=3.0):
    """Per-trajectory (log_pf, log_pb, log_reward, log_behavior) of K trajectories."""
    g = device.generator(seed)
    on = device.torch_device
    log_pf = (-spread * torch.rand(k, generator=g, device=on, dtype=torch.float64)).to(dtype)
    log_pb = (-spread * torch.rand(k, generator=g, device=on, dtype=torch.float64)).to(dtype)
    log_reward = spread * torch.randn(k, generator=g, device=on, dtype=torch.float64)
    log_behavior = None
    if off_policy:
        noise = torch.randn(k, generator=g, device=on, dtype=torch.float64)
        log_behavior = log_pf.double() + 0.3 * noise
    return log_pf, log_pb, log_reward.to(dtype), log_behavior


# (objective, control variate, alpha): every objective and estimator, and the alphas at and
# around the stable branches of renyi and tsallis.
CASES = [
    ("tb", "loo", 0.5),
    ("tb", "none", 0.5),
    ("vargrad", "loo", 0.5),
    ("reverse_kl", "loo", 0.5),
    ("reverse_kl", "none", 0.5),
    ("forward_kl", "loo", 0.5),
    ("forward_kl", "none", 0.5),
    ("renyi", "loo", 0.5),
    ("renyi", "none", 0.5),
    ("renyi", "loo", -1.5),
    ("renyi", "loo", 2.0),
    ("renyi", "loo", 1.0 - 1e-7),
    ("renyi", "loo", 1e-7),
    ("renyi", "loo", 0.0),
    ("renyi", "loo", 1.0),
    ("tsallis", "loo", 0.5),
    ("tsallis", "none", 0.7),
    ("tsallis", "loo", 1e-8),
    ("tsallis", "loo", 1.5),
]
