"""Where a training step's time goes: augmentation vs the network, for notebook 06's SimCLR step,
and what the gpu recipe's speed-ups (bf16 autocast, channels_last, torch.compile) buy.

DESIGN's rule for the gpu path is that nothing leaves the device inside the training loop: data,
augmentation and model all run where the model runs. This prints the share of a step spent in
augmentation (two views of a batch, ssl_core's batched kernels) against forward + backward +
optimiser step, measured with explicit synchronisation, for the profile's backbone, batch and crop
size. Target on a GPU: augmentation < 10% of the step.

    .venv/bin/python benchmarks/step_split.py                        # laptop: SmallCNN on the CPU
    .venv/bin/python benchmarks/step_split.py --compare              # + channels_last, compile, bf16, side by side
    .venv/bin/python benchmarks/step_split.py --profile gpu --compare   # ResNet-18 on CUDA

Each variant builds a fresh network in the same process; warm-up steps (where torch.compile
compiles) are timed separately and not counted in images/s.

Infrastructure (a speed check of the project, never a timed test).
"""
from __future__ import annotations

import argparse
import time

import torch

from ssl_core import augment, data, losses, models, profiles

VARIANTS = {"float32": {}, "channels_last": {"channels_last": True}, "compile": {"compile": True},
            "bf16 autocast": {"amp": True}, "bf16 + channels_last": {"amp": True, "channels_last": True}}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def measure(profile, images, steps: int, warmup: int, amp=False, channels_last=False, compile=False) -> dict:
    dev = profile.device
    batch = profile.pick(smoke=128, laptop=256, gpu=512)
    if profile.dry_run:                                                  # the gpu recipe on a CPU: small batches
        batch = min(batch, profiles.DRY_RUN_BATCH)
    crop = profile.pick(smoke=24, laptop=24, gpu=32)
    width = profile.pick(smoke=16, laptop=32, gpu=64)
    torch.manual_seed(0)
    backbone = profile.pick(smoke=models.SmallCNN, laptop=models.SmallCNN, gpu=models.ResNet18)(width=width)
    net = torch.nn.Sequential(backbone, models.mlp(backbone.feature_dim, 512, 128)).to(dev)
    if channels_last:
        net = net.to(memory_format=torch.channels_last)
    if compile:
        net.compile()
    opt = torch.optim.SGD(net.parameters(), lr=0.06, momentum=0.9)
    aug = augment.simclr_augment(size=crop)
    t_aug = t_net = 0.0
    t_start = time.perf_counter()
    for step in range(warmup + steps):
        if step == warmup:
            sync(dev); t_warm = time.perf_counter() - t_start
        x = images[torch.randint(len(images), (batch,), device=dev)]
        sync(dev); t0 = time.perf_counter()
        views = aug(torch.cat([x, x]))                                   # (2B, 3, crop, crop) float
        sync(dev); t1 = time.perf_counter()
        if channels_last:
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=amp):
            z1, z2 = net(views).float().chunk(2)
        loss = losses.nt_xent(z1, z2, 0.2)
        opt.zero_grad(); loss.backward(); opt.step()
        sync(dev); t2 = time.perf_counter()
        if step >= warmup:
            t_aug += t1 - t0; t_net += t2 - t1
    total = t_aug + t_net
    return {"model": f"{type(backbone).__name__}(width={width})", "batch": batch, "crop": crop,
            "aug_ms": 1000 * t_aug / steps, "net_ms": 1000 * t_net / steps, "aug_share": t_aug / total,
            "images_per_s": steps * batch / total, "warmup_s": t_warm}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="laptop", choices=["laptop", "gpu", "gpu-dry"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps per variant (after the warm-up)")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (torch.compile compiles here)")
    parser.add_argument("--compare", action="store_true", help="every variant side by side, not just float32")
    args = parser.parse_args()
    profile = profiles.get_profile(args.profile)
    images = data.load_cifar10("train").to(profile.device).images[:4096]
    names = list(VARIANTS) if args.compare else ["float32"]
    rows = {name: measure(profile, images, args.steps, args.warmup, **VARIANTS[name]) for name in names}
    first = rows[names[0]]
    print(f"{profile.describe()}: {first['model']}, batch {first['batch']} x 2 views at {first['crop']} px, "
          f"{args.steps} timed steps")
    print(f"{'variant':22s} {'augment ms':>10s} {'network ms':>10s} {'aug share':>9s} {'images/s':>9s} "
          f"{'vs float32':>10s} {'warm-up s':>9s}")
    for name, r in rows.items():
        print(f"{name:22s} {r['aug_ms']:10.1f} {r['net_ms']:10.1f} {100 * r['aug_share']:8.1f}% "
              f"{r['images_per_s']:9,.0f} {r['images_per_s'] / first['images_per_s']:9.2f}x {r['warmup_s']:9.1f}")


if __name__ == "__main__":
    main()
