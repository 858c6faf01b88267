# %% [markdown]
# # BatchNorm, LayerNorm, GroupNorm, and what a norm and the skips do
#
# The three lessons, [`S8_BN.ipynb`](S8_BN.ipynb), [`S8_LN.ipynb`](S8_LN.ipynb), [`S8_GN.ipynb`](S8_GN.ipynb), each train one norm. This notebook puts their results side by side, with the experiments that need many training runs: they were trained once and are read here from `results/`, so this notebook trains nothing (on a fresh Colab it first downloads CIFAR-10, for the sample images). Its last section asks why a norm helps at all. `docs/lessons.md` holds the same numbers and says how each was made.

# %% [markdown]
# ## 1. Set-up and the data

# %%
DATA = "data"  # where CIFAR-10 is, or an empty folder to download it into (the committed outputs: an offline JPEG copy)

# %%
# include: setup.py

# %%
# %matplotlib inline
import torch
from IPython.display import Image, Markdown

import plots
import probes
import recipes
from data import load_cifar10, normalize
from lab import experiments, results
from models import S8_model

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
# A batch size changes two things at once: the images BatchNorm's statistics come from, and the number and size of the optimizer's steps. To measure the first alone, BatchNorm here takes its statistics over splits of a few images inside every batch of 128 (a ghost batch, Hoffer et al., 2017, close to the per-GPU statistics of Wu and He, 2018, where each GPU normalizes its share of the batch alone), so every run takes the same steps on the same images with the same rates. LayerNorm and GroupNorm normalize each image alone, so no split changes them: their runs are the reference lines. Wu and He found on ImageNet that BatchNorm's error rises as each GPU's batch falls below 16 images while GroupNorm's stays flat. (The BatchNorm lesson's Exercise 1 asks about the last table below: do it first.)

# %%
experiments.show("batch-size")

# %% [markdown]
# ## 7. Why a norm helps
#
# The lessons show what each norm does; why that helps training is less settled. Ioffe and Szegedy (2015) introduced BatchNorm to reduce *internal covariate shift*: as the earlier layers train, the distribution of each layer's input moves, and fixing its mean and variance was to spare each layer from chasing it (the lessons' section 4 watches those statistics hold). Santurkar et al. (2018) questioned that story: they added random noise after every BatchNorm layer, a shift and a scale drawn anew at every step, so that each layer's input moved more than without BatchNorm, and those networks trained about as well as with plain BatchNorm. What they measured instead is that BatchNorm makes the loss and its gradient change more smoothly along the training path. They do not say what makes the loss smoother. Three things a norm does that this suite can show for itself follow; they show what a norm changes, not that it is why training is easier.
#
# ### A norm makes a kernel's scale irrelevant
#
# After a norm, a conv's output does not depend on the scale of its kernel. Below, C4 of an untrained model of each kind has its conv's weights multiplied by 10 (the kernel, and the bias where the conv has one), and the block's output on 64 test images is compared with before:

# %%
picked = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(0))[:64]  # not one class
x = normalize(data.test_images[picked].float(), data.mean, data.std)
cases = {"BatchNorm, train mode (batch statistics)": ("bn", True, True),
         "BatchNorm, eval mode (running averages)": ("bn", False, True),
         "LayerNorm (conv, ReLU, norm)": ("ln", True, True),
         "GroupNorm, kernel alone (Weight Standardization, then the norm)": ("gn", True, False),
         "no norm": ("none", True, True)}
for name, (norm, train, bias) in cases.items():
    torch.manual_seed(0)
    change = probes.scale_change(S8_model(norm), "C4", x, factor=10, train=train, bias=bias)
    print(f"{name:66s} C4's output moves by {change:.1e} of its size")

# %% [markdown]
# In training mode BatchNorm divides the tenfold output by a tenfold standard deviation; the remainder is eps's doing. In eval mode its running averages are fixed numbers, so the output moves ninefold like the model without a norm. A ReLU passes a positive scale through, so LayerNorm after it cancels the scale too, and GroupNorm's Weight Standardization removes the kernel's scale before the norm sees anything. So for a kernel a norm follows only its direction matters, and how far a step turns it depends on the step's size against the kernel's. Muon (`muon.py`) sets each step's size itself instead of taking it from the gradient, whose scale the norm has made arbitrary; the recipe gives it the conv kernels. Muon trains the model without a norm too (section 3), so this is a reason the pairing fits, not a measurement that it helps.
#
# ### BatchNorm's statistics are noise in training
#
# In training, BatchNorm normalizes each image with statistics it shares with the other images of its batch, and those change from batch to batch; LayerNorm and GroupNorm normalize each image alone. The full runs (three seeds each) and section 6's ghost batches:

# %%
for norm, summary in saved.items():
    print(f"{results.LABELS[norm]:10s} train accuracy {summary['final_train_accuracy_mean']:.2f}%, "
          f"test accuracy {summary['final_test_accuracy_mean']:.2f}% (full runs, mean of the seeds)")
ghosts = {}
for r in results.read_records(results.ROOT, "sweep", "bn-ghost*-seed*"):
    ghosts.setdefault(r["model_config"]["ghost_batch"], []).append(r)
for images, rs in sorted(ghosts.items()):
    print(f"BatchNorm over {images:3d} images: train accuracy "
          f"{sum(r['final_train_accuracy'] for r in rs) / len(rs):.2f}%, test accuracy "
          f"{sum(r['final_test_accuracy'] for r in rs) / len(rs):.2f}% (section 6's runs, mean of the seeds)")

# %% [markdown]
# Read the training accuracy beside the test accuracy: the fewer images BatchNorm's statistics come from, the noisier they are, and the lower the accuracy the model reaches on its own training images. Section 6's rows show where that costs test accuracy too.
#
# ### What InstanceNorm throws away
#
# InstanceNorm normalizes each channel of each image by itself, so every channel's level and contrast in every image is removed: how strongly a feature is present in the image as a whole is gone, and only where it is stronger or weaker within the image is left. LayerNorm removes only the image's overall level and contrast, and keeps how its channels compare. Below, one test image with its first channel brightened and stretched, passed through each norm without its scale and shift:

# %%
image = x[:1]
changed = image.clone()
changed[:, 0] = 2 * changed[:, 0] + 1
for name, normalized in (("InstanceNorm", torch.nn.functional.instance_norm),
                         ("LayerNorm", lambda t: torch.nn.functional.group_norm(t, 1))):
    print(f"{name:12s}: output moves by {(normalized(changed) - normalized(image)).abs().max():.1e}")
print("validation accuracy, mean of the seeds (section 3's runs), at the recipe's rates times:")
for norm in experiments.LESSON_NORMS:
    accuracies = experiments.lr_accuracies(norm, (1, 16))
    print(f"  {results.LABELS[norm]:12s} " + ", ".join(
        f"x{m:g}: " + (f"{sum(a) / len(a):.1f}%" if None not in a else "a seed diverged") for m, a in accuracies.items()))

# %% [markdown]
# InstanceNorm left its output unchanged: the change in the first channel's level and contrast is invisible after it. It is the lowest of the five variants at the recipe's rate, and it climbs with the rate: the recipe's rates were chosen for BatchNorm, LayerNorm and GroupNorm, not for it, so its low accuracy here is partly the recipe's, not only what it throws away.
