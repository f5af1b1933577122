"""Backbones and heads.

Every backbone maps (N, 3, H, W) images to (N, feature_dim) features and exposes
`feature_dim`, so a head or a kNN never needs to know which backbone it got. `in_channels`
(default 3) lets a backbone read other inputs, e.g. the L (1) or ab (2) channels of Lab colour
(notebooks/04_cmc.ipynb).

- SmallCNN: CPU-friendly; a stride-2 stem halves the resolution at once (a stride-1 stem is
  about 4x the compute, far too slow on 2 cores). The `smoke` and `laptop` profiles use it.
- resnet18_cifar: ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool), as in the
  CIFAR experiments of SimCLR / MoCo demos. The `gpu` profile uses it.
- mlp(): projection / prediction heads.
- MaskedConvContext: CPC's autoregressive (top-to-bottom) context network over a patch grid.
- SplitBatchNorm / split_batchnorm_: per-group batch norm, one device simulating several GPUs
  (MoCo's Shuffle BN, notebooks/05_moco_v1.ipynb).

Infrastructure, used by every notebook.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


def conv_bn_relu(c_in: int, c_out: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out),
                         nn.ReLU(inplace=True))


class BasicBlock(nn.Module):
    """Two 3x3 convs with an identity (or 1x1 projection) shortcut, He et al. 2016."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = conv_bn_relu(c_in, c_out, stride)
        self.conv2 = nn.Sequential(nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out))
        self.shortcut = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x):
        return torch.relu(self.conv2(self.conv1(x)) + self.shortcut(x))


class SmallCNN(nn.Module):
    """A small residual CNN for CPU budgets.

    stride-2 stem (H/2) -> block (width) -> block (2 width, H/4) -> block (4 width, H/8)
    -> global average pool -> (N, 4 * width) features.
    in_channels: channels of the input, (N, in_channels, H, W).
    """

    def __init__(self, width: int = 64, in_channels: int = 3):
        super().__init__()
        self.feature_dim = 4 * width
        self.net = nn.Sequential(
            conv_bn_relu(in_channels, width, stride=2),      # (N, w, H/2, W/2)
            BasicBlock(width, width),
            BasicBlock(width, 2 * width, stride=2),          # (N, 2w, H/4, W/4)
            BasicBlock(2 * width, 4 * width, stride=2),      # (N, 4w, H/8, W/8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),           # (N, 4w)
        )

    def forward(self, x):
        return self.net(x)


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: 3x3 conv stride 1, no max-pool; (N, 512) features.
    in_channels: channels of the input, (N, in_channels, H, W)."""

    def __init__(self, width: int = 64, in_channels: int = 3):
        super().__init__()
        widths, layers, c_in = [width, 2 * width, 4 * width, 8 * width], [], width
        for i, c in enumerate(widths):
            layers += [BasicBlock(c_in, c, stride=1 if i == 0 else 2), BasicBlock(c, c)]
            c_in = c
        self.feature_dim = c_in
        self.net = nn.Sequential(conv_bn_relu(in_channels, width), *layers,   # (N, 8w, H/8, W/8)
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def mlp(*dims: int, last_bn: bool = False, bn: bool = True) -> nn.Sequential:
    """Linear -> BN -> ReLU between consecutive dims, a plain Linear at the end.

    mlp(512, 2048, 128) is SimCLR's projection head; mlp(512, 128) a linear projection.
    last_bn=True adds a BatchNorm after the last Linear (SimCLR v2, SimSiam).
    bn=False drops the hidden BatchNorms: Linear -> ReLU -> Linear is MoCo v2's head.
    """
    if len(dims) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {dims}")
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        norm = [nn.BatchNorm1d(d_out)] if bn else []
        layers += [nn.Linear(d_in, d_out, bias=not bn), *norm, nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1]))
    return nn.Sequential(*layers)


class MaskedConvContext(nn.Module):
    """CPC's autoregressive context network over a grid of patch embeddings, top to bottom.

    z (N, D, R, S) -> c (N, hidden, R, S), where the context c[:, :, r] of row r sees only rows
    <= r of z (van den Oord et al. 2018, Sec. 3.2: "a PixelCNN-style autoregressive model ...
    predictions about the latent activations in following rows"). A 1x1 conv maps D -> hidden,
    then `layers` residual blocks h <- h + conv(relu(h)), each conv with a (kh, kw) kernel whose
    input is padded with kh-1 rows ABOVE and none below. That is a masked convolution: the same
    as a (2kh-1, kw) kernel centred on the row with its lower kh-1 rows zeroed, written as a shift.
    Row r's receptive field: rows r - layers*(kh-1) .. r, columns +- layers*(kw//2).

    Built in: notebooks/02_cpc.ipynb
    """

    def __init__(self, dim: int, hidden: int | None = None, layers: int = 3, kernel_size=(2, 3)):
        super().__init__()
        kh, kw = kernel_size
        if kh < 1 or kw < 1 or kw % 2 == 0:
            raise ValueError(f"kernel_size must be (kh >= 1, odd kw), got {kernel_size}")
        self.hidden = hidden or dim
        self.pad = (kw // 2, kw // 2, kh - 1, 0)         # (left, right, top, bottom): nothing below
        self.proj = nn.Conv2d(dim, self.hidden, 1)
        self.convs = nn.ModuleList(nn.Conv2d(self.hidden, self.hidden, (kh, kw)) for _ in range(layers))

    def forward(self, z):
        if z.dim() != 4:
            raise ValueError(f"expected a grid of embeddings (N, D, R, S), got shape {tuple(z.shape)}")
        h = self.proj(z)                                                   # (N, hidden, R, S)
        for conv in self.convs:
            h = h + conv(F.pad(torch.relu(h), self.pad))                   # (N, hidden, R, S)
        return h


class SplitBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d that, in train mode, normalises each of `groups` equal consecutive chunks of
    the batch with that chunk's own mean and variance: the per-GPU batch norm of a G-GPU run,
    simulated on one device (MoCo's Shuffle BN, He et al. 2019, Sec. 3.3).

    Chunk g is samples g*N/G .. (g+1)*N/G - 1. The batch (N, C, H, W) is viewed as
    (N/G, G*C, H, W), so group g's samples fill channels g*C .. (g+1)*C - 1 and one batch_norm
    call normalises all groups at once. Weight, bias and running statistics are shared by the
    groups (the running statistics move towards the mean of the groups' statistics, as the
    average over GPUs would). groups=1 is exactly BatchNorm2d; eval mode uses the running
    statistics, as BatchNorm2d does.

    Built in: notebooks/05_moco_v1.ipynb
    """

    def __init__(self, num_features: int, groups: int = 1, **kwargs):
        if groups < 1:
            raise ValueError(f"groups must be >= 1, got {groups}")
        super().__init__(num_features, **kwargs)
        self.groups = groups

    def forward(self, x):
        G = self.groups
        if not self.training or G == 1:
            return super().forward(x)
        N, C, H, W = x.shape
        if N % G:
            raise ValueError(f"a batch of {N} does not split into {G} groups of equal size")
        x_g = x.reshape(G, N // G, C, H, W).transpose(0, 1).reshape(N // G, G * C, H, W)  # (N/G, G*C, H, W)
        stats = [None if s is None else s.repeat(G) for s in (self.running_mean, self.running_var)]
        affine = [None if p is None else p.repeat(G) for p in (self.weight, self.bias)]
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
        momentum = 1.0 / float(self.num_batches_tracked) if self.momentum is None else self.momentum
        y = F.batch_norm(x_g, *stats, *affine, True, momentum, self.eps)                  # (N/G, G*C, H, W)
        if self.track_running_stats:
            with torch.no_grad():
                self.running_mean.copy_(stats[0].view(G, C).mean(0))
                self.running_var.copy_(stats[1].view(G, C).mean(0))
        return y.reshape(N // G, G, C, H, W).transpose(0, 1).reshape(N, C, H, W)         # (N, C, H, W)


def split_batchnorm_(model: nn.Module, groups: int) -> nn.Module:
    """Replace (in place) every BatchNorm2d of `model` by a SplitBatchNorm with `groups` groups,
    keeping its parameters (with their requires_grad) and running statistics; SplitBatchNorms
    already there get the new `groups`. Returns `model`. groups=1 gives back plain batch norm.

    Built in: notebooks/05_moco_v1.ipynb
    """
    if groups < 1:
        raise ValueError(f"groups must be >= 1, got {groups}")
    for name, child in model.named_children():
        if isinstance(child, SplitBatchNorm):
            child.groups = groups
        elif isinstance(child, nn.BatchNorm2d):
            split = SplitBatchNorm(child.num_features, groups, eps=child.eps, momentum=child.momentum,
                                   affine=child.affine, track_running_stats=child.track_running_stats)
            split.load_state_dict(child.state_dict())
            for p_new, p_old in zip(split.parameters(), child.parameters()):
                p_new.requires_grad_(p_old.requires_grad)  # a frozen (momentum) encoder stays frozen
            tensors = list(child.parameters()) + list(child.buffers())
            setattr(model, name, split.to(tensors[0].device) if tensors else split)
        else:
            split_batchnorm_(child, groups)
    return model
