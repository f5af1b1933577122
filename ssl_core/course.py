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
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ssl_core.catalogue import EXERCISES
from ssl_core.exercises import NOT_DONE, PASSED, REPORT_ENV

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
    errors = [line.strip() for line in stderr.splitlines() if re.match(r"^\s*\w*(Error|Exception|Interrupt)\b", line)]
    return f"the notebook stopped with {errors[-1][:300]}" if errors else "the notebook stopped: " + stderr.strip()[-300:]


def grade_rows(path: Path, rows: dict[str, dict], stopped: str | None) -> list[tuple[str, str, str]]:
    table = []
    for ex_id in expected_ids(path):
        if ex_id in rows:
            table.append((ex_id, rows[ex_id]["status"], rows[ex_id]["message"]))
        else:
            table.append((ex_id, "failed", f"check not reached: {stopped or 'the notebook never ran its check cell'}"))
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
            rows, stopped, seconds = read_report(args.report), "no line in the report", 0.0
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
