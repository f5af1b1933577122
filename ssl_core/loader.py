"""OnDeviceLoader: mini-batches sliced from tensors already on the device (randperm + indexing),
no DataLoader and no per-image Python. Notebooks use it as `data.OnDeviceLoader` (re-exported).

Infrastructure (used by every notebook), in the style of airbench.
"""

from __future__ import annotations

import math

import torch

from ssl_core.profiles import dry_run_limits


class OnDeviceLoader:
    """randperm + slicing over tensors already on the device; no DataLoader, no per-image Python.

    Yields (idx, x, y): idx (N,) int64 sample indices (memory banks need them), x (N, 3, H, W) uint8
    = images[idx], y (N,) = labels[idx] (-1 when no labels were given), all on the images' device.
    With a seed, the sequence of epochs is reproducible (the same on every device); without one,
    the global torch RNG (seed_everything) decides. Under the gpu-dry profile (profiles.py) each
    pass stops after DRY_RUN_STEPS batches of at most DRY_RUN_BATCH images. Infrastructure
    (airbench style).
    """

    def __init__(self, dataset_or_images, labels=None, batch_size=256, shuffle=True, drop_last=True,
                 seed: int | None = None):
        if hasattr(dataset_or_images, "images") and hasattr(dataset_or_images, "labels"):  # an ImageDataset
            if labels is not None:
                raise ValueError("OnDeviceLoader: labels come from the dataset; "
                                 "pass labels only with a bare images tensor")
            images, labels = dataset_or_images.images, dataset_or_images.labels
        else:
            images = dataset_or_images
            if labels is None:
                labels = torch.full((len(images),), -1, dtype=torch.int64, device=images.device)
        if len(labels) != len(images) or labels.device != images.device:
            raise ValueError(f"labels ({len(labels)} on {labels.device}) must match images "
                             f"({len(images)} on {images.device}); move both with .to(device)")
        if not isinstance(batch_size, int) or batch_size < 1:
            raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
        limits = dry_run_limits()  # a gpu-dry run: the gpu recipe, one small step per pass
        self.max_steps = None
        if limits is not None:
            self.max_steps, batch_size = limits[0], min(batch_size, limits[1])
        if drop_last and batch_size > len(images):
            raise ValueError(f"batch_size {batch_size} > {len(images)} images with drop_last=True gives no "
                             "batches at all; lower batch_size or pass drop_last=False")
        self.images, self.labels = images, labels
        self.batch_size, self.shuffle, self.drop_last = batch_size, shuffle, drop_last
        self.generator = None if seed is None else torch.Generator().manual_seed(seed)

    def __len__(self) -> int:
        n = len(self.images)
        steps = n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)
        return steps if self.max_steps is None else min(steps, self.max_steps)

    def __iter__(self):
        n = len(self.images)
        if self.shuffle:  # drawn on the CPU so a seed gives the same order on every device
            order = torch.randperm(n, generator=self.generator).to(self.images.device)  # (n,)
        else:
            order = torch.arange(n, device=self.images.device)  # (n,)
        for start in range(0, len(self) * self.batch_size, self.batch_size):
            idx = order[start:start + self.batch_size]  # (N,); the last one shorter without drop_last
            yield idx, self.images[idx], self.labels[idx]
