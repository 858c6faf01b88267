"""Results on disk: the per-norm JSON files, and the README's results table and comparison.

results/<norm>.json is a run's summary: every seed's final numbers (`runs`) and their aggregates;
results/<norm>_seed<k>.json holds one seed's whole record, its per-epoch history included.
"""

import json
import sys
from pathlib import Path

from atomic import write_text
from models import NORM_TYPES

NORMS = tuple(NORM_TYPES)
LABELS = {key: t.label for key, t in NORM_TYPES.items()}
TABLE_START, TABLE_END = "<!-- results-table:start -->", "<!-- results-table:end -->"
SUMMARY_START, SUMMARY_END = "<!-- comparison:start -->", "<!-- comparison:end -->"


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
    path = Path(out) / "results" / f"{summary['norm']}_seed{summary['seeds'][0]}.json"
    return json.loads(path.read_text())["history"]


def test_accuracy(r):
    """The headline: mean final test accuracy over the seeds."""
    return r["final_test_accuracy_mean"]


def results_table(results):
    lines = [
        "| model | norm | parameters | epochs | seeds | train acc | test acc, mean ± std | test acc per seed "
        "| s/epoch | data | device | separate: with flip TTA |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|---|---:|",
    ]
    for norm, r in results.items():
        per_seed = ", ".join(f"{run['final_test_accuracy']:.2f}" for run in r["runs"])
        lines.append(
            f"| `{r['model']}` | {LABELS[norm]} | {r['parameters']:,} | {r['epochs']} | "
            f"{', '.join(map(str, r['seeds']))} | {r['final_train_accuracy_mean']:.2f}% | "
            f"**{test_accuracy(r):.2f}% ± {r['final_test_accuracy_std']:.2f}** | "
            f"{per_seed} | "
            f"{r['seconds_per_epoch_mean']:.1f} | {r['data']} | {r['device']} | "
            f"{r['final_test_accuracy_flip_tta_mean']:.2f}% |"
        )
    return "\n".join(lines)


def comparison(results):
    """The norms ranked by final test accuracy, with the gaps between them, as markdown bullets."""
    ranked = sorted(results, key=lambda n: -test_accuracy(results[n]))
    if not ranked:
        return "No results yet: run `python run.py --norm all`."
    best = test_accuracy(results[ranked[0]])
    lines = [f"- {LABELS[ranked[0]]} finished highest, at {best:.2f}% mean final test accuracy."]
    for n in ranked[1:]:
        lines.append(f"- {LABELS[n]}: {test_accuracy(results[n]):.2f}%, {best - test_accuracy(results[n]):.2f} points lower.")
    fastest = min(results, key=lambda n: results[n]['seconds_per_epoch_mean'])
    lines.append(f"- Fastest per epoch: {LABELS[fastest]} ({results[fastest]['seconds_per_epoch_mean']:.1f} s "
                 f"on {results[fastest]['device']}); " + ", ".join(
                     f"{LABELS[n]} {results[n]['seconds_per_epoch_mean']:.1f} s" for n in results if n != fastest) + ".")
    return "\n".join(lines)


def _replace_between(text, start, end, body, readme):
    if start not in text or end not in text:
        print(f"note: {readme} has no {start} ... {end} markers; left as it is", file=sys.stderr)
        return text
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    return f"{head}{start}\n{body}\n{end}{tail}"


def update_readme(out="."):
    """Rewrite the generated parts of <out>/README.md (between marker comments) from results/*.json."""
    readme = Path(out) / "README.md"
    if not readme.is_file():
        return False
    text = readme.read_text()
    saved = load_results(out)
    new = _replace_between(text, TABLE_START, TABLE_END, results_table(saved), readme)
    new = _replace_between(new, SUMMARY_START, SUMMARY_END, comparison(saved), readme)
    if new != text:
        write_text(readme, new)
    return new != text


def observations(norm, results):
    """A few sentences comparing `norm` with the other norms, from the saved results."""
    if norm not in results:
        return f"No saved result for {LABELS[norm]} yet: run `python run.py --norm all` first."
    me = results[norm]
    others = [n for n in NORMS if n != norm and n in results]
    lines = []
    ranking = sorted(results, key=lambda n: -test_accuracy(results[n]))
    place = ["best", "second", "third"][ranking.index(norm)]
    n_seeds = len(me["seeds"])
    lines.append(f"- {LABELS[norm]} reached {test_accuracy(me):.2f}% test accuracy after {me['epochs']} epochs "
                 f"(mean of {n_seeds} seed{'s' if n_seeds > 1 else ''}), the {place} of the {len(results)} norms.")
    for n in others:
        diff = test_accuracy(me) - test_accuracy(results[n])
        lines.append(f"- {abs(diff):.2f} points {'above' if diff >= 0 else 'below'} {LABELS[n]} "
                     f"({test_accuracy(results[n]):.2f}%).")
    gap = me['final_train_accuracy_mean'] - test_accuracy(me)
    if gap < 0:
        verdict = "augmented training images are harder than test images, and the net is not overfitting."
    elif gap < 2:
        verdict = "little overfitting; the net is limited more by its size than by memorizing."
    else:
        verdict = "the net has begun to overfit."
    lines.append(f"- Train accuracy on augmented images was {me['final_train_accuracy_mean']:.2f}%, "
                 f"{abs(gap):.2f} points {'above' if gap >= 0 else 'below'} test accuracy: {verdict}")
    speeds = ", ".join(f"{LABELS[n]} {results[n]['seconds_per_epoch_mean']:.1f} s" for n in results)
    lines.append(f"- Seconds per training epoch on {me['device']}: {speeds}.")
    return "\n".join(lines)


VALIDATION_HEADER = """# Validation record

Every setting of the suite was chosen here, on 5,000 training images held out (seeded) from the
50,000, never on the test set. Each row is one run of `python run.py --validation 5000 --tag TAG ...`;
the accuracy is the last epoch's, on the held-out images. Generated from
`results/validation/*.json` by run.py; notes on what was concluded are in README.md.

| tag | norm | differs from the defaults of the time | epochs | seed | val acc | train acc | s/epoch |
|---|---|---|---:|---:|---:|---:|---:|
"""


def changed_settings(settings, defaults):
    """'lr=0.1, cutout=8' for the settings that differ from `defaults` (seed aside), or '-'."""
    return ", ".join(f"{k}={v}" for k, v in settings.items()
                     if k in defaults and k != "seed" and v != defaults[k]) or "-"


def validation_record(entries):
    """Markdown table of validation runs, in the order of their tags."""
    rows = []
    for r in sorted(entries, key=lambda r: (r.get("tag", ""), NORMS.index(r["norm"]))):
        rows.append(f"| {r.get('tag', '')} | {LABELS[r['norm']]} | {r.get('changed', '?')} | {r['epochs']} | {r['seed']} | "
                    f"{r['final_test_accuracy']:.2f}% | {r['final_train_accuracy']:.2f}% | {r['seconds_per_epoch']:.1f} |")
    return VALIDATION_HEADER + "\n".join(rows) + "\n"


def write_validation_record(out):
    folder = Path(out) / "results" / "validation"
    entries = [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))]
    write_text(Path(out) / "results" / "validation.md", validation_record(entries))
