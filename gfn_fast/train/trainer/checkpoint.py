"""Checkpoint files: only tensors and plain data, read back without running any code.

A checkpoint is a `torch.save`d dict of tensors, numbers, strings, lists and dicts, with the
config as a JSON string. It is read with `torch.load(weights_only=True)`, which refuses
every other object instead of unpickling it, so that a checkpoint from someone else cannot
run code. Files are written atomically (a temporary file, then a rename), so a crash or a
kill mid-write leaves the previous checkpoint in place.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import asdict, fields
from pathlib import Path
from typing import IO

import torch

from gfn_fast.train.trainer.config import RESUMABLE_CHANGES, TrainConfig, resolve

FORMAT = "gfn_fast.train.checkpoint/1"

# What every checkpoint holds, and the type of each entry.
_ENTRIES = {
    "format": str,
    "config": str,
    "policy": dict,
    "optimizer": dict,
    "generators": list,
    "torch_rng": torch.Tensor,
    "counters": dict,
    "curve": list,
    "pending": dict,
    "evaluation": dict,
}


class CheckpointError(ValueError):
    """A file that is not a readable gfn_fast checkpoint (missing, truncated, foreign, or
    holding objects other than tensors and plain data)."""


# Fields a checkpoint from an earlier version may lack: settings a resumed run may change
# anyway, whose None default `resolve` fills in (they change how a run executes, not what
# it computes).
_FILLABLE = {f.name for f in fields(TrainConfig) if f.default is None} & set(RESUMABLE_CHANGES)


def config_to_json(config: TrainConfig) -> str:
    return json.dumps(asdict(config), sort_keys=True)


def config_from_json(text: str, where: str) -> TrainConfig:
    """The TrainConfig of a checkpoint's JSON, resolved (checked) as any config is.

    Raises:
        CheckpointError: not JSON, unknown or missing fields (but those of _FILLABLE), or
            values `resolve` refuses.
    """
    try:
        values = json.loads(text)
    except json.JSONDecodeError as error:
        raise CheckpointError(f"{where}: its config is not valid JSON ({error})") from None
    if not isinstance(values, dict):
        raise CheckpointError(f"{where}: its config is not a JSON object")
    known = {f.name for f in fields(TrainConfig)}
    unknown, missing = sorted(set(values) - known), sorted(known - set(values) - _FILLABLE)
    if unknown or missing:
        raise CheckpointError(
            f"{where}: its config does not match this version of gfn_fast "
            f"(unknown fields {unknown}, missing fields {missing})"
        )
    try:
        return resolve(TrainConfig(**values))
    except ValueError as error:
        raise CheckpointError(f"{where}: its config is invalid: {error}") from None


def save_checkpoint(path: Path, state: dict) -> None:
    """Write `state` (entries as `load_checkpoint` returns them) to `path`, atomically.

    Raises:
        TypeError: `state` holds something other than tensors and plain data (a bug: it
            would be refused when read back).
    """
    _require_plain(state, "state")
    atomic_write(path, lambda handle: torch.save(state, handle), binary=True)


def load_checkpoint(path: str | Path) -> dict:
    """The state saved in the checkpoint file `path`, tensors on the CPU, its config
    resolved (as a TrainConfig under "config").

    Raises:
        CheckpointError: no such file, a directory, a file that is truncated or not a
            torch checkpoint, a checkpoint holding any other object than tensors and plain
            data (refused without running it), or one written by another format version.
    """
    path = Path(path)
    where = f"checkpoint {str(path)!r}"
    if path.is_dir():
        inside = path / "checkpoint.pt"
        hint = f"; did you mean {str(inside)!r}?" if inside.is_file() else ""
        raise CheckpointError(f"{where}: is a directory, expected a checkpoint file{hint}")
    if not path.is_file():
        raise CheckpointError(f"{where}: no such file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 -- any failure to read a user's file
        raise CheckpointError(_unreadable(where, error)) from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        found = state.get("format") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(
            f"{where}: not a gfn_fast checkpoint of format {FORMAT!r} (found {found!r})"
        )
    for name, kind in _ENTRIES.items():
        if not isinstance(state.get(name), kind):
            raise CheckpointError(
                f"{where}: entry {name!r} should be a {kind.__name__}, got "
                f"{type(state.get(name)).__name__}"
            )
    state["config"] = config_from_json(state["config"], where)
    return state


def _unreadable(where: str, error: Exception) -> str:
    """One line for a torch.load failure, without torch's advice to load unsafely."""
    text = str(error)
    detail = text.split("WeightsUnpickler error:", 1)[-1]
    lines = [line.strip() for line in detail.strip().splitlines() if line.strip()]
    detail = lines[0] if lines else type(error).__name__
    refused = re.search(r"Unsupported global: GLOBAL (\S+)", detail)
    if refused:
        return (
            f"{where}: holds an object of {refused.group(1)}, not only tensors and plain "
            f"data as a gfn_fast checkpoint does; refusing to unpickle it, since that "
            f"could run arbitrary code"
        )
    return f"{where}: not a readable checkpoint (truncated, or not a torch file): {detail}"


def _require_plain(value, where: str) -> None:
    if value is None or isinstance(value, (str, int, float, bool, torch.Tensor)):
        return
    if isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            _require_plain(item, f"{where}[{index}]")
        return
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, (str, int)):
                raise TypeError(f"{where}: key {key!r} is not a string or integer")
            _require_plain(item, f"{where}[{key!r}]")
        return
    raise TypeError(f"{where}: {type(value).__name__} is not a tensor or plain data")


def atomic_write(path: Path, write: Callable[[IO], None], binary: bool = False) -> None:
    """Write a file through `write(handle)` so that `path` always holds a complete file:
    into a temporary file of the same directory, flushed to disk, then renamed over it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(temporary, "wb") if binary else open(temporary, "w", newline="") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
