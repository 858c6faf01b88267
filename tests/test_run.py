import json

import pytest
import torch

import atomic
import results
import run
from conftest import write_tree
from models import NORM_TYPES, load_checkpoint

ARTIFACTS = ["results/{n}.json", "results/{n}_seed0.json", "checkpoints/{n}.pt", "images/{N}_curves.png", "images/{N}_misclassified.png"]


@pytest.fixture
def out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(f"# title\n\n{results.TABLE_START}\nold table\n{results.TABLE_END}\n\nafter\n")
    return out


def run_tiny(tmp_path, out, *extra):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    seeds = [] if "--seeds" in extra else ["--seeds", "0"]
    argv = ["--data", str(tree), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "1",
            "--batch-size", "16", "--quiet", *seeds, *extra]
    assert run.main(argv) == 0


def test_run_all_writes_every_artifact(tmp_path, out, capsys):
    run_tiny(tmp_path, out, "--norm", "all")
    for norm in results.NORMS:
        for pattern in ARTIFACTS:
            assert (out / pattern.format(n=norm, N=norm.upper())).is_file(), pattern
        result = json.loads((out / "results" / f"{norm}_seed0.json").read_text())
        assert result["epochs"] == 1 and result["seed"] == 0 and result["parameters"] < 50_000
        assert len(result["history"]) == 1 and result["final_test_accuracy"] == result["history"][-1]["test_acc"]
        assert {"device", "torch", "data", "seconds_per_epoch", "final_train_accuracy", "precision"} <= set(result)
        assert result["model"] == NORM_TYPES[norm].class_name and result["model_config"]["norm"] == norm
        assert result["git_commit"] == run.code_version()["git_commit"] and "git_dirty" in result
        assert all(len(str(r["test_acc"]).split(".")[-1]) <= 2 for r in result["history"])  # two decimals
    assert (out / "images" / "comparison.png").is_file()
    readme = (out / "README.md").read_text()
    assert "old table" not in readme and readme.endswith("after\n")
    assert readme.count("| `Model_") == 3
    printed = capsys.readouterr().out
    assert "Total params" in printed and "train loss" in printed  # summary and per-epoch table
    assert not list(out.rglob("*.tmp*"))


def test_several_seeds_give_mean_and_spread(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "all", "--seeds", "0", "1", "--no-amp")
    for norm in results.NORMS:
        per_seed = [json.loads((out / "results" / f"{norm}_seed{k}.json").read_text()) for k in (0, 1)]
        assert [r["seed"] for r in per_seed] == [0, 1]
        summary = json.loads((out / "results" / f"{norm}.json").read_text())
        accs = [r["final_test_accuracy"] for r in per_seed]
        assert summary["seeds"] == [0, 1] and [r["final_test_accuracy"] for r in summary["runs"]] == accs
        assert summary["final_test_accuracy_mean"] == pytest.approx(sum(accs) / 2, abs=0.005)
        assert summary["final_test_accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5, abs=0.005)
        assert "history" not in summary and "seed" not in summary  # aggregates, not seed 0's fields
        assert summary["run_id"] == per_seed[0]["run_id"] == per_seed[1]["run_id"]
    assert "| 0, 1 |" in (out / "README.md").read_text()


def test_single_norm_leaves_readme_alone(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "Group")
    assert (out / "results" / "gn.json").is_file() and not (out / "results" / "bn.json").exists()
    assert "old table" in (out / "README.md").read_text()


def test_checkpoint_reloads_the_trained_model(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "ln")
    model, ckpt = load_checkpoint(out / "checkpoints" / "ln.pt")
    assert ckpt["norm"] == "ln" and model.norm == "ln"
    assert ckpt["mean"].shape == (3,)


def test_same_seed_same_results_and_figures(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "bn", "--no-amp")
    first = [(out / p.format(n="bn", N="BN")).read_bytes() for p in ARTIFACTS[3:]]
    first_json = json.loads((out / "results" / "bn_seed0.json").read_text())
    run_tiny(tmp_path, out, "--norm", "bn", "--no-amp")
    again_json = json.loads((out / "results" / "bn_seed0.json").read_text())
    assert first_json["history"][0]["train_loss"] == again_json["history"][0]["train_loss"]
    assert [(out / p.format(n="bn", N="BN")).read_bytes() for p in ARTIFACTS[3:]] == first


def test_interrupted_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "results" / "bn.json"
    atomic.write_json(target, {"final_test_accuracy": 80.0})

    write_text = type(target).write_text

    def crash(self, text, *a, **k):  # dies halfway through writing
        write_text(self, text[:5])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(target), "write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic.write_json(target, {"final_test_accuracy": 1.0})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"final_test_accuracy": 80.0}


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm 'xn'"):
        run.main(["--norm", "xn"])


def test_validation_run_scores_held_out_training_images_only(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "gn", "--validation", "20", "--tag", "lr-high", "--lr", "0.1",
             "--widths", "16,32,16,28,24,32", "--no-amp")
    result = json.loads((out / "results" / "validation" / "lr-high-gn.json").read_text())
    assert result["test_images"] == 20 and result["train_images"] == 40  # 60 training images, 20 held out
    assert "validation split 20" in result["data"]
    assert result["changed"] == "epochs=1, batch_size=16, lr=0.1, amp=off, widths=[16, 32, 16, 28, 24, 32]"
    assert not (out / "results" / "gn.json").exists()
    kept = [p.relative_to(out).as_posix() for p in (out / "checkpoints").rglob("*") if p.is_file()]
    assert kept == ["checkpoints/validation/lr-high-gn.pt"]  # a teacher for --teacher, never the published gn.pt
    record = (out / "results" / "validation.md").read_text()
    assert "| lr-high | GroupNorm | epochs=1, batch_size=16, lr=0.1, amp=off, widths=[16, 32, 16, 28, 24, 32] |" in record


def test_model_options_survive_the_checkpoint(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "gn", "--groups", "2", "--widths", "8,16,8,12,8,16")
    model, ckpt = load_checkpoint(out / "checkpoints" / "gn.pt")
    assert ckpt["model_config"]["groups"] == 2 and model.C9[0].out_channels == 16


def test_bad_widths_are_refused(capsys):
    with pytest.raises(SystemExit):
        run.parse_args(["--widths", "16,32"])
    assert "6 comma-separated" in capsys.readouterr().err


def test_each_norm_trains_with_its_recipe_unless_a_flag_overrides(tmp_path, out, monkeypatch):
    monkeypatch.setitem(run.utils.RECIPES, "ln", {"lr": 0.2, "label_smoothing": 0.0})
    run_tiny(tmp_path, out, "--norm", "all", "--no-amp", "--label-smoothing", "0.05")
    configs = {n: json.loads((out / "results" / f"{n}.json").read_text())["config"] for n in results.NORMS}
    assert configs["ln"]["lr"] == 0.2 and configs["bn"]["lr"] == run.utils.TrainConfig().lr
    assert {c["label_smoothing"] for c in configs.values()} == {0.05}  # the flag beats the recipe
    assert {c["epochs"] for c in configs.values()} == {1}


def test_dry_run_without_out_leaves_the_saved_results_alone(tmp_path, monkeypatch, capsys):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    monkeypatch.setattr(run.tempfile, "tempdir", str(tmp_path / "tmp"))
    (tmp_path / "tmp").mkdir()
    saved = {p: p.stat().st_mtime_ns for p in (run.Path(run.__file__).parent / "results").glob("*.json")}
    assert run.main(["--dry-run", "--norm", "bn", "--data", str(tree), "--cache", str(tmp_path / "cache"),
                     "--batch-size", "4", "--quiet"]) == 0
    written = list((tmp_path / "tmp").glob("s8-dry-run-*/results/bn_seed0.json"))
    assert len(written) == 1 and "dry run: writing to" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in saved} == saved


@pytest.mark.parametrize("norm", results.NORMS)
def test_committed_checkpoints_load_as_their_results_describe(norm):
    root = run.ROOT
    model, ckpt = load_checkpoint(root / "checkpoints" / f"{norm}.pt", norm=norm)
    summary = json.loads((root / "results" / f"{norm}.json").read_text())
    assert ckpt["model_config"] == summary["model_config"] and type(model).__name__ == summary["model"]


def test_distillation_in_a_validation_run_takes_only_a_teacher_of_the_same_split(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "bn", "--validation", "20", "--tag", "teacher", "--widths", "16,16,16,16,16,16",
             "--no-amp")
    teacher = out / "checkpoints" / "validation" / "teacher-bn.pt"
    run_tiny(tmp_path, out, "--norm", "gn", "--validation", "20", "--tag", "student", "--teacher", str(teacher),
             "--distill-weight", "0.5", "--no-amp")
    result = json.loads((out / "results" / "validation" / "student-gn.json").read_text())
    assert result["changed"] == "epochs=1, batch_size=16, distill_weight=0.5, amp=off, teacher=teacher-bn"
    about = result["teacher"]
    assert about["model_config"]["widths"] == [16] * 6 and about["parameters"] > 0
    assert about["training"]["seconds_per_epoch"] > 0 and about["training"]["train_images"] == 40
    # a teacher trained on every training image has seen the images a validation run scores on
    full = tmp_path / "full"
    run_tiny(tmp_path, full, "--norm", "bn", "--no-amp")
    with pytest.raises(ValueError, match="may have seen the held-out images.*--validation 20"):
        run_tiny(tmp_path, out, "--norm", "gn", "--validation", "20", "--tag", "leak", "--no-amp",
                 "--teacher", str(full / "checkpoints" / "bn.pt"), "--distill-weight", "0.5")
    with pytest.raises(ValueError, match="no checkpoint at"):
        run.main(["--teacher", str(tmp_path / "missing.pt"), "--distill-weight", "0.5", "--validation", "20",
                  "--out", str(out), "--data", str(tmp_path)])
    with pytest.raises(ValueError, match="distillation needs both a teacher"):
        run.main(["--distill-weight", "0.5", "--data", str(tmp_path / "nowhere")])  # refused before any data is read
    # outside a validation run, a distilled model never lands in the project's own results
    with pytest.raises(ValueError, match="give it its own folder with --out"):
        run.main(["--teacher", str(teacher), "--distill-weight", "0.5", "--data", str(tmp_path / "nowhere")])
    run_tiny(tmp_path, tmp_path / "distilled", "--norm", "gn", "--teacher", str(teacher), "--distill-weight", "0.5",
             "--no-amp")
    assert json.loads((tmp_path / "distilled" / "results" / "gn.json").read_text())["config"]["distill_weight"] == 0.5
