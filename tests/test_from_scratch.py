"""The lessons' reference norms (from_scratch.py) and the check a student's version goes through."""

import copy

import pytest
import torch
from torch import nn

import from_scratch
import exercises
import probes
from conftest import FAST, toy_data
from models import S8_model


def activation():
    torch.manual_seed(0)
    return torch.randn(16, 8, 6, 6) * 3 + 1


def test_the_reference_batch_norm_passes_in_both_modes_and_leaves_pytorchs_running_averages():
    layer = nn.BatchNorm2d(8)
    nn.init.uniform_(layer.weight), nn.init.uniform_(layer.bias)
    assert from_scratch.check_batch_norm(from_scratch.batch_norm, layer, activation()) < from_scratch.TOLERANCE


@pytest.mark.parametrize("mistake", from_scratch.BATCH_NORM_MISTAKES)
def test_each_batch_norm_mistake_fails_the_check_and_is_named(mistake, capsys):
    """Even on a real-looking activation of tiny scale (C5's is about 3e-5 in variance), where eps and n / (n - 1)
    would hide under an absolute tolerance."""
    x = activation() * 0.005
    result = from_scratch.check_batch_norm(from_scratch.mistaken_batch_norm(mistake), nn.BatchNorm2d(8), x)
    assert not result < from_scratch.TOLERANCE  # NaN: the shape error, caught
    assert f"likely cause: {from_scratch.MISTAKES[mistake]}" in capsys.readouterr().out


@pytest.mark.parametrize("groups", [1, 4])
@pytest.mark.parametrize("mistake", from_scratch.GROUP_NORM_MISTAKES)
def test_each_layer_and_group_norm_mistake_fails_the_check_and_is_named(mistake, groups, capsys):
    reference = from_scratch.layer_norm if groups == 1 else from_scratch.group_norm
    wrong = from_scratch.mistaken_group_norm(mistake, 1 if groups == 1 else None)
    parameters = () if groups == 1 else (groups,)
    result, yours = from_scratch.check_norm(wrong, reference, nn.GroupNorm(groups, 8), activation() * 0.005, *parameters)
    assert yours and not result < from_scratch.TOLERANCE
    assert f"likely cause: {from_scratch.MISTAKES[mistake]}" in capsys.readouterr().out


def test_a_mistake_the_check_cannot_name_gets_the_list_of_what_to_look_at(capsys):
    def without_shift(x, weight, bias, *rest):
        return from_scratch.batch_norm(x, weight, torch.zeros_like(bias), *rest)

    assert from_scratch.check_batch_norm(without_shift, nn.BatchNorm2d(8), activation()) > from_scratch.TOLERANCE
    assert capsys.readouterr().out.splitlines()[-1].startswith("look first at: the axes")


def test_the_reference_backward_matches_autograd_and_a_missing_term_does_not(capsys):
    layer = nn.BatchNorm2d(8)
    assert from_scratch.check_batch_norm_backward(from_scratch.batch_norm_backward, layer, activation()) < 1e-5

    def without_the_variances_path(grad_out, x, weight, eps=1e-5):
        grad_x, grad_weight, grad_bias = from_scratch.batch_norm_backward(grad_out, x, weight, eps)
        inverse_std = torch.rsqrt(x.var((0, 2, 3), keepdim=True, unbiased=False) + eps)
        g = grad_out * from_scratch.per_channel(weight)
        return inverse_std * (g - g.mean((0, 2, 3), keepdim=True)), grad_weight, grad_bias

    assert from_scratch.check_batch_norm_backward(without_the_variances_path, layer, activation()) > 1e-2
    assert "gradient of the input: largest difference" in capsys.readouterr().out.split("FAIL")[-2]


def test_the_check_takes_the_students_function_once_it_returns_something(capsys):
    def stub(*arguments):
        return None

    def mine(x, weight, bias):
        return from_scratch.layer_norm(x, weight, bias)

    arguments = (activation(), torch.ones(8), torch.zeros(8))
    assert from_scratch.yours_or_reference(stub, from_scratch.layer_norm, *arguments) == (from_scratch.layer_norm, False)
    assert from_scratch.yours_or_reference(mine, from_scratch.layer_norm, *arguments) == (mine, True)
    assert capsys.readouterr().out.splitlines() == ["checking the reference, from_scratch.layer_norm", "checking your mine"]
    difference, yours = from_scratch.check_norm(stub, from_scratch.group_norm, nn.GroupNorm(2, 8), activation(), 2)
    assert difference < from_scratch.TOLERANCE and not yours


def test_a_norm_that_forgets_the_scale_and_shift_fails_even_on_an_untrained_layer():
    """An untrained layer has scale 1 and shift 0 (and BatchNorm running averages 0 and 1): the check must not
    let the student's version pass by leaving them out."""
    def layer_norm_without_scale(x, weight, bias):
        return from_scratch.layer_norm(x, torch.ones_like(weight), torch.zeros_like(bias))

    def batch_norm_without_scale(x, weight, bias, *rest):
        return from_scratch.batch_norm(x, torch.ones_like(weight), torch.zeros_like(bias), *rest)

    difference, yours = from_scratch.check_norm(layer_norm_without_scale, from_scratch.layer_norm, nn.GroupNorm(1, 8),
                                                activation())
    assert yours and difference > from_scratch.TOLERANCE
    assert from_scratch.check_batch_norm(batch_norm_without_scale, nn.BatchNorm2d(8), activation()) > from_scratch.TOLERANCE


def test_the_checks_take_a_channels_last_activation():
    """On a CPU in fp32 the model trains channels-last, and a student may run the check again after training."""
    x = activation().contiguous(memory_format=torch.channels_last)
    for groups in (1, 2, 8):
        assert from_scratch.check_norm(from_scratch.group_norm, from_scratch.group_norm, nn.GroupNorm(groups, 8), x,
                                       groups)[0] < from_scratch.TOLERANCE
    assert from_scratch.check_batch_norm(from_scratch.batch_norm, nn.BatchNorm2d(8), x) < from_scratch.TOLERANCE


def test_the_batch_norm_check_refuses_what_it_cannot_check():
    with pytest.raises(ValueError, match="track_running_stats=True"):
        from_scratch.check_batch_norm(from_scratch.batch_norm, nn.BatchNorm2d(8, track_running_stats=False), activation())
    with pytest.raises(ValueError, match=r"at least 2 images of 2x2 positions, not \(1, 8, 6, 6\)"):
        from_scratch.check_batch_norm(from_scratch.batch_norm, nn.BatchNorm2d(8), activation()[:1])


def test_the_summarys_verdict_says_pass_or_what_failed():
    assert from_scratch.verdict(4.8e-07) == "matched PyTorch's to 4.8e-07"
    assert from_scratch.verdict(0.3).endswith("(FAIL)") and "0.3" not in from_scratch.verdict(0.3)  # 3.0e-01
    assert "returned None" in from_scratch.verdict(float("inf"))
    assert "without a reshape (FAIL)" in from_scratch.verdict(float("nan"))


def test_a_half_written_batch_norm_fails_instead_of_crashing(capsys):
    def train_mode_only(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        return from_scratch.batch_norm(x, weight, bias, running_mean, running_var, True, momentum, eps) if training else None

    assert from_scratch.check_batch_norm(train_mode_only, nn.BatchNorm2d(8), activation()) == float("inf")
    assert "eval mode, output: FAIL (your function returned None here)" in capsys.readouterr().out


@pytest.mark.parametrize("groups", [1, 2, 4, 8])
def test_the_reference_layer_and_group_norms_equal_pytorchs_group_norm(groups):
    layer = nn.GroupNorm(groups, 8)
    nn.init.uniform_(layer.weight), nn.init.uniform_(layer.bias)
    x = activation()
    mine = from_scratch.group_norm(x, groups, layer.weight, layer.bias)
    assert from_scratch.check("output", mine, layer(x)) < from_scratch.TOLERANCE
    if groups == 1:
        assert from_scratch.check("output", from_scratch.layer_norm(x, layer.weight, layer.bias), layer(x)) < 1e-4


def test_a_group_norm_over_the_wrong_axes_fails():
    layer, x = nn.GroupNorm(4, 8), activation()
    per_channel = (x - x.mean((2, 3), keepdim=True)) / torch.sqrt(x.var((2, 3), keepdim=True, unbiased=False) + 1e-5)
    assert from_scratch.check("output", per_channel, layer(x)) > from_scratch.TOLERANCE


def test_recalibrated_running_averages_are_one_batchs_and_the_model_is_left_alone():
    data = toy_data(64, 10)
    torch.manual_seed(0)
    model = S8_model("bn").eval()
    before = copy.deepcopy(model.state_dict())
    recalibrated = probes.recalibrated(model, data, 16, seed=0)
    assert not recalibrated.training
    assert all(torch.equal(t, before[n]) for n, t in model.state_dict().items())
    pick = torch.randperm(64, generator=torch.Generator().manual_seed(0))[:16]
    mean, std = from_scratch.per_channel(data.mean), from_scratch.per_channel(data.std)
    conv_out = model.C1[0]((data.train_images[pick].float() / 255 - mean) / std)  # what C1's BatchNorm saw
    torch.testing.assert_close(recalibrated.C1[1].running_mean, conv_out.mean((0, 2, 3)), atol=1e-5, rtol=0)


def test_short_runs_train_each_trial_with_its_norms_recipe_and_its_own_settings(capsys):
    data = toy_data(64, 20)
    trials = {"bn": dict(norm="bn", **{k: v for k, v in FAST.items() if k != "batch_size"}),
              "gn, batch 16": dict(norm="gn", groups=2, batch_size=16, amp="off")}
    accuracies = exercises.short_runs(data, trials, images=32, epochs=1, device="cpu")
    assert list(accuracies) == list(trials) and all(0 <= a <= 100 for a in accuracies.values())
    assert str(accuracies) == "; ".join(f"{name} {a:.2f}%" for name, a in accuracies.items())  # the summaries' line
    printed = capsys.readouterr().out
    assert "bn: test accuracy" in printed and "gn, batch 16: test accuracy" in printed


def test_the_figure_of_what_each_norm_normalizes_over_has_a_panel_per_norm():
    import plots
    from explorer import normalized_over_explorer

    fig = plots.plot_normalized_over(groups=4)
    assert [ax.get_title() for ax in fig.axes] == ["BatchNorm", "LayerNorm", "InstanceNorm", "GroupNorm (4 groups)"]
    assert len(normalized_over_explorer().children) == 2  # the two dropdowns, and the figure under them
