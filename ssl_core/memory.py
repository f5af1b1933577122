"""Memory of past embeddings: MemoryBank (one vector per training image).

Built in: notebooks/01_instdisc.ipynb (MemoryBank).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


class MemoryBank(nn.Module):
    """One unit-norm D-dim vector per training image (M rows), InstDisc's non-parametric
    "classifier": row i stands in for the weight vector of class i.

    Rows start as random unit vectors; after image i is seen with feature f_i, row i is moved
    towards it with proximal momentum (Wu et al. 2018, Sec. 3.2-3.3):
        v_i <- normalize(momentum * v_i + (1 - momentum) * f_i)
    A buffer, so `.to(device)` and `state_dict()` (checkpoints) carry it.

    Built in: notebooks/01_instdisc.ipynb
    """

    def __init__(self, size: int, dim: int = 128, momentum: float = 0.5, seed: int = 0):
        super().__init__()
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
        idx = torch.randint(0, len(self), (m,), device=self.memory.device, generator=generator)
        return self.memory[idx]                                        # (m, D)

    @torch.no_grad()
    def update_(self, idx: Tensor, features: Tensor) -> None:
        """v_idx <- normalize(momentum v_idx + (1 - momentum) f); features (N, D), idx (N,)."""
        if features.shape != (idx.shape[0], self.memory.shape[1]):
            raise ValueError(f"features must be (N, {self.memory.shape[1]}) matching idx (N,), "
                             f"got {tuple(features.shape)} and {tuple(idx.shape)}")
        mixed = self.momentum * self.memory[idx] + (1 - self.momentum) * features.detach()
        self.memory[idx] = F.normalize(mixed, dim=1)
