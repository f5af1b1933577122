"""The held-out protocol shared by benchmarks/moco_recipe.py and byol_recipe.py (and dino_probe.py's, which
predates it): the class-sorted CIFAR-10 training set shuffled with a fixed seed; the first 5,000 images are
kNN queries, the next 10,000 the kNN bank, and the other 45,000 (the bank among them) the training images,
so the queries are never trained on. Weighted kNN, k = 200, T = 0.1, at 32 px, BN statistics refreshed
(the series' protocol). `Run` keeps the bookkeeping of one short training run (timed steps, the kNN
curve, the JSON record). Infrastructure for the benchmark scripts.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass

import torch

from ssl_core import augment, data, evaluate


@dataclass
class Split:
    fit: data.ImageDataset          # the images a run trains on
    bank_x: torch.Tensor
    bank_y: torch.Tensor
    query_x: torch.Tensor
    query_y: torch.Tensor

    def knn(self, backbone, preprocess=augment.preprocess) -> float:
        return round(evaluate.knn_accuracy(backbone, self.bank_x, self.bank_y, self.query_x, self.query_y,
                                           preprocess, k=200, temperature=0.1), 4)


def heldout_split(train: data.ImageDataset) -> Split:
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))   # the copy is sorted by class
    queries, bank, rest = perm[:5000], perm[5000:15000], perm[5000:]
    fit = data.ImageDataset(train.images[rest], train.labels[rest], train.classes, train.source)
    return Split(fit, train.images[bank], train.labels[bank], train.images[queries], train.labels[queries])


def test_split(train: data.ImageDataset, test: data.ImageDataset) -> Split:
    """Train on all of `train`, score on `test` (to compare with a number measured on test, never to choose a knob)."""
    return Split(train, train.images, train.labels, test.images, test.labels)


def emit(res: dict, out: str = "") -> None:
    """Print the run's record as one JSON line, and append it to `out` if given."""
    line = json.dumps(res)
    print(line)
    if out:
        with open(out, "a") as f:
            f.write(line + "\n")


class Run:
    """One benchmark run's record: the args, the kNN at init, a kNN point every `args.eval_every` steps,
    and at the end the kNN, the training seconds (kNN evaluations not counted) and the mean loss of the
    last `loss_window` steps. `for x in run.batches(loader)` yields the training batches for `args.steps`
    steps (`run.step` is the step about to be taken); the loop body calls `run.loss(loss)`."""

    def __init__(self, args, knn, net, loss_window: int = 50, split: str = "held-out"):
        self.args, self.knn, self.net, self.loss_window, self.split = args, knn, net, loss_window, split
        self.res = {"tag": args.tag, **{k: v for k, v in vars(args).items() if k not in ("tag", "out")},
                    "knn_init": knn(net), "curve": []}
        self.step, self.seconds, self.losses = 0, 0.0, []
        print(f"[{args.tag}] random init {self.res['knn_init']:.1%}", flush=True)

    def batches(self, loader):
        a = self.args
        while self.step < a.steps:
            for _, x, _ in loader:
                if self.step >= a.steps:
                    return
                t0 = time.perf_counter()
                yield x
                self.seconds += time.perf_counter() - t0
                self.step += 1
                if a.eval_every and self.step % a.eval_every == 0 and self.step < a.steps:
                    self.res["curve"].append((self.step, round(self.seconds, 1), self.knn(self.net)))
                    print(f"[{a.tag}] step {self.step}: {self.res['curve'][-1][2]:.1%} ({self.seconds:.0f} s)", flush=True)

    def loss(self, loss) -> None:
        self.losses.append(loss.item())

    def finish(self) -> None:
        a, res, tail = self.args, self.res, self.losses[-self.loss_window:]
        res.update(knn=self.knn(self.net), seconds=round(self.seconds, 1), loss_end=round(sum(tail) / len(tail), 4))
        res["curve"].append((self.step, res["seconds"], res["knn"]))
        print(f"[{a.tag}] {a.steps} steps, {self.seconds:.0f} s ({self.seconds / a.steps:.3f} s/step), "
              f"loss {res['loss_end']:.3f}, kNN {res['knn']:.1%} ({self.split})", flush=True)
        emit(res, a.out)
