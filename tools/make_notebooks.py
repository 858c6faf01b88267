"""Write S8_BN.ipynb, S8_LN.ipynb and S8_GN.ipynb from one template, and point every Colab badge
and clone address (the notebooks' and README.md's) at one GitHub repository, or at none.

The three lessons share every cell but the norm's name and its explanation, so they are
generated, never edited by hand:

    python tools/make_notebooks.py [--repo OWNER/NAME]   # a cell whose source is unchanged keeps its outputs
    python tools/make_notebooks.py --bundle [PATH]      # only the zip the set-up cell asks for on Colab
    S8_DATA=../shared/data/cifar10-jpg.tar.gz jupyter execute --inplace --timeout=-1 \\
        --NotebookClient.store_widget_state=False S8_*.ipynb   # fill in a full run's outputs

The repository is --repo, else the `origin` remote when it is on GitHub, else the one that the badges
in README.md's generated colab section name: README.md is where the address lives between runs.
With none known, no address is guessed: there is no Colab badge, the README section says how to get
to Colab without one, and the set-up cell clones only from S8_REPO_URL, else asks for the zip that
--bundle writes (every top-level module, results/, images/ and checkpoints/).
"""

import argparse
import base64
import io
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
from PIL import Image
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
import results  # noqa: E402
from atomic import write_atomically  # noqa: E402
from models import NORM_TYPES  # noqa: E402

# What earlier versions wrote when no repository was known: a valid name that nobody owns, so a
# README that still names it names none (whoever registered it would have students run their code).
PLACEHOLDER_REPO = "s8-normalization/s8-normalization"
BUNDLE = "s8-bundle.zip"  # --bundle's default, in the project root
BUNDLED_FOLDERS = ("results", "images", "checkpoints")  # with every top-level module
BADGE_URL = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/")
GITHUB_REMOTE = re.compile(r"github\.com[:/]([\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def after_relu(abbr):
    """The 'Where it sits' bullet of a per-image norm placed after the ReLU."""
    return f"""- **Where it sits:** after each 3x3 conv's ReLU (conv → ReLU → {abbr}), unlike BatchNorm. On the
  validation split (5,000 held-out training images, one seed) this scored 1.7 points higher than
  conv → {abbr} → ReLU (`results/validation.md`); on the test set, means of three seeds each, the
  move took LayerNorm from 78.65% to 80.52% and GroupNorm from 79.12% to 80.97% (README, "What
  moved the numbers"). A likely reason: placed before the ReLU, a per-image norm sets where the
  ReLU cuts off relative to each image's own mean and spread; placed after, the cut-off is fixed by
  the conv's bias, and the norm then subtracts the image's (or group's) mean of what passed and
  divides by its spread, so its output is centred again and can be negative."""


LESSONS = {  # the prose of each norm's lesson, keyed as models.NORM_TYPES
    "bn": dict(
        file="S8_BN.ipynb", title="Batch Normalization",
        theory=r"""**BatchNorm** normalizes each channel with statistics taken over the whole batch and every
spatial position. For channel $c$ of a batch of $N$ feature maps of size $H \times W$:

$$\mu_c = \frac{1}{NHW}\sum_{n,h,w} x_{nchw}, \qquad
\sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w} (x_{nchw}-\mu_c)^2, \qquad
y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_c}{\sqrt{\sigma_c^2+\epsilon}} + \beta_c$$

- **Axes:** mean and variance over (N, H, W), one pair per channel.
- **Learnable parameters:** a scale $\gamma_c$ and a shift $\beta_c$ per channel (2C per layer).
- **Train vs eval:** training uses the batch's own statistics and updates running averages
  (momentum 0.1); evaluation uses the running averages, so a prediction does not depend on the
  other images in the batch.
- **Small batches:** the batch statistics get noisy and drift from the running averages; the
  batch-size experiment in section 8 measures what that costs this network.
- **Where it sits:** after each 3x3 conv and before its ReLU (conv → BN → ReLU), as in ResNet.
  On the validation split, BatchNorm after the ReLU scored a point lower
  (`results/validation.md`).""",
    ),
    "ln": dict(
        file="S8_LN.ipynb", title="Layer Normalization",
        theory=r"""**LayerNorm** normalizes each image on its own, with one mean and variance over all its
channels and positions. For image $n$ with $C$ channels of size $H \times W$:

$$\mu_n = \frac{1}{CHW}\sum_{c,h,w} x_{nchw}, \qquad
\sigma_n^2 = \frac{1}{CHW}\sum_{c,h,w} (x_{nchw}-\mu_n)^2, \qquad
y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_n}{\sqrt{\sigma_n^2+\epsilon}} + \beta_c$$

- **Axes:** mean and variance over (C, H, W), one pair per image. The suite builds it as
  `nn.GroupNorm(1, C)`: GroupNorm with a single group is exactly this, and it keeps a per-channel
  scale and shift (`nn.LayerNorm([C, H, W])` would learn one per pixel and fix the image size).
- **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
- **Train vs eval:** identical; there are no running statistics.
- **Small batches:** nothing is shared across the batch, so the batch size changes only the
  optimization (more, smaller steps); section 8 measures it.
""" + after_relu("LN"),
    ),
    "gn": dict(
        file="S8_GN.ipynb", title="Group Normalization",
        theory=r"""**GroupNorm** splits the $C$ channels into $G$ groups (here $G = 4$) and normalizes each group
of each image on its own. For image $n$ and group $g$ holding the channel set $S_g$:

$$\mu_{ng} = \frac{1}{|S_g|HW}\sum_{c \in S_g,h,w} x_{nchw}, \qquad
\sigma_{ng}^2 = \frac{1}{|S_g|HW}\sum_{c \in S_g,h,w} (x_{nchw}-\mu_{ng})^2, \qquad
y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_{ng}}{\sqrt{\sigma_{ng}^2+\epsilon}} + \beta_c$$

- **Axes:** mean and variance over (C/G, H, W), one pair per image and group. $G = 1$ is
  LayerNorm; $G = C$ is InstanceNorm. Four groups of 4 to 8 channels keep some channels'
  statistics apart while each group still pools enough values.
- **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
- **Train vs eval:** identical; there are no running statistics.
- **Small batches:** nothing is shared across the batch, so the batch size changes only the
  optimization (more, smaller steps); section 8 measures it.
""" + after_relu("GN"),
    ),
}

SETUP = '''# Set-up, safe to run twice. On Colab it finds this project's code and installs torchsummary, the one
# package the project needs that Colab lacks (Colab's own torch, torchvision and ipywidgets stay as they
# are). Anywhere else it does nothing. The code comes from the first of these that exists:
# 1. the project's files where this notebook runs (uploaded, or a Google Drive folder you changed into);
# 2. the folder an earlier run of this cell made;
# 3. a clone of S8_REPO_URL, or of the address below when it names one;
# 4. else the zip you upload when asked, made by `python tools/make_notebooks.py --bundle`.
import importlib.util
import io
import os
import subprocess
import sys
import zipfile

PROJECT = "{name}"  # the folder that a clone or an unpacked zip goes into
REPO_URL = os.environ.get("S8_REPO_URL", "{url}")
if "google.colab" in sys.modules:
    if os.path.exists("models.py"):
        pass  # the files are here: use them
    elif os.path.exists(os.path.join(PROJECT, "models.py")):
        os.chdir(PROJECT)
    elif REPO_URL:
        clone = subprocess.run(["git", "clone", "--depth", "1", "--quiet", REPO_URL, PROJECT],
                               capture_output=True, text=True)
        if clone.returncode:
            raise SystemExit(
                f"Could not fetch the project from {{REPO_URL}}: {{clone.stderr.strip() or 'git failed'}}\\n"
                "To go on without it, put the project's files where this notebook runs: upload its .py "
                "files and results/ folder with the Files pane, or copy the project to Google Drive, "
                "mount the drive and os.chdir() into that folder; or set os.environ['S8_REPO_URL'] to "
                "the address of a copy you can reach, or to '' to upload the zip that "
                "`python tools/make_notebooks.py --bundle` makes. Then run this cell again.")
        os.chdir(PROJECT)
    else:
        from google.colab import files
        print("No address to clone: upload the zip that `python tools/make_notebooks.py --bundle` makes.")
        uploaded = files.upload()
        zips = [name for name in uploaded if name.endswith(".zip")]
        if len(zips) != 1:
            raise SystemExit(f"Upload one .zip, the project's bundle, not {{len(zips)}}. Then run this cell again.")
        with zipfile.ZipFile(io.BytesIO(uploaded[zips[0]])) as bundle:
            # A zip can name paths such as ../x or /x that unpack outside PROJECT: refuse the whole zip,
            # before anything is written, rather than trust where it puts files.
            for member in bundle.namelist():
                parts = member.replace("\\\\", "/").split("/")
                if parts[0] == "" or ":" in parts[0] or ".." in parts:
                    raise SystemExit(f"Refused {{member!r}} in {{zips[0]}}: it would land outside {{PROJECT}}/. "
                                     "Rebuild the zip with `python tools/make_notebooks.py --bundle`.")
            bundle.extractall(PROJECT)
        os.chdir(PROJECT)
    if importlib.util.find_spec("torchsummary") is None:
        subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "torchsummary"], check=True)
        importlib.invalidate_caches()'''

CONFIG = '''NORM = "{norm}"  # the only line that differs between the three notebooks
# Environment variables override these, so CI can run a short version (S8_EPOCHS=1 S8_SUBSET=2000).
EPOCHS = int(os.environ.get("S8_EPOCHS", 20))
BATCH_SIZE = int(os.environ.get("S8_BATCH_SIZE", 128))
SEED = int(os.environ.get("S8_SEED", 0))
SUBSET = int(os.environ.get("S8_SUBSET", 0))  # 0 = all 50,000 training images
DATA = os.environ.get("S8_DATA", "data")  # a folder to download into, or a local copy (see README)
AMP = os.environ.get("S8_AMP", "auto")  # auto | bf16 | fp16 | off; auto: what this hardware does natively'''

LOAD = '''%matplotlib inline
import inspect
import math

import torch
from IPython.display import Image, Markdown

import plots
import results
import utils
from data import load_cifar10
from explorer import mistake_explorer, select
from models import ConvBlock, S8Net, S8_model, count_parameters

device = utils.pick_device()
cfg = utils.recipe(NORM, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED, amp=AMP)
data = load_cifar10(DATA)
if SUBSET:
    data = data.subset(SUBSET, seed=SEED)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")
print(f"training on {utils.describe_device(device)}")'''

MODEL = '''# NBVAL_CHECK_OUTPUT
torch.manual_seed(SEED)
model = S8_model(NORM)
utils.summarize(model, device)
n_params = count_parameters(model)
norm_layers = sorted({repr(m) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))})
print(f"{type(model).__name__}: {n_params:,} parameters "
      f"({'within' if n_params < 50_000 else 'OVER'} the 50,000 budget), placement {model.config.order}")
print("norm layers:", ", ".join(norm_layers))
assert n_params < 50_000'''


def badge(repo, notebook):
    return (f"[![Open In Colab](https://colab.research.google.com/assets/colab-badge.svg)]"
            f"(https://colab.research.google.com/github/{repo}/blob/main/{notebook})")


def project_folder(repo):
    """The folder the set-up cell clones or unpacks into: the repository's name, as git would name it."""
    return repo.split("/")[1] if repo else "s8-project"


def setup_cell(repo):
    """The set-up cell's source; with no repository known, it has no default clone address."""
    return SETUP.format(name=project_folder(repo), url=f"https://github.com/{repo}" if repo else "")


def training_recipe(norm):
    """One sentence on the optimizer of `norm`'s recipe (utils.recipe), chosen on the validation split."""
    import utils

    cfg = utils.recipe(norm)
    if cfg.optimizer == "muon":
        return (f"Muon (`muon.py`: each conv kernel's update made orthogonal, peak rate {cfg.muon_lr}) for the conv "
                "kernels that a norm follows, SGD with Nesterov momentum for the classifier and the norms' scales "
                "and shifts, one one-cycle learning-rate schedule for both, label smoothing "
                f"{cfg.label_smoothing}; chosen on the validation split (`docs/experiments.md`).")
    return (f"SGD with Nesterov momentum, a one-cycle learning rate, label smoothing {cfg.label_smoothing} "
            "and weight decay on the conv kernels only.")


def cells(norm, spec, repo):
    md, code = new_markdown_cell, new_code_cell
    title = f"# {spec['title']} in a 48k-parameter CNN on CIFAR-10\n\n"
    return [
        md(title + (f"{badge(repo, spec['file'])}\n\n" if repo else "") +
           "One of three lessons that train the same network with a different normalization layer "
           "(BatchNorm, LayerNorm, GroupNorm) and compare them. Run the cells in order; on Colab, "
           "choose a GPU runtime first.\n\n" + spec["theory"]),
        md("## 1. Set-up and configuration"),
        code(setup_cell(repo)),
        code(CONFIG.format(norm=norm)),
        md("## 2. The data\n\nCIFAR-10: 50,000 training and 10,000 test images of 32x32 pixels in 10 classes. "
           "The whole set is decoded once and kept in memory as uint8 tensors; the training loop "
           "augments whole batches on the training device."),
        code(LOAD),
        code("plots.plot_samples(data)"),
        md("Each training step shows the network a new random version of every image: shifted by up to "
           "4 pixels (the border filled by reflection) and flipped left-right half of the time."),
        code("plots.plot_augmentation(data, index=7, cfg=cfg)"),
        md(f"## 3. The model\n\n`{NORM_TYPES[norm].class_name}`: `C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10`, with C3's "
           "output added to C5's and C7's to C9's. The summary below is checked by nbval in CI, so a "
           "change to the architecture shows up there."),
        code(MODEL),
        md("What each C block computes, and how the blocks and the two skips are wired: the code itself "
           "(`models.py`)."),
        code("print(inspect.getsource(ConvBlock))\nprint(inspect.getsource(S8Net.forward))"),
        md("## 4. Training\n\n" + training_recipe(norm) + " The settings this run uses, and the learning "
           "rate at every step:"),
        code("print(cfg)\nplots.plot_lr_schedule(cfg, steps_per_epoch=math.ceil(len(data.train_labels) / cfg.batch_size))"),
        md("One row per epoch; test accuracy is measured after every epoch, and the last row is the result. "
           "The first line names the precision chosen for this hardware (`hardware.py`)."),
        code("history = utils.fit(model, data, cfg, device)"),
        md("## 5. Loss and accuracy curves\n\nThe two losses measure different things: training minimizes "
           "label-smoothed cross-entropy on augmented images, averaged over the epoch while the weights "
           "move, which stays higher than the plain cross-entropy of the finished epoch's model on the "
           "untouched test images. Compare their trends, not their levels; accuracy is comparable."),
        code(f'plots.plot_curves(history, title="{spec["title"]}")'),
        code('final = history[-1]\n'
             'print(f"after {final[\'epoch\']} epochs: train accuracy {final[\'train_acc\']:.2f}% '
             '(augmented images), test accuracy {final[\'test_acc\']:.2f}%")'),
        md("## 6. Mistakes\n\nThe ten test images the model got wrong with the most confidence, "
           "with their true and predicted classes."),
        code('mistakes = utils.get_incorrect_predictions(model, data, cfg)\n'
             'print(f"{len(mistakes):,} of {len(data.test_labels):,} test images misclassified")\n'
             'utils.plot_incorrect_predictions(mistakes, data.classes)'),
        md("Per-class accuracy (in the row labels) and the confusion matrix: which classes are taken "
           "for which."),
        code("counts = plots.confusion_matrix(model, data, cfg)\n"
             "plots.plot_confusion_matrix(counts, data.classes)"),
        md("## 7. Explore the mistakes\n\nPick a true and a predicted class and step through those "
           "mistakes with the slider (this needs a live kernel; on GitHub the widget does not show). "
           "Below it, a static view of the most frequent confusion."),
        code("mistake_explorer(mistakes, data.classes)"),
        code('off_diagonal = counts - torch.diag(counts.diag())\n'
             'true_class, predicted_class = divmod(int(off_diagonal.argmax()), len(data.classes))\n'
             'pair = select(mistakes, data.classes, data.classes[true_class], data.classes[predicted_class])\n'
             'print(f"most frequent confusion: {data.classes[true_class]} taken for '
             '{data.classes[predicted_class]}, {len(pair)} times")\n'
             'utils.plot_incorrect_predictions(pair, data.classes)'),
        md("## 8. What the batch size does to each norm\n\n" + BATCH_SIZE_INTRO),
        code('Image("images/batch_size.png")'),
        code("sweep_runs, sweep_table = results.load_sweep()\nMarkdown(results.batch_size_observations(NORM, sweep_table))"),
        md(GAP_INTRO[norm]),
        code("Markdown(results.batchnorm_gap_table())"),
        md("## 9. How the three norms compare\n\nThe saved results of the full runs "
           "(`python run.py --norm all`: 20 epochs on all of CIFAR-10, seeds 0, 1 and 2), read from "
           "`results/*.json`. This notebook trains seed 0: on the machine named in the table, in the "
           "precision its JSON records (`precision`), it repeats that seed's run exactly; on another device "
           "or in another precision (the first line of the training output above says which) expect a "
           "difference of about the seeds' spread."),
        code("saved = results.load_results()\nMarkdown(results.results_table(saved))"),
        md("## 10. Observations\n\n" + OBSERVATIONS[norm]),
        code("Markdown(results.observations(NORM, saved))"),
    ]


BATCH_SIZE_INTRO = (
    "BatchNorm takes its statistics from the batch; LayerNorm and GroupNorm from each image. Wu and He "
    "(Group Normalization, 2018) found BatchNorm's ImageNet error rising steeply below 16 images per "
    "batch while GroupNorm's stayed flat. `python sweep.py` repeats that experiment on this network: "
    "each norm trained at batch sizes 2 to 128, the learning rate scaled with the batch, the same "
    "epochs and the same seeded subset of the data at every point, two seeds each (the README gives "
    "the settings and the numbers).")

GAP_INTRO = {
    "bn": "BatchNorm behaves differently in training (statistics of the batch) and in evaluation "
          "(running averages gathered in training). The table tests the trained models both ways: "
          "with the running averages, and with the statistics of test batches of 2 to 128 images.",
    "ln": "For contrast, BatchNorm's own train/eval gap: a BatchNorm model tested with its running "
          "averages and with the statistics of test batches. LayerNorm has no such gap: it computes "
          "the same statistics, from each image alone, in training and in evaluation.",
    "gn": "For contrast, BatchNorm's own train/eval gap: a BatchNorm model tested with its running "
          "averages and with the statistics of test batches. GroupNorm has no such gap: it computes "
          "the same statistics, from each image alone, in training and in evaluation.",
}

OBSERVATIONS = {
    "bn": "BatchNorm's statistics come from the batch, so every image is normalized a little "
          "differently in every step. The other two norms see one image at a time. How the three "
          "compare here, from the saved results (a difference within the spread of the seeds is "
          "reported as none):",
    "ln": "LayerNorm pools one mean and variance over all channels of an image, so a channel that is "
          "strongly active can shift the normalization of every other one. How the three compare "
          "here, from the saved results (a difference within the spread of the seeds is reported as "
          "none):",
    "gn": "GroupNorm sits between the two per-image extremes: with 4 groups, channels in different "
          "groups no longer share statistics. How the three compare here, from the saved results (a "
          "difference within the spread of the seeds is reported as none):",
}


WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"
PROGRESS_BAR = re.compile(r"[^\n]*: +\d+%\|")  # tqdm's text: 'epoch 3:   0%|          | 0/391 ...'


def palette_png(encoded):
    """A base64 PNG as a 256-colour palette PNG, composited on white, so that each notebook with its
    outputs stays under 500 KB: about a third of the bytes. Plots keep their few colours exactly;
    the photo grids (samples, mistakes) lose colour depth, which at 32x32 pixels a picture does not
    show. One already in palette form is returned as it is, so regenerating changes nothing."""
    image = Image.open(io.BytesIO(base64.b64decode(encoded)))
    if image.mode == "P":
        return encoded
    image = Image.alpha_composite(Image.new("RGBA", image.size, "white"), image.convert("RGBA"))
    buffer = io.BytesIO()
    image.convert("RGB").quantize(256, dither=Image.Dither.NONE).save(buffer, "PNG", optimize=True)
    return base64.b64encode(buffer.getvalue()).decode() + "\n"


def build(norm, repo, old=None):
    """The notebook for `norm`; a code cell whose source is the same as one of `old`'s keeps that
    cell's outputs (matched by source, so inserting a cell loses no outputs)."""
    spec = LESSONS[norm]
    nb = new_notebook(cells=cells(norm, spec, repo))
    kept = {}
    for before in (old.cells if old else []):
        if before.cell_type == "code":
            kept.setdefault(before.source, before)
    for k, cell in enumerate(nb.cells):  # stable ids: regenerating gives the same file
        cell.id = f"{norm}-{k:02d}"
        before = kept.get(cell.source)
        if cell.cell_type == "code" and before is not None:
            cell.outputs, cell.execution_count = before.outputs, before.execution_count
    nb.metadata.update(
        kernelspec={"name": "python3", "display_name": "Python 3", "language": "python"},
        language_info={"name": "python"},
        accelerator="GPU",
        colab={"provenance": [], "gpuType": "T4"},
    )
    for cell in nb.cells:  # no saved widget state: a widget's view of it shows nothing on GitHub anyway
        for output in cell.get("outputs", []):
            data = output.get("data", {})
            data.pop(WIDGET_VIEW, None)
            if "image/png" in data:
                data["image/png"] = palette_png(data["image/png"])
        # Without its widget, a progress bar is left as its first frame ('epoch 3:   0%|'), which
        # says nothing true about the finished run: the per-epoch table beside it does.
        if cell.cell_type == "code":
            cell.outputs = [o for o in cell.outputs if not stale_progress_bar(o)]
    return nb


def stale_progress_bar(output):
    """True for a tqdm bar saved as plain text only, its widget gone."""
    data = output.get("data", {})
    return (output.get("output_type") == "display_data" and set(data) == {"text/plain"}
            and bool(PROGRESS_BAR.match(data["text/plain"])))


def origin_repo(root=ROOT):
    """OWNER/NAME of the `origin` remote when it is a GitHub address, else None."""
    remote = subprocess.run(["git", "-C", str(root), "remote", "get-url", "origin"], capture_output=True, text=True)
    match = GITHUB_REMOTE.search(remote.stdout.strip()) if remote.returncode == 0 else None
    return match.group(1) if match else None


def readme_repo(readme):
    """OWNER/NAME that the Colab badges in README.md's colab section name, else None. Badges outside
    that section, and the unowned placeholder, name nothing."""
    text = readme.read_text() if readme.is_file() else ""
    start, end = results.section_markers("colab")
    if start not in text or end not in text:
        return None
    section = text.split(start, 1)[1].split(end, 1)[0]
    found = [repo for repo in BADGE_URL.findall(section) if repo != PLACEHOLDER_REPO]
    return found[0] if found else None


def colab_section(repo):
    """The body of README.md's colab section: a badge per notebook, or, with no repository known, the
    way to Colab without one."""
    if repo:
        rows = [f"| [`{spec['file']}`]({spec['file']}) | {badge(repo, spec['file'])} |" for spec in LESSONS.values()]
        return "\n".join(["| notebook | open on Colab |", "|---|---|", *rows])
    return ("This project has no published GitHub address yet, so there are no Colab badges. To use Colab, run\n"
            "`python tools/make_notebooks.py --bundle` on your machine, upload a notebook to Colab\n"
            "(File > Upload notebook), run its first cell and upload the zip it asks for. A fork that\n"
            "publishes the project runs `python tools/make_notebooks.py --repo OWNER/NAME` once and commits;\n"
            "that puts the badges here.")


def bundle_files(root):
    """What the notebooks need, for the zip: every top-level module, and results/, images/ and
    checkpoints/ less hidden files (temporary ones), caches and the validation runs' checkpoints."""
    def wanted(relative):
        return not (any(part.startswith(".") or part == "__pycache__" for part in relative.parts)
                    or relative.as_posix().startswith("checkpoints/validation/"))

    files = sorted(root.glob("*.py"))
    for folder in BUNDLED_FOLDERS:
        files += sorted(path for path in (root / folder).rglob("*")
                        if path.is_file() and wanted(path.relative_to(root)))
    return files


def write_bundle(path, root):
    """Zip bundle_files(root) into `path`, each under its path relative to `root`; returns how many."""
    files = bundle_files(root)

    def write(tmp):
        with zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as bundle:
            for file in files:
                bundle.write(file, file.relative_to(root).as_posix())

    write_atomically(path, write)  # never half a zip at `path`
    return len(files)


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--repo", help="GitHub OWNER/NAME the badges and the set-up cell point at (default: the origin "
                                  "remote when it is on GitHub, else the one README.md's colab section names)")
    p.add_argument("--clear-outputs", action="store_true", help="drop every output, not only those of changed cells")
    p.add_argument("--bundle", nargs="?", const="", metavar="PATH",
                   help=f"write only the zip the set-up cell asks for on Colab when it has no address to clone "
                        f"(default PATH: {BUNDLE} in the project root); no notebook is written")
    args = p.parse_args(argv)
    if args.bundle is not None:
        if args.repo or args.clear_outputs:
            p.error("--bundle writes only the zip: give --repo or --clear-outputs in a run of their own")
        path = Path(args.bundle or ROOT / BUNDLE).resolve()
        count = write_bundle(path, ROOT)
        print(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB, {count} files): on Colab, run a notebook's "
              "first cell and upload it when it asks")
        return
    readme = ROOT / "README.md"
    repo = args.repo or origin_repo() or readme_repo(readme)
    if repo and not re.fullmatch(r"[\w.-]+/[\w.-]+", repo):
        p.error(f"--repo takes OWNER/NAME as on GitHub (e.g. jane/s8-normalization), got {repo!r}")
    for norm, spec in LESSONS.items():
        path = ROOT / spec["file"]
        old = None if args.clear_outputs or not path.exists() else nbformat.read(path, as_version=4)
        nbformat.write(build(norm, repo, old), path)
        print(f"wrote {spec['file']}")
    results.write_section(readme, "colab", colab_section(repo))
    if repo:
        print(f"Colab badges and clone address: github.com/{repo}")
    else:
        print("no repository known (give --repo OWNER/NAME): no Colab badge, no clone address; on Colab the "
              "set-up cell asks for the zip that --bundle writes")


if __name__ == "__main__":
    main()
