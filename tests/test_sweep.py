"""The batch-size experiment (sweep.py) and what the lessons say about it."""

import json
from pathlib import Path

import nbformat
import pytest
import torch

import plots
import results
import sweep
import utils
from conftest import write_tree
from models import S8_model
from test_utils import toy_data

ROOT = Path(__file__).resolve().parents[1]


def run_sweep(tmp_path, *extra):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    out = tmp_path / "out"
    out.mkdir(exist_ok=True)
    (out / "README.md").write_text(f"# t\n\n{sweep.START}\nOLD-SECTION\n{sweep.END}\n")
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
    assert (out / "images" / "batch_size.png").is_file()
    readme = (out / "README.md").read_text()
    assert "OLD-SECTION" not in readme and "| BatchNorm | " in readme and "| GroupNorm | " in readme
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
    small, large = (sweep.accuracy_with_batch_statistics(model, data, b) for b in (2, 40))
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert 0 <= small <= 100 and 0 <= large <= 100


def test_bad_sweep_flags_are_refused(capsys):
    for argv, message in ((["--batch-sizes", "1,8"], "must be 2 or more"), (["--epochs", "0"], "--epochs must be at least 1"),
                          (["--seeds", "a"], "comma-separated whole numbers")):
        with pytest.raises(SystemExit):
            sweep.parse_args(argv)
        assert message in capsys.readouterr().err


@pytest.mark.parametrize("points, verdict", [
    ({2: [40.0, 41.0], 128: [50.0, 51.0]}, "cost it accuracy beyond the seeds' spread"),
    ({2: [49.0, 51.5], 128: [50.0, 51.0]}, "no measurable effect"),
    ({2: [55.0, 56.0], 128: [50.0, 51.0]}, "did better with small batches"),
    ({2: [40.0], 128: [50.0]}, "One seed per point"),
])
def test_batch_size_observations_judge_against_the_seeds_spread(points, verdict):
    text = results.batch_size_observations("bn", {"bn": points})
    assert verdict in text and "batches of 128" in text


def summary(norm, accs):
    runs = [dict(seed=k, final_test_accuracy=a) for k, a in enumerate(accs)]
    return dict(norm=norm, runs=runs, seeds=list(range(len(accs))), final_test_accuracy_mean=sum(accs) / len(accs),
                seconds_per_epoch_mean=10.0, device="CPU")


def test_a_difference_within_the_seeds_spread_is_reported_as_none():
    level = {"bn": summary("bn", [80.6, 81.0, 81.0]), "gn": summary("gn", [80.5, 81.5, 80.9])}
    assert "none; on these runs the norms are level" in results.comparison(level)
    apart = {"bn": summary("bn", [82.0, 82.2]), "ln": summary("ln", [80.0, 80.3])}
    assert "BatchNorm above LayerNorm" in results.comparison(apart)
    assert results.versus(level["gn"], level["bn"], "BatchNorm").startswith("no difference from BatchNorm")


def test_learning_rate_schedule_plot_rises_then_falls():
    cfg = utils.TrainConfig(epochs=4, lr=0.1, warmup=0.25)
    line = plots.plot_lr_schedule(cfg, steps_per_epoch=10).axes[0].get_lines()[0]
    rates = list(line.get_ydata())
    assert len(rates) == 40 and max(rates) == pytest.approx(0.1) and rates.index(max(rates)) in (9, 10)
    assert rates[0] == pytest.approx(0.01) and rates[-1] < rates[0]


@pytest.mark.parametrize("notebook", ["S8_BN.ipynb", "S8_LN.ipynb", "S8_GN.ipynb"])
def test_committed_notebooks_are_small_and_hold_no_widget_state(notebook):
    path = ROOT / notebook
    assert path.stat().st_size < 500_000
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in nb.cells for o in c.get("outputs", []))


def test_batch_size_observations_compare_the_norms_at_the_smallest_batch():
    table = {"bn": {2: [40.0, 41.0], 128: [50.0, 51.0]}, "ln": {2: [51.0, 52.0], 128: [47.0, 48.0]},
             "gn": {2: [40.5, 41.5], 128: [49.0, 50.0]}}
    text = results.batch_size_observations("bn", table)
    assert "At batches of 2 it was 11.0 points below LayerNorm and level with GroupNorm" in text
