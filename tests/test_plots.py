"""The figures: the course's (plots.py) and the lessons' experiments' (lab/figures.py)."""

import torch

import plots
import recipes
import utils
from conftest import CLASSES, fake_mistakes, toy_data
from lab import figures
from models import NORM_TYPES


def test_misclassified_grid_has_ten_titled_panels_in_5_rows_2_columns():
    fig = plots.plot_incorrect_predictions(fake_mistakes(), CLASSES, model="Model_Group_Normalization")
    assert fig.get_suptitle().startswith("Model_Group_Normalization: the 10 wrong predictions the model was most "
                                         "confident in")
    axes = fig.get_axes()
    assert len(axes) == 10
    geometry = {ax.get_subplotspec().get_geometry()[:2] for ax in axes}
    assert geometry == {(5, 2)}
    assert axes[0].get_title() == "true: airplane | pred: automobile\nconfidence 0.50"
    assert all(ax.get_title() and ax.get_images() for ax in axes)
    assert utils.plot_incorrect_predictions is plots.plot_incorrect_predictions  # the notebooks' name for it


def test_curves_show_train_and_test_loss_and_accuracy():
    history = [dict(epoch=e, train_loss=2 / e, test_loss=2.1 / e, train_acc=10 * e, test_acc=9 * e) for e in (1, 2, 3)]
    fig = plots.plot_curves(history)
    loss_ax, acc_ax = fig.get_axes()
    # The two losses are different quantities: each line says which.
    assert [l.get_label() for l in loss_ax.get_lines()] == ["train: label-smoothed, augmented, epoch average",
                                                             "test: plain, after the epoch"]
    assert [l.get_label() for l in acc_ax.get_lines()] == ["train", "test"]
    assert list(acc_ax.get_lines()[1].get_ydata()) == [9, 18, 27]
    assert all(tick == int(tick) for tick in acc_ax.xaxis.get_major_locator().tick_values(1, 3))  # whole epochs


def test_sample_and_augmentation_figures():
    data = toy_data(40, 10)
    assert len(plots.plot_samples(data, per_class=2).get_axes()) == 20
    fig = plots.plot_augmentation(data, index=3, cfg=recipes.TrainConfig(pad=4), variants=5)
    axes = fig.get_axes()
    assert [a.get_title() for a in axes][:2] == ["original", "augmented 1"] and len(axes) == 6
    shown = [torch.from_numpy(a.get_images()[0].get_array().data).permute(2, 0, 1) for a in axes]
    assert torch.equal(shown[0], data.train_images[3])  # the original, then copies made from it
    assert all(s.shape == shown[0].shape and not torch.equal(s, shown[0]) for s in shown[1:])


def test_batch_size_figure_draws_batchnorms_mean_and_seed_range_and_the_others_as_bands():
    bn = {2: [40.0, 42.0], 128: [50.0, 51.0]}
    ax = figures.plot_batch_size(bn, {"gn": [54.0, 55.0]}, {"bn": "BatchNorm", "gn": "GroupNorm"}, 128, "c").axes[0]
    assert [c.get_label() for c in ax.containers] == ["BatchNorm"]
    assert ax.containers[0].lines[0].get_color() == NORM_TYPES["bn"].color
    lines = ax.get_lines()
    assert list(lines[0].get_ydata()) == [41.0, 50.5] and list(lines[0].get_xdata()) == [2, 128]
    low, high = ax.containers[0].lines[2][0].get_segments()[0][:, 1]  # the bar at 2 images
    assert (low, high) == (40.0, 42.0)
    band = next(line for line in lines if line.get_label() == "GroupNorm (each image alone)")
    assert list(band.get_ydata()) == [54.5, 54.5] and band.get_color() == NORM_TYPES["gn"].color


def test_a_long_caption_is_wrapped_to_the_figures_width():
    caption = "10,000 training images, 8 epochs, scored on 5,000 held-out validation images; " * 4
    fig = figures.plot_group_size({"1": [60.0, 61.0], "2": [62.0, 63.0]}, caption)
    lines = fig.get_supxlabel().splitlines()
    assert len(lines) > 1 and max(map(len, lines)) <= fig.get_figwidth() * 17
    assert " ".join(lines) == caption.strip()


def test_the_figures_module_imports_neither_the_training_loop_nor_the_optimizers():
    import ast
    from pathlib import Path

    tree = ast.parse(Path(plots.__file__).read_text())
    imported = {n.module if isinstance(n, ast.ImportFrom) else a.name for n in ast.walk(tree)
                if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    assert not imported & {"utils", "muon", "experiments", "run", "lessons"}, imported


def test_each_norm_keeps_its_colour_from_the_norm_table():
    history = [dict(epoch=1, test_acc=50.0), dict(epoch=2, test_acc=60.0)]
    ax = plots.plot_comparison({"gn": history, "bn": history}).axes[0]
    assert [(line.get_label(), line.get_color()) for line in ax.get_lines()] == [
        ("GroupNorm", NORM_TYPES["gn"].color), ("BatchNorm", NORM_TYPES["bn"].color)]
