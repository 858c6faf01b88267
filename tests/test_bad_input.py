"""Bad flags and hostile files: a clear error before any data is loaded or any training is lost."""

import json

import pytest
import torch

import run
from conftest import write_tree
from models import S8_model, fingerprint, load_checkpoint
from test_run import out, run_tiny  # noqa: F401 (the fixture)


@pytest.fixture
def no_data(monkeypatch):
    """Fails the test if run.py gets as far as loading data."""
    monkeypatch.setattr(run, "load_cifar10", lambda *a, **k: pytest.fail("data loaded before the flags were checked"))


@pytest.mark.parametrize("flags,message", [
    (["--batch-size", "0"], "--batch-size must be a whole number of at least 1, got 0"),
    (["--epochs", "0"], "--epochs must be a whole number of at least 1, got 0"),
    (["--epochs", "-1"], "--epochs must be a whole number of at least 1, got -1"),
    (["--lr", "0"], "--lr must be above 0, got 0.0"),
    (["--label-smoothing", "1.5", "--pad", "40"], "--label-smoothing must be .*; --pad must be from 0 to 16"),
])
def test_bad_training_settings_are_refused_before_the_data(tmp_path, no_data, flags, message):
    with pytest.raises(ValueError, match=message):
        run.main(["--norm", "bn", "--out", str(tmp_path), *flags])


@pytest.mark.parametrize("flags,message", [
    (["--subset", "-49000"], "argument --subset: expected 0 or more, got -49000"),
    (["--seed", "abc"], "argument --seed: expected a whole number, got 'abc'"),
    (["--seeds", "0", "x"], "argument --seeds: expected a whole number, got 'x'"),
    (["--groups", "0"], "argument --groups: expected 1 or more, got 0"),
    (["--widths", "16,32,0,28,16,32"], "6 comma-separated channel counts of 1 or more"),
])
def test_bad_numbers_get_a_plain_message(capsys, flags, message):
    with pytest.raises(SystemExit):
        run.parse_args(flags)
    assert message in capsys.readouterr().err


def test_groups_that_do_not_divide_the_widths_are_refused_before_the_data(tmp_path, no_data):
    with pytest.raises(ValueError, match="groups=3 does not divide"):
        run.main(["--norm", "gn", "--groups", "3", "--out", str(tmp_path)])


def test_subset_larger_than_the_training_set_is_refused_before_training(tmp_path, monkeypatch):
    monkeypatch.setattr(run, "run_one", lambda *a, **k: pytest.fail("trained"))
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)  # 60 training images
    with pytest.raises(ValueError, match="--subset 999999 is more than the 60 training images; use 1 to 60, or 0"):
        run.main(["--data", str(tree), "--cache", str(tmp_path / "c"), "--out", str(tmp_path / "o"),
                  "--subset", "999999"])


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


def test_checkpoint_of_another_norm_is_refused(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "ln")
    model, ckpt = load_checkpoint(out / "checkpoints" / "ln.pt", norm="layer")
    assert type(model).__name__ in ("S8Net", "Model_Layer_Normalization") and ckpt["model_config"]["norm"] == "ln"
    with pytest.raises(ValueError, match=r"ln\.pt holds a Model_Layer_Normalization, not the "
                                         r"Model_Group_Normalization asked for; load checkpoints/gn\.pt"):
        load_checkpoint(out / "checkpoints" / "ln.pt", norm="gn")


def test_relabelled_checkpoint_is_refused(tmp_path, out):
    """LayerNorm weights under a description that says GroupNorm: same shapes, so only the
    fingerprint notices."""
    run_tiny(tmp_path, out, "--norm", "ln")
    path = out / "checkpoints" / "ln.pt"
    ckpt = torch.load(path, weights_only=True)
    ckpt["model_config"]["norm"] = ckpt["norm"] = "gn"
    S8_model(**ckpt["model_config"]).load_state_dict(ckpt["model"])  # it would load silently
    torch.save(ckpt, tmp_path / "gn.pt")
    with pytest.raises(ValueError, match="does not match the weights saved with it"):
        load_checkpoint(tmp_path / "gn.pt", norm="gn")


def test_checkpoint_without_a_description_is_refused(tmp_path):
    torch.save({"model": S8_model("bn").state_dict(), "norm": "bn"}, tmp_path / "old.pt")
    with pytest.raises(ValueError, match="holds no model description"):
        load_checkpoint(tmp_path / "old.pt")


def test_fingerprint_changes_with_any_weight():
    model = S8_model("gn")
    config = {"norm": "gn"}
    before = fingerprint(config, model.state_dict())
    with torch.no_grad():
        model.c10.bias[3] += 1e-6
    assert fingerprint(config, model.state_dict()) != before


def interrupt_on_call(monkeypatch, n):
    """run_one raises KeyboardInterrupt on its n-th call, as Ctrl-C during that training would."""
    real, calls = run.run_one, []

    def run_one(*args, **kwargs):
        calls.append(1)
        if len(calls) == n:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(run, "run_one", run_one)


def test_ctrl_c_says_in_one_line_what_was_kept(tmp_path, out, monkeypatch, capsys):
    interrupt_on_call(monkeypatch, 3)  # bn seeds 0 and 1 finish; ln seed 0 is interrupted
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    code = run.main(["--data", str(tree), "--out", str(out), "--cache", str(tmp_path / "c"), "--epochs", "1",
                     "--batch-size", "16", "--quiet", "--seeds", "0", "1"])
    assert code == 130
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "interrupted; saved by this run: BatchNorm" in err
    assert (out / "results" / "bn.json").is_file() and not (out / "results" / "ln.json").exists()
    assert "old table" in (out / "README.md").read_text()  # the README is written only after all norms


def test_a_run_killed_midway_leaves_the_earlier_runs_files_together(tmp_path, out, monkeypatch):
    run_tiny(tmp_path, out, "--norm", "bn", "--seeds", "0", "1")
    earlier = {p.name: p.read_bytes() for p in (out / "results").glob("bn*.json")}
    earlier_checkpoint = (out / "checkpoints" / "bn.pt").read_bytes()
    run_ids = {json.loads(b)["run_id"] for b in earlier.values()}
    assert len(run_ids) == 1
    interrupt_on_call(monkeypatch, 2)  # seed 0 of the second run finishes, seed 1 is killed
    tree = tmp_path / "tree"
    code = run.main(["--data", str(tree), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "1",
                     "--batch-size", "16", "--quiet", "--seeds", "0", "1", "--norm", "bn", "--lr", "0.01"])
    assert code == 130
    assert {p.name: p.read_bytes() for p in (out / "results").glob("bn*.json")} == earlier
    assert (out / "checkpoints" / "bn.pt").read_bytes() == earlier_checkpoint
    unfinished = list((out / run.INCOMPLETE).glob("*-bn/results/bn_seed0.json"))
    assert len(unfinished) == 1 and json.loads(unfinished[0].read_text())["run_id"] not in run_ids


def test_every_file_of_a_run_carries_its_id(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "gn", "--seeds", "0", "1")
    ids = {json.loads((out / "results" / name).read_text())["run_id"] for name in ("gn.json", "gn_seed0.json", "gn_seed1.json")}
    ids.add(torch.load(out / "checkpoints" / "gn.pt", weights_only=True)["run_id"])
    assert len(ids) == 1 and not (out / run.INCOMPLETE).exists()


def test_learning_rate_history_is_the_rate_each_epoch_ended_on(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "bn", "--epochs", "3")
    result = json.loads((out / "results" / "bn_seed0.json").read_text())
    rates = [r["lr"] for r in result["history"]]
    lr = result["config"]["lr"]
    assert all(r > 0 for r in rates)
    assert rates[-1] == pytest.approx(lr / 10 / 100, rel=0.05)  # one-cycle's floor: lr / div / final_div
