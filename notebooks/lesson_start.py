# %% [markdown]
# ## 1. Settings and set-up
#
# The settings of this lesson, as plain Python. Change one, then run the cells below it again. As committed, the notebook trained for 20 epochs on all 50,000 training images (its outputs show that run); for a quick first pass set `EPOCHS = 2` and `SUBSET = 5000`. How long each took on the machine that executed the committed outputs is printed under the set-up cell.
#
# The committed outputs used an offline JPEG copy of CIFAR-10 (quality 75; the data line below names it). With `DATA = "data"`, as on Colab, the original images are downloaded instead, so your numbers will differ from the committed ones for that reason too, besides the machine and its arithmetic.

# %%
EPOCHS = 20  # passes over the training images
SUBSET = 0  # how many training images to use (and a fifth as many test images); 0: all 50,000
BATCH_SIZE = 128  # images per training step
SKIPS = True  # the two skip connections, C3's output added to C5's and C7's to C9's
SEED = 0  # the random seed of the weights, the order of the images and their augmentation
DATA = "data"  # where CIFAR-10 is, or an empty folder to download it into
NETWORK_IMAGES, NETWORK_EPOCHS = 5000, 3  # section 3's two runs, PyTorch's norm and yours
WATCH_STEPS = 100  # the training steps section 4 watches, with the norm and without
SHORT_IMAGES, SHORT_EPOCHS = 5000, 2  # the exercises' short runs: training images (a fifth as many test) and epochs

# %%
# include: setup.py

# %%
from lab import results

executed = results.read(results.record_path(results.ROOT, "notebooks", "execution"))
for setting, took in executed["seconds"][f"S8_{NORM.upper()}.ipynb"].items() if executed else ():
    print(f"{setting}: the whole notebook {took['notebook'] / 60:.1f} min, its training cell "
          f"{took['training cell'] / 60:.1f} min")
print(f"measured on {executed['machine']}, {executed['precision'][f'S8_{NORM.upper()}.ipynb']}" if executed
      else "not timed yet")

# %% [markdown]
# CIFAR-10: 50,000 training and 10,000 test images of 32x32 pixels in 10 classes, decoded once and kept in memory as uint8 tensors. Training augments each batch at once: every image shifted by up to 4 pixels (the border filled by reflection) and flipped left-right half of the time.

# %%
# %matplotlib inline
import inspect

import torch
from IPython.display import Markdown, display

import exercises
import from_scratch
import plots
import probes
import recipes
import utils
from data import load_cifar10, normalize
from explorer import mistake_explorer, normalized_over_explorer
from hardware import choose_precision, describe_device, pick_device, without_layout
from lab import experiments
from models import NORM_TYPES, S8_model, count_parameters

device = pick_device()
data = load_cifar10(DATA)
if SUBSET:
    data = data.subset(SUBSET, seed=SEED)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")
print(f"training on {describe_device(device)}")
# 1,000 test images in a seeded random order (the test set may be stored class by class), normalized, on the
# device: what the later sections feed the model
picked = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(SEED))[:1000]
x = normalize(data.test_images[picked].to(device), data.mean.to(device), data.std.to(device))

# %% [markdown]
# ## 2. The model
#
# The network is `C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10`, built in `models.py`. Each `C` is a 3x3 conv with the norm and a ReLU, `c3` and `c6` are 1x1 convs that reduce the channels, `P` a 2x2 max-pool, `GAP` the mean of each channel over the image, and `c10` a 1x1 conv to the 10 classes. torchsummary's table below lists every layer with its output shape and parameter count, and under it is the forward pass with the two skips.

# %% tags=["nbval-check-output"]
torch.manual_seed(SEED)
model = S8_model(NORM, skips=SKIPS).to(device)
utils.summarize(model, device)
n_params = count_parameters(model)
print(f"{type(model).__name__}: {n_params:,} parameters ({'within' if n_params < 50_000 else 'OVER'} the 50,000 budget)")
assert n_params < 50_000
print(inspect.getsource(type(model).forward))

# %% [markdown]
# ### What a norm normalizes over
#
# A batch of activations is a block of N images x C channels x H·W positions. Every norm subtracts a mean and divides by a standard deviation; they differ in which values share one mean and variance (the shaded set, after Wu and He, 2018, Figure 2): BatchNorm one channel across the whole batch, LayerNorm all of one image, InstanceNorm one channel of one image, GroupNorm a group of channels of one image. Below the figure, pick a norm and a number of groups to see the set change (it needs a live kernel).

# %%
display(plots.plot_normalized_over(groups=4))
normalized_over_explorer()
