# %% [markdown]
# # Layer Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same small network with a different normalization layer: LayerNorm here, BatchNorm in [`S8_BN.ipynb`](S8_BN.ipynb), GroupNorm in [`S8_GN.ipynb`](S8_GN.ipynb); [`S8_compare.ipynb`](S8_compare.ipynb) puts them side by side. In this one you write LayerNorm yourself, check it against PyTorch's and train the network with it beside PyTorch's layer; then you watch what the norm does to each block's output over the first training steps, train the network in full with PyTorch's layer, see what sets it apart from BatchNorm, and do five exercises. Run the cells in order; on Colab, choose a GPU runtime first (Runtime > Change runtime type).
#
# **LayerNorm** normalizes each image on its own, with one mean and variance over all its
# channels and positions. For image $n$ with $C$ channels of size $H \times W$:
#
# $$\mu_n = \frac{1}{CHW}\sum_{c,h,w} x_{nchw}, \qquad
# \sigma_n^2 = \frac{1}{CHW}\sum_{c,h,w} (x_{nchw}-\mu_n)^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_n}{\sqrt{\sigma_n^2+\epsilon}} + \beta_c$$
#
# - **Axes:** mean and variance over (C, H, W), one pair per image. The suite builds it as `nn.GroupNorm(1, C)`: GroupNorm with a single group is exactly this, with a scale and shift per channel (`nn.LayerNorm([C, H, W])` would learn a scale and shift for every channel at every pixel, and fix the image size). ConvNeXt's and the transformers' LayerNorm is another norm: section 6 compares the two.
# - **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
# - **Train vs eval:** identical; there are no running statistics, and nothing is shared between the images of a batch.
# - **Where it sits:** after each 3x3 conv's ReLU (conv, ReLU, LN), unlike BatchNorm.

# %%
NORM = "ln"  # the norm this lesson trains

# %%
# include: lesson_start.py

# %% [markdown]
# ## 3. Build LayerNorm yourself
#
# Write `my_layer_norm` from the formula above: each image's mean and (biased) variance over its C, H and W, then normalize, scale and shift each channel. Until you write it, the check runs the reference solution, `from_scratch.layer_norm`.

# %%
def my_layer_norm(x, weight, bias, eps=1e-5):
    """Your LayerNorm for x of shape (N, C, H, W); weight and bias have shape (C,)."""
    return None  # replace this line with your code


# %% [markdown]
# The check feeds it a real activation, what enters the norm of C5 for 64 test images, scaled to unit size, so that a mistake shows above the tolerance whatever the activation's own scale (its variance is printed first), with channel 0 and image 0 shrunk to a variance under eps, where adding eps inside or outside the square root differs. It compares your function with the model's own layer, `nn.GroupNorm(1, C)`, on a copy of it given random scales and shifts (an untrained layer's 1 and 0 would let a forgotten term pass), on that activation and on 2 images of 2x2 positions, where the unbiased variance differs visibly from the biased one. A difference below 1e-4 (relative to a value's size where that is above 1) passes. On a FAIL it names the likely cause where it can tell: the mistakes it knows are `from_scratch.MISTAKES`.

# %%
activation = probes.norm_input(model, "C5", x[:64])
print(f"variance of the activation: {activation.var():.1e}")
layer = model.C5[2]  # C5 is conv, ReLU, norm
build_difference, yours = from_scratch.check_norm(my_layer_norm, from_scratch.layer_norm, layer, activation)
checked_norm = my_layer_norm if yours else from_scratch.layer_norm

# %%
REVEAL = False  # True prints the reference solution
if REVEAL:
    print(inspect.getsource(from_scratch.layer_norm))

# %% [markdown]
# **Question.** After LayerNorm, before its scale and shift, each image has mean 0 and variance 1. Does each of its channels?
#
# <details><summary>An answer</summary>
# No: the mean and variance are shared by all the image's channels, so a channel that was brighter than the others stays brighter. Section 6 prints it.
# </details>

# %%
# include: lesson_yours.py

# %%
# include: lesson_train.py

# %% [markdown]
# ## 6. What sets LayerNorm apart
#
# ### One mean and variance per image
#
# What enters the norm of C5 for four test images, and the same normalized before LayerNorm's scale and shift: each image as a whole gets mean 0 and standard deviation 1, while its channels keep means of their own.

# %%
before = probes.norm_input(model, "C5", x[:4])
after = torch.nn.functional.group_norm(before, 1)  # LayerNorm's normalization, without its scale and shift
for name, t in (("entering the norm", before), ("normalized", after)):
    print(f"{name:17s} per-image mean {t.mean((1, 2, 3)).cpu().numpy().round(3)}, "
          f"std {t.std((1, 2, 3)).cpu().numpy().round(3)}")
print("normalized, image 0, the means of its first 6 channels:", after[0].mean((1, 2))[:6].cpu().numpy().round(2))

# %% [markdown]
# ### Training and evaluation are the same computation
#
# Nothing is carried over from training: train mode and eval mode give the same logits, and an image's prediction does not depend on the other images of its batch.

# %%
with torch.no_grad():
    train_mode, eval_mode = model.train()(x[:256]), model.eval()(x[:256])
modes_difference = (train_mode - eval_mode).abs().max().item()
print(f"train against eval mode: largest logit difference {modes_difference:.1e}")
alone = {mode: probes.batch_dependence(model, x[:128], mode) for mode in ("eval", "train")}
for mode, (difference, changed) in alone.items():
    print(f"this model in {mode} mode, each of 128 images alone against in one batch: largest logit difference "
          f"{difference:.1e}, {changed} predictions change")

# %% [markdown]
# The same for five norms, measured once for other models: those of the comparison notebook's learning-rate section (`S8_compare.ipynb`, section 3), all trained with one recipe in short runs, at that recipe's own learning rates ("x1"). Its BatchNorm row counts the predictions of that short-run BatchNorm model, not of the model the BatchNorm lesson trains.

# %%
experiments.show("batch-of-one")

# %% [markdown]
# ### Two things called LayerNorm
#
# This suite's LayerNorm is `nn.GroupNorm(1, C)`: one mean and variance over C, H and W of each image, as in the GroupNorm paper. ConvNeXt and transformers use `nn.LayerNorm(C)` on each pixel's C channels: a mean and variance per pixel. The two on the same tensor (C5's input of one image):

# %%
t = before[:1]
over_image = torch.nn.functional.group_norm(t, 1)
over_channels = torch.nn.functional.layer_norm(t.permute(0, 2, 3, 1), (t.shape[1],)).permute(0, 3, 1, 2)
print(f"statistics: GroupNorm(1, C) takes 1 mean and variance, the per-pixel LayerNorm {t.shape[2] * t.shape[3]}")
for name, y in (("GroupNorm(1, C)", over_image), ("per-pixel LayerNorm", over_channels)):
    pixel_means = y.mean(1)  # the mean over the channels at each pixel
    print(f"{name:20s} pixel means from {pixel_means.min().item():+.2f} to {pixel_means.max().item():+.2f}")

# %% [markdown]
# ## 7. Try it
#
# Each exercise asks for a prediction first: write it down, change the setting, run the cell, and compare. A short run is one seed: two of them a few points apart may differ by chance alone, so before you trust a gap, run both again with another `SEED`. Exercises 1 to 3 run short trainings on the same `SHORT_IMAGES` training images for `SHORT_EPOCHS` epochs with LayerNorm's recipe, scored on a fifth as many test images.
#
# **Exercise 1: the per-pixel LayerNorm.** Predict which trains better here, this suite's LayerNorm (per image) or the per-pixel one (`norm="lnc"`).

# %%
layernorms = exercises.short_runs(data, {"per image (GroupNorm(1, C))": dict(norm="ln"),
                                     "per pixel (LayerNorm(C))": dict(norm="lnc")}, SHORT_IMAGES, SHORT_EPOCHS, device,
                              seed=SEED)

# %% [markdown]
# Now compare with the saved runs: the same two trained longer, two seeds each, the setting named above the table.

# %%
experiments.show("layernorms")

# %% [markdown]
# **Exercise 2: before or after the ReLU.** Predict whether `order="norm-relu"` (conv, LN, ReLU) beats the default after the ReLU.

# %%
placements = exercises.short_runs(data, {"after the ReLU": dict(norm="ln", order="relu-norm"),
                                     "before the ReLU": dict(norm="ln", order="norm-relu")}, SHORT_IMAGES, SHORT_EPOCHS,
                              device, seed=SEED)

# %% [markdown]
# This suite places LayerNorm (and GroupNorm) after the ReLU, BatchNorm before it. Now compare with the runs that decided it, on a validation split held out of the training images: they trained with SGD for every kernel, where your runs above used the lessons' Muon recipe.

# %%
experiments.show("placement")

# %% [markdown]
# **Exercise 3: the batch size.** LayerNorm shares nothing between the images of a batch, so the batch size changes the steps: a batch of 16 takes eight times as many steps per epoch as 128, each from a noisier gradient, and of the same size (the rates are not rescaled, and Muon's step has a fixed size whatever the gradient). Predict how a batch of 16 compares with 128 in the same number of epochs, then try BatchNorm at 16 (`dict(norm="bn", batch_size=16)`).

# %%
batch_sizes = exercises.short_runs(data, {"batch 128": dict(norm="ln", batch_size=128),
                                      "batch 16": dict(norm="ln", batch_size=16)}, SHORT_IMAGES, SHORT_EPOCHS, device,
                               seed=SEED)

# %%
# include: lesson_watch_variant.py

# %% [markdown]
# **Exercise 5: a mistake to predict.** `from_scratch.mistaken_group_norm("each channel alone", 1)` is the reference LayerNorm with one change: it takes each channel's mean and variance over H and W alone instead of over C, H and W together, which is InstanceNorm. Predict its training accuracy and its test accuracy after the same run as "Your norm in the network", against PyTorch's layer; then run it.

# %%
mistaken_norm = from_scratch.mistaken_group_norm("each channel alone", 1)
mistaken_runs = from_scratch.train_side_by_side(model, mistaken_norm, network_data, network_cfg, device)
for name, run in mistaken_runs.items():
    print(f"{name}: train accuracy {run['history'][-1]['train_acc']:.2f}%, test accuracy "
          f"{run['history'][-1]['test_acc']:.2f}%")

# %% [markdown]
# <details><summary>After you have run it: each channel alone, after the ReLU</summary>
#
# Each channel of each image gets mean 0 over its positions, then the channel's shift $\beta_c$. In C9's block nothing follows the norm, and the skip adds C7's output, normalized the same way, so the global average pool receives the same numbers for every image: the network cannot tell images apart, and both accuracies stay at chance, one in ten. The GroupNorm lesson's Exercise 1 meets the same collapse with one channel per group, and its folded answer says why the norm before the ReLU escapes it.
# </details>

# %% [markdown]
# ## 8. Summary

# %%
ran = {name: globals().get(name, "(not run)") for name in ("layernorms", "placements", "batch_sizes")}  # the exercises
Markdown(f"""What this notebook measured, in this run:

- {'Your' if yours else 'The reference'} LayerNorm {from_scratch.verdict(build_difference, "PyTorch's `GroupNorm(1, C)`")}.
- Trained with {'your' if yours else 'the reference'} {checked_norm.__name__} beside PyTorch's layer ({NETWORK_EPOCHS} epochs, {len(network_data.train_labels):,} images): the first step's losses differed by {first:.1e}; test accuracy {' against '.join(f"{run['history'][-1]['test_acc']:.2f}%" for run in side.values())}.
- Over the first {watched_steps} steps, the standard deviation of what leaves each block stayed between {min(held):.2f} and {max(held):.2f} with {LABELS[NORM]}; without a norm C9's went from {std['none']['C9'][0]:.3f} to {std['none']['C9'][-1]:.2f}.
- {EPOCHS} epochs on {len(data.train_labels):,} training images: test accuracy {history[-1]['test_acc']:.2f}%, training accuracy {history[-1]['train_acc']:.2f}% on augmented images.
- Train and eval mode's logits differed by at most {modes_difference:.1e}; passed alone instead of in a batch of 128, {alone['train'][1]} predictions changed in train mode.
- Short runs ({SHORT_EPOCHS} epochs, {SHORT_IMAGES:,} images): {ran['layernorms']}; {ran['placements']}; {ran['batch_sizes']}.""")
