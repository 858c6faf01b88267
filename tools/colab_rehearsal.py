"""Rehearse the three notebooks as a student on Colab runs them, on this machine.

    python tools/colab_rehearsal.py [--data ../shared/data/cifar10-jpg.tar.gz] [--work DIR]

What it sets up, and why each part is there:
- a virtual environment with Colab's versions of what matters here: ipywidgets 7.7.1 (with its
  widgetsnbextension 3.6), and no torchsummary. Everything else (torch, matplotlib, ...) is this
  machine's, seen through a copy of its site-packages that leaves those three out;
- a fake `google.colab` module, imported when the kernel starts as Colab's is, so the notebooks'
  set-up cell takes its Colab branch;
- S8_REPO_URL pointing at this checkout, so that branch clones it (its committed HEAD) into a bare
  working folder, the way Colab clones the GitHub repository into /content;
- each notebook's short configuration (S8_EPOCHS=1, S8_SUBSET=2000) run end to end, the set-up
  cell twice, then a check that the clone was used, torchsummary was installed by the set-up cell
  and Colab's ipywidgets was left alone.
It needs the package index (pip installs ipywidgets 7.7.1 and torchsummary) and about two minutes.
"""

import argparse
import json
import os
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import venv
from pathlib import Path

import nbformat
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_notebooks  # noqa: E402

COLAB_PACKAGES = ["ipywidgets==7.7.1", "widgetsnbextension~=3.6.0"]
HIDDEN = ("ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "torchsummary")  # Colab's own, or absent
KERNEL = "s8-colab-rehearsal"

STARTUP = '''# Colab imports google.colab when its kernel starts; the notebooks' set-up cell looks for it.
import sys
sys.path.insert(0, {fake!r})
import google.colab
'''

CHECK = '''import importlib.util, os, ipywidgets
print("REHEARSAL " + __import__("json").dumps({"cwd": os.getcwd(), "ipywidgets": ipywidgets.__version__,
      "torchsummary": importlib.util.find_spec("torchsummary").origin}))'''


def colab_like_env(work):
    """A venv that sees this machine's packages except HIDDEN, with COLAB_PACKAGES installed."""
    filtered = work / "site-packages-without-colab-differences"
    filtered.mkdir()
    system_site = Path(sysconfig.get_paths()["purelib"])
    for entry in system_site.iterdir():
        if not entry.name.lower().replace("-", "_").startswith(HIDDEN):
            (filtered / entry.name).symlink_to(entry)
    env_dir = work / "venv"
    venv.EnvBuilder(with_pip=True).create(env_dir)
    python = env_dir / "bin" / "python"
    site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          capture_output=True, text=True, check=True).stdout.strip()
    # A .pth line that starts with 'import' runs: addsitedir also reads the .pth files found there.
    Path(site, "machine_packages.pth").write_text(f"import site; site.addsitedir({str(filtered)!r})\n")
    pip = subprocess.run([python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check", *COLAB_PACKAGES],
                         capture_output=True, text=True)
    if pip.returncode:
        sys.exit(f"colab rehearsal: could not install {' '.join(COLAB_PACKAGES)} (needs the package index):\n"
                 f"{pip.stdout}{pip.stderr}")
    return python, Path(site)


def kernel(work, python):
    """A kernelspec for `python` whose IPython start-up imports a fake google.colab."""
    fake = work / "fake-colab"
    (fake / "google" / "colab").mkdir(parents=True)
    (fake / "google" / "colab" / "__init__.py").write_text('"""Stands in for Colab\'s module."""\n')
    startup = work / "ipython" / "profile_default" / "startup"
    startup.mkdir(parents=True)
    (startup / "00-colab.py").write_text(STARTUP.format(fake=str(fake)))
    spec = work / "jupyter" / "kernels" / KERNEL
    spec.mkdir(parents=True)
    (spec / "kernel.json").write_text(json.dumps({
        "argv": [str(python), "-m", "ipykernel_launcher", "-f", "{connection_file}"],
        "display_name": "Colab rehearsal", "language": "python",
        "env": {"IPYTHONDIR": str(work / "ipython")},
    }))
    return work / "jupyter"


def rehearse(notebook, content):
    """Run a copy of `notebook` in the bare folder `content`; return what its check cell printed."""
    nb = nbformat.read(ROOT / notebook, as_version=4)
    setup = next(k for k, c in enumerate(nb.cells) if c.cell_type == "code" and "google.colab" in c.source)
    nb.cells.insert(setup + 1, nbformat.v4.new_code_cell(nb.cells[setup].source))  # run twice: harmless
    nb.cells.append(nbformat.v4.new_code_cell(CHECK))
    for k, cell in enumerate(nb.cells):
        cell.id = f"rehearsal-{k}"
    NotebookClient(nb, kernel_name=KERNEL, timeout=900, resources={"metadata": {"path": str(content)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return json.loads(printed.split("REHEARSAL ", 1)[1])


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default=str(ROOT.parent / "shared" / "data" / "cifar10-jpg.tar.gz"),
                   help="CIFAR-10 source the notebooks read (default: the offline copy beside the checkout)")
    p.add_argument("--work", help="folder for the environment and the runs (default: a temporary one, removed)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="s8-colab-"))
    work.mkdir(parents=True, exist_ok=True)
    name = make_notebooks.readme_repo(ROOT / "README.md").split("/")[1]
    try:
        python, site = colab_like_env(work)
        os.environ.update(
            JUPYTER_PATH=str(kernel(work, python)), S8_REPO_URL=str(ROOT), S8_DATA=str(Path(args.data).resolve()),
            S8_CACHE_DIR=str(work / "cache"), S8_EPOCHS=os.environ.get("S8_EPOCHS", "1"),
            S8_SUBSET=os.environ.get("S8_SUBSET", "2000"))
        for notebook in (spec["file"] for spec in make_notebooks.LESSONS.values()):
            content = work / f"content-{notebook[:-6]}"  # a fresh /content for each notebook
            content.mkdir()
            seen = rehearse(notebook, content)
            problems = []
            if seen["cwd"] != str(content / name):
                problems.append(f"ran in {seen['cwd']}, not in the clone")
            if seen["ipywidgets"] != "7.7.1":
                problems.append(f"ipywidgets {seen['ipywidgets']}, not Colab's 7.7.1")
            if not seen["torchsummary"].startswith(str(site)):
                problems.append(f"torchsummary from {seen['torchsummary']}, not installed by the set-up cell")
            if problems:
                sys.exit(f"colab rehearsal: {notebook}: " + "; ".join(problems))
            print(f"{notebook}: ran on a fake Colab from a clone, ipywidgets {seen['ipywidgets']}, "
                  "torchsummary installed by the set-up cell", flush=True)
    finally:
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("colab rehearsal: all three notebooks ran")


if __name__ == "__main__":
    main()
