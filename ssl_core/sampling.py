"""The one class-balanced sampler of the series: which images a smoke run, a side run, a label
budget or a t-SNE picture uses.

    index = balanced_indices(train.labels, 5000, seed=0)               # (5000,) sorted indices
    budget = balanced_indices(train.labels, 500, seed=0, exact=True)   # 1% labels: 50 per class

Infrastructure (`ImageDataset.subset`, `plotting.plot_tsne`); label budgets built in
notebooks/08_simclr_v2.ipynb.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def balanced_indices(labels: Tensor, n: int, seed: int = 0, exact: bool = False) -> Tensor:
    """Indices of n examples drawn evenly from every class; (n,) int64 on the CPU, sorted (the
    examples keep their original order).

    With C the classes present in `labels` (N,): for each class in label order, a seeded random
    permutation of its members gives its first n // C picks; the n - C (n // C) left over (and the
    shortfall of any class with fewer members) are drawn at random from the examples not yet
    picked. Deterministic for a given seed; the global RNG is not touched.

    exact=True, for label budgets (semi-supervised protocols label e.g. 1% and 10% of the train
    set, SimCLR v2): n must be a multiple of C and every class must have n / C examples, so that
    each class gets exactly n / C; otherwise ValueError.
    """
    labels = torch.as_tensor(labels).cpu()
    if labels.dim() != 1:
        raise ValueError(f"labels must be a 1-D tensor (N,), got shape {tuple(labels.shape)}")
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= len(labels):
        raise ValueError(f"n must be an int between 1 and {len(labels):,} (the number of labels), got {n!r}")
    classes, counts = labels.unique(return_counts=True)  # (C,) sorted, (C,)
    per_class = n // len(classes)
    if exact and n % len(classes):
        raise ValueError(f"n={n} is not divisible by the number of classes C={len(classes)}; "
                         f"a label budget needs a multiple of {len(classes)}")
    if exact and per_class > counts.min():
        raise ValueError(f"n={n} is too large: {per_class} per class, but class "
                         f"{int(classes[counts.argmin()])} has only {int(counts.min())} examples")
    generator = torch.Generator().manual_seed(seed)
    chosen, left = [], []
    for label in classes:
        members = (labels == label).nonzero().flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        chosen.append(members[:per_class])
        left.append(members[per_class:])
    left = torch.cat(left)
    n_fill = n - sum(len(c) for c in chosen)
    chosen.append(left[torch.randperm(len(left), generator=generator)[:n_fill]])
    return torch.cat(chosen).sort().values  # (n,)
