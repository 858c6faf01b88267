"""Write S8_BN.ipynb, S8_LN.ipynb, S8_GN.ipynb and S8_compare.ipynb from their jupytext sources in notebooks/;
--check only names those out of date. See docs/development.md, "The notebooks"."""

import argparse
import base64
import io
import os
import re
import sys
import time
from datetime import datetime
from pathlib import Path
from unittest import mock

import jupytext
import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
SOURCES = ROOT / "notebooks"
NOTEBOOKS = {"S8_BN.ipynb": "bn.py", "S8_LN.ipynb": "ln.py", "S8_GN.ipynb": "gn.py", "S8_compare.ipynb": "compare.py"}
INCLUDE = re.compile(r"# include: (\w+\.py)")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
WIDGET_REPR = re.compile(r"[HV]Box\(children=")
PROGRESS_BAR = re.compile(r"[^\n]*: +\d+%\|")  # tqdm's text: 'epoch 3:   0%|          | 0/391 ...'
TRY_IT = re.compile(r"## \d+\. (Try it|Summary)")  # a lesson's exercises, and the summary that quotes their results
LESSONS = {"S8_BN.ipynb": "bn", "S8_LN.ipynb": "ln", "S8_GN.ipynb": "gn"}  # each also timed in its short setting
SHORT_SETTING = {"S8_EPOCHS": "2", "S8_SUBSET": "5000"}  # the lessons' quick first pass, as their settings text says


def source_cells(name, sources=None):
    """The cells of notebooks/`name`, each include replaced by the cells of the file it names."""
    sources, cells = sources or SOURCES, []
    for cell in jupytext.read(sources / name, fmt="py:percent").cells:
        match = INCLUDE.fullmatch(cell.source.strip()) if cell.cell_type == "code" else None
        cells += source_cells(match.group(1), sources) if match else [cell]
    return cells


def build(notebook, old=None, sources=None):
    """The notebook from its source; a code cell keeps the outputs of `old`'s of the same source, wherever it moved."""
    nb = nbformat.v4.new_notebook(cells=source_cells(NOTEBOOKS[notebook], sources))
    # reversed: where two code cells share a source, the first one's outputs are kept
    kept = {before.source: before for before in reversed(old.cells if old else []) if before.cell_type == "code"}
    stem, trying = notebook.removesuffix(".ipynb"), False
    for k, cell in enumerate(nb.cells):  # stable ids and metadata: rebuilding gives the same file
        cell.id = f"{stem}-{k:02d}"
        cell.metadata = cell_metadata(cell.metadata.get("tags", []))
        if cell.cell_type == "markdown" and cell.source.startswith("## "):
            trying = TRY_IT.match(cell.source) is not None
        if cell.cell_type == "code":
            # The "Try it" and "Summary" sections' cells print what the exercises ask the student to predict: committed
            # without output, so that no answer stands under its question (executing the notebook fills them in).
            before = None if trying else kept.get(cell.source)
            cell.outputs = clean_outputs(before.outputs) if before else []
            cell.execution_count = before.execution_count if before else None
    nb.metadata = {"kernelspec": {"name": "python3", "display_name": "Python 3", "language": "python"},
                   "language_info": {"name": "python"}, "accelerator": "GPU",
                   "colab": {"provenance": [], "gpuType": "T4"}}
    return nb


def cell_metadata(tags):
    """A cell's metadata from its tags; one tagged `form` (the set-up cell) shows as its `# @title` line."""
    if "form" not in tags:
        return {"tags": tags} if tags else {}
    return {"tags": tags, "cellView": "form", "jupyter": {"source_hidden": True}}


def clean_outputs(outputs):
    """The post-step: no widget output, palette PNGs, no progress bar's first frame."""
    kept = []
    for output in outputs:
        data = output.get("data", {})
        if data.pop(WIDGET_VIEW, None) is not None or WIDGET_REPR.match(data.get("text/plain", "")):
            continue  # a widget shows nothing without its state, and its text is only its repr: 'VBox(children=...'
        if "image/png" in data:
            data["image/png"] = palette_png(data["image/png"])
        if not (output.get("output_type") == "display_data" and set(data) == {"text/plain"}
                and PROGRESS_BAR.match(data["text/plain"])):
            kept.append(output)
    return kept


def palette_png(encoded):
    """A base64 PNG as a 256-colour palette PNG on white (a third of the bytes), so that each notebook stays
    under 500 KB: plots keep their few colours; the 32x32 photos lose depth too small to show."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    if image.mode == "P":
        return encoded
    image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    buffer = io.BytesIO()
    image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode() + "\n"


def out_of_date(root=None):
    """The notebooks whose cells (sources, kinds, tags) differ from what their sources build."""
    root, stale = root or ROOT, []
    for notebook in NOTEBOOKS:
        path = root / notebook
        committed = nbformat.read(path, as_version=4) if path.exists() else None
        built = build(notebook, committed, root / "notebooks")
        if committed is None or [(c.cell_type, c.source, c.metadata) for c in built.cells] != [
                (c.cell_type, c.source, cell_metadata(c.metadata.get("tags", [])))
                for c in committed.cells]:
            stale.append(notebook)
    return stale


def execute(notebook, root, env):
    """Run `notebook` under `env` (nbclient); return it, its seconds and those of its training cell (utils.fit's)."""
    from nbclient import NotebookClient

    nb = nbformat.read(root / notebook, as_version=4)
    client = NotebookClient(nb, timeout=None, resources={"metadata": {"path": str(root)}})
    with mock.patch.dict(os.environ, env):  # the kernel inherits this process's environment: the S8_ settings too
        start = time.perf_counter()
        client.execute()
        seconds = time.perf_counter() - start
    times = [c.metadata.get("execution", {}) for c in nb.cells if c.cell_type == "code" and "utils.fit(" in c.source]
    training = [datetime.fromisoformat(t["shell.execute_reply"][:26].rstrip("Z")) - datetime.fromisoformat(
        t["iopub.execute_input"][:26].rstrip("Z")) for t in times]
    return nb, round(seconds), round(training[0].total_seconds()) if training else None


def execute_all(root, data):
    """Every notebook in full, then each lesson in its short setting (outputs dropped); their times: execution.json."""
    import torch
    from nbclient import NotebookClient

    from hardware import choose_precision, describe_device, pick_device
    from lab import results

    device, env, timed = pick_device(), {"S8_DATA": str(data)}, {}
    for notebook in NOTEBOOKS:
        nb, seconds, training = execute(notebook, root, env)
        nbformat.write(build(notebook, nb, root / "notebooks"), root / notebook)  # the post-step on the new outputs
        timed[notebook] = {"all data, 20 epochs": {"notebook": seconds, "training cell": training}} if training else {
            "as committed": {"notebook": seconds}}  # the comparison notebook trains nothing
        if notebook in LESSONS:
            _, seconds, training = execute(notebook, root, {**env, **SHORT_SETTING})
            timed[notebook]["short setting"] = {"notebook": seconds, "training cell": training, **SHORT_SETTING}
        print(f"executed {notebook}: {timed[notebook]}", flush=True)
    results.write_record(root, "notebooks", "execution", {
        "machine": describe_device(device), "torch": torch.__version__, "data": str(Path(data).name),
        "precision": {nb: choose_precision(device, norm).describe(layout=False) for nb, norm in LESSONS.items()},
        **results.code_version(root), "seconds": timed})
    for notebook, norm in LESSONS.items():  # the cell that prints these times ran before they were measured: again now
        nb = nbformat.read(root / notebook, as_version=4)
        cell = next(c for c in nb.cells if c.cell_type == "code" and '"notebooks", "execution"' in c.source)
        again = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(f"NORM = {norm!r}"), cell])
        NotebookClient(again, timeout=60, resources={"metadata": {"path": str(root)}}).execute()
        nbformat.write(nb, root / notebook)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; fail if a notebook differs from its source")
    p.add_argument("--clear-outputs", action="store_true", help="drop every output, not only those of changed cells")
    p.add_argument("--execute", metavar="DATA", help="then run every notebook in full on the CIFAR-10 at DATA, and "
                   "time each lesson in full and in its short setting (results/lessons/notebooks/execution.json)")
    args = p.parse_args(argv)
    if args.check:
        stale = out_of_date(ROOT)
        if stale:
            sys.exit(f"out of date with notebooks/: {', '.join(stale)}; run python tools/build_notebooks.py")
        print("every notebook matches its source")
        return
    for notebook in NOTEBOOKS:
        path = ROOT / notebook
        old = None if args.clear_outputs or not path.exists() else nbformat.read(path, as_version=4)
        nbformat.write(build(notebook, old, ROOT / "notebooks"), path)
        print(f"wrote {notebook}")
    if args.execute:
        execute_all(ROOT, Path(args.execute).resolve())


if __name__ == "__main__":
    main()
