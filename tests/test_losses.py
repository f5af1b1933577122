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


# --- invaspread_loss (Ye et al. 2019, eq. 5) ---------------------------------------------------
from ssl_core.losses import invaspread_loss  # noqa: E402


def test_invaspread_matches_equation_5_loop():
    z1, z2, tau, n = unit(4, 8), unit(4, 8, seed=1), 0.1, 4
    z = torch.cat([z1, z2])
    naive = 0.0
    for a in range(2 * n):
        pos = (a + n) % (2 * n)
        den = sum(math.exp(float(z[k] @ z[a]) / tau) for k in range(2 * n) if k != a)
        P = lambda j: math.exp(float(z[j] @ z[a]) / tau) / den  # noqa: E731
        naive += -math.log(P(pos))
        naive += -sum(math.log(1 - P(j)) for j in range(2 * n) if j not in (a, pos))
    assert invaspread_loss(z1, z2, tau).item() == pytest.approx(naive / (2 * n), rel=1e-5)


def test_invaspread_of_identical_features_is_analytic():
    # all 2N features equal: P(j | a) = 1 / (2N - 1) for every j != a
    n = 3
    z = unit(1, 8).expand(n, 8)
    p = 1 / (2 * n - 1)
    expected = -math.log(p) - (2 * n - 2) * math.log(1 - p)
    assert invaspread_loss(z, z, 0.1).item() == pytest.approx(expected, rel=1e-6)


def test_invaspread_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        invaspread_loss(unit(4, 8), unit(3, 8))
    with pytest.raises(ValueError, match="N >= 2"):
        invaspread_loss(unit(1, 8), unit(1, 8))


# --- nt_xent (SimCLR eq. 1) --------------------------------------------------------------------
from ssl_core.losses import nt_xent  # noqa: E402


def test_nt_xent_matches_equation_1_loop():
    z1, z2, t, n = torch.randn(4, 8), torch.randn(4, 8), 0.5, 4
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    sim = lambda i, k: float(z[i] @ z[k])  # noqa: E731
    def l(i, j):
        return -math.log(math.exp(sim(i, j) / t) / sum(math.exp(sim(i, k) / t) for k in range(2 * n) if k != i))
    naive = sum(l(k, k + n) + l(k + n, k) for k in range(n)) / (2 * n)
    assert nt_xent(z1, z2, t).item() == pytest.approx(naive, rel=1e-5)


def test_nt_xent_collinear_views_give_log_2n_minus_1():
    z = unit(1, 8).expand(5, 8)
    assert nt_xent(z, z, 0.1).item() == pytest.approx(math.log(9), rel=1e-6)


def test_nt_xent_is_invaspread_without_the_spreading_term():
    z1, z2, t, n = unit(5, 8), unit(5, 8, seed=1), 0.2, 5
    z = torch.cat([z1, z2])
    spreading = 0.0                                  # -sum_{j != a, p(a)} log(1 - P(j | a)), averaged
    for a in range(2 * n):
        den = sum(math.exp(float(z[k] @ z[a]) / t) for k in range(2 * n) if k != a)
        spreading += -sum(math.log(1 - math.exp(float(z[j] @ z[a]) / t) / den)
                          for j in range(2 * n) if j not in (a, (a + n) % (2 * n))) / (2 * n)
    assert invaspread_loss(z1, z2, t).item() == pytest.approx(nt_xent(z1, z2, t).item() + spreading, rel=1e-5)


def test_nt_xent_rejects_bad_shapes():
    with pytest.raises(ValueError, match="same shape"):
        nt_xent(unit(3, 8), unit(2, 8))


# --- SimCLR v2 distillation (eq. 3) --------------------------------------------------------------

def test_distillation_loss_matches_equation_3_loop():
    from ssl_core.losses import distillation_loss

    g = torch.Generator().manual_seed(0)
    student, teacher = torch.randn(5, 4, generator=g), 3 * torch.randn(5, 4, generator=g)
    for tau in (1.0, 0.5, 2.0):
        naive = 0.0
        for i in range(5):  # -sum_y P_T(y|x_i; tau) log P_S(y|x_i; tau), then the mean over i
            zt = sum(math.exp(float(teacher[i, y]) / tau) for y in range(4))
            zs = sum(math.exp(float(student[i, y]) / tau) for y in range(4))
            for y in range(4):
                p_t = math.exp(float(teacher[i, y]) / tau) / zt
                naive -= p_t * math.log(math.exp(float(student[i, y]) / tau) / zs) / 5
        assert distillation_loss(student, teacher, tau).item() == pytest.approx(naive, rel=1e-5)


def test_distillation_loss_analytic_values_and_detached_teacher():
    from ssl_core.losses import distillation_loss

    teacher = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.5]], requires_grad=True)
    p = torch.softmax(teacher.detach(), dim=1)
    entropy = -(p * p.log()).sum(1).mean()  # equal logits: the entropy of P_T
    student = teacher.detach().clone().requires_grad_()
    loss = distillation_loss(student, teacher)
    assert loss.item() == pytest.approx(entropy.item(), rel=1e-6)
    loss.backward()
    assert teacher.grad is None  # the teacher's side is detached
    torch.testing.assert_close(student.grad, torch.zeros_like(student))  # its minimum over the student
    uniform = distillation_loss(torch.zeros(3, 10), torch.zeros(3, 10))
    assert uniform.item() == pytest.approx(math.log(10), rel=1e-6)  # uniform teacher: log C


def test_distillation_loss_clear_errors():
    from ssl_core.losses import distillation_loss

    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(4, 10), torch.zeros(4, 9))
    with pytest.raises(ValueError, match="same shape"):
        distillation_loss(torch.zeros(10), torch.zeros(10))
    with pytest.raises(ValueError, match="temperature must be > 0"):
        distillation_loss(torch.zeros(4, 10), torch.zeros(4, 10), temperature=0.0)


# --- without negatives: neg_cosine (SimSiam eq. 1), byol_loss (BYOL eq. 2) --------------------

from ssl_core.losses import byol_loss, neg_cosine, sinkhorn, swav_loss  # noqa: E402


def test_neg_cosine_matches_per_vector_loop():
    p, z = torch.randn(6, 5, generator=torch.Generator().manual_seed(0)), torch.randn(6, 5)
    naive = 0.0
    for n in range(6):  # D(p, z) = -p/||p|| . z/||z||
        naive += -float(p[n] @ z[n]) / (float(p[n].norm()) * float(z[n].norm())) / 6
    assert neg_cosine(p, z).item() == pytest.approx(naive, rel=1e-6)


def test_neg_cosine_is_minus_one_for_aligned_and_keeps_gradient_to_both():
    p = torch.randn(4, 3, requires_grad=True)
    z = (3 * p.detach()).requires_grad_()
    loss = neg_cosine(p, z)
    assert loss.item() == pytest.approx(-1.0, abs=1e-6)
    loss2 = neg_cosine(p, torch.randn(4, 3, requires_grad=True))
    loss2.backward()
    assert p.grad is not None and p.grad.abs().sum() > 0   # no hidden stop-gradient


def test_byol_loss_matches_loop_and_is_two_plus_two_neg_cosine():
    q, z = torch.randn(5, 7, generator=torch.Generator().manual_seed(1)), torch.randn(5, 7)
    naive = 0.0
    for n in range(5):  # || q/||q|| - z/||z|| ||^2
        naive += float(((q[n] / q[n].norm() - z[n] / z[n].norm()) ** 2).sum()) / 5
    assert byol_loss(q, z).item() == pytest.approx(naive, rel=1e-5)
    assert byol_loss(q, z).item() == pytest.approx(2 + 2 * neg_cosine(q, z).item(), rel=1e-5)
    assert byol_loss(q, -q).item() == pytest.approx(4.0, rel=1e-6)


def test_negative_free_losses_reject_mismatched_shapes():
    with pytest.raises(ValueError, match="same shape"):
        neg_cosine(torch.zeros(3, 4), torch.zeros(3, 5))
    with pytest.raises(ValueError, match="same shape"):
        byol_loss(torch.zeros(3, 4), torch.zeros(4))


# --- SwAV: sinkhorn (eq. 3, Algorithm 1) and the swapped prediction (eq. 2) ----------------------

def naive_sinkhorn(scores, eps, n_iters):
    """The authors' loop, written from Algorithm 1 with plain exp (no log space)."""
    Q = torch.exp(scores.double() / eps).T           # (K, N)
    Q /= Q.sum()
    K, N = Q.shape
    for _ in range(n_iters):
        Q /= Q.sum(dim=1, keepdim=True)
        Q /= K
        Q /= Q.sum(dim=0, keepdim=True)
        Q /= N
    return (Q * N).T


@pytest.mark.parametrize("n_iters", [1, 3, 10])
def test_sinkhorn_matches_the_naive_loop(n_iters):
    scores = unit(16, 8) @ unit(6, 8, seed=1).T       # cosines in [-1, 1], (N=16, K=6)
    got = sinkhorn(scores, eps=0.05, n_iters=n_iters)
    torch.testing.assert_close(got.double(), naive_sinkhorn(scores, 0.05, n_iters), rtol=1e-4, atol=1e-6)


def test_sinkhorn_marginals_rows_exact_columns_converge():
    scores = unit(32, 8, seed=2) @ unit(4, 8, seed=3).T                         # (N=32, K=4)
    few, many = sinkhorn(scores, 0.05, 3), sinkhorn(scores, 0.05, 200)
    torch.testing.assert_close(few.sum(1), torch.ones(32))                     # each code a distribution
    torch.testing.assert_close(many.sum(0), torch.full((4,), 32 / 4), rtol=1e-3, atol=1e-3)  # equipartition
    raw = torch.softmax(scores / 0.05, dim=1).sum(0)
    assert (many.sum(0) - 8).abs().max() < (raw - 8).abs().max()               # closer to N/K than softmax


def test_sinkhorn_is_stable_where_plain_exp_overflows():
    scores = torch.tensor([[10.0, 0.0], [0.0, 10.0], [9.0, 1.0]])             # exp(10 / 0.05) = inf in float32
    assert not torch.isfinite(torch.exp(scores / 0.05)).all()
    codes = sinkhorn(scores, 0.05, 3)
    assert torch.isfinite(codes).all()
    torch.testing.assert_close(codes.sum(1), torch.ones(3))


def test_sinkhorn_has_no_gradient_and_checks_input():
    scores = torch.randn(4, 3, requires_grad=True)
    assert not sinkhorn(scores).requires_grad
    with pytest.raises(ValueError, match=r"\(N, K\)"):
        sinkhorn(torch.zeros(4))
    with pytest.raises(ValueError, match="eps > 0"):
        sinkhorn(torch.zeros(4, 3), eps=0)


def test_swav_loss_matches_cross_entropy_loop():
    scores, codes = torch.randn(5, 6), torch.softmax(torch.randn(5, 6), dim=1)
    t, naive = 0.1, 0.0
    for n in range(5):  # -sum_k q_k log softmax(z.c / t)_k
        p = torch.softmax(scores[n] / t, dim=0)
        naive += -float((codes[n] * p.log()).sum()) / 5
    assert swav_loss(scores, codes, t).item() == pytest.approx(naive, rel=1e-5)


def test_swav_loss_one_hot_codes_is_cross_entropy_and_codes_get_no_gradient():
    scores = torch.randn(4, 3, requires_grad=True)
    codes = torch.randn(4, 3).softmax(1).requires_grad_()
    target = torch.tensor([0, 2, 1, 1])
    one_hot = F.one_hot(target, 3).float()
    assert swav_loss(scores, one_hot, 0.5).item() == pytest.approx(F.cross_entropy(scores / 0.5, target).item(), rel=1e-6)
    swav_loss(scores, codes, 0.1).backward()
    assert codes.grad is None and scores.grad is not None


# ---------------------------------------------------------------- DINO (13)

def test_dino_loss_matches_a_loop_over_crop_pairs():
    from ssl_core.losses import dino_loss
    torch.manual_seed(0)
    student = [torch.randn(4, 6, requires_grad=True) for _ in range(4)]   # 2 global + 2 local crops
    teacher = [torch.randn(4, 6) for _ in range(2)]
    center = torch.randn(1, 6)
    total, pairs = 0.0, 0
    for i in range(2):
        for j in range(4):
            if i == j:
                continue
            for n in range(4):
                p_t = torch.exp((teacher[i][n] - center[0]) / 0.04)
                p_t = p_t / p_t.sum()
                log_p_s = student[j][n] / 0.1 - torch.logsumexp(student[j][n] / 0.1, dim=0)
                total = total - (p_t * log_p_s).sum() / 4
            pairs += 1
    torch.testing.assert_close(dino_loss(student, teacher, center), total / pairs)
    dino_loss(student, [t.requires_grad_() for t in teacher], center).backward()
    assert all(t.grad is None for t in teacher) and student[3].grad is not None   # the teacher is a target


def test_dino_loss_bad_input():
    from ssl_core.losses import dino_loss
    with pytest.raises(ValueError, match="at least 2 crops"):
        dino_loss([torch.randn(2, 3)], [torch.randn(2, 3)], torch.zeros(3))
    with pytest.raises(ValueError, match="same shape"):
        dino_loss([torch.randn(2, 3), torch.randn(2, 4)], [torch.randn(2, 3)], torch.zeros(3))


def test_dino_center_is_an_ema_of_batch_means():
    from ssl_core.losses import DINOCenter
    torch.manual_seed(0)
    c = DINOCenter(5, momentum=0.9)
    batches = [torch.randn(8, 5) for _ in range(3)]
    expected = torch.zeros(1, 5)
    for b in batches:
        c.update_(b)
        expected = 0.9 * expected + 0.1 * b.mean(0, keepdim=True)
    torch.testing.assert_close(c.center, expected)
    assert "center" in c.state_dict()
    with pytest.raises(ValueError, match="expected teacher outputs"):
        c.update_(torch.randn(8, 4))
