"""Train the S8 models and write their results, checkpoints and figures.

    python run.py --norm all --epochs 20 --data ../shared/data/cifar10-jpg.tar.gz

trains each norm once per seed (--seeds, default 0 1 2) and writes, under --out (default:
this folder), for each norm:
    results/<norm>_seed<k>.json   every seed's history and final accuracies
    results/<norm>.json           the first seed's run, plus mean and spread over the seeds
    checkpoints/<norm>.pt, images/<NORM>_curves.png, images/<NORM>_misclassified.png  (first seed)
and with --norm all also images/comparison.png and the generated parts of README.md.
"""

import argparse
import os
import secrets
import shutil
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path

import torch

import utils
from data import load_cifar10
from hardware import AMP_CHOICES
from models import (DEFAULT_GROUPS, DEFAULT_ORDERS, DEFAULT_SKIPS, DEFAULT_WIDTHS, ORDERS, SKIPS, S8_model, canonical_norm,
                    count_parameters, fingerprint)
from results import (LABELS, NAMES, NORMS, atomic_torch_save, load_results, save_figure, update_readme,
                     changed_settings, write_json, write_validation_record)


def parse_args(argv=None):
    defaults = utils.TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--norm", default="all", help="bn | ln | gn (or batch | layer | group) | all")
    p.add_argument("--data", default="data", help="CIFAR-10 source: a folder (downloaded into if empty), "
                   "a cifar-10-batches-py folder, an image-folder tree, or a .tar.gz of one")
    p.add_argument("--out", default=None, help="where results/, checkpoints/, images/ go (default: this folder; "
                   "for --dry-run a new temporary folder, so the saved results stay)")
    p.add_argument("--cache", default=None, help="folder for decoded images (default: .cache/ beside this file)")
    p.add_argument("--subset", type=_count, default=0, metavar="N",
                   help="train on N random training images (and N/5 test) for a quick run; 0 (default): all")
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: the first available)")
    p.add_argument("--dry-run", action="store_true", help="one epoch on 512 images: checks the whole pipeline")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--validation", type=_count, default=0, metavar="N",
                   help="hold out N seeded training images and evaluate on them instead of the test set "
                        "(for choosing settings); writes only results/validation/<tag>-<norm>.json")
    p.add_argument("--tag", default="default", help="name of a validation run")
    p.add_argument("--widths", type=_widths, default=DEFAULT_WIDTHS,
                   help="channels after C1,C2,c3,C3-C5,c6,C7-C9 (default %(default)s)")
    p.add_argument("--groups", type=_positive, default=DEFAULT_GROUPS, help="GroupNorm groups (default %(default)s)")
    p.add_argument("--dropout", type=float, default=0.0)
    p.add_argument("--skips", choices=SKIPS, default=DEFAULT_SKIPS,
                   help="skips over two blocks per stage, or over each of the last two (default %(default)s)")
    p.add_argument("--order", choices=ORDERS, default=None,
                   help="where the norm sits in each C block: before or after the ReLU "
                        "(default: the norm's own, models.DEFAULT_ORDERS)")
    p.add_argument("--seeds", type=_count, nargs="+", default=None,
                   help="one run per seed (default 0 1 2; 0 alone for --validation and --dry-run)")
    p.add_argument("--seed", type=lambda text: [_count(text)], dest="seeds", help="a single seed: same as --seeds N")
    # Every training setting can be overridden; one left out takes the norm's recipe
    # (utils.recipe: TrainConfig's default unless utils.RECIPES says otherwise).
    for name, value in vars(defaults).items():
        flag = "--" + name.replace("_", "-")
        if name == "seed":
            continue
        if name == "amp":
            p.add_argument(flag, choices=AMP_CHOICES, default=None,
                           help="mixed precision (default auto: bf16 where the hardware has it natively, "
                                "fp16 with a GradScaler on older CUDA GPUs, else fp32)")
            p.add_argument("--no-amp", dest="amp", action="store_const", const="off", help="same as --amp off")
        elif name == "channels_last":
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None,
                           help="memory layout (default: channels-last where measured faster for the norm on this "
                                "kind of device, hardware.CHANNELS_LAST)")
        elif isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=f"(default {value})")
        else:
            p.add_argument(flag, type=type(value), default=None, help=f"(default {value})")
    return p.parse_args(argv)


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
    norms = NORMS if args.norm.lower() == "all" else (canonical_norm(args.norm),)
    args.seeds = args.seeds or ([0] if args.validation or args.dry_run else [0, 1, 2])
    if args.dry_run:
        args.epochs = 1
    given = {k: getattr(args, k) for k in vars(utils.TrainConfig()) if k != "seed" and getattr(args, k) is not None}
    model_options = dict(widths=list(args.widths), groups=args.groups, dropout=args.dropout, skips=args.skips)
    options = {norm: {**model_options, "order": args.order or DEFAULT_ORDERS[norm]} for norm in norms}
    for norm in norms:  # every setting is checked before any data is loaded
        for seed in args.seeds:
            utils.recipe(norm, **given, seed=seed).check()
        S8_model(norm, **options[norm])
    if args.out:
        out = Path(args.out)
    elif args.dry_run:  # a one-epoch check must not replace the results of a full run
        out = Path(tempfile.mkdtemp(prefix="s8-dry-run-"))
        print(f"dry run: writing to {out}")
    else:
        out = Path(__file__).resolve().parent
    ensure_writable(out)
    device = utils.pick_device(args.device)

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
    print(f"data: {data.source}: {len(data.train_labels)} train, {len(data.test_labels)} test images; "
          f"device: {utils.describe_device(device)}; torch {torch.__version__}")

    run_id = f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(2)}"
    published, stage = [], None
    try:
        for norm in norms:
            if args.validation:
                for seed in args.seeds:
                    cfg = utils.recipe(norm, **given, seed=seed)
                    run = run_one(norm, data, cfg, device, options[norm], quiet=args.quiet)
                    save_validation(out, norm, run["result"], cfg, args.tag, options[norm])
                continue
            # A norm's seeds are written apart and moved into place together once all have finished,
            # so an interrupted run never leaves its files mixed with an earlier run's.
            stage = out / INCOMPLETE / f"{run_id}-{norm}"
            runs = []
            for seed in args.seeds:
                run = run_one(norm, data, utils.recipe(norm, **given, seed=seed), device, options[norm], quiet=args.quiet)
                run["result"]["run_id"] = run["checkpoint"]["run_id"] = run_id
                save_seed(stage, norm, run, data.classes, first=not runs)
                runs.append(run["result"])
            write_json(stage / "results" / f"{norm}.json", summarize_seeds(runs))
            publish(stage, out)
            published.append(LABELS[norm])
        if len(norms) == len(NORMS) and not args.validation:
            save_comparison(out)
            update_readme(out)
    except KeyboardInterrupt:
        unfinished = f"; the unfinished norm's finished seeds, if any, are in {stage}" if stage and stage.exists() else ""
        print(f"run.py: interrupted; saved by this run: {', '.join(published) or 'nothing'} (in {out}); "
              f"earlier results left as they were{unfinished}", file=sys.stderr)
        return 130
    return 0


INCOMPLETE = ".incomplete"  # under --out: the files of a norm whose seeds have not all finished


def ensure_writable(out):
    """Create `out` and prove a file can be written there, before any training."""
    try:
        out.mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"--out {out} is not a folder this run can write to ({err.strerror or err}); "
                         f"choose another with --out") from None


def publish(stage, out):
    """Move every file of `stage` to the same place under `out`, the summary JSON last; then remove `stage`."""
    files = sorted(p for p in stage.rglob("*") if p.is_file())
    summaries = [p for p in files if p.parent.name == "results" and "_seed" not in p.name]
    for file in [*(p for p in files if p not in summaries), *summaries]:
        target = out / file.relative_to(stage)
        target.parent.mkdir(parents=True, exist_ok=True)
        os.replace(file, target)
    shutil.rmtree(stage)
    if not any(stage.parent.iterdir()):
        stage.parent.rmdir()


def run_one(norm, data, cfg, device, model_options=None, quiet=False):
    model_options = model_options or {}
    torch.manual_seed(cfg.seed)
    model = S8_model(norm, num_classes=len(data.classes), **model_options)
    print(f"\n=== {NAMES[norm]} ({LABELS[norm]}) ===")
    utils.summarize(model, device)
    history = utils.fit(model, data, cfg, device, progress=not quiet)  # prints the precision it chose, and why
    cfg, precision = utils.resolve_precision(cfg, device, norm)  # recorded as chosen, not as 'auto'
    mistakes = utils.get_incorrect_predictions(model, data, device, cfg)
    _, flip_tta_accuracy = utils.test(model, data, cfg, flip=True)  # reported apart from the headline
    result = {
        "norm": norm,
        "model": NAMES[norm],
        "parameters": count_parameters(model),
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "final_train_accuracy": history[-1]["train_acc"],
        "final_test_accuracy": history[-1]["test_acc"],
        "final_test_accuracy_flip_tta": flip_tta_accuracy,
        "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history),
        "device": utils.describe_device(device),
        "precision": precision.describe(),
        "torch": torch.__version__,
        "data": data.source,
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
        "config": utils.config_dict(cfg),
        "model_options": model_options,
        "history": history,
    }
    model_config = {"norm": norm, "num_classes": len(data.classes), **model_options}  # what S8_model builds it from
    weights = model.state_dict()
    checkpoint = {"model": weights, "model_config": model_config, "fingerprint": fingerprint(model_config, weights),
                  "norm": norm, "classes": list(data.classes), "config": utils.config_dict(cfg),
                  "mean": data.mean.cpu(), "std": data.std.cpu()}
    return {"result": result, "checkpoint": checkpoint, "model": model, "mistakes": mistakes}


def save_seed(out, norm, run, classes, first):
    """One seed's JSON; the first seed also gives the checkpoint and the figures."""
    result = run["result"]
    path = out / "results" / f"{norm}_seed{result['seed']}.json"
    write_json(path, result)
    if first:
        atomic_torch_save(run["checkpoint"], out / "checkpoints" / f"{norm}.pt")
        title = f"{LABELS[norm]}, seed {result['seed']}: final test accuracy {result['final_test_accuracy']:.2f}%"
        save_figure(utils.plot_curves(result["history"], title), out / "images" / f"{norm.upper()}_curves.png")
        save_figure(utils.plot_incorrect_predictions(run["mistakes"], classes),
                    out / "images" / f"{norm.upper()}_misclassified.png")
    print(f"{LABELS[norm]} seed {result['seed']}: train {result['final_train_accuracy']:.2f}%, "
          f"test {result['final_test_accuracy']:.2f}%, {result['seconds_per_epoch']:.1f} s/epoch "
          f"(results/{path.name}, written when all seeds have finished)")


def summarize_seeds(runs):
    """The first seed's result with the final accuracies of every seed, their mean and spread."""
    test = torch.tensor([r["final_test_accuracy"] for r in runs], dtype=torch.float64)
    train = torch.tensor([r["final_train_accuracy"] for r in runs], dtype=torch.float64)
    return {
        **runs[0],
        "seeds": [r["seed"] for r in runs],
        "final_test_accuracy_per_seed": test.tolist(),
        "final_test_accuracy_mean": test.mean().item(),
        "final_test_accuracy_std": test.std().item() if len(runs) > 1 else 0.0,  # sample std (n-1)
        "final_train_accuracy_mean": train.mean().item(),
        "final_test_accuracy_flip_tta_mean": sum(r["final_test_accuracy_flip_tta"] for r in runs) / len(runs),
        "seconds_per_epoch_mean": sum(r["seconds_per_epoch"] for r in runs) / len(runs),
    }


def save_validation(out, norm, result, cfg, tag, model_options):
    """`cfg` as asked for (amp 'auto' stays 'auto'), so that only settings a flag changed count as changed."""
    defaults = {**vars(utils.recipe(norm)), "widths": list(DEFAULT_WIDTHS), "groups": DEFAULT_GROUPS, "dropout": 0.0,
                "order": DEFAULT_ORDERS[norm], "skips": DEFAULT_SKIPS}
    result.update(tag=tag, changed=changed_settings({**vars(cfg), **model_options}, defaults))
    suffix = f"-seed{result['seed']}" if result["seed"] else ""
    write_json(out / "results" / "validation" / f"{tag}-{norm}{suffix}.json", result)
    write_validation_record(out)


def save_comparison(out):
    results = load_results(out)
    fig = utils.plot_comparison({LABELS[n]: r["history"] for n, r in results.items()})
    save_figure(fig, Path(out) / "images" / "comparison.png")


if __name__ == "__main__":
    try:
        sys.exit(main())
    except (ValueError, FloatingPointError) as err:  # bad input or a diverged run: the message says what to do
        sys.exit(f"run.py: error: {err}")
    except KeyboardInterrupt:  # before training began (main reports one that stops training itself)
        sys.exit("run.py: interrupted before training began; nothing was written")
