"""Where a training step's time goes: augmentation vs the network, for notebook 06's SimCLR step.

DESIGN's rule for the gpu path is that nothing leaves the device inside the training loop: data,
augmentation and model all run where the model runs. This prints the share of a step spent in
augmentation (two views of a batch, ssl_core's batched kernels) against forward + backward +
optimiser step, measured with explicit synchronisation, for the profile's backbone, batch and crop
size. Target on a GPU: augmentation < 10% of the step.

    .venv/bin/python benchmarks/step_split.py                       # laptop: SmallCNN on the CPU
    .venv/bin/python benchmarks/step_split.py --profile gpu         # ResNet-18 on CUDA
    .venv/bin/python benchmarks/step_split.py --profile gpu --amp   # + bf16 autocast, channels_last

Infrastructure (a speed check of the project, never a timed test).
"""
from __future__ import annotations

import argparse
import time

import torch

from ssl_core import augment, data, losses, models, profiles


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--profile", default="laptop", choices=["laptop", "gpu", "gpu-dry"])
    parser.add_argument("--steps", type=int, default=20, help="timed steps (after 3 warm-up steps)")
    parser.add_argument("--amp", action="store_true", help="bf16 autocast + channels_last for the network")
    args = parser.parse_args()
    profile = profiles.get_profile(args.profile)
    dev = profile.device
    batch = profile.pick(smoke=128, laptop=256, gpu=512)
    crop = profile.pick(smoke=24, laptop=24, gpu=32)
    width = profile.pick(smoke=16, laptop=32, gpu=64)
    backbone = profile.pick(smoke=models.SmallCNN, laptop=models.SmallCNN, gpu=models.ResNet18)(width=width)
    net = torch.nn.Sequential(backbone, models.mlp(backbone.feature_dim, 512, 128)).to(dev)
    if args.amp:
        net = net.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(net.parameters(), lr=0.06, momentum=0.9)
    images = data.load_cifar10("train").to(dev).images[: max(batch * 4, 2048)]
    aug = augment.simclr_augment(size=crop)
    t_aug = t_net = 0.0
    for step in range(3 + args.steps):
        x = images[torch.randint(len(images), (batch,), device=dev)]
        sync(dev); t0 = time.perf_counter()
        views = aug(torch.cat([x, x]))                                   # (2B, 3, crop, crop) float
        sync(dev); t1 = time.perf_counter()
        if args.amp:
            views = views.contiguous(memory_format=torch.channels_last)
        with torch.autocast(dev.type, dtype=torch.bfloat16, enabled=args.amp):
            z1, z2 = net(views).float().chunk(2)
        loss = losses.nt_xent(z1, z2, 0.2)
        opt.zero_grad(); loss.backward(); opt.step()
        sync(dev); t2 = time.perf_counter()
        if step >= 3:
            t_aug += t1 - t0; t_net += t2 - t1
    total = t_aug + t_net
    print(f"{profile.describe()}: {type(backbone).__name__}(width={width}), batch {batch} x 2 views at {crop} px"
          f"{', bf16 + channels_last' if args.amp else ''}")
    print(f"  augmentation {1000 * t_aug / args.steps:.1f} ms/step ({100 * t_aug / total:.1f}%), "
          f"network {1000 * t_net / args.steps:.1f} ms/step ({100 * t_net / total:.1f}%), "
          f"{args.steps * batch / total:,.0f} images/s")


if __name__ == "__main__":
    main()
