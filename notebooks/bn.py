# %% [markdown]
# # Batch Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same network with a different normalization layer (BatchNorm, LayerNorm, GroupNorm); what they do side by side (the skip connections, no norm at all, the learning rate, the activations, the batch size) is in [`S8_compare.ipynb`](S8_compare.ipynb). Run the cells in order; on Colab, choose a GPU runtime first.
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
# - **Train vs eval:** training uses the batch's own statistics and updates running averages
#   (momentum 0.1); evaluation uses the running averages, so a prediction does not depend on the
#   other images in the batch.
# - **Small batches:** each step's statistics come from fewer images; the batch-size experiment in
#   `S8_compare.ipynb` measures what that costs this network.
# - **Where it sits:** after each 3x3 conv and before its ReLU (conv → BN → ReLU), as in ResNet;
#   chosen on the validation split (the runs are in section 4 of the LayerNorm lesson, `S8_LN.ipynb`).

# %%
NORM = "bn"  # the norm this lesson trains

# %%
# include: lesson.py

# %% [markdown]
# ## 4. What only BatchNorm does

# %% [markdown]
# ### Training and evaluation are two different computations
#
# In training, BatchNorm normalizes each channel with the mean and variance of the batch in front of it; in evaluation, with running averages gathered during training. The model just trained, tested both ways on the test set, in fp32 (the training table's last row was scored in the precision it trained in):

# %%
print(f"eval mode, running averages:            {utils.score(model, data).accuracy:6.2f}%")
for batch in (2, 8, 32, 128):
    print(f"train mode, statistics of {batch:3d} test images: {probes.accuracy_with_batch_statistics(model, data, batch):6.2f}%")

# %% [markdown]
# The same measurement, recorded by `python lessons.py batch-size` for the full run's model and for a model that was trained with batches of 2 (`docs/lessons.md`, the batch-size experiment):

# %%
Markdown(experiments.gap_table())

# %% [markdown]
# ### An image alone against inside a batch
#
# The 128 first of `x` passed as one batch and each passed alone: the largest difference in any logit, and how many predictions change.

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
    difference = (model.eval()(x) - folded(x)).abs().max().item()
print(f"parameters: {count_parameters(model):,} with BatchNorm, {count_parameters(folded):,} folded")
print(f"largest logit difference on {len(x):,} test images: {difference:.1e}")
print(folded.C3)

# %% [markdown]
# What folding saves at inference, timed here on this device (eval mode, the median of 5 passes):

# %%
for batch in (1, 256):
    sample = x[:200] if batch == 1 else x
    plain, fused = (probes.seconds_per_image(m, sample, batch) for m in (model, folded))
    print(f"batches of {batch:3d}: {1000 * plain:.3f} ms per image with BatchNorm, {1000 * fused:.3f} ms folded "
          f"({plain / fused:.2f}x)")

# %% [markdown]
# The same, recorded by `python lessons.py fold` for the full run's model on a 2-core CPU:

# %%
experiments.show("fold")
