import tarfile

import pytest
import torch
import torch.nn.functional as F

import data as data_module
from conftest import CLASSES, add_member, write_archive, write_batches, write_tree
from data import DataSourceError, augment, load_cifar10


def check(d, n_train=40, n_test=20):
    assert d.train_images.shape == (n_train, 3, 32, 32) and d.train_images.dtype == torch.uint8
    assert d.test_images.shape == (n_test, 3, 32, 32) and d.test_images.dtype == torch.uint8
    assert d.train_labels.dtype == torch.int64 and len(d.train_labels) == n_train
    assert d.classes == CLASSES


def test_image_folder_tree(tree, cache):
    d = load_cifar10(tree, cache_dir=cache)
    check(d)
    assert d.train_labels.tolist() == [c for c in range(10) for _ in range(4)]  # sorted class order


def test_jpeg_tree(tmp_path, cache):
    check(load_cifar10(write_tree(tmp_path / "jpg", suffix=".jpg"), cache_dir=cache))


def test_archive_matches_the_tree_it_was_made_from(tree, archive, cache):
    from_tree, from_archive = load_cifar10(tree, cache_dir=cache), load_cifar10(archive, cache_dir=cache)
    check(from_archive)
    assert torch.equal(from_tree.train_images, from_archive.train_images)
    assert torch.equal(from_tree.test_labels, from_archive.test_labels)


def test_images_keep_their_pixels(tree, cache):
    from PIL import Image
    import numpy as np

    d = load_cifar10(tree, cache_dir=cache)
    first_cat = np.array(Image.open(tree / "train" / "cat" / "0000.png"))
    assert torch.equal(d.train_images[CLASSES.index("cat") * 4], torch.from_numpy(first_cat).permute(2, 0, 1))


@pytest.mark.parametrize("inside", [False, True])
def test_python_batches(tmp_path, inside, trust_batches):
    folder = trust_batches(write_batches(tmp_path / "cifar-10-batches-py"))
    d = load_cifar10(tmp_path if inside else folder)
    check(d, n_train=30, n_test=6)


def test_torchvision_download_is_used_for_an_empty_folder(tmp_path, monkeypatch, trust_batches):
    import torchvision.datasets

    calls = []

    class FakeCIFAR10:
        def __init__(self, root, train, download):
            calls.append((root, download))
            trust_batches(write_batches(tmp_path / "dl" / "cifar-10-batches-py"))

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", FakeCIFAR10)
    check(load_cifar10(tmp_path / "dl"), n_train=30, n_test=6)
    assert calls == [(str(tmp_path / "dl"), True)]


def test_failed_download_says_what_else_works(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise RuntimeError("network unreachable")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataSourceError, match="downloading it there failed.*network unreachable(.|\n)*tar.gz"):
        load_cifar10(tmp_path / "nothing-here")


def test_decoded_images_are_cached(tree, archive, cache, monkeypatch):
    first = load_cifar10(archive, cache_dir=cache)
    assert list(cache.glob("*.pt"))
    monkeypatch.setattr(data_module, "_read_archive", lambda path: pytest.fail("decoded twice"))
    again = load_cifar10(archive, cache_dir=cache)
    assert torch.equal(first.train_images, again.train_images) and again.classes == first.classes


# ---- bad input -------------------------------------------------------------------------------


def test_missing_archive_names_it(tmp_path):
    with pytest.raises(DataSourceError, match=r"not found: .*nope\.tar\.gz(.|\n)*accepted CIFAR-10 sources"):
        load_cifar10(tmp_path / "nope.tar.gz")


def test_published_md5_sums_are_torchvisions():
    from torchvision.datasets import CIFAR10

    published = dict(CIFAR10.train_list + CIFAR10.test_list) | {CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}
    assert data_module.BATCH_MD5 == published


class Payload:
    """Unpickling this creates the marker file: what a crafted batch file could do."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_crafted_batch_pickle_is_refused_unread(tmp_path):
    import pickle

    folder = write_batches(tmp_path / "cifar-10-batches-py")  # synthetic files: not the published sums
    marker = tmp_path / "pwned"
    (folder / "data_batch_1").write_bytes(pickle.dumps({"data": Payload(marker), "labels": []}))
    with pytest.raises(DataSourceError, match=r"refusing .*data_batch_1: it is not the published CIFAR-10 file"):
        load_cifar10(tmp_path)
    assert not marker.exists()


def test_failed_download_leaves_no_folder_behind(tmp_path, monkeypatch):
    import torchvision.datasets

    def offline(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", offline)
    with pytest.raises(DataSourceError, match="downloading it there failed"):
        load_cifar10(tmp_path / "new" / "data")
    assert list(tmp_path.iterdir()) == []


def test_folder_of_something_else_is_named_not_downloaded_into(tmp_path, monkeypatch):
    import torchvision.datasets

    monkeypatch.setattr(torchvision.datasets, "CIFAR10", lambda *a, **k: pytest.fail("tried to download"))
    (tmp_path / "photos").mkdir()
    for name in ("a.txt", "b.txt", "notes.md", "x.py", "y.py", "z.py"):
        (tmp_path / "photos" / name).write_text("x")
    with pytest.raises(DataSourceError, match=r"photos is not a CIFAR-10 folder: it holds a\.txt, b\.txt, notes\.md, "
                                              r"x\.py, y\.py and 1 more, and none of the layouts"):
        load_cifar10(tmp_path / "photos")


def test_missing_folder_without_download(tmp_path):
    with pytest.raises(DataSourceError, match="no CIFAR-10 found at .*absent"):
        load_cifar10(tmp_path / "absent", download=False)


def test_empty_class_tree(tmp_path, cache):
    (tmp_path / "empty" / "train").mkdir(parents=True)
    (tmp_path / "empty" / "test").mkdir()
    with pytest.raises(DataSourceError, match="no train/<class>/ images found"):
        load_cifar10(tmp_path / "empty", cache_dir=cache)


def test_mismatched_class_tree(tmp_path, cache):
    root = write_tree(tmp_path / "t", n_train=1, n_test=1)
    (root / "test" / "truck").rename(root / "test" / "lorry")
    with pytest.raises(DataSourceError, match="train and test class folders differ"):
        load_cifar10(root, cache_dir=cache)


def test_truncated_archive(tmp_path, archive, cache):
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(archive.read_bytes()[: archive.stat().st_size // 2])
    with pytest.raises(DataSourceError, match=r"cannot read archive .*cut\.tar\.gz"):
        load_cifar10(cut, cache_dir=cache)


def test_image_that_will_not_decode_is_named(tree, cache):
    (tree / "train" / "dog" / "0001.png").write_bytes(b"not a png")
    with pytest.raises(DataSourceError, match=r"train/dog/0001\.png does not decode"):
        load_cifar10(tree, cache_dir=cache)


def test_image_of_the_wrong_size_is_named(tree, cache):
    from PIL import Image

    Image.new("RGB", (64, 64)).save(tree / "test" / "cat" / "0000.png")
    with pytest.raises(DataSourceError, match=r"test/cat/0000\.png is 64x64, expected 32x32"):
        load_cifar10(tree, cache_dir=cache)


@pytest.mark.parametrize("name,kind,link", [
    ("/etc/evil.png", tarfile.REGTYPE, ""),
    ("cifar10/../../evil.png", tarfile.REGTYPE, ""),
    ("cifar10/train/cat/link.png", tarfile.SYMTYPE, "/etc/passwd"),
    ("cifar10/train/cat/hard.png", tarfile.LNKTYPE, "cifar10/train/cat/0000.png"),
])
def test_unsafe_archive_members_are_refused(tmp_path, tree, cache, name, kind, link):
    bad = write_archive(tree, tmp_path / "bad.tar")
    with tarfile.open(bad, "a") as tar:
        add_member(tar, name, kind=kind, linkname=link)
    with pytest.raises(DataSourceError, match="refusing archive member"):
        load_cifar10(bad, cache_dir=cache)


# ---- subsets and splits ----------------------------------------------------------------------


def test_subset_is_seeded_and_mixes_classes(tree, cache):
    d = load_cifar10(tree, cache_dir=cache)
    a, b = d.subset(12, seed=1), d.subset(12, seed=1)
    assert torch.equal(a.train_labels, b.train_labels) and len(a.train_labels) == 12
    assert len(set(a.train_labels.tolist())) > 2


def test_validation_split_is_carved_from_train(tree, cache):
    d = load_cifar10(tree, cache_dir=cache)
    v = d.validation_split(10, seed=0)
    assert len(v.train_labels) == 30 and len(v.test_labels) == 10
    joined = torch.cat([v.train_images, v.test_images]).flatten(1)
    assert len(torch.unique(joined, dim=0)) == 40  # every training image exactly once


# ---- augmentation ----------------------------------------------------------------------------


def batch(n=16):
    return torch.arange(n * 3 * 32 * 32, dtype=torch.int64).remainder(251).to(torch.uint8).view(n, 3, 32, 32)


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
def test_augment_keeps_shape_and_dtype(dtype):
    x = batch().to(dtype)
    out = augment(x, gen(), pad=4, flip=True, cutout=8)
    assert out.shape == x.shape and out.dtype == dtype


def test_augment_without_changes_is_identity():
    x = batch()
    assert torch.equal(augment(x, gen(), pad=0, flip=False), x)


def test_augment_flips_some_images_and_keeps_others():
    x = batch(64)
    out = augment(x, gen(), pad=0, flip=True)
    flipped = [torch.equal(o, i.flip(-1)) for o, i in zip(out, x)]
    kept = [torch.equal(o, i) for o, i in zip(out, x)]
    assert all(f or k for f, k in zip(flipped, kept))
    assert 10 < sum(flipped) < 54


def test_augment_shifts_are_reflect_padded_crops():
    x = batch(32)
    out = augment(x, gen(), pad=4, flip=False)
    padded = F.pad(x.float(), (4, 4, 4, 4), mode="reflect")
    shifts = []
    for o, p in zip(out.float(), padded):
        match = [(dy, dx) for dy in range(9) for dx in range(9) if torch.equal(p[:, dy:dy + 32, dx:dx + 32], o)]
        assert len(match) == 1
        shifts.append(match[0])
    assert len(set(shifts)) > 10  # really random shifts, not one for all


def test_augment_is_repeatable_with_the_same_seed():
    x = batch()
    assert torch.equal(augment(x, gen(3), cutout=8), augment(x, gen(3), cutout=8))
    assert not torch.equal(augment(x, gen(3)), augment(x, gen(4)))


def test_cutout_blanks_a_square():
    x = torch.full((8, 3, 32, 32), 200, dtype=torch.uint8)
    out = augment(x, gen(), pad=0, flip=False, cutout=8)
    holes = (out == 0).all(1).sum((1, 2))
    assert ((holes > 0) & (holes <= 81)).all()
