"""Tests for ssl_core.checkpoint: round trip, atomic writes, weights_only loading, hparams-hashed names."""

import hashlib
import json

import numpy as np
import pytest
import torch
from torch import nn

from ssl_core.checkpoint import atomic_write, checkpoint_path, load_checkpoint, save_checkpoint
from ssl_core.profiles import Profile


def make_run(seed):
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3))  # parameters and buffers
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=1, gamma=0.5)
    return model, optimizer, scheduler


def train_one_step(model, optimizer, scheduler):
    model(torch.randn(8, 4)).square().mean().backward()
    optimizer.step()
    scheduler.step()


def test_round_trip_restores_objects_in_place_and_returns_plain_values(tmp_path):
    model, optimizer, scheduler = make_run(0)
    train_one_step(model, optimizer, scheduler)
    history = [{"epoch": 0, "loss": 1.5, "knn_top1": 0.31}, {"epoch": 1, "loss": 1.2, "knn_top1": 0.35}]
    path = tmp_path / "deeper" / "run.pt"  # parent folders are created
    save_checkpoint(path, model=model, optimizer=optimizer, scheduler=scheduler, epoch=2, history=history,
                    bank=torch.arange(6.0).view(2, 3), note="laptop run")

    model2, optimizer2, scheduler2 = make_run(1)
    rest = load_checkpoint(path, model=model2, optimizer=optimizer2, scheduler=scheduler2)
    assert set(rest) == {"epoch", "history", "bank", "note"}
    assert rest["epoch"] == 2 and rest["history"] == history and rest["note"] == "laptop run"
    torch.testing.assert_close(rest["bank"], torch.arange(6.0).view(2, 3))
    for key, value in model.state_dict().items():
        torch.testing.assert_close(model2.state_dict()[key], value)
    for p, p2 in zip(model.parameters(), model2.parameters()):
        torch.testing.assert_close(optimizer2.state[p2]["momentum_buffer"], optimizer.state[p]["momentum_buffer"])
    assert scheduler2.last_epoch == scheduler.last_epoch == 1
    assert optimizer2.param_groups[0]["lr"] == pytest.approx(0.05)


def test_interrupted_save_keeps_the_old_checkpoint_and_leaves_no_temp_file(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint(path, epoch=1)

    def write_half_then_crash(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip file")
        raise KeyboardInterrupt  # the reader pressed stop mid-save

    monkeypatch.setattr(torch, "save", write_half_then_crash)
    with pytest.raises(KeyboardInterrupt):
        save_checkpoint(path, epoch=2)
    monkeypatch.undo()
    assert load_checkpoint(path) == {"epoch": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["run.pt"]


def test_missing_file_gives_none_and_leaves_objects_alone(tmp_path):
    model, optimizer, _ = make_run(0)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    assert load_checkpoint(tmp_path / "never-saved.pt", model=model, optimizer=optimizer) is None
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_files_load_with_weights_only_and_unsafe_values_are_refused(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=nn.Linear(2, 2), epoch=3)
    assert torch.load(path, weights_only=True)["epoch"] == 3
    with pytest.raises(TypeError, match=r"'history'\[0\]\['loss'\] is a numpy.ndarray.*tolist"):
        save_checkpoint(path, history=[{"loss": np.zeros(2)}])
    torch.save({"epoch": 3, "trainer": Profile("laptop", torch.device("cpu"), None, None)}, path)  # pickled object
    with pytest.raises(RuntimeError, match="could not read checkpoint.*delete it"):
        load_checkpoint(path)


def test_missing_key_and_mismatched_model_errors(tmp_path):
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=nn.Linear(4, 3), epoch=1)
    with pytest.raises(KeyError, match="has no 'ema_model'.*holds \\['epoch', 'model'\\]"):
        load_checkpoint(path, model=nn.Linear(4, 3), ema_model=nn.Linear(4, 3))
    with pytest.raises(RuntimeError, match="'model' does not fit the given Linear"):
        load_checkpoint(path, model=nn.Linear(5, 3))
    with pytest.raises(TypeError, match="has no load_state_dict"):
        load_checkpoint(path, epoch=1)
    with pytest.raises(ValueError, match="nothing to save"):
        save_checkpoint(path)


def test_tensors_are_mapped_to_the_first_modules_device(tmp_path, monkeypatch):
    path = tmp_path / "run.pt"
    save_checkpoint(path, model=nn.Linear(2, 2))
    seen = []
    real_load = torch.load
    monkeypatch.setattr(torch, "load", lambda *a, **kw: seen.append(kw) or real_load(*a, **kw))
    load_checkpoint(path, model=nn.Linear(2, 2))
    load_checkpoint(path)
    assert [kw["map_location"] for kw in seen] == [torch.device("cpu")] * 2
    assert all(kw["weights_only"] for kw in seen)


def test_checkpoint_path_hash_is_stable_and_follows_every_knob(tmp_path, monkeypatch):
    hparams = {"lr": 0.03, "tau": 0.07, "m": 4096, "arch": "small_cnn"}
    path = checkpoint_path("01_instdisc", "laptop", hparams, root=tmp_path)
    text = json.dumps(hparams, sort_keys=True, default=str)  # the definition, written out
    assert path == tmp_path / f"01_instdisc-laptop-{hashlib.sha256(text.encode()).hexdigest()[:8]}.pt"
    reordered = dict(reversed(list(hparams.items())))
    assert checkpoint_path("01_instdisc", "laptop", reordered, root=tmp_path) == path
    assert checkpoint_path("01_instdisc", "laptop", {**hparams, "tau": 0.2}, root=tmp_path) != path
    assert checkpoint_path("01_instdisc", "smoke", hparams, root=tmp_path) != path
    profile = Profile("laptop", torch.device("cpu"), None, None)
    assert checkpoint_path("01_instdisc", profile, hparams, root=tmp_path) == path
    assert checkpoint_path("x", "laptop", {"device": torch.device("cpu")}, root=tmp_path).name.startswith("x-laptop-")

    monkeypatch.setenv("SSL_CHECKPOINT_DIR", str(tmp_path / "env"))
    assert checkpoint_path("01_instdisc", "laptop", hparams).parent == tmp_path / "env"
    monkeypatch.delenv("SSL_CHECKPOINT_DIR")
    assert checkpoint_path("01_instdisc", "laptop", hparams).parent.name == "checkpoints"
    with pytest.raises(ValueError, match="file-name part"):
        checkpoint_path("runs/01", "laptop", hparams)
    with pytest.raises(TypeError, match="hparams must be a dict"):
        checkpoint_path("01_instdisc", "laptop", [("lr", 0.1)])


def test_atomic_write_writes_whole_file(tmp_path):
    path = atomic_write(tmp_path / "a" / "b.txt", lambda f: f.write(b"hello"))
    assert path.read_bytes() == b"hello" and sorted(p.name for p in path.parent.iterdir()) == ["b.txt"]


def test_resume_starts_fresh_then_continues(tmp_path):
    from ssl_core.checkpoint import resume

    path = tmp_path / "run.pt"
    model = torch.nn.Linear(3, 2)
    state = resume(path, model=model)
    assert state == {"epoch": 0, "history": [], "train_seconds": 0.0}
    save_checkpoint(path, model=model, epoch=2, history=[{"loss": 1.0}, {"loss": 0.5}], train_seconds=3.5)
    other = torch.nn.Linear(3, 2)
    state = resume(path, model=other)
    assert state["epoch"] == 2 and state["history"][-1] == {"loss": 0.5} and state["train_seconds"] == 3.5
    torch.testing.assert_close(other.weight, model.weight)
