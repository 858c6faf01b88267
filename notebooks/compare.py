# %% [markdown]
# # BatchNorm, LayerNorm, GroupNorm, and what a norm and the skips do
#
# The three lessons, [`S8_BN.ipynb`](S8_BN.ipynb), [`S8_LN.ipynb`](S8_LN.ipynb), [`S8_GN.ipynb`](S8_GN.ipynb), each train one norm. This notebook puts their results side by side, with the experiments that need many runs: each was made by one command (`python lessons.py ...`, `python run.py`) and is read here from `results/`, so this notebook trains nothing. The numbers and the commands are also in `docs/lessons.md`.

# %% [markdown]
# ## 1. Set-up and the data

# %%
# include: setup.py

# %%
# %matplotlib inline
import os

from IPython.display import Image, Markdown

import experiments
import plots
import results
import utils
from data import load_cifar10

DATA = os.environ.get("S8_DATA", "data")  # a folder to download into, or a local copy (see README)
data = load_cifar10(DATA)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")

# %% [markdown]
# Four training images of each class, and one image as training shows it: shifted by up to 4 pixels (the border filled by reflection) and flipped left-right half of the time.

# %%
plots.plot_samples(data)

# %%
plots.plot_augmentation(data, index=7, cfg=utils.recipe("bn"))

# %% [markdown]
# ## 2. The three norms on the test set
#
# `python run.py --norm all`: 20 epochs on all 50,000 training images, seeds 0, 1 and 2, each norm with its recipe. A difference smaller than the seeds' range is reported as none.

# %%
saved = results.load_results()
Markdown(results.results_table(saved) + "\n\n" + results.comparison(saved))

# %%
Image("images/comparison.png")

# %% [markdown]
# ## 3. What a norm buys: no norm, and the learning rate
#
# The claim for BatchNorm (Ioffe and Szegedy, 2015) is that it lets a network train at much higher learning rates. Here the five variants (the three norms, InstanceNorm, and no norm at all) train with one recipe, its rates multiplied by 1/4 to 16.

# %%
experiments.show("lr")

# %% [markdown]
# ## 4. What the skip connections do
#
# The network adds C3's output to C5's and C7's to C9's. Each norm, and no norm, trained at full length with and without the two additions; beside the accuracies, the training loss and how large each layer's gradient is at the start.

# %%
experiments.show("skips")

# %% [markdown]
# ## 5. Inside the network
#
# What enters each ReLU (the pre-activation), as percentiles over the training batch, through the first epoch and at the end.

# %%
experiments.show("activations")

# %% [markdown]
# ## 6. The batch size
#
# `python lessons.py batch-size`: each norm trained at batch sizes 2 to 128, SGD's learning rate scaled with the batch, on a seeded 4,000-image subset (Wu and He, 2018, on ImageNet: BatchNorm's error rises below 16 images per batch, GroupNorm's stays flat).

# %%
experiments.show("batch-size")
