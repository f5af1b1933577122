"""The course kit's exercises: one entry per exercise, with its reference and its random cases.

Each entry says where the exercise lives (notebook, function name), what the student writes,
how hard it is (1 easy - 3 hard), the reference from ssl_core it is checked against, and a
generator of cases: a list of argument dicts (called positionally, in this order). Tensors made
with requires_grad=True also have their gradients compared, which is how a missing or extra
stop-gradient is caught. `hints` complete a mismatch's sentence by kind of difference
("scale", "sign", "offset", "grad", "state", "shape", "transposed", "value", "order", "nonfinite").

Built in: the course kit (COURSE.md); `ssl_core.exercises.check` reads it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable

import torch
import torch.nn.functional as F

from ssl_core import augment, color, distributed, evaluate, losses, memory, models, momentum, schedules

EXERCISES: dict[str, "Exercise"] = {}


@dataclass
class Exercise:
    id: str                  # "06.2": notebook 06, second exercise
    notebook: str            # "06_simclr_v1"
    name: str                # the function the student writes
    title: str               # a few words
    task: str                # what to write, one sentence (the student copy's stub says it)
    difficulty: int          # 1 easy, 2 medium, 3 hard
    reference: Callable
    cases: Callable[[torch.Generator], list[dict]]
    hints: dict = field(default_factory=dict)
    rtol: float = 1e-4
    atol: float = 1e-5
    seed: int = 0
    forbid: tuple = ()       # ssl_core names the student may not call (default: the reference's own name)


def exercise(**kw) -> Exercise:
    ex = Exercise(**kw)
    EXERCISES[ex.id] = ex
    return ex


def randn(g: torch.Generator, *shape, dtype=torch.float32, grad: bool = False, scale: float = 1.0) -> torch.Tensor:
    return (scale * torch.randn(*shape, generator=g, dtype=torch.float64)).to(dtype).requires_grad_(grad)


def unit(g: torch.Generator, *shape, dtype=torch.float32, grad: bool = False) -> torch.Tensor:
    return F.normalize(randn(g, *shape, dtype=torch.float64), dim=-1).to(dtype).requires_grad_(grad)


# ---------------------------------------------------------------- 06 SimCLR

def _two_views(g, with_tau=True):
    sizes = [(2, 3, 0.5), (4, 16, 0.1), (8, 32, 0.2), (16, 8, 0.07)]
    cases = [dict(z1=randn(g, n, d, grad=True, scale=3.0), z2=randn(g, n, d, grad=True), tau=t) for n, d, t in sizes]
    cases.append(dict(z1=randn(g, 5, 7, dtype=torch.float64, grad=True), z2=randn(g, 5, 7, dtype=torch.float64,
                                                                                 grad=True), tau=0.3))
    same = randn(g, 1, 6).expand(4, 6).clone().requires_grad_(True)
    cases.append(dict(z1=same, z2=same.detach().clone().requires_grad_(True), tau=0.5))   # log(2N - 1)
    return cases if with_tau else [{k: v for k, v in c.items() if k != "tau"} for c in cases]


exercise(id="06.1", notebook="06_simclr_v1", name="similarity_logits", title="the similarity matrix",
         task="return the (2N, 2N) matrix of cosine similarities / tau of the stacked views [z1; z2], "
              "with the diagonal (a view against itself) set to -inf",
         forbid=("_two_view_logits",), difficulty=1,
         reference=lambda z1, z2, tau: losses._two_view_logits(F.normalize(z1, dim=1), F.normalize(z2, dim=1), tau)[0],
         cases=_two_views,
         hints={"scale": "Cosine similarity divided by tau once: normalise the rows first.",
                "value": "Normalise each row (F.normalize), divide by tau, and mask the diagonal with -inf.",
                "nonfinite": "Only the diagonal is -inf."})

exercise(id="06.2", notebook="06_simclr_v1", name="nt_xent", title="NT-Xent, vectorised",
         task="return SimCLR's NT-Xent loss: cross-entropy of each of the 2N views against its positive "
              "(the other view of its image) over the 2N-1 others, averaged over all 2N views",
         difficulty=2, reference=losses.nt_xent, cases=_two_views,
         hints={"scale": "Average over all 2N views (both orders of every pair), and divide by tau once.",
                "value": "Check the cosine (normalise rows), tau (divide once), the positive of row a "
                         "(row (a + N) mod 2N) and that a is not in its own denominator.",
                "grad": "Both views are anchors and both get gradients: no detach in NT-Xent."})


# ---------------------------------------------------------------- 11 SimSiam

def _pairs(g):
    cases = [dict(p=randn(g, n, d, grad=True, scale=s), z=randn(g, n, d, grad=True))
             for n, d, s in [(4, 3, 1.0), (8, 16, 5.0), (2, 64, 0.1), (16, 8, 2.0)]]
    cases.append(dict(p=randn(g, 6, 5, dtype=torch.float64, grad=True), z=randn(g, 6, 5, dtype=torch.float64, grad=True)))
    z = randn(g, 4, 8)
    cases.append(dict(p=(2.5 * z).requires_grad_(True), z=z.clone().requires_grad_(True)))   # minimum: -1
    return cases


exercise(id="11.1", notebook="11_simsiam", name="neg_cosine", title="D(p, z), the negative cosine",
         task="return D(p, z) = -mean_n cos(p_n, z_n), the negative cosine similarity averaged over the batch "
              "(no stop-gradient inside)",
         difficulty=1, reference=losses.neg_cosine, cases=_pairs,
         hints={"sign": "D is the NEGATIVE cosine: minimising it aligns p with z.",
                "scale": "Average over the batch (mean, not sum) and divide by both norms.",
                "value": "Divide p_n . z_n by ||p_n|| ||z_n|| (F.cosine_similarity or F.normalize).",
                "grad": "D itself has no stop-gradient: the caller writes z.detach()."})


def _four(g):
    cases = []
    for n, d in [(4, 3), (8, 16), (2, 32), (16, 8)]:
        p1, p2, z1, z2 = (randn(g, n, d, grad=True) for _ in range(4))
        cases.append(dict(p1=p1, p2=p2, z1=z1, z2=z2))
    return cases


exercise(id="11.2", notebook="11_simsiam", name="symmetric_stopgrad_loss", title="the stop-gradient loss",
         task="return SimSiam's eq. (4): 1/2 D(p1, sg(z2)) + 1/2 D(p2, sg(z1)), with z.detach() as sg",
         difficulty=2,
         reference=lambda p1, p2, z1, z2: (losses.neg_cosine(p1, z2.detach()) / 2
                                            + losses.neg_cosine(p2, z1.detach()) / 2),
         cases=_four,
         hints={"grad": "The targets z1, z2 are constants: detach them (that stop-gradient is the paper).",
                "scale": "Each half is weighted 1/2.",
                "value": "Pair each prediction with the OTHER view's projection: p1 with z2, p2 with z1."})


# ---------------------------------------------------------------- 01 InstDisc

class _Rows:
    """What MemoryBank.update_ reads, around a given (M, D) tensor (no new bank per call)."""

    def __init__(self, rows, momentum):
        self.memory, self.momentum = rows, momentum

    def __len__(self):
        return self.memory.shape[0]


def _bank_update_reference(bank, idx, v, m):
    memory.MemoryBank.update_(_Rows(bank, m), idx, v)              # updates `bank` in place


def _bank_cases(g):
    cases = []
    for m_rows, n, d, m, dtype in [(10, 4, 3, 0.5, torch.float32), (50, 16, 8, 0.9, torch.float32),
                                   (6, 6, 5, 0.0, torch.float32), (20, 5, 4, 0.5, torch.float64)]:
        idx = torch.randperm(m_rows, generator=g)[:n]
        cases.append(dict(bank=unit(g, m_rows, d, dtype=dtype), idx=idx, v=unit(g, n, d, dtype=dtype, grad=True), m=m))
    return cases


exercise(id="01.1", notebook="01_instdisc", name="bank_update_", title="the memory bank update",
         task="update the bank in place: rows idx <- normalize(m * bank[idx] + (1 - m) * v), "
              "without autograd history (the bank is not trained by backprop)",
         forbid=("update_",), difficulty=1, reference=_bank_update_reference, cases=_bank_cases,
         hints={"state": "Mix m * old row + (1 - m) * new feature, re-normalise the row, touch only rows idx, "
                         "and do it under torch.no_grad().",
                "value": "Return nothing: the bank changes in place."})


def _softmax_cases(g):
    cases = []
    for n, m_rows, d, tau in [(2, 4, 3, 0.1), (8, 50, 16, 0.07), (4, 10, 8, 0.5), (16, 100, 32, 0.2)]:
        cases.append(dict(v=unit(g, n, d, grad=True), bank=unit(g, m_rows, d),
                          idx=torch.randint(0, m_rows, (n,), generator=g), tau=tau))
    cases.append(dict(v=unit(g, 3, 4, dtype=torch.float64, grad=True), bank=unit(g, 5, 4, dtype=torch.float64),
                      idx=torch.tensor([0, 4, 2]), tau=0.1))
    return cases


exercise(id="01.2", notebook="01_instdisc", name="nonparametric_softmax", title="the non-parametric softmax",
         task="return eq. (2) vectorised: the cross-entropy of the logits v . bank^T / tau (N, M) against "
              "each sample's own row idx, averaged over the batch",
         difficulty=1, reference=losses.nonparametric_softmax_loss, cases=_softmax_cases,
         hints={"scale": "Divide the dot products by tau once and average (not sum) over the batch.",
                "value": "Logits (N, M) = v @ bank.T / tau; the target of sample n is its own row idx[n]."})


def _nce_cases(g):
    cases = []
    for n, m, n_data, tau in [(4, 8, 100, 0.1), (8, 32, 1000, 0.07), (2, 4, 10, 0.5), (16, 64, 50000, 0.07)]:
        pos = (0.5 + 0.5 * torch.rand(n, generator=g, dtype=torch.float64)).float().requires_grad_(True)
        neg = (2 * torch.rand(n, m, generator=g, dtype=torch.float64) - 1).mul(0.5).float().requires_grad_(True)
        log_z = losses.estimate_log_Z(neg.detach(), tau, n_data)
        cases.append(dict(pos_dots=pos, neg_dots=neg, log_Z=log_z, tau=tau, n_data=n_data))
    return cases


exercise(id="01.3", notebook="01_instdisc", name="nce_loss", title="NCE in log space",
         task="return InstDisc's NCE loss: with a = dots / tau - log Z and b = log(m / n_data), the batch mean "
              "of softplus(b - a_pos) + sum over the m noise rows of softplus(a_neg - b)",
         difficulty=3, reference=losses.instdisc_nce_loss, cases=_nce_cases,
         hints={"value": "log h = -softplus(b - a) for the positive, log(1 - h) = -softplus(a - b) for each noise "
                         "row; sum the m noise terms, average over the batch; b = log(m / n_data).",
                "sign": "The loss is MINUS the log-likelihoods: softplus terms are added.",
                "scale": "Sum over the m noise rows (not mean), average over the batch."})


# ---------------------------------------------------------------- 05 MoCo v1

def _queue_cases(g):
    cases = []
    for k_size, n, d, ptr in [(5, 2, 3, 4), (8, 4, 2, 0), (6, 3, 4, 3), (10, 10, 3, 7), (7, 3, 5, 6)]:
        queue = memory.Queue(size=k_size, dim=d, seed=int(torch.randint(0, 1000, (), generator=g)))
        queue.ptr.fill_(ptr)
        cases.append(dict(queue=queue, k=unit(g, n, d, grad=True)))
    return cases


exercise(id="05.1", notebook="05_moco_v1", name="enqueue_", title="the queue update (ring buffer)",
         task="write the N keys k over the N oldest rows of queue.keys, starting at row queue.ptr and wrapping "
              "around the end, then advance queue.ptr by N (mod K); in place, without autograd history",
         forbid=("enqueue_",), difficulty=2, reference=lambda queue, k: queue.enqueue_(k), cases=_queue_cases,
         hints={"state": "Rows (ptr + 0..N-1) mod K get the new keys (detached); then ptr <- (ptr + N) mod K "
                         "(queue.ptr.copy_(...), it is a buffer).",
                "value": "Return nothing: the queue changes in place."})


def _moco_cases(g):
    cases = []
    for n, k_size, d, tau in [(2, 5, 3, 0.1), (8, 32, 16, 0.07), (4, 4, 8, 0.2), (16, 64, 8, 0.5)]:
        cases.append(dict(q=unit(g, n, d, grad=True), k=unit(g, n, d), queue_keys=unit(g, k_size, d), tau=tau))
    return cases


exercise(id="05.2", notebook="05_moco_v1", name="moco_loss", title="InfoNCE against the queue",
         task="return MoCo's loss: logits [q . k_+, q . queue_keys^T] / tau (N, 1 + K), positive first, "
              "cross-entropy with target 0, averaged over the batch",
         difficulty=2, reference=losses.info_nce, cases=_moco_cases,
         hints={"value": "Logits (N, 1 + K): column 0 the positive q_n . k_n, then the K queue keys; targets all 0; "
                         "divide by tau once.",
                "scale": "Divide by tau once; average over the batch."})


def _toy_encoder(seed: int, groups: int = 2):
    torch.manual_seed(seed)
    net = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4), torch.nn.ReLU(),
                              torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(4, 5))
    return models.split_batchnorm_(net, groups).requires_grad_(False).train()


def _shuffle_cases(g):
    cases = []
    for n, groups in [(8, 2), (8, 4), (6, 3), (12, 2)]:
        cases.append(dict(f_k=_toy_encoder(int(torch.randint(0, 1000, (), generator=g)), groups),
                          x=randn(g, n, 3, 6, 6), perm=torch.randperm(n, generator=g)))
    return cases


@torch.no_grad()
def _shuffled_keys_reference(f_k, x, perm):
    return F.normalize(distributed.batch_unshuffle(f_k(x[perm]), perm.argsort()), dim=1)


exercise(id="05.3", notebook="05_moco_v1", name="shuffled_keys", title="Shuffle BN: shuffle and unshuffle",
         task="return the unit keys F.normalize(f_k(x[perm])) computed on the shuffled batch (no gradient), "
              "put back in the batch's original order (row i = image i's key)",
         forbid=("batch_unshuffle",), difficulty=2, reference=_shuffled_keys_reference, cases=_shuffle_cases,
         hints={"value": "Run f_k on x[perm], normalise, then index the rows with perm.argsort() (the inverse "
                         "permutation), not with perm.",
                "order": "Undo the shuffle with the inverse permutation perm.argsort()."})


# ---------------------------------------------------------------- 03 InvaSpread

def _negative_mask_reference(n):
    z = torch.ones(n, 1)
    logits, positive = losses._two_view_logits(z, z, 1.0)              # diagonal -inf, p(a) = a + N mod 2N
    mask = torch.isfinite(logits)
    mask[torch.arange(2 * n), positive] = False
    return mask


exercise(id="03.1", notebook="03_invaspread", name="negative_mask", title="who is whose negative",
         task="return the (2N, 2N) boolean mask of negatives for the stacked views [z1; z2]: True except a view "
              "against itself and against its positive p(a) = a + N mod 2N",
         forbid=("_two_view_logits",), difficulty=1, reference=_negative_mask_reference,
         cases=lambda g: [dict(n=n) for n in (2, 3, 5, 8)],
         hints={"value": "Start from ~eye(2N), then set [a, (a + N) % 2N] to False: 2N - 2 negatives per row.",
                "shape": "The mask is (2N, 2N): both views of all N images."})


def _unit_views(g):
    cases = [dict(z1=unit(g, n, d, grad=True), z2=unit(g, n, d, grad=True), tau=t)
             for n, d, t in [(2, 3, 0.1), (4, 16, 0.1), (8, 32, 0.2), (16, 8, 0.5)]]
    cases.append(dict(z1=unit(g, 5, 7, dtype=torch.float64, grad=True), z2=unit(g, 5, 7, dtype=torch.float64, grad=True),
                      tau=0.3))
    same = unit(g, 1, 6).expand(4, 6).clone()
    cases.append(dict(z1=same.clone().requires_grad_(True), z2=same.clone().requires_grad_(True), tau=0.1))
    return cases


exercise(id="03.2", notebook="03_invaspread", name="invaspread", title="the InvaSpread loss, vectorised",
         task="return the authors' loss: with P(j | a) the softmax of z_a . z_j / tau over the 2N - 1 others, "
              "the mean over the 2N views of -log P(p(a) | a) - sum over the 2N - 2 negatives of log(1 - P(j | a))",
         forbid=("invaspread_loss",), difficulty=3, reference=losses.invaspread_loss, cases=_unit_views,
         hints={"value": "Both terms: -log P(positive | a) AND -sum over negatives j of log(1 - P(j | a)); "
                         "the softmax excludes a itself; divide by tau once.",
                "scale": "Average over all 2N views, and divide by tau once.",
                "grad": "Every view is both anchor and negative: no detach."})


# ---------------------------------------------------------------- 04 CMC

def _rgb_cases(g):
    rand = lambda *shape, dtype=torch.float64: torch.rand(*shape, generator=g, dtype=torch.float64).to(dtype)
    corners = torch.tensor([[0.0, 0, 0], [1, 1, 1], [1, 0, 0], [0, 1, 0], [0, 0, 1], [0.04, 0.04045, 0.05]],
                           dtype=torch.float64).view(6, 3, 1, 1)
    return [dict(x=corners), dict(x=rand(4, 3, 5, 5)), dict(x=0.05 * rand(3, 3, 4, 4)),   # dark: the linear branches
            dict(x=rand(2, 3, 8, 8, dtype=torch.float32))]


exercise(id="04.1", notebook="04_cmc", name="rgb_to_lab", title="sRGB to Lab, batched",
         task="convert a batch (N, 3, H, W) of sRGB values in [0, 1] to CIE Lab (D65): undo the gamma, "
              "multiply by color.SRGB_TO_XYZ, divide by color.D65_WHITE, apply f, then L, a, b",
         difficulty=2, reference=color.rgb_to_lab, cases=_rgb_cases, atol=1e-3,
         hints={"value": "Three steps, each with its two branches (torch.where): the sRGB gamma (threshold 0.04045), "
                         "the matrix and the white point, f(t) (threshold (6/29)^3); then L = 116 f(Y) - 16, "
                         "a = 500 (f(X) - f(Y)), b = 200 (f(Y) - f(Z)).",
                "shape": "Keep the layout (N, 3, H, W): channels L, a, b."})


exercise(id="04.3", notebook="04_cmc", name="cross_view_loss", title="the cross-view loss, both directions",
         task="return L -> ab plus ab -> L from ONE (N, N) score matrix z_L z_ab^T / tau: a cross-entropy over "
              "its rows (target: the diagonal) plus one over its columns",
         forbid=("info_nce",), difficulty=2, reference=lambda z_L, z_ab, tau: (losses.info_nce(z_L, z_ab, temperature=tau)
                                                         + losses.info_nce(z_ab, z_L, temperature=tau)),
         cases=lambda g: [dict(z_L=unit(g, n, d, grad=True), z_ab=unit(g, n, d, grad=True), tau=t)
                          for n, d, t in [(2, 3, 0.5), (4, 8, 0.1), (8, 16, 0.07), (16, 4, 0.2)]],
         hints={"value": "Rows: each L view against all ab views; columns (the transpose): each ab view against "
                         "all L views; target n for row n; sum the two directions.",
                "scale": "Sum the two directions (each a batch mean), and divide by tau once."})


# ---------------------------------------------------------------- 02 CPC

def _grid_cases(g):
    return [dict(x=randn(g, 2, 3, 6, 6, grad=True), patch=4, stride=2),
            dict(x=randn(g, 1, 1, 8, 12, grad=True), patch=4, stride=4),     # not square: 2 rows, 3 columns
            dict(x=randn(g, 2, 3, 32, 32), patch=8, stride=4),
            dict(x=randn(g, 3, 2, 5, 7, dtype=torch.float64), patch=3, stride=2)]


exercise(id="02.1", notebook="02_cpc", name="patch_grid", title="the patch grid",
         task="cut (N, C, H, W) images into the (N, R, S, C, P, P) grid of P x P patches with stride s "
              "(patch (i, j) = x[:, :, i*s : i*s + P, j*s : j*s + P]), without a Python loop",
         difficulty=2, reference=augment.patch_grid, cases=_grid_cases,
         hints={"value": "Tensor.unfold(2, P, s).unfold(3, P, s) gives (N, C, R, S, P, P); move C behind R and S.",
                "shape": "The layout is (N, R rows, S columns, C, P, P)."})


exercise(id="02.2", notebook="02_cpc", name="info_nce_in_batch", title="InfoNCE with in-batch candidates",
         task="return -mean_n log softmax_j(q_n . k_j / temperature)[n]: every query against all N keys, "
              "its own key is the positive",
         forbid=("info_nce",), difficulty=1, reference=lambda queries, keys, temperature: losses.info_nce(queries, keys, temperature=temperature),
         cases=lambda g: [dict(queries=randn(g, n, d, grad=True), keys=randn(g, n, d, grad=True), temperature=t)
                          for n, d, t in [(3, 2, 1.0), (8, 16, 1.0), (16, 8, 0.5), (5, 4, 0.1)]],
         hints={"value": "Scores (N, N) = queries @ keys.T / temperature; the target of row n is column n.",
                "transposed": "Row n = query n against every key.",
                "scale": "Average over the queries; divide by the temperature once."})


def _future_pairs_reference(z, c, W_k, k):
    rows = z.shape[2]
    queries = W_k(c[:, :, :rows - k].permute(0, 2, 3, 1).flatten(0, 2))   # (Q, D)
    keys = z[:, :, k:].permute(0, 2, 3, 1).flatten(0, 2)                  # (Q, D)
    return queries, keys


def _future_cases(g):
    cases = []
    for n, d, rows, cols, k in [(2, 4, 7, 7, 1), (2, 4, 7, 7, 3), (3, 5, 5, 4, 2), (1, 3, 6, 6, 5)]:
        torch.manual_seed(int(torch.randint(0, 1000, (), generator=g)))
        cases.append(dict(z=randn(g, n, d, rows, cols, grad=True), c=randn(g, n, d, rows, cols, grad=True),
                          W_k=torch.nn.Linear(d, d, bias=False), k=k))
    return cases


exercise(id="02.3", notebook="02_cpc", name="future_pairs", title="predictions and their futures, offset k",
         task="return (queries, keys), each (Q, D): queries W_k(c_ij) for all rows i <= R-1-k, keys z_(i+k)j, "
              "in the same order (n, i, j), Q = N (R-k) S",
         difficulty=2, reference=_future_pairs_reference, cases=_future_cases,
         hints={"value": "Queries from the contexts of rows 0..R-1-k, keys from the patches of rows k..R-1 (k rows "
                         "below), both permuted to (N, rows, S, D) before flattening so that they line up.",
                "shape": "Q = N * (R - k) * S rows of D: permute (N, D, R, S) to (N, R, S, D), then flatten(0, 2)."})


# ---------------------------------------------------------------- 08 SimCLR v2

def _logit_pairs(g):
    cases = [dict(student_logits=randn(g, n, c, grad=True, scale=s), teacher_logits=randn(g, n, c, grad=True, scale=s),
                  tau=t) for n, c, s, t in [(2, 3, 1.0, 1.0), (8, 10, 3.0, 1.0), (4, 5, 2.0, 0.5), (16, 10, 1.0, 2.0)]]
    same = randn(g, 4, 6)
    cases.append(dict(student_logits=same.clone().requires_grad_(True), teacher_logits=same.clone().requires_grad_(True),
                      tau=1.0))                                          # the minimum: the teacher's entropy
    return cases


exercise(id="08.1", notebook="08_simclr_v2", name="distillation", title="the distillation loss",
         task="return eq. (3): the batch mean of -sum_y P_T(y) log P_S(y), both softmaxes of the logits / tau, "
              "with the teacher's side detached (no gradient reaches the teacher)",
         difficulty=1, reference=losses.distillation_loss, cases=_logit_pairs,
         hints={"grad": "The teacher's probabilities are targets: teacher_logits.detach().",
                "offset": "Cross-entropy, not KL divergence: the loss includes the teacher's entropy.",
                "value": "Divide BOTH logits by tau; cross-entropy from P_T to log P_S, summed over classes, "
                         "averaged over images.",
                "sign": "Minus the sum of P_T log P_S (a cross-entropy is positive)."})


# ---------------------------------------------------------------- 10 SwAV

def _sinkhorn_cases(g):
    cases = [dict(scores=unit(g, n, 8) @ unit(g, k, 8).T, eps=eps, n_iters=it)
             for n, k, eps, it in [(8, 4, 0.05, 3), (32, 10, 0.05, 3), (5, 3, 0.1, 1), (16, 16, 0.05, 10)]]
    cases.append(dict(scores=randn(g, 6, 5, dtype=torch.float64), eps=0.5, n_iters=3))
    cases.append(dict(scores=6.0 * unit(g, 8, 4), eps=0.05, n_iters=3))          # exp(120) overflows float32
    return cases


exercise(id="10.1", notebook="10_swav", name="sinkhorn", title="Sinkhorn-Knopp codes",
         task="return the (N, K) codes of Algorithm 1: Q = exp(scores / eps) transposed to (K, N), normalised "
              "to sum 1, then n_iters rounds of rows -> 1/K, columns -> 1/N, scaled by N; no gradient",
         difficulty=2, reference=losses.sinkhorn, cases=_sinkhorn_cases, atol=1e-6,
         hints={"nonfinite": "exp(score / eps) overflows for scores above ~4.4 at eps = 0.05: subtract the "
                             "maximum first, or work with logs (torch.logsumexp).",
                "value": "Each round: rows (prototypes) first, then columns (samples); n_iters rounds; the "
                         "last step makes every sample's code sum to 1 (after scaling by N).",
                "scale": "Scale the final Q (K, N) by N, so that every sample's code sums to 1.",
                "transposed": "Return one code per sample: (N, K)."})


def _swav_cases(g):
    cases = []
    for n, k, tau in [(6, 5, 0.1), (8, 10, 0.1), (4, 3, 0.5), (16, 32, 0.1)]:
        codes = losses.sinkhorn(randn(g, n, k)).requires_grad_(True)
        cases.append(dict(scores=randn(g, n, k, grad=True), codes=codes, tau=tau))
    return cases


exercise(id="10.2", notebook="10_swav", name="swav_term", title="one swapped-prediction term",
         task="return l(z_t, q_s) = -mean_n sum_k q_s[n, k] log softmax_k(scores[n] / tau), with the codes "
              "as constant targets (detached)",
         difficulty=1, reference=losses.swav_loss, cases=_swav_cases,
         hints={"grad": "The codes are targets: codes.detach().",
                "value": "log_softmax over the K prototypes of scores / tau, weighted by the codes, summed over "
                         "k, averaged over samples.",
                "sign": "It is MINUS the sum of q log p."})


def _swapped_reference(scores, codes, tau):
    total = 0.0
    for i, q in enumerate(codes):
        total = total + sum(losses.swav_loss(s, q, tau) for v, s in enumerate(scores) if v != i) / (len(scores) - 1)
    return total / len(codes)


def _swapped_cases(g):
    cases = []
    for n, k, views in [(6, 5, 2), (8, 10, 4), (4, 3, 3), (5, 8, 6)]:
        cases.append(dict(scores=[randn(g, n, k, grad=True) for _ in range(views)],
                          codes=[losses.sinkhorn(randn(g, n, k)).requires_grad_(True) for _ in range(2)], tau=0.1))
    return cases


exercise(id="10.3", notebook="10_swav", name="swapped_loss", title="the multi-crop swapped loss",
         task="return the mean over the global views i of: the mean over every other view v != i of "
              "l(scores[v], codes[i]) (all V views predict each global view's code, never their own)",
         difficulty=2, reference=_swapped_reference, cases=_swapped_cases,
         hints={"value": "For each code i (global views only), average l(scores[v], codes[i]) over the V - 1 views "
                         "v != i, then average over the codes.",
                "scale": "Divide by V - 1 views per code (not V), then by the number of codes.",
                "grad": "The codes are targets: no gradient may reach them."})


# ---------------------------------------------------------------- 14 Scaling out

def _gather_backward_reference(grads, rank):
    """What gather_with_grad's backward computes on process `rank`: the all-reduce (sum) of every
    process's gradient w.r.t. the gathered (W*N, ...) tensor, then this process's N rows."""
    return sum(grads).chunk(len(grads))[rank]


def _gather_cases(g):
    return [dict(grads=[randn(g, w * n, d) for _ in range(w)], rank=r)
            for w, n, d, r in [(2, 3, 4, 0), (2, 3, 4, 1), (4, 2, 3, 2), (3, 5, 2, 2)]]


exercise(id="14.1", notebook="14_scaling_out", name="gather_backward", title="the gradient of an all-gather",
         task="given every process's gradient w.r.t. the gathered (W*N, D) tensor (a list of W), return process "
              "rank's gradient w.r.t. its own (N, D) shard: the sum over processes (all-reduce) of rows "
              "rank*N .. rank*N + N - 1",
         difficulty=2, reference=_gather_backward_reference, cases=_gather_cases,
         hints={"value": "Sum the W gradients first (all-reduce: every process's loss used my rows), then take "
                         "my slice; my own gradient alone is a plain all_gather's mistake.",
                "scale": "Sum over processes, do not average (DDP averages once, later)."})


def _lse_cases(g):
    cases = []
    for k, sizes, scale in [(5, (6, 6), 20.0), (3, (4, 2, 5), 1.0), (4, (3, 9), 200.0), (2, (1, 1), 5.0)]:
        cases.append(dict(parts=[randn(g, k, b, scale=scale) for b in sizes]))
    return cases


exercise(id="14.2", notebook="14_scaling_out", name="logsumexp_from_parts", title="a logsumexp over processes",
         task="return the (K, 1) logsumexp of the rows of the column-wise concatenation of parts, from "
              "per-part maxima (all-reduce MAX) and per-part sums of exp(x - max) (all-reduce SUM)",
         difficulty=2, reference=lambda parts: torch.logsumexp(torch.cat(parts, dim=1), dim=1, keepdim=True),
         cases=_lse_cases,
         hints={"nonfinite": "exp overflows for large scores: subtract the global maximum before exp.",
                "value": "m = the max over parts of each part's row max; then m + log(sum over parts of "
                         "sum exp(part - m)).",
                "shape": "Keep the dimension: (K, 1)."})


def _center_reference(center, parts, m):
    c = losses.DINOCenter(center.shape[1], momentum=m)
    c.center.copy_(center)
    c.update_(torch.cat(parts))
    return c.center


def _center_cases(g):
    return [dict(center=randn(g, 1, k), parts=[randn(g, b, k, scale=3.0) for b in sizes], m=m)
            for k, sizes, m in [(1, (12, 4), 0.9), (4, (5, 5), 0.9), (3, (2, 7, 1), 0.5), (6, (10, 3), 0.0)]]


exercise(id="14.3", notebook="14_scaling_out", name="center_update", title="DINO's centre over processes",
         task="return the new centre (1, K): m * center + (1 - m) * (the mean of ALL rows of all parts: the sum "
              "over processes of the row sums, divided by the total number of rows)",
         forbid=("update_",), difficulty=1, reference=_center_reference, cases=_center_cases,
         hints={"value": "All-reduce the sums AND the counts: the mean of the per-process means is wrong when "
                         "the processes hold different numbers of rows; the old centre has weight m.",
                "shape": "The centre is (1, K)."})


# ---------------------------------------------------------------- 07 MoCo v2

exercise(id="07.1", notebook="07_moco_v2", name="blur", title="the Gaussian blur of aug+",
         task="blur every channel of every image with the normalised k x k Gaussian of std sigma, reflect "
              "padding, output the same size (a depthwise convolution, or two 1-D ones: it is separable)",
         forbid=("gaussian_blur",), difficulty=2,
         reference=lambda x, sigma, kernel_size: augment.gaussian_blur(x, sigma=(sigma, sigma), p=1.0,
                                                                       kernel_size=kernel_size),
         cases=lambda g: [dict(x=torch.rand(2, 3, 8, 8, generator=g), sigma=1.5, kernel_size=3),
                          dict(x=torch.rand(1, 3, 10, 12, generator=g), sigma=0.5, kernel_size=5),
                          dict(x=torch.rand(3, 3, 6, 6, generator=g), sigma=2.0, kernel_size=5),
                          dict(x=torch.rand(2, 3, 7, 9, generator=g, dtype=torch.float64), sigma=1.0, kernel_size=3)],
         hints={"scale": "Normalise the kernel so that its weights sum to 1.",
                "value": "exp(-(u^2 + v^2) / (2 sigma^2)) over u, v in -r..r, normalised; pad with mode='reflect' "
                         "(the border pixels differ otherwise); one kernel per channel (groups=C).",
                "shape": "Pad by r = kernel_size // 2 on every side so that the output keeps H x W."})


def _schedule_cases(g):
    return [dict(base=0.06, final=0.0, total_steps=10, warmup_steps=0),
            dict(base=0.3, final=0.001, total_steps=25, warmup_steps=5),
            dict(base=0.996, final=1.0, total_steps=7, warmup_steps=0),      # a momentum rising to 1 (BYOL, DINO)
            dict(base=1.0, final=0.0, total_steps=1, warmup_steps=0),
            dict(base=0.5, final=0.1, total_steps=4, warmup_steps=4)]


exercise(id="07.2", notebook="07_moco_v2", name="cosine_schedule", title="the cosine schedule with warm-up",
         task="return a (total_steps,) tensor: a linear warm-up from 0 to base over warmup_steps (the first step "
              "already above 0), then base -> final along half a cosine, final + (base - final)(1 + cos(pi t / T))/2, "
              "t = 0..T-1, T the steps after warm-up",
         forbid=("cosine_schedule",), difficulty=2,
         reference=lambda base, final, total_steps, warmup_steps=0: schedules.cosine_schedule(base, final, total_steps,
                                                                                             warmup_steps),
         cases=_schedule_cases,
         hints={"value": "t runs 0..T-1 with T = total_steps - warmup_steps, divided by T (not T - 1: the last "
                         "value stays above final); the warm-up's first value is base / warmup_steps.",
                "shape": "One value per step: total_steps values, warm-up included."})


# ---------------------------------------------------------------- 09 BYOL

def _ema_cases(g):
    cases = []
    for m, d, seed in [(0.99, 4, 1), (0.0, 3, 2), (0.5, 5, 3), (1.0, 2, 4)]:
        torch.manual_seed(seed)
        online = torch.nn.Sequential(torch.nn.Linear(d, 8), torch.nn.BatchNorm1d(8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
        target = momentum.copy_frozen(online)
        with torch.no_grad():
            for p in online.parameters():
                p.add_(torch.randn(p.shape, generator=g))            # as if an optimiser had moved theta
        online(torch.randn(16, d, generator=g))                     # BN running statistics move too
        cases.append(dict(target=target, online=online, m=m))
    return cases


exercise(id="09.1", notebook="09_byol", name="ema_update_", title="the EMA update of the target",
         task="in place, parameter by parameter: xi <- m xi + (1 - m) theta for target (xi) and online (theta), "
              "without autograd history; then copy the online network's buffers (BN statistics) into the target",
         difficulty=1, reference=momentum.ema_update_, cases=_ema_cases,
         hints={"state": "The TARGET moves (weight m on its old value, 1 - m on the online one), under "
                         "torch.no_grad(); the online network is not changed; buffers are copied from online."})


exercise(id="09.2", notebook="09_byol", name="byol_loss", title="BYOL's normalised MSE",
         task="return the batch mean of || q_n / ||q_n|| - z_n / ||z_n|| ||^2 (= 2 - 2 cos(q_n, z_n)); the "
              "target's stop-gradient is the caller's",
         difficulty=1, reference=losses.byol_loss, cases=_pairs,
         hints={"value": "Normalise both q and z (rows) before the squared difference; sum over D, mean over N.",
                "scale": "Sum the squared differences over D, average over the batch.",
                "grad": "No detach inside: the caller computes z under torch.no_grad()."})


def _std_cases(g):
    spread = randn(g, 64, 16)
    return [dict(z=spread), dict(z=randn(g, 5, 8, scale=4.0)), dict(z=randn(g, 3, 2) @ randn(g, 2, 32)),
            dict(z=torch.ones(10, 6) + 0.01 * randn(g, 10, 6)), dict(z=randn(g, 2, 3, dtype=torch.float64))]


exercise(id="09.3", notebook="09_byol", name="output_std", title="the collapse meter's std",
         task="return (a float) the std over the batch (dim 0, torch's default unbiased std) of the L2-normalised "
              "outputs, averaged over the D dimensions",
         difficulty=1, reference=evaluate.output_std, cases=_std_cases,
         hints={"value": "Normalise each row z_n to unit length first; std over the batch (dim=0), then the mean "
                         "over D.",
                "scale": "torch's default std (unbiased, N - 1) over dim 0, of unit rows, then the mean over D."})


# ---------------------------------------------------------------- 12 MoCo v3

def _attention_reference(x, qkv, proj, heads):
    layer = models.Attention(x.shape[-1], heads)
    layer.qkv, layer.proj = qkv, proj
    return layer(x)


def _attention_cases(g):
    cases = []
    for n, t, dim, heads in [(1, 3, 8, 2), (2, 5, 12, 3), (3, 4, 8, 1), (2, 17, 16, 4)]:
        torch.manual_seed(int(torch.randint(0, 1000, (), generator=g)))
        cases.append(dict(x=randn(g, n, t, dim, grad=True), qkv=torch.nn.Linear(dim, 3 * dim),
                          proj=torch.nn.Linear(dim, dim), heads=heads))
    return cases


exercise(id="12.2", notebook="12_moco_v3", name="attention", title="multi-head self-attention",
         task="return (out, A): q, k, v from qkv(x) split into `heads` heads of d = dim / heads (q the first dim "
              "channels, then k, then v; head h owns channels h*d..h*d+d-1 of each), A = softmax(q k^T / sqrt(d)) "
              "(N, heads, T, T), out = proj(the heads' A v concatenated) (N, T, dim)",
         forbid=("Attention",), difficulty=3, reference=_attention_reference, cases=_attention_cases,
         hints={"value": "Scale by 1/sqrt(d) with d the size of ONE head; softmax over the keys (last dim); split "
                         "qkv(x) as (N, T, 3, heads, d): q, k, v first, then heads.",
                "shape": "A is (N, heads, T, T); out is (N, T, dim) after concatenating the heads and proj.",
                "grad": "Every step is differentiable: no detach."})


def _ctr_reference(q, k, tau):
    return 2 * tau * losses.info_nce(F.normalize(q, dim=1), F.normalize(k, dim=1), temperature=tau)


exercise(id="12.3", notebook="12_moco_v3", name="ctr", title="ctr(q, k), MoCo v3's contrastive loss",
         task="return 2 tau times the in-batch InfoNCE of the L2-normalised q against the L2-normalised k "
              "(query i's positive is key i, the other N - 1 keys are its negatives)",
         forbid=("info_nce",), difficulty=1, reference=_ctr_reference,
         cases=lambda g: [dict(q=randn(g, n, d, grad=True, scale=3.0), k=randn(g, n, d), tau=t)
                          for n, d, t in [(4, 3, 0.2), (8, 16, 0.2), (16, 8, 1.0), (2, 4, 0.1)]],
         hints={"value": "Normalise q and k, logits q k^T / tau (N, N), cross-entropy with target i for row i, "
                         "then multiply by 2 tau.",
                "scale": "The factor is 2 tau (the paper's Algorithm 1), the temperature divides the logits once."})


def _symmetric_cases(g):
    return [dict(q1=randn(g, n, d, grad=True), q2=randn(g, n, d, grad=True), k1=randn(g, n, d), k2=randn(g, n, d),
                 tau=t) for n, d, t in [(4, 3, 0.2), (8, 16, 0.2), (6, 8, 0.5)]]


exercise(id="12.4", notebook="12_moco_v3", name="symmetric_ctr", title="the symmetrised loss",
         task="return ctr(q1, k2) + ctr(q2, k1): each view's query against the keys of the OTHER view",
         difficulty=1,
         reference=lambda q1, q2, k1, k2, tau: _ctr_reference(q1, k2, tau) + _ctr_reference(q2, k1, tau),
         cases=_symmetric_cases,
         hints={"value": "Pair each query with the other view's keys: q1 with k2, q2 with k1.",
                "scale": "Sum the two terms (the paper's Algorithm 1 adds them)."})


# ---------------------------------------------------------------- 13 DINO

def _dino_cases(g):
    cases = []
    for n, k, views, tt in [(3, 6, 4, 0.04), (4, 10, 2, 0.04), (2, 5, 6, 0.07), (8, 16, 3, 0.1)]:
        cases.append(dict(student_out=[randn(g, n, k, grad=True) for _ in range(views)],
                          teacher_out=[randn(g, n, k, grad=True) for _ in range(2)],
                          center=0.3 * randn(g, 1, k), student_temp=0.1, teacher_temp=tt))
    return cases


exercise(id="13.1", notebook="13_dino", name="dino_loss", title="the DINO loss with the centre",
         task="return the mean over every pair (teacher crop i, student crop j != i) of the batch mean of "
              "-sum_k P_t[k] log P_s[k], with P_t = softmax((teacher - center) / teacher_temp) as a constant target "
              "and P_s = softmax(student / student_temp)",
         difficulty=2, reference=losses.dino_loss, cases=_dino_cases,
         hints={"grad": "The teacher's side is a target: detach it (the teacher is an EMA, never trained by the loss).",
                "value": "Subtract the centre from the TEACHER only, two temperatures (teacher_temp sharpens the "
                         "teacher), and skip the pairs where student crop j is teacher crop i.",
                "scale": "Average over the pairs (not sum), each pair a batch mean."})


def _center_update_reference(center, teacher_out, m):
    c = losses.DINOCenter(center.shape[1], momentum=m)
    c.center = center                                  # update this tensor in place
    c.update_(teacher_out)


exercise(id="13.2", notebook="13_dino", name="center_update_", title="the centre's moving average",
         task="in place, without autograd history: center <- m center + (1 - m) * the mean over the batch of the "
              "teacher outputs (M, K); center is (1, K)",
         forbid=("update_",), difficulty=1, reference=_center_update_reference,
         cases=lambda g: [dict(center=randn(g, 1, k), teacher_out=randn(g, b, k, grad=True, scale=2.0), m=m)
                          for k, b, m in [(6, 6, 0.9), (10, 16, 0.9), (3, 4, 0.5), (5, 2, 0.0)]],
         hints={"state": "The old centre has weight m, the batch mean (over dim 0, keepdim) 1 - m; change center in "
                         "place (mul_, add_) under torch.no_grad()."})


# ---------------------------------------------------------------- more: the kNN monitor (01), the effective rank (11)

def _knn_cases(g):
    cases = []
    for n_train, n_test, d, c, k, t in [(60, 20, 8, 3, 20, 0.1), (100, 30, 16, 5, 50, 0.1), (40, 10, 4, 4, 40, 0.5),
                                       (30, 12, 6, 2, 1, 0.1)]:
        centres = randn(g, c, d)
        train_labels = torch.randint(0, c, (n_train,), generator=g)
        test_labels = torch.randint(0, c, (n_test,), generator=g)
        cases.append(dict(train_features=centres[train_labels] + 1.5 * randn(g, n_train, d), train_labels=train_labels,
                          test_features=3 * (centres[test_labels] + 1.5 * randn(g, n_test, d)), num_classes=c, k=k,
                          temperature=t))
    return cases


exercise(id="01.4", notebook="01_instdisc", name="knn_predict", title="the weighted kNN vote",
         task="return (N_test,) int64 predictions: cosine similarities of the L2-normalised test and train features, "
              "the k most similar train samples vote for their class with weight exp(s / temperature), argmax",
         difficulty=2, reference=evaluate.knn_predict, cases=_knn_cases,
         hints={"value": "Normalise both sides, take the k LARGEST similarities (topk), weight each neighbour's "
                         "vote by exp(s / temperature) (scatter_add_ into (N_test, C)), predict the argmax.",
                "shape": "One prediction per test sample: (N_test,)."})


def _rank_cases(g):
    return [dict(z=randn(g, 200, 8)), dict(z=randn(g, 100, 2) @ randn(g, 2, 16)), dict(z=5 + randn(g, 50, 6)),
            dict(z=randn(g, 30, 4) * torch.tensor([4.0, 1.0, 0.5, 0.1])), dict(z=randn(g, 10, 3, dtype=torch.float64))]


exercise(id="11.3", notebook="11_simsiam", name="effective_rank", title="the effective rank",
         task="return (a float) exp(-sum_i p_i log p_i) with p_i = lambda_i / sum_j lambda_j, lambda the eigenvalues "
              "of the (D, D) covariance of the outputs z (N, D) (centred over the batch)",
         difficulty=2, reference=evaluate.effective_rank, cases=_rank_cases, rtol=1e-3,
         hints={"value": "The covariance (torch.cov(z.T): centred over the batch), its eigenvalues "
                         "(torch.linalg.eigvalsh, clamped at 0), normalised to sum 1, then the exp of their "
                         "entropy (natural log)."})


# ---------------------------------------------------------------- more: CMC's two views (04), ViT tokens (12), DINO's teacher temperature (13)

def _lab_views_reference(x):
    return color.lab_split(x)


exercise(id="04.2", notebook="04_cmc", name="lab_views", title="the two views: L and ab",
         task="return (L (N, 1, H, W), ab (N, 2, H, W)) of an sRGB batch: its Lab channels, each mapped linearly "
              "from its range color.LAB_RANGE onto [-1, 1]",
         forbid=("lab_split",), difficulty=1, reference=_lab_views_reference, atol=1e-5,
         cases=lambda g: [dict(x=torch.rand(n, 3, h, w, generator=g)) for n, h, w in [(2, 4, 4), (3, 5, 7), (1, 8, 8)]],
         hints={"value": "Per channel c with range (lo, hi): (lab_c - (lo + hi) / 2) / ((hi - lo) / 2); L is channel 0, "
                         "ab channels 1 and 2.",
                "shape": "Return two tensors: L (N, 1, H, W) and ab (N, 2, H, W)."})


def _patch_cases(g):
    return [dict(img=randn(g, n, 3, s, s, grad=True), weight=randn(g, dim, 3, p, p, grad=True), bias=randn(g, dim), p=p)
            for n, s, p, dim in [(1, 8, 4, 6), (2, 12, 4, 5), (2, 6, 2, 3), (1, 9, 3, 4)]]


exercise(id="12.1", notebook="12_moco_v3", name="patch_tokens", title="the patch projection as a matrix product",
         task="return the (N, T, dim) patch tokens: cut the images into non-overlapping p x p patches (row by row), "
              "flatten each as (3, p, p), multiply by weight (dim, 3, p, p) flattened, add bias",
         forbid=("conv2d",), difficulty=2,
         reference=lambda img, weight, bias, p: F.conv2d(img, weight, bias, stride=p).flatten(2).transpose(1, 2),
         cases=_patch_cases,
         hints={"value": "img.unfold(2, p, p).unfold(3, p, p) -> (N, 3, R, S, p, p); permute to (N, R, S, 3, p, p) so "
                         "that each patch flattens as (3, p, p), the same order as weight.reshape(dim, -1).",
                "offset": "Add the bias once per token.",
                "order": "Tokens go row by row: patch (i, j) is token i * S + j."})


def _teacher_temp_reference(t0, t1, warmup_steps, total_steps):
    return torch.cat([torch.linspace(t0, t1, warmup_steps), torch.full((total_steps - warmup_steps,), t1)])


exercise(id="13.3", notebook="13_dino", name="teacher_temperatures", title="the teacher temperature's warm-up",
         task="return (total_steps,) float32 teacher temperatures: a linear ramp from t0 to t1 over the first "
              "warmup_steps steps (both ends included), then t1",
         difficulty=1, reference=_teacher_temp_reference,
         cases=lambda g: [dict(t0=0.04, t1=0.07, warmup_steps=5, total_steps=12), dict(t0=0.04, t1=0.04,
                          warmup_steps=3, total_steps=3), dict(t0=0.02, t1=0.06, warmup_steps=0, total_steps=4),
                          dict(t0=0.04, t1=0.07, warmup_steps=30, total_steps=40)],
         hints={"value": "torch.linspace(t0, t1, warmup_steps) (its last value is t1), then t1 for the remaining "
                         "steps.",
                "shape": "One value per step: total_steps values, the warm-up included."})
