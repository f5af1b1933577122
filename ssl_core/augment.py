"""Batched image augmentation with per-image random parameters, on any device.

Why not torchvision's random transforms on a batch? They draw ONE set of random parameters
per call, so every image of a batch would get the same crop and the same colour change. The
kernels here draw parameters per image, as a tensor of shape (N,), and apply them all at once
(`affine_grid` + `grid_sample` for crops, `torch.where` masks for "with probability p"). On a
GPU nothing leaves the device; on a CPU it is still much faster than a per-image PIL pipeline.

Every kernel takes a float batch x of shape (N, 3, H, W) with values in [0, 1] and an optional
`torch.Generator` (on x's device) so that a seed reproduces the same views.

Infrastructure, used by every notebook; recipes from the papers at the bottom.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from ssl_core import checks
from ssl_core.color import (_check_batch, adjust_brightness, adjust_contrast, adjust_hue, adjust_saturation,
                            rgb_to_gray)

Tensor = torch.Tensor

CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
STL10_MEAN = (0.4467, 0.4398, 0.4066)
STL10_STD = (0.2603, 0.2566, 0.2713)


def _uniform(n: int, low: float, high: float, x: Tensor, generator) -> Tensor:
    """(n,) samples from U[low, high] on x's device."""
    u = torch.rand(n, generator=generator, device=x.device, dtype=x.dtype)
    return low + (high - low) * u


def _coin(n: int, p: float, x: Tensor, generator) -> Tensor:
    """(n,) bool, each True with probability p."""
    return torch.rand(n, generator=generator, device=x.device) < p


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, 3, H, W) in [0, 255] -> float32 in [0, 1]."""
    if images.dtype != torch.uint8:
        raise TypeError(f"expected uint8 images, got {images.dtype}: augmentations and preprocess take the dataset's "
                        "uint8 images (dataset.images); float images in [0, 1] need only normalize(x)")
    return images.float().div_(255.0)


def normalize(x: Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> Tensor:
    """(x - mean) / std per channel; one mean and one std per channel of x (N, C, H, W)."""
    c = x.shape[1] if x.dim() == 4 else None
    mean = torch.as_tensor(mean, device=x.device, dtype=x.dtype).flatten()
    std = torch.as_tensor(std, device=x.device, dtype=x.dtype).flatten()
    if c is None or len(mean) != c or len(std) != c:
        raise ValueError(f"normalize: x of shape {tuple(x.shape)} needs one mean and one std per channel, got "
                         f"{len(mean)} and {len(std)}; for {c}-channel images pass {c} means and {c} stds")
    return (x - mean.view(1, c, 1, 1)) / std.view(1, c, 1, 1)


def preprocess(images: Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> Tensor:
    """No augmentation: uint8 (N, 3, H, W) -> normalised float network input (for evaluation)."""
    return normalize(to_float(images), mean, std)


def preprocess_at(size: int):
    """`preprocess`, then the whole image resized to size x size (bilinear, antialiased): the evaluation
    input of a network trained on size x size crops, so that a ViT sees the token grid it was trained on
    (12, 13). preprocess_at(32) on CIFAR-10 is `preprocess` itself. Returns a function images -> input."""
    checks.positive_int(size, "preprocess_at: size")

    def resized(images: Tensor) -> Tensor:
        x = preprocess(images)
        if x.shape[-2:] == (size, size):
            return x
        return F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)

    resized.__name__ = f"preprocess_at_{size}"
    return resized


# ---------------------------------------------------------------- geometric

def random_resized_crop(x: Tensor, size: int, scale=(0.08, 1.0), ratio=(3 / 4, 4 / 3),
                        generator=None, tries: int = 10) -> Tensor:
    """Crop a random box of each image and resize it to size x size (bilinear).

    Box area ~ U[scale] * H * W, aspect ratio w/h ~ logU[ratio], as torchvision's
    RandomResizedCrop: `tries` candidates per image, the first that fits is used; if none fits,
    the whole image. Boxes are continuous (sub-pixel), sampled with grid_sample.
    (N, 3, H, W) -> (N, 3, size, size)
    """
    _check_batch(x)
    checks.positive_int(size, "random_resized_crop: size")
    checks.positive_int(tries, "random_resized_crop: tries")
    checks.interval(scale, "random_resized_crop: scale (fractions of the image area)", 0.0, 1.0)
    checks.interval(ratio, "random_resized_crop: ratio (aspect ratios w/h)")
    n, _, h, w = x.shape
    area = torch.empty(n, tries, device=x.device).uniform_(*scale, generator=generator) * (h * w)
    log_r = torch.empty(n, tries, device=x.device).uniform_(math.log(ratio[0]), math.log(ratio[1]),
                                                            generator=generator)
    bw = (area * log_r.exp()).sqrt()                                   # (N, tries) box widths
    bh = (area / log_r.exp()).sqrt()                                   # (N, tries) box heights
    fits = (bw <= w) & (bh <= h)
    first = fits.float().argmax(dim=1, keepdim=True)                   # (N, 1) first fitting try
    any_fit = fits.any(dim=1)
    bw = torch.where(any_fit, bw.gather(1, first).squeeze(1), torch.full_like(bw[:, 0], w))
    bh = torch.where(any_fit, bh.gather(1, first).squeeze(1), torch.full_like(bh[:, 0], h))
    x0 = torch.rand(n, generator=generator, device=x.device) * (w - bw)  # (N,) left edge
    y0 = torch.rand(n, generator=generator, device=x.device) * (h - bh)  # (N,) top edge
    # affine map from output coords in [-1, 1] to input coords in [-1, 1]
    theta = torch.zeros(n, 2, 3, device=x.device, dtype=x.dtype)
    theta[:, 0, 0] = bw / w
    theta[:, 1, 1] = bh / h
    theta[:, 0, 2] = (2 * x0 + bw) / w - 1
    theta[:, 1, 2] = (2 * y0 + bh) / h - 1
    grid = F.affine_grid(theta, [n, 3, size, size], align_corners=False)  # (N, size, size, 2)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="reflection", align_corners=False)


def horizontal_flip(x: Tensor, p: float = 0.5, generator=None) -> Tensor:
    """Mirror each image left-right with probability p."""
    _check_batch(x)
    checks.probability(p, "horizontal_flip: p")
    flip = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(flip, x.flip(-1), x)


# ---------------------------------------------------------------- colour (the colour ops themselves: ssl_core.color)

def color_jitter(x: Tensor, brightness=0.4, contrast=0.4, saturation=0.4, hue=0.1, p=0.8,
                 generator=None) -> Tensor:
    """With probability p, change brightness, contrast, saturation and hue of each image.

    Factors ~ U[1 - s, 1 + s] (hue shift ~ U[-hue, hue]), in a random order per image, as
    torchvision's ColorJitter does for a single image. Images not chosen get identity factors.
    """
    _check_batch(x)
    for name, s in (("brightness", brightness), ("contrast", contrast), ("saturation", saturation)):
        checks.number(s, f"color_jitter: {name} (factors drawn from [1 - s, 1 + s])", 0.0)
    checks.number(hue, "color_jitter: hue (a shift in [-hue, hue] of a turn)", 0.0, 0.5)
    checks.probability(p, "color_jitter: p")
    n = x.shape[0]
    on = _coin(n, p, x, generator)
    ops, params = [], []
    for fn, s, centre in ((adjust_brightness, brightness, 1.0), (adjust_contrast, contrast, 1.0),
                          (adjust_saturation, saturation, 1.0), (adjust_hue, hue, 0.0)):
        if s == 0:
            continue                                                   # strength 0: skip the op
        low = max(0.0, centre - s) if centre else -s
        draw = _uniform(n, low, centre + s, x, generator)
        ops.append(fn)
        params.append(torch.where(on, draw, torch.full_like(draw, centre)))
    order = torch.rand(n, len(ops), generator=generator, device=x.device).argsort(dim=1)  # (N, 4)
    out = x.clone()
    for slot in range(len(ops)):
        for k, fn in enumerate(ops):
            rows = (order[:, slot] == k).nonzero().squeeze(1)          # images doing op k now
            if rows.numel():
                out[rows] = fn(out[rows], params[k][rows])
    return out


def random_grayscale(x: Tensor, p: float = 0.2, generator=None) -> Tensor:
    """Replace each image by its luma (kept 3-channel) with probability p."""
    _check_batch(x)
    checks.probability(p, "random_grayscale: p")
    gray = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(gray, rgb_to_gray(x).expand_as(x), x)


def gaussian_blur(x: Tensor, sigma=(0.1, 2.0), p: float = 0.5, kernel_size: int | None = None,
                  generator=None) -> Tensor:
    """With probability p, blur each image with its own sigma ~ U[sigma] (separable, reflect pad).

    kernel_size defaults to about 10% of the image side, made odd (SimCLR's choice).
    Images not chosen get a delta kernel, i.e. stay exactly as they are.
    """
    _check_batch(x)
    checks.interval(sigma, "gaussian_blur: sigma (a range of standard deviations in pixels)")
    checks.probability(p, "gaussian_blur: p")
    n, c, h, w = x.shape
    if kernel_size is None:
        kernel_size = max(3, int(0.1 * min(h, w)) // 2 * 2 + 1)
    checks.positive_int(kernel_size, "gaussian_blur: kernel_size")
    if kernel_size % 2 == 0:
        raise ValueError(f"kernel_size must be odd, got {kernel_size}")
    r = kernel_size // 2
    t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)         # (ks,)
    s = _uniform(n, sigma[0], sigma[1], x, generator)                  # (N,)
    kernel = torch.exp(-t.view(1, -1) ** 2 / (2 * s.view(-1, 1) ** 2))  # (N, ks)
    kernel = kernel / kernel.sum(dim=1, keepdim=True)
    delta = (t == 0).to(x.dtype).expand(n, -1)
    kernel = torch.where(_coin(n, p, x, generator).view(-1, 1), kernel, delta)
    kernel = kernel.repeat_interleave(c, dim=0)                        # (N*3, ks) one per channel
    y = x.reshape(1, n * c, h, w)
    y = F.conv2d(F.pad(y, (r, r, 0, 0), mode="reflect"), kernel.view(n * c, 1, 1, -1), groups=n * c)
    y = F.conv2d(F.pad(y, (0, 0, r, r), mode="reflect"), kernel.view(n * c, 1, -1, 1), groups=n * c)
    return y.view(n, c, h, w)


def random_solarize(x: Tensor, p: float = 0.2, threshold: float = 0.5, generator=None) -> Tensor:
    """With probability p, invert every pixel value >= threshold (BYOL's second view)."""
    _check_batch(x)
    checks.probability(p, "random_solarize: p")
    checks.number(threshold, "random_solarize: threshold")
    on = _coin(x.shape[0], p, x, generator).view(-1, 1, 1, 1)
    return torch.where(on & (x >= threshold), 1.0 - x, x)


# ---------------------------------------------------------------- pipelines

@dataclass
class Augment:
    """One augmentation pipeline: crop -> flip -> colour jitter -> grayscale -> blur -> solarize
    -> normalize, every random choice made per image. Call it on a uint8 batch:

        views = augment(images_uint8, generator)       # (N, 3, size, size) normalised float

    Set a probability to 0 (or a strength to 0) to switch a step off; the fields are the knobs
    the papers ablate. `normalized=False` returns the [0, 1] views (for pictures).
    """
    size: int = 32
    crop_scale: tuple = (0.08, 1.0)
    crop_ratio: tuple = (3 / 4, 4 / 3)
    flip_p: float = 0.5
    jitter: tuple = (0.4, 0.4, 0.4, 0.1)   # brightness, contrast, saturation, hue
    jitter_p: float = 0.8
    gray_p: float = 0.2
    blur_p: float = 0.0
    blur_sigma: tuple = (0.1, 2.0)
    solarize_p: float = 0.0
    mean: tuple = CIFAR10_MEAN
    std: tuple = CIFAR10_STD

    def __post_init__(self):
        self.check()

    def check(self) -> None:
        """Range-check every knob, naming it (run at construction and at every call, so a field
        changed later is checked too; pure Python, no tensor is read)."""
        checks.positive_int(self.size, "Augment.size (the side of the output views, in pixels)")
        checks.interval(self.crop_scale, "Augment.crop_scale (fractions of the image area)", 0.0, 1.0)
        checks.interval(self.crop_ratio, "Augment.crop_ratio (aspect ratios w/h)")
        for name in ("flip_p", "jitter_p", "gray_p", "blur_p", "solarize_p"):
            checks.probability(getattr(self, name), f"Augment.{name} (a probability)")
        if not isinstance(self.jitter, (tuple, list)) or len(self.jitter) != 4:
            raise ValueError(f"Augment.jitter must be 4 strengths (brightness, contrast, saturation, hue), "
                             f"got {self.jitter!r}; write 0 for an adjustment to leave out")
        for name, value in zip(("brightness", "contrast", "saturation"), self.jitter):
            checks.number(value, f"Augment.jitter {name}", 0.0)
        checks.number(self.jitter[3], "Augment.jitter hue (a shift of at most half a turn)", 0.0, 0.5)
        checks.interval(self.blur_sigma, "Augment.blur_sigma (a range of standard deviations in pixels)")
        for name in ("mean", "std"):
            value = getattr(self, name)
            if not isinstance(value, (tuple, list)) or len(value) != 3:
                raise ValueError(f"Augment.{name} must be 3 numbers, one per RGB channel, got {value!r}")
        for value in self.std:
            checks.positive(value, "Augment.std (each channel's)")

    def __call__(self, images: Tensor, generator=None, normalized: bool = True) -> Tensor:
        self.check()
        x = to_float(images)
        x = random_resized_crop(x, self.size, self.crop_scale, self.crop_ratio, generator)
        if self.flip_p > 0:
            x = horizontal_flip(x, self.flip_p, generator)
        if self.jitter_p > 0 and any(self.jitter):
            x = color_jitter(x, *self.jitter, p=self.jitter_p, generator=generator)
        if self.gray_p > 0:
            x = random_grayscale(x, self.gray_p, generator)
        if self.blur_p > 0:
            x = gaussian_blur(x, self.blur_sigma, self.blur_p, generator=generator)
        if self.solarize_p > 0:
            x = random_solarize(x, self.solarize_p, generator=generator)
        return normalize(x, self.mean, self.std) if normalized else x


def instdisc_augment(size: int = 32, **overrides) -> Augment:
    """InstDisc / MoCo v1: crop scale (0.2, 1), colour jitter 0.4 on all four (always on),
    grayscale p=0.2, flip. (Wu et al. 2018 code; He et al. 2019.)"""
    return Augment(**{**dict(size=size, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.4),
                             jitter_p=1.0, gray_p=0.2), **overrides})


def simclr_augment(size: int = 32, strength: float = 0.5, blur: bool = False, **overrides) -> Augment:
    """SimCLR: crop scale (0.08, 1), flip, colour distortion of strength s (jitter 0.8s, 0.8s,
    0.8s, 0.2s with p=0.8, grayscale p=0.2), blur p=0.5 on ImageNet only. CIFAR uses s=0.5.
    (Chen et al. 2020, Appendix A.)"""
    s = strength
    return Augment(**{**dict(size=size, crop_scale=(0.08, 1.0), jitter=(0.8 * s, 0.8 * s, 0.8 * s, 0.2 * s),
                             jitter_p=0.8, gray_p=0.2, blur_p=0.5 if blur else 0.0), **overrides})


def mocov2_augment(size: int = 32, blur: bool = True, **overrides) -> Augment:
    """MoCo v2: crop scale (0.2, 1), jitter (0.4, 0.4, 0.4, 0.1) p=0.8, grayscale p=0.2, blur p=0.5."""
    return Augment(**{**dict(size=size, crop_scale=(0.2, 1.0), jitter=(0.4, 0.4, 0.4, 0.1), jitter_p=0.8,
                             gray_p=0.2, blur_p=0.5 if blur else 0.0), **overrides})


def byol_augment(size: int = 32, **overrides) -> tuple[Augment, Augment]:
    """BYOL's asymmetric pair: jitter (0.4, 0.4, 0.2, 0.1) p=0.8, grayscale p=0.2; view 1 always
    blurred, never solarized; view 2 blurred with p=0.1, solarized with p=0.2. (Grill et al. 2020, Table 6.)"""
    common = dict(size=size, crop_scale=(0.08, 1.0), jitter=(0.4, 0.4, 0.2, 0.1), jitter_p=0.8, gray_p=0.2)
    return (Augment(**{**common, "blur_p": 1.0, "solarize_p": 0.0, **overrides}),
            Augment(**{**common, "blur_p": 0.1, "solarize_p": 0.2, **overrides}))


class MultiCrop:
    """SwAV's multi-crop (Caron et al. 2020, Sec. 3.2): a few global views at full training
    resolution plus several small local views at low resolution, all from one uint8 batch and
    each with its own random parameters:

        views = multicrop(images)      # list of V = n_global + n_local tensors, (N, 3, s_v, s_v)

    The global views come first (SwAV computes codes on them only; DINO's teacher sees only
    them). `global_view` and `local_view` are `Augment` pipelines that differ in size and crop
    scale; the views of one size can be stacked into one forward pass.

    Built in: notebooks/10_swav.ipynb (used by 13_dino)
    """

    def __init__(self, global_view: Augment, n_global: int = 2, local_view: Augment | None = None,
                 n_local: int = 0):
        if n_global < 1 or n_local < 0:
            raise ValueError(f"need n_global >= 1 and n_local >= 0, got {n_global} and {n_local}")
        checks.positive_int(n_global, "MultiCrop: n_global")
        checks.positive_int(n_local, "MultiCrop: n_local", minimum=0)
        if n_local and local_view is None:
            raise ValueError(f"n_local={n_local} local views need a local_view pipeline (an Augment)")
        self.global_view, self.n_global = global_view, n_global
        self.local_view, self.n_local = local_view, n_local

    @property
    def sizes(self) -> list[int]:
        """The side of every view, in order: [global] * n_global + [local] * n_local."""
        local = [self.local_view.size] * self.n_local if self.local_view is not None else []
        return [self.global_view.size] * self.n_global + local

    def __call__(self, images: Tensor, generator=None, normalized: bool = True) -> list[Tensor]:
        views = [self.global_view(images, generator, normalized) for _ in range(self.n_global)]
        return views + [self.local_view(images, generator, normalized) for _ in range(self.n_local)]

    def __repr__(self) -> str:
        return f"MultiCrop({self.n_global}x{self.global_view.size}px + {self.n_local}x" \
               f"{self.local_view.size if self.local_view else 0}px)"


def swav_multicrop(global_size: int = 32, n_local: int = 0, local_size: int = 16,
                   global_scale=(0.14, 1.0), local_scale=(0.05, 0.14), **overrides) -> MultiCrop:
    """SwAV's multi-crop recipe on SimCLR's colour distortion (strength 0.5 for CIFAR, as
    solo-learn's CIFAR SwAV): global crops of scale (0.14, 1), local crops of scale (0.05, 0.14)
    (the authors' ImageNet values; their sizes 224 / 96 become `global_size` / `local_size`).
    `overrides` go to both pipelines (e.g. blur_p=0).

    Built in: notebooks/10_swav.ipynb
    """
    global_view = simclr_augment(global_size, crop_scale=global_scale, **overrides)
    local_view = simclr_augment(local_size, crop_scale=local_scale, **overrides) if n_local else None
    return MultiCrop(global_view, 2, local_view, n_local)


# ---------------------------------------------------------------- patch grid (CPC)

def patch_grid(x: Tensor, patch_size: int, stride: int) -> Tensor:
    """Cut every image into a grid of (overlapping) square patches, as CPC does.

    Patch (i, j) of image n is x[n, :, i*stride : i*stride + patch_size, j*stride : j*stride + patch_size].
    The grid must tile the image exactly: (H - patch_size) and (W - patch_size) divisible by
    stride, so that no border pixel is silently dropped. CPC on ImageNet: 256x256 images,
    64x64 patches, stride 32 -> a 7x7 grid; on CIFAR 32x32: 8x8 patches, stride 4 -> 7x7.
    Works on any dtype (uint8 or float) and device; returns a view-backed copy.
    (N, C, H, W) -> (N, R, S, C, patch_size, patch_size) with R = (H - patch_size) // stride + 1
    rows and S columns.

    Built in: notebooks/02_cpc.ipynb
    """
    if x.dim() != 4:
        raise ValueError(f"expected a batch of images (N, C, H, W), got shape {tuple(x.shape)}")
    h, w = x.shape[-2:]
    if not (isinstance(patch_size, int) and isinstance(stride, int) and patch_size >= 1 and stride >= 1):
        raise ValueError(f"patch_size and stride must be positive integers, got {patch_size!r} and {stride!r}")
    if patch_size > min(h, w):
        raise ValueError(f"patch_size {patch_size} is larger than the image ({h}x{w})")
    if (h - patch_size) % stride or (w - patch_size) % stride:
        raise ValueError(f"a grid of {patch_size}x{patch_size} patches with stride {stride} does not tile "
                         f"a {h}x{w} image: (H - patch_size) and (W - patch_size) must be divisible by stride")
    grid = x.unfold(2, patch_size, stride).unfold(3, patch_size, stride)  # (N, C, R, S, P, P)
    return grid.permute(0, 2, 3, 1, 4, 5).contiguous()                    # (N, R, S, C, P, P)
