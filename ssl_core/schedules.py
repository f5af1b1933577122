"""Schedules as per-step tensors: value[step] for every optimisation step of a run.

A whole schedule is one tensor, so it can be plotted before training and indexed inside the
loop (no scheduler object whose state must be checkpointed).

Built in: notebooks/07_moco_v2.ipynb
"""
from __future__ import annotations

import math

import torch

from ssl_core import checks


def cosine_schedule(base: float, final: float, total_steps: int, warmup_steps: int = 0,
                    warmup_start: float = 0.0) -> torch.Tensor:
    """(total_steps,) values: linear warm-up from `warmup_start` to `base` over `warmup_steps`,
    then half a cosine from `base` to `final` (Loshchilov & Hutter 2017):
        value(t) = final + (base - final) * (1 + cos(pi * t / T)) / 2,  t = 0 .. T-1 after warm-up.
    Learning rates (MoCo v2, SimCLR) and EMA momenta rising to 1 (BYOL, DINO) alike.

    Built in: notebooks/07_moco_v2.ipynb
    """
    if total_steps < 1 or not 0 <= warmup_steps <= total_steps:
        raise ValueError(f"need total_steps >= 1 and 0 <= warmup_steps <= total_steps, got "
                         f"total_steps={total_steps}, warmup_steps={warmup_steps}")
    checks.positive_int(total_steps, "cosine_schedule: total_steps")
    checks.positive_int(warmup_steps, "cosine_schedule: warmup_steps", minimum=0)
    for name, value in (("base", base), ("final", final), ("warmup_start", warmup_start)):
        checks.number(value, f"cosine_schedule: {name}")
    warmup = torch.linspace(warmup_start, base, warmup_steps + 1)[1:] if warmup_steps else torch.empty(0)
    t = torch.arange(total_steps - warmup_steps, dtype=torch.float64)
    cosine = final + (base - final) * (1 + torch.cos(math.pi * t / max(len(t), 1))) / 2
    return torch.cat([warmup.double(), cosine]).float()
