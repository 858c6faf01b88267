import math

import pytest
import torch
from torch import nn

import plots
import utils
from data import CIFAR10
from models import S8_model
from conftest import CLASSES, class_image


def toy_data(n_train=200, n_test=50, seed=0):
    import numpy as np

    rng = np.random.default_rng(seed)

    def split(n):
        labels = torch.arange(n) % 10
        images = torch.stack([torch.from_numpy(class_image(int(y), k, rng)).permute(2, 0, 1) for k, y in enumerate(labels)])
        return images, labels

    return CIFAR10(*split(n_train), *split(n_test), CLASSES, "toy")


FAST = dict(batch_size=32, pad=2, amp="off", channels_last=False)


def test_training_lowers_the_loss():
    data = toy_data()
    torch.manual_seed(0)
    model = S8_model("bn")
    cfg = utils.TrainConfig(epochs=1, lr=0.05, **FAST)
    before, _ = utils.test(model, data, cfg)
    history = utils.fit(model, data, utils.TrainConfig(epochs=4, lr=0.05, **FAST), "cpu", progress=False, log=lambda s: None)
    assert len(history) == 4
    assert history[-1]["test_loss"] < before
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert set(history[0]) >= {"epoch", "train_loss", "train_acc", "test_loss", "test_acc", "seconds"}


def test_fit_is_repeatable():
    data = toy_data(100, 20)
    runs = []
    for _ in range(2):
        torch.manual_seed(0)
        model = S8_model("gn")
        h = utils.fit(model, data, utils.TrainConfig(epochs=1, **FAST), "cpu", progress=False, log=lambda s: None)
        runs.append((h[0]["train_loss"], h[0]["test_acc"]))
    assert runs[0] == runs[1]


def test_bf16_autocast_trains_on_cpu():
    data = toy_data(64, 20)
    torch.manual_seed(0)
    cfg = utils.TrainConfig(epochs=1, batch_size=32, amp="bf16", channels_last=True)
    h = utils.fit(S8_model("ln"), data, cfg, "cpu", progress=False, log=lambda s: None)
    assert math.isfinite(h[0]["train_loss"])


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
    cfg = utils.TrainConfig(epochs=2, batch_size=16, **{k: v for k, v in FAST.items() if k != "batch_size"})
    # 4 steps in epoch 1 and one evaluation pass (1 call) before epoch 2: NaN from epoch 2, step 3.
    with pytest.raises(FloatingPointError, match="epoch 2, step 3"):
        utils.fit(NaNAfter(4 + 1 + 2), data, cfg, "cpu", progress=False, log=lambda s: None)


def test_pick_device():
    assert utils.pick_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="CUDA is not available"):
            utils.pick_device("cuda")


class FixedLogits(nn.Module):
    """Returns preset logits for each test image, identified by its first pixel."""

    def __init__(self, logits):
        super().__init__()
        self.logits = logits
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x):
        return self.logits[: len(x)] + 0 * self.dummy


def test_mistakes_are_wrong_predictions_most_confident_first():
    data = toy_data(10, 6)
    labels = data.test_labels  # 0..5
    logits = torch.full((6, 10), -10.0)
    logits[0, 0] = 5  # right
    logits[1, 7] = 2  # wrong, less confident
    logits[2, 9] = 9  # wrong, most confident
    logits[3, 3] = 5  # right
    logits[4, 1] = 2  # wrong, ties with image 1: comes after it
    logits[5, 5] = 1  # right
    items = utils.get_incorrect_predictions(FixedLogits(logits), data, utils.TrainConfig(amp="off"))
    assert [i["index"] for i in items] == [2, 1, 4]
    assert all(i["predicted"] != i["true"] for i in items)
    assert [i["predicted"] for i in items] == [9, 7, 1] and [i["true"] for i in items] == labels[[2, 1, 4]].tolist()
    assert items[0]["confidence"] > items[1]["confidence"] == pytest.approx(items[2]["confidence"])
    assert torch.equal(items[0]["image"], data.test_images[2])


def fake_mistakes(n=12):
    return [dict(index=k, image=torch.zeros(3, 32, 32, dtype=torch.uint8), true=k % 10, predicted=(k + 1) % 10,
                 confidence=0.5) for k in range(n)]


def test_misclassified_grid_has_ten_titled_panels_in_5_rows_2_columns():
    fig = utils.plot_incorrect_predictions(fake_mistakes(), CLASSES)
    axes = fig.get_axes()
    assert len(axes) == 10
    geometry = {ax.get_subplotspec().get_geometry()[:2] for ax in axes}
    assert geometry == {(5, 2)}
    assert axes[0].get_title() == "true: airplane | pred: automobile\nconfidence 0.50"
    assert all(ax.get_title() and ax.get_images() for ax in axes)


def test_curves_show_train_and_test_loss_and_accuracy():
    history = [dict(epoch=e, train_loss=2 / e, test_loss=2.1 / e, train_acc=10 * e, test_acc=9 * e) for e in (1, 2, 3)]
    fig = plots.plot_curves(history)
    loss_ax, acc_ax = fig.get_axes()
    # The two losses are different quantities: each line says which.
    assert [l.get_label() for l in loss_ax.get_lines()] == ["train: label-smoothed, augmented, epoch average",
                                                             "test: plain, after the epoch"]
    assert [l.get_label() for l in acc_ax.get_lines()] == ["train", "test"]
    assert list(acc_ax.get_lines()[1].get_ydata()) == [9, 18, 27]
    assert all(tick == int(tick) for tick in acc_ax.xaxis.get_major_locator().tick_values(1, 3))  # whole epochs


def test_recipe_layers_defaults_norm_settings_and_overrides(monkeypatch):
    monkeypatch.setitem(utils.RECIPES, "gn", {"lr": 0.2, "channels_last": False})
    assert utils.recipe("bn") == utils.TrainConfig()
    assert utils.recipe("group") == utils.TrainConfig(lr=0.2, channels_last=False)
    assert utils.recipe("gn", lr=0.01, seed=3) == utils.TrainConfig(lr=0.01, channels_last=False, seed=3)
    with pytest.raises(ValueError, match="unknown norm"):
        utils.recipe("xn")


def test_flip_tta_averages_each_image_with_its_mirror_image():
    data = toy_data(20, 10)
    torch.manual_seed(0)
    model = S8_model("bn").eval()
    cfg = utils.TrainConfig(amp="off", channels_last=False)
    plain = utils.predict(model, data.test_images, data, cfg)
    mirrored = utils.predict(model, data.test_images.flip(3), data, cfg)
    torch.testing.assert_close(utils.predict(model, data.test_images, data, cfg, flip=True), (plain + mirrored) / 2)
    assert not torch.allclose(plain, mirrored)  # the toy images are not symmetric


@pytest.mark.parametrize("images", [40, 50, 64])  # 5, 7 and 8 steps of 8: one warm-up step would divide by zero
def test_very_short_runs_train(images):
    h = utils.fit(S8_model("gn"), toy_data(images, 10), utils.TrainConfig(epochs=1, **{**FAST, "batch_size": 8}),
                  "cpu", progress=False, log=lambda s: None)
    assert h[0]["lr"] > 0


# ---------------------------------------------------------------------------------------------
# Training levers: each is one TrainConfig field, off (or PyTorch's default) unless asked for.


def test_weight_ema_averages_weights_and_batchnorm_statistics():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(3, 2), nn.BatchNorm1d(2))
    ema = utils.WeightEMA(model, decay=0.9)
    start = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.no_grad():
        model[0].weight.add_(1.0)
    model(torch.randn(8, 3))  # moves the running statistics and counts a batch
    ema.update()  # step 1: decay min(0.9, 2/11)
    d = 2 / 11
    averaged = ema.model.state_dict()
    torch.testing.assert_close(averaged["0.weight"], d * start["0.weight"] + (1 - d) * model[0].weight)
    torch.testing.assert_close(averaged["1.running_mean"], d * start["1.running_mean"] + (1 - d) * model[1].running_mean)
    assert averaged["1.num_batches_tracked"] == 1


def test_lookahead_pulls_the_weights_halfway_back_every_k_steps():
    model = nn.Linear(2, 1, bias=False)
    with torch.no_grad():
        model.weight.fill_(1.0)
    lookahead = utils.Lookahead(model, k=2)
    with torch.no_grad():
        model.weight.fill_(3.0)
    lookahead.update()
    assert model.weight.tolist() == [[3.0, 3.0]]  # step 1 of 2: untouched
    with torch.no_grad():
        model.weight.fill_(5.0)
    lookahead.update()
    assert model.weight.tolist() == [[3.0, 3.0]]  # halfway from the slow 1.0 to 5.0
    assert lookahead.slow[0].tolist() == [[3.0, 3.0]]


def test_norm_lr_scales_the_peak_rate_of_the_norms_and_biases_only():
    model = S8_model("bn")
    cfg = utils.TrainConfig(epochs=1, lr=0.05, norm_lr=8.0, warmup=0.5)
    optimizer, scheduler = utils.make_optimizer(model, cfg, steps_per_epoch=10)
    rates = []
    for _ in range(10):
        rates.append([g["lr"] for g in optimizer.param_groups])
        optimizer.step()  # no gradients: moves nothing
        scheduler.step()
    conv_lr, norm_lr = zip(*rates)
    assert max(conv_lr) == pytest.approx(0.05) and max(norm_lr) == pytest.approx(0.4)
    assert all(n == pytest.approx(8 * c) for c, n in zip(conv_lr, norm_lr))


def test_fit_with_ema_tests_and_keeps_the_average_and_sets_bn_momentum(monkeypatch):
    data = toy_data(64, 20)
    made = []
    RealEMA = utils.WeightEMA
    monkeypatch.setattr(utils, "WeightEMA", lambda model, decay: made.append(RealEMA(model, decay)) or made[-1])
    final = {}
    for ema in (0.0, 0.9):
        torch.manual_seed(0)
        model = S8_model("bn")
        cfg = utils.TrainConfig(epochs=2, ema=ema, bn_momentum=0.3, **FAST)
        history = utils.fit(model, data, cfg, "cpu", progress=False, log=lambda s: None)
        final[ema] = model.state_dict()
        assert (utils.test(model, data, cfg)) == pytest.approx((history[-1]["test_loss"], history[-1]["test_acc"]))
    assert all(m.momentum == 0.3 for m in model.modules() if isinstance(m, nn.BatchNorm2d))
    assert len(made) == 1  # ema=0 builds no average
    for name, tensor in made[0].model.state_dict().items():
        assert torch.equal(final[0.9][name], tensor)  # the average is what the model holds
    assert not torch.equal(final[0.9]["C4.0.weight"], final[0.0]["C4.0.weight"])


def test_fit_with_lookahead_tests_and_keeps_the_slow_weights(monkeypatch):
    data = toy_data(64, 20)
    made = []
    RealLookahead = utils.Lookahead
    monkeypatch.setattr(utils, "Lookahead", lambda model, k: made.append(RealLookahead(model, k)) or made[-1])
    torch.manual_seed(0)
    model = S8_model("gn")
    utils.fit(model, data, utils.TrainConfig(epochs=2, lookahead=5, **FAST), "cpu", progress=False, log=lambda s: None)
    assert len(made) == 1
    for param, slow in zip(model.parameters(), made[0].slow):
        assert torch.equal(param, slow)


def test_lever_settings_out_of_range_are_refused_by_name():
    with pytest.raises(ValueError) as err:
        utils.TrainConfig(ema=1.0, bn_momentum=0.0, norm_lr=0.0, lookahead=-1, distill_weight=1.5,
                          distill_temperature=0).check()
    for flag in ("--ema", "--bn-momentum", "--norm-lr", "--lookahead", "--distill-weight", "--distill-temperature"):
        assert flag in str(err.value)


def test_distillation_loss_mixes_the_label_loss_with_the_teachers_softened_predictions():
    torch.manual_seed(0)
    logits, teacher, labels = torch.randn(8, 10), torch.randn(8, 10) * 3, torch.arange(8)
    cfg = utils.TrainConfig(distill_weight=0.25, distill_temperature=4.0)
    hard = torch.nn.functional.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    p_teacher = (teacher / 4).softmax(1)
    kl = (p_teacher * (p_teacher.log() - (logits / 4).log_softmax(1))).sum(1).mean()
    torch.testing.assert_close(utils.distillation_loss(logits, teacher, labels, cfg), 0.75 * hard + 0.25 * 16 * kl)
    # a student that already predicts what the teacher does owes it nothing: only the label share is left
    torch.testing.assert_close(utils.distillation_loss(teacher, teacher, labels, cfg),
                               0.75 * torch.nn.functional.cross_entropy(teacher, labels, label_smoothing=0.1))


def test_fit_distils_from_a_teacher_it_leaves_unchanged():
    data = toy_data(64, 20)
    torch.manual_seed(1)
    teacher = S8_model("bn", widths=(8, 8, 8, 8, 8, 8)).eval()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    results = {}
    for weight in (0.0, 0.9):
        torch.manual_seed(0)
        model = S8_model("gn")
        cfg = utils.TrainConfig(epochs=1, distill_weight=weight, **FAST)
        results[weight] = utils.fit(model, data, cfg, "cpu", progress=False, log=lambda s: None,
                                    teacher=teacher if weight else None)[0]["train_loss"]
    assert results[0.0] != results[0.9]  # the teacher's share changed what was learned
    for name, tensor in teacher.state_dict().items():
        assert torch.equal(tensor, before[name])  # BatchNorm's statistics included: it ran in eval mode
    for cfg, given in ((utils.TrainConfig(distill_weight=0.5, **FAST), None), (utils.TrainConfig(**FAST), teacher)):
        with pytest.raises(ValueError, match="distillation needs both a teacher"):
            utils.fit(S8_model("gn"), data, cfg, "cpu", progress=False, log=lambda s: None, teacher=given)
