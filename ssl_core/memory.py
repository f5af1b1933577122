"""Memory of past embeddings: MemoryBank (one vector per training image) and Queue (a FIFO
ring buffer of the most recent keys).

Built in: notebooks/01_instdisc.ipynb (MemoryBank), notebooks/05_moco_v1.ipynb (Queue).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ssl_core import checks

Tensor = torch.Tensor
UNIT_TOLERANCE = 0.02  # |norm - 1| allowed for a "unit" key (bf16 rounding is ~0.004)


def _check_now(module: nn.Module, t: Tensor) -> bool:
    """Whether to run the value checks of an update: on the CPU always; on a GPU only the first
    time (reading values back waits for the GPU; a wrong setup shows at the first step, and a
    NaN appearing later is caught by the loss, see losses.check_finite)."""
    first = not getattr(module, "_checked_once", False)
    module._checked_once = True
    return first or t.device.type == "cpu"


class MemoryBank(nn.Module):
    """One unit-norm D-dim vector per training image (M rows), InstDisc's non-parametric
    "classifier": row i stands in for the weight vector of class i.

    Rows start as random unit vectors; after image i is seen with feature f_i, row i is moved
    towards it with momentum, as the authors' code does (`--nce-m 0.5`):
        v_i <- normalize(momentum * v_i + (1 - momentum) * f_i)
    This is not the paper's proximal regularisation (Wu et al. 2018, Sec. 3.3), which writes
    v_i <- f_i and adds lambda * ||f_i - v_i||^2 to the LOSS (a gradient on the network);
    both damp the bank's jumps between epochs, but they are different algorithms.
    A buffer, so `.to(device)` and `state_dict()` (checkpoints) carry it.

    Built in: notebooks/01_instdisc.ipynb
    """

    def __init__(self, size: int, dim: int = 128, momentum: float = 0.5, seed: int = 0):
        super().__init__()
        checks.positive_int(size, "MemoryBank size (one row per training image: len(train))")
        checks.positive_int(dim, "MemoryBank dim")
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"momentum must be in [0, 1), got {momentum}")
        self.momentum = momentum
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("memory", F.normalize(torch.randn(size, dim, generator=g), dim=1))  # (M, D)

    def __len__(self) -> int:
        return self.memory.shape[0]

    def sample(self, m: int, generator=None) -> Tensor:
        """m rows drawn uniformly (with replacement), shared by the whole batch: (m, D).

        The paper draws m noise rows per image; one draw per batch has the same expectation
        and turns an (N, m, D) gather into one (N, D) x (D, m) matrix product.
        """
        checks.positive_int(m, "MemoryBank.sample: m (the number of noise rows)")
        idx = torch.randint(0, len(self), (m,), device=self.memory.device, generator=generator)
        return self.memory[idx]                                        # (m, D)

    @torch.no_grad()
    def update_(self, idx: Tensor, features: Tensor) -> None:
        """v_idx <- normalize(momentum v_idx + (1 - momentum) f); features (N, D), idx (N,)."""
        if features.shape != (idx.shape[0], self.memory.shape[1]):
            raise ValueError(f"features must be (N, {self.memory.shape[1]}) matching idx (N,), "
                             f"got {tuple(features.shape)} and {tuple(idx.shape)}")
        if idx.is_floating_point() or idx.dtype == torch.bool:
            raise TypeError(f"MemoryBank.update_: idx must be integer row indices (the loader's idx), got {idx.dtype}")
        if idx.numel() and _check_now(self, idx):
            low, high = int(idx.min()), int(idx.max())
            if low < 0 or high >= len(self):
                raise IndexError(f"MemoryBank.update_: idx must be training indices in [0, {len(self)}), got values "
                                 f"from {low} to {high}; pass the idx the loader yields, with a bank of len(train) rows")
            if not bool(torch.isfinite(features).all()):
                raise ValueError("MemoryBank.update_: features contain NaN or inf; the loss has diverged "
                                 "(lower the learning rate) or a zero vector was normalised")
        mixed = self.momentum * self.memory[idx] + (1 - self.momentum) * features.detach().to(self.memory.dtype)
        self.memory[idx] = F.normalize(mixed, dim=1)


class Queue(nn.Module):
    """MoCo's dictionary: the K most recent keys, a FIFO ring buffer (He et al. 2019, Sec. 3.2).

    Each step enqueues the current mini-batch's keys and dequeues the oldest ones, so the
    dictionary size K is decoupled from the batch size. `keys` (K, D) holds the entries in
    ring order; `ptr` is where the next batch is written. Starts as random unit vectors (as
    MoCo does), so it is usable as negatives from the first step. A buffer, so `.to(device)`
    and checkpoints carry it.

    Keys must be finite unit vectors (normalise them with F.normalize first; |norm - 1| <= 0.02
    is accepted for bf16); `unit_keys=False` stores any finite vectors.

    Built in: notebooks/05_moco_v1.ipynb
    """

    def __init__(self, size: int, dim: int = 128, seed: int = 0, unit_keys: bool = True):
        super().__init__()
        if size < 1:
            raise ValueError(f"queue size must be >= 1, got {size}")
        checks.positive_int(size, "Queue size (the number of keys K)")
        checks.positive_int(dim, "Queue dim")
        self.unit_keys = unit_keys
        g = torch.Generator().manual_seed(seed)
        self.register_buffer("keys", F.normalize(torch.randn(size, dim, generator=g), dim=1))  # (K, D)
        self.register_buffer("ptr", torch.zeros((), dtype=torch.long))

    def __len__(self) -> int:
        return self.keys.shape[0]

    @torch.no_grad()
    def enqueue_(self, k: Tensor) -> None:
        """Write keys k (N, D) over the N oldest entries (wrapping around): enqueue + dequeue."""
        if k.dim() != 2 or k.shape[1] != self.keys.shape[1]:
            raise ValueError(f"keys must be (N, {self.keys.shape[1]}), got {tuple(k.shape)}")
        if len(k) > len(self):
            raise ValueError(f"a batch of {len(k)} keys does not fit a queue of {len(self)}; "
                             "use a queue at least as large as the batch")
        if _check_now(self, k):
            norms = k.detach().float().norm(dim=1)                                     # (N,)
            if not bool(torch.isfinite(norms).all()):
                raise ValueError("Queue.enqueue_: keys contain NaN or inf; the loss has diverged "
                                 "(lower the learning rate) or a zero vector was normalised")
            worst = float((norms - 1).abs().max()) if len(norms) else 0.0
            if self.unit_keys and worst > UNIT_TOLERANCE:
                raise ValueError(f"Queue.enqueue_: keys must be unit vectors (MoCo's negatives are cosines), got "
                                 f"norms up to {float(norms.max()):.3g}; enqueue F.normalize(k, dim=1), or make "
                                 "the queue with unit_keys=False to store other vectors")
        slots = (self.ptr + torch.arange(len(k), device=self.keys.device)) % len(self)   # (N,)
        self.keys[slots] = k.detach().to(self.keys.dtype)   # bf16 keys under autocast: stored in float32
        self.ptr.copy_((self.ptr + len(k)) % len(self))
