"""The lessons' experiments (EXPERIMENTS): the runs each needs, what it measures, and its figure and words."""

import hashlib
import json
import re
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

import probes
import recipes
import utils
from atomic import save_figure, torch_save, write_json
from data import load_cifar10, normalize
from hardware import choose_precision, describe_device, pick_device
from lab import figures as plots
from lab import results
from lab.results import LABELS, ROOT, differ, mean_and_range, spread
from models import NORM_TYPES, SUITE_NORMS, ModelConfig, S8_model, count_parameters, load_checkpoint

DATA_HINT = "--data ../shared/data/cifar10-jpg.tar.gz"  # the offline copy these records were made from
LESSON_NORMS = ("bn", "ln", "in", "gn", "none")  # the learning-rate and activation lessons' five
SKIP_NORMS = ("bn", "ln", "gn", "none")
PROBE_IMAGES = 512  # the fixed batch of training images the gradient norms are taken on
GAP_BATCHES = (2, 8, 32, 128)  # test batch sizes of BatchNorm's train/eval comparison
FULL_RUN = "the committed full run's (batch 128, all data, 20 epochs)"  # the gap's row of checkpoints/bn.pt

# The screening variants by name: the ModelConfig fields each one sets. All take plain convs, so that
# only the norm differs (GroupNorm's own default is weight-standardized).
VARIANTS = {key: {"conv": "plain", **fields} for key, fields in {
    **{norm: {"norm": norm} for norm in NORM_TYPES},
    **{f"gn-cpg{c}": {"norm": "gn", "channels_per_group": c} for c in (1, 2, 4)},
    **{f"gn-g{g}": {"norm": "gn", "groups": g} for g in (2, 1)},
}.items()}
# GroupNorm's group sizes, from one channel per group to all of them (the widths are 16 to 32). One
# channel per group after the ReLU cannot learn (models.py), so InstanceNorm is also there before it.
GROUP_LABELS = {"in": f"1, before the ReLU ({NORM_TYPES['in'].label})", "gn-cpg1": "1, after the ReLU", "gn-cpg2": "2",
                "gn-cpg4": "4", "gn": "4-8 (4 groups)", "gn-g2": "8-16 (2 groups)",
                "gn-g1": f"16-32 (1 group: {NORM_TYPES['ln'].label})"}
LAYERNORM_NAMES = {"ln": "GroupNorm(1, C): over C, H and W of each image (this suite's)",
                   "lnc": "LayerNorm over C at each pixel (ConvNeXt's)"}

# The placement lesson, from the validation record: the runs (tags) of each norm with the norm before
# the ReLU and after it; an earlier recipe (SGD, weight decay 5e-4, plain convs), 45,000 images, 20 epochs.
PLACEMENT = {
    "bn": {"norm-relu": ("a-base", "x-base-seed1"), "relu-norm": ("r-relu-norm", "l21-relu-norm")},
    "ln": {"norm-relu": ("h-base", "l21-norm-relu"), "relu-norm": ("r-relu-norm", "p3-sgd")},
    "gn": {"norm-relu": ("k-nchw", "l21-norm-relu"), "relu-norm": ("r-relu-norm", "p3-sgd")},
}


@dataclass(frozen=True)
class Plan:
    """The sizes of every experiment; the tests run a smaller plan through the same code."""

    seeds: tuple = (0, 1)
    multipliers: tuple = (0.25, 1, 4, 16)  # the learning-rate lesson's, of both peak rates
    validation: int = 5_000  # held out of the training images: screening runs are scored on it, never on the test set
    screen_images: int = 10_000
    screen_epochs: int = 8
    full_images: int = 0  # 0: all
    full_epochs: int = 20
    sweep_images: int = 10_000
    sweep_test: int = 10_000
    sweep_epochs: int = 12
    ghost_batches: tuple = (2, 4, 8, 16, 32, 128)  # the batch-size lesson's: images in BatchNorm's statistics


@dataclass(frozen=True)
class Run:
    folder: str  # results.record_path's folder
    name: str
    model_config: ModelConfig
    cfg: recipes.TrainConfig
    data: str  # "full" (all training images or plan.full_images, the test set), "screen", "sweep" (Lab.data)
    keep_checkpoint: bool = False
    also: tuple = ()  # other records that may answer it (run.py's seeds), relative to the output folder
    activations: bool = False  # record what enters each ReLU (probes.ActivationRecorder)


PRECISION_FIELDS = ("amp", "channels_last")  # recorded and shown, never matched


def fingerprint(model_config, config, data, train_images, test_images):
    """sha256 of a run's ModelConfig and TrainConfig (precision aside, today's defaults filled in) and data."""
    with warnings.catch_warnings():  # a lesson's deliberate failure (one channel per group) warns
        warnings.simplefilter("ignore")
        model = ModelConfig(**model_config).to_dict()
    if results.optimizer_label(config) == "SGD":  # the earlier recipe: no request of today's asks for it
        raise ValueError("a run of the earlier recipe")
    given = {k: v for k, v in config.items() if k not in (*PRECISION_FIELDS, "optimizer")}
    train = {k: v for k, v in asdict(recipes.TrainConfig(**given)).items() if k not in PRECISION_FIELDS}
    text = json.dumps([model, train, data, train_images, test_images], sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()


def record_fingerprint(record):
    """The fingerprint of a saved record, or None for one that lacks its configs."""
    try:
        return fingerprint(*(record[k] for k in ("model_config", "config", "data", "train_images", "test_images")))
    except (KeyError, TypeError, ValueError):
        return None


class Lab:
    """What every experiment's measuring shares: the data (loaded on first use), device, plan and output."""

    def __init__(self, out, data_source, cache=None, device=None, amp="auto", plan=Plan(), log=print):
        self.out, self.source, self.cache, self.amp, self.plan, self.log = Path(out), data_source, cache, amp, plan, log
        self.device = pick_device(device)
        self._data = {}

    def data(self, kind):
        if "all" not in self._data:
            self._data["all"] = load_cifar10(self.source, cache_dir=self.cache)
        if kind not in self._data:  # each split made once, and only the ones asked for
            p, full = self.plan, self._data["all"]
            self._data[kind] = {
                "full": lambda: full.subset(p.full_images, seed=0) if p.full_images else full,
                "screen": lambda: full.validation_split(p.validation, seed=0).subset(p.screen_images, p.validation, seed=0),
                "sweep": lambda: full.subset(p.sweep_images, p.sweep_test, seed=0)}[kind]()
        return self._data[kind]

    def precision(self, norm, cfg):
        return choose_precision(self.device, norm, self.amp, cfg.channels_last)

    def matching(self, path, model_config, cfg, data, say=True):
        """The record at `path` if its fingerprint is the request's, else None (a stale one is named)."""
        record = results.read(path)
        if record is None or record_fingerprint(record) == fingerprint(
                model_config.to_dict(), asdict(cfg), data.source, len(data.train_labels), len(data.test_labels)):
            return record
        if say:
            why = ("records no configs" if "config" not in record else "was trained with the earlier SGD recipe"
                   if results.optimizer_label(record["config"]) == "SGD" else "was made with other settings")
            self.log(f"{path.relative_to(self.out)} {why}: it is made again")
        return None

    def answered(self, run, say=True, copy=True):
        """The saved record that answers `run`, its own or one of `also` (with `copy`, copied to its place), or None."""
        data, path = self.data(run.data), results.record_path(self.out, run.folder, run.name)
        found = self.matching(path, run.model_config, run.cfg, data, say)
        for other in run.also if found is None else ():
            found = self.matching(self.out / other, run.model_config, run.cfg, data, say=False)
            if found is not None:
                if copy:
                    results.write_record(self.out, run.folder, run.name, {**found, "source": f"{other} (run.py)"})
                break
        if found is not None and run.keep_checkpoint and not found["diverged"] and not path.with_suffix(".pt").is_file():
            return None
        return found

    def ensure(self, run):
        """The record of `run`: a saved one that answers it, else trained now."""
        found = self.answered(run)
        if found is not None:
            return found

        def probe(model, steps):  # what enters each ReLU, read (and the hooks taken out) when training ends
            recorder = probes.ActivationRecorder(model, probes.first_epoch_and_end(steps, steps * run.cfg.epochs))
            return lambda: recorder.remove() or {"activations": dict(
                steps=recorder.steps, steps_per_epoch=steps, percentiles=list(probes.PERCENTILES), blocks=recorder.values)}

        outcome = results.run_one(run.model_config, run.cfg, self.data(run.data), self.precision(run.model_config.norm, run.cfg),
                                self.device, verbose=False, progress=False, probe=probe if run.activations else None,
                                keep_diverged=True)
        record = outcome["record"]
        results.write_record(self.out, run.folder, run.name, record)
        if run.keep_checkpoint and not record["diverged"]:
            torch_save(outcome["checkpoint"], results.record_path(self.out, run.folder, run.name, ".pt"))
        done = record["diverged"] or f"accuracy {record['final_test_accuracy']:.2f}%"
        self.log(f"{run.folder}/{run.name}: {done}")
        return record


class NotRunYet(Exception):
    """An experiment's records are not on disk yet: run its command."""


def command(name):
    return f"python -m lab {name}"


RECORD_ONLY = re.compile(r"\[\[(.*?)\]\]")  # [[part of a line, or a whole one]] for docs/lessons.md, not the notebooks


def needed(out, folder, pattern, what, name):
    """The records results.read_records finds; NotRunYet, naming `what` and the command, where there are none."""
    records = results.read_records(out, folder, pattern)
    if not records:
        raise NotRunYet(f"no {what} on disk yet: run `{command(name)}`")
    return records


def screening(out, variant, multiplier, name):
    return needed(out, "screening", f"{variant}-x{multiplier:g}-seed*",
                  f"screening runs of {variant} at x{multiplier:g}", name)


def finished(records, key="final_test_accuracy"):
    return [r[key] for r in records if not r.get("diverged")]


def seeds_of(records):
    return ", ".join(str(r["seed"]) for r in records)


def screening_setting(records):
    first = records[0]
    return (f"{first['train_images']:,} training images, {first['epochs']} epochs, scored on "
            f"{first['test_images']:,} held-out validation images; [[{first['data']}; ]]"
            f"{results.trained_on(records)}")


def caption(records):
    """screening_setting for a figure: a PNG cannot drop the record's [[...]] parts as a student's text does."""
    return RECORD_ONLY.sub("", screening_setting(records))


def screening_runs(plan, variants, multipliers=(1,)):
    base = recipes.recipe("bn")  # one recipe for every variant (BatchNorm's), so that only the norm differs
    with warnings.catch_warnings():  # gn-cpg1 (one channel per group after the ReLU) warns, on purpose
        warnings.simplefilter("ignore")
        return [Run("screening", f"{v}-x{m:g}-seed{seed}", ModelConfig(**VARIANTS[v]),
                    recipes.recipe("bn", lr=base.lr * m, muon_lr=base.muon_lr * m, epochs=plan.screen_epochs, seed=seed),
                    "screen", keep_checkpoint=v in LESSON_NORMS and m == 1 and seed == 0, activations=True)
                for v in variants for m in multipliers for seed in plan.seeds]


def skips_runs(plan):
    return [Run("skips", f"{norm}-{'skips' if skips else 'noskips'}-seed{seed}", ModelConfig(norm=norm, skips=skips),
                recipes.recipe(norm, epochs=plan.full_epochs, seed=seed), "full",
                also=(str(results.seed_path("", norm, seed)),) if skips and norm in SUITE_NORMS else ())
            for norm in SKIP_NORMS for skips in (True, False) for seed in plan.seeds]


def measure_skips(lab):
    """Each layer's gradient norm at init and after the full run's first epoch (its steps), on PROBE_IMAGES images."""
    data = lab.data("full")
    for run in skips_runs(lab.plan):
        path = results.record_path(lab.out, "skips", f"gradients-{run.name}")
        if lab.matching(path, run.model_config, run.cfg, data) is not None:
            continue
        pick = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(0))[:PROBE_IMAGES]
        images, labels = data.train_images[pick], data.train_labels[pick]
        torch.manual_seed(run.cfg.seed)
        model = S8_model(**asdict(run.model_config))
        at_init = probes.gradient_norms(model, images, labels, data.mean, data.std)
        precision = lab.precision(run.model_config.norm, run.cfg)
        cfg = replace(run.cfg, amp=precision.amp, channels_last=precision.channels_last)  # recorded as chosen
        utils.fit(model, data, run.cfg, lab.device, precision, progress=False, log=lambda line: None, stop_after=1)
        after = probes.gradient_norms(model, images, labels, data.mean, data.std)
        write_json(path, dict(
            norm=run.model_config.norm, skips=run.model_config.skips, seed=run.cfg.seed, images=PROBE_IMAGES,
            device=describe_device(lab.device), precision=precision.describe(), config=asdict(cfg),
            model_config=run.model_config.to_dict(), data=data.source, train_images=len(data.train_labels),
            test_images=len(data.test_labels), init=at_init, epoch1=after))


def render_skips(out):
    arms = [(norm, skips) for norm in SKIP_NORMS for skips in (True, False)]
    arm = {True: "skips", False: "noskips"}
    runs = {(n, s): needed(out, "skips", f"{n}-{arm[s]}-seed*", "full runs", "skips") for n, s in arms}
    grads = {(n, s): needed(out, "skips", f"gradients-{n}-{arm[s]}-seed*", "gradients", "skips") for n, s in arms}
    first = runs[arms[0]][0]
    lines = [f"each norm's recipe, {first['train_images']:,} training images, {first['epochs']} "
             f"epochs, scored on the {first['test_images']:,} test images; seeds {seeds_of(runs[arms[0]])}. "
             "Final test accuracy, mean of the seeds (lowest-highest):", "",
             "| norm | with the two skips | without | difference | beyond the seeds' range? |",
             "|---|---:|---:|---:|---|"]
    judged = {}
    for norm in SKIP_NORMS:
        on, off = (finished(runs[(norm, s)]) for s in (True, False))
        seen = results.machines(runs[(norm, True)] + runs[(norm, False)])
        judged[norm] = ("different machines: not compared" if len(seen) > 1 else "yes" if differ(on, off)
                        else "no: no difference")
        lines.append(f"| {LABELS[norm]} | {spread(on)} | {spread(off)} | {mean_and_range(on)[0] - mean_and_range(off)[0]:+.2f} "
                     f"| {judged[norm]} |")
    machines = results.trained_on([r for arm in runs.values() for r in arm])
    lines += ["", machines[:1].upper() + machines[1:] + ". Beyond the seeds' range: the two means differ by more than "
              "the wider of the two arms' lowest-to-highest ranges.",
              "", f"Gradient norm of each layer's weights on {PROBE_IMAGES} fixed training images (fp32, train mode), "
              "at initialisation and after the first epoch, mean of the seeds (lowest-highest): the first C block's "
              "(C1) and the last's (C9), and their ratio:", "",
              "| norm | skips | C1 at init | C9 at init | C1 / C9 at init | C1 / C9 after epoch 1 |",
              "|---|---|---:|---:|---:|---:|"]
    for norm, skips in arms:
        g = grads[(norm, skips)]
        cells = ([r["init"]["C1"] for r in g], [r["init"]["C9"] for r in g],
                 [r["init"]["C1"] / r["init"]["C9"] for r in g], [r["epoch1"]["C1"] / r["epoch1"]["C9"] for r in g])
        lines.append(f"| {LABELS[norm]} | {'with' if skips else 'without'} | "
                     + " | ".join(spread(values, ".3g") for values in cells) + " |")
    accuracy = {k: mean_and_range(finished(v))[0] for k, v in runs.items()}
    with_norm = [n for n in SKIP_NORMS if n != "none"]
    same = [LABELS[n] for n in with_norm if judged[n].startswith("no")]
    headline = (f"With a norm, removing the two skips made {'no difference' if len(same) == len(with_norm) else 'a difference'}"
                f" at full length ({'; '.join(f'{LABELS[n]} {accuracy[(n, True)]:.1f}% with them, {accuracy[(n, False)]:.1f}% without' for n in with_norm)}); "
                f"without a norm the network reached {accuracy[('none', True)]:.1f}% with them and "
                f"{accuracy[('none', False)]:.1f}% without")
    lines += ["", "At initialisation without norm or skips, C1's gradient is "
              f"{mean_and_range([r['init']['C1'] for r in grads[('none', False)]])[0]:.2g}, against "
              f"{mean_and_range([r['init']['C1'] for r in grads[('none', True)]])[0]:.2g} with the skips."]
    return lambda: plots.plot_skips({k: [r["history"] for r in v] for k, v in runs.items()}, grads, LABELS), lines, headline


def lr_accuracies(norm, multipliers, out=ROOT):  # {multiplier: [each seed's accuracy (None: diverged)]}
    return {m: [r["final_test_accuracy"] for r in results.read_records(out, "screening", f"{norm}-x{m:g}-seed*")]
            for m in multipliers}


def render_lr(out):
    runs = needed(out, "screening", "bn-x*-seed*", "screening runs", "lr")
    multipliers = sorted({round(r["config"]["lr"] / recipes.recipe("bn").lr, 6) for r in runs})
    table = {norm: {m: screening(out, norm, m, "lr") for m in multipliers} for norm in LESSON_NORMS}
    every = [r for points in table.values() for runs in points.values() for r in runs]
    one = table["bn"][1][0]
    rates = ", ".join(f"x{m:g}: {one['config']['lr'] * m:g} and {one['config']['muon_lr'] * m:g}" for m in multipliers)
    lines = [f"{screening_setting(every)}; seeds {seeds_of(table['bn'][1])}. Every norm trained "
             "with one recipe (BatchNorm's: Muon for the conv kernels, SGD for the rest, no weight decay) and plain "
             f"convs, its two peak rates, SGD's and Muon's, both multiplied by the same factor ({rates}). Final validation accuracy, "
             "mean of the seeds (lowest-highest); a run whose loss stopped being finite is marked diverged:", "",
             "| norm | " + " | ".join(f"rates x{m:g}" for m in multipliers) + " |", "|---|" + "---:|" * len(multipliers)]
    best = {}
    for norm in LESSON_NORMS:
        cells = []
        for m in multipliers:
            runs, done = table[norm][m], finished(table[norm][m])
            failed = len(runs) - len(done)
            shown = spread(done) if len(done) > 1 else f"{done[0]:.1f} (one seed)" if done else ""
            cells.append(shown + (f", {failed} of {len(runs)} diverged" if failed else "") if done
                         else f"diverged ({failed} of {failed})")
            if done and mean_and_range(done)[0] > best.get(norm, (0, 0))[1]:
                best[norm] = (m, mean_and_range(done)[0])
        lines.append(f"| {LABELS[norm]} | " + " | ".join(cells) + " |")
    headline = "Each norm's best rate: " + "; ".join(f"{LABELS[n]} {acc:.1f}% at x{m:g}" for n, (m, acc) in best.items())
    return lambda: plots.plot_lr_sweep(table, LABELS, caption(every)), lines, headline


def render_activations(out):
    runs = {norm: screening(out, norm, 1, "activations") for norm in LESSON_NORMS}
    lines = [f"the learning-rate section's runs at x1, the recipe's own rates ({screening_setting(runs['bn'])}). What "
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
    last_99 = [r["activations"]["blocks"]["C9"][-1][-1] for r in runs["none"]]
    headline = (f"Without a norm, the 99th percentile of what enters C9's ReLUs at the end of training is "
                f"{', '.join(f'{v:.2f}' for v in last_99)} (seeds {seeds_of(runs['none'])}): "
                + ("almost all of it is cut off" if max(last_99) < 0 else "some of it passes"))
    return lambda: plots.plot_activations({norm: runs[norm][0] for norm in LESSON_NORMS}, LABELS), lines, headline


def measure_fold(lab):
    model, ckpt = load_checkpoint(lab.out / "checkpoints" / "bn.pt", norm="bn")
    folded = probes.fold_batchnorm(model)
    data = lab.data("all")
    x = normalize(data.test_images, data.mean, data.std)
    with torch.no_grad():
        plain, fused = (torch.cat([m(x[i:i + 1000]) for i in range(0, len(x), 1000)]) for m in (model.eval(), folded))
    timing = {str(batch): {name: probes.seconds_per_image(m, x[:200] if batch == 1 else x[:2048], batch)
                           for name, m in (("with BatchNorm", model), ("folded", folded))} for batch in (1, 256)}
    results.write_record(lab.out, "fold", "bn", dict(
        checkpoint="checkpoints/bn.pt", seed=ckpt.get("config", {}).get("seed"), test_images=len(x),
        device=describe_device("cpu"), precision="fp32, eval mode", max_logit_difference=(plain - fused).abs().max().item(),
        predictions_changed=int((plain.argmax(1) != fused.argmax(1)).sum()),
        accuracy=100.0 * (plain.argmax(1) == data.test_labels).float().mean().item(),
        accuracy_folded=100.0 * (fused.argmax(1) == data.test_labels).float().mean().item(),
        parameters=count_parameters(model), parameters_folded=count_parameters(folded),
        seconds_per_image=timing))


def render_fold(out):
    r = needed(out, "fold", "bn", "measurement", "fold")[0]
    lines = [f"the committed full run's BatchNorm model ([[{r['checkpoint']}, ]]seed {r['seed']}) on the "
             f"{r['test_images']:,} test images, fp32, eval mode, on {r['device']}.", "",
             "| | with BatchNorm | folded into the convs |", "|---|---:|---:|",
             f"| test accuracy | {r['accuracy']:.2f}% | {r['accuracy_folded']:.2f}% |",
             f"| parameters | {r['parameters']:,} | {r['parameters_folded']:,} |"]
    for b, t in r["seconds_per_image"].items():
        lines.append(f"| ms per image, batches of {b} | {1000 * t['with BatchNorm']:.3f} | {1000 * t['folded']:.3f} |")
    headline = (f"Folded into the convs, BatchNorm changes {r['predictions_changed']} of the {r['test_images']:,} test "
                f"predictions (largest logit difference {r['max_logit_difference']:.2e}) and leaves "
                f"{r['parameters_folded']:,} parameters of {r['parameters']:,}")
    lines += ["", "Times: the median of 5 passes on the machine named above; they change from run to run."]
    return lambda: plots.plot_fold(r["seconds_per_image"]), lines, headline


def measure_batch_of_one(lab):
    data = lab.data("screen")
    pick = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(0))[:128]
    x = normalize(data.test_images[pick], data.mean, data.std)
    record = {}
    for norm in LESSON_NORMS:
        model, _ = load_checkpoint(results.record_path(lab.out, "screening", f"{norm}-x1-seed0", ".pt"), norm=norm)
        record[norm] = {mode: dict(zip(("max_logit_difference", "predictions_changed"),
                                       probes.batch_dependence(model, x, mode))) for mode in ("eval", "train")}
    results.write_record(lab.out, "batch-of-one", "models-x1-seed0", record)


def render_batch_of_one(out):
    record = needed(out, "batch-of-one", "models-x1-seed0", "measurement", "batch-of-one")[0]
    lines = ["the learning-rate section's models at x1 (the recipe's own rates), seed 0; 128 held-out validation "
             "images passed as one batch and each passed alone, fp32. The largest difference in any logit, and how "
             "many of the 128 predictions change:", "", "| norm | eval mode | train mode |", "|---|---:|---:|"]
    for norm, row in record.items():
        lines.append(f"| {LABELS[norm]} | " + " | ".join(
            f"{row[m]['max_logit_difference']:.1e}, {row[m]['predictions_changed']} changed" for m in ("eval", "train")) + " |")
    others = [LABELS[n] for n in record if n != "bn" and not any(record[n][m]["predictions_changed"] for m in record[n])]
    headline = (f"In train mode BatchNorm changes {record['bn']['train']['predictions_changed']} of 128 predictions "
                "when each image is passed alone (these models: the learning-rate section's at x1, not the BatchNorm "
                "lesson's); "
                + (f"the other models ({', '.join(others)}) change none, in either mode" if others else
                   "every other model changes some"))
    return lambda: plots.plot_batch_of_one(record, LABELS), lines, headline


def render_layernorms(out):
    runs = {v: screening(out, v, 1, "layernorms") for v in LAYERNORM_NAMES}
    lines = [f"{screening_setting(runs['ln'] + runs['lnc'])}; seeds {seeds_of(runs['ln'])}; "
             "both after the ReLU, the recipe's rates. Final validation accuracy, mean of the seeds (lowest-highest):", "",
             "| LayerNorm | validation accuracy | train accuracy |", "|---|---:|---:|",
             *(f"| {LAYERNORM_NAMES[v]} | {spread(finished(runs[v]))} | {spread(finished(runs[v], 'final_train_accuracy'))} |"
               for v in runs)]
    a, b = (finished(runs[v]) for v in LAYERNORM_NAMES)
    headline = (f"The per-image GroupNorm(1, C) reached {mean_and_range(a)[0]:.1f}% and the per-pixel LayerNorm(C) "
                f"{mean_and_range(b)[0]:.1f}% in short runs: "
                + ("beyond the seeds' range" if differ(a, b) else "within the seeds' range, no difference"))
    return lambda: plots.plot_screening_curves({v: [r["history"] for r in runs[v]] for v in runs}, LAYERNORM_NAMES,
                                      caption(runs["ln"])), lines, headline


def render_groups(out):
    runs = {v: screening(out, v, 1, "groups") for v in GROUP_LABELS}
    every = [r for v in runs.values() for r in v]
    lines = [f"{screening_setting(every)}; seeds {seeds_of(runs['gn'])}; GroupNorm after the "
             "ReLU (InstanceNorm also before it), plain convs, BatchNorm's recipe at x1. Final validation accuracy, "
             "mean of the seeds (lowest-highest):", "",
             "| channels per group | validation accuracy | train accuracy |", "|---|---:|---:|",
             *(f"| {GROUP_LABELS[v]} | {spread(finished(runs[v]))} | {spread(finished(runs[v], 'final_train_accuracy'))} |"
               for v in GROUP_LABELS)]
    wide = ("gn-cpg4", "gn", "gn-g2", "gn-g1")
    means = [mean_and_range(finished(runs[v]))[0] for v in wide]
    level = not any(differ(finished(runs[a]), finished(runs[b])) for a in wide for b in wide if a < b)
    headline = (f"From 4 channels per group to all of them the accuracy is {min(means):.1f}% to {max(means):.1f}%"
                + (", no pair beyond the seeds' range" if level else "") + "; one channel per group scored "
                f"{mean_and_range(finished(runs['in']))[0]:.1f}% before the ReLU and "
                f"{mean_and_range(finished(runs['gn-cpg1']))[0]:.1f}% after it")
    table = {GROUP_LABELS[v]: finished(runs[v]) for v in GROUP_LABELS}
    return lambda: plots.plot_group_size(table, caption(every)), lines, headline


def measure_placement(lab):
    table = {norm: {order: [dict(tag=r["tag"], seed=r["seed"], accuracy=round(r["final_test_accuracy"], 2))
                            for r in results.validation_runs(lab.out) if r.get("tag") in tags and r["norm"] == norm]
                    for order, tags in arms.items()} for norm, arms in PLACEMENT.items()}
    results.write_record(lab.out, "placement", "validation", table)


def render_placement(out):
    table = needed(out, "placement", "validation", "record", "placement")[0]
    lines = ["No training: full validation runs[[ from results/validation.md]], trained with SGD (weight decay 5e-4) "
             "on every kernel and plain convs, not the lessons' Muon recipe; 45,000 training images, 20 epochs, "
             "scored on the 5,000 held-out images. Validation accuracy, mean of the seeds (lowest-highest):", "",
             "| norm | before the ReLU (conv, norm, ReLU) | after it (conv, ReLU, norm) | beyond the seeds' range? |",
             "|---|---:|---:|---|"]
    better, tags = [], []
    for norm, arms in table.items():
        tags += [f"{LABELS[norm]} {o}: " + ", ".join(f"{r['tag']} seed {r['seed']}" for r in arms.get(o, []))
                 for o in ("norm-relu", "relu-norm")]
        before, after = ([r["accuracy"] for r in arms.get(o, [])] for o in ("norm-relu", "relu-norm"))
        judged = ("one seed: no range to judge by" if min(len(before), len(after)) < 2
                  else "yes" if differ(before, after) else "no: no difference")
        lines.append(f"| {LABELS[norm]} | {spread(before)} | {spread(after)} | {judged} |")
        if before and after:
            better.append(f"{LABELS[norm]} {mean_and_range(after)[0]:.1f}% after the ReLU against "
                          f"{mean_and_range(before)[0]:.1f}% before")
    lines += ["", f"[[The runs, by their tags in results/validation.md: {'; '.join(tags)}.]]"]
    headline = "On validation, trained with SGD and plain convs: " + "; ".join(better)
    return lambda: plots.plot_placement(table, LABELS), lines, headline


def batch_size_runs(plan):
    """BatchNorm over each ghost batch inside the recipe's batches (same steps); LayerNorm and GroupNorm as they are."""
    bn = [Run("sweep", f"bn-ghost{g}-seed{seed}", ModelConfig(norm="bn", ghost_batch=g),
              recipes.recipe("bn", epochs=plan.sweep_epochs, seed=seed), "sweep",
              keep_checkpoint=g == min(plan.ghost_batches) and seed == plan.seeds[0])
          for g in plan.ghost_batches for seed in plan.seeds]
    return bn + [Run("sweep", f"{norm}-seed{seed}", ModelConfig(norm=norm),
                     recipes.recipe(norm, epochs=plan.sweep_epochs, seed=seed), "sweep")
                 for norm in results.NORMS if norm != "bn" for seed in plan.seeds]


def measure_batch_size(lab):
    """BatchNorm's train/eval gap of the full run's model and the smallest ghost batch's: running or batch statistics."""
    data, gap, smallest = lab.data("all"), {}, min(lab.plan.ghost_batches)
    models = {FULL_RUN: lab.out / "checkpoints" / "bn.pt", f"the sweep's, its statistics over {smallest} images":
              results.record_path(lab.out, "sweep", f"bn-ghost{smallest}-seed{lab.plan.seeds[0]}", ".pt")}
    for name, path in models.items():
        if path.is_file():
            trained, _ = load_checkpoint(path, norm="bn")
            model = S8_model(**{**trained.config.to_dict(), "ghost_batch": None})  # train mode: a whole test batch's
            model.load_state_dict(trained.state_dict())
            gap[name] = {"eval": round(utils.scores(model, data).accuracy, 2), **{
                f"train_bs{b}": round(probes.accuracy_with_batch_statistics(model, data, b), 2) for b in GAP_BATCHES}}
    results.write_record(lab.out, "sweep", "batchnorm_gap", gap)


def render_batch_size(out):
    runs = needed(out, "sweep", "*-seed*", "batch-size runs", "batch-size")
    ghost, reference = {}, {}
    for r in runs:
        g = r["model_config"].get("ghost_batch")
        (ghost.setdefault(g, []) if g else reference.setdefault(r["norm"], [])).append(r)
    reference = {n: reference[n] for n in results.NORMS if n in reference}  # the suite's order
    first, sizes, batch = runs[0], sorted(ghost), runs[0]["config"]["batch_size"]
    lines = [f"BatchNorm takes its statistics over splits of a few images of each batch of {batch} (a ghost batch, "
             f"Hoffer et al., 2017): every run takes the same steps, of the same size, on the same images, so only the "
             f"images BatchNorm's statistics come from change. LayerNorm and GroupNorm normalize each image alone: no "
             f"split changes them, and their runs are the reference. {first['train_images']:,} training images (the "
             f"same seeded subset in every run), {first['epochs']} epochs, the lessons' recipes, scored on "
             f"{first['test_images']:,} test images; seeds {', '.join(map(str, sorted({r['seed'] for r in runs})))}; "
             f"[[{first['data']}; ]]{results.trained_on(runs)}. Mean of the seeds (lowest-highest):", "",
             "| norm | statistics over | test accuracy | train accuracy |", "|---|---|---:|---:|"]
    rows = [(LABELS["bn"], f"{g} images" + (" (the whole batch)" if g >= batch else ""), ghost[g]) for g in sizes]
    rows += [(LABELS[n], "each image alone", rs) for n, rs in reference.items()]
    for label, over, rs in rows:
        lines.append(f"| {label} | {over} | {spread([r['final_test_accuracy'] for r in rs])} | "
                     f"{spread([r['final_train_accuracy'] for r in rs])} |")
    gap = results.read(results.record_path(out, "sweep", "batchnorm_gap")) or {}
    if gap:
        lines += ["", "BatchNorm's train/eval gap: test accuracy on the 10,000 test images with the running statistics "
                  "(eval mode) and with each test batch's own statistics (train mode):", "",
                  "| BatchNorm model | eval mode (running statistics) | "
                  + " | ".join(f"statistics of {b} test images" for b in GAP_BATCHES) + " |",
                  "|---|---:|" + "---:|" * len(GAP_BATCHES),
                  *(f"| {name} | {row['eval']:.2f}% | " + " | ".join(f"{row[f'train_bs{b}']:.2f}%" for b in GAP_BATCHES)
                    + " |" for name, row in gap.items())]
    low = min(sizes)
    test = {g: [r["final_test_accuracy"] for r in rs] for g, rs in ghost.items()}
    headline = (f"At the same steps, BatchNorm with its statistics over {low} images scores "
                f"{mean_and_range(test[low])[0]:.1f}% against {mean_and_range(test[max(sizes)])[0]:.1f}% over "
                f"{max(sizes)}; " + ", ".join(f"{LABELS[n]} {mean_and_range(r['final_test_accuracy'] for r in rs)[0]:.1f}%"
                                              for n, rs in reference.items())
                + f" ({first['train_images']:,} training images, {first['epochs']} epochs, the lessons' recipes)")
    if FULL_RUN in gap:
        row = gap[FULL_RUN]
        headline += (f"; the full run's BatchNorm model scores {row['eval']:.2f}% with its running statistics and "
                     f"{row[f'train_bs{GAP_BATCHES[0]}']:.2f}% with those of {GAP_BATCHES[0]} test images")
    setting = (f"{first['train_images']:,} training images, {first['epochs']} epochs, batches of {batch}; "
               f"{results.trained_on(runs)}")
    return (lambda: plots.plot_batch_size(test, {n: [r["final_test_accuracy"] for r in rs] for n, rs in reference.items()},
                                          LABELS, batch, setting), lines, headline)


@dataclass(frozen=True)
class Experiment:
    title: str  # the README's bold lead-in
    notebook: str  # where a student meets it
    anchor: str  # its section of docs/lessons.md
    render: callable  # (a function that draws the figure, the section's lines, the headline) from the records
    runs: callable = lambda plan: []  # the training runs (Run) it needs, for a Plan
    measure: callable = lambda lab: None  # beyond training: the gradients reuse a matching record; the rest always run


EXPERIMENTS = {
    "batch-size": Experiment("The batch size", "S8_compare.ipynb", "what-the-batch-size-does-to-each-norm",
                             render_batch_size, batch_size_runs, measure_batch_size),
    "lr": Experiment("What a norm buys: the learning rate", "S8_compare.ipynb", "what-a-norm-does-to-the-learning-rate",
                     render_lr, lambda plan: screening_runs(plan, LESSON_NORMS, plan.multipliers)),
    "skips": Experiment("The skip connections", "S8_compare.ipynb", "what-the-skip-connections-do",
                        render_skips, skips_runs, measure_skips),
    "activations": Experiment("What enters each ReLU", "S8_compare.ipynb", "what-enters-each-relu",
                              render_activations, lambda plan: screening_runs(plan, LESSON_NORMS)),
    "batch-of-one": Experiment("A batch of one", "S8_LN.ipynb", "a-batch-of-one", render_batch_of_one,
                               lambda plan: screening_runs(Plan(**{**asdict(plan), "seeds": (0,)}), LESSON_NORMS),
                               measure_batch_of_one),
    "fold": Experiment("Folding BatchNorm", "S8_BN.ipynb", "batchnorm-folds-into-the-conv", render_fold,
                       measure=measure_fold),
    "layernorms": Experiment("Two LayerNorms", "S8_LN.ipynb", "two-kinds-of-layernorm", render_layernorms,
                             lambda plan: screening_runs(plan, LAYERNORM_NAMES)),
    "groups": Experiment("GroupNorm's group size", "S8_GN.ipynb", "groupnorms-group-size", render_groups,
                         lambda plan: screening_runs(plan, GROUP_LABELS)),
    "placement": Experiment("Where the norm sits", "S8_LN.ipynb", "before-or-after-the-relu", render_placement,
                            measure=measure_placement),
}


def section_name(name):  # its markers in docs/lessons.md (and its figure's name); batch-size's predate the lessons
    return name if name == "batch-size" else f"lesson-{name}"


def figure_path(out, name):
    return Path(out) / "images" / f"{section_name(name).replace('-', '_')}.png"


def rendered(name, out=ROOT, students=False):
    """(figure, section, headline) of `name` from the records under `out`; NotRunYet where there are none."""
    draw, lines, headline = EXPERIMENTS[name].render(out)
    if students:
        # a maintainer's command is the record's business, not a student's
        lines = [RECORD_ONLY.sub("", re.sub(r": `python -m lab [\w-]+`[^.]*", "", line))
                 for line in lines if not RECORD_ONLY.fullmatch(line)]
        lines[0] = lines[0][:1].upper() + lines[0][1:]
    else:
        lines = [RECORD_ONLY.sub(r"\1", line) for line in [f"`{command(name)} {DATA_HINT}`: {lines[0]}", *lines[1:]]]
    return draw(), "\n".join([*lines, "", f"What it shows: {headline}."]), headline


def check_sections(out, name):
    """Refuse, naming the file, an output folder whose docs lack `name`'s markers."""
    for path, section in ((Path(out) / "docs" / "lessons.md", section_name(name)), (Path(out) / "README.md", "lessons")):
        if path.is_file():
            results.replace_section(path.read_text(), section, "", path)


def publish(out, name):
    """Draw `name`'s figure, write its section of docs/lessons.md and README's lessons section; return the section."""
    fig, section, _ = rendered(name, out)
    save_figure(fig, figure_path(out, name))
    results.write_section(Path(out) / "docs" / "lessons.md", section_name(name), section)
    results.write_section(Path(out) / "README.md", "lessons", readme_lessons(out))
    return section


def readme_lessons(out):
    """README's lessons section: one headline per experiment whose records are on disk."""
    lines = []
    for name, e in EXPERIMENTS.items():
        try:
            headline = e.render(out)[2]
        except NotRunYet:
            continue
        lines.append(f"- **{e.title}.** {headline} ([docs/lessons.md](docs/lessons.md#{e.anchor}), "
                     f"[`{e.notebook}`]({e.notebook})).")
    return "\n".join(lines)


def show(name, out=ROOT):
    """For the notebooks: the figure and numbers from the records on disk (nothing is trained), else the command."""
    from IPython.display import Markdown, display

    try:
        fig, section, _ = rendered(name, out, students=True)
    except NotRunYet as err:
        display(Markdown(f"*Not run yet:* {err}."))
        return
    display(fig, Markdown(section))
