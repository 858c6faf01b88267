# %% [markdown]
# ## 1. Set-up, data and model

# %%
# include: setup.py

# %%
# Environment variables override these: a short version runs with e.g. S8_EPOCHS=1 S8_SUBSET=2000.
EPOCHS = int(os.environ.get("S8_EPOCHS", 20))
BATCH_SIZE = int(os.environ.get("S8_BATCH_SIZE", 128))
SEED = int(os.environ.get("S8_SEED", 0))
SUBSET = int(os.environ.get("S8_SUBSET", 0))  # 0 = all 50,000 training images
DATA = os.environ.get("S8_DATA", "data")  # a folder to download into, or a local copy (see README)
AMP = os.environ.get("S8_AMP", "auto")  # auto | bf16 | fp16 | off; auto: what this hardware does natively

# %% [markdown]
# CIFAR-10: 50,000 training and 10,000 test images of 32x32 pixels in 10 classes, decoded once and kept in memory as uint8 tensors; training augments whole batches on the device (random shifts of up to 4 pixels, left-right flips).

# %%
# %matplotlib inline
import inspect

import torch
from IPython.display import Markdown

import experiments
import plots
import probes
import utils
from data import load_cifar10, normalize
from explorer import mistake_explorer
from hardware import choose_precision, describe_device, pick_device
from models import S8_model, count_parameters

device = pick_device()
cfg = utils.recipe(NORM, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED, amp=AMP)
precision = choose_precision(device, NORM, cfg.amp)  # what this hardware computes fastest in (hardware.py)
data = load_cifar10(DATA)
if SUBSET:
    data = data.subset(SUBSET, seed=SEED)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")
print(f"training on {describe_device(device)}")
# 1,000 test images, normalized, on the device: what section 4 feeds the trained model
x = normalize(data.test_images[:1000].to(device), data.mean.to(device), data.std.to(device))

# %% [markdown]
# The model, `C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10`, with C3's output added to C5's and C7's to C9's (`models.py`; the last lines below are its forward pass).

# %% tags=["nbval-check-output"]
torch.manual_seed(SEED)
model = S8_model(NORM)
utils.summarize(model, device)
n_params = count_parameters(model)
norm_layers = sorted({repr(m) for m in model.modules() if isinstance(m, (torch.nn.BatchNorm2d, torch.nn.GroupNorm))})
print(f"{type(model).__name__}: {n_params:,} parameters "
      f"({'within' if n_params < 50_000 else 'OVER'} the 50,000 budget), placement {model.config.order}, "
      f"{model.config.conv} 3x3 convs")
print("norm layers:", ", ".join(norm_layers))
assert n_params < 50_000
print(inspect.getsource(type(model).forward))  # the two skips: C3's output joins C5's, C7's joins C9's

# %% [markdown]
# ## 2. Training
#
# Muon (`muon.py`: each conv kernel's update made orthogonal) for the conv kernels that a norm follows, SGD with Nesterov momentum for the classifier and the norms' scales and shifts, one one-cycle learning-rate schedule for both, and label smoothing; chosen on the validation split (`docs/experiments.md`). Below, a line names the precision chosen for this hardware (`hardware.py`), then one row per epoch.

# %%
history = utils.fit(model, data, cfg, device, precision)

# %% [markdown]
# The two losses measure different things: training minimizes label-smoothed cross-entropy on augmented images, averaged over the epoch while the weights move; the test loss is plain cross-entropy of the finished epoch's model on the untouched test images. Compare their trends, not their levels.

# %%
plots.plot_curves(history, title=f"{type(model).__name__}, seed {SEED}: test accuracy "
                                 f"{history[-1]['test_acc']:.2f}%, train {history[-1]['train_acc']:.2f}% (augmented)")

# %% [markdown]
# ## 3. Mistakes
#
# The ten test images the model got wrong with the most confidence, with their true and predicted classes; below them, a browser of every mistake by true and predicted class (it needs a live kernel).

# %%
mistakes = utils.get_incorrect_predictions(model, data, precision)
print(f"{len(mistakes):,} of {len(data.test_labels):,} test images misclassified")
display(utils.plot_incorrect_predictions(mistakes, data.classes))
mistake_explorer(mistakes, data.classes)
