"""Losses against naive loops written from the papers' equations, and analytic values."""
import math

import pytest
import torch
import torch.nn.functional as F

from ssl_core.losses import estimate_log_Z, instdisc_nce_loss, nonparametric_softmax_loss


def unit(*shape, seed=0):
    return F.normalize(torch.randn(*shape, generator=torch.Generator().manual_seed(seed)), dim=-1)


def test_nonparametric_softmax_matches_equation_2_loop():
    v, bank, tau = unit(5, 8), unit(20, 8, seed=1), 0.07
    idx = torch.tensor([3, 0, 19, 7, 7])
    naive = 0.0
    for n in range(5):  # -log P(i|v) with P(i|v) = exp(v_i.v/tau) / sum_j exp(v_j.v/tau)
        num = math.exp(float(bank[idx[n]] @ v[n]) / tau)
        den = sum(math.exp(float(bank[j] @ v[n]) / tau) for j in range(20))
        naive += -math.log(num / den) / 5
    assert nonparametric_softmax_loss(v, bank, idx, tau).item() == pytest.approx(naive, rel=1e-5)


def test_nonparametric_softmax_of_identical_rows_is_log_M():
    v = unit(4, 8)
    bank = unit(1, 8, seed=3).expand(50, 8)   # every class looks the same: uniform posterior
    loss = nonparametric_softmax_loss(v, bank, torch.tensor([0, 1, 2, 3]), 0.1)
    assert loss.item() == pytest.approx(math.log(50), rel=1e-6)


def test_estimate_log_Z_is_n_times_the_mean():
    dots, tau, n = unit(6, 8) @ unit(30, 8, seed=2).T, 0.07, 1000
    naive = n * sum(math.exp(float(d) / tau) for d in dots.flatten()) / dots.numel()
    assert estimate_log_Z(dots, tau, n).item() == pytest.approx(math.log(naive), rel=1e-5)
    assert not estimate_log_Z(dots.requires_grad_(), tau, n).requires_grad


def test_nce_matches_equations_3_to_5_loop():
    v, pos, neg = unit(4, 8), unit(4, 8, seed=1), unit(4, 16, 8, seed=2)
    tau, n_data = 0.1, 500
    pos_dots = (v * pos).sum(1)
    neg_dots = torch.einsum("nd,nmd->nm", v, neg)
    log_Z = estimate_log_Z(neg_dots, tau, n_data)
    m, Z, Pn = 16, math.exp(log_Z.item()), 1.0 / n_data
    naive = 0.0
    for i in range(4):
        P = math.exp(float(pos_dots[i]) / tau) / Z
        loss_i = -math.log(P / (P + m * Pn))                      # -log h(i, v)
        for j in range(m):
            Pj = math.exp(float(neg_dots[i, j]) / tau) / Z
            loss_i += -math.log(1 - Pj / (Pj + m * Pn))           # -log(1 - h(i, v'))
        naive += loss_i / 4
    got = instdisc_nce_loss(pos_dots, neg_dots, log_Z, tau, n_data)
    assert got.item() == pytest.approx(naive, rel=1e-5)


def test_nce_gradient_pulls_positive_and_pushes_negatives():
    pos = torch.zeros(3, requires_grad=True)
    neg = torch.zeros(3, 10, requires_grad=True)
    instdisc_nce_loss(pos, neg, log_Z=0.0, tau=0.1, n_data=100).backward()
    assert (pos.grad < 0).all() and (neg.grad > 0).all()


def test_nce_is_stable_for_extreme_logits():
    pos = torch.tensor([1.0, -1.0])
    neg = torch.tensor([[1.0, -1.0], [1.0, 1.0]])
    loss = instdisc_nce_loss(pos, neg, log_Z=torch.tensor(-500.0), tau=0.01, n_data=10)
    assert torch.isfinite(loss)


def test_nce_errors_are_clear():
    with pytest.raises(ValueError, match=r"pos_dots \(N,\) and neg_dots \(N, m\)"):
        instdisc_nce_loss(torch.zeros(3, 1), torch.zeros(3, 4), 0.0, 0.1, 10)
    with pytest.raises(ValueError, match="n_data"):
        instdisc_nce_loss(torch.zeros(3), torch.zeros(3, 4), 0.0, 0.1)
