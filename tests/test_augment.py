"""Tests for ssl_core.augment.

Oracles: torchvision.transforms.functional applied image by image (one image, one factor at a
time) is the trusted reference for every batched kernel. Invariants: shapes, dtype, range,
per-image independence, identity at zero strength, reproducibility. Clear errors for bad input.
"""
import math

import pytest
import torch
import torchvision.transforms as T
import torchvision.transforms.functional as TF

import ssl_core.augment as A
import ssl_core.color as C

N, S = 16, 32  # small batches keep the whole file fast on 2 CPU cores


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny batches gain nothing from intra-op threads, and on a shared CPU every multi-threaded
    op can wait for a descheduled OpenMP thread (this file: ~35 s with 2 threads, ~5 s with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def images(n: int = N, size: int = S, seed: int = 0) -> torch.Tensor:
    """(n, 3, size, size) float32 in [0, 1], random but reproducible."""
    return torch.rand(n, 3, size, size, generator=gen(seed))


def identical(n: int = N, size: int = S) -> torch.Tensor:
    """n copies of one random image, (n, 3, size, size)."""
    return images(1, size, seed=1).repeat(n, 1, 1, 1)


def per_image(fn, x, factors):
    """The torchvision reference: fn applied to one image and one float factor at a time."""
    return torch.stack([fn(img, float(f)) for img, f in zip(x, factors)])


def n_changed(y, x, tol=1e-4):
    return int(((y - x).abs().amax(dim=(1, 2, 3)) > tol).sum())


# ---------------------------------------------------------------- oracles vs torchvision

FACTORS = torch.tensor([0.0, 0.3, 0.5, 0.8, 1.0, 1.0, 1.2, 1.4, 1.6, 2.0, 0.1, 0.9, 1.1, 1.3, 0.6, 1.8])


@pytest.mark.parametrize("ours, theirs", [
    (C.adjust_brightness, TF.adjust_brightness),
    (C.adjust_contrast, TF.adjust_contrast),
    (C.adjust_saturation, TF.adjust_saturation),
])
def test_blend_adjustments_match_torchvision_per_image(ours, theirs):
    x = images()
    # atol 1e-4: our luma weights are (0.299, 0.587, 0.114), torchvision's (0.2989, 0.587, 0.114)
    torch.testing.assert_close(ours(x, FACTORS), per_image(theirs, x, FACTORS), atol=1e-4, rtol=0)


def test_adjust_hue_matches_torchvision_per_image():
    x = images()
    shifts = torch.linspace(-0.5, 0.5, N)
    torch.testing.assert_close(C.adjust_hue(x, shifts), per_image(TF.adjust_hue, x, shifts),
                               atol=1e-4, rtol=0)


def test_rgb_to_gray_matches_torchvision():
    x = images()
    # the red weight differs by 1e-4 (ITU-R 601 0.299 as PIL vs torchvision's 0.2989)
    torch.testing.assert_close(C.rgb_to_gray(x), TF.rgb_to_grayscale(x), atol=2e-4, rtol=0)


def test_random_grayscale_p1_matches_torchvision_3_channels():
    x = images()
    torch.testing.assert_close(A.random_grayscale(x, p=1.0, generator=gen()),
                               TF.rgb_to_grayscale(x, num_output_channels=3), atol=2e-4, rtol=0)


@pytest.mark.parametrize("sigma, kernel_size", [(0.5, 3), (1.5, 3), (1.0, 5), (2.0, 7)])
def test_gaussian_blur_fixed_sigma_matches_torchvision(sigma, kernel_size):
    x = images()
    ours = A.gaussian_blur(x, sigma=(sigma, sigma), p=1.0, kernel_size=kernel_size, generator=gen())
    theirs = TF.gaussian_blur(x, [kernel_size, kernel_size], [sigma, sigma])
    torch.testing.assert_close(ours, theirs, atol=1e-5, rtol=0)


def test_gaussian_blur_default_kernel_is_ten_percent_of_the_side_made_odd():
    for side, ks in ((32, 3), (96, 9)):
        x = images(2, side)
        ours = A.gaussian_blur(x, sigma=(1.0, 1.0), p=1.0, generator=gen())
        torch.testing.assert_close(ours, TF.gaussian_blur(x, [ks, ks], [1.0, 1.0]), atol=1e-5, rtol=0)


@pytest.mark.parametrize("threshold", [0.5, 0.3])
def test_solarize_p1_matches_torchvision(threshold):
    x = images()
    ours = A.random_solarize(x, p=1.0, threshold=threshold, generator=gen())
    torch.testing.assert_close(ours, TF.solarize(x, threshold), atol=0, rtol=0)


def test_normalize_matches_torchvision():
    x = images()
    ours = A.normalize(x, A.STL10_MEAN, A.STL10_STD)
    torch.testing.assert_close(ours, TF.normalize(x, A.STL10_MEAN, A.STL10_STD), atol=1e-6, rtol=1e-6)


def test_to_float_and_preprocess_match_torchvision():
    u8 = torch.randint(0, 256, (N, 3, S, S), dtype=torch.uint8, generator=gen())
    torch.testing.assert_close(A.to_float(u8), TF.convert_image_dtype(u8, torch.float32))
    torch.testing.assert_close(A.preprocess(u8), TF.normalize(u8.float() / 255, A.CIFAR10_MEAN, A.CIFAR10_STD))


def test_horizontal_flip_p1_is_flip_and_p0_is_identity():
    x = images()
    assert torch.equal(A.horizontal_flip(x, p=1.0, generator=gen()), x.flip(-1))
    assert torch.equal(A.horizontal_flip(x, p=0.0, generator=gen()), x)


# ---------------------------------------------------------------- crop geometry

def test_random_resized_crop_full_square_box_is_identity():
    x = images()
    y = A.random_resized_crop(x, S, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=gen())
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_random_resized_crop_of_a_constant_image_is_constant():
    # any padding (zeros, or samples from outside the image) would show up at the borders
    x = torch.full((64, 3, S, S), 0.7)
    y = A.random_resized_crop(x, S, scale=(0.08, 1.0), generator=gen())
    torch.testing.assert_close(y, x, atol=1e-6, rtol=0)


def test_random_resized_crop_keeps_orientation_and_stays_inside():
    # left half 0, right half 1: every crop row is non-decreasing left to right, in [0, 1];
    # small crops land entirely in one half or straddle the edge
    x = torch.zeros(200, 3, S, S)
    x[..., S // 2:] = 1.0
    y = A.random_resized_crop(x, 16, scale=(0.08, 0.2), generator=gen())
    assert (y.diff(dim=-1) >= -1e-6).all()
    assert y.min() >= 0 and y.max() <= 1
    means = y.mean(dim=(1, 2, 3))
    assert (means < 1e-6).any() and (means > 1 - 1e-6).any()               # all-left and all-right
    assert ((means > 0.05) & (means < 0.95)).any()                         # straddling the edge


def crop_boxes(size_in: int, size_out: int, n: int, **kw):
    """Crop ramps, read back each box (x0, y0, bw, bh) in input pixels, (n,) each.

    Channel 0 is the horizontal ramp (j + 0.5) / W, channel 1 the vertical one: bilinear
    sampling of a linear ramp is exact, so output column k reads (x0 + (k + 0.5) bw / size) / W
    away from the borders; columns at a quarter and three quarters of the output are interior.
    """
    r = (torch.arange(size_in) + 0.5) / size_in
    x = torch.stack([r.view(1, -1).expand(size_in, -1), r.view(-1, 1).expand(-1, size_in),
                     torch.full((size_in, size_in), 0.5)]).expand(n, -1, -1, -1)
    y = A.random_resized_crop(x, size_out, generator=gen(), **kw)
    k0, k1 = size_out // 4, size_out - 1 - size_out // 4
    c = size_out // 2
    bw = (y[:, 0, c, k1] - y[:, 0, c, k0]) * size_in * size_out / (k1 - k0)
    bh = (y[:, 1, k1, c] - y[:, 1, k0, c]) * size_in * size_out / (k1 - k0)
    x0 = y[:, 0, c, k0] * size_in - (k0 + 0.5) * bw / size_out
    y0 = y[:, 1, k0, c] * size_in - (k0 + 0.5) * bh / size_out
    return x0, y0, bw, bh


@pytest.mark.parametrize("scale, ratio", [((0.08, 1.0), (3 / 4, 4 / 3)), ((0.2, 0.5), (0.5, 2.0))])
def test_random_resized_crop_boxes_follow_scale_and_ratio(scale, ratio):
    side, n = 32, 2000
    x0, y0, bw, bh = crop_boxes(side, 16, n, scale=scale, ratio=ratio)
    tol = 1e-3
    assert (x0 >= -tol).all() and (y0 >= -tol).all()                       # inside the image
    assert (x0 + bw <= side + tol).all() and (y0 + bh <= side + tol).all()
    area = bw * bh / side**2
    fallback = (area > 1 - tol)                                            # whole image if no try fits
    assert ((area >= scale[0] - tol) & (area <= scale[1] + tol) | fallback).all()
    assert ((bw / bh >= ratio[0] - tol) & (bw / bh <= ratio[1] + tol) | fallback).all()
    # per-image boxes: positions and sizes spread over their ranges
    assert x0.std() > 1 and y0.std() > 1 and area.std() > 0.05
    # same distribution of box areas as torchvision's RandomResizedCrop (integer boxes)
    torch.manual_seed(0)
    tv = torch.tensor([math.prod(T.RandomResizedCrop.get_params(torch.empty(3, side, side), scale, ratio)[2:])
                       for _ in range(n)], dtype=torch.float32) / side**2
    assert abs(area.mean() - tv.mean()) < 0.04


# ---------------------------------------------------------------- distributions against torchvision
# The batched kernels draw their own parameters; these tests compare the DISTRIBUTIONS they draw with
# torchvision's per-image transforms (two-sample Kolmogorov-Smirnov distance, 4,000 draws each, fixed
# seeds), and each has a negative control: a real difference of the size a recipe typo would make
# (another scale, ratio or strength) must be caught at the same tolerance. Measured when written:
# matched pairs 0.013-0.034, controls 0.070-0.46. (At 32 px torchvision rounds boxes to whole pixels,
# which shifts the mean box area by about 0.01 of the image; the box test uses 224 px to see the sampler.)

KS_TOL = 0.045          # ~ the 99.9% critical value for 4,000 + 4,000 draws


def ks_distance(a: torch.Tensor, b: torch.Tensor) -> float:
    """max |F_a(t) - F_b(t)| over the pooled sample: the two-sample Kolmogorov-Smirnov statistic."""
    a, b = a.flatten().sort().values, b.flatten().sort().values
    t = torch.cat([a, b])
    fa = torch.searchsorted(a, t, right=True) / len(a)
    fb = torch.searchsorted(b, t, right=True) / len(b)
    return (fa - fb).abs().max().item()


def test_ks_distance_against_a_loop():
    a, b = torch.tensor([0.1, 0.4, 0.5]), torch.tensor([0.2, 0.3, 0.45, 0.9])
    grid = torch.linspace(0, 1, 1001)
    naive = max(abs((a <= t).float().mean() - (b <= t).float().mean()).item() for t in grid)
    assert ks_distance(a, b) == pytest.approx(naive)


@pytest.mark.parametrize("scale, ratio, same", [
    ((0.08, 1.0), (3 / 4, 4 / 3), True),
    ((0.14, 1.0), (3 / 4, 4 / 3), False),       # control: another scale
    ((0.08, 1.0), (0.8, 1.25), False),          # control: another ratio
])
def test_crop_box_distribution_matches_torchvision(scale, ratio, same):
    side, n = 224, 4000
    x0, y0, bw, bh = crop_boxes(side, 16, n, scale=scale, ratio=ratio)
    torch.manual_seed(0)
    params = [T.RandomResizedCrop.get_params(torch.empty(3, side, side), (0.08, 1.0), (3 / 4, 4 / 3)) for _ in range(n)]
    tv_h, tv_w = (torch.tensor([p[k] for p in params], dtype=torch.float32) for k in (2, 3))
    d_area = ks_distance(bw * bh / side**2, tv_w * tv_h / side**2)
    d_ratio = ks_distance((bw / bh).log(), (tv_w / tv_h).log())
    if same:
        assert d_area < KS_TOL and d_ratio < KS_TOL, (d_area, d_ratio)
    else:
        assert max(d_area, d_ratio) > KS_TOL, (d_area, d_ratio)


def _jitter_readout(kind: str, n: int):
    """(images, read) for one colour op: images on which the op's random factor can be read back exactly."""
    if kind == "brightness":                                     # grey 0.5 -> 0.5 f
        return torch.full((n, 3, 2, 2), 0.5), lambda y: y[:, 0, 0, 0] / 0.5
    if kind == "contrast":                                       # rows 0.75 / 0.25 -> their gap times f
        x = torch.full((n, 3, 2, 2), 0.25)
        x[:, :, 0] = 0.75
        return x, lambda y: (y[:, 0, 0, 0] - y[:, 0, 1, 0]) / 0.5
    colour = torch.tensor([0.6, 0.4, 0.2]).view(1, 3, 1, 1).expand(n, 3, 2, 2).clone()
    if kind == "saturation":                                     # R - G gap times f
        return colour, lambda y: (y[:, 0, 0, 0] - y[:, 1, 0, 0]) / 0.2
    h0 = C.rgb_to_hsv(colour[:1])[0, 0, 0, 0]                    # hue: the shift, wrapped to [-0.5, 0.5)
    return colour, lambda y: (C.rgb_to_hsv(y)[:, 0, 0, 0] - h0 + 0.5) % 1.0 - 0.5


@pytest.mark.parametrize("kind, ours, theirs", [
    ("brightness", 0.4, 0.4), ("contrast", 0.4, 0.4), ("saturation", 0.4, 0.4), ("hue", 0.1, 0.1),
    ("brightness", 0.5, 0.4), ("contrast", 0.3, 0.4), ("saturation", 0.2, 0.4), ("hue", 0.08, 0.1),   # controls
])
def test_color_jitter_factor_distribution_matches_torchvision(kind, ours, theirs):
    n = 4000
    x, read = _jitter_readout(kind, n)
    off = dict(brightness=0, contrast=0, saturation=0, hue=0)
    mine = read(A.color_jitter(x, **{**off, kind: ours}, p=1.0, generator=gen()))
    torch.manual_seed(1)
    tv = T.ColorJitter(**{kind: theirs})
    reference = read(torch.stack([tv(image) for image in x]))
    distance = ks_distance(mine, reference)
    assert (distance < KS_TOL) == (ours == theirs), distance


def test_random_resized_crop_to_another_size():
    x = images(4, 96)
    assert A.random_resized_crop(x, 64, generator=gen()).shape == (4, 3, 64, 64)
    assert A.random_resized_crop(images(4, 32), 48, generator=gen()).shape == (4, 3, 48, 48)


# ---------------------------------------------------------------- HSV

def test_rgb_hsv_round_trip():
    x = images()
    hsv = C.rgb_to_hsv(x)
    assert hsv.shape == x.shape and hsv.min() >= 0 and hsv.max() <= 1
    torch.testing.assert_close(C.hsv_to_rgb(hsv), x, atol=1e-5, rtol=0)


@pytest.mark.parametrize("rgb, hsv", [
    ((1, 0, 0), (0, 1, 1)), ((0, 1, 0), (1 / 3, 1, 1)), ((0, 0, 1), (2 / 3, 1, 1)),
    ((1, 1, 0), (1 / 6, 1, 1)), ((0, 1, 1), (1 / 2, 1, 1)), ((1, 0, 1), (5 / 6, 1, 1)),
    ((0.5, 0.5, 0.5), (0, 0, 0.5)), ((0, 0, 0), (0, 0, 0)), ((1, 1, 1), (0, 0, 1)),
    ((0.5, 0.25, 0.25), (0, 0.5, 0.5)),
])
def test_rgb_to_hsv_known_colours(rgb, hsv):
    x = torch.tensor(rgb, dtype=torch.float32).view(1, 3, 1, 1)
    expected = torch.tensor(hsv, dtype=torch.float32).view(1, 3, 1, 1)
    torch.testing.assert_close(C.rgb_to_hsv(x), expected, atol=1e-6, rtol=0)
    torch.testing.assert_close(C.hsv_to_rgb(expected), x, atol=1e-6, rtol=0)


# ---------------------------------------------------------------- shapes, dtype, range

KERNELS = {
    "crop": lambda x, g: A.random_resized_crop(x, S, generator=g),
    "flip": lambda x, g: A.horizontal_flip(x, generator=g),
    "jitter": lambda x, g: A.color_jitter(x, 0.8, 0.8, 0.8, 0.5, p=1.0, generator=g),
    "gray": lambda x, g: A.random_grayscale(x, p=0.5, generator=g),
    "blur": lambda x, g: A.gaussian_blur(x, p=1.0, generator=g),
    "solarize": lambda x, g: A.random_solarize(x, p=0.5, generator=g),
}


@pytest.mark.parametrize("name", KERNELS)
def test_kernel_keeps_shape_dtype_and_range(name):
    x = images()
    y = KERNELS[name](x, gen())
    assert y.shape == x.shape and y.dtype == torch.float32
    assert y.min() >= 0 and y.max() <= 1


RECIPES = {
    "instdisc": A.instdisc_augment(),
    "simclr": A.simclr_augment(),
    "simclr_blur": A.simclr_augment(blur=True),
    "mocov2": A.mocov2_augment(),
    "byol_1": A.byol_augment()[0],
    "byol_2": A.byol_augment()[1],
    "stl_96_to_64": A.simclr_augment(size=64, mean=A.STL10_MEAN, std=A.STL10_STD),
}


@pytest.mark.parametrize("name", RECIPES)
def test_recipe_views_shape_dtype_range(name):
    aug = RECIPES[name]
    side = 96 if aug.size == 64 else S
    u8 = torch.randint(0, 256, (N, 3, side, side), dtype=torch.uint8, generator=gen())
    views = aug(u8, gen(3), normalized=False)
    assert views.shape == (N, 3, aug.size, aug.size) and views.dtype == torch.float32
    assert views.min() >= 0 and views.max() <= 1
    # normalised views are exactly normalize() of the [0, 1] views drawn with the same seed
    torch.testing.assert_close(aug(u8, gen(3)), A.normalize(views, aug.mean, aug.std))


def test_recipes_carry_the_paper_values():
    assert A.simclr_augment().jitter == pytest.approx((0.4, 0.4, 0.4, 0.1))      # s = 0.5
    assert A.simclr_augment(strength=1.0).jitter == pytest.approx((0.8, 0.8, 0.8, 0.2))
    one, two = A.byol_augment()
    assert (one.blur_p, one.solarize_p, two.blur_p, two.solarize_p) == (1.0, 0.0, 0.1, 0.2)
    assert A.mocov2_augment().crop_scale == (0.2, 1.0) and A.mocov2_augment().blur_p == 0.5
    assert A.instdisc_augment(gray_p=0.0).gray_p == 0.0                         # overrides win


# ---------------------------------------------------------------- per-image independence

def pairwise_distinct(y, tol=1e-4):
    flat = y.flatten(1)
    d = torch.cdist(flat, flat, p=float("inf"))
    return bool((d + torch.eye(len(y)) * 1e9 > tol).all())


@pytest.mark.parametrize("name", ["crop", "jitter", "blur"])
def test_identical_images_get_different_random_parameters(name):
    x = identical()
    assert pairwise_distinct(KERNELS[name](x, gen()))


@pytest.mark.parametrize("kernel", [
    lambda x, g: A.horizontal_flip(x, p=0.5, generator=g),
    lambda x, g: A.color_jitter(x, p=0.5, generator=g),
    lambda x, g: A.random_grayscale(x, p=0.5, generator=g),
    lambda x, g: A.gaussian_blur(x, sigma=(1.0, 2.0), p=0.5, generator=g),
    lambda x, g: A.random_solarize(x, p=0.5, generator=g),
], ids=["flip", "jitter", "gray", "blur", "solarize"])
def test_probability_half_changes_about_half_the_images(kernel):
    x = identical(200, 8)
    changed = n_changed(kernel(x, gen(5)), x)
    assert 60 <= changed <= 140


def test_color_jitter_order_is_random_per_image():
    """Brightness b and contrast c commute unless brightening clips, so on a gray image with
    white pixels, b-then-c and c-then-b give different images when b > 1.

    (Contrast > 1 clips the white pixels too, which matters when b < 1 comes after it.)
    Two never-clipping pixels (0.3 and 0.4) give the overall affine map y = alpha v + beta, with
    alpha = b c; each order then gives (b, c) in closed form:
      c then b: beta = b (1 - c) m0, m0 = mean of the input
      b then c: beta = (1 - c) m1, m1 = mean after brightening = b m0 if b <= 1, else
                q + r b (white clipped at 1)
    Every image must be reproduced exactly by one of the two orders with factors in
    [0.5, 1.5], and the batch must contain images that only one order explains, of each kind.
    """
    n = 64
    v = torch.tensor([1.0] * 16 + [0.3] * 24 + [0.4] * 24).view(1, 1, 8, 8).expand(n, 3, 8, 8).contiguous()
    q, r = 16 / 64, (24 * 0.3 + 24 * 0.4) / 64
    y = A.color_jitter(v, brightness=0.5, contrast=0.5, saturation=0.0, hue=0.0, p=1.0, generator=gen(2))
    lo, hi = y[:, 0, 2, 0], y[:, 0, 5, 0]                                 # a 0.3 and a 0.4 pixel
    alpha = (hi - lo) / 0.1
    beta = lo - 0.3 * alpha
    m0 = C.rgb_to_gray(v).mean(dim=(1, 2, 3))
    b_cb = beta / m0 + alpha
    c_cb = alpha / b_cb
    bq = q - alpha * r - beta                                              # r b^2 + bq b - alpha q = 0
    b_bc = (-bq + (bq**2 + 4 * r * alpha * q).sqrt()) / (2 * r)
    c_bc = alpha / b_bc
    def explains(prediction):
        return (prediction - y).abs().amax(dim=(1, 2, 3)) < 1e-4

    cb = explains(C.adjust_brightness(C.adjust_contrast(v, c_cb), b_cb))
    bc_dim = explains(C.adjust_contrast(C.adjust_brightness(v, b_cb), c_cb)) & (b_cb <= 1)
    bc_bright = explains(C.adjust_contrast(C.adjust_brightness(v, b_bc), c_bc)) & (b_bc > 1)
    bc = bc_dim | bc_bright
    assert (cb | bc).all()
    assert (cb & ~bc).sum() >= 5 and (bc & ~cb).sum() >= 5
    b = torch.where(cb | bc_dim, b_cb, b_bc)
    c = torch.where(cb | bc_dim, c_cb, c_bc)
    for f in (b, c):                                                       # factors ~ U[0.5, 1.5]
        assert f.min() >= 0.5 - 1e-3 and f.max() <= 1.5 + 1e-3
        assert f.min() < 0.65 and f.max() > 1.35


def test_expanded_batch_of_one_image_works_like_a_copied_one():
    one = images(1)
    for name, kernel in KERNELS.items():
        torch.testing.assert_close(kernel(one.expand(N, -1, -1, -1), gen()), kernel(one.repeat(N, 1, 1, 1), gen()),
                                   msg=name)


# ---------------------------------------------------------------- zero strength is the identity

@pytest.mark.parametrize("kernel, atol", [
    (lambda x, g: A.color_jitter(x, 0.0, 0.0, 0.0, 0.0, p=1.0, generator=g), 1e-6),
    (lambda x, g: A.color_jitter(x, p=0.0, generator=g), 1e-6),
    (lambda x, g: A.random_grayscale(x, p=0.0, generator=g), 0.0),
    (lambda x, g: A.gaussian_blur(x, p=0.0, generator=g), 0.0),
    (lambda x, g: A.gaussian_blur(x, p=0.0, kernel_size=7, generator=g), 0.0),
    (lambda x, g: A.random_solarize(x, p=0.0, generator=g), 0.0),
    (lambda x, g: A.horizontal_flip(x, p=0.0, generator=g), 0.0),
    (lambda x, g: A.random_resized_crop(x, S, scale=(1.0, 1.0), ratio=(1.0, 1.0), generator=g), 1e-6),
], ids=["jitter_0", "jitter_p0", "gray_p0", "blur_p0", "blur_p0_k7", "solarize_p0", "flip_p0", "crop_full"])
def test_zero_strength_or_probability_is_identity(kernel, atol):
    x = images()
    torch.testing.assert_close(kernel(x, gen()), x, atol=atol, rtol=0)


def test_augment_with_every_step_off_is_preprocess():
    off = A.Augment(crop_scale=(1.0, 1.0), crop_ratio=(1.0, 1.0), flip_p=0.0, jitter=(0, 0, 0, 0),
                    gray_p=0.0, blur_p=0.0, solarize_p=0.0)
    u8 = torch.randint(0, 256, (N, 3, S, S), dtype=torch.uint8, generator=gen())
    torch.testing.assert_close(off(u8, gen()), A.preprocess(u8), atol=1e-5, rtol=0)


# ---------------------------------------------------------------- reproducibility

FULL = A.Augment(blur_p=0.5, solarize_p=0.5)


def test_same_seed_same_views_different_seed_different_views():
    u8 = torch.randint(0, 256, (N, 3, S, S), dtype=torch.uint8, generator=gen())
    assert torch.equal(FULL(u8, gen(7)), FULL(u8, gen(7)))
    assert not torch.allclose(FULL(u8, gen(7)), FULL(u8, gen(8)))
    g = gen(7)
    assert not torch.allclose(FULL(u8, g), FULL(u8, g))                  # the generator advances


def test_default_global_rng_is_used_and_seedable():
    u8 = torch.randint(0, 256, (N, 3, S, S), dtype=torch.uint8, generator=gen())
    torch.manual_seed(11)
    first = FULL(u8)
    torch.manual_seed(11)
    assert torch.equal(FULL(u8), first)
    assert not torch.allclose(FULL(u8), first)


# ---------------------------------------------------------------- clear errors

@pytest.mark.parametrize("name", KERNELS)
def test_uint8_to_a_float_kernel_says_to_use_to_float(name):
    u8 = torch.zeros(2, 3, S, S, dtype=torch.uint8)
    with pytest.raises(TypeError, match="to_float"):
        KERNELS[name](u8, gen())


@pytest.mark.parametrize("shape", [(3, S, S), (2, 1, S, S), (2, 4, S, S), (2, 3, S)])
@pytest.mark.parametrize("name", KERNELS)
def test_wrong_shape_is_a_value_error(name, shape):
    with pytest.raises(ValueError, match=r"\(N, 3, H, W\)"):
        KERNELS[name](torch.zeros(shape), gen())


def test_augment_wants_uint8_and_to_float_rejects_float():
    with pytest.raises(TypeError, match="uint8"):
        A.simclr_augment()(images(), gen())
    with pytest.raises(TypeError, match="uint8"):
        A.to_float(images())


@pytest.mark.parametrize("kernel_size", [2, 4])
def test_even_blur_kernel_is_a_value_error(kernel_size):
    with pytest.raises(ValueError, match="odd"):
        A.gaussian_blur(images(2), p=1.0, kernel_size=kernel_size, generator=gen())


# ---------------------------------------------------------------- patch grid (CPC)

def naive_patch_grid(x, p, s):
    """Oracle: an explicit loop over grid positions, slicing each patch out."""
    n, c, h, w = x.shape
    rows, cols = (h - p) // s + 1, (w - p) // s + 1
    out = torch.empty(n, rows, cols, c, p, p, dtype=x.dtype)
    for i in range(rows):
        for j in range(cols):
            out[:, i, j] = x[:, :, i * s:i * s + p, j * s:j * s + p]
    return out


@pytest.mark.parametrize("p, s, size", [(8, 4, 32), (16, 8, 32), (4, 4, 16), (3, 1, 7)])
def test_patch_grid_matches_slicing_loop(p, s, size):
    x = images(3, size)
    torch.testing.assert_close(A.patch_grid(x, p, s), naive_patch_grid(x, p, s), rtol=0, atol=0)


def test_patch_grid_cpc_geometry_and_uint8():
    u8 = (images(2, 32) * 255).to(torch.uint8)
    grid = A.patch_grid(u8, 8, 4)
    assert grid.shape == (2, 7, 7, 3, 8, 8) and grid.dtype == torch.uint8
    assert torch.equal(grid[1, 6, 6], u8[1, :, 24:, 24:])             # last patch: bottom-right corner
    assert torch.equal(grid[0, 0, 1, :, :, :4], grid[0, 0, 0, :, :, 4:])  # 50% overlap of neighbours
    assert A.patch_grid(torch.zeros(1, 3, 256, 256), 64, 32).shape[1:3] == (7, 7)   # the paper's grid


@pytest.mark.parametrize("p, s, match", [(8, 5, "does not tile"), (40, 4, "larger than"),
                                         (0, 4, "positive integers"), (8, 0, "positive integers")])
def test_patch_grid_bad_sizes_are_value_errors(p, s, match):
    with pytest.raises(ValueError, match=match):
        A.patch_grid(images(1, 32), p, s)


def test_patch_grid_wants_a_batch():
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        A.patch_grid(torch.zeros(3, 32, 32), 8, 4)


# --- multi-crop (SwAV, DINO) ---------------------------------------------------------------------

def test_multicrop_returns_global_then_local_views_of_their_sizes():
    images = torch.randint(0, 256, (6, 3, 32, 32), dtype=torch.uint8)
    mc = A.swav_multicrop(global_size=24, n_local=3, local_size=12)
    views = mc(images, torch.Generator().manual_seed(0))
    assert mc.sizes == [24, 24, 12, 12, 12] and [v.shape[-1] for v in views] == mc.sizes
    assert all(v.shape[:2] == (6, 3) and v.dtype == torch.float32 for v in views)
    assert mc.global_view.crop_scale == (0.14, 1.0) and mc.local_view.crop_scale == (0.05, 0.14)
    assert not torch.equal(views[0], views[1]) and not torch.equal(views[2], views[3])  # fresh draws per view


def test_multicrop_without_local_views_and_errors():
    mc = A.swav_multicrop(global_size=16)
    assert mc.sizes == [16, 16] and len(mc(torch.zeros(2, 3, 32, 32, dtype=torch.uint8))) == 2
    with pytest.raises(ValueError, match="local_view"):
        A.MultiCrop(A.simclr_augment(16), 2, None, n_local=2)
    with pytest.raises(ValueError, match="n_global >= 1"):
        A.MultiCrop(A.simclr_augment(16), 0)


def test_preprocess_at_resizes_the_whole_image_after_normalising():
    from ssl_core.augment import preprocess, preprocess_at
    images = torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8)
    torch.testing.assert_close(preprocess_at(32)(images), preprocess(images))           # no resize at the stored size
    x = preprocess(images)
    # 32 -> 16 with antialiasing: a triangle filter stretched by the factor 2, weights 1, 3, 3, 1 (/ 8) on
    # input pixels 2i-1 .. 2i+2, renormalised where the image ends; separable, one 1-D matrix per axis
    M = torch.zeros(16, 32)
    for i in range(16):
        for j in range(32):
            M[i, j] = max(0.0, 1 - abs(j - (2 * i + 0.5)) / 2)
    M = M / M.sum(1, keepdim=True)
    reference = torch.einsum("ih,nchw,jw->ncij", M, x, M)
    torch.testing.assert_close(preprocess_at(16)(images), reference, atol=1e-5, rtol=1e-5)
    assert preprocess_at(24)(images).shape == (3, 3, 24, 24)
    with pytest.raises(TypeError):
        preprocess_at(24.0)
