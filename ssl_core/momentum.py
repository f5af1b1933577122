"""Momentum (EMA) copies of a network: MoCo's key encoder, BYOL's target, DINO's teacher.

    theta_k <- m theta_k + (1 - m) theta_q        (He et al. 2019, eq. 2)

Built in: notebooks/05_moco_v1.ipynb
"""
from __future__ import annotations

import copy

import torch
from torch import nn


def copy_frozen(model: nn.Module) -> nn.Module:
    """A deep copy of `model` with requires_grad=False everywhere: the initial key encoder
    (theta_k = theta_q at step 0). It is updated by `ema_update_`, never by an optimizer.

    Built in: notebooks/05_moco_v1.ipynb
    """
    frozen = copy.deepcopy(model)
    for p in frozen.parameters():
        p.requires_grad_(False)
    return frozen


@torch.no_grad()
def ema_update_(target: nn.Module, online: nn.Module, m: float) -> None:
    """theta_target <- m theta_target + (1 - m) theta_online, parameter by parameter.

    m = 0 copies the online network (the key encoder *is* the query encoder); m -> 1 freezes
    the target. Buffers (batch-norm running statistics) are copied from the online network.
    MoCo's code does *not* do this: there the key encoder runs in train mode, normalises with
    batch statistics and keeps its own running statistics. We copy so that a target used in
    eval mode (a kNN of the key encoder, DINO's teacher) has the online network's statistics;
    in train mode a BN layer normalises with batch statistics, so the copy does not change a
    training step. Both networks must have the same architecture, and the target must be frozen
    (requires_grad=False, as copy_frozen makes it): that catches the two networks swapped.

    Built in: notebooks/05_moco_v1.ipynb
    """
    if not 0.0 <= m <= 1.0:
        raise ValueError(f"momentum m must be in [0, 1], got {m}")
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if len(t_params) != len(o_params) or any(t.shape != o.shape for t, o in zip(t_params, o_params)):
        raise ValueError("target and online must have the same architecture (make the target "
                         "with copy_frozen(online))")
    if any(t.requires_grad for t in t_params):
        raise ValueError("ema_update_(target, online, m): the target has trainable parameters; are the first two "
                         "arguments swapped? The target (key encoder, teacher) comes first and is made with "
                         "copy_frozen(online), which sets requires_grad=False")
    for t, o in zip(t_params, o_params):
        t.mul_(m).add_(o.detach(), alpha=1 - m)
    for t, o in zip(target.buffers(), online.buffers()):
        t.copy_(o)
