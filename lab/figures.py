"""The lessons' experiment figures, drawn by lab/experiments.py from the records; each norm in its one colour."""

import math

from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from lab.results import mean_and_range
from models import NORM_TYPES
from plots import figure, finish

SEED_STYLES = ("-", "--", ":")


def color(norm):
    return NORM_TYPES[norm].color


def errorbar(ax, xs, spreads, **style):
    """Means with bars to the lowest and highest seed, from mean_and_range's (mean, lowest, highest)."""
    yerr = [[m - lo for m, lo, _ in spreads], [hi - m for m, _, hi in spreads]]
    ax.errorbar(xs, [m for m, _, _ in spreads], yerr=yerr, **{"marker": "o", "capsize": 3, **style})


def plot_batch_size(bn, references, labels, batch, caption):
    """BatchNorm's accuracy per ghost batch ({images: [per seed]}, bars: range); the others' ({norm: [...]}) as bands."""
    fig, ax = figure((7.5, 5))
    sizes = sorted(bn)
    errorbar(ax, sizes, [mean_and_range(bn[g]) for g in sizes], label=labels["bn"], color=color("bn"))
    for norm, accuracies in references.items():
        mean, low, high = mean_and_range(accuracies)
        ax.axhline(mean, color=color(norm), label=f"{labels[norm]} (each image alone)")
        ax.axhspan(low, high, color=color(norm), alpha=0.15, linewidth=0)
    ax.set_xscale("log", base=2)
    ax.set_xticks(sizes, [str(g) for g in sizes])
    ax.set(xlabel=f"images BatchNorm's statistics are taken over (inside every batch of {batch})",
           ylabel="test accuracy (%)", title="Same steps, fewer images in BatchNorm's statistics (mean; lowest-highest)")
    return finish(fig, ax, caption)


def plot_skips(histories, gradients, labels):
    """Per norm, training loss with and without the skips (top) and each layer's mean gradient norm (bottom)."""
    norms = list(dict.fromkeys(norm for norm, _ in histories))
    fig, axes = figure((3.2 * len(norms), 6.4), 2, len(norms), squeeze=False)
    for col, (norm, loss_ax, grad_ax) in enumerate(zip(norms, axes[0], axes[1])):
        for skips, shade in ((True, "black"), (False, "darkgray")):  # not a norm's colour: the arms are no norms
            arm = "with skips" if skips else "without"
            for k, history in enumerate(histories.get((norm, skips), [])):
                loss_ax.plot([r["epoch"] for r in history], [r["train_loss"] for r in history], color=shade,
                             linestyle=SEED_STYLES[k % 3], label=f"{arm}, seed {k}" if col == 0 else None)
            records = gradients.get((norm, skips), [])
            if records:
                layers = list(records[0]["init"])
                for when, fill in (("init", "none"), ("epoch1", "full")):  # layers are categories: dots, no lines
                    mean = [sum(r[when][layer] for r in records) / len(records) for layer in layers]
                    grad_ax.plot(range(len(layers)), mean, color=shade, linestyle="none", marker="o", fillstyle=fill,
                                 label=f"{arm}, {'at init' if when == 'init' else 'after epoch 1'}" if col == 0 else None)
                grad_ax.set_xticks(range(len(layers)), layers, rotation=90, fontsize=7)
        # Log axis: one run without a norm spikes to a loss of about 1e6 and would flatten the rest.
        loss_ax.set(title=labels[norm], xlabel="epoch", ylabel="train loss" if col == 0 else None)
        grad_ax.set(ylabel="gradient norm of the weights" if col == 0 else None)
        for ax in (loss_ax, grad_ax):  # log y axes a student reads at a glance: plain-number ticks, more in a decade
            ax.set_yscale("log")
            decades = math.log10(ax.get_ylim()[1] / ax.get_ylim()[0])
            subs = (1.0,) if decades > 3 else (1.0, 2.0, 5.0) if decades > 1 else (1.0, 1.2, 1.5, 2.0, 3.0, 5.0, 7.0)
            ax.yaxis.set_major_locator(LogLocator(subs=subs))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
            ax.grid(alpha=0.3)
    fig.legend(loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle("The two skip connections: training loss (top) and each layer's gradient norm (bottom)")
    return fig


def plot_lr_sweep(table, labels, caption):
    """Validation accuracy against the rates' multiplier ({norm: {multiplier: [record per seed]}}); x: diverged."""
    fig, ax = figure((7.5, 5))
    for i, (norm, points) in enumerate(table.items()):
        xs, spreads = [], []
        for m in sorted(points):
            done = [r["final_test_accuracy"] for r in points[m] if not r["diverged"]]
            if done:
                xs.append(m), spreads.append(mean_and_range(done))
            if len(done) < len(points[m]):
                ax.plot([m * (1 + 0.04 * i)], [10], marker="x", color=color(norm), markersize=9, linestyle="none")
        errorbar(ax, xs, spreads, color=color(norm), label=labels[norm])
    ticks = sorted({m for points in table.values() for m in points})
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [f"x{m:g}" for m in ticks])
    ax.axhline(10, color="grey", linewidth=0.5, label="chance (1 in 10 classes)")
    ax.set(xlabel="both peak learning rates, times the recipe's", ylabel="validation accuracy (%)",
           title="Accuracy against the learning rate (x: diverged; bars: lowest and highest seed)")
    return finish(fig, ax, caption)


def plot_activations(runs, labels, block="C9"):
    """Per norm, percentile bands of what enters `block`'s ReLU in the first epoch, and every block's at the end."""
    fig, axes = figure((10, 2.3 * len(runs)), len(runs), 2, squeeze=False)
    for row, ((norm, record), (left, right)) in enumerate(zip(runs.items(), axes)):
        act = record["activations"]
        steps, values = zip(*[(s, v) for s, v in zip(act["steps"], act["blocks"][block]) if s < act["steps_per_epoch"]])
        blocks = list(act["blocks"])
        last = [act["blocks"][b][-1] for b in blocks]
        for (lo, hi), alpha, band in (((0, 3), 0.25, "1st-99th"), ((1, 2), 0.6, "20th-80th")):  # of the percentiles
            left.fill_between(steps, [v[lo] for v in values], [v[hi] for v in values], alpha=alpha, color=color(norm),
                              label=band)
            right.vlines(range(len(blocks)), [v[lo] for v in last], [v[hi] for v in last], alpha=alpha,
                         color=color(norm), linewidth=(3, 9)[lo])  # blocks are categories: a bar each
        left.set(ylabel=labels[norm], xlabel="training step" if row == len(runs) - 1 else None)
        right.set_xticks(range(len(blocks)), blocks)
        for ax in (left, right):
            ax.axhline(0, color="black", linewidth=0.6)
            ax.grid(alpha=0.3)
        if row == 0:
            left.set_title(f"{block}'s pre-activation through the first epoch")
            right.set_title("every C block's at the last step of training")
            left.legend(fontsize=7)
    fig.suptitle("What enters each ReLU: percentile bands of the training batch (seed 0)")
    return fig


def plot_fold(timing):
    """Eval time per image with BatchNorm and folded, for each batch size ({batch: {name: seconds}})."""
    fig, ax = figure((6, 3.5))
    for k, name in enumerate(("with BatchNorm", "folded")):  # measure_fold's two
        ax.bar([i + 0.4 * k for i in range(len(timing))], [1000 * t[name] for t in timing.values()], 0.4, label=name,
               color=(color("bn"), "silver")[k])
    ax.set_xticks([i + 0.2 for i in range(len(timing))], [f"batches of {b}" for b in timing])
    ax.set(ylabel="ms per image (eval, fp32)", title="BatchNorm folded into the convs: eval time")
    return finish(fig, ax, grid="y")


def plot_batch_of_one(record, labels):
    """How many of 128 predictions change when each image is passed alone, per norm and mode ({norm: {mode: {...}}})."""
    fig, ax = figure((7, 3.5))
    norms = list(record)
    for k, mode in enumerate(("eval", "train")):
        counts = [record[n][mode]["predictions_changed"] for n in norms]
        bars = ax.bar([i + 0.4 * k for i in range(len(norms))], counts, 0.4, label=f"{mode} mode",
                      color=[color(n) for n in norms], alpha=(0.45, 1.0)[k], edgecolor="black", linewidth=0.5)
        ax.bar_label(bars, fontsize=8)
    ax.set_xticks([i + 0.2 for i in range(len(norms))], [labels[n] for n in norms])
    ax.set(ylabel="predictions that change (of 128)", title="An image alone against inside a batch of 128")
    return finish(fig, ax, grid="y")


def plot_screening_curves(histories, names, caption):
    """Validation accuracy per epoch, each norm in its colour ({norm: [history per seed]}, {norm: name})."""
    fig, ax = figure((7.5, 4.5))
    for norm, runs in histories.items():
        for k, history in enumerate(runs):
            ax.plot([r["epoch"] for r in history], [r["test_acc"] for r in history], color=color(norm),
                    linestyle=SEED_STYLES[k % 3], marker=".", label=f"{names[norm]}, seed {k}")
    ax.set(xlabel="epoch", ylabel="validation accuracy (%)", title="Two kinds of LayerNorm")
    return finish(fig, ax, caption, fontsize=7, epochs=True)


def plot_group_size(table, caption):
    """Validation accuracy against GroupNorm's channels per group ({label: [accuracy per seed]}, in order)."""
    fig, ax = figure((8, 4.5))
    names = list(table)
    errorbar(ax, range(len(names)), [mean_and_range(table[n]) if table[n] else (math.nan,) * 3 for n in names],
             linestyle="none", color=color("gn"))  # categories: a line between them would suggest a trend
    for k, n in enumerate(names):
        ax.plot([k] * len(table[n]), table[n], "k.", alpha=0.5)
    ax.set_xticks(range(len(names)), names, rotation=15, fontsize=8)
    ax.set(xlabel="channels per group", ylabel="validation accuracy (%)",
           title="GroupNorm's group size (mean; bars: lowest and highest seed)")
    return finish(fig, ax, caption, legend=False)


def plot_placement(table, labels):
    """Validation accuracy with the norm before and after the ReLU ({norm: {order: [{accuracy, ...}]}})."""
    fig, ax = figure((6.5, 4))
    arms = (("norm-relu", "conv, norm, ReLU", "o"), ("relu-norm", "conv, ReLU, norm", "s"))
    for k, (order, name, marker) in enumerate(arms):
        for i, norm in enumerate(table):
            accs = [r["accuracy"] for r in table[norm].get(order, [])]
            if accs:  # the mean, with a bar to the lowest and the highest seed, in the norm's colour
                errorbar(ax, [i + 0.25 * (2 * k - 1)], [mean_and_range(accs)], color=color(norm), marker=marker,
                         fillstyle=("full", "none")[k], label=name if i == 0 else None)
    ax.set_xticks(range(len(table)), [labels[n] for n in table])
    ax.set_xlim(-0.6, len(table) - 0.4)
    ax.set(ylabel="validation accuracy (%)", title="Where the norm sits (mean; bars: lowest and highest seed)")
    fig.legend(*ax.get_legend_handles_labels(), loc="outside lower center", ncol=2, fontsize=8)
    return finish(fig, ax, grid="y", legend=False)
