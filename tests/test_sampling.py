"""Tests for ssl_core.sampling.balanced_indices: the one class-balanced sampler (smoke subsets,
side runs, label budgets, t-SNE samples)."""
import pytest
import torch

from ssl_core.sampling import balanced_indices


def naive_balanced(labels, n, seed):
    """From the definition: per class (in label order) a seeded permutation of its members gives
    the first n // C picks; the rest are drawn from what is left; sorted."""
    g = torch.Generator().manual_seed(seed)
    per_class = n // len(set(labels.tolist()))
    picks, left = [], []
    for c in sorted(set(labels.tolist())):
        members = [i for i in range(len(labels)) if labels[i] == c]
        perm = torch.randperm(len(members), generator=g).tolist()
        members = [members[j] for j in perm]
        picks += members[:per_class]
        left += members[per_class:]
    fill = torch.randperm(len(left), generator=g).tolist()[: n - len(picks)]
    return sorted(picks + [left[j] for j in fill])


@pytest.mark.parametrize("n, seed", [(6, 7), (7, 0), (12, 3)])
def test_balanced_indices_matches_loop(n, seed):
    labels = torch.tensor([2, 0, 1, 1, 0, 2, 2, 0, 1, 0, 2, 1])
    assert balanced_indices(labels, n, seed).tolist() == naive_balanced(labels, n, seed)


def test_balanced_indices_is_balanced_seeded_sorted_and_on_cpu():
    labels = (torch.arange(1000) % 10).flip(0)  # 100 per class
    index = balanced_indices(labels, 50, seed=1)
    assert index.dtype == torch.int64 and index.device.type == "cpu"
    assert labels[index].bincount().tolist() == [5] * 10
    assert torch.equal(index, index.sort().values) and len(set(index.tolist())) == 50
    assert torch.equal(index, balanced_indices(labels, 50, seed=1))
    assert not torch.equal(index, balanced_indices(labels, 50, seed=2))
    assert balanced_indices(labels, 1000).tolist() == list(range(1000))  # n = N: every example once


def test_balanced_indices_fills_from_large_classes():
    labels = torch.cat([torch.zeros(100), torch.ones(5), torch.full((5,), 2)]).long()
    index = balanced_indices(labels, 60, seed=3)  # quota 20; classes 1 and 2 have only 5
    assert labels[index].bincount().tolist() == [50, 5, 5]


def test_exact_label_budgets_and_clear_errors():
    labels = torch.arange(100) % 10
    assert labels[balanced_indices(labels, 20, exact=True)].bincount().tolist() == [2] * 10
    with pytest.raises(ValueError, match="not divisible by the number of classes C=10"):
        balanced_indices(labels, 55, exact=True)
    small = torch.cat([labels, torch.zeros(50, dtype=torch.long)])
    with pytest.raises(ValueError, match="too large: 11 per class"):
        balanced_indices(small, 110, exact=True)
    with pytest.raises(ValueError, match="between 1 and 100"):
        balanced_indices(labels, 0)
    with pytest.raises(ValueError, match="between 1 and 100"):
        balanced_indices(labels, 101)
    with pytest.raises(ValueError, match="1-D tensor"):
        balanced_indices(labels.view(10, 10), 10)
