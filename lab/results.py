"""Every file under results/ (no other module builds a path there): its path, its record schema, its tables."""

import json
import math
import statistics
import subprocess
from dataclasses import asdict, replace
from pathlib import Path

import torch

import utils
from atomic import write_json, write_text
from hardware import describe_device, without_layout
from models import NORM_TYPES, PARAMETER_BUDGET, SUITE_NORMS, S8_model, checkpoint, count_parameters
from recipes import optimizer_groups

ROOT = Path(__file__).resolve().parent.parent
NORMS = SUITE_NORMS  # the three the suite compares; the lessons' controls are in experiments.py
LABELS = {key: t.label for key, t in NORM_TYPES.items()}

# What a summary keeps of each seed's record, and what the seeds share (taken from the first).
PER_SEED = ("seed", "final_test_accuracy", "final_train_accuracy", "final_test_accuracy_flip_tta", "seconds_per_epoch")
SHARED = ("norm", "model", "parameters", "within_budget", "epochs", "data", "train_images", "test_images", "device",
          "precision", "torch", "model_config", "run_id", "git_commit", "git_dirty")


def mean_and_range(values):
    """(mean, lowest, highest) of the seeds' values: the one statistic every comparison here uses."""
    values = list(values)
    return sum(values) / len(values), min(values), max(values)


def spread(values, digits=".1f"):
    """'81.2 (80.9-81.5)': mean of the seeds and their lowest and highest, each formatted with `digits`."""
    if not values:
        return "-"
    mean, low, high = mean_and_range(values)
    return f"{mean:{digits}} ({low:{digits}}-{high:{digits}})"


def differ(a, b):
    """True when two seeds' accuracies differ in mean by more than either's range; one seed shows no range to judge."""
    if len(a) < 2 or len(b) < 2:
        return False
    (mean_a, lo_a, hi_a), (mean_b, lo_b, hi_b) = mean_and_range(a), mean_and_range(b)
    return abs(mean_a - mean_b) > max(hi_a - lo_a, hi_b - lo_b)


def seed_path(out, norm, seed=None):
    """A seed's record, results/<norm>_seed<seed>.json, or without a seed the seeds' summary, results/<norm>.json."""
    return Path(out) / "results" / (f"{norm}.json" if seed is None else f"{norm}_seed{seed}.json")


def record_path(out, folder, name, suffix=".json"):
    """A lesson's record: results/lessons/<folder>/<name>.json; the batch-size runs are results/sweep/."""
    return Path(out) / "results" / ("sweep" if folder == "sweep" else f"lessons/{folder}") / f"{name}{suffix}"


def benchmark_path(out=ROOT, gpu=False):
    return Path(out) / "results" / ("benchmark_gpu.txt" if gpu else "benchmark.txt")


def read(path):
    """The record at `path`, or None where there is none."""
    path = Path(path)
    return json.loads(path.read_text()) if path.is_file() else None


def read_records(out, folder, pattern):
    """The records of `folder` whose names match the glob `pattern`, in name order (seed 0 first)."""
    path = record_path(out, folder, pattern)
    return [json.loads(p.read_text()) for p in sorted(path.parent.glob(path.name))]


def write_record(out, folder, name, record):
    return write_json(record_path(out, folder, name), record)


def code_version(root=ROOT):
    """The git commit and whether the tree was dirty (None, None outside a checkout): every number has its code."""
    def git(*command):
        done = subprocess.run(["git", "-C", str(root), *command], capture_output=True, text=True)
        return done.stdout.strip() if done.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    changes = git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"git_commit": commit, "git_dirty": None if changes is None else bool(changes)}


def run_record(model, cfg, data, precision, device, history, diverged, optimizer_groups, extra):
    """A run's record: what it trained, where and how, its history and final numbers (None where it diverged)."""
    cfg = replace(cfg, amp=precision.amp, channels_last=precision.channels_last)  # recorded as chosen, not 'auto'
    rows = [{**row, **{key: round(row[key], 2) for key in ("train_acc", "test_acc", "seconds")}} for row in history]
    done = rows and not diverged
    parameters = count_parameters(model)
    return {
        "norm": model.norm, "model": type(model).__name__, "parameters": parameters,
        "within_budget": parameters < PARAMETER_BUDGET, "epochs": cfg.epochs, "seed": cfg.seed,
        "final_train_accuracy": rows[-1]["train_acc"] if done else None,
        "final_test_accuracy": rows[-1]["test_acc"] if done else None,
        "final_test_accuracy_flip_tta": round(history.scores.flip_tta_accuracy, 2) if done else None,
        "seconds_per_epoch": round(sum(r["seconds"] for r in rows) / len(rows), 2) if rows else None,
        "device": device, "precision": precision.describe(), "torch": torch.__version__,
        "data": data.source, "train_images": len(data.train_labels), "test_images": len(data.test_labels),
        "config": asdict(cfg), "optimizer_groups": optimizer_groups, "model_config": model.config.to_dict(),
        **code_version(), "diverged": diverged, **extra, "history": rows,
    }


def run_one(model_config, cfg, data, precision, device, verbose=True, progress=True, probe=None, keep_diverged=False):
    """Train one seed; returns {"record", "checkpoint", "mistakes", "model"}. `probe(model, steps_per_epoch)` returns
    what gives the record's extra fields; with `keep_diverged` a non-finite loss is recorded as diverged, not raised."""
    model_config = replace(model_config, num_classes=len(data.classes))
    torch.manual_seed(cfg.seed)
    model = S8_model(**asdict(model_config))
    parameters = count_parameters(model)
    if verbose:
        print(f"\n=== {type(model).__name__} ({LABELS[model.norm]}) ===")
        utils.summarize(model, device)
        print(f"{parameters:,} parameters: " + (f"within the {PARAMETER_BUDGET:,} budget" if parameters < PARAMETER_BUDGET
              else f"OVER the {PARAMETER_BUDGET:,}-parameter budget (the results will say so)"))
    extra = probe(model, math.ceil(len(data.train_labels) / cfg.batch_size)) if probe else None
    history, diverged = utils.History(), None
    try:
        utils.fit(model, data, cfg, device, precision, progress, log=print if verbose else lambda line: None, history=history)
    except FloatingPointError as err:
        if not keep_diverged:
            raise
        diverged = str(err)
    record = run_record(model, cfg, data, precision, describe_device(device), history, diverged,
                                optimizer_groups(model), extra() if extra else {})
    saved = checkpoint(model, classes=list(data.classes), config=record["config"], mean=data.mean.cpu(),
                       std=data.std.cpu(), data=data.source, **{k: record[k] for k in ("git_commit", "git_dirty")})
    mistakes = history.scores.mistakes(data.test_images) if history.scores is not None and not diverged else []
    return {"record": record, "checkpoint": saved, "mistakes": mistakes, "model": model}


def machines(records):
    """The machines and precisions (memory layout aside) `records` were trained on, each once, in order."""
    return list(dict.fromkeys(f"{r['device']}, {without_layout(r['precision'])}" for r in records))


def trained_on(records):
    """'trained on X' for one machine and precision; for several, a sentence that says they differ."""
    seen = machines(records)
    if len(seen) == 1:
        return f"trained on {seen[0]}"
    return "records of different machines or precisions side by side: " + "; ".join(seen)


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
        "final_test_accuracy_mean": round(mean, 2),
        "final_test_accuracy_std": round(std, 2),
        **{f"{key}_mean": round(mean_and_range(r[key] for r in runs)[0], 2)
           for key in ("final_train_accuracy", "final_test_accuracy_flip_tta", "seconds_per_epoch")},
    }


def load_results(out=ROOT):
    """{norm: summary} for every results/<norm>.json under `out`."""
    found = {norm: read(seed_path(out, norm)) for norm in NORMS}
    return {norm: summary for norm, summary in found.items() if summary is not None}


def load_history(out, summary):
    """The per-epoch history of the summary's first seed (the one its figures and checkpoint show)."""
    return read(seed_path(out, summary["norm"], summary["seeds"][0]))["history"]


def optimizer_label(config):
    """'Muon 0.1 + SGD' (Muon's peak rate), or 'SGD' for the earlier recipe's records (no muon_lr, or optimizer sgd)."""
    if "muon_lr" in config and config.get("optimizer", "muon") == "muon":
        return f"Muon {config['muon_lr']} + SGD"
    return "SGD"


def median_seconds_per_epoch(summary):
    """The seeds' median: one seed slowed by another process moves a mean, not this."""
    return statistics.median(run["seconds_per_epoch"] for run in summary["runs"])


def results_table(results):
    """README.md's results table: a row per norm's summary."""
    lines = ["| model | norm | parameters | epochs | optimizer | seeds | train acc | test acc, mean ± std "
             "| test acc per seed | s/epoch, median | data | device | separate: with flip TTA |",
             "|---|---|---:|---:|---|---:|---:|---:|---|---:|---|---|---:|"]
    for norm, r in results.items():
        per_seed = ", ".join(f"{run['final_test_accuracy']:.2f}" for run in r["runs"])
        lines.append(f"| `{r['model']}` | {LABELS[norm]} | {r['parameters']:,} | {r['epochs']} | "
                     f"{optimizer_label(r['config'])} | {', '.join(map(str, r['seeds']))} | "
                     f"{r['final_train_accuracy_mean']:.2f}% | **{r['final_test_accuracy_mean']:.2f}% ± "
                     f"{r['final_test_accuracy_std']:.2f}** | {per_seed} | {median_seconds_per_epoch(r):.1f} | "
                     f"{r['data']} | {r['device']} | {r['final_test_accuracy_flip_tta_mean']:.2f}% |")
    return "\n".join(lines)


def students_table(results):
    """The comparison notebook's table: the columns a student reads (README.md's results table has the rest)."""
    lines = ["| norm | parameters | seeds | train acc | test acc, mean (lowest-highest) |", "|---|---:|---|---:|---:|"]
    for norm, r in results.items():
        test = [run["final_test_accuracy"] for run in r["runs"]]
        lines.append(f"| {LABELS[norm]} | {r['parameters']:,} | {', '.join(map(str, r['seeds']))} | "
                     f"{r['final_train_accuracy_mean']:.2f}% | **{r['final_test_accuracy_mean']:.2f}%** "
                     f"({min(test):.2f}-{max(test):.2f}) |")
    return "\n".join(lines)


def comparison(results):
    """The norms' mean final test accuracies, and which differences exceed the seeds' spread."""
    ranked = sorted(results, key=lambda n: -results[n]["final_test_accuracy_mean"])
    if not ranked:
        return "No results yet: run `python run.py --norm all`."
    seeds = {n: [run["final_test_accuracy"] for run in results[n]["runs"]] for n in ranked}  # final test accuracies
    lines = [f"- {LABELS[n]}: {results[n]['final_test_accuracy_mean']:.2f}% mean final test accuracy, seeds "
             f"{max(seeds[n]) - min(seeds[n]):.2f} points apart." for n in ranked]
    real = []
    for a, b in ((a, b) for k, a in enumerate(ranked) for b in ranked[k + 1:]):
        if differ(seeds[a], seeds[b]):
            optimizers = [optimizer_label(results[n].get("config", {})) for n in (a, b)]
            # a norm trained with another optimizer: the difference is not the norm's alone
            real.append(f"{LABELS[a]} above {LABELS[b]}" + ("" if optimizers[0] == optimizers[1] else
                        f" (trained with different optimizers: {optimizers[0]} against {optimizers[1]})"))
    lines.append("- Differences beyond the seeds' spread: " + (", ".join(real) if real else
                 "none; on these runs the norms are level") + ".")
    median = {n: median_seconds_per_epoch(r) for n, r in results.items()}
    seconds = {n: f"{LABELS[n]} {median[n]:.1f} s (" + ", ".join(f"{run['seconds_per_epoch']:.1f}" for run in r["runs"])
               + ")" for n, r in results.items()}
    if len({r["device"] for r in results.values()}) > 1:  # seconds on different machines do not compare
        lines.append("- Seconds per epoch, the median of the seeds (each seed): " + ", ".join(seconds.values())
                     + "; measured on different machines (the device column), so not compared.")
    else:
        fastest = min(results, key=median.get)
        lines.append(f"- Seconds per epoch on {results[fastest]['device']}, the median of the seeds (each seed): "
                     + ", ".join(seconds[n] for n in sorted(results, key=median.get)) + f"; fastest: {LABELS[fastest]}.")
    return "\n".join(lines)


def section_markers(name):
    return f"<!-- {name}:start -->", f"<!-- {name}:end -->"


def replace_section(text, name, body, where="the file"):
    """`text` with what stands between the `name` markers replaced by `body`; missing markers are an error."""
    start, end = section_markers(name)
    if start not in text or end not in text:
        raise ValueError(f"{where} has no {start} ... {end} markers; add them where the section belongs")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def write_section(path, name, body):
    """Replace what stands between `name`'s markers in `path` by `body`, True if it changed; no file: left alone."""
    path = Path(path)
    if not path.is_file():
        return False
    text = path.read_text()
    new = replace_section(text, name, body, path)
    if new != text:
        write_text(path, new)
    return new != text


def update_readme(out, saved):
    """Rewrite <out>/README.md's results table and comparison from `saved` ({norm: summary})."""
    readme = Path(out) / "README.md"
    changed = write_section(readme, "results-table", results_table(saved))
    return write_section(readme, "comparison", comparison(saved)) or changed


def changed_settings(settings, defaults):
    """'lr=0.1, cutout=8' for the settings that differ from `defaults` (seed aside), or '-'."""
    return ", ".join(f"{k}={v}" for k, v in settings.items()
                     if k in defaults and k != "seed" and v != defaults[k]) or "-"


def validation_record(entries):
    """Markdown table of validation runs, in the order of their tags (results/validation.md's section)."""
    rows = ["| tag | norm | differs from the defaults of the time | train images | val images | epochs | seed | precision "
            "| val acc | train acc | s/epoch |", "|---|---|---|---:|---:|---:|---:|---|---:|---:|---:|"]
    for r in sorted(entries, key=lambda r: (r.get("tag", ""), list(NORM_TYPES).index(r["norm"]), r["seed"])):
        amp = r["config"]["amp"]  # early records store True (bf16 autocast) or False
        amp = {True: "bf16", False: "fp32", "off": "fp32"}.get(amp, amp)
        rows.append(f"| {r.get('tag', '')} | {LABELS[r['norm']]} | {r.get('changed', '?')} | {r['train_images']:,} | "
                    f"{r['test_images']:,} | {r['epochs']} | {r['seed']} | {amp} | {r['final_test_accuracy']:.2f}% | "
                    f"{r['final_train_accuracy']:.2f}% | {r['seconds_per_epoch']:.1f} |")
    return "\n".join(rows)


def validation_runs(out=ROOT):
    return [json.loads(p.read_text()) for p in sorted((Path(out) / "results" / "validation").glob("*.json"))]


def write_validation(out, result):
    """results/validation/<tag>-<norm>[-seed<k>].json (seed 0 has no suffix), then the record."""
    suffix = f"-seed{result['seed']}" if result["seed"] else ""
    write_json(Path(out) / "results" / "validation" / f"{result['tag']}-{result['norm']}{suffix}.json", result)
    record = Path(out) / "results" / "validation.md"  # its words stand around the generated section
    if not record.is_file():
        write_text(record, "# Validation record\n\n<!-- validation-runs:start -->\n<!-- validation-runs:end -->\n")
    write_section(record, "validation-runs", validation_record(validation_runs(out)))
