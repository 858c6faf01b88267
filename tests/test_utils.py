"""Training and evaluation (utils.py)."""

import dataclasses
import math

import pytest
import torch
from torch import nn

import hardware
import recipes
import utils
from conftest import FAST, fixed_logits, toy_data
from models import S8_model


def quiet_fit(model, data, cfg, **kwargs):
    precision = hardware.choose_precision("cpu", getattr(model, "norm", None), cfg.amp, cfg.channels_last)
    return utils.fit(model, data, cfg, "cpu", precision, progress=False, log=lambda s: None, **kwargs)


def test_training_lowers_the_loss():
    data = toy_data()
    torch.manual_seed(0)
    model = S8_model("bn")
    before = utils.scores(model, data).loss
    history = quiet_fit(model, data, recipes.TrainConfig(epochs=4, lr=0.05, **FAST))
    assert len(history) == 4
    assert history[-1]["test_loss"] < before
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(history[0]) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "lr", "seconds"}


def test_fit_is_repeatable():
    data = toy_data(100, 20)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        h = quiet_fit(S8_model("gn"), data, recipes.TrainConfig(epochs=1, **FAST))
        runs.append((h[0]["train_loss"], h[0]["test_acc"]))
    assert runs[0] == runs[1]


def test_bf16_autocast_trains_on_cpu():
    torch.manual_seed(0)
    cfg = recipes.TrainConfig(epochs=1, batch_size=32, amp="bf16", channels_last=True)
    h = quiet_fit(S8_model("ln"), toy_data(64, 20), cfg)
    assert math.isfinite(h[0]["train_loss"])


def test_fit_uses_the_precision_it_is_given_and_decides_nothing(monkeypatch):
    """run.py chooses the precision once per run; fit, train and the scoring take it as given."""
    monkeypatch.setattr(hardware, "choose_precision", lambda *a, **k: pytest.fail("precision chosen again"))
    given = hardware.Precision("off", True, "given")
    seen, logged = [], []
    model = S8_model("bn")
    model.register_forward_pre_hook(lambda m, args: seen.append(args[0].is_contiguous(memory_format=torch.channels_last)))
    utils.fit(model, toy_data(64, 10), recipes.TrainConfig(epochs=1, batch_size=32), "cpu", given, progress=False,
              log=logged.append)
    assert seen and all(seen) and logged[0] == "precision: fp32 (given)"


class NaNAfter(nn.Module):
    """Finite logits for the first `good` calls, then NaN."""

    def __init__(self, good):
        super().__init__()
        self.good, self.calls = good, 0
        self.lin = nn.Linear(3, 10)

    def forward(self, x):
        self.calls += 1
        out = self.lin(x.mean((2, 3)))
        return out * float("nan") if self.calls > self.good else out


def test_nan_loss_stops_training_naming_epoch_and_step():
    data = toy_data(64, 10)
    cfg = recipes.TrainConfig(epochs=2, batch_size=16, **{k: v for k, v in FAST.items() if k != "batch_size"})
    # 4 steps in epoch 1 and one evaluation pass (1 call) before epoch 2: NaN from epoch 2, step 3.
    with pytest.raises(FloatingPointError, match="epoch 2, step 3"):
        quiet_fit(NaNAfter(4 + 1 + 2), data, cfg)


def test_asking_for_cuda_without_it_is_refused(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match="CUDA is not available; use --device cpu"):
        hardware.pick_device("cuda")


@pytest.mark.parametrize("settings, message", [
    (dict(lr=float("nan")), "--lr must be a finite number, got nan"),
    (dict(weight_decay=float("inf")), "--weight-decay must be a finite number, got inf"),
    (dict(warmup=float("-inf"), label_smoothing=float("nan")), "--label-smoothing must be a finite.*--warmup must be a finite"),
    (dict(momentum=0.05), "--momentum must be from 0.1 up to"),
    (dict(amp="fp8"), "--amp must be one of auto, bf16, fp16, off, got 'fp8'"),
    (dict(epochs=0, batch_size=0), "--epochs must be a whole number of at least 1, got 0; --batch-size must"),
])
def test_a_train_config_refuses_every_bad_setting_where_it_is_made(settings, message):
    with pytest.raises(ValueError, match=message):
        recipes.TrainConfig(**settings)
    with pytest.raises(ValueError, match=message):  # dataclasses.replace builds a new one: checked too
        dataclasses.replace(recipes.TrainConfig(), **settings)


def test_the_momentum_setting_is_the_momentum_one_cycle_starts_and_ends_with():
    model = S8_model("bn")
    for momentum in (0.95, 0.8):
        optimizer, scheduler = recipes.make_optimizer(model, recipes.TrainConfig(epochs=1, momentum=momentum), 10)
        seen = []
        for _ in range(10):
            seen.append(optimizer.param_groups[0]["momentum"])
            optimizer.step()
            scheduler.step()
        assert seen[0] == pytest.approx(momentum) and min(seen) == pytest.approx(momentum - 0.1)


def test_scores_give_accuracy_flip_tta_and_mistakes_from_one_pass():
    data = toy_data(10, 6)  # test labels 0..5
    calls = []
    logits = torch.full((6, 10), -10.0)
    logits[0, 0] = 5  # right
    logits[1, 7] = 2  # wrong, less confident
    logits[2, 9] = 9  # wrong, most confident
    logits[3, 3] = 5  # right
    logits[4, 1] = 2  # wrong, ties with image 1: comes after it
    logits[5, 5] = 1  # right
    model = fixed_logits(logits)
    model.register_forward_pre_hook(lambda m, args: calls.append(len(args[0])))
    scores = utils.scores(model, data, flip=True)
    assert calls == [6, 6]  # the images and their mirror images, once each
    items = scores.mistakes(data.test_images)
    assert [i["index"] for i in items] == [2, 1, 4]
    assert [i["predicted"] for i in items] == [9, 7, 1] and [i["true"] for i in items] == [2, 1, 4]
    assert items[0]["confidence"] > items[1]["confidence"] == pytest.approx(items[2]["confidence"])
    assert torch.equal(items[0]["image"], data.test_images[2])
    assert scores.accuracy == pytest.approx(50.0) and scores.flip_tta_accuracy == pytest.approx(50.0)
    assert [i["index"] for i in utils.get_incorrect_predictions(model, data, utils.FP32)] == [2, 1, 4]


def test_flip_tta_averages_each_image_with_its_mirror_image():
    data = toy_data(20, 10)
    torch.manual_seed(0)
    model = S8_model("bn").eval()
    plain = utils.predict(model, data.test_images, data)
    mirrored = utils.predict(model, data.test_images.flip(3), data)
    scores = utils.scores(model, data, flip=True)
    torch.testing.assert_close(scores.mirrored, mirrored)
    assert not torch.allclose(plain, mirrored)  # the toy images are not symmetric
    averaged = ((plain + mirrored) / 2).argmax(1)
    assert scores.flip_tta_accuracy == pytest.approx(100.0 * (averaged == data.test_labels).float().mean().item())


def test_the_last_epochs_scores_are_the_final_numbers():
    torch.manual_seed(0)
    model = S8_model("gn")
    data = toy_data(64, 20)
    history = quiet_fit(model, data, recipes.TrainConfig(epochs=2, **FAST))
    assert history.scores.mirrored is not None  # the last epoch's pass scored the mirror images too
    assert (history.scores.loss, history.scores.accuracy) == (history[-1]["test_loss"], history[-1]["test_acc"])
    assert utils.test(model, data) == (history[-1]["test_loss"], history[-1]["test_acc"])  # the student's call


def test_recipe_layers_defaults_norm_settings_and_overrides(monkeypatch):
    monkeypatch.setattr(recipes, "RECIPES", {"gn": {"lr": 0.2, "channels_last": False}})
    assert recipes.recipe("bn") == recipes.TrainConfig()
    assert recipes.recipe("group") == recipes.TrainConfig(lr=0.2, channels_last=False)
    assert recipes.recipe("gn", lr=0.01, seed=3) == recipes.TrainConfig(lr=0.01, channels_last=False, seed=3)
    with pytest.raises(ValueError, match="unknown norm"):
        recipes.recipe("xn")


@pytest.mark.parametrize("images", [40, 50, 64])  # 5, 7 and 8 steps of 8: one warm-up step would divide by zero
def test_very_short_runs_train(images):
    h = quiet_fit(S8_model("gn"), toy_data(images, 10), recipes.TrainConfig(epochs=1, **{**FAST, "batch_size": 8}))
    assert h[0]["lr"] > 0


def test_a_batch_larger_than_the_training_set_is_named_before_training():
    with pytest.warns(UserWarning, match="batch size 128 is larger than the 64 training images: one step per epoch"):
        quiet_fit(S8_model("bn"), toy_data(64, 10), recipes.TrainConfig(epochs=1, batch_size=128, amp="off"))
