"""The lessons' experiments, one command each (lab/experiments.py holds them):

    python -m lab EXPERIMENT --data ../shared/data/cifar10-jpg.tar.gz

trains the runs EXPERIMENT needs that no saved record answers (a record is reused only when its
model, training settings and data match; the command names each one it trains again), takes its
measurements, and writes its figure under images/, its section of docs/lessons.md and README.md's
lessons section. An interrupted command keeps every finished run and picks up where it stopped.
`--check` lists the runs that would be trained and trains and writes nothing. EXPERIMENT is one of:
    batch-size    each suite norm at batch sizes 2 to 128 (SGD's rate scaled with the batch), and
                  BatchNorm's train/eval gap
    lr            the five norms at the recipe's rates times 1/4, 1, 4 and 16 (screening size)
    skips         BatchNorm, LayerNorm, GroupNorm and no norm with and without the two skips, at full
                  length, and each layer's gradient norm
    activations   what enters each C block's ReLU, through the first epoch and at the end
    batch-of-one  each norm's prediction for an image alone against inside a batch of 128
    fold          BatchNorm folded into the convs before it (checkpoints/bn.pt)
    layernorms    GroupNorm(1, C) against LayerNorm over the channels of each pixel
    groups        GroupNorm from one channel per group to one group (LayerNorm)
    placement     the norm before or after the ReLU, from the validation record (no training)
    all           every one of them, in this order
"""

import argparse
import sys
from dataclasses import fields

from atomic import ensure_writable
from data import add_source_flags
from lab import experiments
from lab.experiments import EXPERIMENTS, ROOT, Lab, Plan


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("experiment", choices=(*EXPERIMENTS, "all"))
    add_source_flags(p)
    p.add_argument("--out", default=str(ROOT), help="where results/, images/ and the docs are (default: here)")
    p.add_argument("--amp", default="auto", choices=("auto", "bf16", "fp16", "off"),
                   help="mixed precision of the runs trained now (saved runs of another precision are reused)")
    p.add_argument("--check", action="store_true", help="list the runs that would be trained, and train nothing")
    # A smaller plan through the same code, for the tests: --plan seeds=0 multipliers=1,4 screen_images=40
    p.add_argument("--plan", nargs="*", default=[], metavar="FIELD=VALUE", help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    sizes = {}
    for item in args.plan:
        name, _, value = item.partition("=")
        if name not in {f.name for f in fields(Plan)}:
            p.error(f"--plan: no plan field {name!r}")
        sizes[name] = tuple(float(v) if "." in v else int(v) for v in value.split(",")) if name in (
            "seeds", "multipliers", "batch_sizes") else int(value)
    args.plan = Plan(**sizes)
    return args


def main(argv=None):
    args = parse_args(argv)
    lab = Lab(args.out, args.data, args.cache, args.device, args.amp, args.plan, log=lambda line: print(line, flush=True))
    names = list(EXPERIMENTS) if args.experiment == "all" else [args.experiment]
    if args.check:
        stale = dict.fromkeys(f"{run.folder}/{run.name}" for name in names for run in EXPERIMENTS[name].runs(lab.plan)
                              if lab.answered(run, say=False, copy=False) is None)
        print("\n".join(stale) or "nothing to train: every run is on disk with matching settings")
        return 0
    ensure_writable(args.out)
    for name in names:  # a missing marker is refused before hours of training, not after
        experiments.check_sections(lab.out, name)
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        experiments.measure(lab, name)
        print(experiments.publish(lab.out, name), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:
        sys.exit(f"python -m lab: error: {err}")
    except KeyboardInterrupt:
        sys.exit("python -m lab: interrupted; every finished run is saved under results/ and is kept next time")
