import pytest
import torch
from torch import nn

from models import (NORM_TYPES, ModelConfig, Model_Batch_Normalization, Model_Group_Normalization,
                    Model_Layer_Normalization, NormType, S8Net, S8_model, canonical_norm, count_parameters)

VARIANTS = [Model_Batch_Normalization, Model_Layer_Normalization, Model_Group_Normalization]


@pytest.mark.parametrize("cls", VARIANTS)
def test_parameter_budget_and_output_shape(cls):
    model = cls()
    assert count_parameters(model) < 50_000
    assert model(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def norms_in(model):
    return [m for m in model.modules() if isinstance(m, (nn.BatchNorm2d, nn.GroupNorm, nn.LayerNorm))]


def test_norm_types():
    bn, ln, gn = (cls() for cls in VARIANTS)
    assert norms_in(bn) and all(isinstance(m, nn.BatchNorm2d) for m in norms_in(bn))
    assert len(norms_in(ln)) == 8 and all(isinstance(m, nn.GroupNorm) and m.num_groups == 1 for m in norms_in(ln))
    assert len(norms_in(gn)) == 8 and all(isinstance(m, nn.GroupNorm) and m.num_groups == 4 for m in norms_in(gn))


def test_three_versions_differ_only_in_the_norm():
    shapes = [[p.shape for n, p in cls().named_parameters() if "weight" in n and p.ndim == 4] for cls in VARIANTS]
    assert shapes[0] == shapes[1] == shapes[2]


@pytest.mark.parametrize("name,expected", [("bn", nn.BatchNorm2d), ("Batch", nn.BatchNorm2d),
                                           ("LAYER", nn.GroupNorm), ("ln", nn.GroupNorm),
                                           ("group", nn.GroupNorm), ("GN", nn.GroupNorm)])
def test_wrapper_accepts_short_and_long_names(name, expected):
    assert isinstance(norms_in(S8_model(name))[0], expected)


def test_group_count_is_an_argument():
    model = S8_model("gn", groups=2)
    assert {m.num_groups for m in norms_in(model)} == {2}


def test_unknown_norm_names_the_allowed_ones():
    with pytest.raises(ValueError, match="'bn'.*'ln'.*'gn'"):
        S8_model("instance")


def test_groups_that_do_not_divide_are_refused():
    with pytest.raises(ValueError, match="groups=3 does not divide"):
        S8_model("gn", groups=3)


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
    before, swapped = S8_model(norm, order="norm-relu"), S8_model(norm, order="relu-norm")
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
    assert [type(m) for m in bn.c1] == [nn.Conv2d, nn.BatchNorm2d, nn.ReLU]
    assert [type(m) for m in ln.c1] == [type(m) for m in gn.c1] == [nn.Conv2d, nn.ReLU, nn.GroupNorm]
    assert count_parameters(bn) == 47_970 and count_parameters(ln) == count_parameters(gn) == 48_198


def test_s8_model_returns_the_norms_named_class():
    for norm, cls in (("bn", Model_Batch_Normalization), ("Layer", Model_Layer_Normalization), ("GN", Model_Group_Normalization)):
        model = S8_model(norm)
        assert type(model) is cls and repr(model).startswith(cls.__name__)
    with pytest.raises(ValueError, match="Model_Batch_Normalization is the bn model, not gn"):
        Model_Batch_Normalization(ModelConfig(norm="gn"))


def test_a_new_norm_is_one_row_of_the_table(monkeypatch):
    """InstanceNorm (GroupNorm with a group per channel), added in one row and nowhere else."""
    row = NormType("in", ("instance",), "InstanceNorm", "Model_Instance_Normalization",
                   lambda channels, groups: nn.GroupNorm(channels, channels), "relu-norm")
    monkeypatch.setitem(NORM_TYPES, "in", row)
    model = S8_model("Instance", num_classes=10)
    assert type(model).__name__ == "Model_Instance_Normalization" and model.config.order == "relu-norm"
    assert all(m.num_groups == m.num_channels for m in norms_in(model)) and len(norms_in(model)) == 8
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, 10)
    assert count_parameters(model) == count_parameters(S8_model("gn"))
    assert canonical_norm("instance") == "in"


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


def test_conv_and_activation_are_config_fields():
    model = S8_model("gn", conv="ws", activation="gelu")
    kinds = {type(m).__name__ for m in model.modules()}
    assert {"StdConv2d", "GELU"} <= kinds and "ReLU" not in kinds
    assert count_parameters(model) == count_parameters(S8_model("gn"))  # neither adds a parameter
    assert type(S8_model("gn").C4[0]) is torch.nn.Conv2d
    for field, bad in (("activation", "tanh"), ("conv", "wide")):
        with pytest.raises(ValueError, match=f"unknown {field} '{bad}'; use one of"):
            S8_model("gn", **{field: bad})


def test_zero_init_residual_makes_each_skip_start_as_the_identity():
    torch.manual_seed(0)
    model = S8_model("ln", zero_init_residual=True)
    plain = S8_model("ln")
    for first, last, channels, size in (("C4", "C5", 3, 16), ("C8", "C9", 5, 8)):
        x = torch.randn(2, model.config.widths[channels], size, size)
        branch = getattr(model, last)(getattr(model, first)(x))
        assert torch.count_nonzero(branch) == 0  # the branch adds nothing yet
        assert torch.count_nonzero(getattr(plain, last)(getattr(plain, first)(x))) > 0
    bn = S8_model("bn", zero_init_residual=True, activation="silu")  # SiLU(0) = 0, with a gradient
    x = torch.randn(2, bn.config.widths[3], 16, 16)
    assert torch.count_nonzero(bn.C5(bn.C4(x))) == 0 and bn.C5[1].weight.abs().sum() == 0
    with pytest.raises(ValueError, match="needs the norm last in each block"):
        S8_model("bn", zero_init_residual=True)  # a ReLU after a zero scale would never move


def test_dirac_init_adds_the_identity_to_the_usual_random_start():
    torch.manual_seed(0)
    plain = S8_model("bn")
    torch.manual_seed(0)
    dirac = S8_model("bn", dirac_init=True)
    identity = torch.nn.init.dirac_(torch.empty_like(plain.C4[0].weight))
    torch.testing.assert_close(dirac.C4[0].weight, plain.C4[0].weight + identity)
    torch.testing.assert_close(dirac.C3[0].weight, plain.C3[0].weight)  # changes width: left as it was


def test_pool_first_moves_each_pool_before_its_1x1_reduction():
    torch.manual_seed(0)
    model = S8_model("bn", pool_first=True).eval()
    torch.manual_seed(0)
    reference = S8_model("bn").eval()  # the template's order, the same weights
    assert count_parameters(model) == count_parameters(reference)
    x = torch.randn(2, 3, 32, 32)
    h = reference.c2(reference.c1(x))
    pool = torch.nn.MaxPool2d(2)
    torch.testing.assert_close(model.pool(model.c3(h)), reference.c3(pool(h)))
    assert not torch.allclose(reference.c3(pool(h)), reference.pool(reference.c3(h)))  # the order matters
    assert not torch.allclose(model(x), reference(x))
    for conv in (model.c3, model.c6):
        assert [type(m) for m in conv] == [torch.nn.MaxPool2d, torch.nn.Conv2d]


def test_checkpoint_of_a_lever_model_loads_as_that_model(tmp_path):
    from models import checkpoint, load_checkpoint

    torch.manual_seed(0)
    model = S8_model("gn", conv="ws", activation="silu", zero_init_residual=True, groups=2, pool_first=True)
    torch.save(checkpoint(model), tmp_path / "gn.pt")
    loaded, _ = load_checkpoint(tmp_path / "gn.pt", norm="gn")
    assert loaded.config == model.config
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded.eval()(x), model.eval()(x))
