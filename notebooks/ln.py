# %% [markdown]
# # Layer Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same network with a different normalization layer (BatchNorm, LayerNorm, GroupNorm); what they do side by side (the skip connections, no norm at all, the learning rate, the activations, the batch size) is in [`S8_compare.ipynb`](S8_compare.ipynb). Run the cells in order; on Colab, choose a GPU runtime first.
#
# **LayerNorm** normalizes each image on its own, with one mean and variance over all its
# channels and positions. For image $n$ with $C$ channels of size $H \times W$:
#
# $$\mu_n = \frac{1}{CHW}\sum_{c,h,w} x_{nchw}, \qquad
# \sigma_n^2 = \frac{1}{CHW}\sum_{c,h,w} (x_{nchw}-\mu_n)^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_n}{\sqrt{\sigma_n^2+\epsilon}} + \beta_c$$
#
# - **Axes:** mean and variance over (C, H, W), one pair per image. The suite builds it as
#   `nn.GroupNorm(1, C)`: GroupNorm with a single group is exactly this, and it keeps a per-channel
#   scale and shift (`nn.LayerNorm([C, H, W])` would learn one per pixel and fix the image size).
#   ConvNeXt's and the transformers' LayerNorm is another norm: section 4 compares the two.
# - **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
# - **Train vs eval:** identical; there are no running statistics.
# - **Small batches:** nothing is shared across the batch, so the batch size changes only the
#   optimization (more, smaller steps); the batch-size experiment in `S8_compare.ipynb` measures it.
# - **Where it sits:** after each 3x3 conv's ReLU (conv → ReLU → LN), unlike BatchNorm; chosen on
#   the validation split (the runs are in section 4 below).

# %%
NORM = "ln"  # the norm this lesson trains

# %%
# include: lesson.py

# %% [markdown]
# ## 4. What only LayerNorm does

# %% [markdown]
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
# Nothing is carried over from training: train mode and eval mode give the same logits.

# %%
with torch.no_grad():
    train_mode, eval_mode = model.train()(x[:256]), model.eval()(x[:256])
print(f"LayerNorm, train against eval mode: largest logit difference {(train_mode - eval_mode).abs().max().item():.1e}")

# %% [markdown]
# ### An image alone against inside a batch
#
# The 128 first of `x` passed as one batch and each passed alone; the same for all five norms, recorded with the models of the learning-rate lesson, below it.

# %%
for mode in ("eval", "train"):
    difference, changed = probes.batch_dependence(model, x[:128], mode)
    print(f"LayerNorm in {mode} mode: largest logit difference {difference:.1e}, {changed} of 128 predictions change")

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
# Which one trains better here, each trained at screening size (`python lessons.py layernorms`):

# %%
experiments.show("layernorms")

# %% [markdown]
# ### Before or after the ReLU
#
# This suite places LayerNorm (and GroupNorm) after the ReLU, BatchNorm before it. The runs that decided it, from the validation record:

# %%
experiments.show("placement")
