"""The measurements the lessons make inside a model (probes.py)."""

import pytest
import torch
from torch import nn

import probes
import recipes
import utils
from conftest import FAST, toy_data
from data import normalize
from models import S8_model, count_parameters


def test_the_recorder_takes_the_percentiles_of_what_enters_each_relu_on_the_steps_it_picks():
    torch.manual_seed(0)
    model = S8_model("bn")
    seen = {}
    relu = model.C5[2]  # conv, norm, ReLU
    relu.register_forward_pre_hook(lambda m, inputs: seen.update({len(seen): inputs[0].detach().clone()}))
    recorder = probes.ActivationRecorder(model, lambda step: step in (0, 2))
    for _ in range(3):
        model(torch.randn(4, 3, 32, 32))
    model.eval()
    model(torch.randn(4, 3, 32, 32))  # evaluation is neither counted nor recorded
    recorder.remove()
    assert recorder.steps == [0, 2] and list(recorder.values) == ["C1", "C2", "C3", "C4", "C5", "C7", "C8", "C9"]
    expected = torch.quantile(seen[2].flatten(), torch.tensor([0.01, 0.2, 0.8, 0.99])).tolist()
    assert recorder.values["C5"][1] == [round(v, 5) for v in expected]
    assert all(len(v) == 2 for v in recorder.values.values())
    model.train()
    model(torch.randn(4, 3, 32, 32))  # removed: nothing more is recorded
    assert recorder.steps == [0, 2]


def test_the_recorded_steps_cover_the_first_epoch_and_the_end():
    record = probes.first_epoch_and_end(steps_per_epoch=100, total_steps=800, points=20)
    steps = [s for s in range(800) if record(s)]
    assert steps[:21] == list(range(0, 100, 5)) + [99]
    assert steps[21:] == [100, 200, 300, 400, 500, 600, 700, 799]


def test_gradient_norms_are_taken_per_layer_and_leave_the_model_alone():
    data = toy_data(32, 8)
    torch.manual_seed(0)
    model = S8_model("bn").eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    norms = probes.gradient_norms(model, data.train_images, data.train_labels, data.mean, data.std)
    assert list(norms) == ["C1", "C2", "c3", "C3", "C4", "C5", "c6", "C7", "C8", "C9", "c10"]
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # running statistics too
    assert not model.training and all(p.grad is None for p in model.parameters())
    # the same number by hand for the classifier
    copy = S8_model("bn")
    copy.load_state_dict(before)
    x = normalize(data.train_images, data.mean, data.std)
    nn.functional.cross_entropy(copy.train()(x), data.train_labels).backward()
    assert abs(norms["c10"] - copy.c10.weight.grad.norm().item()) < 1e-5


def test_folded_batchnorm_gives_the_same_logits_with_fewer_parameters():
    data = toy_data(64, 16)
    torch.manual_seed(0)
    model = S8_model("bn")
    utils.fit(model, data, recipes.TrainConfig(epochs=1, **FAST), "cpu", utils.FP32, progress=False, log=lambda s: None)
    folded = probes.fold_batchnorm(model)
    x = normalize(data.test_images, data.mean, data.std)
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), folded(x), atol=1e-4)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in folded.modules())
    assert sum(p.numel() for p in folded.parameters()) < sum(p.numel() for p in model.parameters())
    # the fused biases count: each BatchNorm's 2C numbers become C biases
    norms = [m for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert count_parameters(folded) == count_parameters(model) - sum(n.num_features for n in norms)


def test_train_mode_accuracy_takes_batches_of_one():
    data = toy_data(8, 9)
    torch.manual_seed(0)
    model = S8_model("bn")
    seen = []
    model.register_forward_hook(lambda m, args, out: seen.append(len(args[0])))
    for batch_size, batches in ((1, [1] * 9), (2, [2] * 4), (4, [4, 4])):  # a lone last image is left out
        seen.clear()
        assert 0 <= probes.accuracy_with_batch_statistics(model, data, batch_size) <= 100
        assert seen == batches


@pytest.mark.parametrize("model", [S8_model("gn"), S8_model("bn", order="relu-norm")])
def test_only_a_batchnorm_right_after_its_conv_folds(model):
    with pytest.raises(ValueError, match="only BatchNorm directly after its conv"):
        probes.fold_batchnorm(model)


def test_only_batchnorm_in_train_mode_depends_on_the_rest_of_the_batch():
    torch.manual_seed(0)
    x = torch.randn(16, 3, 32, 32)
    for norm in ("bn", "ln", "gn", "in", "none"):
        model = S8_model(norm)
        for mode in ("eval", "train"):
            difference, changed = probes.batch_dependence(model, x, mode)
            if norm == "bn" and mode == "train":
                assert difference > 0.01
            else:
                assert difference < 1e-4 and changed == 0, (norm, mode)
    model = S8_model("bn")
    before = {k: v.clone() for k, v in model.state_dict().items()}
    probes.batch_dependence(model, x, "train")
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_norm_input_is_what_the_norm_of_a_block_normalizes():
    torch.manual_seed(0)
    model = S8_model("gn").train()
    x = torch.randn(2, 3, 32, 32)
    captured = probes.norm_input(model, "C5", x)
    with torch.no_grad():  # by hand: the chain up to C5's ReLU (conv, ReLU, norm)
        h = model.C3(model.P1(model.c3(model.C2(model.C1(x)))))
        expected = model.C5[1](model.C5[0](model.C4(h)))
    assert torch.allclose(captured, expected, atol=1e-6) and not model.training


def test_watching_records_every_block_at_every_step_and_stops_where_a_short_schedule_ends():
    """The same seed gives both models the same batches; a schedule shorter than the steps asked for ends the watch."""
    data = toy_data(64, 10)
    cfg = recipes.recipe("bn", epochs=1, seed=0, batch_size=32, amp="off")
    watched = {}
    for norm in ("bn", "none"):
        torch.manual_seed(0)
        watched[norm] = probes.watch_training(S8_model(norm), data, cfg, steps=5, device="cpu")
    assert list(watched["bn"]) == ["C1", "C2", "C3", "C4", "C5", "C7", "C8", "C9"]
    assert all(len(v["mean"]) == len(v["std"]) == 2 for stats in watched.values() for v in stats.values())
    assert abs(watched["bn"]["C1"]["std"][0] - watched["none"]["C1"]["std"][0]) > 0.1  # the norm is what differs
