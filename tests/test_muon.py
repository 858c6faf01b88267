"""Muon for the conv kernels (muon.py) and how the training loop hands parameters to it."""

import copy
import math

import pytest
import torch

import recipes
import utils
from hardware import choose_precision
from models import S8_model
import muon
from muon import NEWTON_SCHULZ, MuonSGD, orthogonalize


def quintic_by_hand(x, steps=5):
    """What the iteration does to one singular value: x -> a x + b x^3 + c x^5."""
    a, b, c = NEWTON_SCHULZ
    for _ in range(steps):
        x = a * x + b * x ** 3 + c * x ** 5
    return x


def rotation(angle):
    return torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])


def test_newton_schulz_matches_the_iteration_worked_by_hand():
    # diag(3, 4) has Frobenius norm 5: normalized, its singular values are 0.6 and 0.8
    expected = torch.diag(torch.tensor([quintic_by_hand(0.6), quintic_by_hand(0.8)]))
    torch.testing.assert_close(orthogonalize(torch.diag(torch.tensor([3.0, 4.0]))), expected)
    # rotated on both sides, the same singular values come out with the same rotations around them
    u, v = rotation(0.3), rotation(-1.1)
    torch.testing.assert_close(orthogonalize(u @ torch.diag(torch.tensor([3.0, 4.0])) @ v.T), u @ expected @ v.T)
    assert 0.7 < quintic_by_hand(0.6) < 1.2 and 0.7 < quintic_by_hand(0.8) < 1.2  # near 1, not exactly


def test_tall_and_wide_matrices_come_out_near_orthogonal():
    torch.manual_seed(0)
    for shape in ((8, 72), (72, 8)):
        singular = torch.linalg.svdvals(orthogonalize(torch.randn(shape)))
        assert len(singular) == 8 and singular.min() > 0.6 and singular.max() < 1.25


def test_muon_takes_the_kernels_a_norm_follows_and_sgd_the_classifier_and_1d_parameters():
    model = S8_model("bn")
    groups = recipes.optimizer_groups(model)
    assert len(groups["muon"]) == 10 and all(n.endswith("weight") for n in groups["muon"])
    assert "c10.weight" in groups["sgd"] and "c10.bias" in groups["sgd"] and "c3.weight" in groups["muon"]
    shapes = dict(model.named_parameters())
    assert all(shapes[n].ndim == 4 for n in groups["muon"]) and all(shapes[n].ndim == 1 for n in groups["sgd"]
                                                                     if n != "c10.weight")


def test_one_step_moves_each_kernel_by_its_orthogonalized_gradient_and_the_rest_by_sgd():
    torch.manual_seed(0)
    model = S8_model("gn")
    cfg = recipes.TrainConfig(muon_lr=0.1, muon_momentum=0.9, lr=0.05, weight_decay=5e-4, epochs=1)
    optimizer, scheduler = recipes.make_optimizer(model, cfg, steps_per_epoch=10)
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters()}
    lrs = {g.get("muon", False): g["lr"] for g in optimizer.param_groups}
    sgd_momentum = optimizer.param_groups[0]["momentum"]
    optimizer.step()
    after = dict(model.named_parameters())
    g = grads["C4.0.weight"]  # first step: buffer = 0.1 g, Nesterov update = 0.1 g + 0.9 * 0.1 g
    update = orthogonalize((0.19 * g).reshape(len(g), -1)).view_as(g) * max(1.0, len(g) / g[0].numel()) ** 0.5
    torch.testing.assert_close(after["C4.0.weight"], before["C4.0.weight"] - lrs[True] * update)
    d = grads["c10.weight"] + 5e-4 * before["c10.weight"]  # SGD, Nesterov, coupled decay
    torch.testing.assert_close(after["c10.weight"], before["c10.weight"] - lrs[False] * (1 + sgd_momentum) * d)
    torch.testing.assert_close(after["C4.2.bias"], before["C4.2.bias"] - lrs[False] * (1 + sgd_momentum) * grads["C4.2.bias"])
    assert lrs[True] == pytest.approx(0.01) and lrs[False] == pytest.approx(0.005)  # each peak / 10 at the start


def test_one_cycle_drives_both_rates_and_keeps_muons_momentum():
    model = S8_model("bn")
    cfg = recipes.TrainConfig(muon_lr=0.03, epochs=1, warmup=0.5)
    optimizer, scheduler = recipes.make_optimizer(model, cfg, steps_per_epoch=10)
    seen = []
    for _ in range(10):
        seen.append([(g["lr"], g["momentum"]) for g in optimizer.param_groups])
        optimizer.step()
        scheduler.step()
    sgd, muon = [[s[k] for s in seen] for k in (0, 2)]
    assert max(lr for lr, _ in muon) == pytest.approx(0.03) and max(lr for lr, _ in sgd) == pytest.approx(0.05)
    assert {m for _, m in muon} == {0.9} and min(m for _, m in sgd) == pytest.approx(0.85)


def test_muon_trains_the_model():
    from conftest import FAST, toy_data

    torch.manual_seed(0)
    history = utils.fit(S8_model("bn"), toy_data(), recipes.TrainConfig(epochs=3, **FAST), "cpu",
                        choose_precision("cpu", "bn", "off", False), progress=False, log=lambda s: None)
    assert history[-1]["train_loss"] < history[0]["train_loss"] and math.isfinite(history[-1]["test_loss"])


def test_bad_muon_settings_are_refused():
    with pytest.raises(ValueError, match="--muon-lr must be above 0.*--muon-momentum must be from 0"):
        recipes.TrainConfig(muon_lr=0, muon_momentum=1)


def test_muon_sgd_alone_is_sgd_with_nesterov():
    torch.manual_seed(0)
    a, b = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    b.load_state_dict(a.state_dict())
    ours = MuonSGD([{"params": a.parameters(), "weight_decay": 1e-3}], lr=0.1, momentum=0.9)
    reference = torch.optim.SGD(b.parameters(), lr=0.1, momentum=0.9, nesterov=True, weight_decay=1e-3)
    for _ in range(3):
        x = torch.randn(5, 3)
        for model, opt in ((a, ours), (b, reference)):
            opt.zero_grad()
            model(x).square().sum().backward()
            opt.step()
    torch.testing.assert_close(a.weight, b.weight)


def test_muon_steps_through_a_grad_scaler_in_fp16():
    """Colab's T4 trains in fp16 with a GradScaler: the scaler unscales the gradients Muon orthogonalizes."""
    from conftest import FAST, toy_data

    torch.manual_seed(0)
    cfg = recipes.TrainConfig(epochs=2, **{**FAST, "amp": "fp16"})
    history = utils.fit(S8_model("bn"), toy_data(64, 10), cfg, "cpu", choose_precision("cpu", "bn", "fp16"),
                        progress=False, log=lambda s: None)
    assert all(math.isfinite(row["train_loss"]) for row in history)
    assert history[-1]["train_loss"] < history[0]["train_loss"]


def paired_steps(steps, norm="bn", seed=0):
    """(per-kernel, batched): the parameters of two copies of `norm`'s model after `steps` optimizer steps, each step
    given the same gradients (the per-kernel copy's, on fixed random batches), so that only the updates can differ."""
    torch.manual_seed(seed)
    models = [S8_model(norm)]
    models.append(copy.deepcopy(models[0]))
    optimizers = [recipes.make_optimizer(m, recipes.recipe(norm, epochs=1), steps_per_epoch=steps, batched=batched)
                  for m, batched in zip(models, (False, True))]
    g = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x, y = torch.randn(32, 3, 32, 32, generator=g), torch.randint(0, 10, (32,), generator=g)
        models[0].zero_grad(set_to_none=True)
        torch.nn.functional.cross_entropy(models[0](x), y).backward()
        for mine, theirs in zip(models[1].parameters(), models[0].parameters()):
            mine.grad = theirs.grad.clone()
        for optimizer, scheduler in optimizers:
            optimizer.step()
            scheduler.step()
    return [dict(m.named_parameters()) for m in models]


def test_kernels_orthogonalized_together_match_each_alone_to_rounding():
    torch.manual_seed(0)
    matrices = [torch.randn(16, 27), torch.randn(32, 144), torch.randn(28, 252), torch.randn(72, 8)]  # one tall
    for alone, together in zip(map(orthogonalize, matrices), muon.orthogonalize_together(matrices)):
        assert together.shape == alone.shape
        torch.testing.assert_close(together, alone, atol=2e-6, rtol=0)  # measured: at most 5.4e-7


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_the_batched_step_gives_the_per_kernel_steps_parameters(norm):
    """Given the same gradients at every step (a max-pool's near ties would let the last bit of one step's update
    move the next step's gradients), 4 steps of the batched update stay within rounding of the per-kernel one."""
    alone, together = paired_steps(4, norm)
    for name in alone:
        torch.testing.assert_close(together[name], alone[name], atol=1e-6, rtol=0, msg=name)


def test_batched_defaults_to_cuda_only():
    model = S8_model("bn")
    optimizer, _ = recipes.make_optimizer(model, recipes.TrainConfig(epochs=1), 10)
    assert optimizer.batched is None  # decided per step from where the parameters are
    calls = []
    optimizer._group_together = lambda *a: calls.append("together")
    optimizer._group_by_kernel = lambda *a: calls.append("by kernel")
    model(torch.randn(2, 3, 32, 32)).sum().backward()
    optimizer.step()
    assert set(calls) == {"by kernel"}  # the CPU: the committed results' path


@pytest.mark.parametrize("batched", [False, True])
def test_a_gradscalers_scale_is_taken_and_an_infinite_gradient_skips_the_step(batched):
    """GradScaler hands over its scale and found-inf flag (optimizer.grad_scale, .found_inf): the step
    equals the unscaled one, and a flagged step changes neither the parameters nor the buffers."""
    def stepped(scale, found_inf, poison=False):
        torch.manual_seed(0)
        model = S8_model("bn")
        optimizer, _ = recipes.make_optimizer(model, recipes.TrainConfig(epochs=1), 10)
        optimizer.batched = batched
        for _ in range(2):  # the second step starts from buffers the first one filled
            optimizer.zero_grad()
            (model(torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))).logsumexp(1).mean()
             * scale).backward()
            if poison and _ == 1:
                model.C4[0].weight.grad[0, 0, 0, 0] = math.inf
                model.c10.bias.grad[0] = math.nan
            if scale != 1 or found_inf is not None:
                optimizer.grad_scale, optimizer.found_inf = torch.tensor(float(scale)), found_inf
            optimizer.step()
            before = {n: p.detach().clone() for n, p in model.named_parameters()} if _ == 0 else before
            buffers = {p: s["buffer"].clone() for p, s in optimizer.state.items()} if _ == 0 else buffers
        return before, buffers, model, optimizer

    _, _, plain, _ = stepped(1, None)
    _, _, scaled, _ = stepped(1024, torch.tensor(0.0))
    for (name, p), q in zip(plain.named_parameters(), scaled.parameters()):
        torch.testing.assert_close(q, p, atol=1e-6, rtol=0, msg=name)
    before, buffers, skipped, optimizer = stepped(1024, torch.tensor(1.0), poison=True)
    for name, p in skipped.named_parameters():
        assert torch.equal(p, before[name]), name
    assert all(torch.equal(s["buffer"], buffers[p]) for p, s in optimizer.state.items())


def test_the_batched_step_reads_nothing_back_from_the_device_under_a_gradscaler(monkeypatch):
    torch.manual_seed(0)
    model = S8_model("bn")
    optimizer, _ = recipes.make_optimizer(model, recipes.TrainConfig(epochs=1), 10)
    optimizer.batched = True
    scaler = torch.amp.GradScaler("cpu")
    loss = model(torch.randn(4, 3, 32, 32)).logsumexp(1).mean()
    before = model.C4[0].weight.detach().clone()
    monkeypatch.setattr(torch.Tensor, "item", lambda self: pytest.fail("a read back to the host"))
    monkeypatch.setattr(torch.Tensor, "__bool__", lambda self: pytest.fail("a read back to the host"))
    scaler.scale(loss).backward()
    scaler.step(optimizer)
    scaler.update()
    monkeypatch.undo()
    assert not torch.equal(model.C4[0].weight, before)  # it stepped
