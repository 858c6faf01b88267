"""The batch-size experiment (sweep.py) and what the lessons say about it."""

import copy
import json

import pytest
import torch

import sweep
import utils
from conftest import toy_data, write_tree
from data import normalize
from models import S8_model


def run_sweep(tmp_path, *extra):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "docs").mkdir(exist_ok=True)
    (out / "docs" / "lessons.md").write_text("# t\n\n<!-- batch-size:start -->\nOLD-SECTION\n<!-- batch-size:end -->\n")
    argv = ["--data", str(tree), "--cache", str(tmp_path / "cache"), "--out", str(out), "--subset", "40",
            "--test", "20", "--epochs", "1", "--batch-sizes", "2,8", "--seeds", "0,1", "--norms", "bn,gn", *extra]
    assert sweep.main(argv) == 0
    return out


def test_sweep_trains_every_point_with_the_learning_rate_scaled(tmp_path, monkeypatch):
    out = run_sweep(tmp_path)
    runs = [json.loads(p.read_text()) for p in sorted((out / "results" / "sweep").glob("*-bs*-seed*.json"))]
    assert sorted((r["norm"], r["batch_size"], r["seed"]) for r in runs) == sorted(
        (n, b, s) for n in ("bn", "gn") for b in (2, 8) for s in (0, 1))
    assert {r["batch_size"]: r["lr"] for r in runs} == {2: 0.05 * 2 / 128, 8: 0.05 * 8 / 128}
    assert {r["train_images"] for r in runs} == {40} and {r["epochs"] for r in runs} == {1}
    assert {r["norm"]: r["recipe"] for r in runs} == {"bn": sweep.todays_recipe("bn"), "gn": sweep.todays_recipe("gn")}
    assert sweep.todays_recipe("gn").startswith("Muon (peak 0.03") and sweep.todays_recipe("gn").endswith("ws 3x3 convs")
    assert (out / "images" / "batch_size.png").is_file()
    lessons = (out / "docs" / "lessons.md").read_text()
    assert "OLD-SECTION" not in lessons and "| BatchNorm | " in lessons and "| GroupNorm | " in lessons
    assert f"BatchNorm trained with {sweep.todays_recipe('bn')}" in lessons and "not today's recipe" not in lessons
    gap = json.loads((out / "results" / "sweep" / "batchnorm_gap.json").read_text())
    assert list(gap) == ["the sweep's, trained with batches of 2"]  # no checkpoints/bn.pt in this folder
    assert set(gap["the sweep's, trained with batches of 2"]) == {"eval", "train_bs2", "train_bs8", "train_bs32", "train_bs128"}
    # Run again: every point is there, so nothing is trained (an interrupted sweep resumes).
    monkeypatch.setattr(sweep, "train_point", lambda *a, **k: pytest.fail("trained again"))
    run_sweep(tmp_path)


def test_batch_statistics_leave_the_running_statistics_alone():
    data = toy_data(20, 40)
    torch.manual_seed(0)
    model = S8_model("bn")
    utils.fit(model, data, utils.TrainConfig(epochs=1, batch_size=8, amp="off"), "cpu", progress=False,
              log=lambda s: None)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    whole_batch = sweep.accuracy_with_batch_statistics(model, data, 40)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    # one batch of all 40 test images: the statistics of exactly those images, in train mode
    x = normalize(data.test_images, data.mean, data.std)
    with torch.no_grad():
        expected = 100.0 * (copy.deepcopy(model).train()(x).argmax(1) == data.test_labels).float().mean().item()
    assert whole_batch == pytest.approx(expected)


def test_bad_sweep_flags_are_refused(capsys):
    for argv, message in ((["--batch-sizes", "1,8"], "must be 2 or more"), (["--epochs", "0"], "--epochs must be at least 1"),
                          (["--seeds", "a"], "comma-separated whole numbers")):
        with pytest.raises(SystemExit):
            sweep.parse_args(argv)
        assert message in capsys.readouterr().err


def test_the_committed_train_eval_gap_is_that_of_the_committed_batchnorm_model():
    """The gap's first row measures checkpoints/bn.pt in eval mode, fp32, on the 10,000 test images, as the
    fold lesson does: a new checkpoint without `python sweep.py` run again leaves the two apart."""
    gap = json.loads((sweep.ROOT / "results" / "sweep" / "batchnorm_gap.json").read_text())
    fold = json.loads((sweep.ROOT / "results" / "lessons" / "fold" / "bn.json").read_text())
    assert fold["checkpoint"] == "checkpoints/bn.pt" and fold["test_images"] == 10000
    assert gap["run.py's (batch 128, all data, 20 epochs)"]["eval"] == round(fold["accuracy"], 2)


def old_recipe_run(norm, batch_size, seed):
    return dict(norm=norm, batch_size=batch_size, seed=seed, lr=0.05, final_test_accuracy=50.0,
                recipe="SGD with Nesterov momentum 0.9, weight decay 0.0005 on the conv kernels, plain 3x3 convs")


def test_points_of_todays_recipe_are_not_added_to_runs_of_another_before_any_data(tmp_path, monkeypatch):
    recorded = tmp_path / "results" / "sweep" / "bn-bs2-seed0.json"
    recorded.parent.mkdir(parents=True)
    recorded.write_text(json.dumps(old_recipe_run("bn", 2, 0)))
    monkeypatch.setattr(sweep, "load_cifar10", lambda *a, **k: pytest.fail("loaded the data"))
    with pytest.raises(ValueError, match=r"holds BatchNorm runs trained with SGD .* but the missing points would "
                                         r"train with Muon .*; move results/sweep/bn-bs\*\.json away"):
        sweep.main(["--out", str(tmp_path), "--norms", "bn", "--batch-sizes", "2,8", "--seeds", "0"])
    assert json.loads(recorded.read_text()) == old_recipe_run("bn", 2, 0)  # nothing saved is lost
    # with no point missing there is nothing to mix: the section is written from the records as they are
    sweep.check_recorded_recipes([old_recipe_run("bn", 2, 0)], ["bn"], missing=set())


def test_the_section_names_each_norms_recipe_and_says_when_it_is_not_todays():
    runs = [old_recipe_run("bn", 2, 0), dict(old_recipe_run("gn", 2, 0), recipe=sweep.todays_recipe("gn"))]
    line = sweep.recipes_line(runs)
    assert line.startswith("BatchNorm trained with SGD with Nesterov momentum 0.9")
    assert f"GroupNorm trained with {sweep.todays_recipe('gn')}" in line
    assert "not today's recipe for BatchNorm (" in line and "GroupNorm (" not in line
