import json

import pytest
import torch

import run
from conftest import write_tree

ARTIFACTS = ["results/{n}.json", "checkpoints/{n}.pt", "images/{N}_curves.png", "images/{N}_misclassified.png"]


@pytest.fixture
def out(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "README.md").write_text(f"# title\n\n{run.TABLE_START}\nold table\n{run.TABLE_END}\n\nafter\n")
    return out


def run_tiny(tmp_path, out, *extra):
    tree = write_tree(tmp_path / "tree", n_train=6, n_test=2)
    argv = ["--data", str(tree), "--out", str(out), "--cache", str(tmp_path / "cache"), "--epochs", "1",
            "--batch-size", "16", "--quiet", *extra]
    assert run.main(argv) == 0


def test_run_all_writes_every_artifact(tmp_path, out, capsys):
    run_tiny(tmp_path, out, "--norm", "all")
    for norm in run.NORMS:
        for pattern in ARTIFACTS:
            assert (out / pattern.format(n=norm, N=norm.upper())).is_file(), pattern
        result = json.loads((out / "results" / f"{norm}.json").read_text())
        assert result["epochs"] == 1 and result["seed"] == 0 and result["parameters"] < 50_000
        assert len(result["history"]) == 1 and result["final_test_accuracy"] == result["history"][-1]["test_acc"]
        assert {"device", "torch", "data", "seconds_per_epoch", "final_train_accuracy"} <= set(result)
    assert (out / "images" / "comparison.png").is_file()
    readme = (out / "README.md").read_text()
    assert "old table" not in readme and readme.endswith("after\n")
    assert readme.count("| `Model_") == 3
    printed = capsys.readouterr().out
    assert "Total params" in printed and "train loss" in printed  # summary and per-epoch table
    assert not list(out.rglob("*.tmp*"))


def test_single_norm_leaves_readme_alone(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "Group")
    assert (out / "results" / "gn.json").is_file() and not (out / "results" / "bn.json").exists()
    assert "old table" in (out / "README.md").read_text()


def test_checkpoint_reloads_the_trained_model(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "ln")
    model, ckpt = run.load_checkpoint(out / "checkpoints" / "ln.pt")
    assert ckpt["norm"] == "ln" and model.norm == "ln"
    assert ckpt["mean"].shape == (3,)


def test_same_seed_same_results_and_figures(tmp_path, out):
    run_tiny(tmp_path, out, "--norm", "bn", "--no-amp")
    first = [(out / p.format(n="bn", N="BN")).read_bytes() for p in ARTIFACTS[2:]]
    first_json = json.loads((out / "results" / "bn.json").read_text())
    run_tiny(tmp_path, out, "--norm", "bn", "--no-amp")
    again_json = json.loads((out / "results" / "bn.json").read_text())
    assert first_json["history"][0]["train_loss"] == again_json["history"][0]["train_loss"]
    assert [(out / p.format(n="bn", N="BN")).read_bytes() for p in ARTIFACTS[2:]] == first


def test_interrupted_write_keeps_the_earlier_file(tmp_path, monkeypatch):
    target = tmp_path / "results" / "bn.json"
    run.write_json(target, {"final_test_accuracy": 80.0})

    write_text = type(target).write_text

    def crash(self, text, *a, **k):  # dies halfway through writing
        write_text(self, text[:5])
        raise KeyboardInterrupt

    monkeypatch.setattr(type(target), "write_text", crash)
    with pytest.raises(KeyboardInterrupt):
        run.write_json(target, {"final_test_accuracy": 1.0})
    monkeypatch.undo()
    assert json.loads(target.read_text()) == {"final_test_accuracy": 80.0}


def test_unknown_norm_is_refused():
    with pytest.raises(ValueError, match="unknown norm 'xn'"):
        run.main(["--norm", "xn"])
