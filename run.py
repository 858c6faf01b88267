"""Train the S8 models and write their results, checkpoints and figures.

    python run.py --norm all --data ../shared/data/cifar10-jpg.tar.gz

trains each norm once per seed (--seeds, default 0 1 2) and writes, under --out (default: this folder),
results/<norm>_seed<k>.json and results/<norm>.json, and for the first seed checkpoints/<norm>.pt and the
figures under images/; with --norm all also images/comparison.png and README.md's table. `--report` draws
those two again from the saved results, training nothing. docs/development.md, "Running it", has the rest.
"""

import argparse
import os
import secrets
import shutil
import sys
import tempfile
import warnings
from dataclasses import fields
from datetime import datetime, timezone
from pathlib import Path

import torch

import plots
import recipes
from atomic import ensure_writable, save_figure, torch_save, write_json
from data import add_source_flags, load_cifar10
from hardware import AMP_CHOICES, choose_precision, describe_device, pick_device
from lab import results
from lab.results import LABELS, NORMS
from models import CONVS, NORM_TYPES, ORDERS, ModelConfig, canonical_norm

MIN_TEST_IMAGES = 10  # one a class: fewer cannot say what the accuracy is

ROOT = Path(__file__).resolve().parent


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--norm", default="all", help="bn | ln | gn (or batch | layer | group) | all; also the "
                   "lessons' controls in (InstanceNorm), none, lnc (LayerNorm over the channels of each pixel)")
    add_source_flags(p)
    p.add_argument("--out", default=None, help="where results/, checkpoints/, images/ go (default: this folder; "
                   "for --dry-run a new temporary folder, so the saved results stay)")
    p.add_argument("--subset", type=_count, default=0, metavar="N",
                   help="train on N random training images (and N/5 test) for a quick run; 0 (default): all")
    p.add_argument("--dry-run", action="store_true", help="one epoch on 512 images: checks the whole pipeline")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--report", action="store_true", help="train nothing: draw images/comparison.png and README.md's "
                                                         "table again from the saved results")
    p.add_argument("--validation", type=_count, default=0, metavar="N",
                   help="hold out N seeded training images and evaluate on them instead of the test set "
                        "(for choosing settings); writes only results/validation/<tag>-<norm>.json and the record "
                        "results/validation.md")
    p.add_argument("--tag", default="default", help="name of a validation run")
    p.add_argument("--seeds", type=_count, nargs="+", default=None,
                   help="one run per seed (default 0 1 2; 0 alone for --validation and --dry-run)")
    p.add_argument("--seed", type=lambda text: [_count(text)], dest="seeds", help="a single seed: same as --seeds N")
    # One flag per field of the model's and the training's configs; a flag left out takes the
    # config's default (for training: the norm's recipe, recipes.recipe; for --order: the norm's own).
    add_config_flags(p, ModelConfig, skip=("norm", "num_classes"), special={
        "widths": dict(type=_widths, help="channels after C1,C2,c3,C3-C5,c6,C7-C9 (default 16,32,16,28,16,32)"),
        "groups": dict(type=_positive, help="GroupNorm's groups (default 4)"),
        "channels_per_group": dict(type=_positive, help="GroupNorm: this many channels in each group instead "
                                                        "of --groups groups"),
        "skips": dict(action=argparse.BooleanOptionalAction, help="the two identity skips C3->C5 and C7->C9 "
                                                                  "(default on; --no-skips removes them)"),
        "order": dict(choices=ORDERS, help="where the norm sits in each C block: before or after the ReLU "
                                           "(default: the norm's own, models.NORM_TYPES)"),
        "ghost_batch": dict(type=_positive, help="BatchNorm: its training statistics over splits of this many images "
                                                 "of each batch (default: the whole batch)"),
        "conv": dict(choices=list(CONVS), help="the C blocks' 3x3 conv: plain, or ws = Weight Standardization "
                                              "(default: the norm's own, models.NORM_TYPES: ws for GroupNorm)"),
    })
    add_config_flags(p, recipes.TrainConfig, skip=("seed",), special={
        "amp": dict(choices=AMP_CHOICES, help="mixed precision (default auto: bf16 where the hardware has it "
                                              "natively, fp16 with a GradScaler on older CUDA GPUs, else fp32)"),
        "channels_last": dict(action=argparse.BooleanOptionalAction,
                              help="memory layout (default: channels-last where measured faster for the norm on "
                                   "this kind of device, hardware.CHANNELS_LAST)"),
    })
    p.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="same as --amp off")
    return p.parse_args(argv)


def add_config_flags(p, config_class, skip=(), special=None):
    """One flag per field of the dataclass `config_class` (--batch-size for batch_size), default None so that main
    can tell a flag given from one left out; `special` holds argparse options for fields that need more than a type."""
    for f in fields(config_class):
        if f.name in skip:
            continue
        options = (special or {}).get(f.name) or (
            dict(action=argparse.BooleanOptionalAction) if isinstance(f.default, bool) else dict(type=type(f.default)))
        p.add_argument("--" + f.name.replace("_", "-"), default=None, **{"help": f"(default {f.default})", **options})


def _count(text):
    """A whole number of 0 or more (argparse names the flag in its message)."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected 0 or more, got {value}")
    return value


def _positive(text):
    value = _count(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected 1 or more, got {value}")
    return value


def _widths(text):
    try:
        widths = tuple(_positive(w) for w in text.split(","))
    except argparse.ArgumentTypeError:
        widths = ()
    if len(widths) != 6:
        raise argparse.ArgumentTypeError(f"--widths takes 6 comma-separated channel counts of 1 or more, got {text!r}")
    return widths


def main(argv=None):
    args = parse_args(argv)
    if args.report:
        saved = results.load_results(args.out or ROOT)
        write_comparison(args.out or ROOT, saved, {n: results.load_history(args.out or ROOT, r) for n, r in saved.items()})
        print(f"README.md and images/comparison.png drawn again from {', '.join(f'results/{n}.json' for n in saved)}")
        return 0
    norms = NORMS if args.norm.lower() == "all" else (canonical_norm(args.norm),)
    args.seeds = args.seeds or ([0] if args.validation or args.dry_run else [0, 1, 2])
    if args.dry_run:
        args.epochs = 1
    if args.subset and args.subset // 5 < MIN_TEST_IMAGES:
        raise ValueError(f"--subset {args.subset} keeps {args.subset // 5} test images (one for every five training "
                         f"images), too few to score a run; use --subset {5 * MIN_TEST_IMAGES} or more")
    # Every setting is checked here, once, as its config is made (the configs check themselves),
    # before any data is loaded.
    given = {k: getattr(args, k) for k in vars(recipes.TrainConfig()) if k != "seed" and getattr(args, k) is not None}
    model_given = {f.name: getattr(args, f.name) for f in fields(ModelConfig)
                   if f.name not in ("norm", "num_classes") and getattr(args, f.name) is not None}
    model_configs = {norm: ModelConfig(norm=norm, **model_given) for norm in norms}
    asked = {norm: [recipes.recipe(norm, **given, seed=seed) for seed in args.seeds] for norm in norms}
    out = Path(args.out) if args.out else ROOT
    if args.dry_run and not args.out:  # a one-epoch check must not replace the results of a full run
        out = Path(tempfile.mkdtemp(prefix="s8-dry-run-"))
        print(f"dry run: writing to {out}")
    ensure_writable(out)
    device = pick_device(args.device)
    # The precision depends on the device and the norm alone: chosen once per norm and passed down.
    precisions = {norm: choose_precision(device, norm, asked[norm][0].amp, asked[norm][0].channels_last) for norm in norms}

    data = load_cifar10(args.data, cache_dir=args.cache)
    if args.validation:
        if args.validation >= len(data.train_labels):
            raise ValueError(f"--validation {args.validation} would hold out every one of the {len(data.train_labels):,} "
                             f"training images; use fewer (5000 is the record's)")
        data = data.validation_split(args.validation, seed=0)  # the same held-out images for every run
    if args.dry_run and not args.subset:
        args.subset = min(512, len(data.train_labels))
    if args.subset:
        if args.subset > len(data.train_labels):
            raise ValueError(f"--subset {args.subset} is more than the {len(data.train_labels):,} training images; "
                             f"use 1 to {len(data.train_labels)}, or 0 for all of them")
        data = data.subset(args.subset, seed=args.seeds[0])
    if len(data.test_labels) < MIN_TEST_IMAGES:
        raise ValueError(f"{len(data.test_labels)} test images cannot score a run (one a class at least); "
                         "use a data source with more test images")
    print(f"data: {data.source}: {len(data.train_labels)} train, {len(data.test_labels)} test images; "
          f"device: {describe_device(device)}; torch {torch.__version__}")

    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    published, stage, summaries, histories = [], None, {}, {}
    try:
        for norm in norms:
            if args.validation:
                for cfg in asked[norm]:
                    run = results.run_one(model_configs[norm], cfg, data, precisions[norm], device, progress=not args.quiet)
                    defaults = {**vars(recipes.recipe(norm)), **ModelConfig(norm=norm).to_dict()}
                    changed = results.changed_settings({**vars(cfg), **model_configs[norm].to_dict()}, defaults)
                    results.write_validation(out, {**run["record"], "run_id": run_id, "tag": args.tag, "changed": changed})
                continue
            # A norm's seeds are written apart and moved into place together once all have finished,
            # so an interrupted run never leaves its files mixed with an earlier run's.
            stage = out / INCOMPLETE / f"{run_id}-{norm}"
            runs = []
            for cfg in asked[norm]:
                run = results.run_one(model_configs[norm], cfg, data, precisions[norm], device, progress=not args.quiet)
                run["record"]["run_id"] = run["checkpoint"]["run_id"] = run_id
                save_seed(stage, run, data.classes, first=not runs)
                runs.append(run["record"])
            summaries[norm] = results.summarize_seeds(runs)
            histories[norm] = runs[0]["history"]
            write_json(results.seed_path(stage, norm), summaries[norm])
            publish(stage, out)
            published.append(LABELS[norm])
        if len(norms) == len(NORMS) and not args.validation:
            write_comparison(out, summaries, histories)
    except KeyboardInterrupt:
        unfinished = f"; the unfinished norm's finished seeds, if any, are in {stage}" if stage and stage.exists() else ""
        print(f"run.py: interrupted; saved by this run: {', '.join(published) or 'nothing'} (in {out}); "
              f"earlier results left as they were{unfinished}", file=sys.stderr)
        return 130
    return 0


INCOMPLETE = ".incomplete"  # under --out: the files of a norm whose seeds have not all finished


def publish(stage, out):
    """Move every file of `stage` to the same place under `out`, the summary JSON last; then remove `stage`."""
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    for file in sorted(files, key=lambda p: p.parent.name == "results" and "_seed" not in p.name):  # summaries last
        target = out / file.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
    shutil.rmtree(stage)
    if not any(stage.parent.iterdir()):
        stage.parent.rmdir()


def save_seed(out, run, classes, first):
    """One seed's JSON; the first seed also gives the checkpoint and the figures."""
    record = run["record"]
    path = write_json(results.seed_path(out, record["norm"], record["seed"]), record)
    norm = record["norm"]
    if first:
        torch_save(run["checkpoint"], out / "checkpoints" / f"{norm}.pt")
        title = f"{LABELS[norm]}, seed {record['seed']}: final test accuracy {record['final_test_accuracy']:.2f}%"
        save_figure(plots.plot_curves(record["history"], title), out / "images" / f"{NORM_TYPES[norm].short}_curves.png")
        save_figure(plots.plot_incorrect_predictions(run["mistakes"], classes, model=record["model"]),
                    out / "images" / f"{NORM_TYPES[norm].short}_misclassified.png")
    print(f"{LABELS[norm]} seed {record['seed']}: train {record['final_train_accuracy']:.2f}%, "
          f"test {record['final_test_accuracy']:.2f}%, {record['seconds_per_epoch']:.1f} s/epoch "
          f"(results/{path.name}, written when all seeds have finished)")


def write_comparison(out, saved, histories):
    """images/comparison.png from `histories` ({norm: history}), README.md's table and comparison from `saved`."""
    fig = plots.plot_comparison(histories)
    seeds = sorted({r["seeds"][0] for r in saved.values()})
    fig.axes[0].set_title(f"Test accuracy by normalization (seed {', '.join(map(str, seeds))} of each)")
    save_figure(fig, Path(out) / "images" / "comparison.png")
    results.update_readme(out, saved)


if __name__ == "__main__":
    warnings.formatwarning = lambda message, *rest, **kw: f"run.py: warning: {message}\n"
    warnings.simplefilter("once")  # each warning once, wherever it is raised from
    try:
        sys.exit(main())
    except (ValueError, FloatingPointError) as err:  # bad input or a diverged run: the message says what to do
        sys.exit(f"run.py: error: {err}")
    except KeyboardInterrupt:  # before training began (main reports one that stops training itself)
        sys.exit("run.py: interrupted before training began; nothing was written")
