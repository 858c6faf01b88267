"""Results files, the seeds' statistic, the generated sections and one seed trained and recorded (lab/results.py)."""

import dataclasses

import pytest

import hardware
import recipes
from conftest import FAST, toy_data
from lab import results
from models import NORM_TYPES, ModelConfig


def fake_result(norm, test_acc, train_acc=80.0, tta=81.0, config=None):
    """A results/<norm>.json summary of one seed."""
    run = dict(seed=0, final_test_accuracy=test_acc, final_train_accuracy=train_acc,
               final_test_accuracy_flip_tta=tta, seconds_per_epoch=15.0)
    return dict(norm=norm, model=NORM_TYPES[norm].class_name, parameters=47970, epochs=20, seeds=[0], runs=[run],
                final_test_accuracy_mean=test_acc, final_test_accuracy_std=0.0, final_train_accuracy_mean=train_acc,
                final_test_accuracy_flip_tta_mean=tta, seconds_per_epoch_mean=15.0, data="x.tar.gz", device="CPU",
                config=config or {"lr": 0.05})


def summary(norm, accs):
    runs = [dict(seed=k, final_test_accuracy=a, seconds_per_epoch=10.0) for k, a in enumerate(accs)]
    return dict(norm=norm, runs=runs, seeds=list(range(len(accs))), final_test_accuracy_mean=sum(accs) / len(accs),
                seconds_per_epoch_mean=10.0, device="CPU")


@pytest.mark.parametrize("a, b, expected", [
    ([80.0, 81.0], [82.1, 82.5], True),  # 1.8 apart, ranges 1.0 and 0.4
    ([80.0, 81.0], [81.0, 81.4], False),  # 0.7 apart: within the 1.0 range
    ([80.0], [90.0], False),  # one seed shows no range to judge by
])
def test_a_difference_counts_only_beyond_the_seeds_range(a, b, expected):
    assert results.differ(a, b) is expected and results.differ(b, a) is expected


def test_mean_and_range():
    assert results.mean_and_range([81.0, 80.0, 82.5]) == (pytest.approx(81.1666, abs=1e-3), 80.0, 82.5)


def test_summary_of_seeds_gives_mean_sample_std_and_each_seed():
    runs = [dict(seed=s, final_test_accuracy=a, final_train_accuracy=a + 1, final_test_accuracy_flip_tta=a + 0.5,
                 seconds_per_epoch=10.0 + s, config={"lr": 0.05, "seed": s}, history=[], norm="bn",
                 **{k: k for k in ("model", "parameters", "within_budget", "epochs", "data", "train_images",
                                   "test_images", "device", "precision", "torch", "model_config", "run_id",
                                   "git_commit", "git_dirty")})
            for s, a in ((0, 80.0), (1, 81.0), (2, 82.0))]
    s = results.summarize_seeds(runs)
    assert s["final_test_accuracy_mean"] == 81.0 and s["final_test_accuracy_std"] == 1.0  # sample std (n - 1)
    assert s["seeds"] == [0, 1, 2] and [r["final_test_accuracy"] for r in s["runs"]] == [80.0, 81.0, 82.0]
    assert s["config"] == {"lr": 0.05} and "history" not in s and s["seconds_per_epoch_mean"] == 11.0


def test_results_table():
    saved = {"bn": fake_result("bn", 81.0), "ln": fake_result("ln", 79.5), "gn": fake_result("gn", 80.0)}
    table = results.results_table(saved)
    assert table.count("\n| `Model_") == 3 and "**81.00% ± 0.00**" in table and "47,970" in table


def test_the_table_names_each_norms_optimizer():
    table = results.results_table({"bn": fake_result("bn", 82.0, config={"muon_lr": 0.1}),
                                   "ln": fake_result("ln", 80.0)})  # written before Muon existed: no muon_lr
    header, _, bn_row, ln_row = table.splitlines()
    column = header.split(" | ").index("optimizer")
    assert bn_row.split(" | ")[column] == "Muon 0.1 + SGD" and ln_row.split(" | ")[column] == "SGD"


def test_the_tables_seconds_per_epoch_is_the_median_of_the_seeds():
    """One seed slowed by a second process must not move the column (it did: GroupNorm's mean was 32.9 s)."""
    r = fake_result("gn", 82.0)
    r["runs"] = [{**r["runs"][0], "seed": k, "seconds_per_epoch": s} for k, s in enumerate((41.6, 28.8, 28.2))]
    header, _, row = results.results_table({"gn": r}).splitlines()
    assert row.split(" | ")[header.split(" | ").index("s/epoch, median")] == "28.8"


def test_flip_tta_is_a_separate_column():
    table = results.results_table({"bn": fake_result("bn", 81.0, tta=82.25), "ln": fake_result("ln", 79.5)})
    header, _, bn_row, ln_row = table.splitlines()
    assert header.rstrip(" |").endswith("with flip TTA")
    assert bn_row.endswith("| 82.25% |") and "**81.00% ± 0.00**" in bn_row
    assert ln_row.endswith("| 81.00% |")


def test_a_difference_between_norms_trained_with_different_optimizers_says_so():
    muon = {**summary("bn", [82.0, 82.2]), "config": {"optimizer": "muon", "muon_lr": 0.1}}
    text = results.comparison({"bn": muon, "ln": summary("ln", [80.0, 80.3])})
    assert "BatchNorm above LayerNorm (trained with different optimizers: Muon 0.1 + SGD against SGD)" in text
    assert "fastest:" in text  # one device


def test_seconds_from_different_machines_are_not_compared():
    other = {**summary("ln", [80.0, 80.3]), "device": "CPU AMD EPYC (AVX512), 2 threads"}
    text = results.comparison({"bn": summary("bn", [82.0, 82.2]), "ln": other})
    assert "fastest" not in text and "measured on different machines (the device column), so not compared" in text


def test_seconds_per_epoch_are_the_median_of_the_seeds_each_seed_shown():
    """One seed slowed by another job on the machine must not make its norm look slow."""
    slowed, steady = summary("gn", [82.0, 82.0, 82.0]), summary("ln", [82.0, 82.0, 82.0])
    for record, seconds in ((slowed, (41.6, 28.8, 28.2)), (steady, (29.0, 29.5, 30.0))):
        record["runs"] = [{**run, "seconds_per_epoch": t} for run, t in zip(record["runs"], seconds)]
    text = results.comparison({"gn": slowed, "ln": steady})
    assert "GroupNorm 28.8 s (41.6, 28.8, 28.2), LayerNorm 29.5 s (29.0, 29.5, 30.0); fastest: GroupNorm." in text


def test_a_difference_within_the_seeds_spread_is_reported_as_none():
    level = {"bn": summary("bn", [80.6, 81.0, 81.0]), "gn": summary("gn", [80.5, 81.5, 80.9])}
    assert "none; on these runs the norms are level" in results.comparison(level)
    apart = {"bn": summary("bn", [82.0, 82.2]), "ln": summary("ln", [80.0, 80.3])}
    assert "BatchNorm above LayerNorm" in results.comparison(apart)


def test_write_section_replaces_only_what_stands_between_its_markers(tmp_path, capsys):
    doc = tmp_path / "doc.md"
    doc.write_text("top\n<!-- a:start -->\nold a\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nold b\n<!-- b:end -->\n")
    assert results.write_section(doc, "a", "new a") is True
    assert doc.read_text() == "top\n<!-- a:start -->\nnew a\n<!-- a:end -->\nmiddle\n<!-- b:start -->\nold b\n<!-- b:end -->\n"
    assert results.write_section(doc, "a", "new a") is False  # nothing to change
    with pytest.raises(ValueError, match="no <!-- missing:start --> ... <!-- missing:end --> markers"):
        results.write_section(doc, "missing", "x")
    assert results.write_section(tmp_path / "absent.md", "a", "x") is False


def test_a_readme_without_markers_is_refused_and_left_as_it_was(tmp_path):
    (tmp_path / "README.md").write_text("no markers\n")
    with pytest.raises(ValueError, match="results-table:start"):
        results.update_readme(tmp_path, {"bn": fake_result("bn", 81.0)})
    assert (tmp_path / "README.md").read_text() == "no markers\n"


def test_validation_record_names_the_data_sizes_and_precision_of_each_run():
    def entry(tag, amp, train_images):
        return dict(tag=tag, norm="gn", changed="conv=ws", train_images=train_images, test_images=train_images // 9,
                    epochs=8, seed=1,
                    config={"amp": amp}, final_test_accuracy=70.123, final_train_accuracy=71.0, seconds_per_epoch=12.34)

    seed0 = {**entry("b-screen", "off", 9000), "seed": 0}
    rows = results.validation_record([entry("b-screen", "off", 9000), entry("a-full", True, 45000), seed0]).splitlines()[-3:]
    assert rows.pop(1).startswith("| b-screen | GroupNorm | conv=ws | 9,000 | 1,000 | 8 | 0 |")  # seeds in order
    assert rows[0] == "| a-full | GroupNorm | conv=ws | 45,000 | 5,000 | 8 | 1 | bf16 | 70.12% | 71.00% | 12.3 |"
    assert rows[1].startswith("| b-screen | GroupNorm | conv=ws | 9,000 | 1,000 | 8 | 1 | fp32 |")


def test_changed_settings_name_only_what_differs_from_the_defaults():
    assert results.changed_settings({"lr": 0.1, "seed": 3, "epochs": 20}, {"lr": 0.05, "seed": 0, "epochs": 20}) == "lr=0.1"
    assert results.changed_settings({"lr": 0.05}, {"lr": 0.05}) == "-"


def test_run_one_records_what_it_trained_in_one_schema():
    cfg = recipes.TrainConfig(epochs=2, **FAST)
    run = results.run_one(ModelConfig(norm="gn"), cfg, toy_data(64, 10), hardware.choose_precision("cpu", "gn", "off", False),
                        "cpu", verbose=False, progress=False, probe=lambda model, steps: lambda: {"steps_per_epoch": steps})
    record = run["record"]
    assert record["config"] == {**dataclasses.asdict(cfg), "amp": "off", "channels_last": False}  # as chosen
    assert record["model_config"] == ModelConfig(norm="gn").to_dict() and record["steps_per_epoch"] == 2
    assert record["final_test_accuracy"] == record["history"][-1]["test_acc"] and record["diverged"] is None
    assert record["precision"] == "fp32, NCHW (asked for)" and record["train_images"] == 64
    assert run["checkpoint"]["model_config"] == record["model_config"] and len(run["mistakes"]) > 0
