"""How long loading CIFAR-10 takes: the first load (decoding, when no cache exists yet) and the
second load from the decoded cache (target: under 3 s for the training split).

    .venv/bin/python benchmarks/data_load.py            # uses data_root() (SSL_DATA_DIR or data/)
    .venv/bin/python benchmarks/data_load.py --fresh    # decode into a temporary cache first

Infrastructure (a speed target of the project, never a timed test).
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from ssl_core import data


def timed_load(split: str, root: Path) -> tuple[float, data.ImageDataset]:
    start = time.perf_counter()
    ds = data.load_cifar10(split, root=root)
    return time.perf_counter() - start, ds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fresh", action="store_true",
                        help="copy the decoded sources to a temporary folder without a cache, so the first load decodes")
    args = parser.parse_args()
    root = data.data_root()
    tmp = None
    if args.fresh:  # a root whose cache is empty but whose sources are the same (symlinked)
        tmp = Path(tempfile.mkdtemp())
        for entry in root.iterdir():
            if entry.name != "cache":
                os.symlink(entry.resolve(), tmp / entry.name)
        root = tmp
    try:
        print(f"CPU cores: {os.cpu_count()}  data root: {root}")
        print(f"{'split':<6} {'load':<7} {'seconds':>8}  source")
        for split in ("train", "test"):
            for attempt in ("first", "second"):
                seconds, ds = timed_load(split, root)
                print(f"{split:<6} {attempt:<7} {seconds:8.2f}  {ds.source}")
    finally:
        if tmp is not None:
            shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
