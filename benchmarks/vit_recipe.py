"""Short MoCo v3 runs with a ViT for notebook 12's recipe: the stem, the initialisation, the crop and
the learning rate, one run per call, scored by kNN on held-out training images.

Everything but the named knobs is 12's loop: the ViT's [CLS] feature -> 3-layer projector -> 2-layer
predictor (BN in the heads, as the authors'), a momentum copy of backbone + projector, the
symmetric in-batch loss times 2 tau, AdamW with a linear warm-up then a cosine, the momentum on a
cosine from m to 1, BYOL's asymmetric augmentation pair. The stem:

    --stem patch     one linear patch projection, trained
    --stem frozen    the same projection at its random initialisation, never trained (MoCo v3's fix)
    --stem conv      a small convolutional stem (ViT(stem="conv"); Xiao et al. 2021), trained

    .venv/bin/python benchmarks/vit_recipe.py --tag frozen --stem frozen --steps 200
    .venv/bin/python benchmarks/vit_recipe.py --tag conv --stem conv --steps 200 --seed 1

The ViT is trained and evaluated on the same token grid: crops of --size pixels, and the kNN images
resized to --size as well (32: the stored images, no resize). Held-out protocol of
benchmarks/heldout.py (5,000 queries never trained on, a 10,000-image bank); `--test` trains on all
50,000 images and scores on the CIFAR-10 test set (to compare with a notebook's number, never to
choose a knob). Each run appends one JSON line to --out.

Infrastructure (a research aid for 12's prose; never a timed test).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from heldout import Run, heldout_split, test_split
from ssl_core import augment, data, models, momentum, schedules


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default="run")
    p.add_argument("--stem", choices=("patch", "frozen", "conv"), default="frozen")
    p.add_argument("--init", choices=("trunc_normal", "mocov3"), default="mocov3")
    p.add_argument("--patch", type=int, default=4); p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4); p.add_argument("--heads", type=int, default=4)
    p.add_argument("--size", type=int, default=32, help="crop size = evaluation size")
    p.add_argument("--crop-min", type=float, default=0.08, help="smallest crop area (authors' ViT: 0.08)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--lr", type=float, default=1e-3, help="AdamW lr per 256 images")
    p.add_argument("--wd", type=float, default=0.1)
    p.add_argument("--warmup", type=float, default=0.1, help="fraction of --steps")
    p.add_argument("--tau", type=float, default=0.2)
    p.add_argument("--m", type=float, default=0.99)
    p.add_argument("--hidden", type=int, default=1024); p.add_argument("--out-dim", type=int, default=256)
    p.add_argument("--steps", type=int, default=200, help="training steps (the schedules' length)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--test", action="store_true", help="train on all 50k, score on the test set")
    p.add_argument("--out", default="")
    return p.parse_args()


def ctr(q, k, tau):
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)
    return 2 * tau * F.cross_entropy(q @ k.T / tau, torch.arange(len(q)))


def main() -> None:
    a = parse_args()
    torch.manual_seed(a.seed)
    train = data.load_cifar10("train")
    split = test_split(train, data.load_cifar10("test")) if a.test else heldout_split(train)
    knn = lambda net: split.knn(net, augment.preprocess_at(a.size))

    backbone = models.ViT(image_size=a.size, patch_size=a.patch, dim=a.dim, depth=a.depth, heads=a.heads,
                          stem="conv" if a.stem == "conv" else "patch", init=a.init)
    if a.stem == "frozen":
        backbone.freeze_patch_embed_()
    projector = models.mlp(a.dim, a.hidden, a.hidden, a.out_dim, last_bn=True)
    predictor = models.mlp(a.out_dim, a.hidden, a.out_dim, last_bn=True)
    f_q = nn.Sequential(backbone, projector)
    f_k = momentum.copy_frozen(f_q)
    lr = a.lr * a.batch / 256
    params = [p for p in (*f_q.parameters(), *predictor.parameters()) if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=a.wd)
    lrs = schedules.cosine_schedule(lr, 0.0, a.steps, warmup_steps=int(a.warmup * a.steps))
    ms = schedules.cosine_schedule(a.m, 1.0, a.steps)
    view1, view2 = augment.byol_augment(size=a.size, crop_scale=(a.crop_min, 1.0))
    loader = data.OnDeviceLoader(split.fit, batch_size=a.batch, shuffle=True, drop_last=True, seed=a.seed)
    run = Run(a, knn, backbone, loss_window=20, split="test" if a.test else "held-out")
    for x in run.batches(loader):
        for g in opt.param_groups:
            g["lr"] = lrs[run.step].item()
        f_q.train(); predictor.train(); f_k.train()
        x1, x2 = view1(x), view2(x)
        q1, q2 = predictor(f_q(x1)), predictor(f_q(x2))
        with torch.no_grad():
            momentum.ema_update_(f_k, f_q, ms[run.step].item())
            k1, k2 = f_k(x1), f_k(x2)
        loss = ctr(q1, k2, a.tau) + ctr(q2, k1, a.tau)
        opt.zero_grad(); loss.backward(); opt.step()
        run.loss(loss)
    run.finish()


if __name__ == "__main__":
    main()
