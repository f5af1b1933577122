"""Run chosen notebooks headless under the gpu profile, each under a wall-clock cap, and print
one table: notebook, epochs done, minutes, images/s, kNN top-1, peak GPU memory.

    make gpu-results                                         # 06 and 07, 60 minutes each
    .venv/bin/python benchmarks/gpu_results.py 06_simclr_v1 09_byol --minutes 90
    .venv/bin/python benchmarks/gpu_results.py 06_simclr_v1 --profile gpu-dry --minutes 10   # check the runner on a CPU

Each notebook's executed copy goes to results/<profile>/notebooks/<name>.ipynb (the committed
laptop outputs stay as they are), its record to results/<profile>/<name>.json (written by the
notebook's own save_results, which adds the peak GPU memory on CUDA). A notebook stopped by the
cap keeps its per-epoch checkpoint: the same command resumes it. images/s counts images seen by
the training loop (epochs x training images / training seconds), not views.

Infrastructure: the one command for a reader with a GPU (DESIGN: the gpu switch).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_notebook(name: str, profile: str, minutes: float) -> tuple[str, float]:
    """Execute notebooks/<name>.ipynb under `profile`; returns (status, wall seconds)."""
    source = ROOT / "notebooks" / f"{name}.ipynb"
    if not source.is_file():
        sys.exit(f"no notebook {source}; names look like 06_simclr_v1 (see notebooks/)")
    out_dir = ROOT / "results" / profile / "notebooks"
    out_dir.mkdir(parents=True, exist_ok=True)
    cmd = [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute", str(source),
           "--ExecutePreprocessor.timeout=-1", "--output-dir", str(out_dir), "--output", name]
    env = {**os.environ, "SSL_PROFILE": profile}
    start = time.perf_counter()
    try:
        done = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, timeout=60 * minutes)
    except subprocess.TimeoutExpired:
        return f"stopped at the {minutes:g}-minute cap (re-run to resume)", time.perf_counter() - start
    status = "finished" if done.returncode == 0 else "failed: " + (done.stderr.strip().splitlines() or ["?"])[-1][:120]
    return status, time.perf_counter() - start


def row(name: str, profile: str, status: str, seconds: float) -> list[str]:
    path = ROOT / "results" / profile / f"{name}.json"
    record = json.loads(path.read_text()) if path.is_file() and status == "finished" else {}
    epochs, train_s, n = record.get("epochs"), record.get("train_seconds"), record.get("n_train")
    rate = f"{epochs * n / train_s:,.0f}" if all(isinstance(v, (int, float)) for v in (epochs, train_s, n)) and train_s else "–"
    knn = record.get("knn_top1")
    memory = record.get("peak_gpu_memory_gib")
    return [name, str(epochs if epochs is not None else "–"), f"{seconds / 60:.1f}", rate,
            f"{100 * knn:.1f}%" if isinstance(knn, (int, float)) else "–",
            f"{memory:.1f} GiB" if isinstance(memory, (int, float)) else "–", status]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebooks", nargs="*", default=["06_simclr_v1", "07_moco_v2"])
    parser.add_argument("--minutes", type=float, default=60.0, help="wall-clock cap per notebook")
    parser.add_argument("--profile", default="gpu", choices=["gpu", "gpu-dry"])
    args = parser.parse_args()
    if args.profile == "gpu":
        import torch
        if not torch.cuda.is_available():
            sys.exit("the gpu profile needs CUDA and this machine has none; "
                     "--profile gpu-dry checks the runner and the notebooks' gpu code on the CPU")
    rows = []
    for name in args.notebooks:
        print(f"running {name} under {args.profile} (cap {args.minutes:g} min) ...", flush=True)
        status, seconds = run_notebook(name, args.profile, args.minutes)
        rows.append(row(name, args.profile, status, seconds))
    header = ["notebook", "epochs", "minutes", "images/s", "kNN top-1", "peak GPU memory", "status"]
    print("\n| " + " | ".join(header) + " |\n|" + "---|" * len(header))
    for r in rows:
        print("| " + " | ".join(r) + " |")


if __name__ == "__main__":
    main()
