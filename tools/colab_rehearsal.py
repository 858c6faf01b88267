"""Rehearse the notebooks' set-up cell as Colab runs it, here: from a clone, from files already there and from an
uploaded zip, in a kernel with Colab's packages and a fake google.colab. See docs/development.md#tests."""

import argparse
import json
import os
import re
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
import colab  # noqa: E402

COLAB_PACKAGES = ["ipywidgets==7.7.1", "widgetsnbextension~=3.6.0"]
HIDDEN = ("ipywidgets", "widgetsnbextension", "jupyterlab_widgets", "torchsummary")  # Colab's own, or absent
KERNEL = "s8-colab-rehearsal"
CASES = ("address", "files", "upload", "repository-zip")
BASE_PATH = os.environ.get("PATH", "")

STARTUP = '''# Colab imports google.colab when its kernel starts; the notebooks' set-up cell looks for it.
import sys
sys.path.insert(0, {fake!r})
import google.colab
'''

FAKE_FILES = '''"""Stands in for google.colab.files: upload() saves the file the rehearsal offers where the
notebook runs, as Colab does, and returns {name: bytes}."""
import os
from pathlib import Path


def upload():
    offered = os.environ.get("S8_REHEARSAL_UPLOAD")
    if not offered:
        raise RuntimeError("the set-up cell asked for an upload in a case that offers none")
    data = Path(offered).read_bytes()
    Path(Path(offered).name).write_bytes(data)
    return {Path(offered).name: data}
'''

FAKE_GIT = '''#!/bin/sh
# Stands in for git where no address is configured: any call is recorded, and fails.
echo "$@" >> "$S8_REHEARSAL_GIT_LOG"
exit 1
'''

IMPORTS = "import models, utils, data, plots\nfrom lab import experiments, results"

CHECK = '''import importlib.util, json, os, ipywidgets, explorer
print("REHEARSAL " + json.dumps({
    "cwd": os.getcwd(), "modules": os.path.dirname(os.path.abspath(models.__file__)),
    "results": sorted(results.load_results()), "figure": os.path.isfile("images/batch_size.png"),
    "ipywidgets": ipywidgets.__version__, "torchsummary": importlib.util.find_spec("torchsummary").origin,
    "explorer": isinstance(explorer.mistake_explorer([], ["cat", "dog"]), ipywidgets.VBox)}))'''


def colab_like_env(work):
    """A venv that sees this machine's packages except HIDDEN, with COLAB_PACKAGES installed."""
    filtered = work / "site-packages-without-colab-differences"
    filtered.mkdir()
    for entry in Path(sysconfig.get_paths()["purelib"]).iterdir():
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
    (fake / "google" / "colab" / "files.py").write_text(FAKE_FILES)
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


def committed_setup():
    """The notebooks' set-up cell, the same in all three."""
    found = {c.source for notebook in ("S8_BN.ipynb", "S8_LN.ipynb", "S8_GN.ipynb")
             for c in nbformat.read(ROOT / notebook, as_version=4).cells
             if c.cell_type == "code" and "google.colab" in c.source}
    if len(found) != 1:
        sys.exit(f"colab rehearsal: {len(found)} different set-up cells in the notebooks, not one; "
                 "rebuild them with python tools/build_notebooks.py")
    return found.pop()


def rehearse(setup, content):
    """Run the set-up cell twice, the imports and the check in the bare folder `content`; return what it printed."""
    sources = (setup, setup, IMPORTS, CHECK)  # the set-up cell twice: the second run must change nothing
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(source, id=f"rehearsal-{k}")
                                         for k, source in enumerate(sources)])
    NotebookClient(nb, kernel_name=KERNEL, timeout=300, resources={"metadata": {"path": str(content)}}).execute()
    printed = "".join(o.get("text", "") for o in nb.cells[-1].outputs)
    return json.loads(printed.split("REHEARSAL ", 1)[1])


def prepare(case, work, content, setup):
    """Set this process's environment (which the kernel inherits) and `content` for `case`; return
    the set-up cell to run, the folder the project should end up in, and the fake git's log."""
    git_log = work / f"git-calls-{case}.log"
    for name in ("S8_REPO_URL", "S8_REHEARSAL_UPLOAD"):
        os.environ.pop(name, None)
    os.environ["PATH"] = os.pathsep.join([str(work / "fake-git"), BASE_PATH]) if case != "address" else BASE_PATH
    os.environ["S8_REHEARSAL_GIT_LOG"] = str(git_log)
    if case == "address":
        os.environ["S8_REPO_URL"] = str(ROOT)
        return setup, content / re.search(r'^PROJECT = "(.+)"', setup, re.M).group(1), git_log
    if case == "files":
        for path in colab.bundle_files(ROOT):
            target = content / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(path, target)
        return setup, content, git_log
    if case == "upload":
        upload, top = work / colab.BUNDLE, ""
        colab.write_bundle(upload, ROOT)
    else:  # what GitHub's "Download ZIP" gives a student with a browser alone: the repository in one top folder
        upload, top = work / "s8-main.zip", "s8-main"
        subprocess.run(["git", "-C", str(ROOT), "archive", "--format=zip", f"--prefix={top}/", "-o", str(upload),
                        "HEAD"], check=True, env={**os.environ, "PATH": BASE_PATH})
    os.environ["S8_REHEARSAL_UPLOAD"] = str(upload)
    return colab.setup_cell(None), content / colab.project_folder(None) / top, git_log


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--work", help="folder for the environment and the runs (default: a temporary one, removed)")
    args = p.parse_args(argv)
    work = Path(args.work or tempfile.mkdtemp(prefix="s8-colab-"))
    work.mkdir(parents=True, exist_ok=True)
    work = work.resolve()  # the kernel's os.getcwd() names the real path
    setup = committed_setup()
    saved = os.environ.copy()
    try:
        python, site = colab_like_env(work)
        (work / "fake-git").mkdir()
        (work / "fake-git" / "git").write_text(FAKE_GIT)
        (work / "fake-git" / "git").chmod(0o755)
        os.environ["JUPYTER_PATH"] = str(kernel(work, python))
        for case in CASES:
            content = work / f"content-{case}"  # a fresh /content for each case
            content.mkdir()
            cell, project, git_log = prepare(case, work, content, setup)
            seen = rehearse(cell, content)
            problems = []
            if seen["cwd"] != str(project) or seen["modules"] != str(project):
                problems.append(f"ran in {seen['cwd']} with the modules of {seen['modules']}, not in {project}")
            if seen["results"] != ["bn", "gn", "ln"] or not seen["figure"]:
                problems.append(f"saved results {seen['results']}, figure {seen['figure']}: not all came along")
            if seen["ipywidgets"] != "7.7.1" or not seen["explorer"]:
                problems.append(f"ipywidgets {seen['ipywidgets']}, not Colab's 7.7.1, or the explorer did not build")
            if not seen["torchsummary"].startswith(str(site)):
                problems.append(f"torchsummary from {seen['torchsummary']}, not installed by the set-up cell")
            if git_log.exists():
                problems.append(f"git was run with no address configured: {git_log.read_text().strip()}")
            if problems:
                sys.exit(f"colab rehearsal: {case}: " + "; ".join(problems))
            print(f"{case}: the set-up cell (run twice) found the project in {project.relative_to(work)}, "
                  "the modules import" + ("" if case == "address" else ", git never ran"), flush=True)
    finally:
        os.environ.clear()
        os.environ.update(saved)
        if not args.work:
            shutil.rmtree(work, ignore_errors=True)
    print("colab rehearsal: the set-up cell works from a clone, from files already there, from the uploaded bundle and "
          "from a repository's Download ZIP")


if __name__ == "__main__":
    main()
