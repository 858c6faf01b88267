"""The notebooks: built from their jupytext sources in notebooks/, the Colab badges and clone addresses
agree, and the set-up cell runs with a faked `google.colab` module against a local repository."""

import base64
import importlib.util
import io
import re
import shutil
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tools"))
import build_notebooks  # noqa: E402
import colab as colab_tool  # noqa: E402

NOTEBOOKS = list(build_notebooks.NOTEBOOKS)
LESSONS = NOTEBOOKS[:3]
CLONE_URL = re.compile(r"https://github\.com/([\w.-]+/[\w.-]+?)(?:\.git)?[\"']")


def sources(path):
    """Every cell's source of a notebook, joined."""
    return "\n".join(c.source for c in nbformat.read(path, as_version=4).cells)


def setup_source(notebook="S8_BN.ipynb"):
    nb = nbformat.read(ROOT / notebook, as_version=4)
    return next(c.source for c in nb.cells if c.cell_type == "code" and "google.colab" in c.source)


def built(notebook):
    return build_notebooks.build(notebook)


README_WITH_SECTION = """# S8

A badge outside the generated section names nothing:
[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)](https://colab.research.google.com/github/someone/elsewhere/blob/main/S8_BN.ipynb)

<!-- colab:start -->
{body}
<!-- colab:end -->

The rest of the README.
"""


def section(readme):
    return readme.read_text().split("<!-- colab:start -->", 1)[1].split("<!-- colab:end -->", 1)[0]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """The tools pointed at a scratch project: its README has a colab section, its notebooks/ is a copy of
    this one's, and it has no GitHub origin."""
    root = tmp_path / "project"
    shutil.copytree(ROOT / "notebooks", root / "notebooks")
    (root / "README.md").write_text(README_WITH_SECTION.format(body="(to be generated)"))
    monkeypatch.setattr(colab_tool, "ROOT", root)
    monkeypatch.setattr(build_notebooks, "ROOT", root)
    monkeypatch.setattr(build_notebooks, "SOURCES", root / "notebooks")
    monkeypatch.setattr(colab_tool, "origin_repo", lambda: None)
    return root


def test_the_committed_notebooks_are_what_their_sources_build():
    assert build_notebooks.out_of_date(ROOT) == []


def test_a_notebook_that_disagrees_with_its_source_is_named(project):
    build_notebooks.main([])
    assert build_notebooks.out_of_date(project) == []
    lesson = project / "notebooks" / "lesson_train.py"
    lesson.write_text(lesson.read_text().replace("history = utils.fit(", "history = utils.fit(  # edited\n    "))
    assert build_notebooks.out_of_date(project) == LESSONS  # the shared part is in every lesson
    with pytest.raises(SystemExit, match="S8_BN.ipynb, S8_LN.ipynb, S8_GN.ipynb"):
        build_notebooks.main(["--check"])


def test_includes_put_the_shared_part_and_the_set_up_cell_in_place():
    cells = built("S8_GN.ipynb").cells
    assert not any(build_notebooks.INCLUDE.fullmatch(c.source.strip()) for c in cells)
    assert cells[1].source == 'NORM = "gn"  # the norm this lesson trains'
    assert sum("google.colab" in c.source for c in cells) == 1
    assert [c.id for c in cells] == [f"S8_GN-{k:02d}" for k in range(len(cells))]


def test_rebuilding_keeps_the_outputs_of_unchanged_cells_and_drops_those_of_changed_ones(project):
    committed = nbformat.read(ROOT / "S8_BN.ipynb", as_version=4)
    rebuilt = build_notebooks.build("S8_BN.ipynb", committed, ROOT / "notebooks")
    assert [c.get("outputs") for c in rebuilt.cells] == [c.get("outputs") for c in committed.cells]
    lesson = project / "notebooks" / "lesson_start.py"
    line = "normalized_over_explorer()"
    lesson.write_text(lesson.read_text().replace(line + "\n", line + "  # changed\n"))
    changed = build_notebooks.build("S8_BN.ipynb", committed, project / "notebooks")
    cell = [c for c in changed.cells if line + "  # changed" in c.source]
    assert cell[0].outputs == [] and sum(bool(c.get("outputs")) for c in changed.cells) == sum(
        bool(c.get("outputs")) for c in committed.cells) - 1


def test_notebooks_name_the_repository_of_readmes_colab_section_or_none():
    repo = colab_tool.readme_repo(ROOT / "README.md")
    for name in NOTEBOOKS:
        text = sources(ROOT / name)
        if repo:
            assert f"/blob/main/{name})" in text  # the notebook's own badge opens itself
            assert colab_tool.BADGE_URL.findall(text) == [repo] and CLONE_URL.findall(text) == [repo]
        else:  # no badge, and the set-up cell has no default clone address
            assert "colab.research.google.com" not in text and CLONE_URL.findall(text) == []
            assert 'os.environ.get("S8_REPO_URL", "")' in text


def test_colab_repo_rewrites_badges_and_set_up_cell(project):
    readme = project / "README.md"
    colab_tool.main(["--repo", "jane/s8-fork"])
    assert colab_tool.readme_repo(readme) == "jane/s8-fork"
    body = section(readme)
    assert set(colab_tool.BADGE_URL.findall(body)) == {"jane/s8-fork"}
    assert sorted(re.findall(r"/blob/main/(\S+?\.ipynb)\)", body)) == sorted(NOTEBOOKS)  # a row per notebook
    assert "someone/elsewhere" in readme.read_text() and readme.read_text().endswith("The rest of the README.\n")
    for name in NOTEBOOKS:
        text = sources(project / name)
        assert CLONE_URL.findall(text) == ["jane/s8-fork"]
        assert colab_tool.BADGE_URL.findall(text) == ["jane/s8-fork"] and f"/blob/main/{name})" in text
        assert 'PROJECT = "s8-fork"' in text
    assert build_notebooks.out_of_date(project) == []
    # Without --repo and without a GitHub origin, the address README.md's section names stays.
    colab_tool.main([])
    assert set(CLONE_URL.findall(sources(project / "S8_GN.ipynb"))) == {"jane/s8-fork"}
    assert colab_tool.BADGE_URL.findall(sources(project / "S8_GN.ipynb")) == ["jane/s8-fork"]  # one badge, not two


def test_no_repository_known_means_no_badge_and_no_clone_address(project, capsys):
    colab_tool.main(["--repo", "jane/s8"])
    readme = project / "README.md"
    readme.write_text(README_WITH_SECTION.format(body="(to be generated)"))
    assert colab_tool.readme_repo(readme) is None
    colab_tool.main([])  # the notebooks' sources name jane/s8, but README.md is where the address lives
    assert "no repository known" in capsys.readouterr().out
    for name in NOTEBOOKS:
        text = sources(project / name)
        assert "colab.research.google.com" not in text and "github.com" not in text
        assert 'REPO_URL = os.environ.get("S8_REPO_URL", "")' in text and 'PROJECT = "s8-project"' in text
    body = section(readme)
    assert colab_tool.BADGE_URL.findall(body) == []
    assert "python tools/colab.py --bundle" in body and "File > Upload notebook" in body
    assert "python tools/colab.py --repo OWNER/NAME" in body
    assert colab_tool.readme_repo(readme) is None  # and it stays so on the next run


def test_readme_badges_outside_the_colab_section_name_nothing(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(f"# S8\n\n{colab_tool.badge('jane/s8', 'S8_BN.ipynb')}\n")
    assert colab_tool.readme_repo(readme) is None
    readme.write_text(README_WITH_SECTION.format(body=colab_tool.colab_section("jane/s8")))
    assert colab_tool.readme_repo(readme) == "jane/s8"


def test_origin_remote_on_github_is_the_default(tmp_path):
    subprocess.run(["git", "init", "-q", str(tmp_path)], check=True)
    assert colab_tool.origin_repo(tmp_path) is None
    subprocess.run(["git", "-C", str(tmp_path), "remote", "add", "origin", "git@github.com:jane/s8.git"], check=True)
    assert colab_tool.origin_repo(tmp_path) == "jane/s8"


def test_bad_repo_is_refused(capsys):
    with pytest.raises(SystemExit):
        colab_tool.main(["--repo", "https://github.com/jane"])
    assert "OWNER/NAME" in capsys.readouterr().err


def fake_project(root):
    """A project tree with a file in every place --bundle takes from or leaves out."""
    for name in ("models.py", "utils.py", "lab/__init__.py", "lab/results.py", "lab/__pycache__/results.pyc",
                 "results/bn.json", "results/sweep/sweep.json", "images/bn.png",
                 "checkpoints/bn.pt", "results/.bn.json.tmp123", "results/__pycache__/x.pyc", "tests/test_x.py",
                 "tools/colab.py", ".git/HEAD", ".cache/cifar.npz", "data/cifar.tar.gz", "README.md", "S8_BN.ipynb",
                 "notebooks/bn.py"):
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_text(f"# {name}\n")
    return root


BUNDLED = ["checkpoints/bn.pt", "images/bn.png", "lab/__init__.py", "lab/results.py", "models.py", "results/bn.json",
           "results/sweep/sweep.json", "utils.py"]


def test_bundle_holds_the_modules_the_lab_results_images_and_checkpoints_only(project, monkeypatch, capsys):
    fake_project(project)
    notebooks_before = sorted(p.name for p in project.glob("*.ipynb"))
    monkeypatch.setattr(build_notebooks, "build", lambda *a, **k: pytest.fail("--bundle wrote a notebook"))
    colab_tool.main(["--bundle"])
    bundle = project / "s8-bundle.zip"
    assert sorted(zipfile.ZipFile(bundle).namelist()) == BUNDLED
    assert zipfile.ZipFile(bundle).read("models.py") == b"# models.py\n"
    out = capsys.readouterr().out
    assert str(bundle) in out and "MB" in out
    assert sorted(p.name for p in project.glob("*.ipynb")) == notebooks_before
    colab_tool.main(["--bundle", str(project / "elsewhere" / "b.zip")])
    assert sorted(zipfile.ZipFile(project / "elsewhere" / "b.zip").namelist()) == BUNDLED
    with pytest.raises(SystemExit):
        colab_tool.main(["--bundle", "--repo", "jane/s8"])  # only the zip, or only the badges


def test_bundle_of_this_checkout_leaves_out_tests_tools_and_git(tmp_path):
    bundle = tmp_path / "s8-bundle.zip"
    colab_tool.write_bundle(bundle, ROOT)
    names = zipfile.ZipFile(bundle).namelist()
    for module in ("models.py", "utils.py", "recipes.py", "data.py", "plots.py", "atomic.py", "explorer.py",
                   "exercises.py", "lab/__init__.py", "lab/results.py", "lab/experiments.py", "lab/figures.py"):
        assert module in names  # the notebooks import the lab's records: `import lab` works on Colab
    assert "results/bn.json" in names and "images/batch_size.png" in names and "checkpoints/bn.pt" in names
    assert not [n for n in names if n.split("/")[0] in ("tests", "tools", ".git", "data", ".cache", "notebooks")]


@pytest.fixture
def colab(tmp_path, monkeypatch):
    """A fake Colab: `google.colab` imported, a bare /content folder as the working directory, pip
    calls recorded instead of run, torchsummary absent until 'installed', git calls recorded (and
    run), and `files.upload()` returning (and, as Colab does, saving) what a test puts in `uploads`."""
    google = types.ModuleType("google")
    google.colab = types.ModuleType("google.colab")
    google.colab.files = types.ModuleType("google.colab.files")
    monkeypatch.setitem(sys.modules, "google", google)
    monkeypatch.setitem(sys.modules, "google.colab", google.colab)
    monkeypatch.setitem(sys.modules, "google.colab.files", google.colab.files)
    content = tmp_path / "content"
    content.mkdir()
    monkeypatch.chdir(content)
    fake = types.SimpleNamespace(content=content, pip_calls=[], git_calls=[], uploads={}, upload_calls=0)

    def upload():
        fake.upload_calls += 1
        for name, data in fake.uploads.items():
            Path(name).write_bytes(data)
        return dict(fake.uploads)

    google.colab.files.upload = upload
    real_run = subprocess.run

    def run(cmd, *args, **kwargs):
        if cmd[1:3] == ["-m", "pip"]:
            fake.pip_calls.append(cmd)
            return subprocess.CompletedProcess(cmd, 0)
        if cmd[0] == "git":
            fake.git_calls.append(cmd)
        return real_run(cmd, *args, **kwargs)

    monkeypatch.setattr(subprocess, "run", run)
    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "torchsummary" and not fake.pip_calls else real_find_spec(name, *a))
    monkeypatch.delenv("S8_REPO_URL", raising=False)
    return fake


REAL_RUN = subprocess.run  # for the tests' own git calls, which the fake Colab must not record


def local_repo(tmp_path):
    """A git repository holding a stand-in models.py: what the clone address points at."""
    repo = tmp_path / "origin"
    repo.mkdir()
    (repo / "models.py").write_text("# stand-in\n")
    for cmd in (["init", "-q"], ["add", "models.py"],
                ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        REAL_RUN(["git", "-C", str(repo), *cmd], check=True)
    return repo


def bundle_bytes(tmp_path):
    """The zip that --bundle writes, of a small project tree."""
    path = tmp_path / "made-here" / "s8-bundle.zip"
    colab_tool.write_bundle(path, fake_project(tmp_path / "tree"))
    return path.read_bytes()


def zip_bytes(members):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as bundle:
        for name in members:
            bundle.writestr(name, "print('pwned')\n")
    return buffer.getvalue()


def run_cell(source):
    exec(compile(source, "setup-cell", "exec"), {})


@pytest.mark.parametrize("source", [setup_source(), colab_tool.setup_cell(None),
                                    colab_tool.setup_cell("jane/s8")])
def test_set_up_cell_does_nothing_off_colab(tmp_path, monkeypatch, source):
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    monkeypatch.chdir(tmp_path)
    calls = []
    monkeypatch.setattr(subprocess, "run", lambda *a, **k: calls.append(a))
    run_cell(source)
    assert calls == [] and Path.cwd() == tmp_path and list(tmp_path.iterdir()) == []


def test_set_up_cell_clones_installs_torchsummary_only_and_is_safe_twice(tmp_path, colab, monkeypatch):
    monkeypatch.setenv("S8_REPO_URL", str(local_repo(tmp_path)))
    run_cell(setup_source())
    name = colab_tool.project_folder(colab_tool.readme_repo(ROOT / "README.md"))
    assert Path.cwd() == colab.content / name and (Path.cwd() / "models.py").is_file()
    assert len(colab.pip_calls) == 1 and colab.pip_calls[0][-2:] == ["--no-deps", "torchsummary"]
    assert not {"torch", "torchvision", "ipywidgets"} & set(colab.pip_calls[0])
    run_cell(setup_source())  # again, from inside the clone: no second clone, no second install
    assert Path.cwd() == colab.content / name and len(colab.pip_calls) == 1
    monkeypatch.chdir(colab.content)  # again, from /content, with the clone already there
    run_cell(setup_source())
    assert Path.cwd() == colab.content / name
    assert len(colab.git_calls) == 1 and colab.upload_calls == 0


@pytest.mark.parametrize("repo", [None, "jane/s8-fork"])
def test_set_up_cell_clones_from_s8_repo_url_when_set(tmp_path, colab, monkeypatch, repo):
    origin = local_repo(tmp_path)
    monkeypatch.setenv("S8_REPO_URL", str(origin))
    run_cell(colab_tool.setup_cell(repo))
    assert Path.cwd() == colab.content / colab_tool.project_folder(repo)
    assert (Path.cwd() / "models.py").read_text() == "# stand-in\n"
    assert [cmd[-2:] for cmd in colab.git_calls] == [[str(origin), colab_tool.project_folder(repo)]]
    assert colab.upload_calls == 0


def test_set_up_cell_clones_the_generated_address_when_s8_repo_url_is_unset(colab, monkeypatch):
    def no_network(cmd, *args, **kwargs):
        colab.git_calls.append(cmd)
        return subprocess.CompletedProcess(cmd, 128, stdout="", stderr="fatal: unable to access (no network here)")

    monkeypatch.setattr(subprocess, "run", no_network)
    with pytest.raises(SystemExit, match="Could not fetch the project from https://github.com/jane/s8-fork"):
        run_cell(colab_tool.setup_cell("jane/s8-fork"))
    assert colab.git_calls[0][:4] == ["git", "clone", "--depth", "1"]
    assert "https://github.com/jane/s8-fork" in colab.git_calls[0] and colab.upload_calls == 0


@pytest.mark.parametrize("source, address", [(setup_source(), "nowhere"), (colab_tool.setup_cell(None), None)])
def test_set_up_cell_uses_the_files_already_here(colab, monkeypatch, source, address):
    (colab.content / "models.py").write_text("# uploaded\n")
    if address:  # a clone would fail if tried; without one, an upload would be asked for (and get nothing)
        monkeypatch.setenv("S8_REPO_URL", str(colab.content / address))
    run_cell(source)
    assert Path.cwd() == colab.content and sorted(p.name for p in colab.content.iterdir()) == ["models.py"]
    assert colab.git_calls == [] and colab.upload_calls == 0 and len(colab.pip_calls) == 1


def test_failed_clone_says_what_to_do_in_one_paragraph(tmp_path, colab, monkeypatch):
    monkeypatch.setenv("S8_REPO_URL", str(tmp_path / "no-such-repo"))
    with pytest.raises(SystemExit) as stop:
        run_cell(setup_source())
    message = str(stop.value)
    assert f"Could not fetch the project from {tmp_path / 'no-such-repo'}" in message
    assert "upload" in message and "S8_REPO_URL" in message and "Drive" in message and "--bundle" in message
    assert colab.pip_calls == [] and Path.cwd() == colab.content


def test_set_up_cell_without_an_address_unpacks_the_uploaded_bundle_once(tmp_path, colab, monkeypatch):
    colab.uploads = {"s8-bundle.zip": bundle_bytes(tmp_path)}
    run_cell(colab_tool.setup_cell(None))
    project = colab.content / "s8-project"
    assert Path.cwd() == project
    assert sorted(p.relative_to(project).as_posix() for p in project.rglob("*") if p.is_file()) == BUNDLED
    assert colab.git_calls == [] and colab.upload_calls == 1 and len(colab.pip_calls) == 1
    run_cell(colab_tool.setup_cell(None))  # again, from inside the project folder
    assert Path.cwd() == project
    monkeypatch.chdir(colab.content)  # again, from /content, with the unpacked folder there
    run_cell(colab_tool.setup_cell(None))
    assert Path.cwd() == project and colab.upload_calls == 1 and colab.git_calls == []


def test_an_empty_s8_repo_url_asks_for_the_bundle_even_with_an_address(tmp_path, colab, monkeypatch):
    monkeypatch.setenv("S8_REPO_URL", "")  # the failed-clone message's way out
    colab.uploads = {"s8-bundle (1).zip": bundle_bytes(tmp_path), "notes.txt": b"not the bundle"}
    run_cell(colab_tool.setup_cell("jane/s8-fork"))
    assert Path.cwd() == colab.content / "s8-fork" and (Path.cwd() / "models.py").is_file()
    assert colab.git_calls == []


def test_set_up_cell_takes_a_repository_zip_with_one_top_folder(colab, monkeypatch):
    """GitHub's Download ZIP holds NAME-main/: the cell changes into the folder that holds models.py, also when run
    again from /content."""
    colab.uploads = {"s8-main.zip": zip_bytes(["s8-main/models.py", "s8-main/lab/results.py", "s8-main/README.md"])}
    run_cell(colab_tool.setup_cell(None))
    assert Path.cwd() == colab.content / "s8-project" / "s8-main" and (Path.cwd() / "lab" / "results.py").is_file()
    monkeypatch.chdir(colab.content)
    run_cell(colab_tool.setup_cell(None))
    assert Path.cwd() == colab.content / "s8-project" / "s8-main" and colab.upload_calls == 1


def test_set_up_cell_refuses_a_zip_without_the_project_naming_every_route(colab):
    colab.uploads = {"photos.zip": zip_bytes(["holiday/a.jpg"])}
    with pytest.raises(SystemExit) as stop:
        run_cell(colab_tool.setup_cell(None))
    message = str(stop.value)
    assert "photos.zip holds no models.py" in message
    assert "Download ZIP" in message and "--bundle" in message and "Drive" in message and "S8_REPO_URL" in message
    assert Path.cwd() == colab.content


@pytest.mark.parametrize("uploads", [{}, {"a.zip": zip_bytes(["models.py"]), "b.zip": zip_bytes(["models.py"])}])
def test_set_up_cell_wants_exactly_one_zip(colab, uploads):
    colab.uploads = uploads
    with pytest.raises(SystemExit, match="Upload one .zip"):
        run_cell(colab_tool.setup_cell(None))
    assert Path.cwd() == colab.content and not (colab.content / "s8-project").exists()


@pytest.mark.parametrize("evil", ["../evil.py", "results/../../evil.py", "results\\..\\..\\evil.py", "ABSOLUTE",
                                  "C:/evil.py"])
def test_set_up_cell_refuses_a_zip_that_writes_outside_its_folder(tmp_path, colab, evil):
    if evil == "ABSOLUTE":
        evil = str(tmp_path / "evil.py")
    colab.uploads = {"s8-bundle.zip": zip_bytes(["models.py", evil])}
    with pytest.raises(SystemExit) as stop:
        run_cell(colab_tool.setup_cell(None))
    message = str(stop.value)
    assert repr(evil) in message and "python tools/colab.py --bundle" in message
    assert "\n" not in message  # one line
    assert not (tmp_path / "evil.py").exists() and not (colab.content.parent / "evil.py").exists()
    assert sorted(p.name for p in colab.content.iterdir()) == ["s8-bundle.zip"]  # nothing unpacked at all
    assert Path.cwd() == colab.content and colab.pip_calls == [] and colab.git_calls == []


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
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 4, (60, 80, 4), dtype=np.uint8) * 60  # few colours, like a plot
    pixels[..., 3] = 255
    buffer = io.BytesIO()
    Image.fromarray(pixels, "RGBA").save(buffer, "PNG")
    rgba = base64.b64encode(buffer.getvalue()).decode()
    committed = built("S8_compare.ipynb")
    k = next(k for k, c in enumerate(committed.cells) if c.source == "plots.plot_samples(data)")
    committed.cells[k].outputs = [nbformat.v4.new_output("display_data", data={"image/png": rgba})]
    rebuilt = build_notebooks.build("S8_compare.ipynb", committed)
    stored = rebuilt.cells[k].outputs[0]["data"]["image/png"]
    image = Image.open(io.BytesIO(base64.b64decode(stored)))
    assert image.mode == "P" and image.size == (80, 60)
    assert np.array_equal(np.asarray(image.convert("RGB")), pixels[..., :3])  # at most 64 colours: kept exactly
    assert build_notebooks.palette_png(stored) == stored  # rebuilding changes nothing


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_committed_notebooks_are_small_and_hold_no_widget_state(notebook):
    path = ROOT / notebook
    assert path.stat().st_size < 500_000
    nb = nbformat.read(path, as_version=4)
    assert "widgets" not in nb.metadata
    assert not any("application/vnd.jupyter.widget-view+json" in o.get("data", {})
                   for c in nb.cells for o in c.get("outputs", []))


def test_rebuilding_drops_progress_bars_left_without_their_widget():
    from nbformat.v4 import new_output

    old = built("S8_BN.ipynb")
    training = next(c for c in old.cells if c.cell_type == "code" and "utils.fit(" in c.source)
    table = new_output("stream", name="stdout", text="    1      1.7192     42.85%\n")
    bar = new_output("display_data", data={"text/plain": "epoch 1:   0%|          | 0/391 [00:00<?, ?batch/s]"})
    figure = new_output("display_data", data={"text/plain": "<Figure size 700x300 with 1 Axes>"})
    training.outputs = [bar, table, figure]
    again = build_notebooks.build("S8_BN.ipynb", old)
    assert next(c for c in again.cells if c.source == training.source).outputs == [table, figure]
    for notebook in NOTEBOOKS:  # the committed ones are clean
        assert not re.search(r"[0-9]+: +0%\|", (ROOT / notebook).read_text())


def test_student_cells_say_nothing_about_ci_or_nbval():
    for notebook in NOTEBOOKS:
        for cell in built(notebook).cells:
            assert not re.search(r"\bCI\b|nbval", cell.source, flags=re.I), (notebook, cell.source[:80])


@pytest.mark.parametrize("notebook", LESSONS)
def test_nbval_checks_the_output_of_each_lessons_model_cell_alone(notebook):
    """The tag, not a comment in the student's code, makes nbval compare the model cell's printout (its
    parameters and layers) with the committed one; every other cell only has to run."""
    from nbval.plugin import find_comment_markers, find_metadata_tags

    cells = built(notebook).cells
    checked = [c.source for c in cells if c.cell_type == "code" and dict(find_metadata_tags(c.metadata)).get("check")]
    assert len(checked) == 1 and checked[0].startswith("torch.manual_seed(SEED)\nmodel = S8_model(NORM, skips=SKIPS)")
    assert not any(dict(find_comment_markers(c.source)) for c in cells)


def test_the_compare_notebook_trains_nothing_and_links_each_lesson():
    text = "\n".join(c.source for c in built("S8_compare.ipynb").cells)
    assert "utils.fit(" not in text and "short_runs(" not in text
    for notebook in LESSONS:
        assert f"[`{notebook}`]({notebook})" in text
        assert "(S8_compare.ipynb)" in "\n".join(c.source for c in built(notebook).cells)  # and each links it


def test_notebooks_import_no_command_line_script():
    for notebook in NOTEBOOKS:
        text = "\n".join(c.source for c in built(notebook).cells if c.cell_type == "code")
        assert not re.search(r"^\s*(import|from) (run|lessons|benchmark)\b", text, flags=re.M), notebook


# A measured number: an accuracy or share ('69.2%'), a small difference ('1.7e-06') or a time ('1.455 ms');
# not a setting such as momentum 0.1, nor 'x0.25', 'C9' or a formula's index.
MEASURED = re.compile(r"(?<![\w.])\d+(?:\.\d+)?(?:%| ms\b)|\d\.\d+e-\d+")


def test_no_measured_number_is_typed_into_the_notebooks_words():
    """The numbers a lesson quotes come from its records, through experiments.show, not from markdown."""
    for notebook in NOTEBOOKS:
        for cell in built(notebook).cells:
            if cell.cell_type == "markdown":
                words = re.sub(r"\$\$.*?\$\$|\$[^$]*\$", "", cell.source, flags=re.S)  # formulas are not measurements
                assert not MEASURED.findall(words), (notebook, MEASURED.findall(words), cell.source[:60])


def test_readmes_lessons_section_is_what_the_records_render():
    from lab import experiments, results

    readme = (ROOT / "README.md").read_text()
    start, end = results.section_markers("lessons")
    assert readme.split(start, 1)[1].split(end, 1)[0].strip() == experiments.readme_lessons(ROOT)
    lessons = (ROOT / "docs" / "lessons.md").read_text()
    for name, experiment in experiments.EXPERIMENTS.items():
        start, end = results.section_markers(experiments.section_name(name))
        assert lessons.split(start, 1)[1].split(end, 1)[0].strip() == experiments.rendered(name, ROOT)[1], name


@pytest.mark.parametrize("notebook", NOTEBOOKS)
def test_students_see_no_lab_book_material(notebook):
    """No maintainer's data path, config dump or validation run tag, in the sources or the outputs."""
    text = (ROOT / notebook).read_text()
    assert "../shared" not in text and "TrainConfig(" not in text and "screening" not in text.lower()
    assert not re.search(r"python (run|lessons)\.py|python -m lab", text)  # maintainers' commands
    assert not re.search(r"\[\[.+?\]\]", text)  # the records' provenance markup
    assert not re.search(r"\btoday's\b|an earlier recipe|no GPU was at hand", text)  # the lab's history
    tags = {r["tag"] for r in __import__("lab.results").results.validation_runs(ROOT)}
    assert not [tag for tag in tags if f"{tag} seed" in text]


@pytest.mark.parametrize("notebook", LESSONS)
def test_each_lesson_has_the_student_build_check_try_and_sum_up(notebook):
    """A settings cell of plain Python, the student's norm (a stub that falls back to the reference) checked
    against PyTorch's layer, the figure of what each norm normalizes over, at least two exercises that
    predict, change and run, and a summary computed from the notebook's own variables."""
    cells = built(notebook).cells
    code = [c.source for c in cells if c.cell_type == "code"]
    markdown = "\n".join(c.source for c in cells if c.cell_type == "markdown")
    settings = next(c for c in code if c.startswith("EPOCHS = "))
    assert all(re.fullmatch(r"[A-Z_, ]+ = .+", line) for line in settings.splitlines()) and "os.environ" not in settings
    student = next(c for c in code if re.match(r"def my_\w+_norm\(", c))
    assert student.rstrip().endswith("return None  # replace this line with your code")
    assert any("from_scratch.check" in c for c in code) and any("REVEAL" in c for c in code)
    assert any("plot_normalized_over" in c for c in code) and any("normalized_over_explorer()" in c for c in code)
    assert len(re.findall(r"\*\*Exercise \d", markdown)) >= 2 and markdown.count("Predict") >= 2
    summary = code[-1]
    assert "Markdown(f" in summary and "history[-1]" in summary and "globals().get(" in summary  # skipped exercises


@pytest.mark.parametrize("notebook", LESSONS)
def test_each_lesson_trains_the_students_norm_watches_the_first_steps_and_has_a_mistake_to_predict(notebook):
    """The student's function swapped into the network beside PyTorch's layer after the check, the first steps
    watched with and without the norm before the full run, and a wrong version from from_scratch in "Try it"."""
    cells = built(notebook).cells
    text = [c.source for c in cells]
    order = [next(k for k, t in enumerate(text) if needle in t) for needle in (
        "from_scratch.check", "from_scratch.train_side_by_side(model, checked_norm", "probes.watch_training(",
        "history = utils.fit(", "mistaken_norm = from_scratch.mistaken_")]
    assert order == sorted(order)
    start = next(k for k, t in enumerate(text) if build_notebooks.TRY_IT.match(t))
    assert order[-1] > start and "<details>" in text[order[-1] + 1]  # the folded answer follows the run
    assert "train_side_by_side(model, mistaken_norm" in text[order[-1]]


def test_set_up_cell_shows_as_one_titled_line():
    for notebook in NOTEBOOKS:
        cell = next(c for c in build_notebooks.build(notebook).cells if "google.colab" in c.source)
        assert cell.source.startswith("# @title ") and cell.metadata["cellView"] == "form"
        assert cell.metadata["jupyter"] == {"source_hidden": True}


def test_the_environment_overrides_the_settings_unseen_and_after_every_cell(monkeypatch):
    """CI's short run (S8_EPOCHS=1 ...) reaches the settings through the set-up cell's hook, not through code
    in the student's cells; a name the settings do not have is left alone."""
    hooks = []
    ipython = types.SimpleNamespace(events=types.SimpleNamespace(
        callbacks={"post_run_cell": hooks}, register=lambda event, f: hooks.append(f)))
    monkeypatch.delitem(sys.modules, "google.colab", raising=False)
    for name, value in (("S8_EPOCHS", "1"), ("S8_SKIPS", "0"), ("S8_DATA", "/x.tar.gz"), ("S8_UNKNOWN", "3")):
        monkeypatch.setenv(name, value)
    namespace = {"EPOCHS": 20, "SKIPS": True, "DATA": "data", "SEED": 0, "get_ipython": lambda: ipython}
    exec(compile(setup_source(), "setup-cell", "exec"), namespace)
    assert (namespace["EPOCHS"], namespace["SKIPS"], namespace["DATA"], namespace["SEED"]) == (1, False, "/x.tar.gz", 0)
    assert "UNKNOWN" not in namespace
    namespace["EPOCHS"] = 20  # the student runs the settings cell again
    exec(compile(setup_source(), "setup-cell", "exec"), namespace)  # and the set-up cell: one hook, not two
    assert len(hooks) == 1
    namespace["EPOCHS"] = 20
    hooks[0](None)
    assert namespace["EPOCHS"] == 1


@pytest.mark.parametrize("notebook", ["S8_BN.ipynb", "S8_LN.ipynb", "S8_GN.ipynb"])
def test_no_answer_stands_under_its_question(notebook):
    """Every code cell of a lesson's "Try it" and "Summary" sections is committed without output; a build drops any."""
    committed = nbformat.read(ROOT / notebook, as_version=4)
    headings = [k for k, c in enumerate(committed.cells) if c.cell_type == "markdown" and c.source.startswith("## ")]
    start = next(k for k in headings if build_notebooks.TRY_IT.match(committed.cells[k].source))
    end = next(k for k in headings if k > start)
    exercises = [c for c in committed.cells[start:end] if c.cell_type == "code"]
    assert len(exercises) >= 3 and not any(c.outputs for c in exercises)
    answered = nbformat.read(ROOT / notebook, as_version=4)
    for cell in answered.cells[start:end]:
        if cell.cell_type == "code":
            cell.outputs = [nbformat.v4.new_output("stream", text="an answer\n")]
    rebuilt = build_notebooks.build(notebook, answered, ROOT / "notebooks")
    assert not any(c.outputs for c in rebuilt.cells[start:end] if c.cell_type == "code")
    summary = [c for c in rebuilt.cells[end:] if c.cell_type == "code"]  # it quotes the exercises' results
    assert summary and not any(c.outputs for c in summary)


def test_the_bundle_needs_the_standard_library_alone(tmp_path):
    """A student may have Python without torch: --bundle imports none of the project's packages."""
    blocked = ("torch", "numpy", "PIL", "matplotlib", "jupytext", "nbformat", "nbclient", "IPython")
    script = (f"import runpy, sys\nsys.modules.update(dict.fromkeys({blocked!r}))\n"
              f"sys.argv = ['colab.py', '--bundle', {str(tmp_path / 'b.zip')!r}]\n"
              f"runpy.run_path({str(ROOT / 'tools' / 'colab.py')!r}, run_name='__main__')\n")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert "models.py" in zipfile.ZipFile(tmp_path / "b.zip").namelist()


def test_the_lessons_records_show_students_no_markup_history_or_machine_per_row():
    """What experiments.show draws and writes for a student, figure captions included (a text search cannot see
    inside a PNG): no [[...]] provenance, no recipe history, no machine string repeated on table rows."""
    import matplotlib.text

    from lab import experiments

    for name in experiments.EXPERIMENTS:
        fig, section, _ = experiments.rendered(name, ROOT, students=True)
        texts = [t.get_text() for t in fig.findobj(matplotlib.text.Text)] + [section]
        assert not [t for t in texts if "[[" in t or "]]" in t], name
        assert not re.search(r"\btoday's\b|\bearlier\b", section), name
        rows = [line for line in section.splitlines() if line.startswith("| ") and "---" not in line]
        assert not [row for row in rows if "threads" in row or "autocast" in row], name


@pytest.mark.parametrize("notebook", LESSONS)
def test_each_lesson_shows_torchsummarys_table_and_the_forward_pass(notebook):
    model_cell = next(c for c in built(notebook).cells if "nbval-check-output" in c.metadata.get("tags", []))
    assert "utils.summarize(model, device)" in model_cell.source and "getsource(type(model).forward)" in model_cell.source
    assert "print(model)" not in model_cell.source
