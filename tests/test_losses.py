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


# --- info_nce (CPC eq. 4) ---------------------------------------------------------------------
from ssl_core.losses import info_nce  # noqa: E402


def naive_info_nce(q, k_pos, negatives_of, t):
    """-mean_n log exp(q.k+/t) / (exp(q.k+/t) + sum_j exp(q.k_j/t)), one query at a time."""
    total = 0.0
    for n in range(len(q)):
        pos = math.exp(float(q[n] @ k_pos[n]) / t)
        neg = sum(math.exp(float(q[n] @ k) / t) for k in negatives_of(n))
        total += -math.log(pos / (pos + neg))
    return total / len(q)


def test_info_nce_in_batch_matches_loop():
    q, k = unit(6, 8), unit(6, 8, seed=1)
    naive = naive_info_nce(q, k, lambda n: [k[j] for j in range(6) if j != n], 0.1)
    assert info_nce(q, k, temperature=0.1).item() == pytest.approx(naive, rel=1e-5)


def test_info_nce_shared_negatives_matches_loop():
    q, k, neg = unit(5, 8), unit(5, 8, seed=1), unit(12, 8, seed=2)
    naive = naive_info_nce(q, k, lambda n: list(neg), 0.07)
    assert info_nce(q, k, neg, temperature=0.07).item() == pytest.approx(naive, rel=1e-5)


def test_info_nce_per_query_negatives_matches_loop():
    q, k, neg = unit(4, 8), unit(4, 8, seed=1), unit(4, 7, 8, seed=2)
    naive = naive_info_nce(q, k, lambda n: list(neg[n]), 0.5)
    assert info_nce(q, k, neg, temperature=0.5).item() == pytest.approx(naive, rel=1e-5)


def test_info_nce_of_identical_keys_is_log_of_candidates():
    q = unit(3, 8)
    same = unit(1, 8, seed=4)
    assert info_nce(q, same.expand(3, 8), same.expand(10, 8)).item() == pytest.approx(math.log(11), rel=1e-6)
    assert info_nce(q, same.expand(3, 8)).item() == pytest.approx(math.log(3), rel=1e-6)


def test_info_nce_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        info_nce(unit(3, 8), unit(4, 8))
    with pytest.raises(ValueError, match=r"\(M, D\) or \(N, M, D\)"):
        info_nce(unit(3, 8), unit(3, 8), unit(5, 4))
