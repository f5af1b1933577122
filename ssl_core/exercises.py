"""Exercise checks of the course kit: the student's function against ssl_core's, on random cases.

In a notebook, after the cell where the student writes a piece of the paper:

    nt_xent = exercises.check("06.2", nt_xent)

runs the student's function and the reference on the exercise's cases (shapes, dtypes, edge
cases; from `ssl_core.catalogue`), compares outputs, any input the function changes in place,
and the gradients that reach the inputs, and prints one line: passed, not done, or what differs
("your output is 2x the reference: ..."). It returns the function the notebook goes on with:
the student's when it passed, else the reference, so a blank or wrong exercise never stops the
notebook. With SSL_GRADE_REPORT=path set, every check appends a JSON line
{"id", "status": "passed" | "failed" | "not done", "message"} to that file (the grader reads it).

Built in: the course kit (COURSE.md); every notebook 01-14 calls it.
"""
from __future__ import annotations

import copy
import inspect
import json
import os
import re
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import nn

from ssl_core.catalogue import EXERCISES, Exercise

PASSED, FAILED, NOT_DONE = "passed", "failed", "not done"
REPORT_ENV = "SSL_GRADE_REPORT"


@dataclass
class Result:
    id: str
    status: str
    message: str


class _Mismatch(Exception):
    """Raised inside the comparison with the sentence that explains the difference."""

    def __init__(self, kind: str, text: str):
        super().__init__(text)
        self.kind, self.text = kind, text


def check(exercise_id: str, student_fn: Callable, *, quiet: bool = False) -> Callable:
    """Check `student_fn` against exercise `exercise_id`'s reference; print one line, report it,
    and return the function to use downstream (the student's if it passed, else the reference)."""
    exercise = get(exercise_id)
    result = run_check(exercise_id, student_fn)
    if not quiet:
        print(result.message)
    path = os.environ.get(REPORT_ENV)
    if path:
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"id": result.id, "status": result.status, "message": result.message}) + "\n")
    return student_fn if result.status == PASSED else exercise.reference


def get(exercise_id: str) -> Exercise:
    if exercise_id not in EXERCISES:
        raise KeyError(f"no exercise {exercise_id!r}; known: {', '.join(sorted(EXERCISES))}")
    return EXERCISES[exercise_id]


def run_check(exercise_id: str, student_fn: Callable) -> Result:
    """The check without printing or reporting: a Result(id, status, message).

    The cases and calls seed torch's global generator (the same draws for the student and the
    reference); that state is restored afterwards, so a notebook's random stream (its SSL_SEED)
    does not depend on whether, or how often, an exercise was checked."""
    with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_initialized() else []):
        return _run_check(get(exercise_id), student_fn)


def _run_check(ex: Exercise, student_fn: Callable) -> Result:
    head = f"Exercise {ex.id} ({ex.title}):"
    fallback = "the notebook goes on with ssl_core's version"
    cases = ex.cases(torch.Generator().manual_seed(ex.seed))
    calls = []
    for k, case in enumerate(cases, 1):
        where = f"case {k} of {len(cases)} ({_describe(case)})"
        try:
            expected = _call(ex.reference, case, ex.seed + k)
        except Exception as error:  # a broken case is the catalogue's bug, not the student's
            raise RuntimeError(f"exercise {ex.id}: the reference failed on {where}: {error!r}") from error
        try:
            got = _call(student_fn, case, ex.seed + k)
        except NotImplementedError:
            return Result(ex.id, NOT_DONE, f"{head} not done yet; {fallback}.")
        except Exception as error:
            return Result(ex.id, FAILED, f"{head} FAILED on {where}: your function raised "
                                         f"{type(error).__name__}: {error}; {fallback}.")
        calls.append((where, got, expected))
    for where, got, expected in calls:
        try:
            _compare_call(got, expected, ex)
        except _Mismatch as m:
            if m.kind == "value":
                m = _across_cases(calls, ex) or m
            hint = ex.hints.get(m.kind, "")
            return Result(ex.id, FAILED, f"{head} FAILED on {where}: {m.text}{' ' + hint if hint else ''} "
                                         f"({fallback}).")
    called = _calls_reference(student_fn, ex)
    if called:
        return Result(ex.id, FAILED, f"{head} FAILED: your function calls ssl_core's own `{called}`; the exercise is "
                                     f"to write it yourself (the check compares with it; {fallback}).")
    graded = any(g is not None for _, got, expected in calls for g in [*got.grads.values(), *expected.grads.values()])
    what = "values and gradients" if graded else "values"
    return Result(ex.id, PASSED, f"{head} passed ({what} match ssl_core on {len(cases)} random cases).")


def _calls_reference(student_fn: Callable, ex: Exercise) -> str | None:
    """The ssl_core name the student's source calls although the exercise is to write it (None if none,
    or if the source cannot be read)."""
    names = ex.forbid
    if not names:
        ref = ex.reference
        public = getattr(ref, "__module__", "").startswith("ssl_core") and not ref.__name__.startswith(("_", "<"))
        names = (ref.__name__,) if public else ()
    try:
        source = inspect.getsource(student_fn)
    except (OSError, TypeError):
        return None
    source = "\n".join(line.split("#")[0] for line in source.splitlines())        # code, not comments
    return next((name for name in names if re.search(rf"\.{re.escape(name)}\s*\(", source)), None)


# ---------------------------------------------------------------- running one case

def _clone(x: Any) -> Any:
    if isinstance(x, torch.Tensor):
        return x.detach().clone().requires_grad_(x.requires_grad)
    if isinstance(x, nn.Module):
        return copy.deepcopy(x)
    if isinstance(x, (list, tuple)):
        return type(x)(_clone(v) for v in x)
    return x


def _grad_leaves(case: dict) -> list[tuple[str, torch.Tensor]]:
    """The inputs whose gradients the check compares: tensors created with requires_grad=True."""
    out = []
    for name, v in case.items():
        if isinstance(v, torch.Tensor) and v.requires_grad:
            out.append((name, v))
        elif isinstance(v, (list, tuple)):
            out += [(f"{name}[{i}]", t) for i, t in enumerate(v) if isinstance(t, torch.Tensor) and t.requires_grad]
    return out


@dataclass
class _Call:
    output: Any
    inputs: dict          # the arguments after the call (in-place changes show here)
    grads: dict           # name -> gradient of sum(w * output) w.r.t. that input (None: no gradient)


def _call(fn: Callable, case: dict, seed: int) -> _Call:
    args = {name: _clone(v) for name, v in case.items()}
    leaves = _grad_leaves(args)                   # before the call: an in-place change may add a graph
    torch.manual_seed(seed)                       # same random draws for the student and the reference
    output = fn(*args.values())
    grads = {}
    if leaves:
        outs = [t for t in (output if isinstance(output, (tuple, list)) else [output])
                if isinstance(t, torch.Tensor) and t.requires_grad and t.is_floating_point()]
        if outs:
            g = torch.Generator().manual_seed(seed)
            sum((t * torch.randn(t.shape, generator=g, dtype=torch.float64).to(t.dtype)).nan_to_num(0.0, 0.0, 0.0).sum()
                for t in outs).backward()
        grads = {name: t.grad for name, t in leaves}
    return _Call(output, args, grads)


# ---------------------------------------------------------------- comparing and explaining

def _across_cases(calls, ex: Exercise) -> "_Mismatch | None":
    """For scalar outputs one case cannot tell a factor from any other error; all cases can."""
    pairs = []
    for _, got, expected in calls:
        a, b = got.output, expected.output
        if not (isinstance(a, (torch.Tensor, float, int)) and isinstance(b, torch.Tensor) and b.numel() == 1):
            return None
        pairs.append((float(torch.as_tensor(a).detach().double().reshape(-1)[0]), float(b.detach())))
    if all(abs(b) > 1e-8 for _, b in pairs):
        ratios = [a / b for a, b in pairs]
        if max(ratios) - min(ratios) < 1e-3 * max(1.0, abs(ratios[0])) and abs(ratios[0] - 1) > 1e-3:
            return _Mismatch("scale", f"your output is {ratios[0]:.3g}x the reference on every case.")
    offsets = [a - b for a, b in pairs]
    if max(offsets) - min(offsets) < 1e-4 * max(1.0, abs(offsets[0])) and abs(offsets[0]) > 1e-4:
        return _Mismatch("offset", f"your output is the reference {offsets[0]:+.4g} on every case.")
    return None


def _compare_call(got: _Call, expected: _Call, ex: Exercise) -> None:
    _compare(got.output, expected.output, ex, "your output")
    for name, value in expected.inputs.items():
        if isinstance(value, torch.Tensor) and got.inputs[name].requires_grad and not value.requires_grad:
            raise _Mismatch("state", f"`{name}` now carries autograd history: change it under "
                                     "torch.no_grad() (or write detached values into it).")
        if isinstance(value, torch.Tensor) or isinstance(value, nn.Module):
            try:
                _compare(got.inputs[name], value, ex, f"`{name}` after your call")
            except _Mismatch as m:
                raise _Mismatch("state", m.text) from None
    for name, g_ref in expected.grads.items():
        g = got.grads.get(name)
        if g_ref is None and g is None:
            continue
        if g is None or (g_ref is not None and not g.abs().sum() and g_ref.abs().sum()):
            raise _Mismatch("grad", f"no gradient reaches `{name}`, but the reference's does "
                                    "(a detach() or no_grad too many?).")
        if g_ref is None or (not g_ref.abs().sum() and g.abs().sum()):
            raise _Mismatch("grad", f"a gradient reaches `{name}`, which the reference stops "
                                    "(detach() the target, or compute it under torch.no_grad()).")
        try:
            _compare(g, g_ref, ex, f"the gradient w.r.t. `{name}`")
        except _Mismatch as m:
            raise _Mismatch("grad", f"the values match but {m.text[0].lower() + m.text[1:]}") from None


def _compare(a: Any, b: Any, ex: Exercise, what: str) -> None:
    if isinstance(b, nn.Module):
        state_a, state_b = a.state_dict(keep_vars=True), b.state_dict(keep_vars=True)
        for key, value in state_b.items():
            if state_a[key].requires_grad and not value.requires_grad:
                raise _Mismatch("state", f"{what}: its `{key}` now carries autograd history: change it under "
                                         "torch.no_grad() (or write detached values into it).")
        for key, value in state_b.items():
            _compare(state_a[key], value, ex, f"{what} (its `{key}`)")
        return
    if isinstance(b, (list, tuple)):
        if not isinstance(a, (list, tuple)) or len(a) != len(b):
            raise _Mismatch("shape", f"{what} should be a sequence of {len(b)} items, got {type(a).__name__}"
                                     f"{f' of {len(a)}' if isinstance(a, (list, tuple)) else ''}.")
        for i, (x, y) in enumerate(zip(a, b)):
            _compare(x, y, ex, f"{what} (item {i})")
        return
    if b is None:
        return
    if isinstance(b, (int, float)) and not isinstance(a, torch.Tensor):
        a = torch.tensor(a)
    b = torch.as_tensor(b)
    if not isinstance(a, torch.Tensor):
        raise _Mismatch("shape", f"{what} should be a tensor, got {type(a).__name__}.")
    a = a.detach()
    b = b.detach()
    if a.shape != b.shape:
        if a.dim() == 2 and a.T.shape == b.shape and _close(a.T, b, ex):
            raise _Mismatch("transposed", f"{what} is the transpose of the reference ({tuple(b.shape)}).")
        raise _Mismatch("shape", f"{what} has shape {tuple(a.shape)}, the reference {tuple(b.shape)}.")
    if b.dtype == torch.bool or not b.is_floating_point():
        if not torch.equal(a.to(b.dtype), b):
            raise _Mismatch("value", f"{what} differs from the reference: {_first_diff(a, b)}.")
        return
    a = a.to(b.dtype)
    if _close(a, b, ex):
        return
    if not torch.isfinite(a).all() and torch.isfinite(b).all():
        raise _Mismatch("nonfinite", f"{what} has NaN or inf where the reference is finite.")
    differs = torch.isfinite(a) != torch.isfinite(b)
    if differs.any():
        index = tuple(int(i) for i in differs.nonzero()[0])
        raise _Mismatch("nonfinite", f"{what} is {a[index].item():.6g} at index {index}, the reference "
                                     f"{b[index].item():.6g}.")
    raise _Mismatch(*_explain(a, b, ex, what))


def _close(a: torch.Tensor, b: torch.Tensor, ex: Exercise) -> bool:
    return torch.allclose(a, b, rtol=ex.rtol, atol=ex.atol, equal_nan=True)


def _explain(a: torch.Tensor, b: torch.Tensor, ex: Exercise, what: str) -> tuple[str, str]:
    finite = torch.isfinite(a) & torch.isfinite(b)                   # e.g. a masked diagonal of -inf
    if not finite.all() and finite.any():
        kind, text = _explain(a[finite], b[finite], ex, what)
        if kind in ("sign", "scale", "offset"):
            return kind, text.replace(what, f"{what} (its finite entries)", 1)
    if b.abs().max() > ex.atol:
        if _close(a, -b, ex):
            return "sign", f"{what} has the opposite sign of the reference."
        ratio = float((a * b).sum() / (b * b).sum())
        if b.numel() > 1 and abs(ratio) > 1e-6 and _close(a, ratio * b, ex):
            return "scale", f"{what} is {ratio:.3g}x the reference."
    if b.numel() > 1:
        offset = float((a - b).mean())
        if _close(a - offset, b, ex):
            return "offset", f"{what} is the reference {offset:+.3g} everywhere."
        if a.dim() >= 1 and _close(a.flip(0), b, ex):
            return "order", f"{what} has its rows in reverse order."
    if b.numel() == 1:
        return "value", f"{what} is {a.item():.6g}, the reference {b.item():.6g}."
    return "value", f"{what} differs from the reference: {_first_diff(a, b)}."


def _first_diff(a: torch.Tensor, b: torch.Tensor) -> str:
    same = (a == b) | (torch.isnan(a) & torch.isnan(b))               # matching infinities count as equal
    diff = (a.double() - b.double()).abs().nan_to_num(float("inf")).masked_fill(same, 0.0)
    flat = int(diff.flatten().argmax())
    index = tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), b.shape)) if b.dim() else ()
    return (f"largest difference at index {index}: yours {a.flatten()[flat].item():.6g}, "
            f"the reference {b.flatten()[flat].item():.6g}")


def _describe(case: dict) -> str:
    parts = []
    for name, v in case.items():
        if isinstance(v, torch.Tensor):
            dtype = "" if v.dtype == torch.float32 else f" {str(v.dtype).replace('torch.', '')}"
            parts.append(f"{name} {tuple(v.shape)}{dtype}")
        elif isinstance(v, nn.Module):
            parts.append(f"{name} {type(v).__name__}")
        elif isinstance(v, (list, tuple)) and v and isinstance(v[0], torch.Tensor):
            shapes = [tuple(t.shape) for t in v]
            parts.append(f"{name} {len(v)} x {shapes[0]}" if len(set(shapes)) == 1 else f"{name} {shapes}")
        else:
            parts.append(f"{name} {v}")
    return ", ".join(parts)
