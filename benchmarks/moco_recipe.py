"""Short MoCo training runs for notebook 07's recipe and the queue-order question of lightly's MoCo.

One run per call, everything but the named knobs fixed to 07's laptop recipe (SmallCNN(32), batch
256, 20 px aug+ crops, MLP head 512-128 without BN, tau 0.2, K 1024, m 0.99, SGD 0.06 cosine, Shuffle
BN over 4 groups, one-sided loss). The knobs that matter for the lightly comparison:

    --symmetric          both views are queries: L = (L(q1, k2) + L(q2, k1)) / 2
    --order paper        both losses against the queue as it was before the step; both keys enqueued
                         after it (MoCo; the authors' symmetric CIFAR-10 demo)
    --order lightly      lightly's order: k2 is enqueued between the two losses, so the second query
                         q2 meets the current batch's k2 among its negatives, its own view's key
                         (momentum-encoded) included
    --order masked       as lightly, but q2's own-view key is masked out: fresh negatives only
    --order self         each query meets its own view's key as one extra negative (the effect of
                         `lightly` on both losses, without the other fresh keys)
    --bn-groups 1        plain BatchNorm (no Shuffle BN; one process)
    --pipeline lightly   the views from lightly's per-image MoCoV2Transform (PIL, 32 px, no blur, ImageNet
                         mean/std) through a DataLoader with 2 workers, instead of ssl_core.augment
                         (needs the [bench] extra); --norm imagenet: ssl_core.augment with ImageNet's
                         mean/std (lightly's normalisation), training and kNN

    .venv/bin/python benchmarks/moco_recipe.py --tag 07 --steps 1170                        # 07's main run
    .venv/bin/python benchmarks/moco_recipe.py --tag sym-lightly --symmetric --order lightly --bn-groups 1 --steps 700

Held-out protocol (as benchmarks/dino_probe.py): the class-sorted training set is shuffled with a
fixed seed; the first 5,000 images are kNN queries, the next 10,000 the kNN bank, and the other
45,000 (the bank among them) the training images. Weighted kNN, k = 200, T = 0.1, at 32 px, with the
series' BN refresh. `--test` trains on all 50,000 and scores on the CIFAR-10 test set instead (for a
comparison at equal steps with a number measured on test, never to choose a knob). Each run appends
one JSON line to --out.

Infrastructure (a research aid for 07's prose and benchmarks/README.md; never a timed test).
"""
from __future__ import annotations

import argparse

import torch
import torch.nn.functional as F
from torch import nn

from heldout import Run, heldout_split, test_split
from vs_lightly import IMAGENET_MEAN, IMAGENET_STD, PILImages, lightly_modules
from ssl_core import augment, data, memory, models, momentum, schedules


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default="run")
    p.add_argument("--steps", type=int, default=1170, help="training steps (the cosine's length)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--crop", type=int, default=20)
    p.add_argument("--blur", type=float, default=0.5, help="blur probability of aug+")
    p.add_argument("--crop-scale", type=float, default=0.2,
                   help="smallest crop, a fraction of the image area (aug+: 0.2; the demo's RandomResizedCrop: 0.08)")
    p.add_argument("--head", choices=("mlp", "linear"), default="mlp")
    p.add_argument("--hidden", type=int, default=512); p.add_argument("--dim", type=int, default=128)
    p.add_argument("--tau", type=float, default=0.2)
    p.add_argument("--K", type=int, default=1024)
    p.add_argument("--m", type=float, default=0.99)
    p.add_argument("--lr", type=float, default=0.06); p.add_argument("--wd", type=float, default=5e-4)
    p.add_argument("--bn-groups", type=int, default=4)
    p.add_argument("--symmetric", action="store_true")
    p.add_argument("--order", choices=("paper", "lightly", "masked", "self"), default="paper")
    p.add_argument("--pipeline", choices=("ssl_core", "lightly"), default="ssl_core")
    p.add_argument("--norm", choices=("cifar", "imagenet"), default="cifar")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--eval-every", type=int, default=0, help="held-out kNN every this many steps (0: end only)")
    p.add_argument("--test", action="store_true", help="train on all 50k, score on the test set")
    p.add_argument("--out", default="")
    a = p.parse_args()
    if a.pipeline == "lightly" and (a.crop != 32 or a.blur or a.norm != "imagenet"):
        p.error("--pipeline lightly is lightly's MoCoV2Transform: add --crop 32 --blur 0 --norm imagenet")
    if a.order in ("lightly", "masked") and not a.symmetric:
        p.error(f"--order {a.order} is about the second loss: add --symmetric")
    return a


def contrast(q, k_pos, negatives, tau, own=None, mask_own=False):
    """InfoNCE of queries q (N, D) against their positives (N, D) and the shared negatives (M, D).
    own (N, D): the query's own-view keys, appended as one extra negative each (mask_own=False) or,
    when they are already the last N rows of `negatives`, masked out of them (mask_own=True)."""
    pos = (q * k_pos).sum(1, keepdim=True)                         # (N, 1)
    neg = q @ negatives.t()                                        # (N, M)
    if own is not None and mask_own:                               # own-view key at column M - N + n
        n = len(q)
        idx = torch.arange(n, device=q.device)
        neg = neg.clone()
        neg[idx, neg.shape[1] - n + idx] = float("-inf")
    logits = [pos, neg]
    if own is not None and not mask_own:
        logits.append((q * own).sum(1, keepdim=True))              # (N, 1) the own-view key
    logits = torch.cat(logits, 1) / tau
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long, device=q.device))


def lightly_views(images: torch.Tensor, batch: int, seed: int):
    """Endless (None, (x1, x2), None) batches of lightly's MoCoV2Transform views (32 px, no blur)."""
    transform = lightly_modules()[1].MoCoV2Transform(input_size=32, gaussian_blur=0.0)
    loader = torch.utils.data.DataLoader(PILImages(images, transform), batch_size=batch, shuffle=True, drop_last=True,
                                         num_workers=2, persistent_workers=True,
                                         generator=torch.Generator().manual_seed(seed))
    while True:
        for views in loader:
            yield None, views, None


def main() -> None:
    a = parse_args()
    torch.manual_seed(a.seed)
    train = data.load_cifar10("train")
    split = test_split(train, data.load_cifar10("test")) if a.test else heldout_split(train)
    fit, knn = split.fit, split.knn

    backbone = models.SmallCNN(width=32)
    head = (models.mlp(backbone.feature_dim, a.hidden, a.dim, bn=False) if a.head == "mlp"
            else nn.Linear(backbone.feature_dim, a.dim))
    f_q = nn.Sequential(backbone, head)
    if a.bn_groups > 1:
        models.split_batchnorm_(f_q, a.bn_groups)
    f_k = momentum.copy_frozen(f_q)
    queue = memory.Queue(a.K, a.dim, seed=a.seed)
    opt = torch.optim.SGD(f_q.parameters(), lr=a.lr, momentum=0.9, weight_decay=a.wd)
    lrs = schedules.cosine_schedule(a.lr, 0.0, a.steps)
    stats = (IMAGENET_MEAN, IMAGENET_STD) if a.norm == "imagenet" else (augment.CIFAR10_MEAN, augment.CIFAR10_STD)
    aug = augment.mocov2_augment(size=a.crop, blur_p=a.blur, crop_scale=(a.crop_scale, 1.0),
                                 mean=stats[0], std=stats[1])
    if a.pipeline == "lightly":
        loader = lightly_views(fit.images, a.batch, a.seed)
    else:
        loader = data.OnDeviceLoader(fit, batch_size=a.batch, shuffle=True, drop_last=True, seed=a.seed)

    def keys(x):
        with torch.no_grad():
            if a.bn_groups > 1:                                       # Shuffle BN
                perm = torch.randperm(len(x))
                return F.normalize(f_k(x[perm]), dim=1)[perm.argsort()]
            return F.normalize(f_k(x), dim=1)

    score = lambda net: knn(net, lambda x: augment.preprocess(x, *stats))   # noqa: E731
    run = Run(a, score, backbone, split="test" if a.test else "held-out")
    for x in run.batches(loader):
        for g in opt.param_groups:
            g["lr"] = lrs[run.step].item()
        f_q.train(); f_k.train()
        x1, x2 = x if a.pipeline == "lightly" else (aug(x), aug(x))
        with torch.no_grad():
            momentum.ema_update_(f_k, f_q, a.m)
        q1 = F.normalize(f_q(x1), dim=1)
        k2 = keys(x2)
        if not a.symmetric:
            own = keys(x1) if a.order == "self" else None
            loss = contrast(q1, k2, queue.keys.clone(), a.tau, own=own)
            new = [k2]
        else:
            q2 = F.normalize(f_q(x2), dim=1)
            k1 = keys(x1)
            bank = queue.keys.clone()
            if a.order == "paper":
                loss = (contrast(q1, k2, bank, a.tau) + contrast(q2, k1, bank, a.tau)) / 2
            elif a.order == "self":
                loss = (contrast(q1, k2, bank, a.tau, own=k1) + contrast(q2, k1, bank, a.tau, own=k2)) / 2
            else:   # lightly / masked: k2 joins q2's negatives (the oldest N keys leave)
                bank2 = torch.cat([bank[len(k2):], k2])                # (K, D), k2 last
                loss = (contrast(q1, k2, bank, a.tau)
                        + contrast(q2, k1, bank2, a.tau, own=k2, mask_own=(a.order == "masked"))) / 2
            new = [k2, k1]
        opt.zero_grad(); loss.backward(); opt.step()
        for k in new:
            queue.enqueue_(k)
        run.loss(loss)
    run.finish()


if __name__ == "__main__":
    main()
