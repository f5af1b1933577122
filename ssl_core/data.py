"""Datasets as uint8 tensors (N, 3, H, W) + int64 labels (N,); their batches come from
`OnDeviceLoader` (ssl_core.loader, available here as data.OnDeviceLoader).

Infrastructure (used by every notebook). Where load_cifar10 / load_stl10 find the images, first
that works wins:
  1. the decoded cache      <root>/cache/<name>-<split>[-<size>].pt  (written the first time any
                            other source is decoded; delete it to decode again)
  2. the official torchvision files already on disk under <root>
  3. an offline class-folder tree <root>/<name>/<split>/<class>/<image files>
  4. a torchvision download of the official files into <root>
<root> is data_root(): $SSL_DATA_DIR if set, else <repo>/data. Loaders print nothing; the
dataset's `source` says where its images came from (print `ds.describe()`).
"""

from __future__ import annotations

import functools
import os
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

# torchvision is imported where it is used (decoding, the official files), not here: a notebook that reads
# the decoded cache never needs it, and importing it costs about a second per kernel (CI starts 30 of them).

from ssl_core.checkpoint import atomic_write
from ssl_core.loader import OnDeviceLoader  # noqa: F401  (re-exported: notebooks call data.OnDeviceLoader)
from ssl_core.sampling import balanced_indices

_REPO_ROOT = Path(__file__).resolve().parents[1]
CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
STL10_CLASSES = ("airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff")


class DatasetNotFoundError(FileNotFoundError):
    """No source had the dataset; the message lists every way to get it. Infrastructure."""


def data_root() -> Path:
    """$SSL_DATA_DIR if set, else <repo>/data. Infrastructure."""
    env = os.environ.get("SSL_DATA_DIR")
    root = Path(env).expanduser() if env else _REPO_ROOT / "data"
    if env and root.exists() and not root.is_dir():
        raise NotADirectoryError(f"SSL_DATA_DIR={env} is a file, not a folder; point SSL_DATA_DIR at the data "
                                 "folder (the one that holds cifar-10-batches-py/ or cifar10/train/...) or unset it")
    return root


def _show(path: Path) -> str:
    """Path relative to the repo root when inside it (stable in committed outputs), else absolute."""
    path = Path(path).resolve()
    try:
        return str(path.relative_to(_REPO_ROOT))
    except ValueError:
        return str(path)


@dataclass
class ImageDataset:
    """Images and labels as tensors; `source` says where they came from. Infrastructure.

    images: (N, 3, H, W) uint8;  labels: (N,) int64 indices into `classes` (-1 = unlabeled).
    """

    images: torch.Tensor
    labels: torch.Tensor
    classes: list[str]
    source: str
    name: str = "images"
    split: str = ""

    def __post_init__(self):
        if self.images.dtype != torch.uint8 or self.images.dim() != 4 or self.images.shape[1] != 3:
            raise ValueError(f"images must be a uint8 tensor (N, 3, H, W), got {self.images.dtype} "
                             f"{tuple(self.images.shape)}")
        if self.labels.dtype != torch.int64 or self.labels.shape != self.images.shape[:1]:
            raise ValueError(f"labels must be an int64 tensor ({self.images.shape[0]},) to match the images, "
                             f"got {self.labels.dtype} {tuple(self.labels.shape)}")
        self.classes = list(self.classes)

    def __len__(self) -> int:
        return self.images.shape[0]

    def _with(self, images, labels, source) -> "ImageDataset":
        return ImageDataset(images, labels, self.classes, source, self.name, self.split)

    def to(self, device) -> "ImageDataset":
        """A new dataset with images and labels on `device` (the uint8 images, once)."""
        return self._with(self.images.to(device), self.labels.to(device), self.source)

    def subset(self, n: int, seed: int = 0) -> "ImageDataset":
        """n images, class-balanced (sampling.balanced_indices: n // C from each class, the rest
        filled at random from what is left); deterministic for a given seed, kept in the original
        order (the smoke profile, side runs)."""
        index = balanced_indices(self.labels, n, seed).to(self.images.device)  # (n,)
        source = f"{self.source}; class-balanced subset of {n:,} of {len(self):,} (seed {seed})"
        return self._with(self.images[index], self.labels[index], source)

    def describe(self) -> str:
        """One line, e.g. 'cifar10 train: 50,000 images 3x32x32, 10 classes, from <source>'."""
        title = f"{self.name} {self.split}" if self.split else self.name
        c, h, w = self.images.shape[1:]
        return f"{title}: {len(self):,} images {c}x{h}x{w}, {len(self.classes)} classes, from {self.source}"


def _check_size(size) -> None:
    if size is not None and (isinstance(size, bool) or not isinstance(size, int) or size < 1):
        raise ValueError(f"size must be a positive int (images become size x size), got {size!r}")


def _resize(images: torch.Tensor, size: int, chunk: int = 1024) -> torch.Tensor:
    """(N, 3, H, W) uint8 -> (N, 3, size, size) uint8, antialiased bilinear, in chunks."""
    out = []
    for part in images.split(chunk):
        part = F.interpolate(part.float(), size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        out.append(part.round_().clamp_(0, 255).to(torch.uint8))
    return torch.cat(out)


def _image_files(folder: Path) -> list[Path]:
    """The image files of one class folder, sorted by name; hidden files (macOS ._x.png, .DS_Store) skipped."""
    return sorted(p for p in folder.iterdir()
                  if p.suffix.lower() in IMAGE_SUFFIXES and not p.name.startswith(".") and p.is_file())


@functools.cache
def _torchvision_decoder():
    """torchvision's (decode_image, read_file, RGB mode), or None where it has none. Its decoders are fast
    (about 3x PIL) but deprecated since 0.29: fall back to PIL without them."""
    try:
        from torchvision.io import ImageReadMode, decode_image, read_file
    except ImportError:  # pragma: no cover - a future torchvision
        return None
    return decode_image, read_file, ImageReadMode.RGB


def _read_with_pil(file: Path) -> torch.Tensor:
    """PIL's decoder -> (3, H, W) uint8; 16-bit images are scaled to 8 bits, animations give frame 0."""
    import numpy as np
    from PIL import Image
    with Image.open(file) as pil:
        pil.seek(0)
        if pil.mode.startswith("I;16"):                                      # 16-bit grey: scale, not clip
            grey = torch.from_numpy(np.asarray(pil, dtype=np.float32) / 257.0).round().to(torch.uint8)
            return grey.expand(3, *grey.shape).contiguous()
        return torch.from_numpy(np.array(pil.convert("RGB"))).permute(2, 0, 1)  # (H,W,3) -> (3,H,W)


def _decode_file(file: Path, size: int | None) -> torch.Tensor:
    """One image file -> (3, H, W) uint8 (or (3, size, size)). 16-bit images are scaled to 8 bits,
    an animated GIF gives its first frame; a file that cannot be read is named in the error."""
    try:
        try:
            decoder = _torchvision_decoder()
            if decoder is None:
                raise RuntimeError("torchvision has no image decoder")
            decode_image, read_file, rgb = decoder
            image = decode_image(read_file(str(file)), mode=rgb)
        except RuntimeError:  # a format torchvision cannot decode (bmp, tiff ...), or no decoder: ask PIL
            image = _read_with_pil(file)
    except Exception as error:
        raise ValueError(f"could not read the image {file} ({type(error).__name__}: {error}); delete or replace it "
                         "(a half-copied file, or not an image)") from None
    if image.dim() == 4:                                                     # (frames, 3, H, W): an animation
        image = image[0]
    if image.dtype == torch.uint16:                                          # a 16-bit PNG: 0..65535 -> 0..255
        image = (image.float() / 257.0).round().to(torch.uint8)
    if size is not None and tuple(image.shape[1:]) != (size, size):
        image = _resize(image[None], size)[0]
    return image


def load_image_folder(path, size: int | None = None, classes=None) -> ImageDataset:
    """Any class-folder tree <path>/<class>/<image files> -> ImageDataset. Infrastructure.

    classes: the class folders to read, in label order (default: all folders, sorted by name).
    Files are read in sorted name order; hidden files (macOS ._x.png) are skipped. All images must share one size unless `size` is given,
    then each is resized (antialiased, aspect ratio not kept) to size x size.
    """
    path = Path(path).expanduser()
    if not path.is_dir():
        raise DatasetNotFoundError(f"no folder {path}; load_image_folder expects <path>/<class>/<image files>")
    _check_size(size)
    folders = sorted(d.name for d in path.iterdir() if d.is_dir() and not d.name.startswith("."))
    classes = folders if classes is None else list(classes)
    missing = [c for c in classes if c not in folders]
    if missing or not classes:
        raise ValueError(f"{path} must hold one folder per class (<path>/<class>/<image files>); "
                         f"missing class folders {missing}, found {folders}")
    files, labels = [], []
    for label, name in enumerate(classes):
        found = _image_files(path / name)
        if not found:
            raise ValueError(f"class folder {path / name} has no image files ({', '.join(IMAGE_SUFFIXES)})")
        files += found
        labels += [label] * len(found)
    chunks = [files[i:i + 512] for i in range(0, len(files), 512)]
    with warnings.catch_warnings(), ThreadPoolExecutor(max_workers=min(4, os.cpu_count() or 1)) as pool:
        warnings.filterwarnings("ignore", "The image decoding and encoding capabilities of TorchVision are deprecated")
        decoded = [img for part in pool.map(lambda fs: [_decode_file(f, size) for f in fs], chunks) for img in part]
    for file, image in zip(files, decoded):
        if image.shape != decoded[0].shape:
            raise ValueError(f"images in {path} differ in size: {files[0].name} is {tuple(decoded[0].shape[1:])}, "
                             f"{file.relative_to(path)} is {tuple(image.shape[1:])}; pass size=... to resize every "
                             "image to size x size")
    return ImageDataset(torch.stack(decoded), torch.tensor(labels, dtype=torch.int64), classes,
                        f"class-folder tree {_show(path)}", name=path.name)


@dataclass(frozen=True)
class _Official:
    """What differs between the official datasets (an argument, not a registry)."""
    name: str
    title: str
    classes: tuple
    splits: tuple
    folder_splits: tuple
    archive: str
    read_torchvision: Callable  # (root, split, download) -> (images, labels, source)


def _read_torchvision_cifar10(root: Path, split: str, download: bool):
    import torchvision
    ds = torchvision.datasets.CIFAR10(str(root), train=split == "train", download=download)
    images = torch.as_tensor(ds.data).permute(0, 3, 1, 2).contiguous()  # (N,32,32,3) -> (N,3,32,32)
    labels = torch.as_tensor(ds.targets, dtype=torch.int64)
    return images, labels, f"official torchvision files {_show(root / 'cifar-10-batches-py')}"


def _read_torchvision_stl10(root: Path, split: str, download: bool):
    import torchvision
    ds = torchvision.datasets.STL10(str(root), split=split, download=download)
    images = torch.as_tensor(ds.data).contiguous()  # already (N,3,96,96)
    labels = torch.as_tensor(ds.labels, dtype=torch.int64)  # -1 for 'unlabeled'
    return images, labels, f"official torchvision files {_show(root / 'stl10_binary')}"


_CIFAR10 = _Official("cifar10", "CIFAR-10", CIFAR10_CLASSES, ("train", "test"), ("train", "test"),
                     "cifar10-jpeg.tar.gz", _read_torchvision_cifar10)
_STL10 = _Official("stl10", "STL-10", STL10_CLASSES, ("train", "test", "unlabeled"), ("train", "test"),
                   "stl10-labelled-png.tar.gz", _read_torchvision_stl10)


def _read_cache(path: Path, classes: tuple):
    """(images, labels, origin) from a decoded cache, or None when absent or unusable."""
    if not path.is_file():
        return None
    try:
        blob = torch.load(path, weights_only=True)
        images, labels, origin = blob["images"], blob["labels"], str(blob["source"])
        if tuple(blob["classes"]) != classes or images.dtype != torch.uint8 or labels.shape != images.shape[:1]:
            raise ValueError("unexpected content")
    except Exception as error:
        warnings.warn(f"ignoring the unreadable decoded cache {path} ({error}); decoding again")
        return None
    return images, labels, origin


def _stale(cached, tree: Path, classes: tuple) -> bool:
    """A cache decoded from a class-folder tree is stale when the tree (still there) now holds a
    different number of image files (images added or removed since)."""
    _, labels, origin = cached
    if not origin.startswith("class-folder tree") or not tree.is_dir():
        return False
    count = sum(len(_image_files(tree / c)) for c in classes if (tree / c).is_dir())
    return count != len(labels)


def _write_cache(path: Path, images, labels, classes, origin) -> None:
    blob = {"images": images, "labels": labels, "classes": list(classes), "source": origin}
    try:
        atomic_write(path, lambda f: torch.save(blob, f))
    except OSError as error:
        warnings.warn(f"could not write the decoded cache {path} ({error}); the next load decodes again")


def _not_found(spec: _Official, split: str, root: Path, tried: list[str]) -> DatasetNotFoundError:
    where = _show(root)
    if split in spec.folder_splits:
        folder = (f"put a class-folder copy at {where}/{spec.name}/{split}/<class>/<image files> "
                  f"(class names: {', '.join(spec.classes)})")
        offline = Path("../shared/data") / spec.archive  # only this project's CI machines have it
        if offline.is_file():
            folder += f"; this machine has one: tar -xzf {offline} -C {where}/"
    else:
        folder = f"(a class-folder copy cannot stand in for the '{split}' split; only the official files have it)"
    lines = [f"{spec.title} '{split}' not found under {where}/. Tried, in order:", *[f"  - {t}" for t in tried],
             "Fix it one of these ways:",
             f"  1. go online and load again: torchvision downloads the official files into {where}/",
             f"  2. {folder}",
             f"  3. point SSL_DATA_DIR at a folder that has them (the official files, "
             f"or {spec.name}/<split>/<class>/<image files>)",
             "  4. use your own images: load_image_folder(path) reads any <path>/<class>/<image files> tree"]
    return DatasetNotFoundError("\n".join(lines))


def _decode_first_available(spec: _Official, split: str, root: Path, tried: list[str]):
    """(images, labels, origin) from official files, a class-folder tree, or a download."""
    try:
        return spec.read_torchvision(root, split, False)
    except Exception as error:
        tried.append(f"official torchvision files under {_show(root)}: not usable ({type(error).__name__})")
    tree = root / spec.name / split
    if split in spec.folder_splits and tree.is_dir():
        folder = load_image_folder(tree, classes=spec.classes)
        origin = folder.source
        if spec is _STL10 and split == "test":
            origin += (" (offline copy: this 'test' is a held-out part of the official STL-10 train split, "
                       "not the official test set; accuracies are not comparable with published STL-10 numbers)")
        return folder.images, folder.labels, origin
    why = "not there" if split in spec.folder_splits else f"offline copies have no '{split}' split"
    tried.append(f"class-folder tree {_show(tree)}: {why}")
    try:
        return spec.read_torchvision(root, split, True)
    except Exception as error:
        tried.append(f"download with torchvision into {_show(root)}: failed ({type(error).__name__}: {error})")
    raise _not_found(spec, split, root, tried)


def _load_official(spec: _Official, split: str, root, size: int | None) -> tuple[ImageDataset, str]:
    """(dataset, origin) from the first source that works; writes the decoded cache."""
    if split not in spec.splits:
        raise ValueError(f"{spec.title} has no split {split!r}; valid splits: {', '.join(spec.splits)}")
    _check_size(size)
    root = Path(root).expanduser() if root is not None else data_root()
    if root.exists() and not root.is_dir():
        raise NotADirectoryError(f"the data root {root} is a file, not a folder; pass root= a folder (or unset it "
                                 "to use SSL_DATA_DIR / <repo>/data)")
    cache = root / "cache" / (f"{spec.name}-{split}.pt" if size is None else f"{spec.name}-{split}-{size}.pt")
    cached = _read_cache(cache, spec.classes)
    if cached is not None and _stale(cached, root / spec.name / split, spec.classes):
        warnings.warn(f"the decoded cache {_show(cache)} holds {len(cached[1]):,} images but the class-folder tree "
                      f"{_show(root / spec.name / split)} now has a different number; decoding it again")
        cached = None
    if cached is not None:
        images, labels, origin = cached
        source = f"decoded cache {_show(cache)} (from {origin})"
        return ImageDataset(images, labels, list(spec.classes), source, spec.name, split), origin
    if size is None:
        tried = [f"decoded cache {_show(cache)}: not there"]
        images, labels, origin = _decode_first_available(spec, split, root, tried)
    else:  # resize the full-size images (from their own cache when there is one)
        full, full_origin = _load_official(spec, split, root, None)
        images, labels, origin = _resize(full.images, size), full.labels, f"{full_origin}, resized to {size}x{size}"
    _write_cache(cache, images, labels, spec.classes, origin)
    return ImageDataset(images, labels, list(spec.classes), origin, spec.name, split), origin


def load_cifar10(split: str = "train", root=None) -> ImageDataset:
    """CIFAR-10 'train' (50,000) or 'test' (10,000): (N, 3, 32, 32) uint8, official class order.
    root: the data folder (default data_root()). Infrastructure."""
    return _load_official(_CIFAR10, split, root, None)[0]


def load_stl10(split: str = "train", root=None, size: int | None = None) -> ImageDataset:
    """STL-10 'train' (5,000), 'test' (8,000) or 'unlabeled' (100,000, labels -1, official files
    only): (N, 3, 96, 96) uint8, official class order; size: square resize (antialiased), e.g. 64
    for laptop budgets. The offline copy has train 4,000 / test 1,000, and its 'test' is a held-out
    part of the official train split (its `source` says so). Infrastructure."""
    return _load_official(_STL10, split, root, size)[0]
