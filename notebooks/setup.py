# %% tags=["form"]
# @title Set-up: fetches the project's code on Colab (run it once, first)
# Set-up, safe to run twice. On Colab it finds this project's code and installs torchsummary, the one
# package the project needs that Colab lacks (Colab's own torch, torchvision and ipywidgets stay as they
# are). The code comes from the first of these that exists:
# 1. the project's files where this notebook runs (uploaded, or a Google Drive folder you changed into);
# 2. the folder an earlier run of this cell made;
# 3. a clone of S8_REPO_URL, or of REPO_URL below once a published copy has set it;
# 4. else a zip you upload when asked: a GitHub copy's "Download ZIP", or `python tools/colab.py --bundle`'s.
# Anywhere, its last lines let an S8_<NAME> environment variable set a setting of the cell above.
import importlib.util
import io
import os
import subprocess
import sys
import zipfile

PROJECT = "s8-project"  # the folder that a clone or an unpacked zip goes into
REPO_URL = os.environ.get("S8_REPO_URL", "")
ROUTES = ("To go on, upload the project as a zip when asked: on its GitHub page, Code > Download ZIP, or the zip that "
          "`python tools/colab.py --bundle` makes; or copy the project to Google Drive, mount the drive and "
          "os.chdir() into its folder; or set os.environ['S8_REPO_URL'] to a repository's address. Then run "
          "this cell again.")


def _project_in(folder):
    """The folder under `folder` that holds models.py, nearest first (a GitHub zip adds one top folder), or None."""
    found = sorted((root for root, _, names in os.walk(folder) if "models.py" in names), key=len)
    return found[0] if found else None


if "google.colab" in sys.modules:
    if os.path.exists("models.py"):
        pass  # the files are here: use them
    elif os.path.isdir(PROJECT) and _project_in(PROJECT):
        os.chdir(_project_in(PROJECT))
    elif REPO_URL:
        clone = subprocess.run(["git", "clone", "--depth", "1", "--quiet", REPO_URL, PROJECT],
                               capture_output=True, text=True)
        if clone.returncode:
            raise SystemExit(f"Could not fetch the project from {REPO_URL}: "
                             f"{clone.stderr.strip() or 'git failed'}\n{ROUTES}")
        os.chdir(PROJECT)
    else:
        from google.colab import files
        print(f"No repository address is set. {ROUTES}")
        uploaded = files.upload()
        zips = [name for name in uploaded if name.endswith(".zip")]
        if len(zips) != 1:
            raise SystemExit(f"Upload one .zip of the project, not {len(zips)}. {ROUTES}")
        with zipfile.ZipFile(io.BytesIO(uploaded[zips[0]])) as archive:
            # A zip can name paths such as ../x or /x that unpack outside PROJECT: refuse the whole zip,
            # before anything is written, rather than trust where it puts files.
            for member in archive.namelist():
                parts = member.replace("\\", "/").split("/")
                if parts[0] == "" or ":" in parts[0] or ".." in parts:
                    raise SystemExit(f"Refused {member!r} in {zips[0]}: it would land outside {PROJECT}/. {ROUTES}")
            archive.extractall(PROJECT)
        if _project_in(PROJECT) is None:
            raise SystemExit(f"{zips[0]} holds no models.py, so it is not this project. {ROUTES}")
        os.chdir(_project_in(PROJECT))
    if importlib.util.find_spec("torchsummary") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "torchsummary"], check=True)
        importlib.invalidate_caches()

# The settings above take the values you type, unless an environment variable S8_<NAME> names one of them
# (the automated tests' short run sets some); then it takes that value, now and after every cell you run.
def _s8_environment(*_):
    for key, text in os.environ.items():
        name, namespace = key[3:], globals()
        if key.startswith("S8_") and name in namespace and name != "REPO_URL":
            old = namespace[name]
            namespace[name] = text.lower() in ("1", "true", "yes") if isinstance(old, bool) else type(old)(text)


try:
    _ipython = get_ipython()
except NameError:  # not in IPython (the tests run this cell as plain Python)
    _ipython = None
if _ipython is not None and not any(getattr(f, "__name__", "") == "_s8_environment"
                                    for f in _ipython.events.callbacks["post_run_cell"]):
    _ipython.events.register("post_run_cell", _s8_environment)
_s8_environment()
