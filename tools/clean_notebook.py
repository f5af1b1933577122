"""Tidy executed notebooks before committing them: keep every real output (text, tables,
figures), drop what only makes diffs noisy: progress-bar widgets and their saved state,
execution timestamps, and kernel details that differ between machines.

    python tools/clean_notebook.py notebooks/01_instdisc.ipynb [...]
"""
import json
import sys

WIDGET = "application/vnd.jupyter.widget-view+json"


def clean(nb: dict) -> dict:
    nb["metadata"] = {"kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
                      "language_info": {"name": "python"}}
    for cell in nb["cells"]:
        cell["metadata"] = {k: v for k, v in cell.get("metadata", {}).items() if k == "tags"}
        if cell["cell_type"] != "code":
            continue
        outputs = []
        for out in cell.get("outputs", []):
            if WIDGET in out.get("data", {}):
                continue                                  # a progress bar: meaningless once saved
            if out.get("output_type") == "stream" and out.get("name") == "stderr" and "\r" in "".join(out["text"]):
                continue                                  # a text progress bar
            outputs.append(out)
        cell["outputs"] = outputs
    return nb


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    for path in sys.argv[1:]:
        with open(path, encoding="utf-8") as f:
            nb = json.load(f)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(clean(nb), f, indent=1, ensure_ascii=False)
            f.write("\n")
        print(f"cleaned {path}")
