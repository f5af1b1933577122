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
- ViT (with Attention, TransformerBlock): a small Vision Transformer whose attention is written
  out, [CLS] attention maps, a freezable patch projection (MoCo v3, DINO: notebooks 12-13).
- DINOHead: MLP (optionally with BatchNorm) -> bottleneck -> L2 norm -> weight-normalised last layer (DINO).

Infrastructure, used by every notebook.
"""
from __future__ import annotations

import math
import numbers

import torch
import torch.nn.functional as F
from torch import nn

from ssl_core import checks


def check_images(x: torch.Tensor) -> None:
    """A backbone's input must be a float batch: uint8 images straight from the dataset would fail
    inside the first convolution with an error that blames the weights. A dtype read, no sync.
    Infrastructure."""
    if not x.is_floating_point():
        raise TypeError(f"got {str(x.dtype).replace('torch.', '')} images: a backbone takes normalised float "
                        "images; call augment.preprocess(images) (or an augmentation pipeline) first")


def _check_head_input(head: nn.Module, args) -> None:
    """Forward pre-hook of mlp(): the input's last dim must be the first Linear's in_features."""
    x, d_in = args[0], head[0].in_features
    if isinstance(x, torch.Tensor) and x.shape[-1:] != (d_in,):
        raise ValueError(f"this head takes features of size {d_in} (mlp({d_in}, ...)), got shape {tuple(x.shape)}; "
                         f"build it from the backbone's output size: models.mlp(backbone.feature_dim, ...)")


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
        checks.positive_int(width, "SmallCNN width")
        checks.positive_int(in_channels, "SmallCNN in_channels")
        self.feature_dim = 4 * width
        self.net = nn.Sequential(
            conv_bn_relu(in_channels, width, stride=2),      # (N, w, H/2, W/2)
            BasicBlock(width, width),
            BasicBlock(width, 2 * width, stride=2),          # (N, 2w, H/4, W/4)
            BasicBlock(2 * width, 4 * width, stride=2),      # (N, 4w, H/8, W/8)
            nn.AdaptiveAvgPool2d(1), nn.Flatten(),           # (N, 4w)
        )

    def forward(self, x):
        check_images(x)
        return self.net(x)


class ResNet18(nn.Module):
    """ResNet-18 with the CIFAR stem: 3x3 conv stride 1, no max-pool; (N, 512) features.
    in_channels: channels of the input, (N, in_channels, H, W)."""

    def __init__(self, width: int = 64, in_channels: int = 3):
        super().__init__()
        checks.positive_int(width, "ResNet18 width")
        checks.positive_int(in_channels, "ResNet18 in_channels")
        widths, layers, c_in = [width, 2 * width, 4 * width, 8 * width], [], width
        for i, c in enumerate(widths):
            layers += [BasicBlock(c_in, c, stride=1 if i == 0 else 2), BasicBlock(c, c)]
            c_in = c
        self.feature_dim = c_in
        self.net = nn.Sequential(conv_bn_relu(in_channels, width), *layers,   # (N, 8w, H/8, W/8)
                                 nn.AdaptiveAvgPool2d(1), nn.Flatten())

    def forward(self, x):
        check_images(x)
        return self.net(x)


def mlp(*dims: int, last_bn: bool = False, bn: bool = True) -> nn.Sequential:
    """Linear -> BN -> ReLU between consecutive dims, a plain Linear at the end.

    mlp(512, 2048, 128) is SimCLR's projection head; mlp(512, 128) a linear projection.
    last_bn=True adds a BatchNorm after the last Linear (SimCLR v2, SimSiam).
    bn=False drops the hidden BatchNorms: Linear -> ReLU -> Linear is MoCo v2's head.
    An input whose last dim is not dims[0] is refused with a message naming backbone.feature_dim.
    """
    if len(dims) < 2:
        raise ValueError(f"mlp needs at least an input and an output size, got {dims}")
    for d in dims:
        if isinstance(d, bool) or not isinstance(d, numbers.Integral) or d < 1:
            raise ValueError(f"mlp sizes must be positive ints, got {dims}; e.g. mlp(backbone.feature_dim, 512, 128)")
    layers: list[nn.Module] = []
    for d_in, d_out in zip(dims[:-2], dims[1:-1]):
        norm = [nn.BatchNorm1d(d_out)] if bn else []
        layers += [nn.Linear(d_in, d_out, bias=not bn), *norm, nn.ReLU(inplace=True)]
    layers.append(nn.Linear(dims[-2], dims[-1], bias=not last_bn))
    if last_bn:
        layers.append(nn.BatchNorm1d(dims[-1]))
    head = nn.Sequential(*layers)
    head.register_forward_pre_hook(_check_head_input)
    return head


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
        checks.positive_int(groups, "SplitBatchNorm groups")
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
    checks.positive_int(groups, "split_batchnorm_ groups")
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


# ---------------------------------------------------------------- Vision Transformer (12-13)

class Attention(nn.Module):
    """Multi-head self-attention written out (Vaswani et al. 2017), so the attention matrix is
    a tensor a reader can look at:

        q, k, v = x W_q, x W_k, x W_v  split into `heads` heads of size d = dim / heads,
        A = softmax(q k^T / sqrt(d))   (N, heads, T, T), rows sum to 1,
        out = concat_heads(A v) W_o.

    forward(x (N, T, dim)) -> (out (N, T, dim), A (N, heads, T, T)).
    """

    def __init__(self, dim: int, heads: int):
        super().__init__()
        if dim % heads:
            raise ValueError(f"dim {dim} must be divisible by heads {heads}")
        self.heads, self.scale = heads, (dim // heads) ** -0.5
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x):
        n, t, dim = x.shape
        q, k, v = self.qkv(x).reshape(n, t, 3, self.heads, dim // self.heads).permute(2, 0, 3, 1, 4)  # (N, h, T, d) each
        attn = torch.softmax((q @ k.transpose(-2, -1)) * self.scale, dim=-1)                     # (N, h, T, T)
        out = (attn @ v).transpose(1, 2).reshape(n, t, dim)                                      # (N, T, dim)
        return self.proj(out), attn


class TransformerBlock(nn.Module):
    """Pre-norm block: x + Attention(LN(x)), then x + MLP(LN(x)) with a GELU MLP of mlp_ratio * dim."""

    def __init__(self, dim: int, heads: int, mlp_ratio: float = 4.0):
        super().__init__()
        self.norm1, self.attn = nn.LayerNorm(dim), Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        hidden = int(dim * mlp_ratio)
        self.mlp = nn.Sequential(nn.Linear(dim, hidden), nn.GELU(), nn.Linear(hidden, dim))

    def forward(self, x):
        out, attn = self.attn(self.norm1(x))
        x = x + out
        return x + self.mlp(self.norm2(x)), attn


def conv_stem(in_channels: int, dim: int, patch_size: int) -> nn.Sequential:
    """The convolutional stem of ViT(stem="conv"): log2(patch_size) x [3x3 conv, stride 2, no bias; BN;
    ReLU], channels doubling up to `dim`, then a 1x1 conv to `dim`. (N, C, H, W) -> (N, dim, H/p, W/p)."""
    n = int(math.log2(patch_size))
    widths = [dim // 2 ** (n - 1 - i) for i in range(n)]              # e.g. p = 4, dim 128: 64, 128
    layers: list[nn.Module] = []
    for c_in, c_out in zip([in_channels] + widths[:-1], widths):
        layers += [nn.Conv2d(c_in, c_out, 3, stride=2, padding=1, bias=False), nn.BatchNorm2d(c_out), nn.ReLU()]
    return nn.Sequential(*layers, nn.Conv2d(widths[-1] if n else in_channels, dim, 1))


def sincos_position_embedding(grid: int, dim: int, temperature: float = 10000.0) -> torch.Tensor:
    """(1, grid*grid, dim) fixed 2-D sine-cosine position embeddings (the MoCo v3 authors' vits.py):
    a quarter of the channels each for sin(x w), cos(x w), sin(y w), cos(y w), w = temperature^(-j/(dim/4)),
    x the token's column and y its row (the authors' meshgrid puts the row in the first half: the same
    embeddings with the two halves swapped, which no network can tell apart)."""
    coords = torch.arange(grid, dtype=torch.float32)
    gy, gx = torch.meshgrid(coords, coords, indexing="ij")                # token t = row * grid + column
    omega = temperature ** -(torch.arange(dim // 4, dtype=torch.float32) / (dim // 4))   # (dim/4,)
    ax, ay = gx.flatten()[:, None] * omega, gy.flatten()[:, None] * omega  # (T, dim/4) each
    return torch.cat([ax.sin(), ax.cos(), ay.sin(), ay.cos()], dim=1)[None]


class ViT(nn.Module):
    """Vision Transformer (Dosovitskiy et al. 2021) for small images; (N, dim) [CLS] features.

    patch embedding: a Conv2d with kernel = stride = patch_size, (N, 3, H, W) -> (N, dim, H/p, W/p),
    flattened to T = (H/p)(W/p) tokens; a learnable [CLS] token in front; learnable position
    embeddings for the `image_size` grid, interpolated (bicubic) when an input has another size
    (DINO's small local crops); `depth` pre-norm blocks; a final LayerNorm; the [CLS] token is
    the feature (feature_dim = dim).

    last_attention(x) -> (N, heads, T): the last block's attention of [CLS] over the patches
    (rows of the full matrix sum to 1 over [CLS] + patches), for DINO's attention maps.
    freeze_patch_embed_(): MoCo v3's fix for unstable training (Chen et al. 2021, Sec. 4.2): a
    random patch projection that is never trained.

    stem="conv" replaces the one-layer patch projection by a small convolutional stem (Xiao et al.
    2021, "Early convolutions help transformers see better"; the MoCo v3 authors' `ConvStem`):
    log2(patch_size) 3x3 stride-2 convolutions without bias, each + BatchNorm + ReLU, the last one
    with `dim` channels and each earlier one half as many as the next, then a 1x1 convolution to
    `dim`. It maps the image to the same (H/p) x (W/p) grid of tokens.
    init="mocov3" is the MoCo v3 authors' initialisation (their `vits.py`): fixed 2-D sine-cosine
    position embeddings (not trained; zeros for [CLS]), the [CLS] token from N(0, 1e-6^2), the
    patch projection Xavier-uniform on its flattened (dim, 3 p p) weight, the qkv layer
    Xavier-uniform with q, k, v counted as three separate (dim, dim) matrices, the other Linear
    layers Xavier-uniform, biases 0. init="trunc_normal" (default) draws every weight, [CLS] and
    the learnable position embeddings from a normal truncated at 2 std, std 0.02 (timm's default).

    Built in: notebooks/12_moco_v3.ipynb, used by 13_dino
    """

    def __init__(self, image_size: int = 32, patch_size: int = 4, dim: int = 192, depth: int = 6,
                 heads: int = 3, mlp_ratio: float = 4.0, in_channels: int = 3, stem: str = "patch",
                 init: str = "trunc_normal"):
        super().__init__()
        for name, value in (("image_size", image_size), ("patch_size", patch_size), ("dim", dim), ("depth", depth),
                            ("heads", heads), ("in_channels", in_channels)):
            checks.positive_int(value, f"ViT {name}")
        if image_size % patch_size:
            raise ValueError(f"image_size {image_size} must be a multiple of patch_size {patch_size}")
        if stem not in ("patch", "conv"):
            raise ValueError(f"ViT stem must be 'patch' (one linear patch projection) or 'conv' (a convolutional "
                             f"stem), got {stem!r}")
        if init not in ("trunc_normal", "mocov3"):
            raise ValueError(f"ViT init must be 'trunc_normal' or 'mocov3' (the MoCo v3 authors'), got {init!r}")
        if stem == "conv" and patch_size & (patch_size - 1):
            raise ValueError(f"stem='conv' halves the resolution per layer, so patch_size must be a power of 2, "
                             f"got {patch_size}")
        if init == "mocov3" and dim % 4:
            raise ValueError(f"init='mocov3' builds 2-D sine-cosine position embeddings, which need dim divisible "
                             f"by 4, got {dim}")
        self.patch_size, self.grid, self.feature_dim, self.stem = patch_size, image_size // patch_size, dim, stem
        self.patch_embed = (nn.Conv2d(in_channels, dim, patch_size, stride=patch_size) if stem == "patch"
                            else conv_stem(in_channels, dim, patch_size))
        self.cls_token = nn.Parameter(torch.zeros(1, 1, dim))
        self.pos_embed = nn.Parameter(torch.zeros(1, 1 + self.grid ** 2, dim))
        self.blocks = nn.ModuleList(TransformerBlock(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)
        if init == "trunc_normal":
            for p in (self.cls_token, self.pos_embed):
                nn.init.trunc_normal_(p, std=0.02)
            for m in self.modules():
                if isinstance(m, nn.Linear):
                    nn.init.trunc_normal_(m.weight, std=0.02)
                    nn.init.zeros_(m.bias)
        else:
            self._mocov3_init_()

    @torch.no_grad()
    def _mocov3_init_(self) -> None:
        dim = self.feature_dim
        self.pos_embed.copy_(torch.cat([torch.zeros(1, 1, dim), sincos_position_embedding(self.grid, dim)], dim=1))
        self.pos_embed.requires_grad_(False)                            # fixed, as in the authors' vits.py
        nn.init.normal_(self.cls_token, std=1e-6)
        for name, m in self.named_modules():
            if isinstance(m, nn.Linear):
                if name.endswith("qkv"):                                # q, k, v as three (dim, dim) matrices
                    bound = math.sqrt(6.0 / (m.weight.shape[0] // 3 + m.weight.shape[1]))
                    nn.init.uniform_(m.weight, -bound, bound)
                else:
                    nn.init.xavier_uniform_(m.weight)
                nn.init.zeros_(m.bias)
        if self.stem == "patch":                                        # Xavier-uniform on the (dim, 3 p p) matrix
            w = self.patch_embed.weight
            bound = math.sqrt(6.0 / (w[0].numel() + w.shape[0]))
            nn.init.uniform_(w, -bound, bound)
            nn.init.zeros_(self.patch_embed.bias)

    def _position_embedding(self, gh: int, gw: int) -> torch.Tensor:
        """(1, 1 + gh*gw, dim): the stored grid's embeddings, resized to a gh x gw grid if needed."""
        if (gh, gw) == (self.grid, self.grid):
            return self.pos_embed
        cls_pos, patch_pos = self.pos_embed[:, :1], self.pos_embed[:, 1:]
        dim = patch_pos.shape[-1]
        grid = patch_pos.reshape(1, self.grid, self.grid, dim).permute(0, 3, 1, 2)        # (1, dim, g, g)
        grid = F.interpolate(grid, size=(gh, gw), mode="bicubic", align_corners=False)
        return torch.cat([cls_pos, grid.permute(0, 2, 3, 1).reshape(1, gh * gw, dim)], dim=1)

    def tokens(self, x):
        """(N, 3, H, W) -> (N, 1 + T, dim): [CLS] + patch tokens with position embeddings."""
        check_images(x)
        if x.shape[-2] % self.patch_size or x.shape[-1] % self.patch_size:
            raise ValueError(f"image size {tuple(x.shape[-2:])} is not a multiple of the patch size {self.patch_size}")
        patches = self.patch_embed(x)                                   # (N, dim, H/p, W/p)
        gh, gw = patches.shape[-2:]
        patches = patches.flatten(2).transpose(1, 2)                    # (N, T, dim)
        cls = self.cls_token.expand(len(x), -1, -1)                     # (N, 1, dim)
        return torch.cat([cls, patches], dim=1) + self._position_embedding(gh, gw)

    def forward(self, x):
        h = self.tokens(x)
        for block in self.blocks:
            h, _ = block(h)
        return self.norm(h)[:, 0]                                       # (N, dim): the [CLS] token

    @torch.no_grad()
    def last_attention(self, x):
        """(N, heads, T): attention of [CLS] over the T patches in the last block."""
        h = self.tokens(x)
        for block in self.blocks:
            h, attn = block(h)
        return attn[:, :, 0, 1:]

    def freeze_patch_embed_(self) -> "ViT":
        """Stop training the patch projection (MoCo v3's stability fix); returns self."""
        if self.stem != "patch":
            raise ValueError("freeze_patch_embed_() freezes the one-layer patch projection; this ViT has "
                             "stem='conv' (MoCo v3 freezes only a linear patch projection). Build ViT(stem='patch').")
        for p in self.patch_embed.parameters():
            p.requires_grad_(False)
        return self


class DINOHead(nn.Module):
    """DINO's projection head (Caron et al. 2021, Sec. 3.1 and the authors' code):

        MLP (n_layers Linear layers, GELU, hidden width `hidden`, last one to `bottleneck`)
        -> L2 normalisation -> a weight-normalised Linear to K = out_dim outputs, no bias.

    With the weight norm's scale fixed to 1 (the code's default, norm_last_layer=True), each
    output is a cosine between the normalised bottleneck feature and one of K unit rows, so the
    outputs lie in [-1, 1] before the temperature. use_bn=True puts a BatchNorm after each hidden
    Linear (Linear -> BN -> GELU, the code's use_bn_in_head; its default is False, and the paper
    says the head has no BN). (N, in_dim) -> (N, out_dim).

    Built in: notebooks/13_dino.ipynb
    """

    def __init__(self, in_dim: int, out_dim: int, hidden: int = 2048, bottleneck: int = 256, n_layers: int = 3,
                 use_bn: bool = False):
        super().__init__()
        if n_layers < 1:
            raise ValueError(f"n_layers must be >= 1, got {n_layers}")
        for name, value in (("in_dim", in_dim), ("out_dim", out_dim), ("hidden", hidden), ("bottleneck", bottleneck),
                            ("n_layers", n_layers)):
            checks.positive_int(value, f"DINOHead {name}")
        dims = [in_dim] + [hidden] * (n_layers - 1) + [bottleneck]
        layers: list[nn.Module] = []
        for i, (d_in, d_out) in enumerate(zip(dims[:-1], dims[1:])):
            layers.append(nn.Linear(d_in, d_out))
            if i < n_layers - 1:
                layers += [nn.BatchNorm1d(d_out), nn.GELU()] if use_bn else [nn.GELU()]
        self.mlp = nn.Sequential(*layers)
        self.last = nn.Parameter(torch.empty(out_dim, bottleneck))
        nn.init.trunc_normal_(self.last, std=0.02)
        for m in self.mlp:
            if isinstance(m, nn.Linear):
                nn.init.trunc_normal_(m.weight, std=0.02)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        d_in = self.mlp[0].in_features
        if x.shape[-1:] != (d_in,):
            raise ValueError(f"DINOHead(in_dim={d_in}) got features of shape {tuple(x.shape)}; build it from the "
                             "backbone's output size: DINOHead(backbone.feature_dim, ...)")
        z = F.normalize(self.mlp(x), dim=1)                             # (N, bottleneck), unit rows
        return z @ F.normalize(self.last, dim=1).T                      # (N, out_dim), cosines
