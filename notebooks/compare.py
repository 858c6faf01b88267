# %% [markdown]
# # BatchNorm, LayerNorm, GroupNorm, and what a norm and the skips do
#
# The three lessons, [`S8_BN.ipynb`](S8_BN.ipynb), [`S8_LN.ipynb`](S8_LN.ipynb), [`S8_GN.ipynb`](S8_GN.ipynb), each train one norm. This notebook puts their results side by side, with the experiments that need many training runs: they were trained once and are read here from `results/`, so this notebook trains nothing (on a fresh Colab it first downloads CIFAR-10, for the sample images). `docs/lessons.md` holds the same numbers and says how each was made.

# %% [markdown]
# ## 1. Set-up and the data

# %%
DATA = "data"  # where CIFAR-10 is, or an empty folder to download it into (the committed outputs: an offline JPEG copy)

# %%
# include: setup.py

# %%
# %matplotlib inline
from IPython.display import Image, Markdown

import plots
import recipes
from data import load_cifar10
from lab import experiments, results

data = load_cifar10(DATA)
print(f"{data.source}: {len(data.train_labels):,} training and {len(data.test_labels):,} test images")

# %% [markdown]
# Four training images of each class, and one image as training shows it: shifted by up to 4 pixels (the border filled by reflection) and flipped left-right half of the time.

# %%
plots.plot_samples(data)

# %%
plots.plot_augmentation(data, index=7, cfg=recipes.recipe("bn"))

# %% [markdown]
# ## 2. The three norms on the test set
#
# Each norm trained with its recipe for 20 epochs on all the training images, three seeds each. Two norms differ only where their means are further apart than the seeds of either spread, and otherwise are reported as level. The README's table adds the optimizer, the data and the machine.

# %%
saved = results.load_results()
Markdown(results.students_table(saved) + "\n\n" + results.comparison(saved))

# %%
Image("images/comparison.png")

# %% [markdown]
# ## 3. What a norm buys: no norm, and the learning rate
#
# The claim for BatchNorm (Ioffe and Szegedy, 2015) is that it lets a network train at much higher learning rates. Here the five variants (the three norms, InstanceNorm, and no norm at all) train with one recipe, its rates multiplied by 1/4 to 16. That recipe updates the conv kernels with Muon, whose step has a fixed size whatever the scale of the gradient: with plain SGD a kernel's step grows with its gradient. So Muon may do here, for every variant, the one without a norm included, part of what the claim credits to a norm, and these runs cannot tell the two apart: read the table for what a norm still adds under Muon.

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
# What enters each ReLU (the pre-activation), as percentiles over the training batch, through the first epoch and at the end. BatchNorm and InstanceNorm sit before the ReLU here, so what enters their ReLUs has just been normalized; LayerNorm and GroupNorm sit after it, so what enters theirs is the conv's output before its block's norm, and its spread says nothing about how well they normalize.

# %%
experiments.show("activations")

# %% [markdown]
# ## 6. The batch size
#
# Each norm trained at batch sizes from 2 to 128 in short runs, with SGD for every kernel (not the lessons' Muon recipe) and its learning rate scaled with the batch. Every batch size trained for the same number of epochs, so a batch of 128 took 64 times fewer steps than a batch of 2: where every norm falls at the largest batches, the fewer steps can explain it, and this sweep cannot tell that apart from what the batch does to the norm. Wu and He (2018) found on ImageNet that BatchNorm's error rises below 16 images per batch while GroupNorm's stays flat; read the table's small batches for that. (The BatchNorm lesson's Exercise 1 asks about the last table below: do it first.)

# %%
experiments.show("batch-size")
