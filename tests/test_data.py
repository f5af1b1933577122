"""Tests for ssl_core.data: source order, decoded cache, class order, clear errors, subset, OnDeviceLoader.

Tiny synthetic class-folder trees (8x8 PNGs written with PIL) stand in for the real datasets, and
torchvision's dataset classes are replaced by fakes so no test touches the network.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
import torchvision
from PIL import Image

from ssl_core.data import (CIFAR10_CLASSES, STL10_CLASSES, DatasetNotFoundError, ImageDataset, OnDeviceLoader,
                           data_root, load_cifar10, load_image_folder, load_stl10)


class FakeTorchvision:
    """Stands in for torchvision.datasets.CIFAR10 / STL10. By default: no official files on disk
    and no internet. `serve` = the download flags for which it returns data."""

    def __init__(self):
        self.calls, self.serve = [], set()

    def cifar10(self, root, train=True, download=False):
        self.calls.append(("cifar10", "train" if train else "test", download))
        if download not in self.serve:
            raise RuntimeError("Dataset not found or corrupted.") if not download else OSError("no internet")
        rng = np.random.default_rng(0)
        return _Namespace(data=rng.integers(0, 256, (6, 4, 5, 3), dtype=np.uint8), targets=[0, 1, 2, 3, 4, 5])

    def stl10(self, root, split="train", download=False):
        self.calls.append(("stl10", split, download))
        raise RuntimeError("Dataset not found or corrupted.") if not download else OSError("no internet")


class _Namespace:
    def __init__(self, **kw):
        self.__dict__.update(kw)


@pytest.fixture(autouse=True)
def fake_torchvision(monkeypatch):
    fake = FakeTorchvision()
    monkeypatch.setattr(torchvision.datasets, "CIFAR10", fake.cifar10)
    monkeypatch.setattr(torchvision.datasets, "STL10", fake.stl10)
    return fake


def write_tree(path, classes, per_class=2, size=(8, 8), seed=0):
    """<path>/<class>/<i>.png with random pixels; returns the images (N, 3, H, W) and labels in order."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for label, name in enumerate(classes):
        (path / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            pixels = rng.integers(0, 256, (*size, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(path / name / f"{i:04d}.png")
            images.append(torch.from_numpy(pixels).permute(2, 0, 1))
            labels.append(label)
    return torch.stack(images), torch.tensor(labels)


def test_folder_tree_is_used_when_no_official_files_and_decodes_exactly(tmp_path, fake_torchvision):
    images, labels = write_tree(tmp_path / "cifar10" / "train", CIFAR10_CLASSES)
    ds = load_cifar10("train", root=tmp_path)
    assert ds.source == f"class-folder tree {(tmp_path / 'cifar10' / 'train').resolve()}"
    assert ds.classes == list(CIFAR10_CLASSES)
    assert torch.equal(ds.images, images) and torch.equal(ds.labels, labels)
    assert ds.images.dtype == torch.uint8 and ds.labels.dtype == torch.int64
    # official files were looked for first; no download was tried since the tree was there
    assert fake_torchvision.calls == [("cifar10", "train", False)]


def test_cache_is_written_atomically_reused_and_beats_the_folder(tmp_path):
    tree = tmp_path / "cifar10" / "test"
    images, labels = write_tree(tree, CIFAR10_CLASSES)
    first = load_cifar10("test", root=tmp_path)
    cache = tmp_path / "cache" / "cifar10-test.pt"
    assert sorted(p.name for p in cache.parent.iterdir()) == ["cifar10-test.pt"]  # no temp file left behind
    blob = torch.load(cache, weights_only=True)
    assert torch.equal(blob["images"], first.images) and torch.equal(blob["labels"], first.labels)
    assert blob["classes"] == list(CIFAR10_CLASSES) and blob["source"] == first.source

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tree / "cat" / "0000.png")  # the tree changes ...
    second = load_cifar10("test", root=tmp_path)
    assert second.source == f"decoded cache {cache.resolve()} (from {first.source})"  # ... but the cache wins
    assert torch.equal(second.images, images) and torch.equal(second.labels, labels)


def test_failed_cache_write_leaves_no_file_and_still_returns_the_data(tmp_path, monkeypatch):
    images, _ = write_tree(tmp_path / "cifar10" / "train", CIFAR10_CLASSES, per_class=1)

    def save_half_then_fail(obj, f, *args, **kwargs):
        f.write(b"half a cache")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", save_half_then_fail)
    with pytest.warns(UserWarning, match="could not write the decoded cache"):
        ds = load_cifar10("train", root=tmp_path)
    assert torch.equal(ds.images, images)
    assert list((tmp_path / "cache").iterdir()) == []


def test_unreadable_cache_is_ignored_and_rewritten(tmp_path):
    images, _ = write_tree(tmp_path / "cifar10" / "train", CIFAR10_CLASSES, per_class=1)
    (tmp_path / "cache").mkdir()
    (tmp_path / "cache" / "cifar10-train.pt").write_bytes(b"not a torch file")
    with pytest.warns(UserWarning, match="ignoring the unreadable decoded cache"):
        ds = load_cifar10("train", root=tmp_path)
    assert ds.source.startswith("class-folder tree") and torch.equal(ds.images, images)
    assert load_cifar10("train", root=tmp_path).source.startswith("decoded cache")


def test_official_files_beat_the_folder_and_are_converted_to_nchw(tmp_path, fake_torchvision):
    write_tree(tmp_path / "cifar10" / "train", CIFAR10_CLASSES, per_class=1)
    fake_torchvision.serve = {False}
    ds = load_cifar10("train", root=tmp_path)
    expected = fake_torchvision.cifar10(tmp_path).data  # (N, H, W, 3)
    assert ds.source == f"official torchvision files {(tmp_path / 'cifar-10-batches-py').resolve()}"
    assert ds.images.shape == (6, 3, 4, 5)
    assert torch.equal(ds.images[2, 1], torch.from_numpy(expected[2, :, :, 1]))  # image 2, green channel
    assert ds.labels.tolist() == [0, 1, 2, 3, 4, 5]


def test_download_is_tried_last_and_its_result_cached(tmp_path, fake_torchvision):
    fake_torchvision.serve = {True}
    ds = load_cifar10("test", root=tmp_path)
    assert fake_torchvision.calls == [("cifar10", "test", False), ("cifar10", "test", True)]
    assert ds.source.startswith("official torchvision files")
    assert (tmp_path / "cache" / "cifar10-test.pt").is_file()


def test_nothing_found_error_names_every_fix(tmp_path, fake_torchvision):
    with pytest.raises(DatasetNotFoundError) as info:
        load_cifar10("train", root=tmp_path)
    message = str(info.value)
    assert isinstance(info.value, FileNotFoundError)
    assert ("cifar10", "train", True) in fake_torchvision.calls  # the download was tried, its failure caught
    for fix in ("go online", "torchvision downloads the official files",
                f"class-folder copy at {tmp_path.resolve()}/cifar10/train/<class>/<image files>",
                "airplane, automobile", "SSL_DATA_DIR", "load_image_folder(path)", "OSError: no internet"):
        assert fix in message, fix


def test_stl10_unlabeled_only_via_official_files(tmp_path):
    write_tree(tmp_path / "stl10" / "train", STL10_CLASSES, per_class=1)
    with pytest.raises(DatasetNotFoundError, match="cannot stand in for the 'unlabeled' split"):
        load_stl10("unlabeled", root=tmp_path)


@pytest.mark.parametrize("loader, valid", [(load_cifar10, "train, test"), (load_stl10, "train, test, unlabeled")])
def test_bad_split_lists_the_valid_ones(tmp_path, loader, valid):
    with pytest.raises(ValueError, match=f"valid splits: {valid}"):
        loader("validation", root=tmp_path)


def test_data_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("SSL_DATA_DIR", str(tmp_path))
    assert data_root() == tmp_path
    write_tree(tmp_path / "cifar10" / "test", CIFAR10_CLASSES, per_class=1)
    assert len(load_cifar10("test")) == 10
    monkeypatch.delenv("SSL_DATA_DIR")
    assert data_root().name == "data"


def test_stl10_official_class_order_and_offline_test_caveat(tmp_path):
    write_tree(tmp_path / "stl10" / "test", STL10_CLASSES, per_class=1)
    ds = load_stl10("test", root=tmp_path)
    assert ds.classes == list(STL10_CLASSES)
    car = STL10_CLASSES.index("car")
    assert ds.labels.tolist() == list(range(10)) and ds.classes[car] == "car"
    assert "held-out part of the official STL-10 train split" in ds.source


def test_stl10_size_resizes_antialiased_and_caches_both_sizes(tmp_path):
    images, _ = write_tree(tmp_path / "stl10" / "train", STL10_CLASSES, per_class=1)
    ds = load_stl10("train", root=tmp_path, size=4)
    assert ds.images.shape == (10, 3, 4, 4) and "resized to 4x4" in ds.source
    oracle = F.interpolate(images.float(), size=(4, 4), mode="bilinear", antialias=True).round().to(torch.uint8)
    assert torch.equal(ds.images, oracle)
    assert sorted(p.name for p in (tmp_path / "cache").iterdir()) == ["stl10-train-4.pt", "stl10-train.pt"]
    with pytest.raises(ValueError, match="size must be a positive int"):
        load_stl10("train", root=tmp_path, size=0)


def test_image_folder_mixed_sizes_error_and_size_argument(tmp_path):
    write_tree(tmp_path / "a", ["x"], per_class=2, size=(8, 8))
    Image.fromarray(np.full((6, 10, 3), 77, np.uint8)).save(tmp_path / "a" / "x" / "y.png")
    with pytest.raises(ValueError, match=r"differ in size.*pass size="):
        load_image_folder(tmp_path / "a")
    ds = load_image_folder(tmp_path / "a", size=5)
    assert ds.images.shape == (3, 3, 5, 5)
    assert (ds.images[2] == 77).all()  # a constant image stays constant when resized


def test_image_folder_class_order_grayscale_and_non_images(tmp_path):
    images, _ = write_tree(tmp_path, ["b_cls", "a_cls"], per_class=1)
    (tmp_path / "a_cls" / "notes.txt").write_text("not an image")
    Image.fromarray(np.full((8, 8), 200, np.uint8), mode="L").save(tmp_path / "a_cls" / "gray.png")
    Image.fromarray(np.full((8, 8, 3), 9, np.uint8)).save(tmp_path / "b_cls" / "z.bmp")  # decoded by PIL
    default = load_image_folder(tmp_path)
    assert default.classes == ["a_cls", "b_cls"] and default.labels.tolist() == [0, 0, 1, 1]
    assert default.images.shape == (4, 3, 8, 8) and (default.images[1] == 200).all()  # gray -> 3 channels
    assert (default.images[3] == 9).all()
    chosen = load_image_folder(tmp_path, classes=["b_cls", "a_cls"])
    assert chosen.labels.tolist() == [0, 0, 1, 1] and torch.equal(chosen.images[0], images[0])


def test_image_folder_errors(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="expects <path>/<class>/<image files>"):
        load_image_folder(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="has no image files"):
        load_image_folder(tmp_path)
    with pytest.raises(ValueError, match=r"missing class folders \['dog'\]"):
        load_image_folder(tmp_path, classes=["empty", "dog"])


def toy_dataset(counts):
    """ImageDataset whose image i is filled with i, with counts[c] images of class c."""
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate(counts)])
    images = torch.arange(len(labels), dtype=torch.uint8).view(-1, 1, 1, 1).expand(-1, 3, 2, 2).contiguous()
    return ImageDataset(images, labels, [f"c{c}" for c in range(len(counts))], "toy", name="toy", split="train")


def test_describe_and_validation():
    ds = toy_dataset([3, 2])
    assert ds.describe() == "toy train: 5 images 3x2x2, 2 classes, from toy"
    with pytest.raises(ValueError, match="uint8"):
        ImageDataset(ds.images.float(), ds.labels, ds.classes, "x")
    with pytest.raises(ValueError, match="int64"):
        ImageDataset(ds.images, ds.labels[:3], ds.classes, "x")
    moved = ds.to("meta")
    assert moved.images.device.type == "meta" and ds.images.device.type == "cpu"


def test_subset_is_class_balanced_deterministic_and_ordered():
    ds = toy_dataset([7] * 10)
    sub = ds.subset(25, seed=3)
    assert len(sub) == 25 and sub.labels.bincount().min() >= 25 // 10
    index = sub.images[:, 0, 0, 0].long()  # image i is filled with i
    assert torch.equal(ds.labels[index], sub.labels) and index.unique().numel() == 25
    assert torch.equal(index, index.sort().values)
    assert torch.equal(ds.subset(25, seed=3).images, sub.images)
    assert not torch.equal(ds.subset(25, seed=4).images, sub.images)
    assert "subset of 25 of 70 (seed 3)" in sub.source


def test_subset_fills_from_other_classes_when_one_is_small():
    ds = toy_dataset([1, 10, 10])
    sub = ds.subset(12)
    assert len(sub) == 12 and sub.labels.bincount().tolist()[0] == 1
    with pytest.raises(ValueError, match="between 1 and 21"):
        ds.subset(22)


def flatten(loader):
    return [batch for batch in loader]


def test_loader_covers_every_index_once_and_yields_matching_batches():
    ds = toy_dataset([25, 25])
    loader = OnDeviceLoader(ds, batch_size=8, drop_last=False, seed=0)
    batches = flatten(loader)
    assert len(loader) == len(batches) == 7 and [len(b[0]) for b in batches][-1] == 2
    idx = torch.cat([b[0] for b in batches])
    assert torch.equal(idx.sort().values, torch.arange(50)) and not torch.equal(idx, torch.arange(50))
    for i, x, y in batches:
        assert i.dtype == torch.int64 and torch.equal(x, ds.images[i]) and torch.equal(y, ds.labels[i])


def test_loader_drop_last_seed_and_no_shuffle():
    images = torch.zeros(50, 3, 2, 2, dtype=torch.uint8)
    loader = OnDeviceLoader(images, batch_size=8, seed=1)
    epoch1, epoch2 = [torch.cat([b[0] for b in flatten(loader)]) for _ in range(2)]
    assert len(loader) == 6 and len(epoch1) == 48 and epoch1.unique().numel() == 48
    assert not torch.equal(epoch1, epoch2)  # a new order each epoch ...
    again = OnDeviceLoader(images, batch_size=8, seed=1)
    assert torch.equal(torch.cat([b[0] for b in flatten(again)]), epoch1)  # ... the same sequence per seed
    assert (flatten(loader)[0][2] == -1).all()  # no labels given -> -1
    ordered = OnDeviceLoader(images, batch_size=8, shuffle=False)
    assert torch.equal(torch.cat([b[0] for b in flatten(ordered)]), torch.arange(48))


def test_loader_errors():
    ds = toy_dataset([2, 2])
    with pytest.raises(ValueError, match="gives no batches"):
        OnDeviceLoader(ds, batch_size=5)
    with pytest.raises(ValueError, match="must match images"):
        OnDeviceLoader(ds.images, torch.zeros(3, dtype=torch.int64), batch_size=2)
    with pytest.raises(ValueError, match="labels come from the dataset"):
        OnDeviceLoader(ds, ds.labels, batch_size=2)
    assert len(OnDeviceLoader(ds, batch_size=5, drop_last=False)) == 1


@pytest.mark.skipif(not (data_root() / "cifar10" / "test").is_dir() and
                    not (data_root() / "cache" / "cifar10-test.pt").is_file(),
                    reason="real CIFAR-10 not unpacked (tar -xzf ../shared/data/cifar10-jpeg.tar.gz -C data/)")
def test_real_cifar10_test_split():
    ds = load_cifar10("test")
    assert ds.images.shape == (10_000, 3, 32, 32) and ds.classes == list(CIFAR10_CLASSES)
    assert ds.labels.bincount().tolist() == [1000] * 10
