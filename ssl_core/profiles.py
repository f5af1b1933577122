"""Run budgets: one switch (SSL_PROFILE) scales every notebook from a CI smoke test to a GPU run.

Infrastructure (used by every notebook's setup cell):

    profile = get_profile()                       # $SSL_PROFILE, default "auto"
    epochs = profile.pick(smoke=1, laptop=15, gpu=200)

| profile | device          | data                            | budget                             |
|---------|-----------------|---------------------------------|------------------------------------|
| smoke   | cpu, always     | 2,000 train / 1,000 test images | whole notebook well under 2 min    |
| laptop  | cpu, always     | full                            | main training <= 5 min on 2 cores  |
| gpu     | cuda (required) | full                            | the paper's recipe at CIFAR scale  |
| gpu-dry | cpu             | 40 train / 32 test images       | the gpu recipe, 1 step per loop    |
| auto    | gpu if CUDA is available, else laptop                                                     |

gpu-dry is the gpu profile proven without a GPU (CI runs it): pick() returns the gpu values, so
every gpu-only choice (backbone, widths, crop sizes, heads, schedules) executes, but on the CPU,
with little data, `epochs()` capped at 1, every OnDeviceLoader capped at DRY_RUN_STEPS
batches of at most DRY_RUN_BATCH images, evaluate.refresh_bn_stats at DRY_RUN_BN_IMAGES images, and
the kNN's k at the number of bank images (k = 200 > 40). The caps live here, in the loader and in
evaluate, not in notebooks.

smoke and laptop run on the CPU even where CUDA exists: they define a CPU budget, and the
committed notebook outputs come from laptop runs, so they must mean the same on every machine.
"""

from __future__ import annotations

import contextlib
import difflib
import functools
import os
import random
from dataclasses import dataclass

import torch

PROFILES = ("smoke", "laptop", "gpu")
DRY_RUN_STEPS = 1     # batches per pass over an OnDeviceLoader in a gpu-dry run (one step exercises the code path)
DRY_RUN_BATCH = 32    # the largest batch in a gpu-dry run (ResNet-18 steps on 2 CPU cores)
DRY_RUN_TRAIN, DRY_RUN_TEST = 40, 32   # gpu-dry images, class-balanced; test > 30 (t-SNE, 05's 32-group probe)
DRY_RUN_BN_IMAGES = 8  # images of a BN refresh in a gpu-dry run (every evaluation refreshes; 8 keep each BN's batch > 1)
_dry_run = False      # set by get_profile(); read by data.OnDeviceLoader through dry_run_limits()


def dry_run_limits() -> tuple[int, int] | None:
    """(max steps per pass, max batch size) while a gpu-dry profile is active, else None. Infrastructure."""
    return (DRY_RUN_STEPS, DRY_RUN_BATCH) if _dry_run else None


def cpu_has_native_bf16(cpuinfo: str | None = None) -> bool:
    """True when this machine's CPU has bf16 arithmetic (x86: AVX512-BF16 or AMX-BF16; Arm: BF16),
    read from the flags of /proc/cpuinfo (or of the file `cpuinfo`); False where they cannot be
    read. This machine's answer is read once (autocast() asks every training step). Infrastructure."""
    return _this_cpu_has_bf16() if cpuinfo is None else _bf16_in_flags(cpuinfo)


def _bf16_in_flags(cpuinfo: str) -> bool:
    try:
        with open(cpuinfo) as f:
            flags = set()
            for line in f:
                if line.lower().startswith(("flags", "features")):
                    flags.update(line.split(":", 1)[1].split())
    except OSError:
        return False
    return bool(flags & {"avx512_bf16", "amx_bf16", "bf16"})


@functools.lru_cache(maxsize=1)
def _this_cpu_has_bf16() -> bool:
    return _bf16_in_flags("/proc/cpuinfo")


def describe_device(device) -> str:
    """'cpu (2 threads)' or 'cuda (NVIDIA H100 80GB HBM3)'. Infrastructure."""
    device = torch.device(device)
    if device.type == "cpu":
        return f"cpu ({torch.get_num_threads()} threads)"
    if device.type == "cuda":
        return f"cuda ({torch.cuda.get_device_name(device)})"
    return device.type


@dataclass(frozen=True)
class Profile:
    """A run budget. n_train / n_test: how many images to use (None = the full split).
    recipe: whose values pick() returns (the name itself, except "gpu" for gpu-dry). Infrastructure."""

    name: str
    device: torch.device
    n_train: int | None
    n_test: int | None
    recipe: str | None = None
    seed: int = 0   # $SSL_SEED: the run's seed (0 = the committed runs); part of the checkpoint name

    @property
    def dry_run(self) -> bool:
        return self.name == "gpu-dry"

    def pick(self, **values):
        """The value for this profile: profile.pick(smoke=1, laptop=15, gpu=200) -> 15 under laptop."""
        unknown = [key for key in values if key not in PROFILES]
        if unknown:
            hints = []
            for key in unknown:
                close = difflib.get_close_matches(key, PROFILES, n=1)
                hints.append(f"{key!r} (did you mean {close[0]!r}?)" if close else repr(key))
            raise ValueError(f"pick(): unknown profile names {', '.join(hints)}; "
                             f"valid names: {', '.join(PROFILES)}")
        recipe = self.recipe or self.name
        if recipe not in values:
            raise ValueError(f"pick(): no value for the current profile {recipe!r} "
                             f"(got {', '.join(values) or 'none'}); "
                             f"give one for each of {', '.join(PROFILES)}, e.g. pick(smoke=1, laptop=15, gpu=200)")
        return values[recipe]

    def epochs(self, **values):
        """pick() for a number of epochs (or a tuple of them): the same value, except in a gpu-dry
        run, where each is capped at 1 (together with the loader's step cap, every training loop
        then runs a single step). profile.epochs(smoke=2, laptop=6, gpu=200)."""
        value = self.pick(**values)
        if not self.dry_run:
            return value
        return tuple(min(v, 1) for v in value) if isinstance(value, (tuple, list)) else min(value, 1)

    def steps(self, **values):
        """pick() for a number of optimiser steps: the same value, except capped at DRY_RUN_STEPS
        in a gpu-dry run. profile.steps(smoke=30, laptop=560, gpu=19_500)."""
        value = self.pick(**values)
        return min(value, DRY_RUN_STEPS) if self.dry_run else value

    @property
    def mixed_precision(self) -> bool:
        """bf16 autocast in training loops: on for the gpu recipe, off with SSL_AMP=0. In a gpu-dry
        run on a CPU without bf16 arithmetic (cpu_has_native_bf16) it is off unless SSL_AMP=1 asks
        for it: there a ResNet step under bf16 autocast is emulated, about 20x slower than in
        float32 (measured on a 2-core AVX2 machine), and CI's dry run would take an hour."""
        if not _env_flag("SSL_AMP", True) or (self.recipe or self.name) != "gpu":   # a bad value fails anywhere
            return False
        forced = bool(os.environ.get("SSL_AMP", "").strip())           # SSL_AMP=1 (0 returned above)
        return forced or not (self.dry_run and self.device.type == "cpu") or cpu_has_native_bf16()

    def autocast(self):
        """The context for a training step's forward pass and loss:

            with profile.autocast():
                loss = criterion(model(x), ...)
            loss.backward()

        bf16 autocast under the gpu recipe (on CUDA; on the CPU in a gpu-dry run, so that CI runs
        the same dtype paths), a no-op under smoke and laptop. Parameters, optimiser state, banks
        and queues stay float32; on CUDA, autocast runs softmax, log-softmax and cross-entropy in
        float32 (its CPU policy is narrower). bf16 needs no loss scaling (fp16 would)."""
        if not self.mixed_precision:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=torch.bfloat16)

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        """The gpu recipe's speed-ups for a model, in place; returns the model. channels_last memory
        for convolutional nets (what cuDNN's bf16 kernels want), and with SSL_COMPILE=1
        torch.compile through model.compile() (in place, so parameter names and checkpoints do not
        change; the first steps pay the compile time). A no-op under smoke and laptop."""
        compile_model = _env_flag("SSL_COMPILE", False)  # read first: a bad value fails under every profile
        if (self.recipe or self.name) != "gpu":
            return model
        if any(isinstance(m, torch.nn.Conv2d) for m in model.modules()):
            model.to(memory_format=torch.channels_last)
        if compile_model:
            model.compile()
        return model

    def describe(self) -> str:
        """'profile laptop on cpu (2 threads)' / 'profile gpu on cuda (NVIDIA H100 80GB HBM3)'."""
        if self.dry_run:
            return (f"profile gpu-dry (the gpu recipe on {describe_device(self.device)}: {self.n_train} images, "
                    f"<= {DRY_RUN_STEPS} step(s) of <= {DRY_RUN_BATCH} per loop, bf16 autocast "
                    f"{'on' if self.mixed_precision else 'off: this CPU has no bf16 arithmetic (SSL_AMP=1 forces it)'})")
        return f"profile {self.name} on {describe_device(self.device)}"


def get_profile(name: str | None = None) -> Profile:
    """The profile named `name`, else $SSL_PROFILE, else "auto" (gpu with CUDA, otherwise laptop).

    smoke and laptop always run on the CPU; gpu needs CUDA. Infrastructure.
    """
    global _dry_run
    seed = _seed_from_env()
    requested = name if name is not None else os.environ.get("SSL_PROFILE", "auto")
    chosen = str(requested).strip().lower() or "auto"
    if chosen == "auto":
        chosen = "gpu" if torch.cuda.is_available() else "laptop"
    _dry_run = chosen == "gpu-dry"
    if _dry_run:
        return Profile("gpu-dry", torch.device("cpu"), n_train=DRY_RUN_TRAIN, n_test=DRY_RUN_TEST, recipe="gpu", seed=seed)
    if chosen not in PROFILES:
        origin = "get_profile()" if name is not None else "SSL_PROFILE"
        raise ValueError(f"unknown profile {requested!r} (from {origin}); valid names: {', '.join(PROFILES)}, gpu-dry, auto. "
                         "Set it with the environment variable (SSL_PROFILE=laptop) "
                         "or in code (get_profile(\"laptop\")).")
    if chosen == "gpu" and not torch.cuda.is_available():
        raise ValueError("profile 'gpu' needs CUDA, and torch.cuda.is_available() is False on this machine; "
                         "use the CPU budget instead: SSL_PROFILE=laptop (or get_profile(\"laptop\")); "
                         "SSL_PROFILE=gpu-dry runs the gpu recipe's code for one step per loop on the CPU.")
    if chosen == "smoke":
        return Profile("smoke", torch.device("cpu"), n_train=2000, n_test=1000, seed=seed)
    device = torch.device("cuda" if chosen == "gpu" else "cpu")
    return Profile(chosen, device, n_train=None, n_test=None, seed=seed)


_TRUE, _FALSE = ("1", "true", "on", "yes"), ("0", "false", "off", "no")


def _env_flag(name: str, default: bool) -> bool:
    """An on/off environment switch (SSL_AMP, SSL_COMPILE): 1/0, true/false, on/off, yes/no in any
    case; unset or empty gives `default`; anything else is refused, naming the variable."""
    text = os.environ.get(name, "").strip().lower()
    if not text:
        return default
    if text in _TRUE or text in _FALSE:
        return text in _TRUE
    raise ValueError(f"{name}={os.environ[name]!r} is not an on/off value; use {name}=1 or {name}=0 "
                     f"(also true/false, on/off, yes/no), or unset it for the default ({int(default)})")


def _seed_from_env() -> int:
    """$SSL_SEED as a non-negative int (default 0). Notebooks seed with profile.seed, so
    `SSL_SEED=1` repeats a run with other random draws (initialisation, batches, augmentations);
    the seed-to-seed spread of a recipe is measured this way (results/seeds/)."""
    text = os.environ.get("SSL_SEED", "0").strip() or "0"
    try:
        seed = int(text)
    except ValueError:
        seed = -1
    if seed < 0:
        raise ValueError(f"SSL_SEED must be a non-negative integer like 0, 1 or 2, got {text!r}; "
                         "unset it for the committed runs' seed 0.")
    return seed


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python's random, torch (CPU and all GPUs) and numpy if installed; return a fresh
    torch.Generator seeded with `seed` for code that wants its own stream. Infrastructure."""
    if isinstance(seed, bool) or not isinstance(seed, int):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    random.seed(seed)
    torch.manual_seed(seed)  # also seeds every CUDA device
    try:
        import numpy
    except ImportError:
        pass
    else:
        numpy.random.seed(seed % 2**32)
    return torch.Generator().manual_seed(seed)
