"""Equal seconds against lightly: lightly's CIFAR-10 recipe for one method, with the project's SmallCNN,
under a time budget, and the kNN of our notebook's committed run at the same seconds.

    pip install -e ".[bench]"                                  # lightly: an optional extra, never used by ssl_core
    .venv/bin/python benchmarks/vs_lightly.py moco 240
    .venv/bin/python benchmarks/vs_lightly.py byol 240 --seed 1
    .venv/bin/python benchmarks/vs_lightly.py moco 0 --steps 336   # equal steps with moco_recipe.py --test

The peer is lightly's own CIFAR-10 benchmark (`docs/source/getting_started/benchmarks/cifar10_benchmark.py`
in lightly-ai/lightly), written here from lightly's documented API with `SmallCNN(width=32)` (128-d
features) in place of its ResNet-18, so that only the pipeline differs:

    method    transforms (32 px, no blur)       head(s) on the 128-d features           loss / optimiser
    simclr    SimCLRTransform                   SimCLRProjectionHead 128-512-128       NTXentLoss(0.5); SGD 0.06 x B/128
    moco      MoCoV2Transform                   MoCoProjectionHead 128-512-128         NTXentLoss(0.1, bank 4096), momentum
                                                (no BN), momentum copies                0.99, symmetric; SGD 0.06 x B/128
    byol      SimCLRTransform                   BYOLProjectionHead 128-1024-256,       0.5 (negcos + negcos), momentum 0.99;
                                                BYOLPredictionHead 256-1024-256         SGD 0.06 x B/128
    simsiam   SimCLRTransform                   Linear-BN-ReLU-Linear-BN 128-2048-2048, 0.5 (negcos + negcos); SGD 0.06
                                                SimSiamPredictionHead 2048-512-2048
    swav      SwaVTransform (2 x 32 px,         SwaVProjectionHead 128-512-128,        SwaVLoss; Adam 1e-3 x B/128, wd 1e-6
              crop scale 0.14)                  SwaVPrototypes(128, 512)

Every recipe: SGD momentum 0.9 and weight decay 5e-4 unless said, a cosine learning rate over the time
budget (the fraction of SECONDS used so far), batch 256, a torch DataLoader with 2 workers over the
decoded CIFAR-10 images as PIL images (lightly's transforms are per-image, on PIL). lightly's `MoCo`
enqueues the first loss's keys before the second loss (its NTXentLoss updates the memory bank inside
the call), which `benchmarks/moco_recipe.py --order lightly` reproduces with ssl_core's pieces.

The kNN of the lightly-trained backbone is the series' own (weighted, k = 200, T = 0.1, BN statistics
refreshed on 5,000 training images, full CIFAR-10 test set), on images normalised as lightly trained
them (ImageNet mean and std). "Ours" is read from `results/<notebook>.json`: the last epoch of the
committed laptop run that ended within SECONDS, and the run's end. Those seconds were measured when
the notebook was executed: compare on the same kind of machine, and re-run the notebook there for a
strict comparison.

Infrastructure (a benchmark that prints its figures; never imported by ssl_core, the notebooks or CI).
"""
from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
from torch import nn

from heldout import emit
from ssl_core import augment, data, evaluate, models

NOTEBOOK = {"simclr": "06_simclr_v1", "moco": "07_moco_v2", "byol": "09_byol", "swav": "10_swav",
            "simsiam": "11_simsiam"}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("method", choices=sorted(NOTEBOOK))
    p.add_argument("seconds", type=float, help="training time budget (data loading included, kNN not)")
    p.add_argument("--steps", type=int, default=0,
                   help="stop after this many steps instead, the cosine over steps (an equal-steps comparison)")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", default="", help="append the JSON line to this file")
    return p.parse_args()


def lightly_modules():
    try:
        import lightly  # noqa: F401
    except ImportError as error:
        raise SystemExit("vs_lightly.py needs lightly, an optional benchmark extra: pip install -e \".[bench]\"") from error
    from lightly import loss, transforms
    from lightly.models import utils
    from lightly.models.modules import heads
    return loss, transforms, utils, heads


class PILImages(torch.utils.data.Dataset):
    """The decoded uint8 CIFAR-10 tensor as PIL images through a lightly transform."""

    def __init__(self, images: torch.Tensor, transform):
        self.images, self.transform = images, transform

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        from PIL import Image
        return self.transform(Image.fromarray(self.images[i].permute(1, 2, 0).numpy()))


class Peer(nn.Module):
    """lightly's recipe for one method around a SmallCNN backbone; `step(views)` returns the loss."""

    def __init__(self, method: str, batch: int):
        super().__init__()
        loss, transforms, utils, heads = lightly_modules()
        self.method, self.utils = method, utils
        self.backbone = models.SmallCNN(width=32)
        d = self.backbone.feature_dim
        blur = dict(input_size=32, gaussian_blur=0.0)
        scale = batch / 128
        if method == "simclr":
            self.transform = transforms.SimCLRTransform(**blur)
            self.head = heads.SimCLRProjectionHead(d, 512, 128)
            self.criterion = loss.NTXentLoss()
        elif method == "moco":
            self.transform = transforms.MoCoV2Transform(**blur)
            self.head = heads.MoCoProjectionHead(d, 512, 128)
            self.criterion = loss.NTXentLoss(temperature=0.1, memory_bank_size=(4096, 128))
        elif method == "byol":
            self.transform = transforms.SimCLRTransform(**blur)
            self.head = heads.BYOLProjectionHead(d, 1024, 256)
            self.predictor = heads.BYOLPredictionHead(256, 1024, 256)
            self.criterion = loss.NegativeCosineSimilarity()
        elif method == "simsiam":
            self.transform = transforms.SimCLRTransform(**blur)
            self.head = heads.ProjectionHead([(d, 2048, nn.BatchNorm1d(2048), nn.ReLU(inplace=True)),
                                              (2048, 2048, nn.BatchNorm1d(2048), None)])
            self.predictor = heads.SimSiamPredictionHead(2048, 512, 2048)
            self.criterion = loss.NegativeCosineSimilarity()
            scale = 1.0                                   # lightly: "no lr-scaling" for SimSiam
        elif method == "swav":
            self.transform = transforms.SwaVTransform(crop_sizes=(32,), crop_counts=(2,), crop_min_scales=(0.14,),
                                                      crop_max_scales=(1.0,), gaussian_blur=0.0)
            self.head = heads.SwaVProjectionHead(d, 512, 128)
            self.prototypes = heads.SwaVPrototypes(128, 512)
            self.criterion = loss.SwaVLoss()
        if method in ("moco", "byol"):
            self.backbone_m, self.head_m = copy.deepcopy(self.backbone), copy.deepcopy(self.head)
            utils.deactivate_requires_grad(self.backbone_m); utils.deactivate_requires_grad(self.head_m)
        trainable = [p for p in self.parameters() if p.requires_grad]
        if method == "swav":
            self.optimizer = torch.optim.Adam(trainable, lr=1e-3 * scale, weight_decay=1e-6)
        else:
            self.optimizer = torch.optim.SGD(trainable, lr=0.06 * scale, momentum=0.9, weight_decay=5e-4)
        self.base_lrs = [g["lr"] for g in self.optimizer.param_groups]

    def f(self, x):
        return self.head(self.backbone(x))

    def f_m(self, x):
        return self.head_m(self.backbone_m(x)).detach()

    def step(self, views):
        m, u = self.method, self.utils
        if m == "simclr":
            return self.criterion(self.f(views[0]), self.f(views[1]))
        if m == "moco":
            u.update_momentum(self.backbone, self.backbone_m, 0.99); u.update_momentum(self.head, self.head_m, 0.99)
            x0, x1 = views
            loss_1 = self.criterion(self.f(x0), self.f_m(x1))     # the bank takes x1's keys here ...
            loss_2 = self.criterion(self.f(x1), self.f_m(x0))     # ... so x1's query meets them as negatives
            return 0.5 * (loss_1 + loss_2)
        if m == "byol":
            u.update_momentum(self.backbone, self.backbone_m, 0.99); u.update_momentum(self.head, self.head_m, 0.99)
            x0, x1 = views
            p0, p1 = self.predictor(self.f(x0)), self.predictor(self.f(x1))
            return 0.5 * (self.criterion(p0, self.f_m(x1)) + self.criterion(p1, self.f_m(x0)))
        if m == "simsiam":
            z0, z1 = self.f(views[0]), self.f(views[1])
            p0, p1 = self.predictor(z0), self.predictor(z1)
            return 0.5 * (self.criterion(z0.detach(), p1) + self.criterion(z1.detach(), p0))
        if m == "swav":
            self.prototypes.normalize()
            out = [self.prototypes(nn.functional.normalize(self.f(v), dim=1)) for v in views]
            return self.criterion(out[:2], out[2:])
        raise ValueError(m)


def ours_at(method: str, seconds: float) -> dict:
    path = Path(__file__).resolve().parents[1] / "results" / f"{NOTEBOOK[method]}.json"
    row = json.loads(path.read_text())
    within = [h for h in row["history"] if h.get("seconds", math.inf) <= seconds * 1.02]
    return {"notebook": NOTEBOOK[method], "knn_end": row["knn_top1"], "seconds_end": row["train_seconds"],
            "epochs": row.get("epochs"), "knn_within": within[-1]["knn_top1"] if within else None,
            "seconds_within": within[-1]["seconds"] if within else None}


def main() -> None:
    a = parse_args()
    torch.manual_seed(a.seed)
    peer = Peer(a.method, a.batch)
    train, test = data.load_cifar10("train"), data.load_cifar10("test")
    loader = torch.utils.data.DataLoader(PILImages(train.images, peer.transform), batch_size=a.batch, shuffle=True,
                                         drop_last=True, num_workers=a.workers, persistent_workers=a.workers > 0)
    preprocess = lambda x: augment.preprocess(x, IMAGENET_MEAN, IMAGENET_STD)   # noqa: E731 (lightly's normalisation)
    steps, images, t_start = 0, 0, time.perf_counter()
    done = False
    while not done:
        for views in loader:
            elapsed = time.perf_counter() - t_start
            done = steps >= a.steps if a.steps else elapsed >= a.seconds
            if done:
                break
            progress = steps / a.steps if a.steps else elapsed / a.seconds
            for g, base in zip(peer.optimizer.param_groups, peer.base_lrs):
                g["lr"] = base * 0.5 * (1 + math.cos(math.pi * progress))
            peer.train()
            loss = peer.step(views)
            peer.optimizer.zero_grad(); loss.backward(); peer.optimizer.step()
            steps += 1; images += a.batch
    seconds = time.perf_counter() - t_start
    knn = evaluate.knn_accuracy(peer.backbone, train.images, train.labels, test.images, test.labels, preprocess)
    res = {"method": a.method, "budget_s": a.seconds, "budget_steps": a.steps, "seconds": round(seconds, 1), "steps": steps,
           "images_per_s": round(images / seconds), "epochs": round(images / len(train), 2), "seed": a.seed,
           "lightly_knn": round(knn, 4), "loss_end": round(loss.item(), 4), "ours": ours_at(a.method, seconds if a.steps else a.seconds)}
    o = res["ours"]
    print(f"lightly {a.method}, SmallCNN(32), {seconds:.0f} s: {steps} steps, {res['images_per_s']} img/s, "
          f"{res['epochs']} epochs, kNN {knn:.2%}")
    if o["knn_within"] is not None:
        print(f"ours ({o['notebook']}, committed run): {o['knn_within']:.2%} at {o['seconds_within']:.0f} s "
              f"(margin {100 * (o['knn_within'] - knn):+.1f}); its end {o['knn_end']:.2%} at {o['seconds_end']:.0f} s")
    else:
        print(f"ours ({o['notebook']}): no epoch ended within {seconds:.0f} s; its end {o['knn_end']:.2%} "
              f"at {o['seconds_end']:.0f} s")
    emit(res, a.out)


if __name__ == "__main__":
    main()
