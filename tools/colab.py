"""Point the Colab badges and the set-up cell's clone address at one GitHub repository, or at none (none is
guessed); --bundle writes the zip the set-up cell asks for instead, with the standard library alone (a student
may have no torch). See docs/development.md#the-notebooks."""

import argparse
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tools"))

BUNDLE = "s8-bundle.zip"  # --bundle's default, in the project root
BUNDLED_FOLDERS = ("lab", "results", "images", "checkpoints")  # with every top-level module
BADGE_URL = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/")
BADGE_LINE = re.compile(r"^# \[!\[Open In Colab\].*\n#\n", re.MULTILINE)  # in a percent source's title cell
GITHUB_REMOTE = re.compile(r"github\.com[:/]([\w.-]+/[\w.-]+?)(?:\.git)?/?$")
SETUP_DEFAULTS = re.compile(r'^PROJECT = ".*?"(.*)\nREPO_URL = os.environ.get\("S8_REPO_URL", ".*?"\)', re.MULTILINE)


def badge(repo, notebook):
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repo}/blob/main/{notebook})")


def project_folder(repo):
    """The folder the set-up cell clones or unpacks into: the repository's name, as git would name it."""
    return repo.split("/")[1] if repo else "s8-project"


def with_repo(setup_source, repo):
    """The set-up cell's source with its folder and default clone address for `repo` (none: no address)."""
    url = f"https://github.com/{repo}" if repo else ""
    return SETUP_DEFAULTS.sub(lambda m: f'PROJECT = "{project_folder(repo)}"{m.group(1)}\n'
                                        f'REPO_URL = os.environ.get("S8_REPO_URL", "{url}")', setup_source)


def setup_cell(repo, sources=None):
    import build_notebooks

    return with_repo(build_notebooks.source_cells("setup.py", sources)[0].source, repo)


def with_badge(source_text, repo, notebook):
    """A notebook source whose title cell carries the badge for `repo` (none: no badge)."""
    text = BADGE_LINE.sub("", source_text, count=1)
    if not repo:
        return text
    head, title, rest = re.split(r"(^# # .*\n#\n)", text, maxsplit=1, flags=re.MULTILINE)
    return f"{head}{title}# {badge(repo, notebook)}\n#\n{rest}"


def origin_repo(root=ROOT):
    """OWNER/NAME of the `origin` remote when it is a GitHub address, else None."""
    remote = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    match = GITHUB_REMOTE.search(remote.stdout.strip()) if remote.returncode == 0 else None
    return match.group(1) if match else None


def readme_repo(readme):
    """OWNER/NAME that the Colab badges in README.md's colab section name (badges elsewhere name nothing), else None."""
    from lab import results

    text = readme.read_text() if readme.is_file() else ""
    start, end = results.section_markers("colab")
    if start not in text or end not in text:
        return None
    found = BADGE_URL.findall(text.split(start, 1)[1].split(end, 1)[0])
    return found[0] if found else None


def colab_section(repo):
    """The body of README.md's colab section: a badge per notebook, or the way to Colab without one."""
    import build_notebooks

    if repo:
        rows = [f"| [`{file}`]({file}) | {badge(repo, file)} |" for file in build_notebooks.NOTEBOOKS]
        return "\n".join(["| notebook | open on Colab |", "|---|---|", *rows])
    return ("This project has no published GitHub address yet, so there are no Colab badges. To use Colab from a\n"
            "browser alone: download the project as a zip (on GitHub, Code > Download ZIP), upload a notebook to\n"
            "Colab (File > Upload notebook), run its first cell and upload the zip when it asks (the zip that\n"
            "`python tools/colab.py --bundle` makes works too, and is smaller). A fork that publishes the project\n"
            "runs `python tools/colab.py --repo OWNER/NAME` once and commits; that puts the badges here.")


def point_at(repo, root=ROOT):
    """Badges and the set-up cell's address for `repo` (or none) in notebooks/ and README.md."""
    import build_notebooks
    from atomic import write_text
    from lab import results

    for notebook, name in build_notebooks.NOTEBOOKS.items():
        path = root / "notebooks" / name
        write_text(path, with_badge(path.read_text(), repo, notebook))
    setup = root / "notebooks" / "setup.py"
    write_text(setup, with_repo(setup.read_text(), repo))
    results.write_section(root / "README.md", "colab", colab_section(repo))


def bundle_files(root):
    """What the notebooks need, for the zip: the top-level modules and BUNDLED_FOLDERS, less hidden files and caches."""
    files = sorted(root.glob("*.py"))
    for folder in BUNDLED_FOLDERS:
        files += sorted(path for path in (root / folder).rglob("*") if path.is_file() and not any(
            part.startswith(".") or part == "__pycache__" for part in path.relative_to(root).parts))
    return files


def write_bundle(path, root):
    """Zip bundle_files(root) into `path`, each under its path relative to `root`; returns how many."""
    files, tmp = bundle_files(root), path.with_name(f".{path.name}.tmp{os.getpid()}")
    path.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
        for file in files:
            bundle.write(file, file.relative_to(root).as_posix())
    os.replace(tmp, path)  # never half a zip at `path`
    return len(files)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", help="GitHub OWNER/NAME the badges and the set-up cell point at (default: the origin "
                                  "remote when it is on GitHub, else the one README.md's colab section names)")
    p.add_argument("--bundle", nargs="?", const="", metavar="PATH",
                   help=f"write only the zip (default PATH: {BUNDLE} in the project root)")
    args = p.parse_args(argv)
    if args.bundle is not None:
        if args.repo:
            p.error("--bundle writes only the zip: give --repo in a run of its own")
        path = Path(args.bundle or ROOT / BUNDLE).resolve()
        count = write_bundle(path, ROOT)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {count} files): on Colab, run a notebook's "
              "first cell and upload it when it asks")
        return
    repo = args.repo or origin_repo() or readme_repo(ROOT / "README.md")
    if repo and not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        p.error(f"--repo takes OWNER/NAME as on GitHub (e.g. jane/s8-normalization), got {repo!r}")
    point_at(repo, ROOT)
    import build_notebooks

    build_notebooks.main([])  # rebuilt, each keeping its outputs
    print(f"Colab badges and clone address: github.com/{repo}" if repo else
          "no repository known (give --repo OWNER/NAME): no Colab badge, no clone address; on Colab the set-up "
          "cell asks for a zip of the project (a GitHub copy's Download ZIP, or --bundle's)")


if __name__ == "__main__":
    main()
