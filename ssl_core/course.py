"""The course kit's commands: student copies, the grader, and the table of exercises.

    python -m ssl_core.course student [notebooks/06_simclr_v1.ipynb ...] [--out student]
    python -m ssl_core.course grade student/06_simclr_v1.ipynb [...] [--timeout 900]
    python -m ssl_core.course grade --report results/smoke/grade_report.jsonl notebooks/*.ipynb
    python -m ssl_core.course list [--update COURSE.md]

`student` writes copies of the notebooks with every `### BEGIN SOLUTION` ... `### END SOLUTION`
region replaced by `raise NotImplementedError("Exercise NN.k: <what to write>")` and all outputs
cleared (nbgrader's markup and stub, with the exercise's task in the message). `grade` executes
each notebook in a subprocess under the smoke profile with a time limit, collects the lines the
checks write to $SSL_GRADE_REPORT, and prints one row per exercise; an exercise whose check never
ran (the notebook crashed or hung before it) is failed, with the reason. Exit status 0 only if
every exercise has the expected status (`--expect passed`, the default, or `--expect "not done"`).

Built in: the course kit (COURSE.md), make student / make grade.
"""
from __future__ import annotations

import argparse
import importlib
import json
import linecache
import math
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from ssl_core.catalogue import EXERCISES
from ssl_core.exercises import FAILED, NOT_DONE, PASSED, REPORT_ENV, Result, run_check

ROOT = Path(__file__).resolve().parent.parent
CHECK_CALL = re.compile(r"""exercises\.check\(\s*["'](\d\d\.\d+)["']""")
HEADER = re.compile(r"^# Exercise (\d\d\.\d+):", re.M)
REGION = re.compile(r"^([ \t]*)### BEGIN SOLUTION[^\n]*\n.*?^[ \t]*### END SOLUTION[^\n]*$", re.M | re.S)
START, END = "<!-- exercises:start -->", "<!-- exercises:end -->"


def _source(cell) -> str:
    return "".join(cell["source"]) if isinstance(cell["source"], list) else cell["source"]


def _lines(text: str) -> list[str]:
    parts = text.split("\n")
    return [p + "\n" for p in parts[:-1]] + ([parts[-1]] if parts[-1] else [])


def teacher_notebooks() -> list[Path]:
    return sorted(p for p in (ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb") if not p.name.startswith("00_"))


# ---------------------------------------------------------------- student copies

def blank(nb: dict) -> dict:
    """A student copy of a notebook (dict): solution regions stubbed out, outputs cleared."""
    for cell in nb["cells"]:
        if cell["cell_type"] != "code":
            continue
        src = _source(cell)
        if "### BEGIN SOLUTION" in src:
            header = HEADER.search(src)
            if not header:
                raise ValueError(f"a solution region without a '# Exercise NN.k: title' first line:\n{src[:200]}")
            task = EXERCISES[header.group(1)].task
            stub = lambda m: (f"{m.group(1)}# YOUR CODE HERE\n"
                              f"{m.group(1)}raise NotImplementedError({json.dumps(f'Exercise {header.group(1)}: {task}')})")
            src = REGION.sub(stub, src)
            if "### BEGIN SOLUTION" in src or "### END SOLUTION" in src:
                raise ValueError(f"unbalanced solution markers in exercise {header.group(1)}")
        cell["source"] = _lines(src)
        cell["outputs"], cell["execution_count"] = [], None
    return nb


def write_student_copies(paths: list[Path], out: Path) -> list[Path]:
    out.mkdir(parents=True, exist_ok=True)
    (out / "scripts").mkdir(exist_ok=True)          # notebook 14 writes its torchrun scripts there, as in notebooks/
    written = []
    for path in paths:
        nb = blank(json.loads(Path(path).read_text(encoding="utf-8")))
        target = out / Path(path).name
        target.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        written.append(target)
    return written


# ---------------------------------------------------------------- grading

def expected_ids(path: Path) -> list[str]:
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    ids = [m for c in nb["cells"] if c["cell_type"] == "code" for m in CHECK_CALL.findall(_source(c))]
    return list(dict.fromkeys(ids))


def read_report(path: Path) -> dict[str, dict]:
    """id -> the last line reported for it."""
    lines = Path(path).read_text(encoding="utf-8").splitlines() if Path(path).exists() else []
    return {row["id"]: row for row in map(json.loads, filter(None, lines))}


def execute(path: Path, timeout: float, profile: str = "smoke") -> tuple[dict[str, dict], str | None, float]:
    """Run a notebook in a subprocess (its own process group, killed on timeout); returns the
    report rows, why it stopped early (None if it ran to the end) and the seconds it took."""
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "report.jsonl"
        env = {**os.environ, "SSL_PROFILE": profile, REPORT_ENV: str(report),        # fresh checkpoints: the
               "SSL_CHECKPOINT_DIR": str(Path(tmp) / "checkpoints"),                   # notebook trains with the
               "SSL_RESULTS_DIR": str(Path(tmp) / "results")}                          # student's functions
        cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
               "--output-dir", tmp, "--output", "executed.ipynb", str(path)]
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                start_new_session=True, cwd=ROOT)
        try:
            _, err = proc.communicate(timeout=timeout)
            stopped = None if proc.returncode == 0 else _last_error(err)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.communicate()
            stopped = f"the notebook did not finish within the time limit of {timeout:.0f} s"
        return read_report(report), stopped, time.perf_counter() - t0


def _last_error(stderr: str) -> str:
    stderr = re.sub(r"\x1b\[[0-9;]*m", "", stderr)                         # the traceback's colours
    errors = [line.strip() for line in stderr.splitlines()                  # the cell's own error, not nbclient's
              if re.match(r"^\s*[\w.]*(Error|Exception|Interrupt)\b", line) and "CellExecutionError" not in line]
    return f"the notebook stopped with {errors[-1][:300]}" if errors else "the notebook stopped: " + stderr.strip()[-300:]


# ---------------------------------------------------------------- checking the exercise cells alone

CELL_MODULES = ("augment", "color", "distributed", "evaluate", "losses", "memory", "models", "momentum", "schedules")


def check_cells(path: Path) -> list[Result]:
    """Check a notebook's exercise cells without running the notebook: each `# Exercise NN.k:` cell is
    executed, in order, in one namespace holding torch, F, nn, math and the ssl_core modules; its
    function is checked; one that does not pass is replaced by the reference for the cells after it
    (as the notebook's check cell does). Nothing the notebook prints or reports is trusted."""
    nb = json.loads(Path(path).read_text(encoding="utf-8"))
    ns = {"torch": torch, "F": torch.nn.functional, "nn": torch.nn, "math": math,
          **{m: importlib.import_module(f"ssl_core.{m}") for m in CELL_MODULES}}
    results = []
    for cell in nb["cells"]:
        src = _source(cell)
        header = HEADER.match(src) if cell["cell_type"] == "code" else None
        if not header or header.group(1) not in EXERCISES:
            continue
        ex = EXERCISES[header.group(1)]
        name = f"<{Path(path).name}: exercise {ex.id}>"
        linecache.cache[name] = (len(src), None, src.splitlines(True), name)     # inspect.getsource reads it
        try:
            exec(compile(src, name, "exec"), ns)
            result = run_check(ex.id, ns[ex.name])
        except Exception as error:                      # the cell itself fails (a syntax error, a missing name)
            result = Result(ex.id, FAILED, f"Exercise {ex.id} ({ex.title}): FAILED: the exercise cell raised "
                                           f"{type(error).__name__}: {error}")
        if result.status != PASSED:
            ns[ex.name] = ex.reference
        results.append(result)
    return results


def execute_cells(path: Path, timeout: float) -> tuple[dict[str, dict], str | None, float]:
    """check_cells in a subprocess with a time limit (it runs the student's code)."""
    t0 = time.perf_counter()
    code = ("import json, sys; from ssl_core.course import check_cells\n"
            "for r in check_cells(sys.argv[1]): print(json.dumps(r.__dict__), flush=True)")
    try:
        proc = subprocess.run([sys.executable, "-c", code, str(path)], capture_output=True, text=True,
                              timeout=timeout, cwd=ROOT)
        stopped = None if proc.returncode == 0 else _last_error(proc.stderr)
        out = proc.stdout
    except subprocess.TimeoutExpired as error:
        stopped = f"the exercise cells did not finish within the time limit of {timeout:.0f} s"
        out = error.stdout.decode() if isinstance(error.stdout, bytes) else (error.stdout or "")
    rows = {}
    for line in out.splitlines():
        if line.startswith("{"):
            row = json.loads(line)
            rows[row["id"]] = row
    return rows, stopped, time.perf_counter() - t0


def grade_rows(path: Path, rows: dict[str, dict], stopped: str | None) -> list[tuple[str, str, str]]:
    try:
        ids = expected_ids(path)
    except (OSError, ValueError, KeyError) as error:          # not a notebook (a broken or missing file)
        return [(Path(path).name, "failed", f"cannot read the notebook: {error}")]
    table = []
    for ex_id in ids:
        if ex_id in rows:
            table.append((ex_id, rows[ex_id]["status"], rows[ex_id]["message"]))
        else:
            table.append((ex_id, "failed", f"check not reached: {stopped or 'the notebook never ran its check cell'}"))
    if stopped:                                            # a crash after the last check counts too
        table.append((Path(path).stem, "failed", f"the notebook did not run to the end: {stopped}"))
    return table


def print_table(table: list[tuple[str, str, str]]) -> None:
    print(f"{'exercise':9s} {'status':9s} message")
    for ex_id, status, message in table:
        print(f"{ex_id:9s} {status:9s} {message}")


# ---------------------------------------------------------------- the table for COURSE.md

def known_wrong_counts() -> dict[str, int]:
    path = ROOT / "tests" / "test_exercises.py"
    text = path.read_text(encoding="utf-8") if path.exists() else ""
    counts: dict[str, int] = {}
    for ex_id in re.findall(r"""@wrong\(\s*["'](\d\d\.\d+)["']""", text):
        counts[ex_id] = counts.get(ex_id, 0) + 1
    return counts


def exercise_table() -> str:
    counts = known_wrong_counts()
    rows = ["| exercise | notebook | what the student writes | difficulty | known-wrong versions caught by its check |",
            "|---|---|---|---|---|"]
    for ex in sorted(EXERCISES.values(), key=lambda e: tuple(map(int, e.id.split(".")))):
        rows.append(f"| {ex.id} {ex.title} | `{ex.notebook}` | `{ex.name}`: {ex.task} | "
                    f"{'★' * ex.difficulty}{'☆' * (3 - ex.difficulty)} | {counts.get(ex.id, 0)} |")
    return "\n".join(rows)


def update_course(path: Path) -> None:
    text = path.read_text(encoding="utf-8")
    if START not in text or END not in text:
        raise SystemExit(f"{path}: no {START} ... {END} lines to write the table between; add them")
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    path.write_text(f"{head}{START}\n{exercise_table()}\n{END}{tail}", encoding="utf-8")
    print(f"wrote the table of {len(EXERCISES)} exercises into {path}")


# ---------------------------------------------------------------- command line

def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ssl_core.course", description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    s = sub.add_parser("student", help="write student copies (solutions stubbed, outputs cleared)")
    s.add_argument("notebooks", nargs="*", type=Path)
    s.add_argument("--out", type=Path, default=ROOT / "student")
    g = sub.add_parser("grade", help="execute notebooks under smoke and print a table per exercise")
    g.add_argument("notebooks", nargs="+", type=Path)
    g.add_argument("--timeout", type=float, default=900, help="seconds per notebook (default 900)")
    g.add_argument("--profile", default="smoke")
    g.add_argument("--expect", default=PASSED, choices=[PASSED, NOT_DONE],
                   help="the status every exercise must have for exit status 0")
    g.add_argument("--report", type=Path, help="read this report instead of executing the notebooks")
    g.add_argument("--cells", action="store_true",
                   help="check only the exercise cells, in a fresh process (seconds per notebook; the notebook "
                        "is not run, so nothing it prints or reports is trusted)")
    lst = sub.add_parser("list", help="print the table of exercises (or write it into COURSE.md)")
    lst.add_argument("--update", type=Path, help="a Markdown file with the exercises:start/end marker lines")
    args = parser.parse_args(argv)

    if args.command == "student":
        for target in write_student_copies(args.notebooks or teacher_notebooks(), args.out):
            print(f"wrote {target.relative_to(ROOT) if target.is_relative_to(ROOT) else target}")
        return 0
    if args.command == "list":
        update_course(args.update) if args.update else print(exercise_table())
        return 0
    table, t_all = [], time.perf_counter()
    for path in args.notebooks:
        if args.report:
            rows, stopped, seconds = read_report(args.report), None, 0.0
        elif not Path(path).is_file():
            rows, stopped, seconds = {}, "no such notebook", 0.0
        elif args.cells:
            rows, stopped, seconds = execute_cells(path, args.timeout)
            print(f"{path}: exercise cells checked in {seconds:.0f} s" + (f"; {stopped}" if stopped else ""), flush=True)
        else:
            rows, stopped, seconds = execute(path, args.timeout, args.profile)
            print(f"{path}: {seconds:.0f} s" + (f"; {stopped}" if stopped else ""), flush=True)
        table += grade_rows(path, rows, stopped)
    print_table(table)
    wrong = [row for row in table if row[1] != args.expect]
    counts = {s: sum(row[1] == s for row in table) for s in (PASSED, "failed", NOT_DONE)}
    print(f"{len(table)} exercises: " + ", ".join(f"{n} {s}" for s, n in counts.items())
          + f" ({time.perf_counter() - t_all:.0f} s); expected all {args.expect}: {'yes' if not wrong else 'NO'}")
    return 0 if table and not wrong else 1


if __name__ == "__main__":
    sys.exit(main())
