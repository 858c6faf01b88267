"""The main job (run.py): what a run writes, and bad input refused before it costs finished work."""

import contextlib
import io
import json
import shutil
from types import SimpleNamespace

import pytest
import torch

from lab import results
import run
import recipes
import utils
from conftest import write_tree
from data import load_cifar10
from models import NORM_TYPES, load_checkpoint

ARTIFACTS = ["results/{n}.json", "results/{n}_seed0.json", "results/{n}_seed1.json", "checkpoints/{n}.pt",
             "images/{N}_curves.png", "images/{N}_misclassified.png"]
README = ("# title\n\n<!-- results-table:start -->\nold table\n<!-- results-table:end -->\n\n"
          "<!-- comparison:start -->\n<!-- comparison:end -->\n\nafter\n")


def tiny_argv(tree, out, cache, *extra):
    seeds = [] if "--seeds" in extra else ["--seeds", "0"]
    return ["--data", str(tree), "--out", str(out), "--cache", str(cache), "--epochs", "1", "--batch-size", "16",
            "--quiet", *seeds, *extra]


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One `run.py --norm all --seeds 0 1` (2 epochs, fp32) on 60 toy images, shared by the tests
    that only read what a run writes."""
    root = tmp_path_factory.mktemp("full-run")
    tree, out, cache = write_tree(root / "tree", n_train=6, n_test=2), root / "out", root / "cache"
    out.mkdir()
    (out / "README.md").write_text(README)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run.main(tiny_argv(tree, out, cache, "--norm", "all", "--seeds", "0", "1", "--epochs", "2",
                                  "--no-amp")) == 0
    return SimpleNamespace(out=out, tree=tree, cache=cache, printed=printed.getvalue(), root=root)


def seed_result(out, norm, seed=0):
    return json.loads((out / "results" / f"{norm}_seed{seed}.json").read_text())


def test_run_all_writes_every_artifact(full_run):
    out = full_run.out
    for norm in results.NORMS:
        for pattern in ARTIFACTS:
            assert (out / pattern.format(n=norm, N=norm.upper())).is_file(), pattern
        result = seed_result(out, norm)
        assert result["epochs"] == 2 and result["seed"] == 0 and len(result["history"]) == 2
        assert result["parameters"] < 50_000 and result["within_budget"] is True
        assert result["final_test_accuracy"] == result["history"][-1]["test_acc"]
        assert {"device", "torch", "data", "seconds_per_epoch", "final_train_accuracy", "final_test_accuracy_flip_tta",
                "precision"} <= set(result)
        assert result["precision"].startswith("fp32") and result["config"]["amp"] == "off"
        assert len(result["optimizer_groups"]["muon"]) == 10  # the ten kernels a norm follows and "c10.weight" in result["optimizer_groups"]["sgd"]
        assert result["model"] == NORM_TYPES[norm].class_name and result["model_config"]["norm"] == norm
        assert result["git_commit"] == results.code_version()["git_commit"] and "git_dirty" in result
        assert all(len(str(r["test_acc"]).split(".")[-1]) <= 2 for r in result["history"])  # two decimals
    assert (out / "images" / "comparison.png").is_file()
    assert not list(out.rglob("*.tmp*")) and not (out / run.INCOMPLETE).exists()
    assert "Total params" in full_run.printed and "train loss" in full_run.printed  # summary and per-epoch table
    assert "within the 50,000 budget" in full_run.printed


def test_run_all_writes_the_readme_table_from_this_runs_summaries(full_run):
    readme = (full_run.out / "README.md").read_text()
    assert "old table" not in readme and readme.endswith("after\n")
    assert readme.count("| `Model_") == 3 and "| 0, 1 |" in readme


def test_several_seeds_give_mean_and_spread(full_run):
    for norm in results.NORMS:
        per_seed = [seed_result(full_run.out, norm, k) for k in (0, 1)]
        summary = json.loads((full_run.out / "results" / f"{norm}.json").read_text())
        accs = [r["final_test_accuracy"] for r in per_seed]
        assert summary["seeds"] == [0, 1] and [r["final_test_accuracy"] for r in summary["runs"]] == accs
        assert summary["final_test_accuracy_mean"] == pytest.approx(sum(accs) / 2, abs=0.005)
        assert summary["final_test_accuracy_std"] == pytest.approx(abs(accs[0] - accs[1]) / 2 ** 0.5, abs=0.005)
        assert "history" not in summary and "seed" not in summary  # aggregates, not seed 0's fields
        checkpoint_id = torch.load(full_run.out / "checkpoints" / f"{norm}.pt", weights_only=True)["run_id"]
        assert summary["run_id"] == per_seed[0]["run_id"] == per_seed[1]["run_id"] == checkpoint_id


def test_checkpoint_is_the_model_the_results_describe(full_run):
    """Reloaded, seed 0's checkpoint scores exactly the final accuracy its JSON records."""
    data = load_cifar10(full_run.tree, cache_dir=full_run.cache)
    for norm in results.NORMS:
        model, ckpt = load_checkpoint(full_run.out / "checkpoints" / f"{norm}.pt", norm=norm)
        result = seed_result(full_run.out, norm)
        assert ckpt["mean"].shape == (3,) and ckpt["model_config"] == result["model_config"]
        assert round(utils.scores(model, data).accuracy, 2) == result["final_test_accuracy"]


def test_learning_rate_history_is_the_rate_each_epoch_ended_on(full_run):
    result = seed_result(full_run.out, "bn")
    rates = [r["lr"] for r in result["history"]]
    assert all(r > 0 for r in rates)
    assert rates[-1] == pytest.approx(result["config"]["lr"] / 10 / 100, rel=0.05)  # one-cycle's floor


def test_same_seed_same_results_and_figures(full_run, tmp_path):
    """bn seed 0 alone repeats, to the bit, bn seed 0 of the shared run."""
    out = tmp_path / "again"
    assert run.main(tiny_argv(full_run.tree, out, full_run.cache, "--norm", "bn", "--epochs", "2", "--no-amp")) == 0
    def without_timing(result):
        return [{k: v for k, v in row.items() if k != "seconds"} for row in result["history"]]

    assert without_timing(seed_result(out, "bn")) == without_timing(seed_result(full_run.out, "bn"))
    for figure in ("images/BN_curves.png", "images/BN_misclassified.png"):
        assert (out / figure).read_bytes() == (full_run.out / figure).read_bytes()


def test_a_single_norm_run_takes_its_recipe_and_model_options_and_leaves_the_readme(full_run, tmp_path, monkeypatch):
    monkeypatch.setitem(recipes.RECIPES, "gn", {"lr": 0.2, "label_smoothing": 0.0})
    out = tmp_path / "gn-only"
    out.mkdir()
    (out / "README.md").write_text(README)
    assert run.main(tiny_argv(full_run.tree, out, full_run.cache, "--norm", "Group", "--label-smoothing", "0.05",
                              "--groups", "2", "--widths", "8,16,8,12,8,16")) == 0
    assert (out / "results" / "gn.json").is_file() and not (out / "results" / "bn.json").exists()
    assert (out / "README.md").read_text() == README  # the table is written only by a run of all norms
    config = json.loads((out / "results" / "gn.json").read_text())["config"]
    assert config["lr"] == 0.2 and config["label_smoothing"] == 0.05  # the recipe, then the flag over it
    assert seed_result(full_run.out, "bn")["config"]["lr"] == recipes.TrainConfig().lr
    model, ckpt = load_checkpoint(out / "checkpoints" / "gn.pt")
    assert ckpt["model_config"]["groups"] == 2 and model.C9[0].out_channels == 16


def test_model_flags_reach_the_model_config():
    args = run.parse_args(["--norm", "none", "--no-skips", "--channels-per-group", "2"])
    assert args.skips is False and args.channels_per_group == 2
    assert run.parse_args([]).skips is None  # left out: the config's default (with skips)


def test_validation_run_scores_held_out_training_images_only(full_run, tmp_path):
    out = tmp_path / "validation"
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert run.main(tiny_argv(full_run.tree, out, full_run.cache, "--norm", "gn", "--validation", "20", "--tag",
                                  "lr-high", "--lr", "0.1", "--widths", "32,64,32,56,32,64", "--no-amp")) == 0
    result = json.loads((out / "results" / "validation" / "lr-high-gn.json").read_text())
    assert result["test_images"] == 20 and result["train_images"] == 40  # 60 training images, 20 held out
    assert "validation split 20" in result["data"]
    assert result["changed"] == "epochs=1, batch_size=16, lr=0.1, amp=off, widths=[32, 64, 32, 56, 32, 64]"
    assert "C5.0.weight" in result["optimizer_groups"]["muon"] and "c10.weight" in result["optimizer_groups"]["sgd"]
    assert not (out / "results" / "gn.json").exists() and not (out / "checkpoints").exists()
    record = (out / "results" / "validation.md").read_text()
    assert "| lr-high | GroupNorm | epochs=1, batch_size=16, lr=0.1, amp=off, widths=[32, 64, 32, 56, 32, 64] |" in record
    # a model over the budget says so when it starts and in its results
    assert result["parameters"] > 50_000 and result["within_budget"] is False
    assert f"{result['parameters']:,} parameters: OVER the 50,000-parameter budget" in printed.getvalue()


def test_dry_run_without_out_leaves_the_saved_results_alone(full_run, tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(run.tempfile, "tempdir", str(tmp_path))
    saved = {p: p.stat().st_mtime_ns for p in (run.ROOT / "results").glob("*.json")}
    assert run.main(["--dry-run", "--norm", "bn", "--data", str(full_run.tree), "--cache", str(full_run.cache),
                     "--batch-size", "4", "--quiet"]) == 0
    written = list(tmp_path.glob("s8-dry-run-*/results/bn_seed0.json"))
    assert len(written) == 1 and "dry run: writing to" in capsys.readouterr().out
    assert {p: p.stat().st_mtime_ns for p in saved} == saved


def interrupt_on_call(monkeypatch, n):
    """run_one raises KeyboardInterrupt on its n-th call, as Ctrl-C during that training would."""
    real, calls = run.results.run_one, []

    def run_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run.results, "run_one", run_one)


def test_ctrl_c_keeps_every_finished_norm_whole_and_the_earlier_files_of_the_rest(full_run, tmp_path, monkeypatch,
                                                                                 capsys):
    out = tmp_path / "out"
    shutil.copytree(full_run.out, out)
    earlier = {p.name: p.read_bytes() for p in (out / "results").glob("ln*.json")}
    earlier_readme = (out / "README.md").read_bytes()
    interrupt_on_call(monkeypatch, 4)  # bn seeds 0 and 1 and ln seed 0 finish; ln seed 1 is interrupted
    assert run.main(tiny_argv(full_run.tree, out, full_run.cache, "--seeds", "0", "1", "--lr", "0.01")) == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted; saved by this run: BatchNorm (in" in err
    assert "the unfinished norm's finished seeds, if any, are in" in err
    new_bn = json.loads((out / "results" / "bn.json").read_text())
    assert new_bn["config"]["lr"] == 0.01 and new_bn["run_id"] == seed_result(out, "bn", 1)["run_id"]
    assert {p.name: p.read_bytes() for p in (out / "results").glob("ln*.json")} == earlier  # not mixed with new seeds
    unfinished = list((out / run.INCOMPLETE).glob("*-ln/results/ln_seed0.json"))
    assert len(unfinished) == 1 and json.loads(unfinished[0].read_text())["run_id"] == new_bn["run_id"]
    assert (out / "README.md").read_bytes() == earlier_readme  # written only after all norms


# ---------------------------------------------------------------------------------------------
# Bad input: a one-line error naming the fix, before any data is loaded or any training is lost.


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if run.py gets as far as loading data."""
    monkeypatch.setattr(run, "load_cifar10", lambda *a, **k: pytest.fail("data loaded before the flags were checked"))


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1, got 0"),
    (["--epochs", "0"], "--epochs must be a whole number of at least 1, got 0"),
    (["--epochs", "-1"], "--epochs must be a whole number of at least 1, got -1"),
    (["--lr", "0"], "--lr must be above 0, got 0.0"),
    (["--lr", "nan"], "--lr must be a finite number, got nan"),
    (["--weight-decay", "inf"], "--weight-decay must be a finite number, got inf"),
    (["--label-smoothing", "1.5", "--pad", "40"], "--label-smoothing must be .*; --pad must be from 0 to 16"),
    (["--norm", "gn", "--groups", "3"], "groups=3 does not divide"),
    (["--norm", "xn"], "unknown norm 'xn'"),
    (["--norm", "gn", "--channels-per-group", "3"], "channels_per_group=3 does not divide"),
    (["--norm", "ln", "--channels-per-group", "2"], "channels_per_group is GroupNorm's"),
])
def test_bad_settings_are_refused_before_the_data(tmp_path, no_data, flags, message):
    with pytest.raises(ValueError, match=message):
        run.main(["--norm", "bn", "--out", str(tmp_path), *flags])


@pytest.mark.parametrize("flags,message", [
    (["--subset", "-49000"], "argument --subset: expected 0 or more, got -49000"),
    (["--seed", "abc"], "argument --seed: expected a whole number, got 'abc'"),
    (["--seeds", "0", "x"], "argument --seeds: expected a whole number, got 'x'"),
    (["--groups", "0"], "argument --groups: expected 1 or more, got 0"),
    (["--widths", "16,32,0,28,16,32"], "6 comma-separated channel counts of 1 or more"),
    (["--widths", "16,32"], "6 comma-separated channel counts of 1 or more"),
    (["--ema", "0.99"], "unrecognized arguments: --ema 0.99"),  # removed: lost on the validation split
])
def test_bad_numbers_get_a_plain_message(capsys, flags, message):
    with pytest.raises(SystemExit):
        run.parse_args(flags)
    assert message in capsys.readouterr().err


def test_subset_larger_than_the_training_set_is_refused_before_training(full_run, tmp_path, monkeypatch):
    monkeypatch.setattr(run.results, "run_one", lambda *a, **k: pytest.fail("trained"))
    with pytest.raises(ValueError, match="--subset 999999 is more than the 60 training images; use 1 to 60, or 0"):
        run.main(["--data", str(full_run.tree), "--cache", str(full_run.cache), "--out", str(tmp_path / "o"),
                  "--subset", "999999"])


def test_a_subset_that_leaves_fewer_than_ten_test_images_is_refused_before_the_data(tmp_path, no_data):
    with pytest.raises(ValueError, match="--subset 3 keeps 0 test images .* use --subset 50 or more"):
        run.main(["--norm", "bn", "--out", str(tmp_path), "--subset", "3"])
    with pytest.raises(ValueError, match="--subset 49 keeps 9 test images"):
        run.main(["--norm", "bn", "--out", str(tmp_path), "--subset", "49"])


def test_instance_norm_after_the_relu_is_named_before_the_data(tmp_path, no_data):
    with pytest.warns(UserWarning, match="one channel per group after the ReLU trains at chance: each channel's "
                                         "spatial mean becomes its shift.*--order norm-relu"):
        with pytest.raises(pytest.fail.Exception):  # then goes on, to the data this test refuses to load
            run.main(["--norm", "in", "--order", "relu-norm", "--out", str(tmp_path)])


def test_out_that_is_a_file_is_refused_before_the_data(tmp_path, no_data):
    (tmp_path / "taken").write_text("x")
    with pytest.raises(ValueError, match=r"--out .*taken is not a folder this run can write to"):
        run.main(["--norm", "bn", "--out", str(tmp_path / "taken")])


def test_unwritable_out_is_refused_before_the_data(tmp_path, no_data, monkeypatch):
    def denied(*args, **kwargs):  # as for a non-root user in a read-only folder
        raise PermissionError(13, "Permission denied")

    monkeypatch.setattr(run.tempfile, "mkstemp", denied)
    with pytest.raises(ValueError, match=r"--out .* is not a folder this run can write to \(Permission denied\); "
                                         r"choose another with --out"):
        run.main(["--norm", "bn", "--out", str(tmp_path / "results-here")])


@pytest.mark.parametrize("norm", results.NORMS)
def test_committed_checkpoints_load_as_their_results_describe(norm):
    model, ckpt = load_checkpoint(run.ROOT / "checkpoints" / f"{norm}.pt", norm=norm)
    summary = json.loads((run.ROOT / "results" / f"{norm}.json").read_text())
    assert ckpt["model_config"] == summary["model_config"] and type(model).__name__ == summary["model"]


def test_report_draws_the_readme_and_comparison_a_run_of_all_norms_wrote(full_run, tmp_path, monkeypatch):
    """After norms trained by separate runs, `python run.py --report` writes what `run.py --norm all` would."""
    out = tmp_path / "out"
    shutil.copytree(full_run.out, out)
    (out / "README.md").write_text(README)
    (out / "images" / "comparison.png").unlink()
    monkeypatch.setattr(run.results, "run_one", lambda *a, **k: pytest.fail("trained"))
    assert run.main(["--report", "--out", str(out)]) == 0
    assert (out / "README.md").read_text() == (full_run.out / "README.md").read_text()
    assert (out / "images" / "comparison.png").read_bytes() == (full_run.out / "images" / "comparison.png").read_bytes()
