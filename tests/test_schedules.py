"""cosine_schedule against the closed form, step by step."""
import math

import pytest
import torch

from ssl_core.schedules import cosine_schedule


def test_cosine_without_warmup_matches_formula():
    s = cosine_schedule(0.1, 0.001, total_steps=10)
    assert s.shape == (10,)
    for t in range(10):
        assert s[t].item() == pytest.approx(0.001 + (0.1 - 0.001) * (1 + math.cos(math.pi * t / 10)) / 2, rel=1e-6)
    assert s[0].item() == pytest.approx(0.1) and bool((s[1:] <= s[:-1]).all())


def test_warmup_is_linear_then_cosine():
    s = cosine_schedule(1.0, 0.0, total_steps=8, warmup_steps=4)
    torch.testing.assert_close(s[:4], torch.tensor([0.25, 0.5, 0.75, 1.0]))
    assert s[4].item() == pytest.approx(1.0)          # cosine starts at the base value
    assert s[-1].item() == pytest.approx((1 + math.cos(math.pi * 3 / 4)) / 2, rel=1e-6)


def test_rising_schedule_for_ema_momentum():
    s = cosine_schedule(0.996, 1.0, total_steps=100)
    assert s[0].item() == pytest.approx(0.996) and bool((s[1:] >= s[:-1]).all()) and s[-1] < 1.0


def test_bad_lengths_raise():
    with pytest.raises(ValueError, match="total_steps >= 1"):
        cosine_schedule(0.1, 0.0, total_steps=0)
    with pytest.raises(ValueError, match="warmup_steps <= total_steps"):
        cosine_schedule(0.1, 0.0, total_steps=5, warmup_steps=6)
