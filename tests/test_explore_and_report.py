import pytest
import torch

import explorer
import plots
import results
import utils
from models import NORM_TYPES
from conftest import CLASSES
from test_utils import FixedLogits, fake_mistakes, toy_data


def test_confusion_matrix_counts_true_against_predicted():
    data = toy_data(10, 6)  # test labels 0..5
    logits = torch.full((6, 10), -5.0)
    for i, p in enumerate([0, 1, 9, 3, 9, 5]):
        logits[i, p] = 5
    counts = plots.confusion_matrix(FixedLogits(logits), data, utils.TrainConfig(amp="off"))
    assert counts.shape == (10, 10) and counts.sum() == 6
    assert counts[2, 9] == 1 and counts[4, 9] == 1 and counts.diag()[:6].tolist() == [1, 1, 0, 1, 0, 1]
    acc = plots.per_class_accuracy(counts)
    assert acc[:6].tolist() == [100, 100, 0, 100, 0, 100] and acc[7] == 0


def test_explorer_selects_by_true_and_predicted_class():
    items = fake_mistakes(12)  # true k % 10, predicted (k + 1) % 10
    assert [i["index"] for i in explorer.select(items, CLASSES, "airplane")] == [0, 10]
    assert [i["index"] for i in explorer.select(items, CLASSES, explorer.ANY, "automobile")] == [0, 10]
    assert explorer.select(items, CLASSES, "cat", "cat") == []
    assert len(explorer.select(items, CLASSES)) == 12


def test_explorer_widget_follows_the_controls():
    widgets = pytest.importorskip("ipywidgets")
    box = explorer.mistake_explorer(fake_mistakes(12), CLASSES)
    (true, predicted), (slider, count), _ = (c.children if hasattr(c, "children") else c for c in box.children)
    assert isinstance(box, widgets.VBox) and count.value.startswith("12 mistakes")
    true.value = "airplane"
    assert count.value.startswith("2 mistakes") and slider.max == 1
    predicted.value = "cat"
    assert count.value.startswith("0 mistakes") and slider.max == 0


def test_sample_and_augmentation_figures():
    data = toy_data(40, 10)
    assert len(plots.plot_samples(data, per_class=2).get_axes()) == 20
    fig = plots.plot_augmentation(data, index=3, cfg=utils.TrainConfig(pad=4), variants=5)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes][:2] == ["original", "augmented 1"] and len(axes) == 6
    shown = [torch.from_numpy(a.get_images()[0].get_array().data).permute(2, 0, 1) for a in axes]
    assert torch.equal(shown[0], data.train_images[3])  # the original, then copies made from it
    assert all(s.shape == shown[0].shape and not torch.equal(s, shown[0]) for s in shown[1:])


def fake_result(norm, test_acc, train_acc=80.0, tta=81.0):
    """A results/<norm>.json summary of one seed."""
    run = dict(seed=0, final_test_accuracy=test_acc, final_train_accuracy=train_acc,
               final_test_accuracy_flip_tta=tta, seconds_per_epoch=15.0)
    return dict(norm=norm, model=NORM_TYPES[norm].class_name, parameters=47970, epochs=20, seeds=[0], runs=[run],
                final_test_accuracy_mean=test_acc, final_test_accuracy_std=0.0, final_train_accuracy_mean=train_acc,
                final_test_accuracy_flip_tta_mean=tta, seconds_per_epoch_mean=15.0, data="x.tar.gz", device="CPU")


def test_results_table_and_observations():
    saved = {"bn": fake_result("bn", 81.0), "ln": fake_result("ln", 79.5), "gn": fake_result("gn", 80.0)}
    table = results.results_table(saved)
    assert table.count("\n| `Model_") == 3 and "**81.00% ± 0.00**" in table and "47,970" in table
    text = results.observations("gn", saved)
    assert "80.00% test accuracy after 20 epochs (one seed)" in text
    assert "1.00 points below BatchNorm (81.00%), from one seed: no spread to judge that by" in text
    assert "0.50 points above LayerNorm" in text
    assert "run.py --norm all" in results.observations("ln", {})


def test_flip_tta_is_a_separate_column():
    table = results.results_table({"bn": fake_result("bn", 81.0, tta=82.25), "ln": fake_result("ln", 79.5)})
    header, _, bn_row, ln_row = table.splitlines()
    assert header.rstrip(" |").endswith("with flip TTA")
    assert bn_row.endswith("| 82.25% |") and "**81.00% ± 0.00**" in bn_row
    assert ln_row.endswith("| 81.00% |")


def test_readme_without_markers_is_left_alone(tmp_path):
    (tmp_path / "README.md").write_text("no markers\n")
    assert results.update_readme(tmp_path) is False
    assert (tmp_path / "README.md").read_text() == "no markers\n"


@pytest.mark.parametrize("train_acc, verdict", [(79.0, "not overfitting"), (81.5, "little overfitting"),
                                                (84.0, "begun to overfit")])
def test_observations_judge_the_train_test_gap(train_acc, verdict):
    assert verdict in results.observations("bn", {"bn": fake_result("bn", 80.0, train_acc)})


def test_validation_record_names_the_data_sizes_and_precision_of_each_run():
    from results import validation_record

    def entry(tag, amp, train_images):
        return dict(tag=tag, norm="gn", changed="conv=ws", train_images=train_images, test_images=train_images // 9,
                    epochs=8, seed=1,
                    config={"amp": amp}, final_test_accuracy=70.123, final_train_accuracy=71.0, seconds_per_epoch=12.34)

    seed0 = {**entry("b-screen", "off", 9000), "seed": 0}
    rows = validation_record([entry("b-screen", "off", 9000), entry("a-full", True, 45000), seed0]).splitlines()[-3:]
    assert rows.pop(1).startswith("| b-screen | GroupNorm | conv=ws | 9,000 | 1,000 | 8 | 0 |")  # seeds in order
    assert rows[0] == "| a-full | GroupNorm | conv=ws | 45,000 | 5,000 | 8 | 1 | bf16 | 70.12% | 71.00% | 12.3 |"
    assert rows[1].startswith("| b-screen | GroupNorm | conv=ws | 9,000 | 1,000 | 8 | 1 | fp32 |")
