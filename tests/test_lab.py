"""rgb_to_lab / lab_to_rgb / lab_split (notebook 04, CMC): known colours, a per-pixel loop written
from the CIE formulas, round trips, the gamut range, and clear errors."""
import math

import pytest
import torch

from ssl_core.color import LAB_RANGE, lab_split, lab_to_rgb, rgb_to_lab


def pixels(*rgb):
    """(N, 3, 1, 1) batch of single-pixel images."""
    return torch.tensor(rgb, dtype=torch.float32).view(len(rgb), 3, 1, 1)


def naive_lab(r, g, b):
    """One pixel, straight from the sRGB and CIE 1976 definitions, in plain Python floats."""
    def linear(c):
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = linear(r), linear(g), linear(b)
    X = (0.4124564 * r + 0.3575761 * g + 0.1804375 * b) / 0.95047
    Y = (0.2126729 * r + 0.7151522 * g + 0.0721750 * b) / 1.0
    Z = (0.0193339 * r + 0.1191920 * g + 0.9503041 * b) / 1.08883

    def f(t):
        d = 6 / 29
        return t ** (1 / 3) if t > d ** 3 else t / (3 * d * d) + 4 / 29

    return 116 * f(Y) - 16, 500 * (f(X) - f(Y)), 200 * (f(Y) - f(Z))


@pytest.mark.parametrize("rgb, lab", [
    ((1.0, 1.0, 1.0), (100.0, 0.0, 0.0)),          # white
    ((0.0, 0.0, 0.0), (0.0, 0.0, 0.0)),            # black
    ((1.0, 0.0, 0.0), (53.24, 80.09, 67.20)),      # sRGB red, D65
    ((0.0, 1.0, 0.0), (87.73, -86.18, 83.18)),     # green
    ((0.0, 0.0, 1.0), (32.30, 79.19, -107.86)),    # blue
])
def test_known_colours(rgb, lab):
    torch.testing.assert_close(rgb_to_lab(pixels(rgb)).flatten(), torch.tensor(lab), atol=0.01, rtol=0)


def test_grays_have_no_colour_and_L_grows():
    lab = rgb_to_lab(pixels(*[(v, v, v) for v in (0.01, 0.2, 0.5, 0.8)])).flatten(1)   # (4, 3)
    torch.testing.assert_close(lab[:, 1:], torch.zeros(4, 2), atol=1e-4, rtol=0)
    assert (lab[1:, 0] > lab[:-1, 0]).all()
    assert abs(lab[2, 0].item() - 53.39) < 0.01                                          # mid gray


def test_matches_per_pixel_loop():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(2, 3, 5, 4, generator=g, dtype=torch.float64)
    x[0, :, 0, 0] = torch.tensor([0.01, 0.02, 0.03])        # dark pixel: linear branches of both formulas
    lab = rgb_to_lab(x)
    for n in range(2):
        for i in range(5):
            for j in range(4):
                expected = torch.tensor(naive_lab(*x[n, :, i, j].tolist()), dtype=torch.float64)
                torch.testing.assert_close(lab[n, :, i, j], expected)


def test_round_trip():
    g = torch.Generator().manual_seed(1)
    x = torch.rand(3, 3, 8, 8, generator=g)
    torch.testing.assert_close(lab_to_rgb(rgb_to_lab(x)), x, atol=1e-5, rtol=0)
    lab = torch.tensor([50.0, 20.0, -30.0]).view(1, 3, 1, 1)
    torch.testing.assert_close(rgb_to_lab(lab_to_rgb(lab)), lab, atol=1e-3, rtol=0)


def test_out_of_gamut_is_clamped_unless_asked():
    lab = torch.tensor([50.0, 120.0, 0.0]).view(1, 3, 1, 1)           # redder than sRGB can show
    assert lab_to_rgb(lab).min() >= 0 and lab_to_rgb(lab).max() <= 1
    assert lab_to_rgb(lab, clamp=False).min() < 0


def test_gamut_range_and_split_normalisation():
    grid = torch.linspace(0, 1, 17)
    x = torch.cartesian_prod(grid, grid, grid).T.reshape(1, 3, 17, 289)   # every 17-step RGB colour
    lab = rgb_to_lab(x)
    for c, (lo, hi) in enumerate(LAB_RANGE):
        assert lab[:, c].min() >= lo - 0.01 and lab[:, c].max() <= hi + 0.01
        assert math.isclose(lab[:, c].min().item(), lo, abs_tol=0.01)     # extremes at cube corners
        assert math.isclose(lab[:, c].max().item(), hi, abs_tol=0.01)
    L, ab = lab_split(x)
    assert L.shape == (1, 1, 17, 289) and ab.shape == (1, 2, 17, 289)
    both = torch.cat([L, ab], dim=1)
    torch.testing.assert_close(both.amin(dim=(0, 2, 3)), -torch.ones(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(both.amax(dim=(0, 2, 3)), torch.ones(3), atol=1e-4, rtol=0)


def test_bad_input():
    with pytest.raises(ValueError, match=r"RGB images \(N, 3, H, W\)"):
        rgb_to_lab(torch.rand(3, 8, 8))
    with pytest.raises(TypeError, match="to_float"):
        rgb_to_lab(torch.zeros(1, 3, 2, 2, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"Lab images \(N, 3, H, W\)"):
        lab_to_rgb(torch.rand(1, 2, 4, 4))
    with pytest.raises(TypeError, match="float Lab"):
        lab_to_rgb(torch.zeros(1, 3, 2, 2, dtype=torch.int64))
    with pytest.raises(ValueError, match=r"RGB images"):
        lab_split(torch.rand(2, 1, 4, 4))
