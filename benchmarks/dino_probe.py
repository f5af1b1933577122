"""Short DINO training runs for notebook 13's recipe search, each scored by kNN on held-out
training images (never on the test split).

Notebook 13's first main run collapsed to the uniform output. This script is how the knobs were probed
afterwards, one short run per call, with everything else fixed. The defaults are that first recipe;
the setting 13's laptop profile now uses is `--K 256 --head-bn --n-local 0`:

    .venv/bin/python benchmarks/dino_probe.py --tag base --seconds 100                   # ViT, 13's first recipe
    .venv/bin/python benchmarks/dino_probe.py --tag now --K 256 --head-bn --n-local 0    # ViT, 13's recipe now
    .venv/bin/python benchmarks/dino_probe.py --tag cnn --backbone cnn --seconds 60      # same loop, SmallCNN
    .venv/bin/python benchmarks/dino_probe.py --tag sharp --teacher-temp 0.02 0.02       # fixed sharp teacher
    .venv/bin/python benchmarks/dino_probe.py --tag diag --diag-steps 20 --speed          # per-step monitors

Held-out protocol: the class-sorted training set is shuffled with a fixed seed; the first 5,000
images are queries, the next 10,000 the kNN bank (weighted kNN, k = 200, T = 0.1), and the
other 45,000 (the bank among them) are the training images: the queries are never trained on. kNN at 32 px
(the notebook's evaluation size) and at the global-crop size. The random-init network is scored
first. Each run appends one JSON line to --out (default: print only).

Options beyond 13's recipe, each a single knob: a SmallCNN backbone; BatchNorm in the head's
hidden layers (the authors' `use_bn_in_head`); the teacher's targets from Sinkhorn-Knopp instead
of centring + softmax (DINOv2's code, `sinkhorn_knopp_teacher`); SGD instead of AdamW; SwAV's
crops (10) instead of DINO's; a Linear-BN-ReLU-Linear head (SwAV's, 10); no gradient clipping;
the number of steps the last layer stays frozen; intermediate kNN every --eval-every steps.

Infrastructure (a research aid for the notebook's prose, never a timed test).
"""
from __future__ import annotations

import argparse
import json
import time

import torch
import torch.nn.functional as F
from torch import nn

from ssl_core import augment, data, evaluate, losses, models, momentum, schedules


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--tag", default="run", help="name of the run in the JSON line")
    p.add_argument("--backbone", choices=("vit", "cnn"), default="vit")
    p.add_argument("--patch", type=int, default=4); p.add_argument("--dim", type=int, default=128)
    p.add_argument("--depth", type=int, default=4); p.add_argument("--heads", type=int, default=4)
    p.add_argument("--width", type=int, default=32, help="SmallCNN width")
    p.add_argument("--stem", choices=("patch", "conv"), default="patch", help="ViT(stem=...): patch projection or conv stem")
    p.add_argument("--init", choices=("trunc_normal", "mocov3"), default="trunc_normal", help="ViT(init=...)")
    p.add_argument("--image-size", type=int, default=32,
                   help="the ViT's position grid (image_size); the kNN is also taken at this size")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--K", type=int, default=2048); p.add_argument("--hidden", type=int, default=512)
    p.add_argument("--bottleneck", type=int, default=128)
    p.add_argument("--head-bn", action="store_true", help="BatchNorm after the head's hidden Linear layers")
    p.add_argument("--free-norm", action="store_true",
                   help="a learnable scale per output row of the last layer (the code's norm_last_layer=False)")
    p.add_argument("--swav-head", action="store_true", help="Linear-BN-ReLU-Linear MLP (10's head) before the L2 norm")
    p.add_argument("--global-size", type=int, default=20); p.add_argument("--local-size", type=int, default=12)
    p.add_argument("--n-local", type=int, default=2); p.add_argument("--global-scale", type=float, default=0.4)
    p.add_argument("--blur", type=float, default=0.5); p.add_argument("--solarize", type=float, default=0.1)
    p.add_argument("--swav-crops", action="store_true", help="augment.swav_multicrop (10) instead of DINO's crops")
    p.add_argument("--batch", type=int, default=256)
    p.add_argument("--optimizer", choices=("adamw", "sgd"), default="adamw")
    p.add_argument("--lr", type=float, default=1e-3, help="per 256 images")
    p.add_argument("--warmup", type=float, default=0.1, help="lr warm-up, fraction of --steps-total")
    p.add_argument("--momentum", type=float, nargs=2, default=(0.99, 1.0), help="teacher momentum, start and end")
    p.add_argument("--teacher-temp", type=float, nargs=2, default=(0.04, 0.07),
                   help="start and end of the warm-up (over a tenth of --steps-total)")
    p.add_argument("--student-temp", type=float, default=0.1)
    p.add_argument("--weight-decay", type=float, nargs=2, default=(0.04, 0.4),
                   help="AdamW weight decay, start and end of a cosine over --steps-total")
    p.add_argument("--center-momentum", type=float, default=0.9)
    p.add_argument("--sinkhorn", action="store_true", help="teacher targets from Sinkhorn-Knopp (3 iterations)")
    p.add_argument("--no-clip", action="store_true", help="no per-parameter gradient clipping at 3.0")
    p.add_argument("--freeze", type=int, default=-1, help="steps with the last layer frozen (-1: a twentieth of --steps-total)")
    p.add_argument("--seconds", type=float, default=100, help="training time (kNN evaluations not counted)")
    p.add_argument("--steps-total", type=int, default=120, help="length of the schedules")
    p.add_argument("--eval-every", type=int, default=0)
    p.add_argument("--diag-steps", type=int, default=0, help="print per-step teacher monitors for the first steps")
    p.add_argument("--speed", action="store_true", help="6 steps, no kNN")
    p.add_argument("--out", default="", help="append the JSON line to this file")
    return p.parse_args()


def build(a):
    if a.backbone == "vit":
        backbone = models.ViT(image_size=a.image_size, patch_size=a.patch, dim=a.dim, depth=a.depth, heads=a.heads,
                              stem=a.stem, init=a.init)
    else:
        backbone = models.SmallCNN(width=a.width)
    head = models.DINOHead(backbone.feature_dim, a.K, hidden=a.hidden, bottleneck=a.bottleneck, use_bn=a.head_bn)
    if a.free_norm:
        head = FreeNormHead(head)
    if a.swav_head:
        head.mlp = models.mlp(backbone.feature_dim, a.hidden, a.bottleneck)
    return nn.Sequential(backbone, head)


class FreeNormHead(nn.Module):
    """DINOHead whose last layer is weight-normalised with a learnable scale g per output row,
    initialised to 1 (the authors' `norm_last_layer=False`, their setting for ViT-S)."""

    def __init__(self, head):
        super().__init__()
        self.mlp, self.last = head.mlp, head.last
        self.g = nn.Parameter(torch.ones(head.last.shape[0]))

    def forward(self, x):
        z = F.normalize(self.mlp(x), dim=1)
        return self.g * (z @ F.normalize(self.last, dim=1).T)


def multi_forward(net, crops):
    # one pass per crop size, largest first (the global crops come first in `crops`)
    out = []
    for size in sorted({c.shape[-1] for c in crops}, reverse=True):
        group = [c for c in crops if c.shape[-1] == size]
        out += net(torch.cat(group)).chunk(len(group))
    return out


def teacher_entropy(t_out, center, tt, sinkhorn):
    with torch.no_grad():
        if sinkhorn:
            lp = losses.sinkhorn(t_out, eps=tt).clamp_min(1e-12).log()
        else:
            lp = torch.log_softmax((t_out - center) / tt, dim=1)
        return -(lp.exp() * lp).sum(1).mean().item()


def main() -> None:
    a = parse_args()
    torch.manual_seed(a.seed)
    train = data.load_cifar10("train")
    perm = torch.randperm(len(train), generator=torch.Generator().manual_seed(1))  # the copy is sorted by class
    queries, bank, rest = perm[:5000], perm[5000:15000], perm[5000:]
    eval_sizes = sorted({32, a.global_size, a.image_size}, reverse=True)

    def heldout_knn(backbone, sizes=eval_sizes):
        out = {}
        for s in sizes:
            pre = augment.preprocess_at(s)
            out[s] = round(evaluate.knn_accuracy(backbone, train.images[bank], train.labels[bank],
                                                 train.images[queries], train.labels[queries], pre,
                                                 k=200, temperature=0.1), 4)
        return out

    student = build(a)
    teacher = momentum.copy_frozen(student)
    center = losses.DINOCenter(a.K, momentum=a.center_momentum)
    if a.swav_crops:
        crops_of = augment.swav_multicrop(a.global_size, n_local=a.n_local, local_size=a.local_size)
    else:
        jitter = (0.4, 0.4, 0.2, 0.1)
        global_view = augment.Augment(size=a.global_size, crop_scale=(a.global_scale, 1.0), jitter=jitter,
                                      blur_p=a.blur, solarize_p=a.solarize)
        local_view = augment.Augment(size=a.local_size, crop_scale=(0.05, a.global_scale), jitter=jitter, blur_p=a.blur)
        crops_of = augment.MultiCrop(global_view, 2, local_view if a.n_local else None, a.n_local)
    params = list(student.parameters())
    groups = [{"params": [p for p in params if p.ndim > 1]},
              {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0}]
    lr = a.lr * a.batch / 256
    opt = (torch.optim.SGD(groups, lr=lr, momentum=0.9, weight_decay=5e-4) if a.optimizer == "sgd"
           else torch.optim.AdamW(groups, lr=lr))
    loader = data.OnDeviceLoader(train.images[rest], train.labels[rest], batch_size=a.batch, shuffle=True,
                                 drop_last=True, seed=a.seed)
    T = a.steps_total
    lrs = schedules.cosine_schedule(lr, 1e-6, T, warmup_steps=int(T * a.warmup))
    ms = schedules.cosine_schedule(*a.momentum, T)
    tts = torch.cat([torch.linspace(*a.teacher_temp, T // 10), torch.full((T,), a.teacher_temp[1])])
    wds = schedules.cosine_schedule(*a.weight_decay, T)
    freeze = T // 20 if a.freeze < 0 else a.freeze
    res = {"tag": a.tag, **{k: v for k, v in vars(a).items() if k not in ("tag", "out")}}
    if not a.speed:
        res["knn_init"] = heldout_knn(student[0])
    def batches():                                         # the loader, epoch after epoch
        while True:
            yield from loader

    step, t0, el = 0, time.perf_counter(), 0.0
    for _, x, _ in batches():
        i = min(step, T - 1)
        for group in opt.param_groups:
            group["lr"] = lrs[i].item()
            if group["weight_decay"] > 0 and a.optimizer == "adamw":
                group["weight_decay"] = wds[i].item()
        crops = crops_of(x)
        s_out = multi_forward(student, crops)
        with torch.no_grad():
            t_out = multi_forward(teacher, crops[:2])
        tt = tts[i].item()
        if a.sinkhorn:
            targets = [losses.sinkhorn(t, eps=tt, n_iters=3) for t in t_out]
            log_p = [torch.log_softmax(s / a.student_temp, dim=1) for s in s_out]
            loss = torch.stack([-(q * log_p[j]).sum(1).mean() for k, q in enumerate(targets)
                                for j in range(len(log_p)) if j != k]).mean()
        else:
            loss = losses.dino_loss(s_out, t_out, center.center, a.student_temp, tt)
        opt.zero_grad()
        loss.backward()
        if not a.no_clip:
            for p in student.parameters():
                if p.grad is not None:
                    p.grad.mul_((3.0 / (p.grad.norm() + 1e-6)).clamp(max=1.0))
        if step < freeze:
            student[1].last.grad = None
            if a.free_norm:
                student[1].g.grad = None
        opt.step()
        with torch.no_grad():
            momentum.ema_update_(teacher, student, ms[i].item())
            center.update_(torch.cat(t_out))
        step += 1
        if step <= a.diag_steps:
            with torch.no_grad():
                z = F.normalize(teacher[1].mlp(teacher[0](crops[0])), dim=1)
                n = z.shape[0]
                mean_cos = ((z @ z.T).sum() - n) / (n * (n - 1))
            print(f"step {step}: tau_t {tt:.3f}, H_t {teacher_entropy(t_out[0], center.center, tt, a.sinkhorn):.3f}, "
                  f"teacher-output std over images {t_out[0].std(0).mean().item():.4f}, "
                  f"mean cosine between images' z {mean_cos.item():.3f}, loss {loss.item():.3f}", flush=True)
        el = time.perf_counter() - t0
        if a.eval_every and step % a.eval_every == 0:
            te = time.perf_counter()
            k = heldout_knn(teacher[0], sizes=(a.image_size,))[a.image_size]
            h = teacher_entropy(t_out[0], center.center, tt, a.sinkhorn)
            res.setdefault("curve", []).append((step, k, round(h, 3)))
            print(f"step {step}: teacher kNN {k:.1%}, H_t {h:.2f}", flush=True)
            t0 += time.perf_counter() - te
            el = time.perf_counter() - t0
        elif step % 20 == 0:
            print(f"step {step}: loss {loss.item():.3f}, H_t {teacher_entropy(t_out[0], center.center, tt, a.sinkhorn):.3f}, "
                  f"{el:.0f} s", flush=True)
        if el > a.seconds or (a.speed and step >= 6):
            break
    res.update(steps=step, train_s=round(el, 1), img_s=round(step * a.batch / el, 1), loss=round(loss.item(), 4))
    if not a.speed:
        res["knn_teacher"] = heldout_knn(teacher[0])
        res["knn_student"] = heldout_knn(student[0])
    line = json.dumps(res)
    print(line)
    if a.out:
        with open(a.out, "a") as f:
            f.write(line + "\n")


if __name__ == "__main__":
    main()
