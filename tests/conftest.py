import io
import pickle
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")


def class_image(label, k, rng):
    """A 32x32 RGB image whose colour says its class: a separable toy problem."""
    base = np.array([(label * 25) % 256, (label * 70) % 256, (255 - label * 25) % 256], dtype=np.float64)
    noise = rng.normal(0, 12, (32, 32, 3))
    img = np.clip(base + noise, 0, 255).astype(np.uint8)
    img[k % 32, :, :] = 255  # a per-image stripe, so images differ
    return img


def write_tree(root, classes=CLASSES, n_train=4, n_test=2, suffix=".png", seed=0):
    rng = np.random.default_rng(seed)
    for split, n in (("train", n_train), ("test", n_test)):
        for label, name in enumerate(classes):
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(n):
                Image.fromarray(class_image(label, k, rng)).save(folder / f"{k:04d}{suffix}")
    return root


def write_archive(tree, archive, prefix="cifar10"):
    with tarfile.open(archive, "w:gz" if str(archive).endswith("gz") else "w") as tar:
        tar.add(tree / "train", arcname=f"{prefix}/train")
        tar.add(tree / "test", arcname=f"{prefix}/test")
    return archive


def write_batches(folder, n_per_batch=6, seed=0):
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)

    def batch(n):
        labels = [int(x) for x in rng.integers(0, 10, n)]
        data = np.stack([class_image(y, k, rng).transpose(2, 0, 1).reshape(-1) for k, y in enumerate(labels)])
        return {"data": data, "labels": labels}

    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(batch(n_per_batch)))
    (folder / "test_batch").write_bytes(pickle.dumps(batch(n_per_batch)))
    (folder / "batches.meta").write_bytes(pickle.dumps({"label_names": list(CLASSES)}))
    return folder


@pytest.fixture
def trust_batches(monkeypatch):
    """trust_batches(folder): let data.py unpickle these synthetic batch files, as if their MD5 sums
    were CIFAR-10's published ones (the real files are not available offline)."""
    import hashlib

    import data

    def trust(folder):
        sums = {p.name: hashlib.md5(p.read_bytes()).hexdigest() for p in folder.iterdir()}
        monkeypatch.setattr(data, "BATCH_MD5", sums)
        return folder

    return trust


@pytest.fixture
def tree(tmp_path):
    return write_tree(tmp_path / "tree")


@pytest.fixture
def archive(tmp_path, tree):
    return write_archive(tree, tmp_path / "cifar.tar.gz")


@pytest.fixture
def cache(tmp_path):
    return tmp_path / "cache"


def add_member(tar, name, data=b"x", kind=tarfile.REGTYPE, linkname=""):
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    info.size = len(data) if kind == tarfile.REGTYPE else 0
    tar.addfile(info, io.BytesIO(data) if kind == tarfile.REGTYPE else None)


# ---------------------------------------------------------------------------------------------
# In-memory data and stand-in models shared by the test modules.


def toy_data(n_train=200, n_test=50, seed=0):
    """A CIFAR10 of toy images whose colour says the class (labels 0..9 in turn)."""
    import torch

    from data import CIFAR10

    rng = np.random.default_rng(seed)

    def split(n):
        labels = torch.arange(n) % 10
        images = torch.stack([torch.from_numpy(class_image(int(y), k, rng)).permute(2, 0, 1) for k, y in enumerate(labels)])
        return images, labels

    return CIFAR10(*split(n_train), *split(n_test), CLASSES, "toy")


# Small, fast and exact: fp32, NCHW, short crops.
FAST = dict(batch_size=32, pad=2, amp="off", channels_last=False)


def fixed_logits(logits):
    """A model that returns the preset `logits` (one row per test image, in order)."""
    import torch
    from torch import nn

    class FixedLogits(nn.Module):
        def __init__(self):
            super().__init__()
            self.dummy = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return logits[: len(x)] + 0 * self.dummy

    return FixedLogits()


def fake_mistakes(n=12):
    """Mistake dicts as Scores.mistakes makes them: true k % 10, predicted (k + 1) % 10."""
    import torch

    return [dict(index=k, image=torch.zeros(3, 32, 32, dtype=torch.uint8), true=k % 10, predicted=(k + 1) % 10,
                 confidence=0.5) for k in range(n)]
