"""Write S8_BN.ipynb, S8_LN.ipynb, S8_GN.ipynb and S8_compare.ipynb from one template, and point every
Colab badge and clone address (the notebooks' and README.md's) at one GitHub repository, or at none.

The three lessons share a short first part (set-up, data, model, training, curves, mistakes) and
then teach their own norm; the fourth puts the cross-norm results side by side. They are
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
CHECK_OUTPUT = "nbval-check-output"  # the cell tag (not a comment a student reads) by which nbval compares
# the model cell's printout with the committed one
BADGE_URL = re.compile(r"https://colab\.research\.google\.com/github/([\w.-]+/[\w.-]+)/blob/")
GITHUB_REMOTE = re.compile(r"github\.com[:/]([\w.-]+/[\w.-]+?)(?:\.git)?/?$")


def after_relu(abbr, runs="section 4 of the LayerNorm lesson, `S8_LN.ipynb`"):
    """The 'Where it sits' bullet of a per-image norm placed after the ReLU."""
    return f"""- **Where it sits:** after each 3x3 conv's ReLU (conv → ReLU → {abbr}), unlike BatchNorm; chosen on
  the validation split (the runs are in {runs})."""


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
- **Small batches:** each step's statistics come from fewer images; the batch-size experiment in
  `S8_compare.ipynb` measures what that costs this network.
- **Where it sits:** after each 3x3 conv and before its ReLU (conv → BN → ReLU), as in ResNet;
  chosen on the validation split (the runs are in section 4 of the LayerNorm lesson, `S8_LN.ipynb`).""",
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
  ConvNeXt's and the transformers' LayerNorm is another norm: section 4 compares the two.
- **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
- **Train vs eval:** identical; there are no running statistics.
- **Small batches:** nothing is shared across the batch, so the batch size changes only the
  optimization (more, smaller steps); the batch-size experiment in `S8_compare.ipynb` measures it.
""" + after_relu("LN", runs="section 4 below"),
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
  optimization (more, smaller steps); the batch-size experiment in `S8_compare.ipynb` measures it.
""" + after_relu("GN") + """
- **Its convs:** each 3x3 filter is standardized to mean 0 and variance 1 before it is applied
  (Weight Standardization, Qiao et al. 2019: `ws` in the model's line below), and Muon's peak rate
  is 0.03 where BatchNorm and LayerNorm, with plain convs, take 0.1; both chosen on the validation
  split (`docs/experiments.md`).""",
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
# Environment variables override these: a short version runs with e.g. S8_EPOCHS=1 S8_SUBSET=2000.
EPOCHS = int(os.environ.get("S8_EPOCHS", 20))
BATCH_SIZE = int(os.environ.get("S8_BATCH_SIZE", 128))
SEED = int(os.environ.get("S8_SEED", 0))
SUBSET = int(os.environ.get("S8_SUBSET", 0))  # 0 = all 50,000 training images
DATA = os.environ.get("S8_DATA", "data")  # a folder to download into, or a local copy (see README)
AMP = os.environ.get("S8_AMP", "auto")  # auto | bf16 | fp16 | off; auto: what this hardware does natively'''

MODEL = '''torch.manual_seed(SEED)
model = S8_model(NORM)
utils.summarize(model, device)
n_params = count_parameters(model)
norm_layers = sorted({repr(m) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))})
print(f"{type(model).__name__}: {n_params:,} parameters "
      f"({'within' if n_params < 50_000 else 'OVER'} the 50,000 budget), placement {model.config.order}, "
      f"{model.config.conv} 3x3 convs")
print("norm layers:", ", ".join(norm_layers))
assert n_params < 50_000
print(inspect.getsource(type(model).forward))  # the two skips: C3's output joins C5's, C7's joins C9's'''


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
    """A per-norm lesson: the short shared part (set-up, data, model, training, curves, mistakes),
    then the norm's own section, LESSON_CELLS[norm]."""
    md, code = new_markdown_cell, new_code_cell
    title = f"# {spec['title']} in a 48k-parameter CNN on CIFAR-10\n\n"
    return [
        md(title + (f"{badge(repo, spec['file'])}\n\n" if repo else "") +
           "One of three lessons that train the same network with a different normalization layer "
           "(BatchNorm, LayerNorm, GroupNorm); what they do side by side (the skip connections, no norm at "
           "all, the learning rate, the activations, the batch size) is in "
           f"[`{COMPARE['file']}`]({COMPARE['file']}). Run the cells in order; on Colab, choose a GPU "
           "runtime first.\n\n" + spec["theory"]),
        md("## 1. Set-up, data and model"),
        code(setup_cell(repo)),
        code(CONFIG.format(norm=norm)),
        md("CIFAR-10: 50,000 training and 10,000 test images of 32x32 pixels in 10 classes, decoded once and "
           "kept in memory as uint8 tensors; training augments whole batches on the device (random shifts of "
           "up to 4 pixels, left-right flips)."),
        code(LOAD),
        md(f"`{NORM_TYPES[norm].class_name}`: `C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10`, with C3's output "
           "added to C5's and C7's to C9's (`models.py`; the last lines below are its forward pass)."),
        code(MODEL, metadata={"tags": [CHECK_OUTPUT]}),
        md("## 2. Training\n\n" + training_recipe(norm) + " Below the settings, a line names the "
           "precision chosen for this hardware (`hardware.py`), then one row per epoch."),
        code("print(cfg)\nhistory = utils.fit(model, data, cfg, device)"),
        md("The two losses measure different things: training minimizes label-smoothed cross-entropy on "
           "augmented images, averaged over the epoch while the weights move; the test loss is plain "
           "cross-entropy of the finished epoch's model on the untouched test images. Compare their trends, "
           "not their levels."),
        code(CURVES),
        md("## 3. Mistakes\n\nThe ten test images the model got wrong with the most confidence, with their true "
           "and predicted classes; below them, a browser of every mistake by true and predicted class (it needs "
           "a live kernel)."),
        code(MISTAKES),
        md(f"## 4. What only {NORM_TYPES[norm].label} does"),
        *LESSON_CELLS[norm],
    ]


LOAD = """%matplotlib inline
import inspect

import torch
from IPython.display import Markdown

import lessons
import plots
import probes
import results
import utils
from data import load_cifar10, normalize
from explorer import mistake_explorer
from models import S8_model, count_parameters

device = utils.pick_device()
cfg = utils.recipe(NORM, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED, amp=AMP)
data = load_cifar10(DATA)
if SUBSET:
    data = data.subset(SUBSET, seed=SEED)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")
print(f"training on {utils.describe_device(device)}")
# 1,000 test images, normalized, on the device: what section 4 feeds the trained model
x = normalize(data.test_images[:1000].to(device), data.mean.to(device), data.std.to(device))"""

CURVES = """plots.plot_curves(history, title=f"{type(model).__name__}, seed {SEED}: test accuracy "
                                 f"{history[-1]['test_acc']:.2f}%, train {history[-1]['train_acc']:.2f}% (augmented)")"""

MISTAKES = """mistakes = utils.get_incorrect_predictions(model, data, cfg)
print(f"{len(mistakes):,} of {len(data.test_labels):,} test images misclassified")
display(utils.plot_incorrect_predictions(mistakes, data.classes))
mistake_explorer(mistakes, data.classes)"""

md, code = new_markdown_cell, new_code_cell

LESSON_CELLS = {
    "bn": [
        md("### Training and evaluation are two different computations\n\nIn training, BatchNorm normalizes "
           "each channel with the mean and variance of the batch in front of it; in evaluation, with running "
           "averages gathered during training. The model just trained, tested both ways on the test set, in "
           "fp32 (the training table's last row was scored in the precision it trained in):"),
        code("""from sweep import accuracy_with_batch_statistics

print(f"eval mode, running averages:            {utils.score(model, data).accuracy:6.2f}%")
for batch in (2, 8, 32, 128):
    print(f"train mode, statistics of {batch:3d} test images: {accuracy_with_batch_statistics(model, data, batch):6.2f}%")"""),
        md("The same measurement, recorded by `python sweep.py` for the full run's model and for a model that "
           "was trained with batches of 2 (`docs/lessons.md`, the batch-size experiment):"),
        code("Markdown(results.batchnorm_gap_table())"),
        md("### An image alone against inside a batch\n\nThe 128 first of `x` passed as one batch and each passed "
           "alone: the largest difference in any logit, and how many predictions change."),
        code("""for mode in ("eval", "train"):
    difference, changed = probes.batch_dependence(model, x[:128], mode)
    print(f"BatchNorm in {mode} mode: largest logit difference {difference:.1e}, {changed} of 128 predictions change")"""),
        md("### Folding BatchNorm into the conv\n\nIn eval mode BatchNorm is a fixed scale and shift per "
           "channel, $y = \\gamma_c (x - \\mu_c) / \\sqrt{\\sigma_c^2 + \\epsilon} + \\beta_c$ with the running "
           "averages, so the conv before it can absorb it: its weights scaled by "
           "$\\gamma_c / \\sqrt{\\sigma_c^2 + \\epsilon}$ per output channel, the shift moved into its bias "
           "(`torch.nn.utils.fusion.fuse_conv_bn_eval`). LayerNorm and GroupNorm compute their statistics "
           "from each image, so there is nothing fixed to absorb."),
        code("""folded = probes.fold_batchnorm(model)
with torch.no_grad():
    difference = (model.eval()(x) - folded(x)).abs().max().item()
print(f"parameters: {count_parameters(model):,} with BatchNorm, {count_parameters(folded):,} folded")
print(f"largest logit difference on {len(x):,} test images: {difference:.1e}")
print(folded.C3)"""),
        md("What folding saves at inference, timed here on this device (eval mode, the median of 5 passes):"),
        code("""for batch in (1, 256):
    sample = x[:200] if batch == 1 else x
    plain, fused = (probes.seconds_per_image(m, sample, batch) for m in (model, folded))
    print(f"batches of {batch:3d}: {1000 * plain:.3f} ms per image with BatchNorm, {1000 * fused:.3f} ms folded "
          f"({plain / fused:.2f}x)")"""),
        md("The same, recorded by `python lessons.py fold` for the full run's model on a 2-core CPU:"),
        code('lessons.show("fold")'),
        md("Folded, the model gives the same prediction for every one of the 10,000 test images (its logits move by "
           "at most 5.13e-06, float rounding) with 47,514 parameters instead of 47,970, and the same test accuracy "
           "here in fp32, 82.03%. Each C block does one operation fewer; what that saves depends on the machine "
           "and the batch: recorded, 1.455 against 1.248 ms for an image alone and 0.487 against 0.453 ms per "
           "image in batches of 256, and the cell above times it where this notebook runs."),
    ],
    "ln": [
        md("### One mean and variance per image\n\nWhat enters the norm of C5 for four test images, and the "
           "same normalized before LayerNorm's scale and shift: each image as a whole gets mean 0 and "
           "standard deviation 1, while its channels keep means of their own."),
        code("""before = probes.norm_input(model, "C5", x[:4])
after = torch.nn.functional.group_norm(before, 1)  # LayerNorm's normalization, without its scale and shift
for name, t in (("entering the norm", before), ("normalized", after)):
    print(f"{name:17s} per-image mean {t.mean((1, 2, 3)).cpu().numpy().round(3)}, "
          f"std {t.std((1, 2, 3)).cpu().numpy().round(3)}")
print("normalized, image 0, the means of its first 6 channels:", after[0].mean((1, 2))[:6].cpu().numpy().round(2))"""),
        md("### Training and evaluation are the same computation\n\nNothing is carried over from training: "
           "train mode and eval mode give the same logits."),
        code("""with torch.no_grad():
    train_mode, eval_mode = model.train()(x[:256]), model.eval()(x[:256])
print(f"LayerNorm, train against eval mode: largest logit difference {(train_mode - eval_mode).abs().max().item():.1e}")"""),
        md("### An image alone against inside a batch\n\nThe 128 first of `x` passed as one batch and each passed "
           "alone; the same for all five norms, recorded with the models of the learning-rate lesson, "
           "below it."),
        code("""for mode in ("eval", "train"):
    difference, changed = probes.batch_dependence(model, x[:128], mode)
    print(f"LayerNorm in {mode} mode: largest logit difference {difference:.1e}, {changed} of 128 predictions change")"""),
        code('lessons.show("batch-of-one")'),
        md("In eval mode no model's prediction depends on the batch: alone and in the batch the logits differ by "
           "1.7e-06 to 2.9e-06, float rounding. In train mode BatchNorm's do: alone, an image is normalized with its "
           "own statistics, its logits move by up to 8.6 and 114 of the 128 predictions change, while LayerNorm, "
           "InstanceNorm and GroupNorm compute the same thing in both modes."),
        md("### Two things called LayerNorm\n\nThis suite's LayerNorm is `nn.GroupNorm(1, C)`: one mean and "
           "variance over C, H and W of each image, as in the GroupNorm paper. ConvNeXt and transformers use "
           "`nn.LayerNorm(C)` on each pixel's C channels: a mean and variance per pixel. The two on the same "
           "tensor (C5's input of one image):"),
        code("""t = before[:1]
over_image = torch.nn.functional.group_norm(t, 1)
over_channels = torch.nn.functional.layer_norm(t.permute(0, 2, 3, 1), (t.shape[1],)).permute(0, 3, 1, 2)
print(f"statistics: GroupNorm(1, C) takes 1 mean and variance, the per-pixel LayerNorm {t.shape[2] * t.shape[3]}")
for name, y in (("GroupNorm(1, C)", over_image), ("per-pixel LayerNorm", over_channels)):
    pixel_means = y.mean(1)  # the mean over the channels at each pixel
    print(f"{name:20s} pixel means from {pixel_means.min().item():+.2f} to {pixel_means.max().item():+.2f}")"""),
        md("Which one trains better here, each trained at screening size (`python lessons.py layernorms`):"),
        code('lessons.show("layernorms")'),
        md("At this size the suite's LayerNorm, one mean and variance per image, reached 69.0% (seeds 68.8 and 69.3) "
           "and ConvNeXt's per-pixel LayerNorm 67.1% (66.4 and 67.7): beyond the seeds' range. The per-pixel norm "
           "gives every pixel the same mean and variance over its channels, so, as the cell before the table shows, "
           "it erases how strongly one pixel responds against another; the per-image norm keeps that."),
        md("### Before or after the ReLU\n\nThis suite places LayerNorm (and GroupNorm) after the ReLU, "
           "BatchNorm before it. The runs that decided it, from the validation record:"),
        code('lessons.show("placement")'),
        md("Both seeds agree: after the ReLU LayerNorm scored 80.5% against 78.4% before it, and GroupNorm 80.3% "
           "against 78.7%, each beyond the seeds' range, while BatchNorm did better before the ReLU, 81.7% against "
           "81.0%. That is why this suite's LayerNorm and GroupNorm sit after the ReLU and its BatchNorm before it."),
    ],
    "gn": [
        md("### The groups of each layer\n\nGroupNorm splits each layer's channels into 4 groups and takes a "
           "mean and variance per group of each image:"),
        code("""for label, block in probes.c_blocks(model):
    gn = block[2]  # conv, ReLU, norm
    print(f"{label}: {gn.num_channels} channels in {gn.num_groups} groups of {gn.num_channels // gn.num_groups}")"""),
        md("What enters the norm of C5 for one test image, normalized per group before GroupNorm's scale and "
           "shift: each group gets mean 0 and standard deviation 1, and the channels inside a group keep "
           "means of their own."),
        code("""t = probes.norm_input(model, "C5", x[:1])
groups = torch.nn.functional.group_norm(t, 4).view(1, 4, -1, *t.shape[2:])  # (image, group, channel, H, W)
print("per group: mean", groups.mean((2, 3, 4))[0].cpu().numpy().round(3), "std", groups.std((2, 3, 4))[0].cpu().numpy().round(3))
print("group 0, its channels' means:", groups[0, 0].mean((1, 2)).cpu().numpy().round(2))"""),
        md("### From LayerNorm to InstanceNorm\n\nOne group is LayerNorm over (C, H, W); one channel per group "
           "is InstanceNorm. Both, checked on the same tensor:"),
        code("""C = t.shape[1]
print("GroupNorm(1, C) equals LayerNorm over (C, H, W):",
      torch.allclose(torch.nn.functional.group_norm(t, 1), torch.nn.functional.layer_norm(t, t.shape[1:]), atol=1e-4))
print("GroupNorm(C, C) equals InstanceNorm:",
      torch.allclose(torch.nn.functional.group_norm(t, C), torch.nn.functional.instance_norm(t), atol=1e-4))"""),
        md("How many channels per group this network wants, each size trained at screening size "
           "(`python lessons.py groups`):"),
        code('lessons.show("groups")'),
        md("From 4 channels per group to all of them the accuracy is flat: 69.3%, 69.2%, 69.6% and 69.2%, every pair "
           "within the seeds' range, so on this small network four groups do no better than LayerNorm's one, unlike "
           "on ImageNet in the GroupNorm paper. Two channels per group scored 68.3%, below the 4 and 8-16 rows "
           "beyond the seeds' range; one channel per group, InstanceNorm, fell to 50.2% before the ReLU and to "
           "chance, 9.8%, after it, where every channel's spatial mean is its shift and the pool sees the same "
           "numbers for every image."),
        md("### Training and evaluation are the same computation\n\nLike LayerNorm, GroupNorm takes its "
           "statistics from each image: no running averages, the same logits in train and eval mode, and an "
           "image's prediction does not depend on its batch."),
        code("""with torch.no_grad():
    train_mode, eval_mode = model.train()(x[:256]), model.eval()(x[:256])
print(f"GroupNorm, train against eval mode: largest logit difference {(train_mode - eval_mode).abs().max().item():.1e}")"""),
        code("""difference, changed = probes.batch_dependence(model, x[:128], "train")
print(f"GroupNorm, each of 128 images alone against in one batch: largest logit difference {difference:.1e}, "
      f"{changed} predictions change")"""),
    ],
}

COMPARE = dict(file="S8_compare.ipynb", title="BatchNorm, LayerNorm, GroupNorm, and what a norm and the skips do")

COMPARE_LOAD = """%matplotlib inline
import os

from IPython.display import Image, Markdown

import lessons
import plots
import results
import sweep
import utils
from data import load_cifar10

DATA = os.environ.get("S8_DATA", "data")  # a folder to download into, or a local copy (see README)
data = load_cifar10(DATA)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")"""


def compare_cells(repo):
    """The fourth notebook: the cross-norm results, read from disk (it trains nothing)."""
    lessons_links = ", ".join(f"[`{spec['file']}`]({spec['file']})" for spec in LESSONS.values())
    return [
        md(f"# {COMPARE['title']}\n\n" + (f"{badge(repo, COMPARE['file'])}\n\n" if repo else "") +
           f"The three lessons, {lessons_links}, each train one norm. This notebook puts their results side by "
           "side, with the experiments that need many runs: each was made by one command "
           "(`python lessons.py ...`, `python sweep.py`, `python run.py`) and is read here from `results/`, "
           "so this notebook trains nothing. The numbers and the commands are also in `docs/lessons.md`."),
        md("## 1. Set-up and the data"),
        code(setup_cell(repo)),
        code(COMPARE_LOAD),
        md("Four training images of each class, and one image as training shows it: shifted by up to 4 pixels "
           "(the border filled by reflection) and flipped left-right half of the time."),
        code("plots.plot_samples(data)"),
        code('plots.plot_augmentation(data, index=7, cfg=utils.recipe("bn"))'),
        md("## 2. The three norms on the test set\n\n`python run.py --norm all`: 20 epochs on all 50,000 "
           "training images, seeds 0, 1 and 2, each norm with its recipe. A difference smaller than the seeds' "
           "range is reported as none."),
        code("saved = results.load_results()\nMarkdown(results.results_table(saved) + \"\\n\\n\" + results.comparison(saved))"),
        code('Image("images/comparison.png")'),
        md("## 3. What a norm buys: no norm, and the learning rate\n\nThe claim for BatchNorm (Ioffe and "
           "Szegedy, 2015) is that it lets a network train at much higher learning rates. Here the five "
           "variants (the three norms, InstanceNorm, and no norm at all) train with one recipe, its rates "
           "multiplied by 1/4 to 16."),
        code('lessons.show("lr")'),
        md("With this recipe (Muon on the conv kernels) the network without a norm trains only at low rates: 68.5% "
           "at a quarter of the recipe's, 56.5% at the recipe's own, and at 4 and 16 times one seed diverged while "
           "the other stayed at chance (10.9%, 10.3%). BatchNorm scored 70.6% to 70.8% from the recipe's rates to 16 "
           "times them (69.5% at a quarter); LayerNorm and GroupNorm peak at 4 times (69.5%, 69.7%) and fall at 16 "
           "times (66.4%, 67.7%). So here a norm buys the higher rates Ioffe and Szegedy reported more than "
           "accuracy: at the lowest rate tried the network without one scored 68.5%, below the norms' best "
           "(LayerNorm 69.5%, GroupNorm 69.7%, BatchNorm 70.8%). InstanceNorm is the only one still gaining at 16 "
           "times (45.4% to 62.3%), and stays below the three norms at every rate."),
        md("## 4. What the skip connections do\n\nThe network adds C3's output to C5's and C7's to C9's. Each "
           "norm, and no norm, trained at full length with and without the two additions; beside the "
           "accuracies, the training loss and how large each layer's gradient is at the start."),
        code('lessons.show("skips")'),
        md("With a norm the two skips make no difference at full length: BatchNorm 82.1% with them and 82.5% "
           "without, LayerNorm 82.2% and 82.1%, GroupNorm 82.0% and 82.1%, every pair within the seeds' range. "
           "Without a norm they are what lets this network learn at all: 64.3% with them (63.1 and 65.4), chance "
           "(10.0%) without. The gradients say why: at initialisation, without norm or skips, C1's gradient is "
           "2.2e-05 against C9's 0.00612 (a ratio of 0.00367), so the first layers get almost no signal; the skips "
           "lift C1's to 0.00143 (ratio 0.22), and with any norm the ratio is 0.224 or more."),
        md("## 5. Inside the network\n\nWhat enters each ReLU (the pre-activation), as percentiles over the "
           "training batch, through the first epoch and at the end."),
        code('lessons.show("activations")'),
        md("Where the norm comes before the ReLU (BatchNorm, InstanceNorm), what enters each ReLU stays within about "
           "-4.28 to 3.33 in the first epoch and at the end (BatchNorm's C9: 1st and 99th percentiles -2.53 and 2.52 "
           "at the first step, -2.27 and 3.30 at the last). LayerNorm and GroupNorm come after the ReLU, so it sees "
           "the raw conv output, whose range grows through training (LayerNorm's C5: from -1.38 and 1.33 to -21.38 "
           "and 24.50) and which the norm after it then normalizes. Without a norm the signal fades through the "
           "layers at the start (C5's 99th percentile 0.09, C9's 0.07), and at the end at least 99% of what enters "
           "C9's ReLUs is negative in both seeds (99th percentile -133.00 and -31.12): C9 outputs almost only zeros, "
           "so what reaches the pool is nearly all the skip's copy of C7's output."),
        md("## 6. The batch size\n\n`python sweep.py`: each norm trained at batch sizes 2 to 128, the learning "
           "rate scaled with the batch, on a seeded 4,000-image subset (Wu and He, 2018, on ImageNet: "
           "BatchNorm's error rises below 16 images per batch, GroupNorm's stays flat)."),
        code('Image("images/batch_size.png")'),
        code("sweep_runs, sweep_table = results.load_sweep()\nMarkdown(sweep.lessons_section(sweep_runs, sweep_table, True, \".\"))"),
        md("With batches of 2 BatchNorm fell to 40.1% (seeds 37.5 and 42.6) while LayerNorm held 51.1% and "
           "GroupNorm 54.1%, the paper's result for small batches on this network; from batch 16 up BatchNorm is "
           "level with GroupNorm or above it. Unlike in the paper, every norm loses accuracy at the largest "
           "batches: at batch 128 an epoch of 4,000 images is 32 steps, and in a run this short the number of "
           "steps, not the norm, limits the model. These runs used the recipe of their time (SGD, named above the "
           "table), not today's Muon. The full run's BatchNorm model scores 82.03% with its running statistics but "
           "59.13% when each test batch of 2 images is normalized with its own, which is why BatchNorm keeps "
           "running averages for evaluation. The model trained with batches of 2 scores the same with its running "
           "statistics (42.89%) as with those of 128 test images (43.10%): it lost its accuracy in training, on "
           "noisy two-image statistics."),
    ]


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


def notebook_files():
    """{key: file} of every generated notebook: the three lessons (keyed by norm), then 'compare'."""
    return {**{norm: spec["file"] for norm, spec in LESSONS.items()}, "compare": COMPARE["file"]}


def build(norm, repo, old=None):
    """The notebook for `norm` (a lesson) or 'compare'; a code cell whose source is the same as one of
    `old`'s keeps that cell's outputs (matched by source, so inserting a cell loses no outputs)."""
    nb = new_notebook(cells=compare_cells(repo) if norm == "compare" else cells(norm, LESSONS[norm], repo))
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
        rows = [f"| [`{file}`]({file}) | {badge(repo, file)} |" for file in notebook_files().values()]
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
    for key, file in notebook_files().items():
        path = ROOT / file
        old = None if args.clear_outputs or not path.exists() else nbformat.read(path, as_version=4)
        nbformat.write(build(key, repo, old), path)
        print(f"wrote {file}")
    results.write_section(readme, "colab", colab_section(repo))
    if repo:
        print(f"Colab badges and clone address: github.com/{repo}")
    else:
        print("no repository known (give --repo OWNER/NAME): no Colab badge, no clone address; on Colab the "
              "set-up cell asks for the zip that --bundle writes")


if __name__ == "__main__":
    main()
