"""The held-out protocol shared by benchmarks/moco_recipe.py and byol_recipe.py (and dino_probe.py's, which
predates it): the class-sorted CIFAR-10 training set shuffled with a fixed seed; the first 5,000 images are
kNN queries, the next 10,000 the kNN bank, and the other 45,000 (the bank among them) the training images,
so the queries are never trained on. Weighted kNN, k = 200, T = 0.1, at 32 px, BN statistics refreshed
(the series' protocol). Infrastructure for the benchmark scripts.
"""
from __future__ import annotations

import json
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
