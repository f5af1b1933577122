"""Short BYOL training runs for notebook 09's laptop recipe, each scored by kNN on held-out training
images (never on the test split).

One run per call, everything but the named knobs fixed to 09's laptop recipe (SmallCNN(32), batch 256,
20 px crops of scale (0.08, 1), BYOL's views without blur, projector and predictor 512-128 with hidden
BN, SGD lr 0.06 cosine, predictor lr x10, weight decay 5e-4, tau from 0.99 to 1 along a cosine, the
loss L + L~ of the paper):

    .venv/bin/python benchmarks/byol_recipe.py --tag 09 --steps 1170                     # 09's main run
    .venv/bin/python benchmarks/byol_recipe.py --tag b128 --batch 128 --steps 1950       # more, smaller steps
    .venv/bin/python benchmarks/byol_recipe.py --tag crop --crop-scale 0.2 --steps 1170  # 07's crop scale
    .venv/bin/python benchmarks/byol_recipe.py --tag tau --tau 0.98 0.995 --steps 1170   # a target that never freezes

Held-out protocol (as benchmarks/dino_probe.py and moco_recipe.py): the class-sorted training set is
shuffled with a fixed seed; the first 5,000 images are kNN queries, the next 10,000 the kNN bank, and
the other 45,000 (the bank among them) the training images. Weighted kNN, k = 200, T = 0.1, at 32 px,
with the series' BN refresh. Each run appends one JSON line to --out.

Infrastructure (a research aid for 09's prose; never a timed test).
"""
from __future__ import annotations

import argparse

import torch
from torch import nn

from heldout import Run, heldout_split
from ssl_core import augment, data, losses, models, momentum, schedules


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default="run")
    p.add_argument("--steps", type=int, default=1170)
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--crop", type=int, default=20)
    p.add_argument("--crop-scale", type=float, default=0.08, help="smallest crop, fraction of the image area")
    p.add_argument("--blur", action="store_true", help="BYOL's blur (view 1 always, view 2 p = 0.1)")
    p.add_argument("--lr", type=float, default=0.06); p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--pred-lr-mult", type=float, default=10.0)
    p.add_argument("--tau", type=float, nargs=2, default=(0.99, 1.0), help="target momentum, start and end of a cosine")
    p.add_argument("--hidden", type=int, default=512); p.add_argument("--dim", type=int, default=128)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--out", default="")
    return p.parse_args()


def main() -> None:
    a = parse_args()
    torch.manual_seed(a.seed)
    train = data.load_cifar10("train")
    split = heldout_split(train)
    fit, knn = split.fit, split.knn

    encoder = models.SmallCNN(width=32)
    online = nn.Sequential(encoder, models.mlp(encoder.feature_dim, a.hidden, a.dim))
    predictor = models.mlp(a.dim, a.hidden, a.dim)
    target = momentum.copy_frozen(online)
    opt = torch.optim.SGD([{"params": list(online.parameters()), "lr_mult": 1.0},
                           {"params": list(predictor.parameters()), "lr_mult": a.pred_lr_mult}],
                          lr=a.lr, momentum=0.9, weight_decay=a.wd)
    lrs = schedules.cosine_schedule(a.lr, 0.0, a.steps)
    taus = schedules.cosine_schedule(a.tau[0], a.tau[1], a.steps)
    view_1, view_2 = augment.byol_augment(size=a.crop, crop_scale=(a.crop_scale, 1.0),
                                          **({} if a.blur else {"blur_p": 0.0}))
    loader = data.OnDeviceLoader(fit, batch_size=a.batch, shuffle=True, drop_last=True, seed=a.seed)
    run = Run(a, knn, encoder)
    for x in run.batches(loader):
        for g in opt.param_groups:
            g["lr"] = lrs[run.step].item() * g["lr_mult"]
        online.train(); predictor.train(); target.train()
        x1, x2 = view_1(x), view_2(x)
        q1, q2 = predictor(online(x1)), predictor(online(x2))
        with torch.no_grad():
            z1, z2 = target(x1), target(x2)
        loss = losses.byol_loss(q1, z2) + losses.byol_loss(q2, z1)
        opt.zero_grad(); loss.backward(); opt.step()
        momentum.ema_update_(target, online, taus[run.step].item())
        run.loss(loss)
    run.finish()


if __name__ == "__main__":
    main()
