"""Write S8_BN.ipynb, S8_LN.ipynb, S8_GN.ipynb and S8_compare.ipynb from their jupytext sources in notebooks/;
--check only names those out of date. See docs/development.md, "The notebooks"."""

import argparse
import base64
import io
import re
import sys
from pathlib import Path

import jupytext
import nbformat
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
SOURCES = ROOT / "notebooks"
NOTEBOOKS = {"S8_BN.ipynb": "bn.py", "S8_LN.ipynb": "ln.py", "S8_GN.ipynb": "gn.py", "S8_compare.ipynb": "compare.py"}
INCLUDE = re.compile(r"# include: (\w+\.py)")
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS_BAR = re.compile(r"[^\n]*: +\d+%\|")  # tqdm's text: 'epoch 3:   0%|          | 0/391 ...'


def source_cells(name, sources=None):
    """The cells of notebooks/`name`, each include replaced by the cells of the file it names."""
    sources, cells = sources or SOURCES, []
    for cell in jupytext.read(sources / name, fmt="py:percent").cells:
        match = INCLUDE.fullmatch(cell.source.strip()) if cell.cell_type == "code" else None
        cells += source_cells(match.group(1), sources) if match else [cell]
    return cells


def build(notebook, old=None, sources=None):
    """The notebook `notebook` from its source; a code cell whose source is that of one of `old`'s
    keeps that cell's outputs (matched by source, so inserting a cell loses no outputs)."""
    nb = nbformat.v4.new_notebook(cells=source_cells(NOTEBOOKS[notebook], sources))
    # reversed: where two code cells share a source, the first one's outputs are kept
    kept = {before.source: before for before in reversed(old.cells if old else []) if before.cell_type == "code"}
    stem = notebook.removesuffix(".ipynb")
    for k, cell in enumerate(nb.cells):  # stable ids and metadata: rebuilding gives the same file
        cell.id = f"{stem}-{k:02d}"
        cell.metadata = cell_metadata(cell.metadata.get("tags", []))
        if cell.cell_type == "code":
            before = kept.get(cell.source)
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
    """The post-step: no widget state (it shows nothing on GitHub), palette PNGs, no progress bar's first frame."""
    kept = []
    for output in outputs:
        data = output.get("data", {})
        data.pop(WIDGET_VIEW, None)
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


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--check", action="store_true", help="write nothing; fail if a notebook differs from its source")
    p.add_argument("--clear-outputs", action="store_true", help="drop every output, not only those of changed cells")
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


if __name__ == "__main__":
    main()
