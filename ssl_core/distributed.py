"""The multi-GPU parts of the papers, on PyTorch's own engine (torch.distributed + torchrun).

Several mechanisms of the series exist because the papers trained on many GPUs (MoCo 8, SwAV and
DINO 16-64, SimCLR up to 128 TPU cores); the notebooks simulate them on one device. These helpers
are the real thing, for a script launched with `torchrun --nproc_per_node=G script.py`:

    device = distributed.setup()                  # reads torchrun's env; gloo on CPU, nccl on CUDA
    z_all = distributed.gather_with_grad(z)       # SimCLR: negatives from every process, with gradient
    k_all = distributed.concat_all_gather(k)      # MoCo: every process's keys for the queue
    loss = distributed.moco_v3_loss(q1, k2, tau) + distributed.moco_v3_loss(q2, k1, tau)  # MoCo v3
    model = distributed.sync_batchnorm(model)     # MoCo v3 / DINO / SimCLR: BN over the global batch (CUDA)
    x, idx_unshuffle = distributed.batch_shuffle(x)       # MoCo v1's Shuffle BN
    k = distributed.batch_unshuffle(key_encoder(x), idx_unshuffle)
    codes = distributed.sinkhorn(scores)          # SwAV: equipartition over the global batch
    distributed.update_center_(center, teacher_out)       # DINO: the centre of the global batch
    distributed.cleanup()

Every helper is a no-op, or gives the single-process result, when torch.distributed is not
initialised (or the world has one process), so a notebook's code runs unchanged with one process
or many. "Global batch" below means the concatenation of every process's batch in rank order.

Built in: notebooks/14_scaling_out.ipynb
"""
from __future__ import annotations

import gc
import math
import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn

Tensor = torch.Tensor


# ---------------------------------------------------------------- who am I

def is_distributed() -> bool:
    """True inside an initialised process group with more than one process."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1 (0 in a single process)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 in a single process)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """True on rank 0, the process that prints, evaluates and writes checkpoints."""
    return rank() == 0


def barrier() -> None:
    """Wait until every process gets here (nothing in a single process)."""
    if is_distributed():
        dist.barrier()


def setup(device_type: str | None = None) -> torch.device:
    """Join the process group that `torchrun` describes in the environment (RANK, WORLD_SIZE,
    LOCAL_RANK, MASTER_ADDR, MASTER_PORT) and return this process's device: cuda:LOCAL_RANK with
    the nccl backend, or the CPU with gloo. device_type "cuda" / "cpu" chooses; None: cuda where
    available. Without torchrun's variables (a plain `python script.py`) nothing is initialised
    and the device is returned as it is. Infrastructure (the DDP script of notebook 14)."""
    cuda = torch.cuda.is_available() if device_type is None else torch.device(device_type).type == "cuda"
    if "WORLD_SIZE" not in os.environ or dist.is_initialized():
        return torch.device("cuda" if cuda else "cpu")
    local_rank = int(os.environ.get("LOCAL_RANK", 0))
    if cuda:
        torch.cuda.set_device(local_rank)
    dist.init_process_group(backend="nccl" if cuda else "gloo")
    return torch.device(f"cuda:{local_rank}" if cuda else "cpu")


def cleanup() -> None:
    """Leave the process group (nothing if none was joined), after every process got here.

    Delete your DistributedDataParallel wrappers first (`del ddp`). A DDP wrapper sits in
    reference cycles, so `del` alone does not free it; cleanup collects it before destroying the
    group. A wrapper freed only at interpreter exit, after the group is gone, made 4 of 12 runs of
    notebook 14's check script (2 gloo processes, torch 2.14) abort with "terminate called without
    an active exception"; with del + collect + barrier first, 0 of 15."""
    if dist.is_available() and dist.is_initialized():
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()


# ---------------------------------------------------------------- gathers

@torch.no_grad()
def concat_all_gather(x: Tensor) -> Tensor:
    """Every process's x, concatenated in rank order, WITHOUT gradient: (N, ...) -> (W*N, ...).

    MoCo's keys for the queue (He et al. 2019, Sec. 3.3 / Algorithm 1; the authors' code
    `moco/builder.py`, `concat_all_gather`): keys are targets, no gradient flows into them.
    Every process must pass the same shape. A single process: x itself (detached).
    """
    if not is_distributed():
        return x.detach()
    parts = [torch.empty_like(x) for _ in range(world_size())]
    dist.all_gather(parts, x.contiguous())
    return torch.cat(parts)                                                   # (W*N, ...)


class _GatherWithGrad(torch.autograd.Function):
    """all_gather forward; backward: sum the gradients of all processes for every part
    (all_reduce), then keep this process's own part."""

    @staticmethod
    def forward(ctx, x):
        parts = [torch.empty_like(x) for _ in range(dist.get_world_size())]
        dist.all_gather(parts, x.contiguous())
        return torch.cat(parts)                                               # (W*N, ...)

    @staticmethod
    def backward(ctx, grad):                                                  # grad (W*N, ...)
        grad = grad.contiguous()
        dist.all_reduce(grad, op=dist.ReduceOp.SUM)                           # every rank's loss counts
        return grad.chunk(dist.get_world_size())[dist.get_rank()]             # (N, ...): my slice


def gather_with_grad(x: Tensor) -> Tensor:
    """Every process's x, concatenated in rank order, WITH gradient: (N, ...) -> (W*N, ...).

    SimCLR's negatives from every core (Chen et al. 2020, Sec. 2.2 "Training with large batch
    size"; the authors' TF code `tpu_cross_replica_concat` in objective.py). The backward pass
    all-reduces (sums) the gradient that each process's loss sends to every part and returns this
    process's slice, so a gradient that reaches x from the *other* processes' losses is not lost.
    With DDP (which averages parameter gradients over the W processes) each process may compute
    the loss of the global batch: the applied gradient then equals the single-process gradient of
    that loss on the global batch. Every process must pass the same shape. A single process: x.
    """
    return _GatherWithGrad.apply(x) if is_distributed() else x


# ---------------------------------------------------------------- MoCo v3's loss, global BN

def moco_v3_loss(q: Tensor, k: Tensor, tau: float = 0.2) -> Tensor:
    """MoCo v3's contrastive loss ctr(q, k) on many processes (Chen, Xie, He 2021, Algorithm 1;
    the authors' `contrastive_loss` in moco-v3's `moco/builder.py`): this process's N queries
    against the keys of EVERY process, the positive of my query i being key N*rank + i.

        ctr(q, k) = 2 tau * mean_i -log exp(q_i . k_{N r + i} / tau) / sum_j exp(q_i . k_j / tau)

    q (N, D) queries (with gradient), k (N, D) this process's keys from the momentum encoder; both
    are L2-normalised here; the W*N keys are gathered by `concat_all_gather` (no gradient: keys
    are targets). Each process's loss is the mean over its own N queries, so DDP's average of the
    W gradients is the gradient of ctr on the global batch: no gradient has to cross processes,
    and no all-reduce in backward is needed (compare `gather_with_grad`). Symmetrised as in the
    paper: moco_v3_loss(q1, k2) + moco_v3_loss(q2, k1). A single process: 2 tau * info_nce(q, k)
    on its batch, notebook 12's ctr. tau: 0.2 for ViT, 1.0 for ResNet-50 (the authors' default).

    Built in: notebooks/14_scaling_out.ipynb
    """
    if q.dim() != 2 or q.shape != k.shape:
        raise ValueError(f"expected queries and keys of the same shape (N, D), got {tuple(q.shape)} and {tuple(k.shape)}")
    q, k = F.normalize(q, dim=1), F.normalize(k, dim=1)                       # (N, D) unit rows
    k_all = concat_all_gather(k)                                              # (W*N, D), no gradient
    logits = q @ k_all.T / tau                                                # (N, W*N)
    labels = torch.arange(len(q), device=q.device) + len(q) * rank()          # (N,): my keys' rows
    return 2 * tau * F.cross_entropy(logits, labels)


def sync_batchnorm(model: nn.Module) -> nn.Module:
    """BatchNorm over the GLOBAL batch: every BatchNorm of `model` becomes an `nn.SyncBatchNorm`
    (PyTorch's `convert_sync_batchnorm`, weights and running statistics kept), which all-reduces
    the batch mean and variance in the forward pass. MoCo v3 converts the whole model, heads
    included (the authors' main_moco.py, "apply SyncBN"); DINO converts student and teacher when
    they hold any BN (a ResNet backbone, or heads with use_bn_in_head; main_dino.py); SimCLR's
    "global BN" (Sec. 2.2) is the same thing on TPUs.

    A single process (no group, or a world of one): `model` itself, unchanged: its BN already sees
    the whole batch. PyTorch's SyncBatchNorm trains on GPUs only ("expected input tensor to be on
    GPU", torch 2.14): on CPU processes (the gloo backend) this raises instead of failing at the
    first training step. Convert before wrapping in DistributedDataParallel.

    Built in: notebooks/14_scaling_out.ipynb
    """
    if not is_distributed():
        return model
    if dist.get_backend() == "gloo":
        raise RuntimeError("sync_batchnorm: nn.SyncBatchNorm trains on GPUs only (the nccl backend), and this "
                           "process group runs gloo (CPU processes). On CPUs leave BatchNorm per process (drop "
                           "--sync-bn / the sync_batchnorm call); for the global BN, run one process per GPU.")
    return nn.SyncBatchNorm.convert_sync_batchnorm(model)


# ---------------------------------------------------------------- Shuffle BN (MoCo v1)

@torch.no_grad()
def batch_shuffle(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
    """MoCo v1's Shuffle BN, step 1 (He et al. 2019, Sec. 3.3; the authors' `_batch_shuffle_ddp`).

    Gather the global batch, let rank 0 draw a permutation of it and broadcast it, and give each
    process its slice of the shuffled global batch: the keys a process normalises with its batch
    norm are then mostly other processes' images. x (N, ...) -> (x_shuffled (N, ...),
    idx_unshuffle (W*N,)), the inverse permutation for `batch_unshuffle`. A single process: a
    shuffle of x itself (with notebook 05's SplitBatchNorm this is the one-device simulation).
    Rank 0's `generator` (CPU) draws the permutation; other ranks' generators are not used.
    """
    x_all = concat_all_gather(x)                                              # (W*N, ...)
    idx_shuffle = torch.randperm(len(x_all), generator=generator).to(x.device)  # (W*N,)
    if is_distributed():
        dist.broadcast(idx_shuffle, src=0)                                    # rank 0's permutation
    idx_unshuffle = torch.argsort(idx_shuffle)                                # (W*N,)
    idx_this = idx_shuffle.view(world_size(), -1)[rank()]                     # (N,) my slice
    return x_all[idx_this], idx_unshuffle


@torch.no_grad()
def batch_unshuffle(x: Tensor, idx_unshuffle: Tensor) -> Tensor:
    """MoCo v1's Shuffle BN, step 2 (the authors' `_batch_unshuffle_ddp`): gather the outputs of
    the shuffled batch and give each process back the rows of its own original images, in order.
    x (N, ...) computed on `batch_shuffle`'s output -> (N, ...) aligned with the unshuffled x."""
    x_all = concat_all_gather(x)                                              # (W*N, ...)
    idx_this = idx_unshuffle.view(world_size(), -1)[rank()]                   # (N,)
    return x_all[idx_this]


# ---------------------------------------------------------------- global sums (SwAV, DINO)

def _all_reduce(x: Tensor, op=None) -> Tensor:
    if is_distributed():
        dist.all_reduce(x, op=dist.ReduceOp.SUM if op is None else op)
    return x


def _logsumexp_all(x: Tensor, dim: int | None) -> Tensor:
    """logsumexp over `dim` of the global tensor whose rows (dim 1 of (K, N)) are spread over the
    processes: a max, then a sum of exp, each all-reduced. dim=None: over everything."""
    local = x.flatten() if dim is None else x
    d = 0 if dim is None else dim
    m = _all_reduce(local.amax(dim=d, keepdim=True), dist.ReduceOp.MAX)      # global max
    s = _all_reduce((local - m).exp().sum(dim=d, keepdim=True))              # global sum
    out = m + s.log()
    return out.squeeze() if dim is None else out


@torch.no_grad()
def sinkhorn(scores: Tensor, eps: float = 0.05, n_iters: int = 3) -> Tensor:
    """SwAV's codes with the equipartition over the GLOBAL batch (Caron et al. 2020, Sec. 3.1 and
    A.1; the authors' `distributed_sinkhorn` in main_swav.py): `losses.sinkhorn` line by line,
    except that the two sums over samples (the total, and each prototype's row sum) are all-reduced,
    and the number of samples is the global batch size B = W*N. Each process gets the codes of its
    own N samples; they equal `losses.sinkhorn` on the concatenated scores. Log space, as there.

    scores (N, K) -> codes (N, K), rows sum to 1. A single process: losses.sinkhorn.
    """
    if scores.dim() != 2:
        raise ValueError(f"expected scores of shape (N, K), got {tuple(scores.shape)}")
    if not eps > 0 or n_iters < 1:
        raise ValueError(f"need eps > 0 and n_iters >= 1, got eps={eps}, n_iters={n_iters}")
    n_local, k = scores.shape
    n = int(_all_reduce(torch.tensor([n_local], device=scores.device)).item())  # B, the global batch
    log_q = scores.float().T / eps                                           # (K, N)
    log_q = log_q - _logsumexp_all(log_q, dim=None)                          # Q sums to 1 (globally)
    for _ in range(n_iters):
        log_q = log_q - _logsumexp_all(log_q, dim=1) - math.log(k)           # rows -> 1/K (all-reduced)
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(n)  # columns -> 1/B (local)
    return (log_q + math.log(n)).exp().T                                     # (N, K), rows sum to 1


@torch.no_grad()
def global_mean(x: Tensor) -> Tensor:
    """The mean over dim 0 of the global batch, (N, ...) -> (1, ...): all-reduce of the sums and of
    the counts, so processes may hold different batch sizes. A single process: x.mean(0, keepdim)."""
    total = _all_reduce(x.float().sum(dim=0, keepdim=True))                  # (1, ...)
    count = _all_reduce(torch.tensor([float(len(x))], device=x.device))      # (1,)
    return (total / count).to(x.dtype)


@torch.no_grad()
def update_center_(center, teacher_out: Tensor) -> None:
    """DINO's centre update over all processes (Caron et al. 2021, eq. 4; the authors'
    `DINOLoss.update_center`, which all-reduces the batch sum): c <- m c + (1 - m) mean_global g_t(x).

    center: a `losses.DINOCenter` (its buffer `center` (1, K) and `momentum` m are used);
    teacher_out (M, K), this process's teacher outputs. Equals `center.update_` on the
    concatenation of every process's teacher_out. A single process: center.update_(teacher_out).
    """
    if teacher_out.dim() != 2 or teacher_out.shape[1] != center.center.shape[1]:
        raise ValueError(f"expected teacher outputs (M, {center.center.shape[1]}), got {tuple(teacher_out.shape)}")
    m = center.momentum
    center.center.mul_(m).add_(global_mean(teacher_out), alpha=1 - m)
