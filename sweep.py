"""The batch-size experiment: what each norm does when the batch gets small.

    python sweep.py --data ../shared/data/cifar10-jpg.tar.gz

BatchNorm normalizes with statistics of the batch, LayerNorm and GroupNorm with statistics of
each image; Wu and He (Group Normalization, 2018) found BatchNorm's error rising steeply below 16
images per batch while GroupNorm's stayed flat. This trains the three norms at batch sizes 2 to
128 with the learning rate scaled linearly with the batch (as they did: lr = 0.05 x batch / 128;
SGD's rate, while Muon's, in a recipe that has it, stays as it is), the same number of epochs and
the same seeded subset of the data at every batch size, two seeds a point, and writes
    results/sweep/<norm>-bs<B>-seed<k>.json     one run each, naming its recipe (a run already there is
                                               kept: resumable; points of today's recipe are not added
                                               to a norm's runs of another)
    results/sweep/batchnorm_gap.json           BatchNorm's train/eval gap (below)
    images/batch_size.png                      test accuracy against batch size
    docs/lessons.md, between the batch-size markers  the numbers
BatchNorm's train/eval gap: the trained BatchNorm model of run.py (checkpoints/bn.pt) tested with
its running statistics (eval mode) and with the statistics of test batches of 2, 8, 32 and 128
images (train mode); then the same for the sweep's BatchNorm model trained with batches of 2.
"""

import argparse
import copy
import sys
from pathlib import Path

import torch

import plots
import results
import utils
from atomic import save_figure, torch_save
from data import load_cifar10, normalize
from models import S8_model, checkpoint, load_checkpoint
from results import GAP_BATCHES, LABELS, NORMS, batchnorm_gap_table, load_sweep, mean_and_range

ROOT = Path(__file__).resolve().parent
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128)
SEEDS = (0, 1)
BASE_LR, BASE_BATCH = 0.05, 128  # the recipe's peak learning rate at its batch size
SECTION = "batch-size"  # the generated section of docs/lessons.md that holds the numbers


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data", help="CIFAR-10 source (see run.py --help)")
    p.add_argument("--cache", default=None, help="folder for decoded images (default: .cache/ beside this file)")
    p.add_argument("--out", default=str(ROOT), help="where results/sweep/, images/ and docs/lessons.md are (default: here)")
    p.add_argument("--subset", type=int, default=4000, help="training images, the same seeded ones at every point")
    p.add_argument("--test", type=int, default=2000, help="test images each run is scored on")
    p.add_argument("--epochs", type=int, default=6)
    p.add_argument("--norms", default=",".join(NORMS))
    p.add_argument("--batch-sizes", default=",".join(map(str, BATCH_SIZES)))
    p.add_argument("--seeds", default=",".join(map(str, SEEDS)))
    p.add_argument("--amp", default="auto", help="auto | bf16 | fp16 | off (default auto)")
    p.add_argument("--device", default=None)
    args = p.parse_args(argv)
    for name in ("subset", "test", "epochs"):
        if getattr(args, name) < 1:
            p.error(f"--{name} must be at least 1, got {getattr(args, name)}")
    try:
        args.norms = [n.strip() for n in args.norms.split(",")]
        args.batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
        args.seeds = [int(s) for s in args.seeds.split(",")]
    except ValueError as err:
        p.error(f"--batch-sizes and --seeds take comma-separated whole numbers ({err})")
    if min(args.batch_sizes) < 2:
        p.error("--batch-sizes must be 2 or more: BatchNorm needs two images to take a batch's statistics")
    return args


def recipe_of(cfg, conv):
    """What trains a point, in words (its optimizer, momentum, weight decay and convs), as each run
    records it: points of one norm trained with different recipes do not belong in one figure."""
    if cfg.optimizer == "muon":
        rule = (f"Muon (peak {cfg.muon_lr}, momentum {cfg.muon_momentum}) on the conv kernels and SGD with "
                f"Nesterov momentum {cfg.momentum} on the rest")
    else:
        rule = f"SGD with Nesterov momentum {cfg.momentum}"
    return f"{rule}, weight decay {cfg.weight_decay:g} on the conv kernels, {conv} 3x3 convs"


def todays_recipe(norm):
    """recipe_of what sweep.py would train `norm` with now (the rate, scaled with the batch, aside)."""
    return recipe_of(utils.recipe(norm), S8_model(norm).config.conv)


def check_recorded_recipes(runs, norms, missing):
    """Refuse, before training, to add points of today's recipe to a norm whose recorded points were
    trained with another: the figure would mix two recipes."""
    for norm in norms:
        recorded = {r.get("recipe", "not recorded") for r in runs if r["norm"] == norm}
        today = todays_recipe(norm)
        if norm in missing and recorded - {today}:
            raise ValueError(f"results/sweep/ holds {LABELS[norm]} runs trained with {sorted(recorded - {today})[0]}, "
                             f"but the missing points would train with {today}; move results/sweep/{norm}-bs*.json "
                             "away to re-run them all, or pass --norms without it")


def train_point(norm, batch_size, seed, data, args, device):
    """Train one (norm, batch size, seed) point; returns its result and the trained model."""
    cfg = utils.recipe(norm, epochs=args.epochs, batch_size=batch_size, lr=BASE_LR * batch_size / BASE_BATCH,
                       seed=seed, amp=args.amp)
    torch.manual_seed(seed)
    model = S8_model(norm)
    cfg, precision = utils.resolve_precision(cfg, device, norm)
    history = utils.fit(model, data, cfg, device, precision, progress=False, log=lambda line: None)
    result = dict(norm=norm, batch_size=batch_size, seed=seed, lr=cfg.lr, recipe=recipe_of(cfg, model.config.conv),
                  epochs=cfg.epochs,
                  train_images=len(data.train_labels), test_images=len(data.test_labels), data=data.source,
                  device=utils.describe_device(device), precision=precision.describe(),
                  final_test_accuracy=round(history[-1]["test_acc"], 2),
                  final_train_accuracy=round(history[-1]["train_acc"], 2),
                  seconds=round(sum(r["seconds"] for r in history), 1))
    return result, model


@torch.no_grad()
def accuracy_with_batch_statistics(model, data, batch_size, seed=0):
    """Test accuracy with BatchNorm in train mode: each test batch of `batch_size` images (in a
    seeded random order, since the test set is stored class by class) normalized with its own
    statistics. The running statistics are left as they were (momentum 0)."""
    probe = copy.deepcopy(model).train()
    for m in probe.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.momentum = 0.0
    order = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    correct = seen = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) < 2:  # a lone last image has no batch statistics to speak of
            continue
        x = normalize(data.test_images[idx].to(device), data.mean.to(device), data.std.to(device))
        correct += (probe(x).argmax(1).cpu() == data.test_labels[idx]).sum().item()
        seen += len(idx)
    return 100.0 * correct / seen


def batchnorm_gap(model, data):
    """{'eval': accuracy with the running statistics, 'train_bs<B>': with batch statistics}."""
    row = {"eval": round(utils.score(model, data).accuracy, 2)}  # fp32
    for b in GAP_BATCHES:
        row[f"train_bs{b}"] = round(accuracy_with_batch_statistics(model, data, b), 2)
    return row


def recipes_line(runs):
    """Which recipe trained the runs of each norm, and whether it is the one sweep.py trains with now."""
    by_recipe = {}
    for r in runs:
        by_recipe.setdefault(r.get("recipe", "a recipe not recorded"), []).append(r["norm"])
    parts = []
    for recipe, norms in by_recipe.items():
        names = [LABELS[n] for n in NORMS if n in norms]
        parts.append(f"trained with {recipe}" if len(by_recipe) == 1 else f"{', '.join(names)} trained with {recipe}")
    earlier = [LABELS[n] for n in NORMS if any(r["norm"] == n and r.get("recipe") != todays_recipe(n) for r in runs)]
    if earlier:
        parts.append(f"not today's recipe for {', '.join(earlier)} (`utils.recipe`; `python sweep.py` keeps the runs "
                     "recorded, so move results/sweep/ away to train them with today's)")
    return "; ".join(parts)


def lessons_section(runs, table, gap, out):
    first = runs[0]
    seeds = sorted({r["seed"] for r in runs})
    sizes = sorted({r["batch_size"] for r in runs})
    lines = [f"{first['train_images']:,} training images (the same seeded subset at every point), "
             f"{first['epochs']} epochs, scored on {first['test_images']:,} test images; "
             f"learning rate 0.05 x batch / 128; seeds {', '.join(map(str, seeds))}; {first['data']}; "
             f"{first['device']}, {first['precision']}; {recipes_line(runs)}. "
             "Test accuracy, mean of the seeds (lowest-highest):", "",
             "| norm | " + " | ".join(f"batch {b}" for b in sizes) + " |",
             "|---|" + "---:|" * len(sizes)]
    for norm in (n for n in NORMS if n in table):
        cells = []
        for b in sizes:
            accs = table[norm].get(b)
            cells.append("{:.1f} ({:.1f}-{:.1f})".format(*mean_and_range(accs)) if accs else "-")
        lines.append(f"| {LABELS[norm]} | " + " | ".join(cells) + " |")
    if gap:
        lines += ["", "BatchNorm's train/eval gap: test accuracy on the 10,000 test images with the running "
                  "statistics (eval mode) and with each test batch's own statistics (train mode):", "",
                  batchnorm_gap_table(out)]
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    out = Path(args.out)
    missing = {norm for norm in args.norms for b in args.batch_sizes for seed in args.seeds
               if not results.sweep_path(out, norm, b, seed).is_file()}
    check_recorded_recipes(load_sweep(out)[0], args.norms, missing)
    device = utils.pick_device(args.device)
    full = load_cifar10(args.data, cache_dir=args.cache)
    data = full.subset(args.subset, args.test, seed=0)
    print(f"sweep: {data.source}, {args.epochs} epochs, on {utils.describe_device(device)}", flush=True)
    for norm in args.norms:
        for batch_size in args.batch_sizes:
            for seed in args.seeds:
                if results.sweep_path(out, norm, batch_size, seed).is_file():
                    continue
                result, model = train_point(norm, batch_size, seed, data, args, device)
                path = results.write_sweep_run(out, result)
                if norm == "bn" and batch_size == min(args.batch_sizes) and seed == args.seeds[0]:
                    torch_save(checkpoint(model, classes=list(data.classes)), path.with_suffix(".pt"))
                print(f"{LABELS[norm]:9s} batch {batch_size:3d} seed {seed}: test {result['final_test_accuracy']:.2f}% "
                      f"({result['seconds']:.0f} s)", flush=True)
    gap = {}
    if (out / "checkpoints" / "bn.pt").is_file():
        model, _ = load_checkpoint(out / "checkpoints" / "bn.pt", norm="bn")
        gap["run.py's (batch 128, all data, 20 epochs)"] = batchnorm_gap(model, full)
    small = sorted((out / "results" / "sweep").glob("bn-bs*-seed*.pt"))
    if small:
        model, _ = load_checkpoint(small[0], norm="bn")
        gap[f"the sweep's, trained with batches of {small[0].name.split('-bs')[1].split('-')[0]}"] = batchnorm_gap(model, full)
    results.write_batchnorm_gap(out, gap)
    runs, table = load_sweep(out)
    caption = (f"{runs[0]['train_images']:,} training images, {runs[0]['epochs']} epochs, lr = 0.05 x batch/128, "
               f"seeds {', '.join(map(str, sorted({r['seed'] for r in runs})))}; {runs[0]['data']}; {runs[0]['device']}")
    save_figure(plots.plot_batch_size(table, LABELS, caption), out / "images" / "batch_size.png")
    section = lessons_section(runs, table, gap, out)
    results.write_section(out / "docs" / "lessons.md", SECTION, section)
    print(section)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:  # bad input: the message says what to do
        sys.exit(f"sweep.py: error: {err}")
