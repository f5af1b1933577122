"""Argument checks shared by the package: each names the knob that is wrong and what it must be.

A reader who tweaks a cell should get one clear line, not a PyTorch trace from deep inside
`uniform_` or `linspace`. These checks are pure Python on numbers (no tensor is read, so nothing
waits for a GPU). Each returns the value it checked, so a caller can write
`size = checks.positive_int(size, "size")`.

Infrastructure (augment, memory, losses, schedules, checkpoint, profiles).
"""
from __future__ import annotations

import math
import numbers

import torch


def _is_number(value) -> bool:
    """A real Python / numpy number or a 0-dim CPU tensor; bool is not a number here."""
    if isinstance(value, bool):
        return False
    if isinstance(value, torch.Tensor):
        return value.dim() == 0 and not value.is_complex()
    return isinstance(value, numbers.Real)


def positive_int(value, name: str, minimum: int = 1) -> int:
    """`value` must be an int >= minimum (not a float, not a bool): sizes, counts, steps."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        hint = f" (write int({value!r}))" if isinstance(value, float) and value.is_integer() else ""
        raise TypeError(f"{name} must be an int >= {minimum}, got {value!r} "
                        f"({type(value).__name__}){hint}")
    if value < minimum:
        raise ValueError(f"{name} must be an int >= {minimum}, got {value}")
    return int(value)


def number(value, name: str, low: float = -math.inf, high: float = math.inf,
           low_open: bool = False, high_open: bool = False):
    """`value` must be a finite-or-bounded real number in the interval [low, high] (open ends on
    request). CUDA tensors are passed through unchecked (reading them would wait for the GPU)."""
    if isinstance(value, torch.Tensor) and value.device.type != "cpu":
        return value
    if not _is_number(value):
        raise TypeError(f"{name} must be a number, got {value!r} ({type(value).__name__})")
    v = float(value)
    lo_ok = v > low if low_open else v >= low
    hi_ok = v < high if high_open else v <= high
    if math.isnan(v) or not (lo_ok and hi_ok):
        left, right = "(" if low_open else "[", ")" if high_open else "]"
        raise ValueError(f"{name} must be in {left}{low:g}, {high:g}{right}, got {v:g}")
    return value


def probability(value, name: str):
    """`value` must be a probability in [0, 1]."""
    return number(value, name, 0.0, 1.0)


def positive(value, name: str, why: str = ""):
    """`value` must be a number > 0 (temperatures, sigmas, eps); `why` is added to the message."""
    try:
        return number(value, name, 0.0, math.inf, low_open=True)
    except ValueError:
        raise ValueError(f"{name} must be > 0{why}, got {float(value):g}") from None


def interval(pair, name: str, low: float = 0.0, high: float = math.inf, low_open: bool = True) -> tuple:
    """`pair` must be (a, b) with low < a <= b <= high (low <= a with low_open=False): crop scales,
    aspect ratios, blur sigmas."""
    if not isinstance(pair, (tuple, list)) or len(pair) != 2 or not all(_is_number(v) for v in pair):
        raise TypeError(f"{name} must be a pair of numbers (low, high), got {pair!r}")
    a, b = (float(v) for v in pair)
    above = a > low if low_open else a >= low
    if not (above and a <= b <= high):
        first = "<" if low_open else "<="
        top = f" <= {high:g}" if math.isfinite(high) else ""
        raise ValueError(f"{name} must be (low, high) with {low:g} {first} low <= high{top}, got ({a:g}, {b:g})")
    return (a, b)
