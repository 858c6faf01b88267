# %% [markdown]
# # Group Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same network with a different normalization layer (BatchNorm, LayerNorm, GroupNorm); what they do side by side (the skip connections, no norm at all, the learning rate, the activations, the batch size) is in [`S8_compare.ipynb`](S8_compare.ipynb). Run the cells in order; on Colab, choose a GPU runtime first.
#
# **GroupNorm** splits the $C$ channels into $G$ groups (here $G = 4$) and normalizes each group
# of each image on its own. For image $n$ and group $g$ holding the channel set $S_g$:
#
# $$\mu_{ng} = \frac{1}{|S_g|HW}\sum_{c \in S_g,h,w} x_{nchw}, \qquad
# \sigma_{ng}^2 = \frac{1}{|S_g|HW}\sum_{c \in S_g,h,w} (x_{nchw}-\mu_{ng})^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_{ng}}{\sqrt{\sigma_{ng}^2+\epsilon}} + \beta_c$$
#
# - **Axes:** mean and variance over (C/G, H, W), one pair per image and group. $G = 1$ is
#   LayerNorm; $G = C$ is InstanceNorm. Four groups of 4 to 8 channels keep some channels'
#   statistics apart while each group still pools enough values.
# - **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
# - **Train vs eval:** identical; there are no running statistics.
# - **Small batches:** nothing is shared across the batch, so the batch size changes only the
#   optimization (more, smaller steps); the batch-size experiment in `S8_compare.ipynb` measures it.
# - **Where it sits:** after each 3x3 conv's ReLU (conv → ReLU → GN), unlike BatchNorm; chosen on
#   the validation split (the runs are in section 4 of the LayerNorm lesson, `S8_LN.ipynb`).
# - **Its convs:** each 3x3 filter is standardized to mean 0 and variance 1 before it is applied
#   (Weight Standardization, Qiao et al. 2019: `ws` in the model's line below), and Muon's peak rate
#   is 0.03 where BatchNorm and LayerNorm, with plain convs, take 0.1; both chosen on the validation
#   split (`docs/experiments.md`).

# %%
NORM = "gn"  # the norm this lesson trains

# %%
# include: lesson.py

# %% [markdown]
# ## 4. What only GroupNorm does

# %% [markdown]
# ### The groups of each layer
#
# GroupNorm splits each layer's channels into 4 groups and takes a mean and variance per group of each image:

# %%
for label, block in probes.c_blocks(model):
    gn = block[2]  # conv, ReLU, norm
    print(f"{label}: {gn.num_channels} channels in {gn.num_groups} groups of {gn.num_channels // gn.num_groups}")

# %% [markdown]
# What enters the norm of C5 for one test image, normalized per group before GroupNorm's scale and shift: each group gets mean 0 and standard deviation 1, and the channels inside a group keep means of their own.

# %%
t = probes.norm_input(model, "C5", x[:1])
groups = torch.nn.functional.group_norm(t, 4).view(1, 4, -1, *t.shape[2:])  # (image, group, channel, H, W)
print("per group: mean", groups.mean((2, 3, 4))[0].cpu().numpy().round(3), "std", groups.std((2, 3, 4))[0].cpu().numpy().round(3))
print("group 0, its channels' means:", groups[0, 0].mean((1, 2)).cpu().numpy().round(2))

# %% [markdown]
# ### From LayerNorm to InstanceNorm
#
# One group is LayerNorm over (C, H, W); one channel per group is InstanceNorm. Both, checked on the same tensor:

# %%
C = t.shape[1]
print("GroupNorm(1, C) equals LayerNorm over (C, H, W):",
      torch.allclose(torch.nn.functional.group_norm(t, 1), torch.nn.functional.layer_norm(t, t.shape[1:]), atol=1e-4))
print("GroupNorm(C, C) equals InstanceNorm:",
      torch.allclose(torch.nn.functional.group_norm(t, C), torch.nn.functional.instance_norm(t), atol=1e-4))

# %% [markdown]
# How many channels per group this network wants, each size trained at screening size (`python lessons.py groups`):

# %%
experiments.show("groups")

# %% [markdown]
# ### Training and evaluation are the same computation
#
# Like LayerNorm, GroupNorm takes its statistics from each image: no running averages, the same logits in train and eval mode, and an image's prediction does not depend on its batch.

# %%
with torch.no_grad():
    train_mode, eval_mode = model.train()(x[:256]), model.eval()(x[:256])
print(f"GroupNorm, train against eval mode: largest logit difference {(train_mode - eval_mode).abs().max().item():.1e}")

# %%
difference, changed = probes.batch_dependence(model, x[:128], "train")
print(f"GroupNorm, each of 128 images alone against in one batch: largest logit difference {difference:.1e}, "
      f"{changed} predictions change")
