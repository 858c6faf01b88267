"""The lessons' experiments: what normalization and the skip connections do on this network.

    python lessons.py EXPERIMENT --data ../shared/data/cifar10-jpg.tar.gz

EXPERIMENT is one of
    skips         BatchNorm, LayerNorm, GroupNorm and no norm, each with and without the two skips,
                  20 epochs on all 50,000 images, seeds 0 and 1 (scored on the test set): final
                  accuracy, training loss curves, each layer's gradient norm at initialisation and
                  after the first epoch
    lr            the five norms (BatchNorm, LayerNorm, InstanceNorm, GroupNorm, none) at the
                  recipe's rates times 1/4, 1, 4 and 16 (screening size); a run that diverges is
                  recorded as diverged
    activations   percentiles of what enters each C block's ReLU, through the first epoch and at
                  the end, for the five norms (the lr experiment's x1 runs)
    fold          BatchNorm folded into the convs before it: the largest logit difference and the
                  eval time per image, with and without
    batch-of-one  each norm's prediction for an image alone against inside a batch of 128
    layernorms    the suite's LayerNorm, GroupNorm(1, C), against LayerNorm over the channels of
                  each pixel (ConvNeXt's), screening size
    groups        GroupNorm from one group (LayerNorm) to one channel per group (InstanceNorm)
    placement     the norm before or after the ReLU, from the validation record (no training)
    all           every one of them, in this order

Screening size: 10,000 of the 45,000 training images left after holding out the validation split's
5,000 (results/validation.md), 8 epochs, scored on those 5,000 held-out images, seeds 0 and 1. Each
experiment writes one JSON per run under results/lessons/ (a run already there is kept, so an
interrupted command picks up where it stopped), its figure images/lesson_<experiment>.png, and its
section of docs/lessons.md (between that section's markers). The screening runs are shared: the
activations, layernorms and groups experiments reuse the lr experiment's runs where they are the same.
"""

import argparse
import json
import math
import re
import sys
from dataclasses import asdict
from pathlib import Path

import torch

import plots
import probes
import results
import run
import utils
from atomic import save_figure, torch_save
from data import load_cifar10, normalize
from models import NORM_TYPES, SUITE_NORMS, ModelConfig, S8_model, checkpoint, count_parameters, load_checkpoint
from results import LABELS, mean_and_range

ROOT = Path(__file__).resolve().parent
EXPERIMENTS = ("skips", "lr", "activations", "fold", "batch-of-one", "layernorms", "groups", "placement")
SEEDS = (0, 1)

# Screening size: the validation split's training part, a seeded 10,000 of it, 8 epochs.
VALIDATION, SCREEN_TRAIN, SCREEN_EPOCHS = 5_000, 10_000, 8
LR_MULTIPLIERS = (0.25, 1, 4, 16)
LESSON_NORMS = ("bn", "ln", "in", "gn", "none")  # the learning-rate and activation lessons' five

# The screening variants by name: the ModelConfig fields each one sets. All take plain convs, so that
# only the norm differs (GroupNorm's own default is weight-standardized).
VARIANTS = {key: {"conv": "plain", **fields} for key, fields in {
    **{norm: {"norm": norm} for norm in NORM_TYPES},
    "gn-cpg1": {"norm": "gn", "channels_per_group": 1},
    "gn-cpg2": {"norm": "gn", "channels_per_group": 2},
    "gn-cpg4": {"norm": "gn", "channels_per_group": 4},
    "gn-g2": {"norm": "gn", "groups": 2},
    "gn-g1": {"norm": "gn", "groups": 1},
}.items()}
# GroupNorm's group sizes, from one channel per group to all of them; the widths are 16 to 32, so
# 'gn' (4 groups) has 4-8 channels per group, 'gn-g2' 8-16 and 'gn-g1' 16-32.
# One channel per group after the ReLU cannot learn (models.py: the pool then sees each channel's
# shift alone), so the sweep also has InstanceNorm where it can: before the ReLU ('in').
GROUP_VARIANTS = ("in", "gn-cpg1", "gn-cpg2", "gn-cpg4", "gn", "gn-g2", "gn-g1")
GROUP_LABELS = {"in": "1, before the ReLU (InstanceNorm)", "gn-cpg1": "1, after the ReLU", "gn-cpg2": "2",
                "gn-cpg4": "4", "gn": "4-8 (4 groups)",
                "gn-g2": "8-16 (2 groups)", "gn-g1": "16-32 (1 group: LayerNorm)"}
SKIP_NORMS = ("bn", "ln", "gn", "none")
PROBE_IMAGES = 512  # the fixed batch of training images the gradient norms are taken on

# The placement lesson, from the validation record: the runs (validation tags) of each norm with the
# norm before the ReLU and after it, an earlier recipe (SGD, weight decay 5e-4, plain convs), 45,000
# images, 20 epochs.
PLACEMENT = {
    "bn": {"norm-relu": ("a-base", "x-base-seed1"), "relu-norm": ("r-relu-norm", "l21-relu-norm")},
    "ln": {"norm-relu": ("h-base", "l21-norm-relu"), "relu-norm": ("r-relu-norm", "p3-sgd")},
    "gn": {"norm-relu": ("k-nchw", "l21-norm-relu"), "relu-norm": ("r-relu-norm", "p3-sgd")},
}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=(*EXPERIMENTS, "all"))
    p.add_argument("--data", default="data", help="CIFAR-10 source (see run.py --help)")
    p.add_argument("--cache", default=None, help="folder for decoded images (default: .cache/ beside this file)")
    p.add_argument("--out", default=str(ROOT), help="where results/, images/ and docs/lessons.md are (default: here)")
    p.add_argument("--seeds", type=int, nargs="+", default=list(SEEDS))
    p.add_argument("--amp", default="auto", choices=utils.AMP_CHOICES, help="mixed precision (default auto)")
    p.add_argument("--device", default=None)
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    # For the tests: a smaller world with the same code paths.
    p.add_argument("--full-images", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--full-epochs", type=int, default=20, help=argparse.SUPPRESS)
    p.add_argument("--screen-images", type=int, default=SCREEN_TRAIN, help=argparse.SUPPRESS)
    p.add_argument("--screen-epochs", type=int, default=SCREEN_EPOCHS, help=argparse.SUPPRESS)
    p.add_argument("--validation", type=int, default=VALIDATION, help=argparse.SUPPRESS)
    return p.parse_args(argv)


class Lab:
    """What every experiment shares: the data (loaded once, on first use), the device, where
    records go, and the runs they have in common."""

    def __init__(self, args):
        self.args, self.out = args, Path(args.out)
        self.device = utils.pick_device(args.device)
        self._full = self._screen = None

    def log(self, text):
        print(text, flush=True)

    @property
    def full(self):
        """The whole training set, scored on the test set (the skips experiment, like run.py)."""
        if self._full is None:
            self._full = load_cifar10(self.args.data, cache_dir=self.args.cache)
            if self.args.full_images:  # tests only
                self._full = self._full.subset(self.args.full_images, seed=0)
        return self._full

    @property
    def screen(self):
        """Screening data: a seeded 10,000 of the validation split's training images, scored on its
        held-out 5,000, the same for every run."""
        if self._screen is None:
            split = load_cifar10(self.args.data, cache_dir=self.args.cache).validation_split(self.args.validation, seed=0)
            self._screen = split.subset(self.args.screen_images, self.args.validation, seed=0)
        return self._screen

    def precision(self, cfg, norm):
        return utils.resolve_precision(cfg, self.device, norm)

    # --- screening runs: results/lessons/screening/<variant>-x<multiplier>-seed<k>.json ----------

    def screening_run(self, variant, multiplier, seed):
        """The record of one screening run, trained now unless it is on disk. The recipe's rates
        (BatchNorm's, utils.RECIPES) are all multiplied by `multiplier`; a run whose loss stops
        being finite is recorded as diverged, with the epochs it finished."""
        name = f"{variant}-x{multiplier:g}-seed{seed}"
        record = results.read_lesson(self.out, "screening", name)
        if record is not None:
            return record
        model_config = ModelConfig(**VARIANTS[variant])
        norm = model_config.norm
        base = utils.recipe("bn")  # one recipe for every variant, so that only the norm differs
        cfg, precision = self.precision(utils.recipe(
            "bn", lr=base.lr * multiplier, muon_lr=base.muon_lr * multiplier, epochs=self.args.screen_epochs,
            seed=seed, amp=self.args.amp), norm)
        data = self.screen
        torch.manual_seed(seed)
        model = S8_model(**asdict(model_config))
        steps = math.ceil(len(data.train_labels) / cfg.batch_size)
        recorder = probes.ActivationRecorder(model, probes.first_epoch_and_end(steps, steps * cfg.epochs))
        history, diverged = utils.History(), None
        try:
            utils.fit(model, data, cfg, self.device, precision, progress=False, log=lambda line: None, history=history)
        except FloatingPointError as err:
            diverged = str(err)
        recorder.remove()
        last = history[-1] if history and not diverged else None
        record = dict(
            variant=variant, norm=norm, label=LABELS[norm], multiplier=multiplier, seed=seed,
            lr=cfg.lr, muon_lr=cfg.muon_lr if cfg.optimizer == "muon" else None, optimizer=cfg.optimizer,
            epochs=cfg.epochs, train_images=len(data.train_labels), val_images=len(data.test_labels),
            data=data.source, device=utils.describe_device(self.device), precision=precision.describe(),
            torch=torch.__version__, parameters=count_parameters(model), config=asdict(cfg),
            model_config=model_config.to_dict(), diverged=diverged,
            final_val_accuracy=round(last["test_acc"], 2) if last else None,
            final_train_accuracy=round(last["train_acc"], 2) if last else None,
            history=[{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()} for row in history],
            activations=dict(steps=recorder.steps, steps_per_epoch=steps, percentiles=list(probes.PERCENTILES),
                             blocks=recorder.values),
            **run.code_version(),
        )
        path = results.write_lesson(self.out, "screening", name, record)
        if variant in LESSON_NORMS and multiplier == 1 and seed == 0 and not diverged:  # the batch-of-one lesson's
            torch_save(checkpoint(model, classes=list(data.classes), config=asdict(cfg)), path.with_suffix(".pt"))
        outcome = f"diverged ({diverged})" if diverged else f"validation {record['final_val_accuracy']:.2f}%"
        self.log(f"screening {name}: {outcome}")
        return record

    # --- full runs: results/lessons/skips/<norm>-<skips|noskips>-seed<k>.json --------------------

    def full_run(self, norm, skips, seed):
        """One run at the suite's length (the norm's recipe, all training images, 20 epochs, scored
        on the test set), with or without the skips. A run of run.py on disk (results/<norm>_seed<k>.json)
        gives the arm with skips where it was trained with the same settings on this kind of machine
        in this precision."""
        arm = "skips" if skips else "noskips"
        name = f"{norm}-{arm}-seed{seed}"
        record = results.read_lesson(self.out, "skips", name)
        if record is not None:
            return record
        model_config = ModelConfig(norm=norm, skips=skips)
        cfg, precision = self.precision(utils.recipe(norm, epochs=self.args.full_epochs, seed=seed, amp=self.args.amp), norm)
        data = self.full
        reused = self._suite_run(norm, seed, cfg, model_config, precision, data) if skips else None
        if reused is None:
            outcome = run.run_one(norm, data, cfg, precision, self.device, model_config,
                                  run.code_version(), quiet=self.args.quiet)
            result, source = outcome["result"], "trained by lessons.py"
        else:
            result, source = reused, f"results/{norm}_seed{seed}.json (run.py)"
        keep = ("norm", "seed", "epochs", "train_images", "test_images", "data", "device", "precision", "torch",
                "parameters", "config", "model_config", "final_train_accuracy", "final_test_accuracy", "history",
                "git_commit", "git_dirty")
        record = {"skips": skips, "source": source, **{k: result.get(k) for k in keep}}
        results.write_lesson(self.out, "skips", name, record)
        self.log(f"full {name}: test {record['final_test_accuracy']:.2f}% ({source})")
        return record

    def _suite_run(self, norm, seed, cfg, model_config, precision, data):
        path = results.seed_path(self.out, norm, seed)
        if norm not in SUITE_NORMS or not path.is_file():
            return None
        result = json.loads(path.read_text())
        ignore = ("amp", "channels_last")
        same = ({k: v for k, v in result["config"].items() if k not in ignore}
                == {k: v for k, v in asdict(cfg).items() if k not in ignore}
                and ModelConfig(**result["model_config"]) == model_config
                and result["train_images"] == len(data.train_labels)
                and result["device"] == utils.describe_device(self.device)
                and result["precision"] == precision.describe())
        return result if same else None

    def gradients(self, norm, skips, seed):
        """Each layer's gradient norm at initialisation and after the first epoch of the full run's
        schedule (the same steps), on PROBE_IMAGES fixed training images."""
        name = f"gradients-{norm}-{'skips' if skips else 'noskips'}-seed{seed}"
        record = results.read_lesson(self.out, "skips", name)
        if record is not None:
            return record
        cfg, precision = self.precision(utils.recipe(norm, epochs=self.args.full_epochs, seed=seed, amp=self.args.amp), norm)
        data = self.full
        pick = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))[:PROBE_IMAGES]
        images, labels = data.train_images[pick], data.train_labels[pick]
        torch.manual_seed(seed)
        model = S8_model(norm, skips=skips)
        at_init = probes.gradient_norms(model, images, labels, data.mean, data.std)
        utils.fit(model, data, cfg, self.device, precision, progress=False, log=lambda line: None, stop_after=1)
        after = probes.gradient_norms(model, images, labels, data.mean, data.std)
        record = dict(norm=norm, skips=skips, seed=seed, images=PROBE_IMAGES, device=utils.describe_device(self.device),
                      precision=precision.describe(), init=at_init, epoch1=after)
        results.write_lesson(self.out, "skips", name, record)
        return record


# ---------------------------------------------------------------------------------------------
# The experiments. Each has a `measure` step that trains or measures whatever is not on disk yet,
# and a `render` step that draws its figure and writes its section from the records on disk
# alone, which is what the notebooks call (show) to display them.


class NotRunYet(Exception):
    """A lesson's records are not on disk yet: run its command."""


def command(experiment):
    return f"python lessons.py {experiment} --data ../shared/data/cifar10-jpg.tar.gz"


def found(out, experiment, pattern):
    """The records of `experiment` whose names match `pattern`, in name order (seed 0 first)."""
    paths = sorted((Path(out) / "results" / "lessons" / experiment).glob(f"{pattern}.json"))
    return [json.loads(p.read_text()) for p in paths]


def needed(records, what, experiment):
    if not records:
        raise NotRunYet(f"no {what} on disk yet: run `{command(experiment)}`")
    return records


def screening(out, variant, multiplier, experiment):
    return needed(found(out, "screening", f"{variant}-x{multiplier:g}-seed*"),
                  f"screening runs of {variant} at x{multiplier:g}", experiment)


def screening_setting(record):
    precision = re.sub(r", (channels-last|NCHW)", "", record["precision"])  # the layout differs by norm
    return (f"{record['train_images']:,} training images, {record['epochs']} epochs, scored on {record['val_images']:,} "
            f"held-out validation images; {record['data']}; {record['device']}, {precision}, each norm in the memory "
            "layout hardware.py picks for it")


def seeds_of(records):
    return ", ".join(str(r["seed"]) for r in records)


def spread(values):
    """'81.2 (80.9-81.5)': mean of the seeds and their lowest and highest."""
    return "{:.1f} ({:.1f}-{:.1f})".format(*mean_and_range(values)) if values else "-"


def finished(records, key="final_val_accuracy"):
    return [r[key] for r in records if not r.get("diverged")]


# --- skips -----------------------------------------------------------------------------------

def measure_skips(lab):
    for norm in SKIP_NORMS:
        for skips in (True, False):
            for seed in lab.args.seeds:
                lab.full_run(norm, skips, seed)
                lab.gradients(norm, skips, seed)


def render_skips(out):
    arms = [(norm, skips) for norm in SKIP_NORMS for skips in (True, False)]
    runs = {(n, s): needed(found(out, "skips", f"{n}-{'skips' if s else 'noskips'}-seed*"), "full runs", "skips")
            for n, s in arms}
    grads = {(n, s): needed(found(out, "skips", f"gradients-{n}-{'skips' if s else 'noskips'}-seed*"), "gradients",
                            "skips") for n, s in arms}
    first = runs[arms[0]][0]
    lines = [f"`{command('skips')}`: each norm's recipe, {first['train_images']:,} training images, {first['epochs']} "
             f"epochs, scored on the {first['test_images']:,} test images; seeds {seeds_of(runs[arms[0]])}. "
             "Final test accuracy, mean of the seeds (lowest-highest):", "",
             "| norm | with the two skips | without | difference | beyond the seeds' range? | machine, precision |",
             "|---|---:|---:|---:|---|---|"]
    for norm in SKIP_NORMS:
        on = [r["final_test_accuracy"] for r in runs[(norm, True)]]
        off = [r["final_test_accuracy"] for r in runs[(norm, False)]]
        machines = sorted({(r["device"], r["precision"].split(" (")[0]) for r in runs[(norm, True)] + runs[(norm, False)]})
        judged = ("different machines: not compared" if len(machines) > 1
                  else "yes" if results.differ(on, off) else "no: no difference")
        lines.append(f"| {LABELS[norm]} | {spread(on)} | {spread(off)} | {mean_and_range(on)[0] - mean_and_range(off)[0]:+.2f} "
                     f"| {judged} | {'; '.join(', '.join(m) for m in machines)} |")
    lines += ["", f"Gradient norm of each layer's weights on {PROBE_IMAGES} fixed training images (fp32, train mode), "
              "at initialisation and after the first epoch, mean of the seeds (lowest-highest): the first C block's "
              "(C1) and the last's (C9), and their ratio:", "",
              "| norm | skips | C1 at init | C9 at init | C1 / C9 at init | C1 / C9 after epoch 1 |",
              "|---|---|---:|---:|---:|---:|"]

    def cell(values):
        return f"{mean_and_range(values)[0]:.3g} ({min(values):.3g}-{max(values):.3g})"

    for norm, skips in arms:
        g = grads[(norm, skips)]
        lines.append(f"| {LABELS[norm]} | {'with' if skips else 'without'} | {cell([r['init']['C1'] for r in g])} | "
                     f"{cell([r['init']['C9'] for r in g])} | {cell([r['init']['C1'] / r['init']['C9'] for r in g])} | "
                     f"{cell([r['epoch1']['C1'] / r['epoch1']['C9'] for r in g])} |")
    fig = plots.plot_skips({k: [r["history"] for r in v] for k, v in runs.items()}, grads, LABELS)
    return fig, "\n".join(lines)


# --- learning rate and activations ------------------------------------------------------------

def screen(lab, variants, multipliers=(1,)):
    """Every screening run of `variants` at `multipliers` and the seeds asked for (those on disk are kept)."""
    for variant in variants:
        for m in multipliers:
            for seed in lab.args.seeds:
                lab.screening_run(variant, m, seed)


def measure_lr(lab):
    screen(lab, LESSON_NORMS, LR_MULTIPLIERS)


def render_lr(out):
    table = {norm: {m: screening(out, norm, m, "lr") for m in LR_MULTIPLIERS} for norm in LESSON_NORMS}
    one = table["bn"][1][0]
    rates = ", ".join(f"x{m:g}: {one['lr'] * m:g} and {one['muon_lr'] * m:g}" for m in LR_MULTIPLIERS)
    lines = [f"`{command('lr')}`: {screening_setting(one)}; seeds {seeds_of(table['bn'][1])}. Every norm trained "
             "with one recipe (BatchNorm's: Muon for the conv kernels, SGD for the rest, no weight decay) and plain convs "
             "(GroupNorm here without the suite's Weight Standardization), its two "
             f"peak rates, SGD's and Muon's, multiplied together ({rates}). Final validation accuracy, mean of the "
             "seeds (lowest-highest); a run whose loss stopped being finite is marked diverged:", "",
             "| norm | " + " | ".join(f"rates x{m:g}" for m in LR_MULTIPLIERS) + " |",
             "|---|" + "---:|" * len(LR_MULTIPLIERS)]
    for norm in LESSON_NORMS:
        cells = []
        for m in LR_MULTIPLIERS:
            runs, done = table[norm][m], finished(table[norm][m])
            failed = len(runs) - len(done)
            cells.append(spread(done) + (f", {failed} of {len(runs)} diverged" if failed else "") if done
                         else f"diverged ({failed} of {failed})")
        lines.append(f"| {LABELS[norm]} | " + " | ".join(cells) + " |")
    return plots.plot_lr_sweep(table, LABELS, screening_setting(one)), "\n".join(lines)


def measure_activations(lab):
    screen(lab, LESSON_NORMS)


def render_activations(out):
    runs = {norm: screening(out, norm, 1, "activations") for norm in LESSON_NORMS}
    first = runs["bn"][0]
    lines = [f"`{command('activations')}`: the learning-rate lesson's x1 runs ({screening_setting(first)}). What "
             "enters three C blocks' ReLUs, the 1st and 99th percentiles (the 20th and 80th are in the figure) on "
             "the training batch at the first step and at the last, seed 0 (seed 1 in brackets):", "",
             "| norm | block | first step: 1st, 99th | last step: 1st, 99th |", "|---|---|---:|---:|"]
    for norm in LESSON_NORMS:
        for block in ("C1", "C5", "C9"):
            cells = []
            for index in (0, -1):  # the first recorded step and the last
                values = [r["activations"]["blocks"][block][index] for r in runs[norm]]  # one per seed
                cells.append(", ".join(f"{values[0][k]:.2f}" + (f" ({values[1][k]:.2f})" if len(values) > 1 else "")
                                       for k in (0, -1)))  # the 1st and the 99th percentile
            lines.append(f"| {LABELS[norm]} | {block} | " + " | ".join(cells) + " |")
    return plots.plot_activations({norm: runs[norm][0] for norm in LESSON_NORMS}, LABELS), "\n".join(lines)


# --- BatchNorm folded ------------------------------------------------------------------------

def measure_fold(lab):
    model, ckpt = load_checkpoint(lab.out / "checkpoints" / "bn.pt", norm="bn")
    folded = probes.fold_batchnorm(model)
    data = lab.full
    x = normalize(data.test_images, data.mean, data.std)
    with torch.no_grad():
        plain = torch.cat([model.eval()(x[i:i + 1000]) for i in range(0, len(x), 1000)])
        fused = torch.cat([folded(x[i:i + 1000]) for i in range(0, len(x), 1000)])
    timing = {}
    for batch in (1, 256):
        sample = x[:200] if batch == 1 else x[:2048]
        timing[str(batch)] = {"with BatchNorm": probes.seconds_per_image(model, sample, batch),
                              "folded": probes.seconds_per_image(folded, sample, batch)}
    record = dict(checkpoint="checkpoints/bn.pt", seed=ckpt.get("config", {}).get("seed"), test_images=len(x),
                  device=utils.describe_device("cpu"), precision="fp32, eval mode",
                  max_logit_difference=(plain - fused).abs().max().item(),
                  predictions_changed=int((plain.argmax(1) != fused.argmax(1)).sum()),
                  accuracy=100.0 * (plain.argmax(1) == data.test_labels).float().mean().item(),
                  accuracy_folded=100.0 * (fused.argmax(1) == data.test_labels).float().mean().item(),
                  parameters=count_parameters(model), parameters_folded=count_parameters(folded),
                  seconds_per_image=timing)
    results.write_lesson(lab.out, "fold", "bn", record)


def render_fold(out):
    r = needed(found(out, "fold", "bn"), "measurement", "fold")[0]
    lines = [f"`{command('fold')}`: the BatchNorm model of run.py ({r['checkpoint']}, seed {r['seed']}) on the "
             f"{r['test_images']:,} test images, fp32, eval mode, on {r['device']}.", "",
             "| | with BatchNorm | folded into the convs |", "|---|---:|---:|",
             f"| test accuracy | {r['accuracy']:.2f}% | {r['accuracy_folded']:.2f}% |",
             f"| parameters | {r['parameters']:,} | {r['parameters_folded']:,} |"]
    for b, t in r["seconds_per_image"].items():
        lines.append(f"| ms per image, batches of {b} | {1000 * t['with BatchNorm']:.3f} | {1000 * t['folded']:.3f} |")
    lines += ["", f"Largest difference in any logit: {r['max_logit_difference']:.2e}; predictions that changed: "
              f"{r['predictions_changed']} of {r['test_images']:,}. Times: the median of 5 passes."]
    return plots.plot_fold(r["seconds_per_image"]), "\n".join(lines)


# --- a batch of one ----------------------------------------------------------------------------

def measure_batch_of_one(lab):
    models = {}
    for norm in LESSON_NORMS:
        lab.screening_run(norm, 1, 0)
        path = results.lesson_path(lab.out, "screening", f"{norm}-x1-seed0").with_suffix(".pt")
        models[norm], _ = load_checkpoint(path, norm=norm)
    data = lab.screen
    pick = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(0))[:128]
    x = normalize(data.test_images[pick], data.mean, data.std)
    record = {norm: {mode: dict(zip(("max_logit_difference", "predictions_changed"), probes.batch_dependence(m, x, mode)))
                     for mode in ("eval", "train")} for norm, m in models.items()}
    results.write_lesson(lab.out, "batch-of-one", "models-x1-seed0", record)


def render_batch_of_one(out):
    record = needed(found(out, "batch-of-one", "models-x1-seed0"), "measurement", "batch-of-one")[0]
    lines = [f"`{command('batch-of-one')}`: the learning-rate lesson's x1 models, seed 0; 128 held-out validation "
             "images passed as one batch and each passed alone, fp32. The largest difference in any logit, and how "
             "many of the 128 predictions change:", "",
             "| norm | eval mode | train mode |", "|---|---:|---:|"]
    for norm, row in record.items():
        lines.append(f"| {LABELS[norm]} | " + " | ".join(
            f"{row[m]['max_logit_difference']:.1e}, {row[m]['predictions_changed']} changed" for m in ("eval", "train")) + " |")
    return plots.plot_batch_of_one(record, LABELS), "\n".join(lines)


# --- two LayerNorms and GroupNorm's group size --------------------------------------------------

LAYERNORM_NAMES = {"ln": "GroupNorm(1, C): over C, H and W of each image (this suite's)",
                   "lnc": "LayerNorm over C at each pixel (ConvNeXt's)"}
LAYERNORM_STATISTICS = {"ln": "1", "lnc": "1,024: one per pixel"}


def accuracy_row(name, records):
    """'| name | validation accuracy | train accuracy |' over the runs that did not diverge."""
    return f"| {name} | {spread(finished(records))} | {spread(finished(records, 'final_train_accuracy'))} |"


def measure_layernorms(lab):
    screen(lab, LAYERNORM_NAMES)


def render_layernorms(out):
    runs = {v: screening(out, v, 1, "layernorms") for v in LAYERNORM_NAMES}
    first = runs["ln"][0]
    lines = [f"`{command('layernorms')}`: {screening_setting(first)}; seeds {seeds_of(runs['ln'])}; both after the "
             "ReLU, the recipe's rates. Final validation accuracy, mean of the seeds (lowest-highest):", "",
             "| LayerNorm (means and variances per image in C1) | validation accuracy | train accuracy |",
             "|---|---:|---:|",
             *(accuracy_row(f"{LAYERNORM_NAMES[v]} ({LAYERNORM_STATISTICS[v]})", runs[v]) for v in runs)]
    a, b = (finished(runs[v]) for v in LAYERNORM_NAMES)
    lines += ["", "Beyond the seeds' range: " + ("yes" if results.differ(a, b) else "no: no difference") + "."]
    fig = plots.plot_screening_curves({LAYERNORM_NAMES[v]: [r["history"] for r in runs[v]] for v in runs},
                                      screening_setting(first))
    return fig, "\n".join(lines)


def measure_groups(lab):
    screen(lab, GROUP_VARIANTS)


def render_groups(out):
    runs = {v: screening(out, v, 1, "groups") for v in GROUP_VARIANTS}
    first = runs["gn"][0]
    lines = [f"`{command('groups')}`: {screening_setting(first)}; seeds {seeds_of(runs['gn'])}; GroupNorm after "
             "the ReLU (InstanceNorm also before it), plain convs, BatchNorm's recipe at x1. Final validation accuracy, mean of the seeds (lowest-highest):", "",
             "| channels per group | validation accuracy | train accuracy |", "|---|---:|---:|",
             *(accuracy_row(GROUP_LABELS[v], runs[v]) for v in GROUP_VARIANTS)]
    table = {GROUP_LABELS[v]: finished(runs[v]) for v in GROUP_VARIANTS}
    return plots.plot_group_size(table, screening_setting(first)), "\n".join(lines)


# --- placement ---------------------------------------------------------------------------------

def measure_placement(lab):
    folder = lab.out / "results" / "validation"
    table = {}
    for norm, arms in PLACEMENT.items():
        for order, tags in arms.items():
            runs = []
            for tag in tags:
                for path in sorted(folder.glob(f"{tag}-{norm}*.json")):
                    r = json.loads(path.read_text())
                    if r.get("tag", tag) == tag and r["norm"] == norm:
                        runs.append(dict(tag=tag, seed=r["seed"], accuracy=round(r["final_test_accuracy"], 2)))
            table.setdefault(norm, {})[order] = runs
    results.write_lesson(lab.out, "placement", "validation", table)


def render_placement(out):
    table = needed(found(out, "placement", "validation"), "record", "placement")[0]
    lines = [f"`{command('placement')}` (no training): full validation runs from results/validation.md, an earlier "
             "recipe (SGD with weight decay 5e-4, plain convs; not today's Muon), 45,000 training images, 20 epochs, scored on the 5,000 held-out images. Validation "
             "accuracy, mean of the seeds (lowest-highest), and the runs (tags) they come from:", "",
             "| norm | before the ReLU (conv, norm, ReLU) | after it (conv, ReLU, norm) | beyond the seeds' range? |",
             "|---|---:|---:|---|"]
    for norm, arms in table.items():
        cells = []
        for order in ("norm-relu", "relu-norm"):
            runs = arms.get(order, [])
            sources = ", ".join(f"{r['tag']} seed {r['seed']}" for r in runs)
            cells.append(f"{spread([r['accuracy'] for r in runs])} [{sources}]")
        before, after = ([r["accuracy"] for r in arms.get(o, [])] for o in ("norm-relu", "relu-norm"))
        judged = ("one seed: no range to judge by" if min(len(before), len(after)) < 2
                  else "yes" if results.differ(before, after) else "no: no difference")
        lines.append(f"| {LABELS[norm]} | " + " | ".join(cells) + f" | {judged} |")
    return plots.plot_placement(table, LABELS), "\n".join(lines)


STEPS = {e: (globals()[f"measure_{e.replace('-', '_')}"], globals()[f"render_{e.replace('-', '_')}"]) for e in EXPERIMENTS}


def figure_path(out, experiment):
    return Path(out) / "images" / f"lesson_{experiment.replace('-', '_')}.png"


def show(experiment, out=ROOT):
    """For the notebooks: the experiment's figure and its numbers (Markdown), from the records on disk
    (nothing is trained); the command to run where there are none yet."""
    from IPython.display import Markdown, display

    try:
        fig, section = STEPS[experiment][1](out)
    except NotRunYet as err:
        display(Markdown(f"*Not run yet:* {err}."))
        return
    display(fig)
    display(Markdown(section))


def main(argv=None):
    args = parse_args(argv)
    run.ensure_writable(Path(args.out))
    lab = Lab(args)
    for experiment in EXPERIMENTS if args.experiment == "all" else (args.experiment,):
        lab.log(f"\n=== {experiment} ===")
        measure, render = STEPS[experiment]
        measure(lab)
        fig, section = render(lab.out)
        save_figure(fig, figure_path(lab.out, experiment))
        results.write_section(lab.out / "docs" / "lessons.md", f"lesson-{experiment}", section)
        print(section, flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:
        sys.exit(f"lessons.py: error: {err}")
    except KeyboardInterrupt:
        sys.exit("lessons.py: interrupted; every finished run is saved under results/lessons/ and is kept next time")
