"""Tests for ssl_core.results: where results go, what they hold, the README table."""

import json

import numpy as np
import pytest
import torch

from ssl_core.profiles import Profile
from ssl_core.results import END, START, load_results, results_dir, results_table, save_results, update_readme

LAPTOP = Profile("laptop", torch.device("cpu"), None, None)
SMOKE = Profile("smoke", torch.device("cpu"), 2000, 1000)


@pytest.fixture
def results_root(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_RESULTS_DIR", str(tmp_path / "results"))
    return tmp_path / "results"


def test_smoke_results_go_to_their_own_folder(results_root):
    laptop = save_results("01_instdisc", LAPTOP, epochs=15, knn_top1=0.5)
    smoke = save_results("01_instdisc", SMOKE, epochs=1, knn_top1=0.2)
    assert laptop == results_root / "01_instdisc.json" and smoke == results_root / "smoke" / "01_instdisc.json"
    assert results_dir() == results_root and results_dir(SMOKE) == results_root / "smoke"
    assert [row["epochs"] for row in load_results()] == [15]  # smoke/ is not read
    assert sorted(p.name for p in results_root.iterdir()) == ["01_instdisc.json", "smoke"]  # no temp files


def test_gpu_and_gpu_dry_results_stay_out_of_the_readme_table(results_root):
    dry = Profile("gpu-dry", torch.device("cpu"), 512, 256, recipe="gpu")
    gpu = Profile("gpu", torch.device("cpu"), None, None)   # device cpu: no CUDA memory figure to add
    assert save_results("06_simclr_v1", dry, epochs=1, knn_top1=0.1) == results_root / "gpu-dry" / "06_simclr_v1.json"
    assert save_results("06_simclr_v1", gpu, epochs=2, knn_top1=0.1) == results_root / "gpu" / "06_simclr_v1.json"
    assert load_results() == []
    assert "peak_gpu_memory_gib" not in json.loads((results_root / "gpu" / "06_simclr_v1.json").read_text())


def test_saved_record_holds_figures_and_run_facts(results_root):
    path = save_results("01_instdisc", LAPTOP, dataset="cifar10", n_train=np.int64(50000),
                        train_seconds=291.4, knn_top1=torch.tensor(0.5031), history=[{"loss": torch.tensor(2.0)}])
    record = json.loads(path.read_text())
    assert path.read_text().startswith('{\n  "notebook"')  # indent 2
    assert record["notebook"] == "01_instdisc" and record["profile"] == "laptop"
    assert record["device"].startswith("cpu (") and record["torch_version"] == torch.__version__
    assert record["date"].endswith("+00:00")  # UTC, ISO 8601
    assert record["n_train"] == 50000 and record["knn_top1"] == pytest.approx(0.5031)
    assert record["history"] == [{"loss": 2.0}]


def test_save_results_errors(results_root):
    with pytest.raises(ValueError, match="fractions"):
        save_results("01_instdisc", LAPTOP, knn_top1=50.3)
    with pytest.raises(ValueError, match=r"\['date', 'device'\] are filled in automatically"):
        save_results("01_instdisc", LAPTOP, device="cuda", date="today")
    with pytest.raises(ValueError, match="NaN"):
        save_results("01_instdisc", LAPTOP, train_loss=float("nan"))
    with pytest.raises(TypeError, match="figure 'model'"):
        save_results("01_instdisc", LAPTOP, model=object())
    with pytest.raises(TypeError, match="get_profile"):
        save_results("01_instdisc", "laptop", epochs=1)
    with pytest.raises(ValueError, match="'01_instdisc'"):
        save_results("results/01.json", LAPTOP)
    assert not results_root.exists()  # nothing half-saved


def test_load_results_sorted_by_name_and_bad_json_named(tmp_path):
    (tmp_path / "05_moco_v1.json").write_text('{"notebook": "05_moco_v1"}')
    (tmp_path / "01_instdisc.json").write_text('{"notebook": "01_instdisc"}')
    assert [r["notebook"] for r in load_results(tmp_path)] == ["01_instdisc", "05_moco_v1"]
    (tmp_path / "02_cpc.json").write_text("{broken")
    with pytest.raises(ValueError, match="02_cpc.json is not valid JSON"):
        load_results(tmp_path)


def test_table_formats_percentages_time_and_gain():
    rows = [{"notebook": "01_instdisc", "dataset": "CIFAR-10", "profile": "laptop", "device": "cpu (2 threads)", "epochs": 15,
             "train_seconds": 291.4, "knn_top1": 0.5031, "random_init_knn_top1": 0.4012, "eval_protocol": {"bn_refresh": True}},
            {"notebook": "05_moco_v1", "method": "MoCo v1", "train_seconds": 42, "eval_protocol": {"bn_refresh": True}}]
    lines = results_table(rows).splitlines()
    assert lines[0] == ("| notebook | method | dataset | profile | device | epochs | train time | kNN top-1 "
                        "| random-init kNN | gain |")
    assert lines[1] == "|---|---|---|---|---|---|---|---|---|---|"
    assert lines[2] == ("| [01_instdisc](notebooks/01_instdisc.ipynb) | 01_instdisc | CIFAR-10 | laptop | cpu (2 threads) "
                        "| 15 | 4.9 min | 50.3% | 40.1% | +10.2 pp |")
    assert lines[3] == "| [05_moco_v1](notebooks/05_moco_v1.ipynb) | MoCo v1 | – | – | – | – | 42 s | – | – | – |"
    assert len(lines) == 4
    assert "No results yet" in results_table([])


def test_update_readme_replaces_only_the_text_between_markers(tmp_path, results_root):
    save_results("01_instdisc", LAPTOP, epochs=15, knn_top1=0.5, random_init_knn_top1=0.4)
    save_results("02_cpc", SMOKE, epochs=1)  # smoke: not in the README
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n\nintro\n{START}\nold table\n{END}\n\nfooter\n")
    assert update_readme(readme) == 1
    text = readme.read_text()
    assert text.startswith(f"# Title\n\nintro\n{START}\n| notebook |") and text.endswith(f"{END}\n\nfooter\n")
    assert "old table" not in text and "01_instdisc" in text and "02_cpc" not in text and "+10.0 pp" in text
    update_readme(readme)
    assert readme.read_text() == text  # idempotent


def test_update_readme_without_markers_is_a_clear_error(tmp_path, results_root):
    readme = tmp_path / "README.md"
    readme.write_text(f"# Title\n{END}\n{START}\n")
    with pytest.raises(ValueError, match="needs the two marker lines <!-- results:start -->"):
        update_readme(readme)
    readme.write_text("# Title\n")
    with pytest.raises(ValueError, match="in that order"):
        update_readme(readme)
    assert readme.read_text() == "# Title\n"
    with pytest.raises(FileNotFoundError, match="no README"):
        update_readme(tmp_path / "missing.md")


def test_seed_spread_against_a_loop_and_clear_errors():
    from ssl_core.results import seed_spread

    values = [0.41, 0.385, 0.402]
    spread = seed_spread(values)
    lo, hi, total = values[0], values[0], 0.0
    for v in values:
        lo, hi, total = min(lo, v), max(hi, v), total + v
    assert spread == pytest.approx({"n": 3, "mean": total / 3, "min": lo, "max": hi, "range": hi - lo})
    with pytest.raises(ValueError, match="at least 2 finite values"):
        seed_spread([0.4])
    with pytest.raises(ValueError, match="at least 2 finite values"):
        seed_spread([0.4, float("nan")])


def test_table_marks_rows_measured_before_the_protocol():
    rows = [{"notebook": "01_instdisc", "knn_top1": 0.5, "random_init_knn_top1": 0.3},
            {"notebook": "02_cpc", "knn_top1": 0.4, "random_init_knn_top1": 0.3, "eval_protocol": {"bn_refresh": True}}]
    lines = results_table(rows).splitlines()
    assert "| 50.0% † | 30.0% † |" in lines[2] and "†" not in lines[3]
    assert "before the evaluation protocol" in lines[-1]


def test_seeded_runs_go_to_seeds_and_make_a_band(tmp_path, monkeypatch):
    from ssl_core.profiles import get_profile
    from ssl_core.results import seed_band
    monkeypatch.setenv("SSL_RESULTS_DIR", str(tmp_path))
    for seed, acc in ((0, 0.50), (1, 0.52), (2, 0.49)):
        monkeypatch.setenv("SSL_SEED", str(seed))
        path = save_results("06_simclr_v1", get_profile("laptop"), knn_top1=acc)
        assert path == (tmp_path / "06_simclr_v1.json" if seed == 0 else tmp_path / "seeds" / f"06_simclr_v1-seed{seed}.json")
        record = json.loads(path.read_text())
        assert record["seed"] == seed and record["eval_protocol"]["bn_refresh"] is True
    band = seed_band("06_simclr_v1", root=tmp_path)
    assert band["seeds"] == [0, 1, 2] and band["range"] == pytest.approx(0.03)
    assert band["mean"] == pytest.approx((0.50 + 0.52 + 0.49) / 3)
    monkeypatch.setenv("SSL_SEED", "-1")
    with pytest.raises(ValueError, match="SSL_SEED must be a non-negative integer"):
        get_profile("laptop")
    monkeypatch.setenv("SSL_SEED", "1")
    from ssl_core.checkpoint import checkpoint_path
    assert "-laptop-seed1-" in checkpoint_path("06_simclr_v1", get_profile("laptop"), {"a": 1}).name
