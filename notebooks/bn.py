# %% [markdown]
# # Batch Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same small network with a different normalization layer: BatchNorm here, LayerNorm in [`S8_LN.ipynb`](S8_LN.ipynb), GroupNorm in [`S8_GN.ipynb`](S8_GN.ipynb); [`S8_compare.ipynb`](S8_compare.ipynb) puts them side by side. In this one you write BatchNorm yourself (its backward pass too, if you like), check it against PyTorch's and train the network with it beside PyTorch's layer; then you watch what the norm does to each block's output over the first training steps, train the network in full with PyTorch's layer, see what only BatchNorm does, and do five exercises. Run the cells in order; on Colab, choose a GPU runtime first (Runtime > Change runtime type).
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
# The check feeds it a real activation, what enters the norm of C5 for 64 test images, scaled to unit size, so that a mistake shows above the tolerance whatever the activation's own scale (its variance is printed first: tiny, because in eval mode an untrained BatchNorm divides by its initial running variance of 1 and so barely rescales, and the activations shrink layer by layer), with channel 0 and image 0 shrunk to a variance under eps, where adding eps inside or outside the square root differs. It compares your function with the model's own `nn.BatchNorm2d` on copies of it given random scales, shifts and running averages (an untrained layer's 1, 0, 0 and 1 would let a forgotten term pass): the output in training mode, the running averages it leaves, the output in evaluation mode, and a training step on 2 images of 2x2 positions, where the unbiased variance is 8/7 of the biased one. A difference below 1e-4 (relative to a value's size where that is above 1) passes (float32 rounding is about 1e-6). On a FAIL it names the likely cause where it can tell: the mistakes it knows are `from_scratch.MISTAKES`.

# %%
activation = probes.norm_input(model, "C5", x[:64])
print(f"variance of the activation: {activation.var():.1e}")
layer = model.C5[1]  # C5 is conv, norm, ReLU
checked_norm, yours = from_scratch.yours_or_reference(my_batch_norm, from_scratch.batch_norm, activation, layer.weight,
                                                      layer.bias, layer.running_mean.clone(),
                                                      layer.running_var.clone(), True)
build_difference = from_scratch.check_batch_norm(checked_norm, layer, activation)

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
# include: lesson_yours.py

# %% [markdown]
# ### The backward pass (optional)
#
# Autograd differentiates BatchNorm for you; writing the gradients yourself shows how it ties the images of a batch together. Write `my_batch_norm_backward` for training mode: from `grad_out`, the loss's gradient for the output, return the gradients for `x`, the scale and the shift. With $\hat x = (x - \mu_c)/\sqrt{\sigma_c^2+\epsilon}$ over the $n = NHW$ values of channel $c$, the shift's gradient is $\sum$ `grad_out` and the scale's $\sum$ `grad_out` $\cdot \hat x$, both over (N, H, W); the input's you derive, remembering that $\mu_c$ and $\sigma_c^2$ depend on every value of the channel. The check compares your three gradients with autograd's through PyTorch's layer, on the same activation and a seeded random `grad_out`. Until you write it, it runs `from_scratch.batch_norm_backward`.

# %%
def my_batch_norm_backward(grad_out, x, weight, eps=1e-5):
    """Your BatchNorm backward in training mode: (grad_x, grad_weight, grad_bias) for x of shape (N, C, H, W)."""
    return None  # replace this line with your code


# %%
backward, yours_backward = from_scratch.yours_or_reference(my_batch_norm_backward, from_scratch.batch_norm_backward,
                                                           activation, activation, layer.weight)
backward_difference = from_scratch.check_batch_norm_backward(backward, layer, activation)
unit = activation / activation.std()  # at unit scale eps is negligible beside each channel's variance
grad_x, _, _ = backward(torch.randn(unit.shape, generator=torch.Generator().manual_seed(0)).to(unit.device), unit,
                        layer.weight)
x_hat = torch.nn.functional.batch_norm(unit, None, None, training=True)
print(f"largest sum over a channel of the input's gradient: {grad_x.sum((0, 2, 3)).abs().max():.1e}; "
      f"of the gradient times x_hat: {(grad_x * x_hat).sum((0, 2, 3)).abs().max():.1e} "
      f"(the gradient's own size: {grad_x.abs().max():.1e})")

# %% [markdown]
# **Question.** Why does the input's gradient have three terms, and why do the two sums printed above vanish?
#
# <details><summary>An answer</summary>
# With $g = \gamma_c \cdot$ grad_out, $\partial L/\partial x_i = \frac{1}{\sqrt{\sigma_c^2+\epsilon}}\big(g_i - \frac{1}{n}\sum_j g_j - \hat x_i\,\frac{1}{n}\sum_j g_j \hat x_j\big)$. The first term is $x_i$'s own path to its output; the second is its path through the mean, which every value of the channel subtracts; the third its path through the variance, which every value is divided by. So an image's gradient depends on the other images of its batch. Subtracting the two averages removes every part of the gradient that would shift the channel's mean or stretch its scale: the normalized output cannot change in those directions, so the gradient has no component along them, which is what the two near-zero sums show (compare them with the gradient's own size; with eps the second vanishes only up to a factor of $\epsilon/(\sigma_c^2+\epsilon)$, which is why the cell scales the activation to unit size first).
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

# %%
# include: lesson_watch_variant.py

# %% [markdown]
# **Exercise 5: a mistake to predict.** `from_scratch.mistaken_batch_norm("not in place")` is the reference with one change: it writes `running_mean = (1 - momentum) * running_mean + momentum * mean` (and the same for the variance) where the reference updates the running averages in place. Predict its training accuracy and its test accuracy after the same run as "Your norm in the network", against PyTorch's layer; then run it.

# %%
mistaken_norm = from_scratch.mistaken_batch_norm("not in place")
mistaken_runs = from_scratch.train_side_by_side(model, mistaken_norm, network_data, network_cfg, device)
for name, run in mistaken_runs.items():
    print(f"{name}: train accuracy {run['history'][-1]['train_acc']:.2f}%, test accuracy "
          f"{run['history'][-1]['test_acc']:.2f}%")

# %% [markdown]
# <details><summary>After you have run it: running averages that never move</summary>
#
# It trains as PyTorch's layer does: in training mode each batch is normalized with its own statistics, which it computes right, so the training accuracy is close to PyTorch's. The test accuracy is evaluation mode's, which normalizes with the running averages, and those are still 0 and 1, the statistics of no activation the network ever produced: every layer's output is off in level and scale, and the accuracy falls far below the training accuracy. The check in section 3 names this mistake ("the running averages did not move"). In general, a mistake in what only evaluation uses leaves the training losses alone and shows as a test accuracy far under the training accuracy.
# </details>

# %% [markdown]
# ## 8. Summary

# %%
ran = {name: globals().get(name) for name in ("small_batches", "recalibrated_accuracy", "short")}  # the exercises
smallest = min(small_batches) if ran["small_batches"] else None
Markdown(f"""What this notebook measured, in this run:

- {'Your' if yours else 'The reference'} BatchNorm {from_scratch.verdict(build_difference)}.
- {'Your' if yours_backward else 'The reference'} backward pass {from_scratch.verdict(backward_difference, "autograd's")}.
- Trained with {'your' if yours else 'the reference'} {checked_norm.__name__} beside PyTorch's layer ({NETWORK_EPOCHS} epochs, {len(network_data.train_labels):,} images): the first step's losses differed by {first:.1e}; test accuracy {' against '.join(f"{run['history'][-1]['test_acc']:.2f}%" for run in side.values())}.
- Over the first {watched_steps} steps, the standard deviation of what leaves each block stayed between {min(held):.2f} and {max(held):.2f} with {LABELS[NORM]}; without a norm C9's went from {std['none']['C9'][0]:.3f} to {std['none']['C9'][-1]:.2f}.
- {EPOCHS} epochs on {len(data.train_labels):,} training images: test accuracy {history[-1]['test_acc']:.2f}%, training accuracy {history[-1]['train_acc']:.2f}% on augmented images.
- Evaluation mode, with the running averages: {eval_accuracy:.2f}%. """ + (f"""With the statistics of each batch of {smallest} test images instead: {small_batches[smallest]:.2f}%. """ if smallest else "(Exercise 1 not run.) ") + (f"""With one batch of {RECALIBRATION} training images as its running averages: {recalibrated_accuracy:.2f}%.""" if ran["recalibrated_accuracy"] else "(Exercise 2 not run.)") + f"""
- Folded into the convs it needs {count_parameters(folded):,} parameters instead of {count_parameters(model):,}, and its logits move by at most {fold_difference:.1e}.
- Short runs ({SHORT_EPOCHS} epochs, {SHORT_IMAGES:,} images): {ran['short'] or '(not run)'}.""")
