"""Each notebook's headline figures, saved as results/<NN_name>.json, and the README table built from them.

Infrastructure (used by every notebook's last cell, and by `python -m ssl_core.results`):

    save_results("01_instdisc", profile, dataset="cifar10", epochs=15, train_seconds=291.4,
                 knn_top1=0.503, random_init_knn_top1=0.401, raw_pixel_knn_top1=0.412)

Accuracies are fractions in 0..1 (shown as percentages in the table). Runs under the smoke
profile go to results/smoke/ (git-ignored), so CI never overwrites the committed laptop results.
A laptop run with another seed ($SSL_SEED=k, k > 0) goes to results/seeds/<name>-seed<k>.json:
`seed_band(name)` reads them with the seed-0 record into the seed-to-seed spread of that recipe.
The folder is $SSL_RESULTS_DIR if set, else <repo>/results.
"""

from __future__ import annotations

import json
import math
import os
from datetime import datetime, timezone
from pathlib import Path

import torch

from ssl_core.checkpoint import atomic_write
from ssl_core.evaluate import protocol
from ssl_core.profiles import describe_device

_REPO_ROOT = Path(__file__).resolve().parents[1]
START, END = "<!-- results:start -->", "<!-- results:end -->"
_AUTOMATIC = ("notebook", "profile", "device", "date", "torch_version", "peak_gpu_memory_gib", "seed")
COLUMNS = ("notebook", "method", "dataset", "profile", "device", "epochs", "train time",
           "kNN top-1", "random-init kNN", "gain")


def seed_spread(values) -> dict:
    """The seed-to-seed noise of a run: the same run repeated with n >= 2 seeds, its accuracies
    -> {"n", "mean", "min", "max", "range"} (range = max - min). Quote gaps against it: a gap
    between two settings (one seed each) smaller than the range of the same setting over seeds
    is not a finding. Infrastructure (01, 05, 09-13 use it for their side runs)."""
    values = [float(v) for v in values]
    if len(values) < 2 or not all(math.isfinite(v) for v in values):
        raise ValueError(f"seed_spread needs at least 2 finite values (one per seed), got {values}")
    return {"n": len(values), "mean": sum(values) / len(values), "min": min(values), "max": max(values),
            "range": max(values) - min(values)}


def seed_records(name: str, root=None) -> list[dict]:
    """The records of notebook ``name``'s main recipe run with other seeds (k > 0):
    <root>/seeds/<name>-seed<k>.json, written by tools/seed_runs.py, in seed order. Infrastructure."""
    root = Path(root) if root is not None else results_dir()
    paths = sorted((root / "seeds").glob(f"{name}-seed*.json"), key=lambda p: int(p.stem.rsplit("seed", 1)[1]))
    return [json.loads(p.read_text(encoding="utf-8")) for p in paths]


def seed_band(name: str, key: str = "knn_top1", root=None) -> dict:
    """The measured seed band of notebook ``name``'s main laptop recipe: ``key`` of the seed-0
    record (<root>/<name>.json) and of its ``seed_records``, as ``seed_spread`` plus
    {"seeds": [...], "values": [...]}. Only records measured under the same evaluation protocol
    as the seed-0 one are used. Infrastructure (06 draws it; every notebook reads its gaps
    against it)."""
    root = Path(root) if root is not None else results_dir()
    main = root / f"{name}.json"
    if not main.is_file():
        raise FileNotFoundError(f"no results for {name!r} under {root}; run the notebook first")
    first = json.loads(main.read_text(encoding="utf-8"))
    same = [r for r in [first, *seed_records(name, root)]
            if r.get("eval_protocol") == first.get("eval_protocol") and key in r]
    band = seed_spread([r[key] for r in same])
    band.update(seeds=[r.get("seed", 0) for r in same], values=[r[key] for r in same])
    return band


def results_dir(profile=None) -> Path:
    """$SSL_RESULTS_DIR or <repo>/results for laptop runs (the README's table); its smoke/, gpu/
    and gpu-dry/ subfolders for those profiles. Infrastructure."""
    root = Path(os.environ.get("SSL_RESULTS_DIR") or _REPO_ROOT / "results").expanduser()
    name = getattr(profile, "name", profile)
    if name in ("smoke", "gpu", "gpu-dry"):
        return root / name
    return root / "seeds" if getattr(profile, "seed", 0) else root


def _plain(value, key: str):
    """A figure as a JSON value: tensors and numpy numbers become Python numbers / lists."""
    if isinstance(value, (str, bool, int, float, type(None))):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, key) for v in value]
    if isinstance(value, dict):
        return {str(k): _plain(v, key) for k, v in value.items()}
    if isinstance(value, Path):
        return str(value)
    if isinstance(value, torch.Tensor) or callable(getattr(value, "tolist", None)):
        return _plain(value.tolist(), key)  # tensor / numpy array or scalar
    raise TypeError(f"save_results: figure {key!r} is a {type(value).__name__}; "
                    "store numbers, strings, lists or dicts of them")


def save_results(name: str, profile, **figures) -> Path:
    """Write <results_dir(profile)>/<name>.json (indent 2, atomically) and return its path.

    name: the notebook, e.g. "01_instdisc". profile: the Profile the run used. figures: e.g.
    method, dataset, dataset_source, n_train, n_test, epochs, train_seconds, knn_top1,
    random_init_knn_top1, raw_pixel_knn_top1 (accuracies as fractions 0..1). Added
    automatically: notebook, profile, device, date (UTC, ISO 8601), torch_version, seed
    (profile.seed), eval_protocol (``evaluate.protocol()``, unless given), and on CUDA
    peak_gpu_memory_gib (torch.cuda.max_memory_allocated). A run with a seed k > 0 is written to
    results/seeds/<name>-seed<k>.json. Infrastructure.
    """
    if not isinstance(name, str) or not name or any(sep in name for sep in "/\\") or name.endswith(".json"):
        raise ValueError(f"save_results: name must be the notebook's name like '01_instdisc', got {name!r}")
    if not hasattr(profile, "name") or not hasattr(profile, "device"):
        raise TypeError(f"save_results: profile must be the run's Profile (get_profile()), got {profile!r}")
    clash = sorted(set(figures) & set(_AUTOMATIC))
    if clash:
        raise ValueError(f"save_results: {clash} are filled in automatically; do not pass them as figures")
    seed = getattr(profile, "seed", 0)
    record = {"notebook": name, "profile": profile.name, "device": describe_device(profile.device),
              "date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "torch_version": torch.__version__,
              "seed": seed}
    figures.setdefault("eval_protocol", protocol())
    if torch.device(profile.device).type == "cuda":  # for `make gpu-results`' table
        record["peak_gpu_memory_gib"] = round(torch.cuda.max_memory_allocated(profile.device) / 2**30, 2)
    for key, value in figures.items():
        value = _plain(value, key)
        if key.endswith(("top1", "top5")) and isinstance(value, (int, float)) and not 0 <= value <= 1:
            raise ValueError(f"save_results: {key}={value} is not a fraction in 0..1; store accuracies as "
                             f"fractions (e.g. 0.503, not 50.3)")
        record[key] = value
    try:
        text = json.dumps(record, indent=2, allow_nan=False) + "\n"
    except ValueError as error:
        raise ValueError(f"save_results: a figure is NaN or infinite ({error}); check the run") from error
    file_name = f"{name}-seed{seed}.json" if seed else f"{name}.json"
    return atomic_write(results_dir(profile) / file_name, lambda f: f.write(text.encode("utf-8")))


def load_results(root=None) -> list[dict]:
    """Every <root>/*.json (not smoke/), sorted by notebook name. root: results_dir(). Infrastructure."""
    root = Path(root) if root is not None else results_dir()
    rows = []
    for path in sorted(root.glob("*.json")):
        try:
            rows.append(json.loads(path.read_text(encoding="utf-8")))
        except json.JSONDecodeError as error:
            raise ValueError(f"{path} is not valid JSON ({error}); re-run its notebook or delete it") from error
    return rows


def _percent(fraction) -> str:
    return f"{100 * fraction:.1f}%" if isinstance(fraction, (int, float)) else "–"


def _duration(seconds) -> str:
    if not isinstance(seconds, (int, float)) or not math.isfinite(seconds):
        return "–"
    if seconds < 60:
        return f"{seconds:.0f} s"
    return f"{seconds / 60:.1f} min" if seconds < 3600 else f"{seconds / 3600:.1f} h"


def results_table(rows) -> str:
    """Markdown table, one row per result: notebook | method | dataset | profile | device | epochs |
    train time | kNN top-1 | random-init kNN | gain (kNN top-1 minus random-init, in points).
    Missing figures show as '–'. Infrastructure."""
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for row in rows:
        name = row.get("notebook", "?")
        knn, base = row.get("knn_top1"), row.get("random_init_knn_top1")
        gain = (f"{100 * (knn - base):+.1f} pp" if isinstance(knn, (int, float)) and isinstance(base, (int, float))
                else "–")
        old = "" if row.get("eval_protocol") else " †"   # measured before the BN refresh
        cells = [f"[{name}](notebooks/{name}.ipynb)", row.get("method", name), row.get("dataset", "–"),
                 row.get("profile", "–"),
                 row.get("device", "–"), row.get("epochs", "–"), _duration(row.get("train_seconds")),
                 _percent(knn) + old, _percent(base) + old, gain]
        lines.append("| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |")
    if not rows:
        lines.append("\n_No results yet: run a notebook with SSL_PROFILE=laptop, "
                     "then `python -m ssl_core.results`._")
    elif any(not row.get("eval_protocol") for row in rows):
        lines.append("\n† measured before the evaluation protocol (BatchNorm statistics not refreshed; "
                     "random-init kNN ~3 points low); the notebook is due for a re-run.")
    return "\n".join(lines)


def update_readme(readme_path=None, results_root=None) -> int:
    """Replace the text between START and END in README.md (default <repo>/README.md) with
    results_table(load_results(results_root)); return the number of results. Infrastructure."""
    path = Path(readme_path) if readme_path is not None else _REPO_ROOT / "README.md"
    if not path.is_file():
        raise FileNotFoundError(f"no README at {path}")
    text = path.read_text(encoding="utf-8")
    start, end = text.find(START), text.find(END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"{path} needs the two marker lines {START} and {END} (in that order) around the "
                         "results table; add them where the table should go")
    rows = load_results(results_root)
    new = text[:start + len(START)] + "\n" + results_table(rows) + "\n" + text[end:]
    atomic_write(path, lambda f: f.write(new.encode("utf-8")))
    return len(rows)


if __name__ == "__main__":
    count = update_readme()
    print(f"README.md: results table updated with {count} results from {results_dir()}")
