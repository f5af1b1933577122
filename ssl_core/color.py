"""Colour on batches: the per-image colour adjustments that colour jitter draws, and the colour
spaces the papers use (HSV for hue, CIE L*a*b* for CMC's two views). Deterministic functions of
a float batch (N, 3, H, W) in [0, 1] and per-image factors (N,); the random draws live in
`ssl_core.augment` (color_jitter, random_grayscale).

Infrastructure (used through augment by every notebook); Lab built in notebooks/04_cmc.ipynb.
"""
from __future__ import annotations

import torch

Tensor = torch.Tensor

GRAY_WEIGHTS = (0.299, 0.587, 0.114)  # ITU-R 601 luma, as PIL (torchvision's tensor path: 0.2989)


def _check_batch(x: Tensor, what: str = "RGB images") -> None:
    """x must be a float batch (N, 3, H, W); the one input check of color and augment."""
    if x.dim() != 4 or x.shape[1] != 3:
        raise ValueError(f"expected a batch of {what} (N, 3, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        raise TypeError(f"expected float {what}, got {x.dtype}; convert uint8 images with augment.to_float")


def rgb_to_gray(x: Tensor) -> Tensor:
    """(N, 3, H, W) -> (N, 1, H, W) luma."""
    w = torch.as_tensor(GRAY_WEIGHTS, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    return (x * w).sum(dim=1, keepdim=True)


def _blend(x: Tensor, other: Tensor, factor: Tensor) -> Tensor:
    """factor * x + (1 - factor) * other, clamped to [0, 1]; factor (N,)."""
    f = factor.view(-1, 1, 1, 1)
    return (f * x + (1 - f) * other).clamp_(0, 1)


def adjust_brightness(x: Tensor, factor: Tensor) -> Tensor:
    """Scale intensities by factor (N,): 0 gives black, 1 the identity."""
    return (x * factor.view(-1, 1, 1, 1)).clamp_(0, 1)


def adjust_contrast(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the image's mean gray level: 0 gives flat gray, 1 the identity."""
    mean = rgb_to_gray(x).mean(dim=(1, 2, 3), keepdim=True)             # (N, 1, 1, 1)
    return _blend(x, mean, factor)


def adjust_saturation(x: Tensor, factor: Tensor) -> Tensor:
    """Blend with the grayscale image: 0 gives gray, 1 the identity."""
    return _blend(x, rgb_to_gray(x), factor)


def rgb_to_hsv(x: Tensor) -> Tensor:
    """(N, 3, H, W) RGB in [0, 1] -> HSV in [0, 1] (hue as a fraction of a turn)."""
    r, g, b = x.unbind(1)
    maxc = x.amax(dim=1)                                               # (N, H, W)
    minc = x.amin(dim=1)
    delta = maxc - minc
    s = delta / torch.where(maxc > 0, maxc, torch.ones_like(maxc))
    d = torch.where(delta > 0, delta, torch.ones_like(delta))
    rc, gc, bc = (maxc - r) / d, (maxc - g) / d, (maxc - b) / d
    h = torch.where(maxc == r, bc - gc, torch.where(maxc == g, 2.0 + rc - bc, 4.0 + gc - rc))
    h = torch.where(delta > 0, (h / 6.0) % 1.0, torch.zeros_like(h))
    return torch.stack([h, s, maxc], dim=1)


def hsv_to_rgb(hsv: Tensor) -> Tensor:
    """Inverse of rgb_to_hsv: channel c = V - V S clamp(min(k, 4 - k), 0, 1), k = (n_c + 6H) mod 6."""
    h, s, v = hsv.unbind(1)
    n = torch.tensor([5.0, 3.0, 1.0], device=hsv.device, dtype=hsv.dtype).view(1, 3, 1, 1)
    k = (n + 6.0 * h.unsqueeze(1)) % 6.0                               # (N, 3, H, W)
    return v.unsqueeze(1) - (v * s).unsqueeze(1) * torch.minimum(k, 4.0 - k).clamp(0, 1)


# sRGB (IEC 61966-2-1) with the D65 white point <-> CIE 1976 L*a*b* (CMC's two views: L and ab)
SRGB_TO_XYZ = ((0.4124564, 0.3575761, 0.1804375),
               (0.2126729, 0.7151522, 0.0721750),
               (0.0193339, 0.1191920, 0.9503041))
D65_WHITE = (0.95047, 1.0, 1.08883)                                    # XYZ of the reference white
LAB_RANGE = ((0.0, 100.0), (-86.183, 98.233), (-107.857, 94.478))      # L, a, b over the sRGB gamut
_LAB_DELTA = 6.0 / 29.0


def rgb_to_lab(x: Tensor) -> Tensor:
    """(N, 3, H, W) sRGB in [0, 1] -> CIE L*a*b* (N, 3, H, W), D65 white, the sRGB gamma.

    1. undo the sRGB gamma: c_lin = c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055)^2.4
    2. linear RGB -> XYZ with SRGB_TO_XYZ, divided by the white point D65_WHITE
    3. f(t) = t^(1/3) if t > (6/29)^3 else t / (3 (6/29)^2) + 4/29, and
       L = 116 f(Y) - 16,  a = 500 (f(X) - f(Y)),  b = 200 (f(Y) - f(Z)).
    L lies in [0, 100] (black 0, white 100); a (green- to red+) and b (blue- to yellow+) within
    LAB_RANGE for sRGB colours; grays have a = b = 0. Inputs are not range-checked.

    Built in: notebooks/04_cmc.ipynb
    """
    _check_batch(x)
    lin = torch.where(x <= 0.04045, x / 12.92, ((x.clamp(min=0.04045) + 0.055) / 1.055) ** 2.4)
    m = torch.as_tensor(SRGB_TO_XYZ, device=x.device, dtype=x.dtype)                  # (3, 3)
    white = torch.as_tensor(D65_WHITE, device=x.device, dtype=x.dtype).view(1, 3, 1, 1)
    t = torch.einsum("ij,njhw->nihw", m, lin) / white                                 # (N, 3, H, W) X/Xn, Y/Yn, Z/Zn
    eps = _LAB_DELTA ** 3
    f = torch.where(t > eps, t.clamp(min=eps) ** (1.0 / 3.0), t / (3 * _LAB_DELTA ** 2) + 4.0 / 29.0)
    fx, fy, fz = f.unbind(1)
    return torch.stack([116.0 * fy - 16.0, 500.0 * (fx - fy), 200.0 * (fy - fz)], dim=1)


def lab_to_rgb(lab: Tensor, clamp: bool = True) -> Tensor:
    """Inverse of rgb_to_lab: (N, 3, H, W) L*a*b* -> sRGB in [0, 1] (clamp=False keeps colours
    outside the sRGB gamut unclipped). Built in: notebooks/04_cmc.ipynb"""
    _check_batch(lab, "Lab images")
    L, a, b = lab.unbind(1)
    fy = (L + 16.0) / 116.0
    f = torch.stack([fy + a / 500.0, fy, fy - b / 200.0], dim=1)                       # (N, 3, H, W)
    t = torch.where(f > _LAB_DELTA, f ** 3, 3 * _LAB_DELTA ** 2 * (f - 4.0 / 29.0))
    white = torch.as_tensor(D65_WHITE, device=lab.device, dtype=lab.dtype).view(1, 3, 1, 1)
    m_inv = torch.linalg.inv(torch.as_tensor(SRGB_TO_XYZ, device=lab.device, dtype=torch.float64)).to(lab.dtype)
    lin = torch.einsum("ij,njhw->nihw", m_inv, t * white)                             # linear RGB
    rgb = torch.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin.clamp(min=0.0031308) ** (1 / 2.4) - 0.055)
    return rgb.clamp(0, 1) if clamp else rgb


def lab_split(x: Tensor) -> tuple[Tensor, Tensor]:
    """CMC's two views of one RGB batch: (N, 3, H, W) sRGB in [0, 1] -> L (N, 1, H, W) and
    ab (N, 2, H, W), each channel mapped linearly from its LAB_RANGE onto [-1, 1]
    (as the CMC authors' code normalises: mean and std = centre and half-width of the range).

    Built in: notebooks/04_cmc.ipynb
    """
    lab = rgb_to_lab(x)
    lo, hi = torch.tensor(LAB_RANGE, device=x.device, dtype=x.dtype).unbind(1)         # (3,), (3,)
    scaled = (lab - ((lo + hi) / 2).view(1, 3, 1, 1)) / ((hi - lo) / 2).view(1, 3, 1, 1)
    return scaled[:, :1], scaled[:, 1:]                                                # (N,1,H,W), (N,2,H,W)


def adjust_hue(x: Tensor, shift: Tensor) -> Tensor:
    """Rotate the hue by shift (N,), in turns (0.5 = opposite colour)."""
    hsv = rgb_to_hsv(x)
    hue = (hsv[:, 0] + shift.view(-1, 1, 1)) % 1.0
    return hsv_to_rgb(torch.stack([hue, hsv[:, 1], hsv[:, 2]], dim=1))
