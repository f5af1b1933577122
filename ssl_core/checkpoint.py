"""Train-or-load: save and restore a run's state atomically, under a name that carries its knobs.

Infrastructure (used by every notebook's training cell):

    path = checkpoint_path("01_instdisc", profile.name, hparams)
    state = load_checkpoint(path, model=model, optimizer=optimizer)   # None -> train
    if state is None:
        ... train ...
        save_checkpoint(path, model=model, optimizer=optimizer, epoch=epoch, history=history)

Files are written to a temporary file in the same folder, flushed, fsynced and renamed over the
target (`os.replace`), so an interrupted save never leaves a half-written checkpoint behind (the
temporary file of a save killed outright is removed by a later save of the same file).
Files are read with `torch.load(weights_only=True)`: no arbitrary code runs when loading.

No run is silently lost or silently continued with other settings: `resume` checks at the start
that the folder is writable, refuses a checkpoint whose LR scheduler (or stored `settings`)
differs from the current run's, and the settings hash refuses values that would hash differently
in every process (functions, sets).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import math
import numbers
import os
import tempfile
import time
from collections import OrderedDict
from pathlib import Path
from typing import BinaryIO, Callable

import torch
from torch import nn

_REPO_ROOT = Path(__file__).resolve().parents[1]

# What torch.load(weights_only=True) can read back; anything else is refused when saving.
_PLAIN_LEAVES = (type(None), bool, int, float, complex, str, bytes,
                 torch.Tensor, torch.Size, torch.dtype, torch.device)
STALE_TMP_SECONDS = 600  # a temporary file untouched this long belongs to a killed save
# An LR scheduler's state entries that record progress, not settings (everything else must match on resume).
_SCHEDULER_PROGRESS = {"last_epoch", "_step_count", "_last_lr", "_get_lr_called_within_step", "verbose",
                       "_is_initial", "best", "num_bad_epochs", "cooldown_counter"}


def _remove_stale_temporaries(path: Path) -> None:
    """Delete `.<name>.*.tmp` files next to `path` that nobody has written for STALE_TMP_SECONDS:
    what a save killed outright (kill -9, power loss) leaves behind, as large as the file itself."""
    now = time.time()
    for tmp in path.parent.glob(f".{path.name}.*.tmp"):
        with contextlib.suppress(OSError):
            if now - tmp.stat().st_mtime > STALE_TMP_SECONDS:
                tmp.unlink()


def atomic_write(path, write: Callable[[BinaryIO], None]) -> Path:
    """Write a file so that readers see the old file or the complete new one, never a part.

    `write(f)` writes into a binary file `f`: a temporary file in the same folder, which is
    flushed, fsynced and then renamed over `path`. On any error the temporary file is removed
    and `path` is untouched. Creates the parent folders. Returns `path`.
    Infrastructure (also used by data.py for the decoded cache and results.py for results).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    _remove_stale_temporaries(path)
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
    `settings=` (a dict of the run's knobs) is stored normalised (see hparams_hash), so that
    `resume(path, settings=...)` can refuse a run with other settings.
    Infrastructure.
    """
    if not state:
        raise ValueError("save_checkpoint: nothing to save; pass values by name, e.g. model=model, epoch=3")
    blob = {}
    for key, value in state.items():
        if key == "settings":
            blob[key] = stable_settings(value)
        elif callable(getattr(value, "state_dict", None)) and not isinstance(value, torch.Tensor):
            blob[key] = value.state_dict()
        else:
            _check_plain(value, f"value {key!r}")
            blob[key] = value
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as error:
        raise type(error)(f"could not write the checkpoint {path} ({error}); point SSL_CHECKPOINT_DIR at a "
                          "writable folder with free space") from error


def _device_of(objects) -> torch.device:
    """Device of the first given module's parameters (or buffers); cpu when there is none."""
    for obj in objects:
        if isinstance(obj, nn.Module):
            for tensor in (*obj.parameters(), *obj.buffers()):
                return tensor.device
    return torch.device("cpu")


def load_checkpoint(path, *, settings: dict | None = None, **objects) -> dict | None:
    """Restore a checkpoint written by save_checkpoint; None if `path` does not exist.

    Each named object (module, optimizer, scheduler) gets `load_state_dict(checkpoint[name])`,
    in place. Tensors are mapped to the device of the first given module's parameters (cpu if
    none). Returns the remaining plain values, e.g. {"epoch": 12, "history": [...]}.
    Refused before anything is loaded: a scheduler whose settings (T_max, base lrs ...) differ
    from the checkpoint's, and with `settings=` a checkpoint saved with other `settings`.
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
    if settings is not None and "settings" in blob:
        _check_same_settings(path, blob["settings"], settings)
    for key, obj in objects.items():
        if key not in blob:
            raise KeyError(f"checkpoint {path} has no {key!r}; it holds {sorted(blob)}. "
                           f"Save it with save_checkpoint(..., {key}=...) or delete the file to train again")
        if isinstance(obj, torch.optim.lr_scheduler.LRScheduler):
            _check_same_schedule(path, key, obj.state_dict(), blob[key])
    for key, obj in objects.items():
        try:
            obj.load_state_dict(blob[key])
        except (RuntimeError, ValueError, KeyError) as error:
            raise RuntimeError(f"checkpoint {path}: {key!r} does not fit the given {type(obj).__name__} "
                               f"(was the model changed? delete the file to train again): {error}") from error
    return {key: value for key, value in blob.items() if key not in objects}


def _check_same_schedule(path, key: str, now: dict, saved) -> None:
    """Refuse to resume a scheduler whose settings (T_max, base_lrs, milestones ...) differ from
    the current run's: it would continue the old run's learning-rate schedule."""
    if not isinstance(saved, dict):
        return
    def is_setting(name, value) -> bool:  # numbers, strings and lists of numbers; not progress, not nested state
        if name in _SCHEDULER_PROGRESS or name not in saved:
            return False
        if isinstance(value, (list, tuple)):
            return all(isinstance(v, numbers.Real) for v in value)
        return value is None or isinstance(value, (numbers.Real, str))

    changed = [name for name, value in now.items()
               if is_setting(name, value) and stable_settings(saved[name], name) != stable_settings(value, name)]
    if changed:
        parts = ", ".join(f"{name} {saved[name]!r} there, {now[name]!r} now" for name in changed)
        raise ValueError(f"checkpoint {path} was written by a run with another schedule ({key}: {parts}); resuming "
                         "would continue the old run's learning-rate schedule. Delete the file (or use another "
                         "path) to train afresh, or go back to the old settings")


def stable_settings(value, where: str = "hparams"):
    """A run's settings as plain JSON values that hash the same in every process: numbers
    normalised (200.0 -> 200, numpy numbers -> Python numbers), tuples -> lists. Values whose
    text changes between processes are refused with a message naming them: functions and
    lambdas, sets (their order depends on the process's hash seed), objects printed with a
    memory address. Other objects (a torch.device, a dtype) are kept as their str(). Infrastructure."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        value = float(value)
        return int(value) if math.isfinite(value) and value.is_integer() else value
    if isinstance(value, (list, tuple)):
        return [stable_settings(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        out = {}
        for k, v in value.items():
            if isinstance(k, bool) or not isinstance(k, (str, int)):
                raise TypeError(f"{where}: key {k!r} is a {type(k).__name__}; settings keys must be str")
            out[str(k)] = stable_settings(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (set, frozenset)):
        raise TypeError(f"{where} is a set, whose order changes from process to process (so would the settings "
                        "hash, and every kernel restart would train afresh); use a sorted tuple instead: "
                        "tuple(sorted(...))")
    text = str(value)
    if (callable(value) and not isinstance(value, type)) or " at 0x" in text:
        raise TypeError(f"{where} is {text[:60]}, which prints differently in every process (so would the settings "
                        "hash, and every kernel restart would train afresh); store a name or a number instead, "
                        "e.g. the function's name as a string")
    return text


def _legacy_hash(hparams: dict) -> str | None:
    """The hash before numbers were normalised (200.0 and 200 differed), to find older checkpoints."""
    try:
        text = json.dumps(hparams, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return None
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def hparams_hash(hparams: dict) -> str:
    """8 hex characters of sha256(json.dumps(stable_settings(hparams), sort_keys=True)): the same
    in every run, process, Python version and dict order; changes when any knob changes; 200 and
    200.0 give the same hash. A value that would print differently in every process (a function,
    a lambda, a set) is refused with a message naming its key. Infrastructure."""
    if not isinstance(hparams, dict):
        raise TypeError(f"hparams must be a dict of the run's knobs, got {type(hparams).__name__}")
    text = json.dumps(stable_settings(hparams), sort_keys=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:8]


def _checkpoint_root(root) -> Path:
    """The checkpoint folder: `root`, else $SSL_CHECKPOINT_DIR, else <repo>/checkpoints; never a file."""
    env = os.environ.get("SSL_CHECKPOINT_DIR")
    origin = "root=" if root is not None else "SSL_CHECKPOINT_DIR=" if env else "the checkpoint folder "
    folder = Path(root if root is not None else env or _REPO_ROOT / "checkpoints").expanduser()
    if folder.exists() and not folder.is_dir():
        raise NotADirectoryError(f"{origin}{folder} is a file, not a folder; point SSL_CHECKPOINT_DIR at a folder "
                                 "for checkpoints (it is created if missing), or unset it for <repo>/checkpoints")
    return folder


def checkpoint_path(name: str, profile_name, hparams: dict, root=None) -> Path:
    """<root>/<name>-<profile>-<hparams_hash(hparams)>.pt, e.g. checkpoints/01_instdisc-laptop-3f2a9c1e.pt.

    The hash means a reader who changes a knob trains afresh instead of silently loading a stale
    run. `profile_name` is a profile name or a Profile; a Profile with a seed other than 0
    ($SSL_SEED) gives <name>-<profile>-seed<k>-<hash>.pt. root: $SSL_CHECKPOINT_DIR, else
    <repo>/checkpoints (git-ignored; a file there is refused). Settings that cannot be hashed the
    same in every process (a lambda, a set) are refused (see stable_settings). A checkpoint named
    by the hash used before numbers were normalised (when 1.0 and 1 differed) is still found.
    Infrastructure.
    """
    seed = getattr(profile_name, "seed", 0)
    profile_name = getattr(profile_name, "name", profile_name)
    for label, value in (("name", name), ("profile_name", profile_name)):
        if not isinstance(value, str) or not value or any(sep in value for sep in "/\\"):
            raise ValueError(f"checkpoint_path: {label} must be a non-empty file-name part like "
                             f"'01_instdisc' or 'laptop', got {value!r}")
    folder = _checkpoint_root(root)
    stem = f"{name}-{profile_name}-seed{seed}" if seed else f"{name}-{profile_name}"  # $SSL_SEED: its own file
    path = folder / f"{stem}-{hparams_hash(hparams)}.pt"
    legacy = _legacy_hash(hparams)  # a checkpoint written before 200.0 and 200 hashed the same
    if not path.exists() and legacy and (folder / f"{stem}-{legacy}.pt").is_file():
        return folder / f"{stem}-{legacy}.pt"
    return path


def _check_writable(folder: Path) -> None:
    """Create `folder` and write a scratch file in it, or raise naming SSL_CHECKPOINT_DIR."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise PermissionError(f"cannot write checkpoints in {folder} ({type(error).__name__}: {error}); the run "
                              "would be lost at its first save. Point SSL_CHECKPOINT_DIR at a writable folder "
                              "(to only read a checkpoint, use load_checkpoint)") from error


def _check_same_settings(path, saved, settings) -> None:
    """Refuse a checkpoint whose stored settings differ from the current run's."""
    now = stable_settings(settings, "settings")
    if not isinstance(saved, dict) or saved == now:
        return
    keys = sorted(set(saved) | set(now))
    parts = [f"{k}: {saved.get(k, '(unset)')!r} there, {now.get(k, '(unset)')!r} now"
             for k in keys if saved.get(k) != now.get(k)]
    raise ValueError(f"checkpoint {path} was written by a run with other settings ({'; '.join(parts)}); resuming "
                     "would continue the old run (its schedule, its length). Delete the file or use another path "
                     "to train afresh, or go back to the old settings")


def resume(path, settings: dict | None = None, **objects) -> dict:
    """Train-or-load: restore `path` into the given objects and return its plain values, or
    return a fresh start {"epoch": 0, "history": [], "train_seconds": 0.0} when there is no file.

    A notebook's loop runs `for epoch in range(state["epoch"], epochs)` and saves a checkpoint
    after every epoch: a finished run is skipped on re-run, an interrupted one goes on from its
    last saved epoch. Checked first, so that no epoch of work is lost or silently mixed up:
    the folder must be writable (else PermissionError naming SSL_CHECKPOINT_DIR); a scheduler in
    `objects` must have the checkpoint's settings (T_max, base lrs ...); and with `settings=`
    (the run's knobs, also passed to save_checkpoint) the stored settings must be the same.
    The notebooks' names carry the settings hash, so they need no `settings=`. Infrastructure.
    """
    path = Path(path)
    _check_writable(path.parent)
    state = {"epoch": 0, "history": [], "train_seconds": 0.0}
    state.update(load_checkpoint(path, settings=settings, **objects) or {})
    return state
