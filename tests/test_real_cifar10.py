"""One epoch on the real data set, where the offline copy is present (it is on CI)."""

from pathlib import Path

import pytest
import torch

import utils
from data import load_cifar10
from models import Model_Batch_Normalization

ARCHIVE = Path(__file__).resolve().parents[2] / "shared" / "data" / "cifar10-jpg.tar.gz"


@pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"offline CIFAR-10 not at {ARCHIVE}")
def test_one_epoch_of_batchnorm_reaches_40_percent():
    data = load_cifar10(ARCHIVE)
    assert len(data.train_labels) == 50_000 and len(data.test_labels) == 10_000
    torch.manual_seed(0)
    history = utils.fit(Model_Batch_Normalization(), data, utils.TrainConfig(epochs=1), "cpu", progress=False)
    assert history[-1]["test_acc"] >= 40.0
