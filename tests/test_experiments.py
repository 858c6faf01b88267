"""The lessons' experiments (lab/experiments.py, python -m lab), end to end on a toy tree with a reduced plan
(one seed, two rates), and the one reuse rule."""

import json
import shutil
from pathlib import Path

import pytest
import torch

from lab import experiments
from lab import __main__ as lessons
from lab import results
import run
import recipes
import utils
from conftest import write_tree
from data import CIFAR10

ROOT = Path(__file__).resolve().parents[1]
PLAN = ["--plan", "seeds=0", "multipliers=1,4", "validation=20", "screen_images=40", "screen_epochs=1", "full_images=60",
        "full_epochs=1", "sweep_images=40", "sweep_test=20", "sweep_epochs=1", "ghost_batches=2,32", "--amp", "off"]
SECTIONS = [experiments.section_name(name) for name in experiments.EXPERIMENTS]


def placement_record(folder):
    """Validation runs for the placement lesson, one seed of each arm, as run.py writes them."""
    for norm, arms in experiments.PLACEMENT.items():
        for order, tags in arms.items():
            accuracy = 80.0 + (order == "relu-norm") + 0.1 * len(norm)
            results.write_json(folder / f"{tags[0]}-{norm}.json", dict(tag=tags[0], norm=norm, seed=0,
                                                                         final_test_accuracy=accuracy))


def lessons_folder(root):
    out = root / "out"
    (out / "docs").mkdir(parents=True)
    markers = "".join(f"\n<!-- {s}:start -->\nOLD\n<!-- {s}:end -->\n" for s in SECTIONS)
    (out / "docs" / "lessons.md").write_text("# t\n" + markers)
    (out / "README.md").write_text("# r\n<!-- lessons:start -->\nOLD\n<!-- lessons:end -->\n")
    placement_record(out / "results" / "validation")
    return out


@pytest.fixture(scope="module")
def lab_out(tmp_path_factory):
    """`python -m lab all` once with the reduced plan; run.py first makes the checkpoints/bn.pt the
    fold lesson reads, with the settings of the skips lesson's BatchNorm arm (so that it answers it)."""
    root = tmp_path_factory.mktemp("lessons")
    tree = write_tree(root / "tree", n_train=10, n_test=6)
    out = lessons_folder(root)
    common = ["--data", str(tree), "--cache", str(root / "cache"), "--out", str(out)]
    assert run.main(["--norm", "bn", "--seeds", "0", "--epochs", "1", "--subset", "60", "--amp", "off", "--quiet",
                     *common]) == 0
    assert lessons.main(["all", *common, *PLAN]) == 0
    return out, common


def record(out, folder, name):
    return json.loads(results.record_path(out, folder, name).read_text())


def test_every_experiment_writes_its_figure_its_section_and_its_readme_line(lab_out):
    out, _ = lab_out
    text = (out / "docs" / "lessons.md").read_text()
    assert "OLD" not in text and "OLD" not in (out / "README.md").read_text()
    for name in experiments.EXPERIMENTS:
        assert experiments.figure_path(out, name).is_file()
        assert f"`python -m lab {name} --data ../shared/data/cifar10-jpg.tar.gz`" in text
        assert f"**{experiments.EXPERIMENTS[name].title}.**" in (out / "README.md").read_text()
    assert "| no norm | " in text and "| InstanceNorm | " in text and "What it shows: " in text


def test_the_lr_experiment_scales_both_rates_of_one_recipe_for_every_norm(lab_out):
    out, _ = lab_out
    for norm in experiments.LESSON_NORMS:
        for m in (1, 4):
            r = record(out, "screening", f"{norm}-x{m:g}-seed0")
            assert (r["norm"], r["seed"], results.optimizer_label(r["config"])) == (norm, 0, f"Muon {0.1 * m:g} + SGD")
            assert r["config"]["lr"] == pytest.approx(0.05 * m) and r["config"]["muon_lr"] == pytest.approx(0.1 * m)
            assert (r["train_images"], r["test_images"], r["epochs"]) == (40, 20, 1)
            assert "validation split 20" in r["data"]
    assert "| rates x1 | rates x4 |" in (out / "docs" / "lessons.md").read_text()


def test_screening_runs_record_the_activations_of_each_block(lab_out):
    out, _ = lab_out
    act = record(out, "screening", "none-x1-seed0")["activations"]
    assert list(act["blocks"]) == ["C1", "C2", "C3", "C4", "C5", "C7", "C8", "C9"]
    assert act["steps"] == [0] and act["steps_per_epoch"] == 1  # 40 images, batches of 128, 1 epoch
    assert all(len(v) == 1 and len(v[0]) == 4 and v[0] == sorted(v[0]) for v in act["blocks"].values())


def test_the_skips_experiment_trains_both_arms_and_takes_run_pys_matching_run(lab_out):
    out, _ = lab_out
    for norm in experiments.SKIP_NORMS:
        for skips in (True, False):
            arm = "skips" if skips else "noskips"
            r = record(out, "skips", f"{norm}-{arm}-seed0")
            assert r["model_config"]["skips"] is skips and r["model_config"]["norm"] == norm
            assert r["train_images"] == 60 and r["epochs"] == 1 and len(r["history"]) == 1
            g = record(out, "skips", f"gradients-{norm}-{arm}-seed0")
            assert list(g["init"]) == list(g["epoch1"]) and "C1" in g["init"] and g["init"] != g["epoch1"]
    suite = json.loads(results.seed_path(out, "bn", 0).read_text())
    reused = record(out, "skips", "bn-skips-seed0")
    assert reused["source"] == "results/bn_seed0.json (run.py)" and reused["history"] == suite["history"]
    assert "source" not in record(out, "skips", "ln-skips-seed0")  # no run.py record of LayerNorm: trained


def test_the_groups_and_layernorm_lessons_train_their_variants(lab_out):
    out, _ = lab_out
    sizes = {v: record(out, "screening", f"{v}-x1-seed0")["model_config"] for v in experiments.GROUP_LABELS}
    assert sizes["gn-cpg2"]["channels_per_group"] == 2 and sizes["gn-g1"]["groups"] == 1
    assert sizes["in"]["order"] == "norm-relu" and sizes["gn-cpg1"]["order"] == "relu-norm"
    kept = {p.stem for p in (out / "results").rglob("*.pt")}  # the batch-of-one lesson's and the gap's models
    assert kept == {f"{norm}-x1-seed0" for norm in experiments.LESSON_NORMS} | {"bn-ghost2-seed0"}
    assert record(out, "screening", "lnc-x1-seed0")["norm"] == "lnc"


def test_the_batch_size_experiment_changes_batchnorms_statistics_alone_and_measures_the_gap(lab_out):
    out, _ = lab_out
    runs = {g: record(out, "sweep", f"bn-ghost{g}-seed0") for g in (2, 32)}
    assert [runs[g]["model_config"]["ghost_batch"] for g in (2, 32)] == [2, 32]
    assert runs[2]["config"] == runs[32]["config"]  # the same steps, images and rates
    for norm in ("ln", "gn"):
        r = record(out, "sweep", f"{norm}-seed0")
        assert r["model_config"]["ghost_batch"] is None and (r["train_images"], r["test_images"]) == (40, 20)
    gap = record(out, "sweep", "batchnorm_gap")
    assert list(gap) == ["the committed full run's (batch 128, all data, 20 epochs)",
                         "the sweep's, its statistics over 2 images"]
    assert set(gap["the sweep's, its statistics over 2 images"]) == {"eval", "train_bs2", "train_bs8", "train_bs32",
                                                                      "train_bs128"}
    _, section, headline = experiments.rendered("batch-size", out)
    assert "| BatchNorm | 2 images |" in section and "| LayerNorm | each image alone |" in section
    assert headline.startswith("At the same steps, BatchNorm with its statistics over 2 images scores")


def test_the_data_provenance_is_for_the_record(lab_out):
    out, _ = lab_out
    source = record(out, "sweep", "bn-ghost2-seed0")["data"].split(",")[0]  # 'tree/ (image folder)', before the split
    for name in ("batch-size", "lr"):
        _, docs, _ = experiments.rendered(name, out)
        _, students, _ = experiments.rendered(name, out, students=True)
        assert source in docs and source not in students and "[[" not in docs + students


def test_the_per_norm_measurements(lab_out):
    out, _ = lab_out
    fold = record(out, "fold", "bn")
    assert fold["max_logit_difference"] < 1e-3 and fold["parameters_folded"] < fold["parameters"]
    one = record(out, "batch-of-one", "models-x1-seed0")
    assert set(one) == set(experiments.LESSON_NORMS)
    assert one["ln"]["train"]["max_logit_difference"] < 1e-4 and one["bn"]["train"]["max_logit_difference"] > 1e-4
    placement = record(out, "placement", "validation")
    assert placement["ln"]["relu-norm"] == [dict(tag="r-relu-norm", seed=0, accuracy=81.2)]
    assert "one seed: no range to judge by" in (out / "docs" / "lessons.md").read_text()


def test_a_second_run_trains_nothing(lab_out, monkeypatch):
    out, common = lab_out
    monkeypatch.setattr(utils, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert lessons.main(["lr", *common, *PLAN]) == 0
    assert lessons.main(["skips", *common, *PLAN]) == 0


def test_a_recipe_change_retrains_only_the_runs_it_changes(lab_out, tmp_path, monkeypatch, capsys):
    out, common = lab_out
    out = shutil.copytree(out, tmp_path / "out")  # the shared records stay as they were
    common = [*common[:-1], str(out)]
    monkeypatch.setitem(recipes.RECIPES, "gn", {**recipes.RECIPES["gn"], "muon_lr": 0.05})
    assert lessons.main(["batch-size", "--check", *common, *PLAN]) == 0
    assert capsys.readouterr().out.split() == ["sweep/gn-seed0"]
    trained = []
    fit = utils.fit
    monkeypatch.setattr(utils, "fit", lambda model, data, cfg, *a, **k: trained.append(cfg) or fit(model, data, cfg, *a, **k))
    assert lessons.main(["batch-size", *common, *PLAN]) == 0
    assert [c.muon_lr for c in trained] == [0.05]
    assert "sweep/gn-seed0.json was made with other settings" in capsys.readouterr().out


def test_a_record_from_another_machine_or_precision_still_answers(lab_out):
    out, _ = lab_out
    r = record(out, "screening", "bn-x1-seed0")
    moved = {**r, "device": "NVIDIA T4", "precision": "fp16 autocast with a GradScaler, NCHW",
             "config": {**r["config"], "amp": "fp16", "channels_last": False}}
    assert experiments.record_fingerprint(moved) == experiments.record_fingerprint(r) is not None
    assert experiments.record_fingerprint({**r, "config": {**r["config"], "lr": 0.5}}) != experiments.record_fingerprint(r)
    assert experiments.record_fingerprint({k: v for k, v in r.items() if k != "config"}) is None


def test_a_diverged_run_is_recorded_and_the_others_go_on(tmp_path, monkeypatch):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    out = lessons_folder(tmp_path)
    fit = utils.fit

    def diverge_at_high_rates(model, data, cfg, *args, **kwargs):
        if cfg.muon_lr > 0.2:
            kwargs["history"].append(dict(epoch=1, train_loss=9.9, train_acc=10.0, test_loss=9.9, test_acc=10.0,
                                          lr=cfg.lr, seconds=0.1))
            raise FloatingPointError("loss became NaN or infinite at epoch 2, step 1; lower the learning rate")
        return fit(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(utils, "fit", diverge_at_high_rates)
    assert lessons.main(["lr", "--data", str(tree), "--cache", str(tmp_path / "cache"), "--out", str(out),
                         *PLAN[:3], "validation=10", *PLAN[4:]]) == 0
    r = record(out, "screening", "bn-x4-seed0")
    assert r["diverged"].startswith("loss became NaN") and r["final_test_accuracy"] is None and len(r["history"]) == 1
    assert record(out, "screening", "bn-x1-seed0")["diverged"] is None
    assert "diverged (1 of 1)" in (out / "docs" / "lessons.md").read_text()


def test_a_missing_docs_marker_is_refused_before_anything_is_trained(tmp_path, monkeypatch):
    out = lessons_folder(tmp_path)
    text = (out / "docs" / "lessons.md").read_text()
    (out / "docs" / "lessons.md").write_text(text.replace("<!-- lesson-lr:start -->", ""))
    monkeypatch.setattr(utils, "fit", lambda *a, **k: pytest.fail("trained before the markers were checked"))
    with pytest.raises(ValueError, match="lessons.md has no <!-- lesson-lr:start --> ... <!-- lesson-lr:end --> markers"):
        lessons.main(["lr", "--data", str(write_tree(tmp_path / "tree", n_train=6, n_test=2)), "--out", str(out), *PLAN])


def test_check_lists_what_would_be_trained_and_writes_nothing(lab_out, tmp_path, capsys):
    out, common = lab_out
    before = sorted(p for p in out.rglob("*") if p.is_file())
    assert lessons.main(["all", "--check", *common, *PLAN]) == 0
    assert capsys.readouterr().out.strip() == "nothing to train: every run is on disk with matching settings"
    assert sorted(p for p in out.rglob("*") if p.is_file()) == before
    (results.record_path(out, "screening", "in-x1-seed0", ".pt")).rename(tmp_path / "kept.pt")
    try:  # a run whose checkpoint a lesson reads is not answered without it
        assert lessons.main(["batch-of-one", "--check", *common, *PLAN]) == 0
        assert capsys.readouterr().out.split() == ["screening/in-x1-seed0"]
    finally:
        (tmp_path / "kept.pt").rename(results.record_path(out, "screening", "in-x1-seed0", ".pt"))


def test_the_notebooks_show_only_what_is_recorded(tmp_path, monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", shown.append)
    monkeypatch.setattr(utils, "fit", lambda *a, **k: pytest.fail("show trained"))
    experiments.show("lr", out=tmp_path)
    assert "Not run yet" in shown[0].data and "python -m lab lr" in shown[0].data


def test_every_committed_record_with_its_configs_answers_todays_plan(monkeypatch):
    """The committed records were made with today's settings: `python -m lab all` on the offline copy trains nothing."""
    def offline_copy(*args, **kwargs):  # its sizes and description, without decoding it
        one = torch.zeros(1, 3, 32, 32, dtype=torch.uint8)
        return CIFAR10(one.expand(50_000, -1, -1, -1), torch.zeros(50_000, dtype=torch.long),
                       one.expand(10_000, -1, -1, -1), torch.zeros(10_000, dtype=torch.long), tuple("abcdefghij"),
                       "cifar10-jpg.tar.gz (archive)")

    monkeypatch.setattr(experiments, "load_cifar10", offline_copy)
    lab = experiments.Lab(ROOT, "offline copy", log=lambda line: None)
    stale = {(request.folder, request.name) for e in experiments.EXPERIMENTS.values() for request in e.runs(lab.plan)
             if lab.answered(request, say=False, copy=False) is None}
    assert stale == set()
    full = lab.data("full")
    for request in experiments.skips_runs(lab.plan):  # the gradients' records too
        path = results.record_path(ROOT, "skips", f"gradients-{request.name}")
        assert lab.matching(path, request.model_config, request.cfg, full, say=False) is not None, path


def test_an_unknown_experiment_or_plan_field_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        lessons.parse_args(["everything"])
    assert "invalid choice: 'everything'" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        lessons.parse_args(["lr", "--plan", "epochs=3"])
    assert "no plan field 'epochs'" in capsys.readouterr().err
