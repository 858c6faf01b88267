"""Results on disk, written and read here alone, and the generated sections made from them.

results/<norm>_seed<k>.json holds one seed's whole record, its per-epoch history included;
results/<norm>.json is a run's summary: every seed's final numbers (`runs`) and their aggregates.
results/validation/<tag>-<norm>[-seed<k>].json are validation runs (results/validation.md lists
them); results/sweep/ holds the batch-size experiment (sweep.py). The generated sections of
README.md and docs/*.md (between `<!-- name:start -->` and `<!-- name:end -->`) are written by
write_section, the one writer of them.
"""

import json
import sys
from pathlib import Path

import plots
from atomic import save_figure, write_json, write_text
from models import NORM_TYPES, SUITE_NORMS

NORMS = SUITE_NORMS  # the three the suite compares; the lessons' controls are in lessons.py
LABELS = {key: t.label for key, t in NORM_TYPES.items()}

# What a summary keeps of each seed's result, and what the seeds share (taken from the first).
PER_SEED = ("seed", "final_test_accuracy", "final_train_accuracy", "final_test_accuracy_flip_tta", "seconds_per_epoch")
SHARED = ("norm", "model", "parameters", "within_budget", "epochs", "data", "train_images", "test_images", "device",
          "precision", "torch", "model_config", "run_id", "git_commit", "git_dirty")


def percent(x):
    return round(x, 2)


def mean_and_range(values):
    """(mean, lowest, highest) of the seeds' values: the one statistic every comparison here uses."""
    values = list(values)
    return sum(values) / len(values), min(values), max(values)


def differ(a, b):
    """True when two sets of seeds' accuracies differ in their means by more than either's range
    (highest minus lowest): a smaller difference is no difference, and one seed each shows no
    range to judge by."""
    if len(a) < 2 or len(b) < 2:
        return False
    (mean_a, lo_a, hi_a), (mean_b, lo_b, hi_b) = mean_and_range(a), mean_and_range(b)
    return abs(mean_a - mean_b) > max(hi_a - lo_a, hi_b - lo_b)


def seed_path(out, norm, seed):
    return Path(out) / "results" / f"{norm}_seed{seed}.json"


def write_seed(out, result):
    """results/<norm>_seed<k>.json under `out`; returns its path."""
    path = seed_path(out, result["norm"], result["seed"])
    write_json(path, result)
    return path


def summarize_seeds(runs):
    """A norm's summary: each seed's final numbers, their mean and sample standard deviation."""
    test = [r["final_test_accuracy"] for r in runs]
    mean = sum(test) / len(test)
    std = (sum((a - mean) ** 2 for a in test) / (len(test) - 1)) ** 0.5 if len(test) > 1 else 0.0  # sample std (n-1)
    return {
        **{key: runs[0].get(key) for key in SHARED},
        "config": {k: v for k, v in runs[0]["config"].items() if k != "seed"},
        "seeds": [r["seed"] for r in runs],
        "runs": [{key: r[key] for key in PER_SEED} for r in runs],
        "final_test_accuracy_mean": percent(mean),
        "final_test_accuracy_std": percent(std),
        "final_train_accuracy_mean": percent(mean_and_range(r["final_train_accuracy"] for r in runs)[0]),
        "final_test_accuracy_flip_tta_mean": percent(mean_and_range(r["final_test_accuracy_flip_tta"] for r in runs)[0]),
        "seconds_per_epoch_mean": round(mean_and_range(r["seconds_per_epoch"] for r in runs)[0], 2),
    }


def write_summary(out, summary):
    write_json(Path(out) / "results" / f"{summary['norm']}.json", summary)


def load_results(out="."):
    """{norm: summary} for every results/<norm>.json under `out`."""
    results = {}
    for norm in NORMS:
        path = Path(out) / "results" / f"{norm}.json"
        if path.is_file():
            results[norm] = json.loads(path.read_text())
    return results


def load_history(out, summary):
    """The per-epoch history of the summary's first seed (the one its figures and checkpoint show)."""
    return json.loads(seed_path(out, summary["norm"], summary["seeds"][0]).read_text())["history"]


def test_accuracy(r):
    """The headline: mean final test accuracy over the seeds."""
    return r["final_test_accuracy_mean"]


def optimizer_label(config):
    """'SGD', or 'Muon 0.1 + SGD' (Muon's peak rate for the conv kernels, SGD for the rest)."""
    if config.get("optimizer", "sgd") == "muon":  # results written before Muon record no optimizer
        return f"Muon {config['muon_lr']} + SGD"
    return "SGD"


def results_table(results):
    lines = [
        "| model | norm | parameters | epochs | optimizer | seeds | train acc | test acc, mean ± std | test acc per seed "
        "| s/epoch | data | device | separate: with flip TTA |",
        "|---|---|---:|---:|---|---:|---:|---:|---|---:|---|---|---:|",
    ]
    for norm, r in results.items():
        per_seed = ", ".join(f"{run['final_test_accuracy']:.2f}" for run in r["runs"])
        lines.append(
            f"| `{r['model']}` | {LABELS[norm]} | {r['parameters']:,} | {r['epochs']} | {optimizer_label(r['config'])} | "
            f"{', '.join(map(str, r['seeds']))} | {r['final_train_accuracy_mean']:.2f}% | "
            f"**{test_accuracy(r):.2f}% ± {r['final_test_accuracy_std']:.2f}** | "
            f"{per_seed} | "
            f"{r['seconds_per_epoch_mean']:.1f} | {r['data']} | {r['device']} | "
            f"{r['final_test_accuracy_flip_tta_mean']:.2f}% |"
        )
    return "\n".join(lines)


def seed_accuracies(r):
    """A summary's final test accuracy of each seed."""
    return [run["final_test_accuracy"] for run in r["runs"]]


def seed_range(r):
    """Highest minus lowest final test accuracy over a summary's seeds (0 for one seed)."""
    _, low, high = mean_and_range(seed_accuracies(r))
    return high - low


def versus(a, b, label_b):
    """'0.45 points above LayerNorm (80.52%)', or that the gap is within the seeds' range."""
    diff = test_accuracy(a) - test_accuracy(b)
    where = f"{abs(diff):.2f} points {'above' if diff >= 0 else 'below'} {label_b} ({test_accuracy(b):.2f}%)"
    if len(a["runs"]) < 2 or len(b["runs"]) < 2:
        return f"{where}, from one seed: no spread to judge that by"
    if differ(seed_accuracies(a), seed_accuracies(b)):
        optimizers = [optimizer_label(r.get("config", {})) for r in (a, b)]
        return where + ("" if optimizers[0] == optimizers[1] else
                        f", trained with different optimizers ({optimizers[0]} against {optimizers[1]})")
    return (f"no difference from {label_b} ({test_accuracy(b):.2f}%): {where[:where.index(' (')]}, within the "
            f"{max(seed_range(a), seed_range(b)):.2f} points by which seeds of the same norm differ")


def comparison(results):
    """The norms' mean final test accuracies, and which differences exceed the seeds' spread."""
    ranked = sorted(results, key=lambda n: -test_accuracy(results[n]))
    if not ranked:
        return "No results yet: run `python run.py --norm all`."
    lines = [f"- {LABELS[n]}: {test_accuracy(results[n]):.2f}% mean final test accuracy, seeds "
             f"{seed_range(results[n]):.2f} points apart." for n in ranked]
    pairs = [(a, b) for k, a in enumerate(ranked) for b in ranked[k + 1:]]
    real = []
    for a, b in pairs:
        if differ(seed_accuracies(results[a]), seed_accuracies(results[b])):
            optimizers = [optimizer_label(results[n].get("config", {})) for n in (a, b)]
            # a norm trained with another optimizer: the difference is not the norm's alone
            real.append(f"{LABELS[a]} above {LABELS[b]}" + ("" if optimizers[0] == optimizers[1] else
                        f" (trained with different optimizers: {optimizers[0]} against {optimizers[1]})"))
    lines.append("- Differences beyond the seeds' spread: " + (", ".join(real) if real else
                 "none; on these runs the norms are level") + ".")
    if len({r["device"] for r in results.values()}) > 1:  # seconds on different machines do not compare
        lines.append("- Seconds per epoch: " + ", ".join(f"{LABELS[n]} {results[n]['seconds_per_epoch_mean']:.1f} s"
                                                        for n in results) + "; measured on different machines "
                     "(the device column), so not compared.")
    else:
        fastest = min(results, key=lambda n: results[n]['seconds_per_epoch_mean'])
        lines.append(f"- Fastest per epoch: {LABELS[fastest]} ({results[fastest]['seconds_per_epoch_mean']:.1f} s "
                     f"on {results[fastest]['device']}); " + ", ".join(
                         f"{LABELS[n]} {results[n]['seconds_per_epoch_mean']:.1f} s" for n in results if n != fastest) + ".")
    return "\n".join(lines)


def section_markers(name):
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text, name, body, where="the file"):
    """`text` with what stands between the `name` markers replaced by `body` (unchanged, with a note
    on stderr, when the markers are missing)."""
    start, end = section_markers(name)
    if start not in text or end not in text:
        print(f"note: {where} has no {start} ... {end} markers; left as it is", file=sys.stderr)
        return text
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_section(path, name, body):
    """The one writer of generated sections (README.md, docs/*.md): replace what stands between
    `<!-- name:start -->` and `<!-- name:end -->` in `path` by `body`. Returns True if it changed."""
    path = Path(path)
    if not path.is_file():
        return False
    text = path.read_text()
    new = replace_section(text, name, body, path)
    if new != text:
        write_text(path, new)
    return new != text


def update_readme(out=".", saved=None):
    """Rewrite the generated parts of <out>/README.md from `saved` ({norm: summary}; default: the
    summaries under `out`)."""
    saved = load_results(out) if saved is None else saved
    readme = Path(out) / "README.md"
    changed = write_section(readme, "results-table", results_table(saved))
    return write_section(readme, "comparison", comparison(saved)) or changed


def write_comparison(out, saved, histories):
    """images/comparison.png (the seed-0 test curves, {label: history}) and README.md's table and
    comparison, from `saved` ({norm: summary})."""
    fig = plots.plot_comparison(histories)
    seeds = sorted({r["seeds"][0] for r in saved.values()})
    fig.axes[0].set_title(f"Test accuracy by normalization (seed {', '.join(map(str, seeds))} of each)")
    save_figure(fig, Path(out) / "images" / "comparison.png")
    update_readme(out, saved)


def main(out=Path(__file__).resolve().parent):
    """`python results.py`: the comparison figure and README's generated sections again, from the
    results under this folder (after norms were trained by separate runs of run.py)."""
    saved = load_results(out)
    write_comparison(out, saved, {LABELS[n]: load_history(out, r) for n, r in saved.items()})
    print(f"README.md and images/comparison.png regenerated from {', '.join(f'results/{n}.json' for n in saved)}")


def load_sweep(out="."):
    """The batch-size experiment's runs (sweep.py): (list of run dicts, {norm: {batch size: [accuracies]}})."""
    runs = [json.loads(p.read_text()) for p in sorted((Path(out) / "results" / "sweep").glob("*-bs*-seed*.json"))]
    table = {}
    for r in runs:
        table.setdefault(r["norm"], {}).setdefault(r["batch_size"], []).append(r["final_test_accuracy"])
    return runs, table


def sweep_path(out, norm, batch_size, seed):
    return Path(out) / "results" / "sweep" / f"{norm}-bs{batch_size}-seed{seed}.json"


def write_sweep_run(out, result):
    path = sweep_path(out, result["norm"], result["batch_size"], result["seed"])
    write_json(path, result)
    return path


def write_batchnorm_gap(out, gap):
    write_json(Path(out) / "results" / "sweep" / "batchnorm_gap.json", gap)


GAP_BATCHES = (2, 8, 32, 128)  # test batch sizes of BatchNorm's train/eval comparison (sweep.py)


def batchnorm_gap_table(out="."):
    """Markdown table of results/sweep/batchnorm_gap.json: BatchNorm models tested with their running
    statistics (eval mode) and with the statistics of test batches (train mode)."""
    path = Path(out) / "results" / "sweep" / "batchnorm_gap.json"
    if not path.is_file():
        return "No train/eval measurement yet: run `python sweep.py`."
    lines = ["| BatchNorm model | eval mode (running statistics) | "
             + " | ".join(f"statistics of {b} test images" for b in GAP_BATCHES) + " |",
             "|---|---:|" + "---:|" * len(GAP_BATCHES)]
    for name, row in json.loads(path.read_text()).items():
        lines.append(f"| {name} | {row['eval']:.2f}% | " + " | ".join(f"{row[f'train_bs{b}']:.2f}%" for b in GAP_BATCHES) + " |")
    return "\n".join(lines)


VALIDATION_HEADER = """# Validation record

Every setting of the suite was chosen here, on 5,000 training images held out (seeded) from the
50,000, never on the test set. Each row is one run of `python run.py --validation 5000 --tag TAG ...`;
the accuracy is the last epoch's, on the held-out images. Rows trained on fewer than the 45,000
remaining images (`--subset N`, the same seeded subset for every seed of one command, scored on
N/5 of the held-out images) are screening runs: they compare settings with each other at that
size, not with full runs.
Seconds per epoch depend on the machine and precision of each run. Generated from
`results/validation/*.json` by run.py; what was concluded is in docs/experiments.md.

| tag | norm | differs from the defaults of the time | train images | val images | epochs | seed | precision | val acc | train acc | s/epoch |
|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|
"""


def changed_settings(settings, defaults):
    """'lr=0.1, cutout=8' for the settings that differ from `defaults` (seed aside), or '-'."""
    return ", ".join(f"{k}={v}" for k, v in settings.items()
                     if k in defaults and k != "seed" and v != defaults[k]) or "-"


def validation_record(entries):
    """Markdown table of validation runs, in the order of their tags."""
    rows = []
    for r in sorted(entries, key=lambda r: (r.get("tag", ""), list(NORM_TYPES).index(r["norm"]), r["seed"])):
        rows.append(f"| {r.get('tag', '')} | {LABELS[r['norm']]} | {r.get('changed', '?')} | {r['train_images']:,} | "
                    f"{r['test_images']:,} | {r['epochs']} | {r['seed']} | {_amp_label(r['config']['amp'])} | {r['final_test_accuracy']:.2f}% | "
                    f"{r['final_train_accuracy']:.2f}% | {r['seconds_per_epoch']:.1f} |")
    return VALIDATION_HEADER + "\n".join(rows) + "\n"


def _amp_label(amp):
    """The precision a run trained in; early records store amp as True (bf16 autocast) or False."""
    return {True: "bf16", False: "fp32", "off": "fp32"}.get(amp, amp)


def write_validation(out, result):
    """results/validation/<tag>-<norm>[-seed<k>].json (seed 0 has no suffix), then the record."""
    suffix = f"-seed{result['seed']}" if result["seed"] else ""
    write_json(Path(out) / "results" / "validation" / f"{result['tag']}-{result['norm']}{suffix}.json", result)
    write_validation_record(out)


def write_validation_record(out):
    folder = Path(out) / "results" / "validation"
    entries = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    write_text(Path(out) / "results" / "validation.md", validation_record(entries))


if __name__ == "__main__":
    main()


# ---------------------------------------------------------------------------------------------
# The lessons' records (lessons.py): results/lessons/<experiment>/<name>.json, one run or measurement each.


def lesson_path(out, experiment, name):
    return Path(out) / "results" / "lessons" / experiment / f"{name}.json"


def write_lesson(out, experiment, name, record):
    path = lesson_path(out, experiment, name)
    write_json(path, record)
    return path


def read_lesson(out, experiment, name):
    """The record, or None where there is none yet."""
    path = lesson_path(out, experiment, name)
    return json.loads(path.read_text()) if path.is_file() else None
