"""Train the S8 models and write their results, checkpoints and figures.

    python run.py --norm all --epochs 20 --data ../shared/data/cifar10-jpg.tar.gz

writes, under --out (default: this folder), for each norm:
    results/<norm>.json, checkpoints/<norm>.pt, images/<NORM>_curves.png, images/<NORM>_misclassified.png
and with --norm all also images/comparison.png and the results table in README.md.
"""

import argparse
import copy
import json
import os
import platform
import sys
from pathlib import Path

import torch

import utils
from data import load_cifar10, atomic_torch_save
from models import S8_model, canonical_norm, count_parameters

NORMS = ("bn", "ln", "gn")
NAMES = {"bn": "Model_Batch_Normalization", "ln": "Model_Layer_Normalization", "gn": "Model_Group_Normalization"}
LABELS = {"bn": "BatchNorm", "ln": "LayerNorm", "gn": "GroupNorm"}
TABLE_START, TABLE_END = "<!-- results-table:start -->", "<!-- results-table:end -->"


def parse_args(argv=None):
    defaults = utils.TrainConfig()
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--norm", default="all", help="bn | ln | gn (or batch | layer | group) | all")
    p.add_argument("--data", default="data", help="CIFAR-10 source: a folder (downloaded into if empty), "
                   "a cifar-10-batches-py folder, an image-folder tree, or a .tar.gz of one")
    p.add_argument("--out", default=str(Path(__file__).resolve().parent), help="where results/, checkpoints/, images/ go")
    p.add_argument("--cache", default=None, help="folder for decoded images (default: .cache/ beside this file)")
    p.add_argument("--subset", type=int, default=0, help="train on N random training images (and N/5 test) for a quick run")
    p.add_argument("--device", default=None, help="cuda | mps | cpu (default: the first available)")
    p.add_argument("--dry-run", action="store_true", help="one epoch on 512 images: checks the whole pipeline")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    for name, value in vars(defaults).items():  # every training setting can be overridden
        flag = "--" + name.replace("_", "-")
        if isinstance(value, bool):
            p.add_argument(flag, action=argparse.BooleanOptionalAction, default=value)
        else:
            p.add_argument(flag, type=type(value), default=value)
    return p.parse_args(argv)


def main(argv=None):
    args = parse_args(argv)
    norms = NORMS if args.norm.lower() == "all" else (canonical_norm(args.norm),)
    if args.dry_run:
        args.epochs, args.subset = 1, args.subset or 512
    cfg = utils.TrainConfig(**{k: getattr(args, k) for k in vars(utils.TrainConfig())})
    out = Path(args.out)
    device = utils.pick_device(args.device)

    data = load_cifar10(args.data, cache_dir=args.cache)
    if args.subset:
        data = data.subset(args.subset, seed=args.seed)
    print(f"data: {data.source}: {len(data.train_labels)} train, {len(data.test_labels)} test images; "
          f"device: {utils.describe_device(device)}; torch {torch.__version__}")

    for norm in norms:
        result = run_one(norm, data, cfg, device, quiet=args.quiet)
        save_outputs(out, norm, result, data.classes)
    if len(norms) == len(NORMS):
        save_comparison(out)
        update_readme(out)
    return 0


def run_one(norm, data, cfg, device, quiet=False):
    torch.manual_seed(cfg.seed)
    model = S8_model(norm)
    print(f"\n=== {NAMES[norm]} ({LABELS[norm]}) ===")
    summarize(model, device)
    history = utils.fit(model, data, cfg, device, progress=not quiet)
    mistakes = utils.get_incorrect_predictions(model, data, device, cfg)
    result = {
        "norm": norm,
        "model": NAMES[norm],
        "parameters": count_parameters(model),
        "epochs": cfg.epochs,
        "seed": cfg.seed,
        "final_train_accuracy": history[-1]["train_acc"],
        "final_test_accuracy": history[-1]["test_acc"],
        "seconds_per_epoch": sum(r["seconds"] for r in history) / len(history),
        "device": utils.describe_device(device),
        "cpu": platform.processor() or platform.machine(),
        "torch": torch.__version__,
        "data": data.source,
        "train_images": len(data.train_labels),
        "test_images": len(data.test_labels),
        "config": utils.config_dict(cfg),
        "history": history,
    }
    checkpoint = {"model": model.state_dict(), "norm": norm, "config": utils.config_dict(cfg),
                  "mean": data.mean.cpu(), "std": data.std.cpu()}
    return {"result": result, "checkpoint": checkpoint, "model": model, "mistakes": mistakes}


def summarize(model, device):
    from torchsummary import summary

    # torchsummary runs a forward pass in train mode, which would move BatchNorm's running
    # statistics: summarize a copy. It knows only 'cuda' and 'cpu'.
    summary_device = "cuda" if device.type == "cuda" else "cpu"
    summary(copy.deepcopy(model).to(summary_device), (3, 32, 32), device=summary_device)


def save_outputs(out, norm, run, classes):
    result = run["result"]
    write_json(out / "results" / f"{norm}.json", result)
    atomic_torch_save(run["checkpoint"], _mkparent(out / "checkpoints" / f"{norm}.pt"))
    title = f"{LABELS[norm]}: final test accuracy {result['final_test_accuracy']:.2f}%"
    save_figure(utils.plot_curves(result["history"], title), out / "images" / f"{norm.upper()}_curves.png")
    save_figure(utils.plot_incorrect_predictions(run["mistakes"], classes),
                out / "images" / f"{norm.upper()}_misclassified.png")
    print(f"{LABELS[norm]}: train {result['final_train_accuracy']:.2f}%, test {result['final_test_accuracy']:.2f}%, "
          f"{result['seconds_per_epoch']:.1f} s/epoch -> {out / 'results' / (norm + '.json')}")


def load_checkpoint(path, device="cpu"):
    """A trained model from checkpoints/<norm>.pt (loaded with weights_only=True)."""
    ckpt = torch.load(path, map_location=device, weights_only=True)
    model = S8_model(ckpt["norm"])
    model.load_state_dict(ckpt["model"])
    return model, ckpt


def load_results(out):
    results = {}
    for norm in NORMS:
        path = Path(out) / "results" / f"{norm}.json"
        if path.is_file():
            results[norm] = json.loads(path.read_text())
    return results


def save_comparison(out):
    results = load_results(out)
    fig = utils.plot_comparison({LABELS[n]: r["history"] for n, r in results.items()})
    save_figure(fig, Path(out) / "images" / "comparison.png")


def results_table(results):
    lines = [
        "| model | norm | parameters | epochs | seed | train acc | test acc | s/epoch | data | device |",
        "|---|---|---:|---:|---:|---:|---:|---:|---|---|",
    ]
    for norm, r in results.items():
        lines.append(
            f"| `{r['model']}` | {LABELS[norm]} | {r['parameters']:,} | {r['epochs']} | {r['seed']} | "
            f"{r['final_train_accuracy']:.2f}% | **{r['final_test_accuracy']:.2f}%** | "
            f"{r['seconds_per_epoch']:.1f} | {r['data']} | {r['device']} |"
        )
    return "\n".join(lines)


def update_readme(out):
    """Rewrite the table between the marker comments of <out>/README.md from results/*.json."""
    readme = Path(out) / "README.md"
    if not readme.is_file():
        return
    text = readme.read_text()
    if TABLE_START not in text or TABLE_END not in text:
        print(f"note: {readme} has no {TABLE_START} ... {TABLE_END} markers; table not written", file=sys.stderr)
        return
    head, rest = text.split(TABLE_START, 1)
    _, tail = rest.split(TABLE_END, 1)
    table = results_table(load_results(out))
    atomic_write_text(readme, f"{head}{TABLE_START}\n{table}\n{TABLE_END}{tail}")


def _mkparent(path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    return path


def _tmp(path):
    return path.with_name(f".{path.name}.tmp{os.getpid()}")


def atomic_write_text(path, text):
    path = _mkparent(path)
    tmp = _tmp(path)
    tmp.write_text(text)
    os.replace(tmp, path)


def write_json(path, obj):
    atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def save_figure(fig, path):
    path = _mkparent(path)
    tmp = _tmp(path)
    fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None})  # no version stamp: same run, same bytes
    os.replace(tmp, path)


if __name__ == "__main__":
    sys.exit(main())
