# %% [markdown]
# # Batch Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same small network with a different normalization layer: BatchNorm here, LayerNorm in [`S8_LN.ipynb`](S8_LN.ipynb), GroupNorm in [`S8_GN.ipynb`](S8_GN.ipynb); [`S8_compare.ipynb`](S8_compare.ipynb) puts them side by side. In this one you write BatchNorm yourself and check it against PyTorch's, train the network with PyTorch's layer, see what only BatchNorm does, and try three changes. Run the cells in order; on Colab, choose a GPU runtime first (Runtime > Change runtime type).
#
# **BatchNorm** normalizes each channel with statistics taken over the whole batch and every
# spatial position. For channel $c$ of a batch of $N$ feature maps of size $H \times W$:
#
# $$\mu_c = \frac{1}{NHW}\sum_{n,h,w} x_{nchw}, \qquad
# \sigma_c^2 = \frac{1}{NHW}\sum_{n,h,w} (x_{nchw}-\mu_c)^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_c}{\sqrt{\sigma_c^2+\epsilon}} + \beta_c$$
#
# - **Axes:** mean and variance over (N, H, W), one pair per channel.
# - **Learnable parameters:** a scale $\gamma_c$ and a shift $\beta_c$ per channel (2C per layer).
# - **Train vs eval:** training uses the batch's own statistics and moves running averages towards them; evaluation uses the running averages, so a prediction does not depend on the other images of its batch. PyTorch's `momentum=0.1` means $\text{running} \leftarrow 0.9\cdot\text{running} + 0.1\cdot\text{batch}$: the share of the new batch, the opposite of an optimizer's momentum, which is the share kept.
# - **Where it sits:** after each 3x3 conv and before its ReLU (conv, BN, ReLU), as in ResNet.

# %%
NORM = "bn"  # the norm this lesson trains

# %%
# include: lesson_start.py

# %% [markdown]
# ## 3. Build BatchNorm yourself
#
# Write `my_batch_norm` from the formula above. In training mode it takes each channel's mean and (biased) variance over N, H and W, normalizes, scales and shifts, and moves `running_mean` and `running_var` in place the way PyTorch does: with momentum $m$, running $\leftarrow (1-m)\cdot$running $+\, m\cdot$batch, where the variance that goes into the running average is the unbiased one (divided by $NHW - 1$). In evaluation mode it normalizes with the running averages. Until you write it, the check runs the reference solution, `from_scratch.batch_norm`.

# %%
def my_batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """Your BatchNorm for x of shape (N, C, H, W); weight, bias, running_mean, running_var have shape (C,)."""
    return None  # replace this line with your code


# %% [markdown]
# The check feeds it a real activation, what enters the norm of C5 for 64 test images, and compares it with the model's own `nn.BatchNorm2d` on copies of it given random scales, shifts and running averages (an untrained layer's 1, 0, 0 and 1 would let a forgotten term pass): the output in training mode, the running averages it leaves, the output in evaluation mode, and the running variance after a batch of 2 images of 2x2 positions, where the unbiased estimate is 8/7 of the biased one. A difference below 1e-4 passes (float32 rounding is about 1e-6).

# %%
activation = probes.norm_input(model, "C5", x[:64])
layer = model.C5[1]  # C5 is conv, norm, ReLU
batch_norm, yours = from_scratch.yours_or_reference(my_batch_norm, from_scratch.batch_norm, activation, layer.weight,
                                                    layer.bias, layer.running_mean.clone(), layer.running_var.clone(),
                                                    True)
build_difference = from_scratch.check_batch_norm(batch_norm, layer, activation)

# %%
REVEAL = False  # True prints the reference solution
if REVEAL:
    print(inspect.getsource(from_scratch.batch_norm))

# %% [markdown]
# **Question.** Why does the running variance use the unbiased estimate while the normalization uses the biased one?
#
# <details><summary>An answer</summary>
# The running variance estimates the variance of the whole data set from samples, and dividing by n − 1 makes that estimate unbiased; the normalization describes this batch exactly, and its own mean square deviation is what makes the batch's variance 1. PyTorch does both; with 64 images of 16x16 positions the two differ by a factor of 16,384 / 16,383.
# </details>

# %%
# include: lesson_train.py

# %% [markdown]
# ## 6. What only BatchNorm does
#
# ### Training and evaluation are two different computations
#
# The model just trained, tested with its running averages (evaluation mode) and with the statistics of each batch of 128 test images (training mode, the running averages left alone), in fp32. Both are scored in fp32, so the first can differ by a few hundredths from the log's last epoch, scored in the precision of training. How small a batch can be before the second breaks is Exercise 1's question.

# %%
_, eval_accuracy = utils.test(model, data)
batch_accuracy = probes.accuracy_with_batch_statistics(model, data, 128)
print(f"eval mode, running averages:            {eval_accuracy:6.2f}%")
print(f"train mode, statistics of 128 test images: {batch_accuracy:6.2f}%")

# %% [markdown]
# ### An image alone against inside a batch
#
# The first 128 of the 1,000 test images passed as one batch and each passed alone: the largest difference in any logit, and how many of this model's predictions change.

# %%
for mode in ("eval", "train"):
    difference, changed = probes.batch_dependence(model, x[:128], mode)
    print(f"BatchNorm in {mode} mode: largest logit difference {difference:.1e}, {changed} of 128 predictions change")

# %% [markdown]
# ### Folding BatchNorm into the conv
#
# In eval mode BatchNorm is a fixed scale and shift per channel, $y = \gamma_c (x - \mu_c) / \sqrt{\sigma_c^2 + \epsilon} + \beta_c$ with the running averages, so the conv before it can absorb it: its weights scaled by $\gamma_c / \sqrt{\sigma_c^2 + \epsilon}$ per output channel, the shift moved into its bias (`torch.nn.utils.fusion.fuse_conv_bn_eval`). LayerNorm and GroupNorm compute their statistics from each image, so there is nothing fixed to absorb.

# %%
folded = probes.fold_batchnorm(model)
with torch.no_grad():
    fold_difference = (model.eval()(x) - folded(x)).abs().max().item()
print(f"parameters: {count_parameters(model):,} with BatchNorm, {count_parameters(folded):,} folded")
print(f"largest logit difference on {len(x):,} test images: {fold_difference:.1e}")
print(folded.C3)

# %% [markdown]
# What folding saves at inference on this machine (eval mode, the median of 5 passes; the times change from run to run):

# %%
print(describe_device(device))
for batch in (1, 256):
    sample = x[:200] if batch == 1 else x
    plain, fused = (probes.seconds_per_image(m, sample, batch) for m in (model, folded))
    print(f"batches of {batch:3d}: {1000 * plain:.3f} ms per image with BatchNorm, {1000 * fused:.3f} ms folded "
          f"({plain / fused:.2f}x)")

# %% [markdown]
# The same measured once for the committed full run's model, on the machine its table names. Its accuracy is scored in fp32, so it can differ by a few hundredths from the results table's, which scored that model in the precision it trained in:

# %%
experiments.show("fold")

# %% [markdown]
# ## 7. Try it
#
# Each exercise asks for a prediction first: write it down, change the setting, run the cell, and compare. A short run is one seed: two of them a few points apart may differ by chance alone, so before you trust a gap, run both again with another `SEED`.
#
# **Exercise 1: how small a batch can BatchNorm's statistics come from?** In training mode each test batch is normalized with its own statistics. Predict: below which batch size does the accuracy fall more than 5 points under evaluation mode's? Then add sizes to `BATCHES` (1, 3, 6 ...) and run (seconds).

# %%
BATCHES = [2, 4, 8, 16, 32, 64, 128]
small_batches = {batch: probes.accuracy_with_batch_statistics(model, data, batch) for batch in BATCHES}
for batch, accuracy in small_batches.items():
    print(f"statistics of {batch:3d} test images: {accuracy:6.2f}% ({accuracy - eval_accuracy:+.2f} against eval mode)")

# %% [markdown]
# **Exercise 2: running averages from one batch.** With `momentum = 1.0` a single training-mode pass replaces the running averages by one batch's statistics. Predict: after one batch of `RECALIBRATION` training images, how does the evaluation accuracy change? Try 8 and 512.

# %%
RECALIBRATION = 16
recalibrated = probes.recalibrated(model, data, RECALIBRATION, seed=SEED)
_, recalibrated_accuracy = utils.test(recalibrated, data)
print(f"running averages of training: {eval_accuracy:.2f}%; of one batch of {RECALIBRATION} training images: "
      f"{recalibrated_accuracy:.2f}%")

# %% [markdown]
# **Exercise 3: BatchNorm, the skips and no norm at all.** Short runs, each on the same `SHORT_IMAGES` training images for `SHORT_EPOCHS` epochs with its norm's recipe, scored on a fifth as many test images. Predict the order of the three, then add your own (any of `norm`, `skips`, `order="relu-norm"`).

# %%
TRIALS = {"BatchNorm": dict(norm="bn"), "BatchNorm without the skips": dict(norm="bn", skips=False),
          "no norm": dict(norm="none")}
short = exercises.short_runs(data, TRIALS, SHORT_IMAGES, SHORT_EPOCHS, device, seed=SEED)

# %% [markdown]
# ## 8. Summary

# %%
ran = {name: globals().get(name) for name in ("small_batches", "recalibrated_accuracy", "short")}  # the exercises
smallest = min(small_batches) if ran["small_batches"] else None
Markdown(f"""What this notebook measured, in this run:

- {'Your' if yours else 'The reference'} BatchNorm {from_scratch.verdict(build_difference)}.
- {EPOCHS} epochs on {len(data.train_labels):,} training images: test accuracy {history[-1]['test_acc']:.2f}%, training accuracy {history[-1]['train_acc']:.2f}% on augmented images.
- Evaluation mode, with the running averages: {eval_accuracy:.2f}%. """ + (f"""With the statistics of each batch of {smallest} test images instead: {small_batches[smallest]:.2f}%. """ if smallest else "(Exercise 1 not run.) ") + (f"""With one batch of {RECALIBRATION} training images as its running averages: {recalibrated_accuracy:.2f}%.""" if ran["recalibrated_accuracy"] else "(Exercise 2 not run.)") + f"""
- Folded into the convs it needs {count_parameters(folded):,} parameters instead of {count_parameters(model):,}, and its logits move by at most {fold_difference:.1e}.
- Short runs ({SHORT_EPOCHS} epochs, {SHORT_IMAGES:,} images): {ran['short'] or '(not run)'}.""")
