"""Every figure of the suite: the data, the training, the results and the lessons' experiments.

It imports utils only inside the functions that train or predict, since utils re-exports the
misclassified-image grid from here (the notebooks call utils.plot_incorrect_predictions).
"""

import math

import torch
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from data import CIFAR10, train_batches


# The two losses are different quantities, so each line says what it measures: training optimizes
# label-smoothed cross-entropy on augmented images (averaged over the epoch as the weights move),
# the test loss is plain cross-entropy on the untouched test images after the epoch.
CURVE_LABELS = {"train": "train: label-smoothed, augmented, epoch average", "test": "test: plain, after the epoch"}


def plot_curves(history, title=None):
    """Loss and accuracy per epoch, train and test, side by side."""
    fig = Figure(figsize=(10, 4), layout="constrained")
    loss_ax, acc_ax = fig.subplots(1, 2)
    epochs = [r["epoch"] for r in history]
    for split in ("train", "test"):
        loss_ax.plot(epochs, [r[f"{split}_loss"] for r in history], marker=".", label=CURVE_LABELS[split])
        acc_ax.plot(epochs, [r[f"{split}_acc"] for r in history], marker=".", label=split)
    loss_ax.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    acc_ax.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy")
    for ax in (loss_ax, acc_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        fig.suptitle(title)
    return fig


def plot_comparison(histories):
    """Test accuracy per epoch for several models: {label: history}."""
    fig = Figure(figsize=(7, 4.5), layout="constrained")
    ax = fig.subplots()
    for label, history in histories.items():
        ax.plot([r["epoch"] for r in history], [r["test_acc"] for r in history], marker=".", label=label)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="Test accuracy by normalization")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    return fig


def plot_lr_schedule(cfg, steps_per_epoch):
    """The learning rate at every step of a run with `cfg`, as utils.make_optimizer schedules it."""
    from utils import make_optimizer

    optimizer, scheduler = make_optimizer(torch.nn.Conv2d(1, 1, 1), cfg, steps_per_epoch)
    rates = []
    for _ in range(cfg.epochs * steps_per_epoch):
        rates.append(optimizer.param_groups[0]["lr"])
        optimizer.step()
        scheduler.step()
    fig = Figure(figsize=(7, 3), layout="constrained")
    ax = fig.subplots()
    ax.plot([k / steps_per_epoch for k in range(len(rates))], rates)
    ax.set(xlabel="epoch", ylabel="learning rate",
           title=f"One-cycle schedule: up to {cfg.lr} over the first {cfg.warmup:.0%} of the steps, then down")
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    return fig


def plot_samples(data, per_class=4):
    """The first `per_class` training images of every class, one column per class."""
    classes = data.classes
    fig = Figure(figsize=(1.2 * len(classes), 1.25 * per_class + 0.3), layout="constrained")
    axes = fig.subplots(per_class, len(classes), squeeze=False)
    for c, name in enumerate(classes):
        picks = (data.train_labels == c).nonzero().flatten()[:per_class].tolist()
        for r in range(per_class):
            ax = axes[r, c]
            ax.set_axis_off()
            if r < len(picks):
                ax.imshow(data.train_images[picks[r]].permute(1, 2, 0).cpu().numpy())
        axes[0, c].set_title(name, fontsize=9)
    return fig


def plot_augmentation(data, index=0, cfg=None, variants=7, seed=0):
    """One training image and `variants` augmented copies of it, made by the training loop's own
    batch iterator from a set of that one image."""
    from utils import TrainConfig

    cfg = cfg or TrainConfig()
    image = data.train_images[index].cpu()
    copies_of_one = CIFAR10(image.expand(variants, -1, -1, -1), torch.zeros(variants, dtype=torch.long),
                            image[None], torch.zeros(1, dtype=torch.long), data.classes, data.source)
    generator = torch.Generator().manual_seed(seed)
    copies, _ = next(train_batches(copies_of_one, variants, generator, cfg.pad, cfg.flip, cfg.cutout, normalized=False))
    fig = Figure(figsize=(1.6 * (variants + 1), 2.0), layout="constrained")
    axes = fig.subplots(1, variants + 1)
    for k, (ax, img) in enumerate(zip(axes, [image, *copies])):
        ax.imshow(img.permute(1, 2, 0).numpy())
        ax.set_title("original" if k == 0 else f"augmented {k}", fontsize=9)
        ax.set_axis_off()
    return fig


def confusion_matrix(model, data, cfg=None):
    """counts[true, predicted] over the test set, as a (classes x classes) int64 tensor, predicted
    on the device the model is on, in the precision `cfg` asks for (fp32 without one)."""
    from utils import FP32, precision_for, score

    predicted = score(model, data, precision_for(model, cfg) if cfg else FP32).probs.argmax(1)
    k = len(data.classes)
    return torch.bincount(data.test_labels * k + predicted, minlength=k * k).view(k, k)


def per_class_accuracy(counts):
    """Accuracy % of each true class from a confusion matrix."""
    return 100.0 * counts.diag().float() / counts.sum(1).clamp_min(1).float()


def plot_confusion_matrix(counts, classes):
    fig = Figure(figsize=(7.5, 6.5), layout="constrained")
    ax = fig.subplots()
    image = ax.imshow(counts.numpy(), cmap="Blues")
    fig.colorbar(image, ax=ax, shrink=0.8)
    accuracy = per_class_accuracy(counts)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    ax.set_yticks(range(len(classes)), [f"{c} ({a:.0f}%)" for c, a in zip(classes, accuracy.tolist())])
    ax.set(xlabel="predicted", ylabel="true (per-class accuracy)", title="Confusion matrix, test set")
    limit = counts.max().item() / 2
    for t in range(len(classes)):
        for p in range(len(classes)):
            value = counts[t, p].item()
            ax.text(p, t, value, ha="center", va="center", fontsize=7, color="white" if value > limit else "black")
    return fig


def plot_incorrect_predictions(items, classes, count=10, columns=2):
    """A grid of `count` mistakes (5 rows x 2 columns by default), each titled with its true and
    predicted class and the confidence (the probability the model gave the predicted class)."""
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(2.4 * columns + 1, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < min(count, len(items)):
            item = items[k]
            ax.imshow(item["image"].permute(1, 2, 0).numpy())  # raw uint8 pixels: nothing to un-normalize
            ax.set_title(f"true: {classes[item['true']]} | pred: {classes[item['predicted']]}\n"
                         f"confidence {item['confidence']:.2f}", fontsize=9)
    return fig


def plot_mistake(item, classes):
    """One misclassified test image, large, with its classes, confidence and index (explorer.py)."""
    fig = Figure(figsize=(3.2, 3.4), layout="constrained")
    ax = fig.subplots()
    ax.imshow(item["image"].permute(1, 2, 0).numpy())
    ax.set_title(f"true: {classes[item['true']]} | pred: {classes[item['predicted']]}\n"
                 f"confidence {item['confidence']:.2f}, test image #{item['index']}", fontsize=10)
    ax.set_axis_off()
    return fig


def plot_batch_size(table, labels, caption):
    """Test accuracy against batch size, one line per norm: {norm: {batch size: [accuracy per seed]}};
    the bars reach the lowest and highest seed."""
    from results import mean_and_range

    fig = Figure(figsize=(7.5, 5), layout="constrained")
    ax = fig.subplots()
    for norm, points in table.items():
        sizes = sorted(points)
        spreads = [mean_and_range(points[b]) for b in sizes]
        ax.errorbar(sizes, [m for m, _, _ in spreads], yerr=[[m - lo for m, lo, _ in spreads], [hi - m for m, _, hi in spreads]],
                    marker="o", capsize=3, label=labels[norm])
    ticks = sorted({b for points in table.values() for b in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(b) for b in ticks])
    ax.set(xlabel="batch size (learning rate scaled with it)", ylabel="test accuracy (%)",
           title="Test accuracy against batch size (mean; bars: lowest and highest seed)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.supxlabel(caption, fontsize=7)
    return fig
