import pytest
import torch
from torch import nn

from models import (NORM_TYPES, ModelConfig, Model_Batch_Normalization, Model_Group_Normalization,
                    Model_Layer_Normalization, NormType, S8Net, S8_model, canonical_norm, checkpoint, count_parameters,
                    fingerprint, load_checkpoint, PARAMETER_BUDGET, StdConv2d)

VARIANTS = [Model_Batch_Normalization, Model_Layer_Normalization, Model_Group_Normalization]


@pytest.mark.parametrize("cls", VARIANTS)
def test_parameter_budget_and_output_shape(cls):
    model = cls()
    assert count_parameters(model) < PARAMETER_BUDGET == 50_000
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def norms_in(model):
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))]


def test_norm_types():
    bn, ln, gn = (cls() for cls in VARIANTS)
    assert norms_in(bn) and all(isinstance(m, nn.BatchNorm2d) for m in norms_in(bn))
    assert len(norms_in(ln)) == 8 and all(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in norms_in(ln))
    assert len(norms_in(gn)) == 8 and all(isinstance(m, nn.GroupNorm) and m.num_groups == 4 for m in norms_in(gn))


def test_three_versions_differ_from_batchnorms_only_in_the_norm_its_place_and_its_conv():
    """With BatchNorm put where a version puts its norm and given its 3x3 convs, every module and every
    parameter but the norm layers' is the same: the norm table (its order and conv) is the only other seam."""
    def without_norms(model):
        norms = {name for name, m in model.named_modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm))}
        modules = [(name, "norm" if name in norms else type(m).__name__) for name, m in model.named_modules() if name]
        params = [(n, p.shape) for n, p in model.named_parameters() if n.rsplit(".", 1)[0] not in norms]
        return modules, params

    for cls in VARIANTS:
        model = cls()
        twin = S8_model("bn", order=model.config.order, conv=model.config.conv)
        assert without_norms(model) == without_norms(twin), cls.__name__
    assert S8_model("gn").config.conv == "ws" and S8_model("ln").config.order == "relu-norm"


@pytest.mark.parametrize("name,expected", [("bn", nn.BatchNorm2d), ("Batch", nn.BatchNorm2d),
                                           ("LAYER", nn.GroupNorm), ("ln", nn.GroupNorm),
                                           ("group", nn.GroupNorm), ("GN", nn.GroupNorm)])
def test_wrapper_accepts_short_and_long_names(name, expected):
    assert isinstance(norms_in(S8_model(name))[0], expected)


def test_group_count_is_an_argument():
    model = S8_model("gn", groups=2)
    assert {m.num_groups for m in norms_in(model)} == {2}


def test_unknown_norm_names_the_allowed_ones():
    with pytest.raises(ValueError, match="'bn'.*'ln'.*'gn'.*'in'.*'none'.*'lnc'"):
        S8_model("weightnorm")


def test_groups_that_do_not_divide_are_refused_by_the_config_before_a_layer_is_built():
    with pytest.raises(ValueError, match="groups=3 does not divide a layer of 16 channels"):
        ModelConfig(norm="gn", groups=3)
    with pytest.raises(ValueError, match="groups=8 does not divide a layer of 28 channels"):
        ModelConfig(norm="gn", groups=8)
    assert ModelConfig(norm="bn", groups=3).groups == 3  # the other norms ignore it


class Zero(nn.Module):
    def forward(self, x):
        return torch.zeros_like(x)


@pytest.mark.parametrize("branch_end", ["C5", "C9"])
def test_skip_connections_carry_the_signal(branch_end):
    # With the end of a residual branch silenced, the output still depends on the input only
    # if the skip around that branch takes part in the forward pass.
    torch.manual_seed(0)
    model = S8_model("gn").eval()
    setattr(model, branch_end, Zero())
    a, b = model(torch.randn(1, 3, 32, 32)), model(torch.randn(1, 3, 32, 32))
    assert not torch.allclose(a, b)


@pytest.mark.parametrize("branch_end", ["C5", "C9"])
def test_skip_adds_the_branch_start_to_the_branch_end(branch_end):
    start = {"C5": "C3", "C9": "C7"}[branch_end]
    after = {"C5": "c6", "C9": None}[branch_end]
    torch.manual_seed(0)
    model = S8_model("bn").eval()
    seen = {}
    getattr(model, start).register_forward_hook(lambda m, i, o: seen.__setitem__("start", o))
    getattr(model, branch_end).register_forward_hook(lambda m, i, o: seen.__setitem__("end", o))
    if after:
        getattr(model, after).register_forward_hook(lambda m, i, o: seen.__setitem__("next_in", i[0]))
        model(torch.randn(2, 3, 32, 32))
        torch.testing.assert_close(seen["next_in"], seen["start"] + seen["end"])
    else:
        out = model(torch.randn(2, 3, 32, 32))
        pooled = (seen["start"] + seen["end"]).mean((2, 3), keepdim=True)
        torch.testing.assert_close(out, model.c10(pooled).flatten(1))


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_order_puts_the_norm_after_the_relu_and_gives_the_conv_a_bias(norm):
    before, swapped = S8_model(norm, order="norm-relu", conv="plain"), S8_model(norm, order="relu-norm", conv="plain")
    assert [type(m) for m in before.C4] == [nn.Conv2d, type(norms_in(before)[0]), nn.ReLU]
    assert [type(m) for m in swapped.C4] == [nn.Conv2d, nn.ReLU, type(norms_in(before)[0])]
    assert before.C4[0].bias is None and swapped.C4[0].bias is not None
    assert count_parameters(swapped) < 50_000
    x = torch.randn(2, 3, 32, 32)
    assert swapped(x).shape == (2, 10)


def test_unknown_order_is_refused():
    with pytest.raises(ValueError, match="unknown order 'norm-first'.*'relu-norm'"):
        S8_model("bn", order="norm-first")


def test_each_norm_sits_where_validation_put_it():
    bn, ln, gn = (cls() for cls in VARIANTS)
    assert [type(m) for m in bn.C1] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in ln.C1] == [nn.Conv2d, nn.ReLU, nn.GroupNorm]
    assert [type(m) for m in gn.C1] == [StdConv2d, nn.ReLU, nn.GroupNorm]  # weight-standardized convs
    assert count_parameters(bn) == 47_970 and count_parameters(ln) == count_parameters(gn) == 48_198


def test_s8_model_returns_the_norms_named_class():
    for norm, cls in (("bn", Model_Batch_Normalization), ("Layer", Model_Layer_Normalization), ("GN", Model_Group_Normalization)):
        model = S8_model(norm)
        assert type(model) is cls and repr(model).startswith(cls.__name__)
    with pytest.raises(ValueError, match="Model_Batch_Normalization is the bn model, not gn"):
        Model_Batch_Normalization(ModelConfig(norm="gn"))


def test_a_new_norm_is_one_row_of_the_table(monkeypatch):
    """GroupNorm with two channels per group, added in one row and nowhere else."""
    row = NormType("g2", ("pairs",), "GroupNorm of pairs", "G2", "tab:brown", "Model_Pair_Normalization",
                   lambda channels, groups: nn.GroupNorm(channels // 2, channels), "relu-norm")
    monkeypatch.setitem(NORM_TYPES, "g2", row)
    model = S8_model("Pairs", num_classes=10)
    assert type(model).__name__ == "Model_Pair_Normalization" and model.config.order == "relu-norm"
    assert all(m.num_groups * 2 == m.num_channels for m in norms_in(model)) and len(norms_in(model)) == 8
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == count_parameters(S8_model("gn"))
    assert canonical_norm("pairs") == "g2"


def test_the_controls_are_rows_of_the_table_and_stay_under_budget():
    instance, plain, per_pixel = S8_model("instance"), S8_model("none"), S8_model("channel-layernorm")
    assert type(instance).__name__ == "Model_Instance_Normalization"
    assert len(norms_in(instance)) == 8 and all(m.num_groups == m.num_channels for m in norms_in(instance))
    assert norms_in(plain) == [] and type(plain).__name__ == "Model_No_Normalization"
    assert len([m for m in per_pixel.modules() if isinstance(m, nn.LayerNorm)]) == 8
    for model in (instance, plain, per_pixel):
        assert count_parameters(model) < PARAMETER_BUDGET
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)


def different_images_logits(model):
    torch.manual_seed(0)
    with torch.no_grad():
        logits = model.eval()(torch.randn(2, 3, 32, 32))
    return (logits[0] - logits[1]).abs().max().item()


@pytest.mark.parametrize("norm", sorted(NORM_TYPES))
def test_every_norm_where_it_sits_lets_the_image_reach_the_logits(norm):
    assert different_images_logits(S8_model(norm)) > 1e-4


def test_one_channel_per_group_after_the_last_relu_gives_every_image_the_same_logits():
    """Why InstanceNorm sits before the ReLU: after it, each channel's spatial mean is the norm's shift, so
    the global average pool sees the same numbers whatever the image (the groups lesson's first point)."""
    assert different_images_logits(S8_model("in", order="relu-norm")) < 1e-5
    assert different_images_logits(S8_model("gn", channels_per_group=1)) < 1e-5
    assert different_images_logits(S8_model("gn", channels_per_group=2)) > 1e-4


def test_without_a_norm_every_conv_keeps_its_bias():
    """The norm's shift replaced the conv's bias; with no norm the bias is back, before the ReLU."""
    blocks = [m for m in S8_model("none").modules() if type(m).__name__ == "ConvBlock"]
    assert len(blocks) == 8 and all(b[0].bias is not None for b in blocks)
    assert all(b[0].bias is None for b in S8_model("bn").modules() if type(b).__name__ == "ConvBlock")


def test_channel_layer_norm_normalizes_each_pixel_over_the_channels_alone():
    torch.manual_seed(0)
    layer = S8_model("lnc").C1[2]  # conv, ReLU, norm
    x = torch.randn(2, 16, 5, 5) * 3 + 1
    y = layer(x)
    assert torch.allclose(y.mean(1), torch.zeros(2, 5, 5), atol=1e-5)
    assert torch.allclose(y.var(1, unbiased=False), torch.ones(2, 5, 5), atol=1e-3)
    # the suite's LayerNorm takes one mean over C, H and W: its pixels keep different means
    z = S8_model("ln").C1[2](x)
    assert torch.allclose(z.mean((1, 2, 3)), torch.zeros(2), atol=1e-5) and z.mean(1).std() > 0.1


def test_channels_per_group_sets_the_group_size_in_every_layer():
    model = S8_model("gn", channels_per_group=2)
    assert all(m.num_channels == 2 * m.num_groups for m in norms_in(model)) and len(norms_in(model)) == 8
    with pytest.raises(ValueError, match="channels_per_group=3 does not divide a layer of 16 channels"):
        ModelConfig(norm="gn", channels_per_group=3)
    with pytest.raises(ValueError, match="channels_per_group is GroupNorm's"):
        ModelConfig(norm="bn", channels_per_group=2)


def test_the_skips_switch_removes_both_additions_and_nothing_else():
    torch.manual_seed(0)
    on = S8_model("ln")
    off = S8_model("ln", skips=False)
    off.load_state_dict(on.state_dict())  # same weights: only the two additions differ
    x = torch.randn(2, 3, 32, 32)
    assert not torch.allclose(on(x), off(x))
    # without skips, forward is the plain chain of the layers
    chain = [off.C1, off.C2, off.c3, off.P1, off.C3, off.C4, off.C5, off.c6, off.P2, off.C7, off.C8, off.C9]
    h = x
    for layer in chain:
        h = layer(h)
    assert torch.allclose(off(x), off.c10(h.mean((2, 3), keepdim=True)).flatten(1), atol=1e-6)
    # with them, C3's output joins C5's and C7's joins C9's
    h = on.C3(on.P1(on.c3(on.C2(on.C1(x)))))
    h = on.C7(on.P2(on.c6(on.C5(on.C4(h)) + h)))
    h = on.C9(on.C8(h)) + h
    assert torch.allclose(on(x), on.c10(h.mean((2, 3), keepdim=True)).flatten(1), atol=1e-6)
    assert count_parameters(on) == count_parameters(off)


def test_model_config_is_what_the_model_is_built_from():
    config = ModelConfig(norm="group", widths=[8, 16, 8, 12, 8, 16], groups=2)
    assert (config.norm, config.widths, config.order) == ("gn", (8, 16, 8, 12, 8, 16), "relu-norm")
    model = S8Net(config)
    assert model.config is config and model.C9[0].out_channels == 16 and norms_in(model)[0].num_groups == 2
    assert S8_model(**config.to_dict()).config == config
    with pytest.raises(ValueError, match="widths takes 6 channel counts"):
        ModelConfig(widths=(16, 32))


# ---------------------------------------------------------------------------------------------
# The levers of the accuracy push: each is one ModelConfig field, off by default.


def test_weight_standardized_conv_ignores_each_filters_offset_and_scale():
    from models import StdConv2d

    torch.manual_seed(0)
    conv = StdConv2d(3, 4, 3, padding=1, bias=False)
    x = torch.randn(2, 3, 8, 8)
    before = conv(x)
    with torch.no_grad():  # per filter: any shift and positive scale leave the standardized filter as it was
        conv.weight.mul_(torch.tensor([3.0, 2.0, 7.0, 1.0]).view(4, 1, 1, 1)).add_(torch.randn(4, 1, 1, 1))
    torch.testing.assert_close(conv(x), before, rtol=2e-3, atol=2e-3)  # up to the 1e-5 in the variance
    plain = torch.nn.functional.conv2d(x, conv.weight, padding=1)
    assert not torch.allclose(plain, before, atol=1e-2)


def test_conv_is_a_config_field_whose_default_is_the_norms():
    model = S8_model("ln", conv="ws")
    assert type(model.C4[0]).__name__ == "StdConv2d" and type(S8_model("ln").C4[0]) is torch.nn.Conv2d
    assert count_parameters(model) == count_parameters(S8_model("ln"))  # it adds no parameter
    # GroupNorm's convs are weight-standardized unless asked otherwise; the 1x1 convs never are
    assert type(S8_model("gn").C4[0]).__name__ == "StdConv2d" and ModelConfig(norm="gn").conv == "ws"
    assert type(S8_model("gn", conv="plain").C4[0]) is torch.nn.Conv2d and type(S8_model("gn").c3) is torch.nn.Conv2d
    assert {ModelConfig(norm=n).conv for n in ("bn", "ln", "in", "none", "lnc")} == {"plain"}
    with pytest.raises(ValueError, match="unknown conv 'wide'; use one of 'plain', 'ws'"):
        S8_model("gn", conv="wide")


# ---------------------------------------------------------------------------------------------
# Checkpoints: the weights bound to the description of the model they fit.


def saved(tmp_path, model, name="model.pt"):
    torch.save(checkpoint(model), tmp_path / name)
    return tmp_path / name


def test_checkpoint_loads_as_the_model_it_was_saved_from(tmp_path):
    torch.manual_seed(0)
    model = S8_model("gn", conv="ws", groups=2, widths=(8, 16, 8, 12, 8, 16))
    loaded, ckpt = load_checkpoint(saved(tmp_path, model), norm="gn")
    assert loaded.config == model.config and type(loaded) is Model_Group_Normalization
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))


def test_a_checkpoint_holds_cpu_copies_of_the_weights(monkeypatch):
    """A GPU run's checkpoint must load with a plain torch.load where there is no GPU: checkpoint() moves
    every tensor to the CPU. No GPU here, so the model's state_dict hands out tensors that say where they
    were moved to."""
    moved = []

    class OnAnotherDevice(torch.Tensor):
        def cpu(self):
            moved.append(self)
            return torch.Tensor(self).clone()

    model = S8_model("bn")
    weights = {name: t.as_subclass(OnAnotherDevice) for name, t in model.state_dict().items()}
    monkeypatch.setattr(model, "state_dict", lambda: weights)
    saved_weights = checkpoint(model)["model"]
    assert len(moved) == len(weights)
    assert all(type(t) is torch.Tensor and t.device.type == "cpu" for t in saved_weights.values())


def test_checkpoint_of_another_norm_is_refused(tmp_path):
    path = saved(tmp_path, S8_model("ln"), "ln.pt")
    assert load_checkpoint(path, norm="layer")[1]["model_config"]["norm"] == "ln"
    with pytest.raises(ValueError, match=r"ln\.pt holds a Model_Layer_Normalization, not the "
                                         r"Model_Group_Normalization asked for; load checkpoints/gn\.pt"):
        load_checkpoint(path, norm="gn")


def test_relabelled_checkpoint_is_refused(tmp_path):
    """LayerNorm weights under a description that says GroupNorm: same shapes, so only the
    fingerprint notices."""
    ckpt = checkpoint(S8_model("ln"))
    ckpt["model_config"]["norm"] = ckpt["norm"] = "gn"
    S8_model(**ckpt["model_config"]).load_state_dict(ckpt["model"])  # it would load silently
    torch.save(ckpt, tmp_path / "gn.pt")
    with pytest.raises(ValueError, match="does not match the weights saved with it"):
        load_checkpoint(tmp_path / "gn.pt", norm="gn")


def test_checkpoint_without_a_description_is_refused(tmp_path):
    torch.save({"model": S8_model("bn").state_dict(), "norm": "bn"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="holds no model description"):
        load_checkpoint(tmp_path / "old.pt")


def test_checkpoint_of_a_removed_option_is_refused_by_name(tmp_path):
    model = S8_model("bn")
    config = {**model.config.to_dict(), "pool_first": True}  # an option an earlier version had
    torch.save({"model": model.state_dict(), "model_config": config, "norm": "bn",
                "fingerprint": fingerprint(config, model.state_dict())}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match=r"model options this version no longer has \(pool_first\)"):
        load_checkpoint(tmp_path / "old.pt")


def test_missing_checkpoint_says_how_to_make_one(tmp_path):
    with pytest.raises(ValueError, match="no checkpoint at .*; train one with `python run.py --norm NORM`"):
        load_checkpoint(tmp_path / "absent.pt")


def test_fingerprint_changes_with_any_weight():
    model = S8_model("gn")
    config = {"norm": "gn"}
    before = fingerprint(config, model.state_dict())
    with torch.no_grad():
        model.c10.bias[3] += 1e-6
    assert fingerprint(config, model.state_dict()) != before
