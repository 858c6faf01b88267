import pytest
import torch
from torch import nn

from models import (Model_Batch_Normalization, Model_Group_Normalization, Model_Layer_Normalization,
                    S8_model, count_parameters)

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


def test_layer_skips_add_each_blocks_input_to_its_output():
    torch.manual_seed(0)
    model = S8_model("bn", skips="layer").eval()
    seen = {}
    for name in ("C3", "C4", "C5"):
        getattr(model, name).register_forward_hook(lambda m, i, o, name=name: seen.__setitem__(name, (i[0], o)))
    model.c6.register_forward_hook(lambda m, i, o: seen.__setitem__("c6", (i[0], o)))
    model(torch.randn(2, 3, 32, 32))
    c3_out, (c4_in, c4_out), (c5_in, c5_out) = seen["C3"][1], seen["C4"], seen["C5"]
    torch.testing.assert_close(c4_in, c3_out)
    torch.testing.assert_close(c5_in, c3_out + c4_out)
    torch.testing.assert_close(seen["c6"][0], c5_in + c5_out)
    assert count_parameters(model) == count_parameters(S8_model("bn"))


def test_unknown_skips_are_refused():
    with pytest.raises(ValueError, match="unknown skips 'dense'.*'block', 'layer'"):
        S8_model("bn", skips="dense")
