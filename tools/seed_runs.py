"""Measure a notebook's seed band: re-run its main laptop recipe with other seeds, headless.

    SSL_PROFILE=laptop .venv/bin/python tools/seed_runs.py notebooks/06_simclr_v1.ipynb --seeds 1 2

For each seed k the notebook is executed (a copy, in memory; the notebook file is not touched)
with SSL_SEED=k, from its first cell down to the cell tagged `seed-band-end` (the cell that reads
the main run's final kNN), skipping the side experiments after it and the cells tagged
`seed-band-skip` before it (side runs the main run does not need); then one added cell saves
the main run's figures with `results.save_results`, which writes results/seeds/<name>-seed<k>.json.
Seed 0 is the committed run (results/<name>.json). `results.seed_band(name)` reads them all.

The notebook must define, by that cell: profile, HP, state, history, trained_top1,
random_init_top1, raw_pixel_top1 (every notebook of the series does).
"""
import argparse
import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

TAG, SKIP = "seed-band-end", "seed-band-skip"
SAVE = """\
from ssl_core import results as _results
_path = _results.save_results(
    {name!r}, profile, method="seed run of the main recipe (tools/seed_runs.py)",
    epochs=HP.get("epochs", history[-1]["epoch"]), train_seconds=round(state["train_seconds"], 1), knn_top1=trained_top1,
    random_init_knn_top1=random_init_top1, raw_pixel_knn_top1=raw_pixel_top1, history=history)
print(f"seed {{profile.seed}}: kNN {{trained_top1:.2%}} (random init {{random_init_top1:.2%}}) -> {{_path}}")
"""


def main_run_cells(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    ends = [i for i, cell in enumerate(nb.cells) if TAG in cell.get("metadata", {}).get("tags", [])]
    if not ends:
        sys.exit(f"{path}: no cell is tagged {TAG!r}; tag the cell that computes trained_top1")
    kept = [cell for cell in nb.cells[:ends[0] + 1] if SKIP not in cell.get("metadata", {}).get("tags", [])]
    nb.cells = kept + [nbformat.v4.new_code_cell(SAVE.format(name=path.stem))]
    return nb


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("notebook", type=Path)
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="seeds to run (0 is the committed run)")
    parser.add_argument("--timeout", type=int, default=3600, help="seconds per cell")
    args = parser.parse_args()
    if any(seed <= 0 for seed in args.seeds):
        sys.exit("--seeds: give seeds > 0; seed 0 is the notebook's own committed run")
    for seed in args.seeds:
        os.environ["SSL_SEED"] = str(seed)  # the kernel inherits this process's environment
        nb = main_run_cells(args.notebook)
        start = time.perf_counter()
        client = NotebookClient(nb, timeout=args.timeout, kernel_name="python3",
                                resources={"metadata": {"path": str(args.notebook.parent)}})
        client.execute()
        printed = "".join(out.get("text", "") for out in nb.cells[-1].outputs)
        print(printed.strip(), f"({time.perf_counter() - start:.0f} s wall)", flush=True)


if __name__ == "__main__":
    main()
