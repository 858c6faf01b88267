"""CIFAR-10 as uint8 tensors in memory (`load_cifar10`), and whole-batch augmentation on the training device."""

import hashlib
import io
import os
import pickle
import re
import tarfile
import zlib
from dataclasses import dataclass, fields, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from atomic import torch_save

ACCEPTED_SOURCES = """accepted CIFAR-10 sources:
  1. a folder to download into with torchvision (needs internet; e.g. --data data)
  2. a 'cifar-10-batches-py' folder, or a folder that holds one
  3. an image-folder tree with train/<class>/*.png|jpg and test/<class>/*.png|jpg
  4. a .tar.gz (or .tgz/.tar) archive of such a tree, e.g. ../shared/data/cifar10-jpg.tar.gz"""

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}

# MD5 of the files of the CIFAR-10 python version, as published with it (torchvision checks the
# same sums). A batch file is a pickle, and unpickling runs whatever code the file names: only
# these exact files are ever unpickled.
BATCH_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}
# What torchvision's download leaves in its folder: a folder holding only these may be downloaded into.
DOWNLOAD_FILES = {"cifar-10-python.tar.gz", "cifar-10-batches-py"}
ARCHIVE_SUFFIXES = (".tar.gz", ".tgz", ".tar")
# S8_CACHE_DIR moves it, e.g. to share one decoded copy between clones.
DEFAULT_CACHE = Path(os.environ.get("S8_CACHE_DIR") or Path(__file__).resolve().parent / ".cache")


class DataSourceError(ValueError):
    """A data source that cannot be read; the message names the file and the accepted sources."""

    def __init__(self, problem):
        super().__init__(f"{problem}\n{ACCEPTED_SOURCES}")


@dataclass(frozen=True)
class CIFAR10:
    train_images: torch.Tensor  # uint8 (N, 3, 32, 32)
    train_labels: torch.Tensor  # int64 (N,)
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple
    source: str  # what the images came from, without machine-specific folders

    @cached_property
    def mean(self):
        """Per-channel mean of the training images, in [0, 1] units."""
        return self.train_images.float().mean((0, 2, 3)) / 255

    @cached_property
    def std(self):
        return self.train_images.float().std((0, 2, 3)) / 255

    def to(self, device):
        """The same data with every tensor on `device`."""
        moved = replace(self, **{k: v.to(device) for k, v in self.tensors().items()})
        moved.__dict__.update(mean=self.mean.to(device), std=self.std.to(device))  # computed once
        return moved

    def tensors(self):
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in ("classes", "source")}

    def subset(self, n_train, n_test=None, seed=0):
        """A seeded random subset (class folders are stored in order, so never take the first N)."""
        g = torch.Generator().manual_seed(seed)
        n_test = n_test if n_test is not None else max(n_train // 5, 1)
        tr = torch.randperm(len(self.train_labels), generator=g)[:n_train]
        te = torch.randperm(len(self.test_labels), generator=g)[:n_test]
        return replace(self, train_images=self.train_images[tr], train_labels=self.train_labels[tr],
                       test_images=self.test_images[te], test_labels=self.test_labels[te],
                       source=f"{self.source}, subset {n_train}/{n_test}" + (f" (seed {seed})" if seed else ""))

    def validation_split(self, n_val=5000, seed=0):
        """Hold out `n_val` seeded training images as the 'test' set, for choosing settings."""
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(self.train_labels), generator=g)
        tr, va = perm[n_val:], perm[:n_val]
        return replace(self, train_images=self.train_images[tr], train_labels=self.train_labels[tr],
                       test_images=self.train_images[va], test_labels=self.train_labels[va],
                       source=f"{self.source}, validation split {n_val} (seed {seed})")


# === Loading ======================================================================================

def add_source_flags(parser):
    """--data, --cache and --device: the flags every command (run.py, python -m lab, its benchmark) shares."""
    parser.add_argument("--data", default="data", help="CIFAR-10 source: a folder (downloaded into if empty), "
                        "a cifar-10-batches-py folder, an image-folder tree, or a .tar.gz of one")
    parser.add_argument("--cache", default=None, help="folder for decoded images (default: .cache/ beside this file)")
    parser.add_argument("--device", default=None, help="cuda | mps | cpu (default: the first available)")


def load_cifar10(source="data", cache_dir=None, download=True):
    """CIFAR-10 from `source` (see ACCEPTED_SOURCES), decoded at most once: cached as a .pt file in `cache_dir`
    (default: .cache/ beside this file), keyed by the source's path, size and modification time."""
    path = Path(source).expanduser()
    if path.is_file() or str(path).endswith(ARCHIVE_SUFFIXES):
        if not path.is_file():
            raise DataSourceError(f"CIFAR-10 archive not found: {path}")
        return _cached(path, cache_dir, lambda: _read_archive(path), f"{path.name} (archive)")
    if path.is_dir():
        batches = next((p for p in (path, path / "cifar-10-batches-py") if (p / "data_batch_1").is_file()), None)
        if batches is not None:
            return _read_batches(batches)  # the pickles load in about a second: no cache needed
        if (path / "train").is_dir() or (path / "test").is_dir():
            return _cached(path, cache_dir, lambda: _read_image_folder(path), f"{path.name}/ (image folder)")
        others = sorted(p.name for p in path.iterdir() if p.name not in DOWNLOAD_FILES)
        if others:  # never download into, or guess at, a folder of something else
            shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
            raise DataSourceError(f"{path} is not a CIFAR-10 folder: it holds {shown}, and none of the layouts "
                                  f"below; point --data at the data itself, or at an empty or new folder to download into")
    if not download:
        raise DataSourceError(f"no CIFAR-10 found at {path}")
    return _download(path)


def _download(path):
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    created = [p for p in (path, *path.parents) if not p.exists()]
    try:
        path.mkdir(parents=True, exist_ok=True)
        TorchvisionCIFAR10(str(path), train=True, download=True)  # checks the archive's MD5 itself
    except Exception as err:  # no network, disk full, ...: say what to do instead
        for folder in created:  # leave no empty folders behind
            if folder.is_dir() and not any(folder.iterdir()):
                folder.rmdir()
        raise DataSourceError(f"no CIFAR-10 at {path}, and downloading it there failed ({err})") from err
    return _read_batches(path / "cifar-10-batches-py")


def _read_batches(folder):
    def unpickle(name):
        file = folder / name
        if not file.is_file():
            raise DataSourceError(f"missing CIFAR-10 batch file: {file}")
        raw = file.read_bytes()
        if hashlib.md5(raw).hexdigest() != BATCH_MD5[name]:
            raise DataSourceError(f"refusing {file}: it is not the published CIFAR-10 file (its MD5 differs), and a "
                                  "batch file is a pickle that could run code when read; replace the folder with a "
                                  "fresh download (an empty --data folder) or use an image-folder copy")
        try:
            return pickle.loads(raw, encoding="latin1")  # the published file, byte for byte
        except Exception as err:
            raise DataSourceError(f"cannot read CIFAR-10 batch file {file}: {err}") from err

    def images_labels(names):
        parts = [unpickle(n) for n in names]
        x = np.concatenate([p["data"] for p in parts]).reshape(-1, 3, 32, 32)
        y = np.concatenate([p["labels"] for p in parts])
        return torch.from_numpy(x.copy()), torch.from_numpy(y).long()

    train_x, train_y = images_labels([f"data_batch_{i}" for i in range(1, 6)])
    test_x, test_y = images_labels(["test_batch"])
    classes = tuple(unpickle("batches.meta")["label_names"])
    return CIFAR10(train_x, train_y, test_x, test_y, classes, "CIFAR-10 python batches (original pixels)")


def _cached(path, cache_dir, read, description):
    stat = path.stat()
    key = hashlib.sha256(f"{path.resolve()}|{stat.st_size}|{stat.st_mtime_ns}".encode()).hexdigest()[:16]
    cache_file = Path(cache_dir or DEFAULT_CACHE) / f"cifar10-{key}.pt"
    if cache_file.is_file():
        try:
            d = torch.load(cache_file, weights_only=True, mmap=True)  # read lazily: a subset touches only its pages
            return CIFAR10(**{**d, "classes": tuple(d["classes"])})
        except Exception:
            pass  # a damaged cache is rebuilt below
    data = replace(read(), source=description)
    torch_save({**data.tensors(), "classes": list(data.classes), "source": data.source}, cache_file)
    return data


def _decode(raw, name):
    try:
        with Image.open(io.BytesIO(raw)) as im:
            im = im.convert("RGB")
    except Exception as err:
        raise DataSourceError(f"image {name} does not decode: {err}") from err
    if im.size != (32, 32):
        raise DataSourceError(f"image {name} is {im.size[0]}x{im.size[1]}, expected 32x32")
    return np.asarray(im)


def _assemble(files, where):
    """files: {(split, class, name): bytes-or-reader}; returns a CIFAR10 in class order."""
    splits = {split: sorted({c for s, c, _ in files if s == split}) for split in ("train", "test")}
    for split, classes in splits.items():
        if not classes:
            raise DataSourceError(f"no {split}/<class>/ images found in {where}")
    classes = splits["train"]
    if classes != splits["test"]:
        raise DataSourceError(f"train and test class folders differ in {where}: "
                              f"train has {classes}, test has {splits['test']}")
    out = []
    for split in ("train", "test"):
        keys = sorted(k for k in files if k[0] == split)
        images = np.stack([_decode(files[k](), f"{where}: {'/'.join(k)}") for k in keys])
        labels = torch.tensor([classes.index(k[1]) for k in keys])
        out += [torch.from_numpy(images).permute(0, 3, 1, 2).contiguous(), labels]
    return CIFAR10(*out, tuple(classes), str(where))


def _read_image_folder(root):
    files = {}
    for split in ("train", "test"):
        if not (root / split).is_dir():
            raise DataSourceError(f"missing folder {root / split}")
        for file in (root / split).glob("*/*"):
            if file.suffix.lower() in IMAGE_SUFFIXES:
                files[(split, file.parent.name, file.name)] = file.read_bytes
    return _assemble(files, root)


MEMBER = re.compile(r"^(?:.*/)?(train|test)/([^/]+)/([^/]+)$")


def _read_archive(path):
    files = {}
    try:
        with tarfile.open(path, "r:*") as tar:
            for m in tar:
                name = m.name
                if name.startswith(("/", "\\")) or ".." in Path(name).parts or re.match(r"^[A-Za-z]:", name):
                    raise DataSourceError(f"refusing archive member {name!r} in {path}: it would land outside the target folder")
                if m.issym() or m.islnk() or m.isdev():
                    raise DataSourceError(f"refusing archive member {name!r} in {path}: links and devices are not allowed")
                match = MEMBER.match(name)
                if m.isfile() and match and Path(name).suffix.lower() in IMAGE_SUFFIXES:
                    raw = tar.extractfile(m).read()
                    files[match.groups()] = lambda raw=raw: raw
    except (tarfile.TarError, EOFError, OSError, zlib.error) as err:
        raise DataSourceError(f"cannot read archive {path} (truncated or not a tar archive?): {err}") from err
    return _assemble(files, path.name)


# === Batches and augmentation: whole batches, on whatever device the data lives on ================

def train_batches(data, batch_size, generator, pad=4, flip=True, cutout=0, memory_format=torch.contiguous_format,
                  normalized=True):
    """One epoch of (images, labels) batches in a seeded random order, each augmented at once on the data's device:
    normalized float images in `memory_format`, or, with `normalized=False`, augmented uint8 (for showing them)."""
    order = torch.randperm(len(data.train_labels), device=data.train_images.device, generator=generator)
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        x = augment(data.train_images[idx], generator, pad, flip, cutout)
        if normalized:
            x = normalize(x, data.mean, data.std).contiguous(memory_format=memory_format)
        yield x, data.train_labels[idx]


def augment(images, generator, pad=4, flip=True, cutout=0):
    """Random translation by up to `pad` pixels (reflect padding), horizontal flip and cutout of a uint8 or float
    batch (N, C, H, W), of the same shape and dtype. One gather does the crop and the flip together: each output
    pixel reads from a shifted (and, for flipped images, mirrored) source index; reflecting it is reflect padding."""
    n, c, h, w = images.shape
    dev = images.device
    rows = torch.arange(h, device=dev) + torch.randint(-pad, pad + 1, (n, 1), device=dev, generator=generator)
    cols = torch.arange(w, device=dev) + torch.randint(-pad, pad + 1, (n, 1), device=dev, generator=generator)
    rows, cols = _reflect(rows, h), _reflect(cols, w)
    if flip:
        flipped = torch.rand(n, 1, device=dev, generator=generator) < 0.5
        cols = torch.where(flipped, w - 1 - cols, cols)
    index = (rows[:, :, None] * w + cols[:, None, :]).view(n, 1, h * w).expand(n, c, h * w)
    out = images.reshape(n, c, h * w).gather(2, index).view(n, c, h, w)
    if cutout:
        cy = torch.randint(0, h, (n, 1, 1), device=dev, generator=generator)
        cx = torch.randint(0, w, (n, 1, 1), device=dev, generator=generator)
        ys = torch.arange(h, device=dev).view(1, h, 1)
        xs = torch.arange(w, device=dev).view(1, 1, w)
        hole = ((ys - cy).abs() <= cutout // 2) & ((xs - cx).abs() <= cutout // 2)
        out = out.masked_fill(hole[:, None], 0)
    return out


def _reflect(index, size):
    index = index.abs()
    return torch.where(index > size - 1, 2 * (size - 1) - index, index)


def normalize(images, mean, std):
    """uint8 (N, C, H, W) -> float, standardized with per-channel mean and std in [0, 1] units."""
    mean = torch.as_tensor(mean, device=images.device).view(1, -1, 1, 1) * 255
    std = torch.as_tensor(std, device=images.device).view(1, -1, 1, 1) * 255
    return (images.float() - mean) / std
