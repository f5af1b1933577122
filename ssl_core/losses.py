"""Losses: pure functions of network outputs -> scalar (a module only where there is state).

Shape legend (the whole package):
    N batch, D embedding, M bank/queue entries (m sampled negatives), K prototypes,
    V views, C classes.
Features entering a contrastive loss are L2-normalised, so a dot product is a cosine.
Stop-gradients are the caller's, visible in the notebook's loop (`z.detach()`, a target computed
under no_grad), except where a function's docstring says it detaches a target itself.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ssl_core import checks

Tensor = torch.Tensor

_WHY_TEMPERATURE = " (it divides the similarities: 0 gives NaN, a negative value reverses the objective)"


def _check_temperature(value, name: str, loss: str) -> None:
    """The one temperature check of every loss: a number > 0 (a CUDA tensor is not read)."""
    checks.positive(value, f"{loss}: {name}", _WHY_TEMPERATURE)


def check_finite(loss, step=None, hint: str | None = None, **terms) -> float:
    """The loss as a Python float (use it in place of `loss.item()` in a training loop); raises
    FloatingPointError, naming the step, the loss terms and a fix, if it is NaN or infinite.

        epoch_losses.append(losses.check_finite(loss, step=step, lr=lr, tau=HP["tau"]))

    A NaN loss is not a result: the next optimiser step writes NaN into every weight, and the
    run trains on for nothing. `terms` are anything worth printing beside it (parts of the loss,
    the learning rate, a temperature); tensors are printed as numbers. It reads the loss once,
    as `loss.item()` would (one wait for the GPU per step, not an extra one).

    Infrastructure (every notebook's training loop).
    """
    value = float(loss.detach().float()) if isinstance(loss, Tensor) else float(loss)
    if math.isfinite(value):
        return value

    def show(v):
        if isinstance(v, Tensor) and v.numel() == 1:
            v = v.item()
        return f"{v:.4g}" if isinstance(v, float) else repr(v)

    where = f" at step {step}" if step is not None else ""
    parts = ", ".join(f"{k}={show(v)}" for k, v in terms.items())
    hint = hint or ("lower the learning rate (a diverging step), raise a temperature that is near 0, "
                    "or check the inputs for NaN (e.g. a zero vector normalised)")
    raise FloatingPointError(f"the loss is {value}{where}" + (f" ({parts})" if parts else "")
                             + f"; stopped, since training on would only spread NaN through the weights. Fix: {hint}")


def nonparametric_softmax_loss(v: Tensor, bank: Tensor, idx: Tensor, tau: float = 0.07) -> Tensor:
    """InstDisc's exact objective (Wu et al. 2018, eq. 2): every image is its own class.

    P(i | v) = exp(v_i . v / tau) / sum_j exp(v_j . v / tau), over all M memory vectors v_j;
    loss = -mean log P(idx | v). Costs O(M) per sample, hence the NCE approximation below.
    v (N, D) unit rows, bank (M, D) unit rows, idx (N,) the sample's own row in the bank.

    Built in: notebooks/01_instdisc.ipynb
    """
    _check_temperature(tau, "tau", "nonparametric_softmax_loss")
    logits = torch.einsum("nd,md->nm", v, bank) / tau                  # (N, M)
    return F.cross_entropy(logits, idx)


def estimate_log_Z(neg_dots: Tensor, tau: float, n_data: int) -> Tensor:
    """Monte-Carlo estimate of InstDisc's normaliser, Z ~= n E_j[exp(v_j . v / tau)] (eq. 6-7),
    from the dot products with the m random bank rows of one batch. The paper computes it once,
    on the first batch, and keeps it fixed. neg_dots (N, m) -> scalar log Z (detached).

    Built in: notebooks/01_instdisc.ipynb
    """
    _check_temperature(tau, "tau", "estimate_log_Z")
    log_mean = torch.logsumexp(neg_dots.detach().flatten() / tau, dim=0) - math.log(neg_dots.numel())
    return log_mean + math.log(n_data)


def instdisc_nce_loss(pos_dots: Tensor, neg_dots: Tensor, log_Z: Tensor | float, tau: float = 0.07,
                      n_data: int | None = None) -> Tensor:
    """Noise-contrastive estimation of the non-parametric softmax (Wu et al. 2018, eq. 3-5).

    P(i | v) = exp(v_i . v / tau) / Z; noise P_n = 1/n (uniform over the n images), m noise
    samples per positive. The posterior that i came from the data, not the noise, is
        h(i, v) = P(i | v) / (P(i | v) + m P_n(i)),
    and J_NCE = -E_data[log h(i, v)] - m E_noise[log(1 - h(i, v'))].
    With a = v_i . v / tau - log Z and b = log(m / n), log h = -softplus(b - a) and
    log(1 - h) = -softplus(a - b): a logistic regression with bias b.

    pos_dots (N,) with the own bank row, neg_dots (N, m) with m random bank rows.
    Returns the batch mean of -log h(pos) - sum_j log(1 - h(neg_j)).

    Built in: notebooks/01_instdisc.ipynb
    """
    if pos_dots.dim() != 1 or neg_dots.dim() != 2 or neg_dots.shape[0] != pos_dots.shape[0]:
        raise ValueError(f"expected pos_dots (N,) and neg_dots (N, m), got {tuple(pos_dots.shape)} "
                         f"and {tuple(neg_dots.shape)}")
    if n_data is None:
        raise ValueError("n_data (the number of training images, the size of the memory bank) is required")
    _check_temperature(tau, "tau", "instdisc_nce_loss")
    m = neg_dots.shape[1]
    b = math.log(m / n_data)                                           # log(m P_n)
    a_pos = pos_dots / tau - log_Z                                     # (N,)
    a_neg = neg_dots / tau - log_Z                                     # (N, m)
    return (F.softplus(b - a_pos) + F.softplus(a_neg - b).sum(dim=1)).mean()


def info_nce(queries: Tensor, positive_keys: Tensor, negative_keys: Tensor | None = None,
             temperature: float = 0.1) -> Tensor:
    """InfoNCE (van den Oord et al. 2018, eq. 4): pick the positive key among the negatives.

        L = -mean_n log exp(q_n . k_n+ / t) / (exp(q_n . k_n+ / t) + sum_j exp(q_n . k_j- / t))

    queries (N, D), positive_keys (N, D): row n of each is a positive pair.
    negative_keys:
        None      -> in-batch: the other N-1 positive keys are query n's negatives (CPC, MoCo v3);
        (M, D)    -> one shared set of M negatives for every query (a MoCo queue);
        (N, M, D) -> M negatives of each query's own.
    Inputs are used as given: normalise them first for cosine similarities (CPC scores with a
    plain dot product). Returns the mean loss over the N queries; a cross-entropy whose
    target is the positive, so with all scores equal it is log(1 + number of negatives).
    Inputs of different dtypes (bf16 keys from an autocast forward beside float32 queries) are
    promoted to the wider one; temperature > 0.

    Built in: notebooks/02_cpc.ipynb
    """
    if queries.dim() != 2 or queries.shape != positive_keys.shape:
        raise ValueError(f"expected queries and positive_keys of the same shape (N, D), got "
                         f"{tuple(queries.shape)} and {tuple(positive_keys.shape)}")
    _check_temperature(temperature, "temperature", "info_nce")
    keys = [queries, positive_keys] + ([] if negative_keys is None else [negative_keys])
    if len({t.dtype for t in keys}) > 1:  # e.g. bf16 keys from an autocast forward, float32 queries
        dtype = torch.promote_types(torch.promote_types(queries.dtype, positive_keys.dtype), keys[-1].dtype)
        queries, positive_keys = queries.to(dtype), positive_keys.to(dtype)
        negative_keys = None if negative_keys is None else negative_keys.to(dtype)
    if negative_keys is None:
        logits = torch.einsum("nd,md->nm", queries, positive_keys) / temperature     # (N, N)
        targets = torch.arange(len(queries), device=queries.device)                # diagonal
        return F.cross_entropy(logits, targets)
    if negative_keys.dim() == 2 and negative_keys.shape[1] == queries.shape[1]:
        l_neg = torch.einsum("nd,md->nm", queries, negative_keys)                  # (N, M)
    elif negative_keys.dim() == 3 and negative_keys.shape[0] == len(queries) \
            and negative_keys.shape[2] == queries.shape[1]:
        l_neg = torch.einsum("nd,nmd->nm", queries, negative_keys)                 # (N, M)
    else:
        raise ValueError(f"negative_keys must be (M, D) or (N, M, D) with N={len(queries)}, "
                         f"D={queries.shape[1]}; got {tuple(negative_keys.shape)}")
    l_pos = torch.einsum("nd,nd->n", queries, positive_keys).unsqueeze(1)          # (N, 1)
    logits = torch.cat([l_pos, l_neg], dim=1) / temperature                        # (N, 1+M)
    targets = torch.zeros(len(queries), dtype=torch.long, device=queries.device)   # positive first
    return F.cross_entropy(logits, targets)


def _two_view_logits(z1: Tensor, z2: Tensor, tau: float, name: str = "tau",
                     loss: str = "invaspread_loss") -> tuple[Tensor, Tensor]:
    """The in-batch similarity matrix of two views, shared by InvaSpread (03) and SimCLR (06).

    z = [z1; z2] (2N, D); returns logits z_a . z_j / tau (2N, 2N) with the diagonal (a view
    against itself) set to -inf, and positive (2N,) = a + N mod 2N, the other view's row.
    """
    if z1.dim() != 2 or z1.shape != z2.shape or len(z1) < 2:
        raise ValueError(f"expected two views z1, z2 of the same shape (N, D) with N >= 2, got "
                         f"{tuple(z1.shape)} and {tuple(z2.shape)}")
    _check_temperature(tau, name, loss)
    n = len(z1)
    z = torch.cat([z1, z2])                                                  # (2N, D)
    self_mask = torch.eye(2 * n, dtype=torch.bool, device=z.device)
    logits = (torch.einsum("ad,jd->aj", z, z) / tau).masked_fill(self_mask, float("-inf"))  # (2N, 2N)
    positive = torch.arange(2 * n, device=z.device).roll(n)                  # p(a) = a + N mod 2N
    return logits, positive


def invaspread_loss(z1: Tensor, z2: Tensor, tau: float = 0.1) -> Tensor:
    """Invariant and Spreading instance features (Ye et al. 2019, eq. 5), in-batch, symmetric.

    The 2N features of a batch (two augmentations of N images) are stacked, z = [z1; z2].
    For anchor a with positive p(a) (the other view of the same image),
        P(j | a) = exp(z_j . z_a / tau) / sum_{k != a} exp(z_k . z_a / tau)     over the 2N-1 others,
        loss = -1/(2N) sum_a [ log P(p(a) | a) + sum_{j != a, p(a)} log(1 - P(j | a)) ].
    The first term pulls the two views together (invariance); the second pushes every other
    image of the batch, 2N-2 negatives, away (spreading). No memory bank: every feature is
    fresh, and the gradient flows through anchors and keys alike.
    z1, z2 (N, D) unit rows, row n of each from the same image.

    Built in: notebooks/03_invaspread.ipynb
    """
    logits, positive = _two_view_logits(z1, z2, tau)                         # (2N, 2N), (2N,)
    log_p = torch.log_softmax(logits, dim=1)                                 # log P(j | a), P(a | a) = 0
    rows = torch.arange(len(logits), device=logits.device)
    log_p_pos = log_p[rows, positive]                                        # (2N,)
    negative_mask = torch.isfinite(logits)                                   # all but a itself ...
    negative_mask[rows, positive] = False                                    # ... and p(a): 2N-2 negatives
    log_not = torch.log1p(-log_p.exp().clamp(max=1 - 1e-6))                  # log(1 - P(j | a))
    return -(log_p_pos + (log_not * negative_mask).sum(dim=1)).mean()


def nt_xent(z1: Tensor, z2: Tensor, temperature: float = 0.5) -> Tensor:
    """SimCLR's normalised temperature-scaled cross-entropy (Chen et al. 2020, eq. 1).

    The 2N views z = [z1; z2] are L2-normalised here; for the positive pair (i, j),
        l(i, j) = -log exp(sim(z_i, z_j) / t) / sum_{k != i} exp(sim(z_i, z_k) / t),
    summed over both orders of every pair: loss = 1/(2N) sum_k [l(2k-1, 2k) + l(2k, 2k-1)].
    Each view has 1 positive and 2N-2 negatives. z1, z2 (N, D), row n of each from one image.
    It equals the first (invariance) term of InvaSpread's loss (notebook 03) without the
    second one. With all views identical it is log(2N - 1).

    Built in: notebooks/06_simclr_v1.ipynb
    """
    logits, positive = _two_view_logits(F.normalize(z1, dim=1), F.normalize(z2, dim=1), temperature,
                                        "temperature", "nt_xent")
    return F.cross_entropy(logits, positive)


def distillation_loss(student_logits: Tensor, teacher_logits: Tensor, temperature: float = 1.0) -> Tensor:
    """SimCLR v2's distillation loss (Chen et al. 2020b, eq. 3): the student matches the
    teacher's soft labels on unlabelled images.

        P(y | x; t) = exp(f(x)[y] / t) / sum_y' exp(f(x)[y'] / t),
        L = -1/N sum_i sum_y P_T(y | x_i; t) log P_S(y | x_i; t),
    the cross-entropy from the teacher's distribution to the student's, averaged over the batch.
    The teacher's side is detached here (no gradient reaches the teacher). With equal student
    and teacher logits it is the entropy of the teacher's distribution, its minimum over the
    student. student_logits, teacher_logits (N, C); t > 0 (the paper uses t = 1).

    Built in: notebooks/08_simclr_v2.ipynb
    """
    if student_logits.dim() != 2 or student_logits.shape != teacher_logits.shape:
        raise ValueError(f"expected student and teacher logits of the same shape (N, C), got "
                         f"{tuple(student_logits.shape)} and {tuple(teacher_logits.shape)}")
    _check_temperature(temperature, "temperature", "distillation_loss")
    p_teacher = torch.softmax(teacher_logits.detach() / temperature, dim=1)          # (N, C), no grad
    log_p_student = torch.log_softmax(student_logits / temperature, dim=1)          # (N, C)
    return -(p_teacher * log_p_student).sum(dim=1).mean()


# ---------------------------------------------------------------- without negatives (09-11)

def _check_pair(p: Tensor, z: Tensor, names: str) -> None:
    if p.dim() != 2 or p.shape != z.shape:
        raise ValueError(f"expected {names} of the same shape (N, D), got {tuple(p.shape)} and {tuple(z.shape)}")


def neg_cosine(p: Tensor, z: Tensor) -> Tensor:
    """SimSiam's D(p, z) (Chen & He 2020, eq. 1): the negative cosine similarity, batch mean,

        D(p, z) = -1/N sum_n  p_n . z_n / (||p_n|| ||z_n||),    in [-1, 1].

    p (N, D) the predictor's output, z (N, D) the other view's projection. No stop-gradient in
    here: the caller writes `z.detach()` where the method wants it (SimSiam's eq. 3), so a
    notebook can also leave it out and watch the collapse. -1 when every p_n points along z_n.

    Built in: notebooks/09_byol.ipynb (shared with 11_simsiam)
    """
    _check_pair(p, z, "p and z")
    return -F.cosine_similarity(p, z, dim=1, eps=1e-8).mean()


def byol_loss(q: Tensor, z: Tensor) -> Tensor:
    """BYOL's normalised mean squared error (Grill et al. 2020, eq. 2), batch mean,

        L = 1/N sum_n || q_n/||q_n|| - z_n/||z_n|| ||^2  =  2 - 2 cos(q_n, z_n)  =  2 + 2 neg_cosine,

    in [0, 4]. q (N, D) the online prediction, z (N, D) the target projection of the other view;
    the caller passes the target's output computed under no_grad (sg(z') in the paper). The
    symmetric loss is this applied twice with the views swapped.

    Built in: notebooks/09_byol.ipynb
    """
    _check_pair(q, z, "q and z")
    return (F.normalize(q, dim=1, eps=1e-8) - F.normalize(z, dim=1, eps=1e-8)).pow(2).sum(dim=1).mean()


@torch.no_grad()
def sinkhorn(scores: Tensor, eps: float = 0.05, n_iters: int = 3) -> Tensor:
    """SwAV's codes (Caron et al. 2020, eq. 3 and Algorithm 1): a soft assignment of N samples
    to K prototypes that uses every prototype equally (the equipartition constraint).

        Q* = Diag(u) exp(C^T Z / eps) Diag(v),   rows of Q (K, N) sum to 1/K, columns to 1/N,

    found by `n_iters` rounds of Sinkhorn-Knopp (alternately rescale rows, then columns), then
    scaled by N so that each sample's code is a distribution over the K prototypes. Computed in
    log space: exp(score / eps) with eps = 0.05 overflows float32 for scores above ~4.4. The
    authors' code (facebookresearch/swav, `distributed_sinkhorn`) exponentiates directly, safe for
    cosine scores (at most 1 / eps = 20 in the exponent); only its versions of Oct 2020 - Apr 2021
    could subtract the max first (`--improve_numerical_stability`, off by default). No gradient:
    the codes are targets.

    scores (N, K) = z_n . c_k, features against prototypes. Returns codes (N, K): rows sum to 1
    exactly; columns sum to about N/K (exactly in the limit of many iterations).

    Built in: notebooks/10_swav.ipynb
    """
    if scores.dim() != 2:
        raise ValueError(f"expected scores of shape (N, K), got {tuple(scores.shape)}")
    if not eps > 0 or n_iters < 1:
        raise ValueError(f"need eps > 0 and n_iters >= 1, got eps={eps}, n_iters={n_iters}")
    checks.positive_int(n_iters, "sinkhorn: n_iters")
    n, k = scores.shape
    log_q = scores.float().T / eps                                           # (K, N)
    log_q = log_q - torch.logsumexp(log_q.flatten(), dim=0)                  # Q sums to 1
    for _ in range(n_iters):
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(k)   # rows -> 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(n)   # columns -> 1/N
    return (log_q + math.log(n)).exp().T                                     # (N, K), rows sum to 1


def swav_loss(scores: Tensor, codes: Tensor, temperature: float = 0.1) -> Tensor:
    """SwAV's swapped-prediction term (Caron et al. 2020, eq. 2): the code q of one view is
    predicted from the prototype scores of another view,

        l(z_t, q_s) = -sum_k q_s^(k) log p_t^(k),   p_t^(k) = softmax_k(z_t . c_k / temperature),

    batch mean. scores (N, K) of the predicting view (z_t . c_k, with gradient), codes (N, K)
    of the other view (from `sinkhorn`; detached here, they are targets). The swap itself (view 1's scores against
    view 2's codes and back) is written in the notebook's loop.

    Built in: notebooks/10_swav.ipynb
    """
    _check_pair(scores, codes, "scores and codes")
    _check_temperature(temperature, "temperature", "swav_loss")
    return -(codes.detach() * torch.log_softmax(scores / temperature, dim=1)).sum(dim=1).mean()


# ---------------------------------------------------------------- self-distillation (13)

def dino_loss(student_out: list[Tensor], teacher_out: list[Tensor], center: Tensor,
              student_temp: float = 0.1, teacher_temp: float = 0.04) -> Tensor:
    """DINO's loss (Caron et al. 2021, eq. 3 and Algorithm 1): cross-entropy from the centred,
    sharpened teacher to the student, over every pair of *different* crops,

        P_t(x) = softmax((g_t(x) - c) / teacher_temp),   P_s(x) = softmax(g_s(x) / student_temp),
        L = mean over pairs (x in global crops, x' in all crops, x' != x) of  -sum_k P_t(x)_k log P_s(x')_k,

    each pair's term a batch mean. student_out: V tensors (N, K), the global crops first (the
    same order as teacher_out); teacher_out: G tensors (N, K), the global crops; center (1, K) or
    (K,). The teacher side is detached here (its outputs are targets; the teacher is an EMA,
    never trained by this loss).

    Built in: notebooks/13_dino.ipynb
    """
    if isinstance(student_out, Tensor) or isinstance(teacher_out, Tensor):
        raise TypeError("dino_loss takes lists of per-crop outputs, one (N, K) tensor per crop; split a "
                        "concatenated output first: dino_loss(list(student_out.chunk(V)), "
                        "list(teacher_out.chunk(2)), center) for V student crops and 2 global crops")
    if not student_out or not teacher_out or len(teacher_out) > len(student_out):
        raise ValueError(f"need >= 1 teacher crop and at least as many student crops, got "
                         f"{len(teacher_out)} teacher and {len(student_out)} student crops")
    _check_temperature(student_temp, "student_temp", "dino_loss")
    _check_temperature(teacher_temp, "teacher_temp", "dino_loss")
    shape = teacher_out[0].shape
    if any(t.shape != shape for t in [*teacher_out, *student_out]) or len(shape) != 2:
        raise ValueError(f"every crop's output must have the same shape (N, K), got "
                         f"{[tuple(t.shape) for t in [*teacher_out, *student_out]]}")
    targets = [torch.softmax((t.detach() - center.detach()) / teacher_temp, dim=1) for t in teacher_out]
    log_probs = [torch.log_softmax(s / student_temp, dim=1) for s in student_out]
    terms = [-(p_t * log_probs[j]).sum(dim=1).mean()
             for i, p_t in enumerate(targets) for j in range(len(log_probs)) if j != i]
    if not terms:
        raise ValueError("no pair of different crops: give the student at least 2 crops")
    return torch.stack(terms).mean()


class DINOCenter(torch.nn.Module):
    """DINO's centre c (Caron et al. 2021, eq. 4), the one stateful piece of a loss in the series:
    an exponential moving average of the teacher's outputs over batches,

        c <- m c + (1 - m) mean_n g_t(x_n),     m = 0.9 in the paper,

    subtracted from the teacher's outputs in `dino_loss` so that no one dimension can dominate
    (centring prevents that collapse; sharpening by a low teacher temperature prevents the
    other one, the uniform output). `update_(teacher_out)` is called in the notebook's loop after
    the loss, with all global crops' outputs concatenated, (M, K). A buffer: saved in checkpoints.

    Built in: notebooks/13_dino.ipynb
    """

    def __init__(self, dim: int, momentum: float = 0.9):
        super().__init__()
        if not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum must be in [0, 1], got {momentum}")
        checks.positive_int(dim, "DINOCenter dim (the head's output size K)")
        self.momentum = momentum
        self.register_buffer("center", torch.zeros(1, dim))

    @torch.no_grad()
    def update_(self, teacher_out: Tensor) -> None:
        if teacher_out.dim() != 2 or teacher_out.shape[1] != self.center.shape[1]:
            raise ValueError(f"expected teacher outputs (M, {self.center.shape[1]}), got {tuple(teacher_out.shape)}")
        self.center.mul_(self.momentum).add_(teacher_out.mean(dim=0, keepdim=True), alpha=1 - self.momentum)
