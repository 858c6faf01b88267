"""The lessons' experiments (lessons.py), run end to end on a toy tree at a toy size."""

import json

import pytest

import lessons
import results
import utils
from conftest import write_tree

SMALL = ["--full-images", "60", "--full-epochs", "2", "--screen-images", "40", "--screen-epochs", "2",
         "--validation", "20", "--seeds", "0", "1", "--amp", "off", "--quiet"]
SECTIONS = [f"lesson-{e}" for e in lessons.EXPERIMENTS]


def placement_record(folder):
    """Validation runs for the placement lesson, one seed of each arm, as run.py writes them."""
    for norm, arms in lessons.PLACEMENT.items():
        for order, tags in arms.items():
            accuracy = 80.0 + (order == "relu-norm") + 0.1 * len(norm)
            results.write_json(folder / f"{tags[0]}-{norm}.json", dict(tag=tags[0], norm=norm, seed=0,
                                                                         final_test_accuracy=accuracy))


def lessons_folder(root):
    out = root / "out"
    (out / "docs").mkdir(parents=True)
    (out / "docs" / "lessons.md").write_text("# t\n" + "".join(f"\n<!-- {s}:start -->\nOLD\n<!-- {s}:end -->\n"
                                                               for s in SECTIONS))
    placement_record(out / "results" / "validation")
    return out


@pytest.fixture(scope="module")
def lab_out(tmp_path_factory):
    """`python lessons.py all` once, on a toy tree; the checkpoints/bn.pt the fold lesson reads is
    made by run.py first, as in the project."""
    import run

    root = tmp_path_factory.mktemp("lessons")
    tree = write_tree(root / "tree", n_train=10, n_test=6)
    out = lessons_folder(root)
    common = ["--data", str(tree), "--cache", str(root / "cache"), "--out", str(out)]
    assert run.main(["--norm", "bn", "--seeds", "0", "--epochs", "1", "--subset", "60", "--amp", "off", "--quiet",
                     *common]) == 0
    assert lessons.main(["all", *common, *SMALL]) == 0
    return out, common


def record(out, experiment, name):
    return json.loads(results.lesson_path(out, experiment, name).read_text())


def test_every_experiment_writes_its_figure_and_its_section(lab_out):
    out, _ = lab_out
    text = (out / "docs" / "lessons.md").read_text()
    assert "OLD" not in text
    for experiment in lessons.EXPERIMENTS:
        assert (out / "images" / f"lesson_{experiment.replace('-', '_')}.png").is_file()
        assert f"`python lessons.py {experiment} --data ../shared/data/cifar10-jpg.tar.gz`" in text
    assert "| no norm | " in text and "| InstanceNorm | " in text


def test_the_lr_experiment_scales_both_rates_of_one_recipe_for_every_norm(lab_out):
    out, _ = lab_out
    for norm in lessons.LESSON_NORMS:
        for m in lessons.LR_MULTIPLIERS:
            for seed in (0, 1):
                r = record(out, "screening", f"{norm}-x{m:g}-seed{seed}")
                assert (r["norm"], r["seed"], r["optimizer"]) == (norm, seed, "muon")
                assert r["lr"] == pytest.approx(0.05 * m) and r["muon_lr"] == pytest.approx(0.1 * m)
                assert (r["train_images"], r["val_images"], r["epochs"]) == (40, 20, 2)
                assert "validation split 20" in r["data"]


def test_screening_runs_record_the_activations_of_each_block(lab_out):
    out, _ = lab_out
    act = record(out, "screening", "none-x1-seed0")["activations"]
    assert list(act["blocks"]) == ["C1", "C2", "C3", "C4", "C5", "C7", "C8", "C9"]
    assert act["steps"] == [0, 1] and act["steps_per_epoch"] == 1  # 40 images, batches of 128, 2 epochs
    assert all(len(v) == 2 and len(v[0]) == 4 and v[0] == sorted(v[0]) for v in act["blocks"].values())


def test_the_skips_experiment_trains_both_arms_and_measures_the_gradients(lab_out):
    out, _ = lab_out
    for norm in lessons.SKIP_NORMS:
        for skips in (True, False):
            arm = "skips" if skips else "noskips"
            r = record(out, "skips", f"{norm}-{arm}-seed1")
            assert r["model_config"]["skips"] is skips and r["model_config"]["norm"] == norm
            assert r["train_images"] == 60 and r["epochs"] == 2 and len(r["history"]) == 2
            g = record(out, "skips", f"gradients-{norm}-{arm}-seed1")
            assert list(g["init"]) == list(g["epoch1"]) and "C1" in g["init"] and g["init"] != g["epoch1"]
    # run.py's BatchNorm seed 0 (1 epoch on another subset) is not the arm's settings: trained afresh
    assert record(out, "skips", "bn-skips-seed0")["source"] == "trained by lessons.py"


def test_the_groups_and_layernorm_lessons_train_their_variants(lab_out):
    out, _ = lab_out
    sizes = {v: record(out, "screening", f"{v}-x1-seed0")["model_config"] for v in lessons.GROUP_VARIANTS}
    assert sizes["gn-cpg2"]["channels_per_group"] == 2 and sizes["gn-g1"]["groups"] == 1
    assert sizes["in"]["order"] == "norm-relu" and sizes["gn-cpg1"]["order"] == "relu-norm"
    kept = {p.stem for p in (out / "results" / "lessons").rglob("*.pt")}  # only the batch-of-one lesson's models
    assert kept == {f"{norm}-x1-seed0" for norm in lessons.LESSON_NORMS}
    assert record(out, "screening", "lnc-x1-seed0")["norm"] == "lnc"


def test_the_per_norm_measurements(lab_out):
    out, _ = lab_out
    fold = record(out, "fold", "bn")
    assert fold["max_logit_difference"] < 1e-3 and fold["parameters_folded"] < fold["parameters"]
    one = record(out, "batch-of-one", "models-x1-seed0")
    assert set(one) == set(lessons.LESSON_NORMS)
    assert one["ln"]["train"]["max_logit_difference"] < 1e-4 and one["bn"]["train"]["max_logit_difference"] > 1e-4
    placement = record(out, "placement", "validation")
    assert placement["ln"]["relu-norm"] == [dict(tag="r-relu-norm", seed=0, accuracy=81.2)]
    text = (out / "docs" / "lessons.md").read_text()
    assert "one seed: no range to judge by" in text


def test_a_second_run_trains_nothing(lab_out, monkeypatch):
    out, common = lab_out
    monkeypatch.setattr(utils, "fit", lambda *a, **k: pytest.fail("trained again"))
    assert lessons.main(["lr", *common, *SMALL]) == 0
    assert lessons.main(["skips", *common, *SMALL]) == 0


def test_a_diverged_run_is_recorded_and_the_sweep_goes_on(tmp_path, monkeypatch):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    out = lessons_folder(tmp_path)
    fit = utils.fit

    def diverge_at_high_rates(model, data, cfg, *args, **kwargs):
        if cfg.muon_lr > 1:
            kwargs["history"].append(dict(epoch=1, train_loss=9.9, train_acc=10.0, test_loss=9.9, test_acc=10.0,
                                          lr=cfg.lr, seconds=0.1))
            raise FloatingPointError("loss became NaN or infinite at epoch 2, step 1; lower the learning rate")
        return fit(model, data, cfg, *args, **kwargs)

    monkeypatch.setattr(utils, "fit", diverge_at_high_rates)
    argv = ["lr", "--data", str(tree), "--cache", str(tmp_path / "cache"), "--out", str(out), "--screen-images", "40",
            "--screen-epochs", "2", "--validation", "10", "--seeds", "0", "--amp", "off", "--quiet"]
    assert lessons.main(argv) == 0
    r = record(out, "screening", "bn-x16-seed0")
    assert r["diverged"].startswith("loss became NaN") and r["final_val_accuracy"] is None and len(r["history"]) == 1
    assert record(out, "screening", "bn-x4-seed0")["diverged"] is None
    assert "diverged (1 of 1)" in (out / "docs" / "lessons.md").read_text()


def test_an_unknown_experiment_is_refused_before_anything_runs(capsys):
    with pytest.raises(SystemExit):
        lessons.parse_args(["everything"])
    assert "invalid choice: 'everything'" in capsys.readouterr().err
