"""SimCLR (notebook 06) with DistributedDataParallel: one process per GPU (or CPU process), each
slicing its own shard of every global batch, negatives gathered from all processes, and rank 0
writing an atomic checkpoint after every epoch, from which every rank resumes.

    python -m torch.distributed.run --nproc_per_node=2 scripts/ddp_simclr.py --out run.pt   # 2 CPU processes, gloo
    torchrun --nproc_per_node=8 scripts/ddp_simclr.py --out run.pt                          # 8 GPUs, nccl (SSL_PROFILE=gpu)

Written by notebooks/14_scaling_out.ipynb (do not edit here: edit the notebook's cell).
"""
import argparse
import json
import time

import torch
from torch import nn

from ssl_core import augment, checkpoint, data, distributed, losses, models, profiles

parser = argparse.ArgumentParser()
parser.add_argument("--out", required=True, help="checkpoint file (rank 0 writes it, every rank resumes from it)")
parser.add_argument("--epochs", type=int, default=1)
parser.add_argument("--batch-size", type=int, default=256, help="GLOBAL batch, split over the processes")
parser.add_argument("--n-train", type=int, default=None, help="a class-balanced subset (default: the profile's)")
parser.add_argument("--lr", type=float, default=0.06)
parser.add_argument("--tau", type=float, default=0.2)
parser.add_argument("--width", type=int, default=32)
parser.add_argument("--crop", type=int, default=24)
parser.add_argument("--backbone", default="SmallCNN", choices=["SmallCNN", "ResNet18"])
parser.add_argument("--sync-bn", action="store_true", help="SimCLR's global BN (nn.SyncBatchNorm, GPUs only)")
parser.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (benchmarks)")
parser.add_argument("--seed", type=int, default=0)
args = parser.parse_args()

profile = profiles.get_profile()                      # SSL_PROFILE, inherited from the launcher
device = distributed.setup(profile.device.type)       # gloo on the CPU, nccl on CUDA
rank, world = distributed.rank(), distributed.world_size()
torch.manual_seed(args.seed)                          # the same initial weights on every rank
train = data.load_cifar10("train")
n_train = args.n_train or profile.n_train
if n_train and n_train < len(train):
    train = train.subset(n_train, seed=args.seed)
train = train.to(device)
if args.batch_size % world:
    raise SystemExit(f"the global batch {args.batch_size} must split evenly over {world} processes")

backbone = getattr(models, args.backbone)(width=args.width)
model = nn.Sequential(backbone, models.mlp(backbone.feature_dim, 512, 128)).to(device)
if args.sync_bn:
    model = distributed.sync_batchnorm(model)         # every BN -> SyncBatchNorm (refuses gloo: GPUs only)
optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, weight_decay=5e-4)
steps_per_epoch = len(data.OnDeviceLoader(train, batch_size=args.batch_size, drop_last=True))
scheduler = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=args.epochs * steps_per_epoch)
settings = {**vars(args), "n_train": len(train)}                  # what the checkpoint must have been run with ...
for key in ("out", "max_steps"):                                    # ... except where it goes and benchmark stops
    settings.pop(key)
state = checkpoint.resume(args.out, settings=settings, model=model, optimizer=optimizer, scheduler=scheduler)  # all ranks load
ddp = nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if device.type == "cuda" else None) \
    if distributed.is_distributed() else model
augmentation = augment.simclr_augment(args.crop, strength=0.5)
if distributed.is_main():
    print(f"{world} process(es) on {device} ({profile.describe()}): {len(train)} images, global batch "
          f"{args.batch_size} = {world} x {args.batch_size // world}; start at epoch {state['epoch']}", flush=True)

for epoch in range(state["epoch"], args.epochs):
    ddp.train()
    # the same order on every rank, a new one each epoch: the global batches of
    # DistributedSampler(train, seed=args.seed) + sampler.set_epoch(epoch) (notebook 14, section 7)
    loader = data.OnDeviceLoader(train, batch_size=args.batch_size, seed=args.seed + epoch)
    views = torch.Generator(device).manual_seed(10_000 * args.seed + 100 * epoch + rank)   # my own augmentations
    t0, steps, total_loss = time.perf_counter(), 0, 0.0
    for _, x, _ in loader:
        x = x.chunk(world)[rank]                                    # (N/W, 3, 32, 32): my shard of the batch
        z1, z2 = ddp(augmentation(torch.cat([x, x]), views)).chunk(2)   # (N/W, 128) each
        loss = losses.nt_xent(distributed.gather_with_grad(z1),      # (N, 128): every process's views,
                              distributed.gather_with_grad(z2), args.tau)   # the loss of the global batch
        optimizer.zero_grad()
        loss.backward()                                             # DDP all-reduces (averages) the gradients
        optimizer.step()
        scheduler.step()
        steps, total_loss = steps + 1, total_loss + losses.check_finite(   # loss.item(), NaN-checked
            loss, step=f"{steps + 1} of epoch {epoch + 1}", tau=args.tau, lr=optimizer.param_groups[0]["lr"])
        if steps == 1:
            t1 = time.perf_counter()                                # images/s from step 2 on (no warm-up)
        if args.max_steps and steps >= args.max_steps:
            break
    seconds = time.perf_counter() - t0
    state["train_seconds"] += seconds
    state["history"].append({"epoch": epoch + 1, "loss": total_loss / steps, "seconds": round(seconds, 2),
                             "steps": steps, "images_per_s": round((steps - 1) * loader.batch_size
                                                                   / (time.perf_counter() - t1), 1) if steps > 1 else None})
    state["epoch"] = epoch + 1
    if distributed.is_main():                                       # one writer, atomic: a kill never leaves half a file
        checkpoint.save_checkpoint(args.out, model=model, optimizer=optimizer, scheduler=scheduler, settings=settings,
                                   **{k: state[k] for k in ("epoch", "history", "train_seconds")})
        print(json.dumps(state["history"][-1]), flush=True)
    distributed.barrier()                                           # nobody runs ahead of the checkpoint
    if args.max_steps:
        break
del ddp                                                             # freed before the process group (see cleanup)
distributed.cleanup()
