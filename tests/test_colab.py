"""The Colab path without Colab: badges and clone addresses agree, and the notebooks' set-up cell is
run with a faked `google.colab` module against a clone address that points at a local repository."""

import importlib.util
import re
import subprocess
import sys
import types
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import make_notebooks  # noqa: E402

NOTEBOOKS = [spec["file"] for spec in make_notebooks.LESSONS.values()]
CLONE_URL = re.compile(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?[\"']")


def sources(path):
    """Every cell's source of a notebook, joined."""
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)


def setup_source(notebook="S8_BN.ipynb"):
    nb = nbformat.read(ROOT / notebook, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)


def test_every_badge_and_clone_address_names_one_repository():
    readme = (ROOT / "README.md").read_text()
    badges = make_notebooks.BADGE_URL.findall(readme)
    linked = re.findall(r"colab\.research\.google\.com/github/[\w.-]+/[\w.-]+/blob/main/(\S+?\.ipynb)", readme)
    assert sorted(linked) == sorted(NOTEBOOKS)  # one badge per notebook, each to a notebook that exists
    repos = set(badges)
    for name in NOTEBOOKS:
        text = sources(ROOT / name)
        assert f"/blob/main/{name})" in text  # the notebook's own badge opens itself
        clones = CLONE_URL.findall(text)
        assert len(clones) == 1  # the set-up cell's
        repos |= set(make_notebooks.BADGE_URL.findall(text)) | set(clones)
    assert len(repos) == 1, repos


def test_make_notebooks_repo_rewrites_badges_and_set_up_cell(tmp_path, monkeypatch):
    readme = tmp_path / "README.md"
    readme.write_text((ROOT / "README.md").read_text())
    monkeypatch.setattr(make_notebooks, "ROOT", tmp_path)
    make_notebooks.main(["--repo", "jane/s8-fork"])
    assert make_notebooks.readme_repo(readme) == "jane/s8-fork"
    assert set(make_notebooks.BADGE_URL.findall(readme.read_text())) == {"jane/s8-fork"}
    for name in NOTEBOOKS:
        text = sources(tmp_path / name)
        assert set(CLONE_URL.findall(text)) == {"jane/s8-fork"} and "s8-normalization/" not in text
    # Without --repo and without a GitHub origin, the address README.md names stays.
    monkeypatch.setattr(make_notebooks, "origin_repo", lambda: None)
    make_notebooks.main([])
    assert set(CLONE_URL.findall(sources(tmp_path / "S8_GN.ipynb"))) == {"jane/s8-fork"}


def test_origin_remote_on_github_is_the_default(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert make_notebooks.origin_repo(tmp_path) is None
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:jane/s8.git"], check=True)
    assert make_notebooks.origin_repo(tmp_path) == "jane/s8"


def test_bad_repo_is_refused(capsys):
    with pytest.raises(SystemExit):
        make_notebooks.main(["--repo", "https://github.com/jane"])
    assert "OWNER/NAME" in capsys.readouterr().err


def test_regenerating_keeps_the_outputs_of_unchanged_cells():
    for norm, spec in make_notebooks.LESSONS.items():
        committed = nbformat.read(ROOT / spec["file"], as_version=4)
        rebuilt = make_notebooks.build(norm, make_notebooks.readme_repo(ROOT / "README.md"), committed)
        assert [c.source for c in rebuilt.cells] == [c.source for c in committed.cells]  # committed = template
        assert [c.get("outputs") for c in rebuilt.cells] == [c.get("outputs") for c in committed.cells]


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A fake Colab: `google.colab` imported, a bare /content folder as the working directory,
    pip calls recorded instead of run, and torchsummary absent until 'installed'."""
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    pip_calls = []
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if cmd[1:3] == ["-m", "pip"]:
            pip_calls.append(cmd)
            return subprocess.CompletedProcess(cmd, 0)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchsummary" and not pip_calls else real_find_spec(name, *a))
    return types.SimpleNamespace(content=content, pip_calls=pip_calls)


def local_repo(tmp_path):
    """A git repository holding a stand-in models.py: what the clone address points at."""
    repo = tmp_path / "origin"
    repo.mkdir()
    (repo / "models.py").write_text("# stand-in\n")
    for cmd in (["init", "-q"], ["add", "models.py"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(["git", "-C", str(repo), *cmd], check=True)
    return repo


def run_cell(source):
    exec(compile(source, "setup-cell", "exec"), {})


def test_set_up_cell_does_nothing_off_colab(tmp_path, monkeypatch):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    run_cell(setup_source())
    assert calls == [] and Path.cwd() == tmp_path


def test_set_up_cell_clones_installs_torchsummary_only_and_is_safe_twice(tmp_path, colab, monkeypatch):
    monkeypatch.setenv("S8_REPO_URL", str(local_repo(tmp_path)))
    run_cell(setup_source())
    name = make_notebooks.readme_repo(ROOT / "README.md").split("/")[1]
    assert Path.cwd() == colab.content / name and (Path.cwd() / "models.py").is_file()
    assert len(colab.pip_calls) == 1 and colab.pip_calls[0][-2:] == ["--no-deps", "torchsummary"]
    assert not {"torch", "torchvision", "ipywidgets"} & set(colab.pip_calls[0])
    run_cell(setup_source())  # again, from inside the clone: no second clone, no second install
    assert Path.cwd() == colab.content / name and len(colab.pip_calls) == 1
    monkeypatch.chdir(colab.content)  # again, from /content, with the clone already there
    run_cell(setup_source())
    assert Path.cwd() == colab.content / name


def test_set_up_cell_skips_cloning_when_the_files_are_uploaded(colab, monkeypatch):
    (colab.content / "models.py").write_text("# uploaded\n")
    monkeypatch.setenv("S8_REPO_URL", str(colab.content / "nowhere"))  # would fail if tried
    run_cell(setup_source())
    assert Path.cwd() == colab.content and sorted(p.name for p in colab.content.iterdir()) == ["models.py"]


def test_failed_clone_says_what_to_do_in_one_paragraph(tmp_path, colab, monkeypatch):
    monkeypatch.setenv("S8_REPO_URL", str(tmp_path / "no-such-repo"))
    with pytest.raises(SystemExit) as stop:
        run_cell(setup_source())
    message = str(stop.value)
    assert f"Could not fetch the project from {tmp_path / 'no-such-repo'}" in message
    assert "upload" in message and "S8_REPO_URL" in message and "Drive" in message
    assert colab.pip_calls == [] and Path.cwd() == colab.content


def test_readme_file_table_names_every_file_of_the_tree():
    """Top-level files by name, tools/ and .ci/ files by path, other folders as 'folder/'."""
    tracked = subprocess.run(["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True).stdout
    expected = set()
    for path in tracked.split():
        folder = path.split("/")[0]
        if path in ("README.md", ".gitignore"):
            continue
        expected.add(path if "/" not in path or folder in ("tools", ".ci") else folder + "/")
    table = (ROOT / "README.md").read_text().split("| file | job |", 1)[1].split("\n\n", 1)[0]
    assert expected - set(re.findall(r"`([^`]+)`", table)) == set()


def test_figures_are_stored_as_palette_pngs_once():
    import base64
    import io

    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4, (60, 80, 4), dtype=np.uint8) * 60  # few colours, like a plot
    pixels[..., 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    rgba = base64.b64encode(buffer.getvalue()).decode()
    committed = make_notebooks.build("bn", "jane/s8")
    k = next(k for k, c in enumerate(committed.cells) if c.source == "plots.plot_samples(data)")
    committed.cells[k].outputs = [nbformat.v4.new_output("display_data", data={"image/png": rgba})]
    rebuilt = make_notebooks.build("bn", "jane/s8", committed)
    stored = rebuilt.cells[k].outputs[0]["data"]["image/png"]
    image = Image.open(io.BytesIO(base64.b64decode(stored)))
    assert image.mode == "P" and image.size == (80, 60)
    assert np.array_equal(np.asarray(image.convert("RGB")), pixels[..., :3])  # at most 64 colours: kept exactly
    assert make_notebooks.palette_png(stored) == stored  # regenerating changes nothing
