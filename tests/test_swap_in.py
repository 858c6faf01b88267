"""from_scratch.swap_in: a lesson's norm function in every norm layer of the network, and the side-by-side training."""

import copy

import pytest
import torch
import torch.nn.functional as F

import from_scratch
import recipes
from conftest import FAST, toy_data
from models import S8_model, checkpoint, count_parameters

REFERENCES = {"bn": from_scratch.batch_norm, "ln": from_scratch.layer_norm, "gn": from_scratch.group_norm}


def twins(norm, fn):
    """A model with PyTorch's layers and a copy of it with `fn` swapped in, in train mode."""
    torch.manual_seed(0)
    theirs = S8_model(norm).train()
    return theirs, from_scratch.swap_in(copy.deepcopy(theirs), fn)


def one_step(model, x, y):
    """One SGD step: (the loss, each parameter's gradient), the model moved by the step."""
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad.clone() for p in model.parameters()]
    optimizer.step()
    return loss.item(), grads


def batch(n=16, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 32, 32, generator=generator), torch.randint(0, 10, (n,), generator=generator)


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_a_step_with_the_reference_swapped_in_is_pytorchs_step(norm):
    """Against PyTorch's layers in float64. A max-pool sends its gradient to the largest value of each window, and
    where two are equal up to rounding, float32's rounding picks one: on seed 0's batch that moves PyTorch's own float32
    gradients (and the swapped-in reference's) by up to 5e-4 from float64. Seed 2's batch has no such near tie."""
    theirs, ours = twins(norm, REFERENCES[norm])
    theirs.double()
    x, y = batch(seed=2)
    (loss_a, grads_a), (loss_b, grads_b) = one_step(theirs, x.double(), y), one_step(ours, x, y)
    assert abs(loss_a - loss_b) < 1e-5
    assert max((a - b).abs().max().item() for a, b in zip(grads_a, grads_b)) < 1e-5
    with torch.no_grad():
        assert (theirs.eval()(x.double()) - ours.eval()(x)).abs().max().item() < 1e-5
    for name, buffer in theirs.named_buffers():
        assert torch.allclose(buffer.double(), ours.get_buffer(name).double(), atol=1e-6, rtol=0), name


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_the_swap_keeps_the_state_dict_the_parameters_and_the_checkpoint(norm):
    theirs, ours = twins(norm, REFERENCES[norm])
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert count_parameters(ours) == count_parameters(theirs)
    assert checkpoint(ours)["fingerprint"] == checkpoint(theirs)["fingerprint"]
    assert type(ours.C5[1 if norm == "bn" else 2]).__name__ == f"Your{ {'bn': 'Batch', 'ln': 'Layer', 'gn': 'Group'}[norm]}Norm"


@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_the_function_is_called_once_per_norm_layer_with_fp32_nchw(norm):
    calls = []
    reference = REFERENCES[norm]

    def counted(*arguments):
        x = arguments[0]
        calls.append((x.dtype, x.is_contiguous()))
        return reference(*arguments)

    counted.__signature__ = __import__("inspect").signature(reference)
    _, ours = twins(norm, counted)
    calls.clear()  # swap_in's own try on a tiny tensor
    ours(batch()[0].contiguous(memory_format=torch.channels_last))
    assert calls == [(torch.float32, True)] * 8  # C1 C2 C3 C4 C5 C7 C8 C9


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
@pytest.mark.parametrize("norm", ["bn", "ln", "gn"])
def test_mixed_precision_and_channels_last_training_with_the_function(norm, dtype):
    """Under fp16 the reference would overflow BatchNorm's running variance if it ran in 16 bits; the swap hands it
    float32 and gives back the layer's dtype and layout."""
    theirs, ours = twins(norm, REFERENCES[norm])
    x, y = batch()
    x = x.contiguous(memory_format=torch.channels_last)
    outputs = {}
    for name, model in (("theirs", theirs), ("ours", ours)):
        model.to(memory_format=torch.channels_last)
        captured = []
        norm_layer = model.C5[1 if norm == "bn" else 2]
        handle = norm_layer.register_forward_hook(lambda m, i, out, seen=captured: seen.append(out))
        with torch.autocast("cpu", dtype=dtype):
            loss = F.cross_entropy(model(x).float(), y)
        loss.backward()
        handle.remove()
        outputs[name] = captured[0]
        assert torch.isfinite(loss)
    assert outputs["ours"].dtype == outputs["theirs"].dtype
    assert outputs["ours"].is_contiguous(memory_format=torch.channels_last)
    assert all(torch.isfinite(b.float()).all() for b in ours.buffers())


def test_the_try_it_mistakes_train_differently_from_the_reference():
    x, y = batch()
    for norm, wrong in (("bn", from_scratch.mistaken_batch_norm("not in place")),
                        ("ln", from_scratch.mistaken_group_norm("each channel alone", 1)),
                        ("gn", from_scratch.mistaken_group_norm("batch axis"))):
        theirs, ours = twins(norm, wrong)
        one_step(theirs, x, y), one_step(ours, x, y)
        with torch.no_grad():
            assert (theirs.eval()(x) - ours.eval()(x)).abs().max().item() > 1e-3, norm


def test_refusals_name_the_problem():
    def in_place(x, weight, bias, eps=1e-5):
        x -= x.mean((1, 2, 3), keepdim=True)
        return x

    def stub(x, groups, weight, bias, eps=1e-5):
        return None

    cases = [
        ("gn", from_scratch.layer_norm, r"layer_norm takes \(x, weight, bias, eps\), not my_group_norm's"),
        ("ln", from_scratch.group_norm, r"group_norm takes \(x, groups, weight, bias, eps\), not my_layer_norm's"),
        ("ln", in_place, "in_place edits x in place"),
        ("ln", from_scratch.mistaken_group_norm("no reshape", 1), r"without a reshape"),
        ("bn", from_scratch.mistaken_batch_norm("no reshape"), r"without a reshape"),
        ("gn", stub, "stub returns None"),
        ("in", from_scratch.layer_norm, "the 'in' model has no norm exercise"),
        ("none", from_scratch.layer_norm, "the 'none' model has no norm exercise"),
        ("lnc", from_scratch.layer_norm, "the 'lnc' model has no norm exercise"),
    ]
    for norm, fn, message in cases:
        with pytest.raises(ValueError, match=message):
            from_scratch.swap_in(S8_model(norm), fn)


def test_side_by_side_trains_both_from_the_same_start():
    data = toy_data(64, 20)
    cfg = recipes.recipe("bn", epochs=1, seed=0, **{k: v for k, v in FAST.items() if k not in ("amp", "channels_last")})
    runs = from_scratch.train_side_by_side(S8_model("bn"), from_scratch.batch_norm, data, cfg, "cpu")
    assert list(runs) == ["PyTorch's layer", "batch_norm"]
    first = [run["losses"][0] for run in runs.values()]
    assert abs(first[0] - first[1]) < 1e-5 and len(runs["batch_norm"]["losses"]) == 2  # 64 images, batches of 32
    assert all(len(run["history"]) == 1 and run["seconds"] > 0 for run in runs.values())
