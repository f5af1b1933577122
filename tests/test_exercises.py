"""The course kit: every exercise's solution (taken from its teacher notebook) passes its check,
every known-wrong version below fails it with a sentence that says what differs, blank exercises
are "not done", the student copies hold no solution, and the grader reports crashes and hangs as
failed exercises. A check that passes a wrong answer is a bug: strengthen the check.
"""
import json
import math
import re
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from ssl_core import (augment, catalogue, color, course, distributed, evaluate, exercises, losses, memory, models,
                      momentum, schedules)

ROOT = Path(__file__).resolve().parent.parent
WRONG: dict[str, list] = {}


def wrong(ex_id: str, expect: str):
    """Register a known-wrong version of exercise ex_id; its failure message must contain `expect`."""
    def register(fn):
        WRONG.setdefault(ex_id, []).append((fn, expect))
        return fn
    return register


_SOLUTIONS: dict[str, object] = {}


def solution(ex_id: str):
    """The teacher notebook's solution of ex_id: the notebook's exercise cells, executed in order."""
    if not _SOLUTIONS:
        for path in course.teacher_notebooks():
            ns = dict(torch=torch, F=F, nn=nn, math=math, augment=augment, color=color, distributed=distributed,
                      evaluate=evaluate, losses=losses, memory=memory, models=models, momentum=momentum,
                      schedules=schedules)
            for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
                src = "".join(cell["source"])
                header = course.HEADER.match(src)
                if cell["cell_type"] == "code" and header:
                    exec(compile(src, f"{path.name}:{header.group(1)}", "exec"), ns)
                    _SOLUTIONS[header.group(1)] = ns[catalogue.EXERCISES[header.group(1)].name]
    return _SOLUTIONS[ex_id]


# ---------------------------------------------------------------- the known-wrong versions

# 01 InstDisc
@wrong("01.1", "`bank` after your call")                     # no re-normalisation
def _(bank, idx, v, m):
    with torch.no_grad():
        bank[idx] = m * bank[idx] + (1 - m) * v


@wrong("01.1", "`bank` after your call")                     # the momentum on the wrong side
def _(bank, idx, v, m):
    with torch.no_grad():
        bank[idx] = F.normalize((1 - m) * bank[idx] + m * v, dim=1)


@wrong("01.1", "autograd history")                           # no torch.no_grad(): the bank joins the graph
def _(bank, idx, v, m):
    bank[idx] = F.normalize(m * bank[idx] + (1 - m) * v, dim=1)


@wrong("01.2", "the reference")                              # no temperature
def _(v, bank, idx, tau):
    return F.cross_entropy(v @ bank.T, idx)


@wrong("01.2", "the reference")                              # summed over the batch
def _(v, bank, idx, tau):
    return F.cross_entropy(v @ bank.T / tau, idx, reduction="sum")


@wrong("01.2", "the reference")                              # softmax over the batch instead of the bank
def _(v, bank, idx, tau):
    return -torch.log_softmax(v @ bank.T / tau, dim=0)[torch.arange(len(v)), idx].mean()


@wrong("01.3", "the reference")                              # noise terms averaged, not summed
def _(pos_dots, neg_dots, log_Z, tau, n_data):
    b = math.log(neg_dots.shape[1] / n_data)
    return (F.softplus(b - (pos_dots / tau - log_Z)) + F.softplus(neg_dots / tau - log_Z - b).mean(1)).mean()


@wrong("01.3", "the reference")                              # b = log(1 / n): the m noise samples forgotten
def _(pos_dots, neg_dots, log_Z, tau, n_data):
    b = math.log(1 / n_data)
    return (F.softplus(b - (pos_dots / tau - log_Z)) + F.softplus(neg_dots / tau - log_Z - b).sum(1)).mean()


@wrong("01.3", "the reference")                              # log Z not subtracted
def _(pos_dots, neg_dots, log_Z, tau, n_data):
    b = math.log(neg_dots.shape[1] / n_data)
    return (F.softplus(b - pos_dots / tau) + F.softplus(neg_dots / tau - b).sum(1)).mean()


def _knn_votes(train_features, train_labels, test_features, num_classes, k, weights_of, largest=True,
               normalise=True):
    if normalise:
        train_features, test_features = F.normalize(train_features, dim=1), F.normalize(test_features, dim=1)
    top_sim, top_idx = (test_features @ train_features.T).topk(k, dim=1, largest=largest)
    votes = torch.zeros(len(test_features), num_classes).scatter_add_(1, train_labels[top_idx], weights_of(top_sim))
    return votes.argmax(1)


@wrong("01.4", "differs")                                    # a plain majority vote
def _(train_features, train_labels, test_features, num_classes, k, temperature):
    return _knn_votes(train_features, train_labels, test_features, num_classes, k, torch.ones_like)


@wrong("01.4", "differs")                                    # dot products of unnormalised features
def _(train_features, train_labels, test_features, num_classes, k, temperature):
    return _knn_votes(train_features, train_labels, test_features, num_classes, k,
                      lambda s: (s / temperature - (s / temperature).amax(1, keepdim=True)).exp(), normalise=False)


@wrong("01.4", "differs")                                    # the k LEAST similar neighbours
def _(train_features, train_labels, test_features, num_classes, k, temperature):
    return _knn_votes(train_features, train_labels, test_features, num_classes, k,
                      lambda s: (s / temperature).exp(), largest=False)


# 02 CPC
@wrong("02.1", "shape")                                      # channels left in front
def _(x, patch, stride):
    return x.unfold(2, patch, stride).unfold(3, patch, stride)


@wrong("02.1", "differs")                                    # rows and columns swapped
def _(x, patch, stride):
    return x.unfold(2, patch, stride).unfold(3, patch, stride).permute(0, 3, 2, 1, 4, 5)


@wrong("02.1", "shape")                                      # stride taken as the patch size: a wrong grid
def _(x, patch, stride):
    return x.unfold(2, patch, patch).unfold(3, patch, patch).permute(0, 2, 3, 1, 4, 5)


@wrong("02.2", "the reference")                              # keys against keys
def _(queries, keys, temperature):
    return F.cross_entropy(keys @ keys.T / temperature, torch.arange(len(keys)))


@wrong("02.2", "the reference")                              # temperature multiplied
def _(queries, keys, temperature):
    return F.cross_entropy(queries @ keys.T * temperature, torch.arange(len(keys)))


@wrong("02.2", "the reference")                              # the positive is always candidate 0
def _(queries, keys, temperature):
    return F.cross_entropy(queries @ keys.T / temperature, torch.zeros(len(keys), dtype=torch.long))


@wrong("02.3", "differs")                                    # off by one: predicts row i + k - 1
def _(z, c, W_k, k):
    rows = z.shape[2]
    return (W_k(c[:, :, :rows - k].permute(0, 2, 3, 1).flatten(0, 2)),
            z[:, :, k - 1:rows - 1].permute(0, 2, 3, 1).flatten(0, 2))


@wrong("02.3", "differs")                                    # the future from the contexts, not the patches
def _(z, c, W_k, k):
    rows = z.shape[2]
    return (W_k(c[:, :, :rows - k].permute(0, 2, 3, 1).flatten(0, 2)), c[:, :, k:].permute(0, 2, 3, 1).flatten(0, 2))


@wrong("02.3", "the reference")                              # flattened without the permute: D mixed in
def _(z, c, W_k, k):
    rows, d = z.shape[2], z.shape[1]
    return W_k(c[:, :, :rows - k].reshape(-1, d)), z[:, :, k:].reshape(-1, d)


# 03 InvaSpread
@wrong("03.1", "differs")                                    # the positive not excluded
def _(n):
    return ~torch.eye(2 * n, dtype=torch.bool)


@wrong("03.1", "differs")                                    # the positive taken as a + 1
def _(n):
    mask = ~torch.eye(2 * n, dtype=torch.bool)
    mask[torch.arange(2 * n), (torch.arange(2 * n) + 1) % (2 * n)] = False
    return mask


def _invaspread_parts(z1, z2, tau):
    logits, positive = losses._two_view_logits(z1, z2, tau)
    log_p = logits.log_softmax(1)
    rows = torch.arange(len(logits))
    negative = torch.isfinite(logits)
    negative[rows, positive] = False
    return log_p, log_p[rows, positive], torch.log1p(-log_p.exp().clamp(max=1 - 1e-6)), negative


@wrong("03.2", "the reference")                              # only the first term: NT-Xent
def _(z1, z2, tau):
    return -_invaspread_parts(z1, z2, tau)[1].mean()


@wrong("03.2", "the reference")                              # the spreading term with the wrong sign
def _(z1, z2, tau):
    _, pos, log_not, negative = _invaspread_parts(z1, z2, tau)
    return -(pos - (log_not * negative).sum(1)).mean()


@wrong("03.2", "the reference")                              # the positive counted among the negatives
def _(z1, z2, tau):
    log_p, pos, log_not, _ = _invaspread_parts(z1, z2, tau)
    return -(pos + (log_not * torch.isfinite(log_p)).sum(1)).mean()


# 04 CMC
@wrong("04.1", "the reference")                              # no sRGB gamma
def _(x):
    m = torch.tensor(color.SRGB_TO_XYZ, dtype=x.dtype)
    t = torch.einsum("ij,njhw->nihw", m, x) / torch.tensor(color.D65_WHITE, dtype=x.dtype).view(1, 3, 1, 1)
    f = torch.where(t > (6 / 29) ** 3, t.clamp(min=1e-12) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


@wrong("04.1", "the reference")                              # the cube root everywhere (no linear branch)
def _(x):
    lin = torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)
    m = torch.tensor(color.SRGB_TO_XYZ, dtype=x.dtype)
    t = torch.einsum("ij,njhw->nihw", m, lin) / torch.tensor(color.D65_WHITE, dtype=x.dtype).view(1, 3, 1, 1)
    f = t.clamp(min=0) ** (1 / 3)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


@wrong("04.1", "the reference")                              # no white point: X, Z not divided by Xn, Zn
def _(x):
    lin = torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)
    t = torch.einsum("ij,njhw->nihw", torch.tensor(color.SRGB_TO_XYZ, dtype=x.dtype), lin)
    f = torch.where(t > (6 / 29) ** 3, t.clamp(min=1e-12) ** (1 / 3), t / (3 * (6 / 29) ** 2) + 4 / 29)
    return torch.stack([116 * f[:, 1] - 16, 500 * (f[:, 0] - f[:, 1]), 200 * (f[:, 1] - f[:, 2])], 1)


@wrong("04.3", "the reference")                              # one direction only
def _(z_L, z_ab, tau):
    return F.cross_entropy(z_L @ z_ab.T / tau, torch.arange(len(z_L)))


@wrong("04.3", "the reference")                              # rows twice instead of rows + columns
def _(z_L, z_ab, tau):
    return 2 * F.cross_entropy(z_L @ z_ab.T / tau, torch.arange(len(z_L)))


@wrong("04.3", "x the reference")                            # the two directions averaged
def _(z_L, z_ab, tau):
    s = z_L @ z_ab.T / tau
    return (F.cross_entropy(s, torch.arange(len(s))) + F.cross_entropy(s.T, torch.arange(len(s)))) / 2


def _lab_views(x, width=2.0, keep_L=False):
    lab = color.rgb_to_lab(x)
    lo, hi = torch.tensor(color.LAB_RANGE, dtype=x.dtype).unbind(1)
    scaled = (lab - ((lo + hi) / 2).view(1, 3, 1, 1)) / ((hi - lo) / width).view(1, 3, 1, 1)
    return (lab if keep_L else scaled)[:, :1], scaled[:, 1:]


@wrong("04.2", "item 0")                                     # L left in [0, 100]
def _(x):
    return _lab_views(x, keep_L=True)


@wrong("04.2", "0.5x the reference")                         # divided by the full range, not the half-width
def _(x):
    return _lab_views(x, width=1.0)


@wrong("04.2", "differs")                                    # a, b as the two views, L forgotten
def _(x):
    ab = _lab_views(x)[1]
    return ab[:, :1], ab[:, 1:]


# 05 MoCo v1
@wrong("05.1", "queue")                                      # no wrap-around: the slice runs off the end
def _(queue, k):
    with torch.no_grad():
        p = int(queue.ptr)
        queue.keys[p:p + len(k)] = k[:len(queue.keys) - p]
        queue.ptr.fill_((p + len(k)) % len(queue.keys))


@wrong("05.1", "queue")                                      # the pointer never moves
def _(queue, k):
    with torch.no_grad():
        slots = (queue.ptr + torch.arange(len(k))) % len(queue.keys)
        queue.keys[slots] = k


@wrong("05.1", "autograd history")                           # keys stored with their graph
def _(queue, k):
    slots = (queue.ptr + torch.arange(len(k))) % len(queue.keys)
    queue.keys[slots] = k
    queue.ptr.copy_((queue.ptr + len(k)) % len(queue.keys))


@wrong("05.2", "the reference")                              # the positive last, target still 0
def _(q, k, queue_keys, tau):
    logits = torch.cat([q @ queue_keys.T, (q * k).sum(1, keepdim=True)], 1) / tau
    return F.cross_entropy(logits, torch.zeros(len(q), dtype=torch.long))


@wrong("05.2", "the reference")                              # no temperature
def _(q, k, queue_keys, tau):
    return losses.info_nce(q, k, queue_keys, temperature=1.0)


@wrong("05.2", "the reference")                              # in-batch keys instead of the queue
def _(q, k, queue_keys, tau):
    return losses.info_nce(q, k, temperature=tau)


@wrong("05.3", "differs")                                    # never unshuffled
def _(f_k, x, perm):
    with torch.no_grad():
        return F.normalize(f_k(x[perm]), dim=1)


@wrong("05.3", "differs")                                    # "unshuffled" with perm instead of its inverse
def _(f_k, x, perm):
    with torch.no_grad():
        return F.normalize(f_k(x[perm]), dim=1)[perm]


@wrong("05.3", "differs")                                    # not normalised
def _(f_k, x, perm):
    with torch.no_grad():
        return f_k(x[perm])[perm.argsort()]


# 06 SimCLR
@wrong("06.1", "the reference")                              # not normalised
def _(z1, z2, tau):
    return losses._two_view_logits(z1, z2, tau)[0]


@wrong("06.1", "at index (0, 0)")                            # the diagonal not masked
def _(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    return z @ z.T / tau


@wrong("06.1", "the reference")                              # the temperature applied twice
def _(z1, z2, tau):
    return losses._two_view_logits(F.normalize(z1, dim=1), F.normalize(z2, dim=1), tau * tau)[0]


@wrong("06.2", "2x the reference")                           # summed over the two views, not averaged
def _(z1, z2, tau):
    return 2 * losses.nt_xent(z1, z2, tau)


@wrong("06.2", "the reference")                              # the temperature applied twice
def _(z1, z2, tau):
    return losses.nt_xent(z1, z2, tau * tau)


@wrong("06.2", "the reference")                              # a view's self-similarity left in the denominator
def _(z1, z2, tau):
    z = F.normalize(torch.cat([z1, z2]), dim=1)
    return F.cross_entropy(z @ z.T / tau, torch.arange(len(z)).roll(len(z1)))


@wrong("06.2", "gradient")                                   # a stop-gradient on the second view
def _(z1, z2, tau):
    return losses.nt_xent(z1, z2.detach(), tau)


# 07 MoCo v2
@wrong("07.1", "the reference")                              # zero padding instead of reflect
def _(x, sigma, kernel_size):
    r, c = kernel_size // 2, x.shape[1]
    u = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-(u.view(-1, 1) ** 2 + u.view(1, -1) ** 2) / (2 * sigma ** 2))
    return F.conv2d(x, (g / g.sum()).expand(c, 1, -1, -1), padding=r, groups=c)


@wrong("07.1", "x the reference")                            # kernel not normalised
def _(x, sigma, kernel_size):
    r, c = kernel_size // 2, x.shape[1]
    u = torch.arange(-r, r + 1, dtype=x.dtype)
    g = torch.exp(-(u.view(-1, 1) ** 2 + u.view(1, -1) ** 2) / (2 * sigma ** 2))
    return F.conv2d(F.pad(x, (r, r, r, r), mode="reflect"), g.expand(c, 1, -1, -1), groups=c)


@wrong("07.1", "the reference")                              # sigma used as the variance
def _(x, sigma, kernel_size):
    return augment.gaussian_blur(x, sigma=(sigma ** 0.5, sigma ** 0.5), p=1.0, kernel_size=kernel_size)


@wrong("07.2", "the reference")                              # cos(pi t / (T - 1)): ends exactly at final
def _(base, final, total_steps, warmup_steps=0):
    t = torch.arange(total_steps - warmup_steps, dtype=torch.float64)
    cosine = final + (base - final) * (1 + torch.cos(math.pi * t / max(len(t) - 1, 1))) / 2
    return torch.cat([torch.linspace(0, base, warmup_steps + 1, dtype=torch.float64)[1:], cosine]).float()


@wrong("07.2", "shape")                                      # the warm-up forgotten
def _(base, final, total_steps, warmup_steps=0):
    return schedules.cosine_schedule(base, final, total_steps)[: total_steps - warmup_steps]


@wrong("07.2", "the reference")                              # warm-up starting at 0 (the first step wasted)
def _(base, final, total_steps, warmup_steps=0):
    warm = torch.linspace(0, base, warmup_steps + 1)[:-1] if warmup_steps else torch.empty(0)
    return torch.cat([warm, schedules.cosine_schedule(base, final, total_steps - warmup_steps)
                      if total_steps > warmup_steps else torch.empty(0)]).float()


# 08 SimCLR v2
@wrong("08.1", "gradient")                                   # the teacher not detached
def _(student_logits, teacher_logits, tau):
    return -(torch.softmax(teacher_logits / tau, 1) * torch.log_softmax(student_logits / tau, 1)).sum(1).mean()


@wrong("08.1", "the reference")                              # the temperature on the teacher only
def _(student_logits, teacher_logits, tau):
    return -(torch.softmax(teacher_logits.detach() / tau, 1) * torch.log_softmax(student_logits, 1)).sum(1).mean()


@wrong("08.1", "the reference")                              # KL instead of the cross-entropy
def _(student_logits, teacher_logits, tau):
    p = torch.softmax(teacher_logits.detach() / tau, 1)
    return (p * (p.clamp_min(1e-12).log() - torch.log_softmax(student_logits / tau, 1))).sum(1).mean()


# 09 BYOL
@wrong("09.1", "target")                                     # the momentum on the wrong side
def _(target, online, m):
    with torch.no_grad():
        for xi, theta in zip(target.parameters(), online.parameters()):
            xi.mul_(1 - m).add_(theta, alpha=m)
        for b, b_online in zip(target.buffers(), online.buffers()):
            b.copy_(b_online)


@wrong("09.1", "online")                                     # the online network moved instead of the target
def _(target, online, m):
    with torch.no_grad():
        for xi, theta in zip(target.parameters(), online.parameters()):
            theta.mul_(m).add_(xi, alpha=1 - m)


@wrong("09.1", "running_mean")                               # buffers (BN statistics) not copied
def _(target, online, m):
    with torch.no_grad():
        for xi, theta in zip(target.parameters(), online.parameters()):
            xi.mul_(m).add_(theta, alpha=1 - m)


@wrong("09.2", "the reference")                              # no normalisation: a plain MSE
def _(q, z):
    return (q - z).pow(2).sum(1).mean()


@wrong("09.2", "the reference")                              # 2 - 2 cos summed over the batch
def _(q, z):
    return (2 - 2 * F.cosine_similarity(q, z, dim=1)).sum()


@wrong("09.2", "gradient")                                   # the target detached inside the loss
def _(q, z):
    return losses.byol_loss(q, z.detach())


@wrong("09.3", "the reference")                              # not normalised
def _(z):
    return z.float().std(dim=0).mean().item()


@wrong("09.3", "the reference")                              # std over the wrong dimension
def _(z):
    return F.normalize(z.float(), dim=1).std(dim=1).mean().item()


@wrong("09.3", "the reference")                              # the biased std
def _(z):
    return F.normalize(z.float(), dim=1).std(dim=0, unbiased=False).mean().item()


# 10 SwAV
@wrong("10.1", "NaN or inf")                                 # exp without subtracting the max: overflows
def _(scores, eps=0.05, n_iters=3):
    q = torch.exp(scores.T / eps)
    q = q / q.sum()
    k, n = q.shape
    for _ in range(n_iters):
        q = q / q.sum(1, keepdim=True) / k
        q = q / q.sum(0, keepdim=True) / n
    return (q * n).T


@wrong("10.1", "the reference")                              # columns first, then rows: the last step is rows
def _(scores, eps=0.05, n_iters=3):
    log_q = scores.float().T / eps
    k, n = log_q.shape
    log_q = log_q - torch.logsumexp(log_q.flatten(), 0)
    for _ in range(n_iters):
        log_q = log_q - torch.logsumexp(log_q, 0, keepdim=True) - math.log(n)
        log_q = log_q - torch.logsumexp(log_q, 1, keepdim=True) - math.log(k)
    return (log_q + math.log(n)).exp().T


@wrong("10.1", "x the reference")                            # not scaled by N
def _(scores, eps=0.05, n_iters=3):
    return losses.sinkhorn(scores, eps, n_iters) / len(scores)


@wrong("10.1", "transpose")                                  # (K, N) returned
def _(scores, eps=0.05, n_iters=3):
    return losses.sinkhorn(scores, eps, n_iters).T


@wrong("10.2", "gradient")                                   # codes not detached
def _(scores, codes, tau):
    return -(codes * torch.log_softmax(scores / tau, 1)).sum(1).mean()


@wrong("10.2", "the reference")                              # no temperature
def _(scores, codes, tau):
    return -(codes.detach() * torch.log_softmax(scores, 1)).sum(1).mean()


@wrong("10.2", "opposite sign")                              # the sign
def _(scores, codes, tau):
    return (codes.detach() * torch.log_softmax(scores / tau, 1)).sum(1).mean()


@wrong("10.3", "the reference")                              # each view also predicts its own code
def _(scores, codes, tau):
    return sum(sum(losses.swav_loss(s, q, tau) for s in scores) / len(scores) for q in codes) / len(codes)


@wrong("10.3", "the reference")                              # divided by V instead of V - 1
def _(scores, codes, tau):
    return sum(sum(losses.swav_loss(s, q, tau) for v, s in enumerate(scores) if v != i) / len(scores)
               for i, q in enumerate(codes)) / len(codes)


@wrong("10.3", "the reference")                              # only the other global view predicts (no multi-crop)
def _(scores, codes, tau):
    return (losses.swav_loss(scores[1], codes[0], tau) + losses.swav_loss(scores[0], codes[1], tau)) / 2


# 11 SimSiam
@wrong("11.1", "opposite sign")                              # the cosine, not its negative
def _(p, z):
    return F.cosine_similarity(p, z, dim=1).mean()


@wrong("11.1", "the reference")                              # not normalised: a dot product
def _(p, z):
    return -(p * z).sum(1).mean()


@wrong("11.1", "the reference")                              # summed over the batch
def _(p, z):
    return -F.cosine_similarity(p, z, dim=1).sum()


@wrong("11.3", "the reference")                              # not centred: the second moment, not the covariance
def _(z):
    z = z.double()
    p = torch.linalg.eigvalsh(z.T @ z / (len(z) - 1)).clamp(min=0)
    p = p / p.sum()
    return torch.exp(-(p * p.clamp(min=1e-300).log()).sum()).item()


@wrong("11.3", "the reference")                              # the entropy in bits
def _(z):
    p = torch.linalg.eigvalsh(torch.cov(z.double().T)).clamp(min=0)
    p = p / p.sum()
    return torch.exp(-(p * p.clamp(min=1e-300).log2()).sum()).item()


@wrong("11.3", "the reference")                              # rows normalised first (that is the std's meter)
def _(z):
    p = torch.linalg.eigvalsh(torch.cov(F.normalize(z.double(), dim=1).T)).clamp(min=0)
    p = p / p.sum()
    return torch.exp(-(p * p.clamp(min=1e-300).log()).sum()).item()


@wrong("11.2", "gradient")                                   # no stop-gradient
def _(p1, p2, z1, z2):
    return losses.neg_cosine(p1, z2) / 2 + losses.neg_cosine(p2, z1) / 2


@wrong("11.2", "the reference")                              # each prediction against its own view
def _(p1, p2, z1, z2):
    return losses.neg_cosine(p1, z1.detach()) / 2 + losses.neg_cosine(p2, z2.detach()) / 2


@wrong("11.2", "2x the reference")                           # the halves not weighted 1/2
def _(p1, p2, z1, z2):
    return losses.neg_cosine(p1, z2.detach()) + losses.neg_cosine(p2, z1.detach())


# 12 MoCo v3
@wrong("12.1", "the reference")                              # patches flattened channels-last (p, p, 3)
def _(img, weight, bias, p):
    patches = img.unfold(2, p, p).unfold(3, p, p).permute(0, 2, 3, 4, 5, 1).flatten(3).flatten(1, 2)
    return patches @ weight.flatten(1).T + bias


@wrong("12.1", "differs")                                    # tokens column by column
def _(img, weight, bias, p):
    patches = img.unfold(2, p, p).unfold(3, p, p).permute(0, 3, 2, 1, 4, 5).flatten(3).flatten(1, 2)
    return patches @ weight.flatten(1).T + bias


@wrong("12.1", "the reference")                              # no bias
def _(img, weight, bias, p):
    return F.conv2d(img, weight, stride=p).flatten(2).transpose(1, 2)


@wrong("12.2", "the reference")                              # scaled by sqrt(dim), not sqrt(d) of one head
def _(x, qkv, proj, heads):
    n, t, dim = x.shape
    q, k, v = qkv(x).reshape(n, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim), -1)
    return proj((a @ v).transpose(1, 2).reshape(n, t, dim)), a


@wrong("12.2", "the reference")                              # softmax over the queries
def _(x, qkv, proj, heads):
    n, t, dim = x.shape
    q, k, v = qkv(x).reshape(n, t, 3, heads, dim // heads).permute(2, 0, 3, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads), -2)
    return proj((a @ v).transpose(1, 2).reshape(n, t, dim)), a


@wrong("12.2", "differs")                                    # heads split before q, k, v
def _(x, qkv, proj, heads):
    n, t, dim = x.shape
    q, k, v = qkv(x).reshape(n, t, heads, 3, dim // heads).permute(3, 0, 2, 1, 4)
    a = torch.softmax(q @ k.transpose(-2, -1) / math.sqrt(dim // heads), -1)
    return proj((a @ v).transpose(1, 2).reshape(n, t, dim)), a


@wrong("12.3", "the reference")                              # without the 2 tau factor
def _(q, k, tau):
    return losses.info_nce(F.normalize(q, dim=1), F.normalize(k, dim=1), temperature=tau)


@wrong("12.3", "the reference")                              # not normalised
def _(q, k, tau):
    return 2 * tau * losses.info_nce(q, k, temperature=tau)


@wrong("12.3", "the reference")                              # keys against queries (the transpose)
def _(q, k, tau):
    return 2 * tau * losses.info_nce(F.normalize(k, dim=1), F.normalize(q, dim=1), temperature=tau)


def _ctr(q, k, tau):
    return 2 * tau * losses.info_nce(F.normalize(q, dim=1), F.normalize(k, dim=1), temperature=tau)


@wrong("12.4", "the reference")                              # each query against its own view's keys
def _(q1, q2, k1, k2, tau):
    return _ctr(q1, k1, tau) + _ctr(q2, k2, tau)


@wrong("12.4", "x the reference")                            # averaged
def _(q1, q2, k1, k2, tau):
    return (_ctr(q1, k2, tau) + _ctr(q2, k1, tau)) / 2


# 13 DINO
@wrong("13.1", "gradient")                                   # the teacher not detached
def _(student_out, teacher_out, center, student_temp, teacher_temp):
    targets = [torch.softmax((t - center) / teacher_temp, 1) for t in teacher_out]
    return torch.stack([-(p * torch.log_softmax(s / student_temp, 1)).sum(1).mean()
                        for i, p in enumerate(targets) for j, s in enumerate(student_out) if j != i]).mean()


@wrong("13.1", "the reference")                              # no centring
def _(student_out, teacher_out, center, student_temp, teacher_temp):
    return losses.dino_loss(student_out, teacher_out, torch.zeros_like(center), student_temp, teacher_temp)


@wrong("13.1", "the reference")                              # the same-crop pairs included
def _(student_out, teacher_out, center, student_temp, teacher_temp):
    targets = [torch.softmax((t.detach() - center) / teacher_temp, 1) for t in teacher_out]
    return torch.stack([-(p * torch.log_softmax(s / student_temp, 1)).sum(1).mean()
                        for p in targets for s in student_out]).mean()


@wrong("13.1", "the reference")                              # the student's temperature for the teacher too
def _(student_out, teacher_out, center, student_temp, teacher_temp):
    return losses.dino_loss(student_out, teacher_out, center, student_temp, student_temp)


@wrong("13.2", "`center` after your call")                   # the weights swapped
def _(center, teacher_out, m):
    with torch.no_grad():
        center.mul_(1 - m).add_(teacher_out.mean(0, keepdim=True), alpha=m)


@wrong("13.2", "`center` after your call")                   # a new tensor: the caller's centre never changes
def _(center, teacher_out, m):
    with torch.no_grad():
        center = m * center + (1 - m) * teacher_out.mean(0, keepdim=True)


@wrong("13.2", "autograd history")                           # no torch.no_grad()
def _(center, teacher_out, m):
    center.mul_(m).add_(teacher_out.mean(0, keepdim=True), alpha=1 - m)


@wrong("13.3", "the reference")                              # linspace over warmup_steps + 1 points: never reaches t1
def _(t0, t1, warmup_steps, total_steps):
    return torch.cat([torch.linspace(t0, t1, warmup_steps + 1)[:-1], torch.full((total_steps - warmup_steps,), t1)])


@wrong("13.3", "the reference")                              # stays at t0 after the warm-up
def _(t0, t1, warmup_steps, total_steps):
    return torch.cat([torch.linspace(t0, t1, warmup_steps), torch.full((total_steps - warmup_steps,), t0)])


# 14 Scaling out
@wrong("14.1", "differs")                                    # a plain all_gather: my own gradient only
def _(grads, rank):
    return grads[rank].chunk(len(grads))[rank]


@wrong("14.1", "x the reference")                            # averaged instead of summed
def _(grads, rank):
    return (sum(grads) / len(grads)).chunk(len(grads))[rank]


@wrong("14.1", "differs")                                    # the wrong slice
def _(grads, rank):
    return sum(grads).chunk(len(grads))[len(grads) - 1 - rank]


@wrong("14.2", "NaN or inf")                                 # log(sum(exp)): overflows
def _(parts):
    return sum(p.exp().sum(1, keepdim=True) for p in parts).log()


@wrong("14.2", "the reference")                              # the mean of the parts' logsumexps
def _(parts):
    return sum(torch.logsumexp(p, 1, keepdim=True) for p in parts) / len(parts)


@wrong("14.2", "the reference")                              # only the maximum
def _(parts):
    return torch.stack([p.amax(1, keepdim=True) for p in parts]).amax(0)


@wrong("14.3", "the reference")                              # the mean of the per-process means
def _(center, parts, m):
    return m * center + (1 - m) * sum(p.mean(0, keepdim=True) for p in parts) / len(parts)


@wrong("14.3", "the reference")                              # the weights swapped
def _(center, parts, m):
    return (1 - m) * center + m * torch.cat(parts).mean(0, keepdim=True)


# ---------------------------------------------------------------- the tests

IDS = sorted(catalogue.EXERCISES, key=lambda i: tuple(map(int, i.split("."))))
WRONG_CASES = [pytest.param(ex_id, k, id=f"{ex_id}-wrong{k + 1}") for ex_id in IDS for k in range(len(WRONG.get(ex_id, [])))]


@pytest.mark.parametrize("path", course.teacher_notebooks(), ids=lambda p: p.stem)
def test_the_notebook_solutions_pass_and_the_blank_copies_are_not_done(path, tmp_path):
    results = course.check_cells(path)                       # each solution cell, as the grader's --cells mode
    assert [r.id for r in results] == course.expected_ids(path)
    assert all(r.status == exercises.PASSED for r in results), [r.message for r in results]
    [blank] = course.write_student_copies([path], tmp_path)
    assert all(r.status == exercises.NOT_DONE for r in course.check_cells(blank))


@pytest.mark.parametrize("ex_id, k", WRONG_CASES)
def test_every_known_wrong_version_is_caught(ex_id, k):
    fn, expect = WRONG[ex_id][k]
    result = exercises.run_check(ex_id, fn)
    assert result.status == exercises.FAILED, f"a wrong version passed: {result.message}"
    assert expect in result.message, result.message


@pytest.mark.parametrize("ex_id", IDS)
def test_every_exercise_has_two_known_wrong_versions(ex_id):
    assert len(WRONG.get(ex_id, [])) >= 2


@pytest.mark.parametrize("ex_id", IDS)
def test_the_fallback_accepts_every_call_the_solution_accepts(ex_id):
    """A blank exercise's notebook goes on with the reference: it must take the calls the notebook
    makes, including those that leave out the solution's optional arguments."""
    import inspect
    params = inspect.signature(solution(ex_id)).parameters.values()
    required = [p for p in params if p.default is inspect.Parameter.empty]
    inspect.signature(catalogue.EXERCISES[ex_id].reference).bind(*range(len(required)))
    inspect.signature(catalogue.EXERCISES[ex_id].reference).bind(*range(len(params)))


def test_the_catalogue_and_the_notebooks_agree():
    in_notebooks = {}
    for path in course.teacher_notebooks():
        nb = json.loads(path.read_text(encoding="utf-8"))
        sources = ["".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "code"]
        for src in sources:
            if (header := course.HEADER.match(src)):
                assert "### BEGIN SOLUTION" in src and "### END SOLUTION" in src, header.group(1)
                in_notebooks[header.group(1)] = path.stem
        checks = course.expected_ids(path)
        assert checks == [i for i in in_notebooks if in_notebooks[i] == path.stem], path.name  # one check each, in order
    assert in_notebooks == {i: ex.notebook for i, ex in catalogue.EXERCISES.items()}


def test_not_done_falls_back_to_the_reference_and_is_reported(tmp_path, monkeypatch, capsys):
    report = tmp_path / "report.jsonl"
    monkeypatch.setenv(exercises.REPORT_ENV, str(report))

    def blank(z1, z2, tau):
        raise NotImplementedError("Exercise 06.2: ...")

    assert exercises.check("06.2", blank) is catalogue.EXERCISES["06.2"].reference
    assert exercises.check("06.2", solution("06.2")) is solution("06.2")
    assert exercises.check("06.2", WRONG["06.2"][0][0]) is catalogue.EXERCISES["06.2"].reference
    rows = [json.loads(line) for line in report.read_text().splitlines()]
    assert [r["status"] for r in rows] == ["not done", "passed", "failed"]
    assert "not done" in capsys.readouterr().out


def test_calling_ssl_core_s_own_version_is_not_writing_it():
    def nt_xent(z1, z2, tau):
        return losses.nt_xent(z1, z2, tau)

    def enqueue_(queue, k):
        queue.enqueue_(k)

    for ex_id, fn, name in [("06.2", nt_xent, "nt_xent"), ("05.1", enqueue_, "enqueue_")]:
        result = exercises.run_check(ex_id, fn)
        assert result.status == exercises.FAILED and f"calls ssl_core's own `{name}`" in result.message


def test_an_error_in_the_student_function_is_a_failure_with_its_message():
    result = exercises.run_check("11.1", lambda p, z: p @ z)       # (N, D) @ (N, D): a shape error
    assert result.status == exercises.FAILED and "raised RuntimeError" in result.message


def test_a_check_leaves_the_global_random_stream_as_it_found_it():
    # The checks seed torch's global generator for their cases; a notebook's draws after a check
    # must still follow its own seed (SSL_SEED), whether or not, and how often, it checked.
    torch.manual_seed(123)
    expected = torch.rand(5)
    torch.manual_seed(123)
    for ex_id in ("05.1", "05.3", "09.1"):
        exercises.run_check(ex_id, exercises.get(ex_id).reference)   # catalogue cases call torch.manual_seed
    assert torch.equal(torch.rand(5), expected)


def test_every_solution_region_lies_inside_a_function_body():
    """A student copy then differs from its notebook only inside the exercise's function, which the
    check replaces by the reference: the rest of the notebook runs as the teacher's (CI runs one copy to
    the end, make course COURSE_RUN=... all of them)."""
    import ast
    for path in course.teacher_notebooks():
        for cell in json.loads(path.read_text(encoding="utf-8"))["cells"]:
            src = "".join(cell["source"])
            if cell["cell_type"] != "code" or "### BEGIN SOLUTION" not in src:
                continue
            defs = [n for n in ast.walk(ast.parse(src)) if isinstance(n, (ast.FunctionDef, ast.ClassDef))]
            lines = src.split("\n")
            for line, text in enumerate(lines, start=1):
                if "### BEGIN SOLUTION" not in text:
                    continue
                end = next(k for k in range(line, len(lines) + 1) if "### END SOLUTION" in lines[k - 1])
                indent = lambda k: len(lines[k - 1]) - len(lines[k - 1].lstrip())
                assert any(d.lineno < line <= d.end_lineno and min(indent(line), indent(end)) > d.col_offset
                           for d in defs), f"{path.name}: the solution region at line {line} is not inside a def"


def test_student_copies_hold_no_solution_and_raise_not_implemented():
    for path in course.teacher_notebooks():
        nb = course.blank(json.loads(path.read_text(encoding="utf-8")))
        text = json.dumps(nb)
        assert "BEGIN SOLUTION" not in text and "END SOLUTION" not in text, path.name
        assert all(not c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), path.name
        for cell in nb["cells"]:
            src = "".join(cell["source"])
            if (header := course.HEADER.match(src)):
                ex = catalogue.EXERCISES[header.group(1)]
                ns = dict(torch=torch, F=F, nn=nn, math=math)
                exec(src, ns)
                assert f'NotImplementedError("Exercise {ex.id}: ' in src
                assert exercises.run_check(ex.id, ns[ex.name]).status == exercises.NOT_DONE


def _notebook(tmp_path, *cells):
    nb = {"cells": [{"cell_type": "code", "execution_count": None, "id": f"c{i}", "metadata": {}, "outputs": [],
                     "source": src} for i, src in enumerate(cells)],
          "metadata": {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"}},
          "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "nb.ipynb"
    path.write_text(json.dumps(nb))
    return path


def test_the_grader_reports_passed_failed_and_a_crash(tmp_path):
    path = _notebook(tmp_path, "from ssl_core import exercises, losses",
                     'exercises.check("11.1", losses.neg_cosine)',
                     'exercises.check("09.2", lambda q, z: (q - z).pow(2).sum(1).mean())',
                     'raise ValueError("the student broke this cell")',
                     'exercises.check("06.2", losses.nt_xent)')
    rows, stopped, _ = course.execute(path, timeout=120)
    table = {ex_id: (status, message) for ex_id, status, message in course.grade_rows(path, rows, stopped)}
    assert table["11.1"][0] == "passed" and table["09.2"][0] == "failed"
    assert table["06.2"][0] == "failed" and "the student broke this cell" in table["06.2"][1]
    assert table["nb"][0] == "failed" and "did not run to the end" in table["nb"][1]


def test_a_crash_after_the_last_check_fails_the_run(tmp_path):
    path = _notebook(tmp_path, "from ssl_core import exercises, losses",
                     'exercises.check("11.1", losses.neg_cosine)', 'raise TypeError("a later cell broke")')
    rows, stopped, _ = course.execute(path, timeout=120)
    table = course.grade_rows(path, rows, stopped)
    assert table[0][:2] == ("11.1", "passed")
    assert table[1][1] == "failed" and "TypeError: a later cell broke" in table[1][2]


def test_the_grader_reports_a_hang_as_failed(tmp_path):
    path = _notebook(tmp_path, "from ssl_core import exercises, losses", "import time\ntime.sleep(600)",
                     'exercises.check("11.1", losses.neg_cosine)')
    rows, stopped, seconds = course.execute(path, timeout=8)
    assert seconds < 60
    [(ex_id, status, message), run] = course.grade_rows(path, rows, stopped)
    assert status == "failed" and "time limit" in message and run[1] == "failed"


def test_the_exercise_table_goes_between_the_markers(tmp_path):
    path = tmp_path / "COURSE.md"
    path.write_text(f"# Course\n\n{course.START}\nPLACEHOLDER-ROW\n{course.END}\n\nafter\n")
    course.update_course(path)
    text = path.read_text()
    assert "PLACEHOLDER-ROW" not in text and text.endswith("\n\nafter\n")
    assert all(f"| {ex_id} " in text for ex_id in IDS)
    counts = course.known_wrong_counts()
    assert counts == {ex_id: len(fns) for ex_id, fns in WRONG.items()}
    assert re.search(r"\| 06\.2 .*\| 4 \|", text)
