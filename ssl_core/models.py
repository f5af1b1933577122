"""Backbones and heads.

Every backbone maps (N, 3, H, W) images to (N, feature_dim) features and exposes
`feature_dim`, so a head or a kNN never needs to know which backbone it got.

- SmallCNN: CPU-friendly; a stride-2 stem halves the resolution at once (a stride-1 stem is
  about 4x the compute, far too slow on 2 cores). The `smoke` and `laptop` profiles use it.
- resnet18_cifar: ResNet-18 with the CIFAR stem (3x3 conv, stride 1, no max-pool), as in the
  CIFAR experiments of SimCLR / MoCo demos. The `gpu` profile uses it.
- mlp(): projection / prediction heads.

Infrastructure, used by every notebook.
"""
from __future__ import annotations

import torch
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
    """

    def __init__(self, width: int = 64):
        super().__init__()
        self.feature_dim = 4 * width
        self.net = nn.Sequential(
            conv_bn_relu(3, width, stride=2),                # (N, w, H/2, W/2)
            BasicBlock(width, width),
            BasicBlock(width, 2 * width, stride=2),          # (N, 2w, H/4, W/4)
            BasicBlock(2 * width, 4 * width, stride=2),      # (N, 4w, H/8, W/8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),           # (N, 4w)
        )

    def forward(self, x):
        return self.net(x)


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: 3x3 conv stride 1, no max-pool; (N, 512) features."""

    def __init__(self, width: int = 64):
        super().__init__()
        widths, layers, c_in = [width, 2 * width, 4 * width, 8 * width], [], width
        for i, c in enumerate(widths):
            layers += [BasicBlock(c_in, c, stride=1 if i == 0 else 2), BasicBlock(c, c)]
            c_in = c
        self.feature_dim = c_in
        self.net = nn.Sequential(conv_bn_relu(3, width), *layers,   # (N, 8w, H/8, W/8)
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        return self.net(x)


def mlp(*dims: int, last_bn: bool = False) -> nn.Sequential:
    """Linear -> BN -> ReLU between consecutive dims, a plain Linear at the end.

    mlp(512, 2048, 128) is SimCLR's projection head; mlp(512, 128) a linear projection.
    last_bn=True adds a BatchNorm after the last Linear (SimCLR v2, SimSiam).
    """
    if len(dims) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {dims}")
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        layers += [nn.Linear(d_in, d_out, bias=False), nn.BatchNorm1d(d_out), nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1]))
    return nn.Sequential(*layers)
