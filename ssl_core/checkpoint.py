"""Train-or-load: save and restore a run's state atomically, under a name that carries its knobs.

Infrastructure (used by every notebook's training cell):

    path = checkpoint_path("01_instdisc", profile.name, hparams)
    state = load_checkpoint(path, model=model, optimizer=optimizer)   # None -> train
    if state is None:
        ... train ...
        save_checkpoint(path, model=model, optimizer=optimizer, epoch=epoch, history=history)

Files are written to a temporary file in the same folder, flushed, fsynced and renamed over the
target (`os.replace`), so an interrupted save never leaves a half-written checkpoint behind.
Files are read with `torch.load(weights_only=True)`: no arbitrary code runs when loading.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import tempfile
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable

import torch
from torch import nn

_REPO_ROOT = Path(__file__).resolve().parents[1]

# What torch.load(weights_only=True) can read back; anything else is refused when saving.
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes,
                 torch.Tensor, torch.Size, torch.dtype, torch.device)


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file so that readers see the old file or the complete new one, never a part.

    `write(f)` writes into a binary file `f`: a temporary file in the same folder, which is
    flushed, fsynced and then renamed over `path`. On any error the temporary file is removed
    and `path` is untouched. Creates the parent folders. Returns `path`.
    Infrastructure (also used by data.py for the decoded cache and results.py for results).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.chmod(tmp, 0o644)  # mkstemp makes it private (0600); give it ordinary permissions
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _check_plain(value, where: str) -> None:
    """Raise TypeError if `value` could not be read back with weights_only=True."""
    if isinstance(value, (list, tuple)):
        for i, item in enumerate(value):
            _check_plain(item, f"{where}[{i}]")
    elif isinstance(value, (dict, OrderedDict)):
        for key, item in value.items():
            _check_plain(key, f"{where} key {key!r}")
            _check_plain(item, f"{where}[{key!r}]")
    elif not isinstance(value, _PLAIN_LEAVES):
        raise TypeError(
            f"save_checkpoint: {where} is a {type(value).__module__}.{type(value).__name__}, which "
            "torch.load(weights_only=True) cannot read back. Store tensors, numbers, str, lists and "
            "dicts of them (numpy: use .tolist() or .item(); modules/optimizers: pass the object itself)."
        )


def save_checkpoint(path, **state) -> None:
    """Save named values to `path` atomically.

    Values with a `state_dict()` (nn.Module, optimizer, LR scheduler, GradScaler ...) are stored as
    their state_dict; tensors, numbers, str, lists and dicts are stored as they are, e.g.
    `save_checkpoint(path, model=model, optimizer=opt, epoch=12, history=[{"loss": 1.2}, ...])`.
    Infrastructure.
    """
    if not state:
        raise ValueError("save_checkpoint: nothing to save; pass values by name, e.g. model=model, epoch=3")
    blob = {}
    for key, value in state.items():
        if callable(getattr(value, "state_dict", None)) and not isinstance(value, torch.Tensor):
            blob[key] = value.state_dict()
        else:
            _check_plain(value, f"value {key!r}")
            blob[key] = value
    atomic_write(path, lambda f: torch.save(blob, f))


def _device_of(objects) -> torch.device:
    """Device of the first given module's parameters (or buffers); cpu when there is none."""
    for obj in objects:
        if isinstance(obj, nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                return tensor.device
    return torch.device("cpu")


def load_checkpoint(path, **objects) -> dict | None:
    """Restore a checkpoint written by save_checkpoint; None if `path` does not exist.

    Each named object (module, optimizer, scheduler) gets `load_state_dict(checkpoint[name])`,
    in place. Tensors are mapped to the device of the first given module's parameters (cpu if
    none). Returns the remaining plain values, e.g. {"epoch": 12, "history": [...]}.
    Infrastructure.
    """
    path = Path(path)
    if not path.is_file():
        return None
    for key, obj in objects.items():
        if not callable(getattr(obj, "load_state_dict", None)):
            raise TypeError(f"load_checkpoint: {key}={type(obj).__name__} has no load_state_dict(); "
                            "pass modules, optimizers and schedulers by name; plain values come back in the result")
    try:
        blob = torch.load(path, weights_only=True, map_location=_device_of(objects.values()))
    except Exception as error:
        first_line = (str(error).strip().splitlines() or [""])[0]
        raise RuntimeError(f"could not read checkpoint {path} ({type(error).__name__}: {first_line}); "
                           "delete it to train again") from error
    if not isinstance(blob, dict):
        raise ValueError(f"{path} is not a checkpoint written by save_checkpoint (got {type(blob).__name__})")
    for key, obj in objects.items():
        if key not in blob:
            raise KeyError(f"checkpoint {path} has no {key!r}; it holds {sorted(blob)}. "
                           f"Save it with save_checkpoint(..., {key}=...) or delete the file to train again")
        try:
            obj.load_state_dict(blob[key])
        except (RuntimeError, ValueError, KeyError) as error:
            raise RuntimeError(f"checkpoint {path}: {key!r} does not fit the given {type(obj).__name__} "
                               f"(was the model changed? delete the file to train again): {error}") from error
    return {key: value for key, value in blob.items() if key not in objects}


def hparams_hash(hparams: dict) -> str:
    """8 hex characters of sha256(json.dumps(hparams, sort_keys=True, default=str)): stable across
    runs, Python versions and dict order; changes when any knob changes. Infrastructure."""
    if not isinstance(hparams, dict):
        raise TypeError(f"hparams must be a dict of the run's knobs, got {type(hparams).__name__}")
    text = json.dumps(hparams, sort_keys=True, default=str)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def checkpoint_path(name: str, profile_name, hparams: dict, root=None) -> Path:
    """<root>/<name>-<profile>-<hparams_hash(hparams)>.pt, e.g. checkpoints/01_instdisc-laptop-3f2a9c1e.pt.

    The hash means a reader who changes a knob trains afresh instead of silently loading a stale
    run. `profile_name` is a profile name or a Profile; a Profile with a seed other than 0
    ($SSL_SEED) gives <name>-<profile>-seed<k>-<hash>.pt. root: $SSL_CHECKPOINT_DIR, else
    <repo>/checkpoints (git-ignored). Infrastructure.
    """
    seed = getattr(profile_name, "seed", 0)
    profile_name = getattr(profile_name, "name", profile_name)
    for label, value in (("name", name), ("profile_name", profile_name)):
        if not isinstance(value, str) or not value or any(sep in value for sep in "/\\"):
            raise ValueError(f"checkpoint_path: {label} must be a non-empty file-name part like "
                             f"'01_instdisc' or 'laptop', got {value!r}")
    if root is None:
        root = os.environ.get("SSL_CHECKPOINT_DIR") or _REPO_ROOT / "checkpoints"
    if seed:  # another seed of the same run ($SSL_SEED): its own file
        return Path(root).expanduser() / f"{name}-{profile_name}-seed{seed}-{hparams_hash(hparams)}.pt"
    return Path(root).expanduser() / f"{name}-{profile_name}-{hparams_hash(hparams)}.pt"


def resume(path, **objects) -> dict:
    """Train-or-load: restore `path` into the given objects and return its plain values, or
    return a fresh start {"epoch": 0, "history": [], "train_seconds": 0.0} when there is no file.

    A notebook's loop runs `for epoch in range(state["epoch"], epochs)` and saves a checkpoint
    after every epoch: a finished run is skipped on re-run, an interrupted one goes on from its
    last saved epoch. Infrastructure.
    """
    state = {"epoch": 0, "history": [], "train_seconds": 0.0}
    state.update(load_checkpoint(path, **objects) or {})
    return state
