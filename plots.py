"""The course's figures, drawn from data and training histories alone (it trains and predicts nothing), each norm in
its one colour (models.NORM_TYPES); the lessons' experiment figures are lab/figures.py's."""

import math
import textwrap

import torch
from matplotlib import cm
from matplotlib.figure import Figure
from matplotlib.patches import Polygon
from matplotlib.ticker import MaxNLocator

from data import CIFAR10, train_batches
from models import NORM_TYPES


# The two losses are different quantities, so each line says what it measures: training optimizes
# label-smoothed cross-entropy on augmented images (averaged over the epoch as the weights move),
# the test loss is plain cross-entropy on the untouched test images after the epoch.
CURVE_LABELS = {"train": "train: label-smoothed, augmented, epoch average", "test": "test: plain, after the epoch"}


def figure(figsize, *grid, **options):
    """A constrained-layout figure of `figsize` inches and its axes, fig.subplots(*grid, **options)."""
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.subplots(*grid, **options)


def finish(fig, ax, caption=None, legend=True, fontsize=None, grid="both", epochs=False):
    """The end every panel shares: a light grid, the legend, whole epochs on x with `epochs`, and `caption` (the
    settings) wrapped to the figure's width (about 17 characters of 7-point text per inch) so that none is cut off."""
    if epochs:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3, axis=grid)
    if legend:
        ax.legend(fontsize=fontsize)
    if caption:
        fig.supxlabel(textwrap.fill(caption, int(fig.get_figwidth() * 17)), fontsize=7)
    return fig


def show_mistake(ax, item, classes, fontsize, more=""):
    """A mistake's image, titled with its true and predicted class and the confidence."""
    ax.set_axis_off()
    ax.imshow(item["image"].permute(1, 2, 0).numpy())  # raw uint8 pixels: nothing to un-normalize
    ax.set_title(f"true: {classes[item['true']]} | pred: {classes[item['predicted']]}\n"
                 f"confidence {item['confidence']:.2f}{more}", fontsize=fontsize)


def plot_curves(history, title=None):
    """Loss and accuracy per epoch, train and test, side by side."""
    fig, (loss_ax, acc_ax) = figure((10, 4), 1, 2)
    epochs = [r["epoch"] for r in history]
    for split in ("train", "test"):
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], marker=".", label=CURVE_LABELS[split])
        acc_ax.plot(epochs, [r[f"{split}_acc"] for r in history], marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        finish(fig, ax, fontsize=8, epochs=True)
    if title:
        fig.suptitle(title)
    return fig


def plot_comparison(histories):
    """Test accuracy per epoch for several norms: {norm: history}, each in its colour."""
    fig, ax = figure((7, 4.5))
    for norm, history in histories.items():
        ax.plot([r["epoch"] for r in history], [r["test_acc"] for r in history], marker=".",
                label=NORM_TYPES[norm].label, color=NORM_TYPES[norm].color)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy by normalization")
    return finish(fig, ax, epochs=True)


def plot_samples(data, per_class=4):
    """The first `per_class` training images of every class, one column per class."""
    classes = data.classes
    fig, axes = figure((1.2 * len(classes), 1.25 * per_class + 0.3), per_class, len(classes), squeeze=False)
    for c, name in enumerate(classes):
        picks = (data.train_labels == c).nonzero().flatten()[:per_class].tolist()
        for r, ax in enumerate(axes[:, c]):
            ax.set_axis_off()
            if r < len(picks):
                ax.imshow(data.train_images[picks[r]].permute(1, 2, 0).cpu().numpy())
        axes[0, c].set_title(name, fontsize=9)
    return fig


def plot_augmentation(data, cfg, index=0, variants=7, seed=0):
    """One training image and `variants` augmented copies of it, made by the training loop's own
    batch iterator from a set of that one image, with cfg's pad, flip and cutout."""
    image = data.train_images[index].cpu()
    copies_of_one = CIFAR10(image.expand(variants, -1, -1, -1), torch.zeros(variants, dtype=torch.long),
                            image[None], torch.zeros(1, dtype=torch.long), data.classes, data.source)
    generator = torch.Generator().manual_seed(seed)
    copies, _ = next(train_batches(copies_of_one, variants, generator, cfg.pad, cfg.flip, cfg.cutout, normalized=False))
    fig, axes = figure((1.6 * (variants + 1), 2.0), 1, variants + 1)
    for k, (ax, img) in enumerate(zip(axes, [image, *copies])):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title("original" if k == 0 else f"augmented {k}", fontsize=9)
        ax.set_axis_off()
    return fig


def plot_incorrect_predictions(items, classes, count=10, columns=2, model=None):
    """The first `count` mistakes (most confident first) in a 5x2 grid, each titled with its classes and confidence."""
    rows = math.ceil(count / columns)
    fig, axes = figure((2.4 * columns + 1, 2.2 * rows + 0.6), rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < min(count, len(items)):
            show_mistake(ax, items[k], classes, 9)
    fig.suptitle(f"{model + ': ' if model else ''}the {min(count, len(items))} wrong predictions the model was most "
                 "confident in\n(confidence: the probability it gave the predicted class)", fontsize=10)
    return fig


def plot_mistake(item, classes):
    """One misclassified test image, large, with its classes, confidence and index (explorer.py)."""
    fig, ax = figure((3.2, 3.4))
    show_mistake(ax, item, classes, 10, f", test image #{item['index']}")
    return fig


def _box(ax, c, hw, n, color, alpha, channels, edge="black"):
    """A box over channels c = (first, last), positions hw and images n, drawn obliquely: C to the right,
    H·W up, N into the page; of its faces those on the outside of the whole block, the ones one sees."""
    (c0, c1), (h0, h1), (n0, n1) = c, hw, n

    def at(cc, hh, nn):
        return cc + 0.45 * nn, hh + 0.35 * nn

    faces = [[at(c0, h0, n0), at(c1, h0, n0), at(c1, h1, n0), at(c0, h1, n0)] if n0 == 0 else None,  # front
             [at(c0, h1, n0), at(c1, h1, n0), at(c1, h1, n1), at(c0, h1, n1)],  # top
             [at(c1, h0, n0), at(c1, h0, n1), at(c1, h1, n1), at(c1, h1, n0)] if c1 == channels else None]  # side
    for face in filter(None, faces):
        ax.add_patch(Polygon(face, closed=True, facecolor=color, alpha=alpha, edgecolor=edge, linewidth=0.6))


def plot_normalized_over(groups=4, channels=8, images=6, norms=("bn", "ln", "in", "gn")):
    """What each norm normalizes over (Wu and He, 2018, Figure 2): one panel per norm of a batch of activations, a block
    of N images x C channels x H·W positions, the values one mean and variance are taken over shaded."""
    fig, axes = figure((3.1 * len(norms), 3.3), 1, len(norms), squeeze=False)
    size = channels // groups
    shaded = {"bn": ((0, 1), (0, images)), "ln": ((0, channels), (0, 1)), "in": ((0, 1), (0, 1)),
              "gn": ((0, size), (0, 1))}
    for ax, norm in zip(axes[0], norms):
        _box(ax, (0, channels), (0, 6), (0, images), "white", 1.0, channels)
        (c, n) = shaded[norm]
        _box(ax, c, (0, 6), n, NORM_TYPES[norm].color, 0.75, channels)
        if norm == "gn":  # the other groups' borders, on the front face
            for k in range(1, groups):
                ax.plot([k * size, k * size], [0, 6], color="black", linewidth=0.6, linestyle="--")
        ax.set_xlim(-0.5, channels + 0.45 * images + 0.5)
        ax.set_ylim(-0.8, 6 + 0.35 * images + 0.5)
        ax.set_aspect("equal")
        ax.set_axis_off()
        ax.text(channels / 2, -0.6, "C (channels)", ha="center", fontsize=8)
        ax.text(-0.3, 3, "H, W", ha="right", va="center", rotation=90, fontsize=8)
        ax.text(channels + 0.45 * images / 2 + 0.3, 0.35 * images / 2 - 0.2, "N (images)", fontsize=8, rotation=35)
        ax.set_title(NORM_TYPES[norm].label + (f" ({groups} groups)" if norm == "gn" else ""), fontsize=10)
    fig.suptitle("The values one mean and variance are taken over (shaded)", fontsize=10)
    return fig


def plot_watch(watched, labels):
    """What leaves each C block over the first training steps, one column per model ({name: watch_training's
    stats}): the mean (top) and the standard deviation (bottom, log), one line per block, shallow to deep."""
    fig, axes = figure((4.2 * len(watched), 6), 2, len(watched), sharex=True, sharey="row", squeeze=False)
    for col, (name, stats) in enumerate(watched.items()):
        shades = [cm.viridis(i / max(len(stats) - 1, 1)) for i in range(len(stats))]  # depth, not a norm's colour
        for (block, values), shade in zip(stats.items(), shades):
            for row, key in enumerate(("mean", "std")):
                axes[row][col].plot(range(1, len(values[key]) + 1), values[key], color=shade, label=block)
        axes[0][col].set_title(labels[name])
        axes[1][col].set(xlabel="training step", yscale="log")
    axes[0][0].set(ylabel="mean of the block's output")
    axes[1][0].set(ylabel="standard deviation of the block's output")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, ncol=2)
    return fig


def plot_side_by_side(runs, norm, title=None):
    """Test accuracy per epoch of from_scratch.train_side_by_side's two runs, in the norm's colour: PyTorch's layer
    solid, the swapped-in function dashed."""
    fig, ax = figure((6, 4))
    for (name, run), style in zip(runs.items(), ("-", "--")):
        history = run["history"]
        ax.plot([r["epoch"] for r in history], [r["test_acc"] for r in history], style, marker="o",
                color=NORM_TYPES[norm].color, label=name)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title=title)
    return finish(fig, ax, epochs=True)
