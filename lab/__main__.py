"""Train the runs a lesson's experiment needs that no saved record answers, measure, and write its figure and its
sections of docs/lessons.md and README.md. See docs/development.md#running-it and docs/lessons.md."""

import argparse
import sys
from dataclasses import fields

from atomic import ensure_writable
from data import add_source_flags
from lab.experiments import EXPERIMENTS, ROOT, Lab, Plan, check_sections, publish


def parse_args(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab", description=__doc__)
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
            "seeds", "multipliers", "ghost_batches") else int(value)
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
        check_sections(lab.out, name)
    for name in names:
        print(f"\n=== {name} ===", flush=True)
        for run in EXPERIMENTS[name].runs(lab.plan):  # those no saved record answers are trained now
            lab.ensure(run)
        EXPERIMENTS[name].measure(lab)
        print(publish(lab.out, name), flush=True)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except ValueError as err:
        sys.exit(f"python -m lab: error: {err}")
    except KeyboardInterrupt:
        sys.exit("python -m lab: interrupted; every finished run is saved under results/ and is kept next time")
