"""The equalities of notebook 14, on real processes: every helper of ssl_core.distributed, run on
this process's shard, against the single-process computation on the global batch (which every
process can compute too, since all draw the same global batch from one seed).

    python -m torch.distributed.run --nproc_per_node=2 scripts/check_distributed.py out.json

Written by notebooks/14_scaling_out.ipynb (do not edit here: edit the notebook's cell).
"""
import copy
import json
import sys

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

from ssl_core import distributed, losses, models

distributed.setup("cpu")
rank, W = distributed.rank(), distributed.world_size()
g = torch.Generator().manual_seed(0)                       # the same global batch on every rank
torch.manual_seed(0)                                       # the same weights on every rank


def rel(a, b):
    """max |a - b| / max |b|: the largest difference, relative to the reference's scale."""
    return ((a - b).abs().max() / b.abs().max()).item()


diffs = {}
# SimCLR: the loss of the gathered views, and the gradient DDP applies (averaged over processes)
net = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 4))
reference, plain, initial = (copy.deepcopy(net) for _ in range(3))
x1, x2 = torch.randn(2, 4 * W, 8, generator=g)                                 # (W*N, 8) each
mine = torch.cat([x1.chunk(W)[rank], x2.chunk(W)[rank]])                      # (2N, 8)
ddp = nn.parallel.DistributedDataParallel(net)        # keep it: its hooks all-reduce in backward
z1, z2 = ddp(mine).chunk(2)                                                   # (N, 4) each
loss = losses.nt_xent(distributed.gather_with_grad(z1), distributed.gather_with_grad(z2), 0.5)
loss.backward()
loss_ref = losses.nt_xent(reference(x1), reference(x2), 0.5)                   # one process, global batch
loss_ref.backward()
diffs["SimCLR loss (gather_with_grad)"] = rel(loss.detach(), loss_ref.detach())
diffs["SimCLR gradient (gather_with_grad + DDP)"] = max(rel(p.grad, q.grad) for p, q in zip(net.parameters(), reference.parameters()))


def plain_gather(z):                                       # all_gather with no gradient for the others' parts
    parts = list(distributed.concat_all_gather(z).chunk(W))
    parts[rank] = z
    return torch.cat(parts)


ddp_plain = nn.parallel.DistributedDataParallel(plain)
y1, y2 = ddp_plain(mine).chunk(2)
losses.nt_xent(plain_gather(y1), plain_gather(y2), 0.5).backward()
diffs["(contrast) SimCLR gradient, plain all_gather"] = max(rel(p.grad, q.grad) for p, q in zip(plain.parameters(), reference.parameters()))


# SimCLR per process (its objective.py): each process takes the loss of its OWN anchors against all views
def nt_xent_of_anchors(z1, z2, t, rows):          # NT-Xent of the anchors `rows` of [z1; z2] (2N, D)
    z = F.normalize(torch.cat([z1, z2]), dim=1)                                # (2N, D)
    logits = (z @ z.T / t).fill_diagonal_(float("-inf"))                       # (2N, 2N), no self-pair
    return F.cross_entropy(logits[rows], torch.arange(len(z)).roll(len(z1))[rows])


class SliceTimesW(torch.autograd.Function):       # (contrast) backward: my slice of MY gradient, times W
    forward = staticmethod(lambda ctx, z: distributed.concat_all_gather(z))
    backward = staticmethod(lambda ctx, grad: grad.chunk(W)[rank] * W)


def per_rank_gradient(gather):
    """The DDP-averaged gradient when every process takes the loss of its own 2N/W anchors."""
    model = copy.deepcopy(initial)
    wrapper = nn.parallel.DistributedDataParallel(model)
    z1, z2 = wrapper(mine).chunk(2)                                           # (N/W, 4) each
    n = len(z1)
    rows = torch.cat([torch.arange(rank * n, (rank + 1) * n), torch.arange(rank * n, (rank + 1) * n) + W * n])
    nt_xent_of_anchors(gather(z1), gather(z2), 0.5, rows).backward()          # DDP averages
    del wrapper
    return max(rel(p.grad, q.grad) for p, q in zip(model.parameters(), reference.parameters()))


diffs["SimCLR gradient, per-process anchors (gather_with_grad)"] = per_rank_gradient(distributed.gather_with_grad)
diffs["(contrast) per-process anchors, slice x W backward"] = per_rank_gradient(SliceTimesW.apply)

# MoCo v3: my queries against every process's keys (concat_all_gather), labels offset by rank
f_q, ref_q = copy.deepcopy(initial), copy.deepcopy(initial)
f_k = copy.deepcopy(initial).requires_grad_(False)                           # the momentum encoder: keys only
ddp_moco = nn.parallel.DistributedDataParallel(f_q)
q1, q2 = ddp_moco(mine).chunk(2)                                              # (N, 4) each
k1, k2 = f_k(mine).chunk(2)
loss = distributed.moco_v3_loss(q1, k2, 0.2) + distributed.moco_v3_loss(q2, k1, 0.2)
loss.backward()                                                               # DDP averages


def ctr(q, k):                                                                # notebook 12: 2 tau info_nce
    return 0.4 * losses.info_nce(F.normalize(q, dim=1), F.normalize(k, dim=1), temperature=0.2)


loss_ref = ctr(ref_q(x1), f_k(x2)) + ctr(ref_q(x2), f_k(x1))                 # one process, global batch
loss_ref.backward()
dist.all_reduce(mean_loss := loss.detach().clone())                         # the mean over processes
diffs["MoCo v3 loss, mean over processes (moco_v3_loss)"] = rel(mean_loss / W, loss_ref.detach())
diffs["MoCo v3 gradient (moco_v3_loss + DDP)"] = max(rel(p.grad, q.grad) for p, q in zip(f_q.parameters(), ref_q.parameters()))

# MoCo's keys: concat_all_gather
keys = torch.randn(4 * W, 8, generator=g)
diffs["MoCo keys (concat_all_gather)"] = rel(distributed.concat_all_gather(keys.chunk(W)[rank]), keys)

# MoCo v1's Shuffle BN: per-process BN on the shuffled shards vs SplitBatchNorm(groups=W) in one process
encoder = nn.Sequential(nn.Conv2d(3, 8, 3, bias=False), nn.BatchNorm2d(8), nn.ReLU())
simulation = models.split_batchnorm_(copy.deepcopy(encoder), groups=W)
x = torch.randn(8 * W, 3, 8, 8, generator=g)                                  # (W*N, 3, 8, 8)
x_shuffled, idx_unshuffle = distributed.batch_shuffle(x.chunk(W)[rank])
k = distributed.batch_unshuffle(encoder(x_shuffled), idx_unshuffle)           # my images' keys, in order
idx_shuffle = torch.argsort(idx_unshuffle)                                    # rank 0's permutation
k_ref = simulation(x[idx_shuffle])[idx_unshuffle].chunk(W)[rank]
diffs["MoCo Shuffle BN keys (batch_shuffle / unshuffle)"] = rel(k, k_ref)
unshuffled = models.split_batchnorm_(copy.deepcopy(encoder), groups=W)(x).chunk(W)[rank]
diffs["(contrast) Shuffle BN keys vs per-GPU BN without the shuffle"] = rel(unshuffled, k_ref)

# SwAV: Sinkhorn codes with the equipartition over the global batch
scores = F.normalize(torch.randn(16 * W, 8, generator=g), dim=1) @ F.normalize(torch.randn(10, 8, generator=g), dim=1).T
codes_ref = losses.sinkhorn(scores).chunk(W)[rank]                            # (N, K)
diffs["SwAV codes (sinkhorn, all-reduced sums)"] = rel(distributed.sinkhorn(scores.chunk(W)[rank]), codes_ref)
diffs["(contrast) SwAV codes, Sinkhorn per process"] = rel(losses.sinkhorn(scores.chunk(W)[rank]), codes_ref)

# DINO: the centre, with different batch sizes per process (12 rows on rank 0, 4 on the others)
sizes = [12] + [4] * (W - 1)
teacher = torch.randn(sum(sizes), 6, generator=g) + torch.arange(sum(sizes)).unsqueeze(1) / 4  # rows differ in mean
mine = teacher[sum(sizes[:rank]):sum(sizes[:rank + 1])]
center, reference_center = losses.DINOCenter(6), losses.DINOCenter(6)
distributed.update_center_(center, mine)
reference_center.update_(teacher)                                             # one process, global batch
diffs["DINO centre (update_center_, uneven batches)"] = rel(center.center, reference_center.center)
mean_of_means = mine.mean(0, keepdim=True)
dist.all_reduce(mean_of_means)
diffs["(contrast) DINO centre from the mean of per-process means"] = rel(0.1 * mean_of_means / W, reference_center.center)

for name in diffs:                                         # the worst case over the processes
    worst = torch.tensor(diffs[name])
    dist.all_reduce(worst, op=dist.ReduceOp.MAX)
    diffs[name] = worst.item()
if distributed.is_main():
    for name, d in diffs.items():
        print(f"{name:<62} {d:.1e}")
    json.dump(diffs, open(sys.argv[1], "w"), indent=1)
assert all(d < 1e-5 for name, d in diffs.items() if not name.startswith("(contrast)")), diffs
del ddp, ddp_plain, ddp_moco                                         # freed before the process group (see cleanup)
distributed.cleanup()
