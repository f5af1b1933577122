"""Two-view SimCLR augmentation throughput: ssl_core's batched kernels vs the usual torchvision way.

Both sides turn the same CIFAR-10 training images into two augmented, normalised float views per
image (the network's input), with the same recipe: RandomResizedCrop(32, scale=(0.08, 1)),
horizontal flip, colour jitter (0.4, 0.4, 0.4, 0.1) with p=0.8, grayscale p=0.2, normalize.

  (a) ssl_core:     the uint8 images (N, 3, 32, 32) on the device; each batch slices a randperm
                    and calls simclr_augment() twice (per-image random parameters, batched).
  (b) torchvision:  a Dataset of PIL images decoded once up front (so this measures augmentation,
                    not JPEG decoding) whose __getitem__ applies a transforms.Compose twice;
                    DataLoader(shuffle=True, num_workers, persistent_workers).

The same number of images goes through both; the first batch (warm-up, worker start) is not timed.
When the clock starts, the other DataLoader workers already have a batch in progress, which favours
torchvision by up to (workers - 1) batches (5% at the defaults): the ratio is conservative; keep
--images at 20 or more batches.
ssl_core gets one row per --threads value (default: torch's default and 1): on a CPU shared with
other processes, multi-threaded torch ops stall on descheduled OpenMP threads, single-threaded don't.

    .venv/bin/python benchmarks/augment_throughput.py                 # defaults below
    .venv/bin/python benchmarks/augment_throughput.py --profile       # + time per ssl_core kernel

Infrastructure (a speed target of the project, never a timed test).
"""
from __future__ import annotations

import argparse
import os
import time

import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms as T

import ssl_core.augment as A
import ssl_core.color as C
from ssl_core.data import load_cifar10


def load_images(n: int) -> tuple[torch.Tensor, str]:
    """The first n CIFAR-10 training images, (n, 3, 32, 32) uint8 on the CPU, and where they came from."""
    ds = load_cifar10("train")
    return ds.images[:n], f"first {n:,} of {ds.describe()}"


# ---------------------------------------------------------------- (a) ssl_core

def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_ssl_core(images: torch.Tensor, n_batches: int, batch_size: int, device: torch.device) -> float:
    """Seconds for n_batches batches of two views each, after one warm-up batch."""
    x = images.to(device)                                               # (P, 3, 32, 32) uint8, once
    aug = A.simclr_augment(size=32)                                     # s = 0.5: jitter (0.4, 0.4, 0.4, 0.1)

    def batches():
        while True:
            order = torch.randperm(len(x), device=device)               # (P,)
            for start in range(0, len(x) - batch_size + 1, batch_size):
                yield x[order[start:start + batch_size]]                # (N, 3, 32, 32) uint8

    stream = batches()
    batch = next(stream)
    views = aug(batch), aug(batch)                                      # warm-up
    sync(device)
    start = time.perf_counter()
    for _ in range(n_batches):
        batch = next(stream)
        views = aug(batch), aug(batch)                                  # 2 x (N, 3, 32, 32) float
    sync(device)
    assert views[0].shape == (batch_size, 3, 32, 32) and views[0].dtype == torch.float32
    return time.perf_counter() - start


# ---------------------------------------------------------------- (b) torchvision

class TwoViews(Dataset):
    """PIL images in memory; each item -> (view1, view2), two independent draws of `transform`."""

    def __init__(self, images: torch.Tensor, transform):
        self.pil = [Image.fromarray(img.permute(1, 2, 0).numpy()) for img in images]
        self.transform = transform

    def __len__(self) -> int:
        return len(self.pil)

    def __getitem__(self, i):
        img = self.pil[i]
        return self.transform(img), self.transform(img)


def torchvision_simclr():
    return T.Compose([
        T.RandomResizedCrop(32, scale=(0.08, 1.0)),
        T.RandomHorizontalFlip(),
        T.RandomApply([T.ColorJitter(0.4, 0.4, 0.4, 0.1)], p=0.8),
        T.RandomGrayscale(p=0.2),
        T.ToTensor(),
        T.Normalize(A.CIFAR10_MEAN, A.CIFAR10_STD),
    ])


def time_torchvision(images: torch.Tensor, n_batches: int, batch_size: int, workers: int) -> float:
    loader = DataLoader(TwoViews(images, torchvision_simclr()), batch_size=batch_size, shuffle=True,
                        num_workers=workers, persistent_workers=workers > 0, drop_last=True)

    def batches():
        while True:
            yield from loader

    stream = batches()
    views = next(stream)                                                # warm-up, starts the workers
    start = time.perf_counter()
    for _ in range(n_batches):
        views = next(stream)
    elapsed = time.perf_counter() - start
    assert views[0].shape == (batch_size, 3, 32, 32) and views[0].dtype == torch.float32
    del stream, loader                                                  # shuts the workers down
    return elapsed


# ---------------------------------------------------------------- per-kernel profile

def profile_kernels(images: torch.Tensor, batch_size: int, device: torch.device, repeats: int = 5) -> None:
    """Milliseconds per call of each step of simclr_augment() on one batch (median of repeats)."""
    aug = A.simclr_augment(size=32)
    u8 = images[:batch_size].to(device)
    x = A.to_float(u8)
    g = torch.Generator(device=device).manual_seed(0)
    steps = {
        "to_float": lambda: A.to_float(u8),
        "random_resized_crop": lambda: A.random_resized_crop(x, 32, aug.crop_scale, aug.crop_ratio, g),
        "horizontal_flip": lambda: A.horizontal_flip(x, aug.flip_p, g),
        "color_jitter (all 4, p=0.8)": lambda: A.color_jitter(x, *aug.jitter, p=aug.jitter_p, generator=g),
        "  adjust_brightness": lambda: C.adjust_brightness(x, torch.full((len(x),), 1.2, device=device)),
        "  adjust_contrast": lambda: C.adjust_contrast(x, torch.full((len(x),), 1.2, device=device)),
        "  adjust_saturation": lambda: C.adjust_saturation(x, torch.full((len(x),), 1.2, device=device)),
        "  adjust_hue": lambda: C.adjust_hue(x, torch.full((len(x),), 0.05, device=device)),
        "    rgb_to_hsv": lambda: C.rgb_to_hsv(x),
        "    hsv_to_rgb": lambda: C.hsv_to_rgb(x),
        "random_grayscale": lambda: A.random_grayscale(x, aug.gray_p, g),
        "normalize": lambda: A.normalize(x),
        "whole simclr_augment (1 view)": lambda: aug(u8, g),
    }
    print(f"\nssl_core per-kernel time, one batch of {batch_size} on {device} (median of {repeats}):")
    for name, fn in steps.items():
        times = []
        for _ in range(repeats + 1):
            sync(device)
            t = time.perf_counter()
            fn()
            sync(device)
            times.append(time.perf_counter() - t)
        print(f"  {name:<32} {1000 * sorted(times[1:])[repeats // 2]:8.2f} ms")


# ---------------------------------------------------------------- main

def main() -> None:
    default_threads = torch.get_num_threads()
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--images", type=int, default=10_240, help="images timed on each side (two views each)")
    parser.add_argument("--pool", type=int, default=10_000, help="use the first POOL training images")
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader workers for torchvision")
    parser.add_argument("--threads", type=int, nargs="+", default=sorted({default_threads, 1}, reverse=True),
                        help="torch intra-op thread counts to time ssl_core with, one row each "
                             f"(default: {default_threads} = torch's choice, and 1)")
    parser.add_argument("--profile", action="store_true", help="also time each ssl_core kernel")
    args = parser.parse_args()
    if args.batch_size > args.pool:
        raise ValueError(f"--batch-size {args.batch_size} is larger than --pool {args.pool}")
    if min(args.threads) < 1:
        raise ValueError(f"--threads must be positive, got {args.threads}")
    device = torch.device(args.device)
    n_batches = max(1, args.images // args.batch_size)
    n = n_batches * args.batch_size

    images, source = load_images(args.pool)
    print(f"device: {device}  torch {torch.__version__}  torchvision {torchvision.__version__}  "
          f"CPU cores: {os.cpu_count()}  torch threads by default: {default_threads}")
    print(f"load average before the run: {os.getloadavg()[0]:.1f} (other processes on the cores make "
          "the figures noisy, and slow multi-threaded torch ops far more than single-threaded ones)")
    print(f"images: {source}")
    print(f"timed: {n:,} images x 2 views, batches of {args.batch_size}, after 1 warm-up batch")

    rows = []
    for threads in args.threads:
        torch.set_num_threads(threads)
        rows.append((f"(a) ssl_core on {device}, {threads} thread{'s' * (threads > 1)}",
                     time_ssl_core(images, n_batches, args.batch_size, device)))
    torch.set_num_threads(default_threads)
    t_tv = time_torchvision(images, n_batches, args.batch_size, args.workers)
    rows.append((f"(b) torchvision PIL, {args.workers} workers", t_tv))

    print(f"\n{'two views per image':<36}{'images':>8}{'seconds':>9}{'images/s':>10}{'vs torchvision':>16}")
    for name, seconds in rows:
        print(f"{name:<36}{n:>8,}{seconds:>9.2f}{n / seconds:>10,.0f}{t_tv / seconds:>15.2f}x")
    if args.profile:
        torch.set_num_threads(args.threads[-1])
        profile_kernels(images, args.batch_size, device)


if __name__ == "__main__":
    main()
