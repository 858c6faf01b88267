# %% [markdown]
# # Group Normalization in a 48k-parameter CNN on CIFAR-10
#
# One of three lessons that train the same small network with a different normalization layer: GroupNorm here, BatchNorm in [`S8_BN.ipynb`](S8_BN.ipynb), LayerNorm in [`S8_LN.ipynb`](S8_LN.ipynb); [`S8_compare.ipynb`](S8_compare.ipynb) puts them side by side. In this one you write GroupNorm yourself, check it against PyTorch's and train the network with it beside PyTorch's layer; then you watch what the norm does to each block's output over the first training steps, train the network in full with PyTorch's layer, look inside its groups, and do five exercises. Run the cells in order; on Colab, choose a GPU runtime first (Runtime > Change runtime type).
#
# **GroupNorm** splits the $C$ channels into $G$ groups and normalizes each group of each image on
# its own. For image $n$ and group $g$ holding the channel set $S_g$:
#
# $$\mu_{ng} = \frac{1}{|S_g|HW}\sum_{c \in S_g,h,w} x_{nchw}, \qquad
# \sigma_{ng}^2 = \frac{1}{|S_g|HW}\sum_{c \in S_g,h,w} (x_{nchw}-\mu_{ng})^2, \qquad
# y_{nchw} = \gamma_c\,\frac{x_{nchw}-\mu_{ng}}{\sqrt{\sigma_{ng}^2+\epsilon}} + \beta_c$$
#
# - **Axes:** mean and variance over (C/G, H, W), one pair per image and group. $G = 1$ is LayerNorm; $G = C$ is InstanceNorm.
# - **Learnable parameters:** $\gamma_c$ and $\beta_c$ per channel (2C per layer).
# - **Train vs eval:** identical; there are no running statistics.
# - **Where it sits:** after each 3x3 conv's ReLU (conv, ReLU, GN), unlike BatchNorm.
# - **Its convs:** each 3x3 filter is standardized to mean 0 and variance 1 before it is applied (Weight Standardization, Qiao et al. 2019), and Muon's peak learning rate (Muon: the update rule of the conv kernels, section 4) is 0.03 where the other two take 0.1. Both were chosen on a validation split held out of the training images (`docs/experiments.md`); Exercise 2 lets you measure what the standardized convs add.

# %%
NORM = "gn"  # the norm this lesson trains

# %%
# include: lesson_start.py

# %% [markdown]
# ## 3. Build GroupNorm yourself
#
# Write `my_group_norm` from the formula above. A reshape does the grouping: reshape x into (N, groups, C / groups, H, W), take the mean and (biased) variance of each group over its last three axes, normalize, reshape it back to (N, C, H, W), then scale and shift each channel. Until you write it, the check runs the reference solution, `from_scratch.group_norm`.

# %%
def my_group_norm(x, groups, weight, bias, eps=1e-5):
    """Your GroupNorm for x of shape (N, C, H, W); weight and bias have shape (C,)."""
    return None  # replace this line with your code


# %% [markdown]
# The check feeds it a real activation, what enters the norm of C5 for 64 test images, scaled to unit size, so that a mistake shows above the tolerance whatever the activation's own scale (its variance is printed first), with channel 0 and image 0 shrunk to a variance under eps, where adding eps inside or outside the square root differs. It compares your function with the model's own `nn.GroupNorm`, on a copy of it given random scales and shifts (an untrained layer's 1 and 0 would let a forgotten term pass), on that activation and on 2 images of 2x2 positions, where the unbiased variance differs visibly from the biased one. A difference below 1e-4 (relative to a value's size where that is above 1) passes. On a FAIL it names the likely cause where it can tell: the mistakes it knows are `from_scratch.MISTAKES`.

# %%
activation = probes.norm_input(model, "C5", x[:64])
print(f"variance of the activation: {activation.var():.1e}")
layer = model.C5[2]  # C5 is conv, ReLU, norm
print(f"C5's norm: {layer}")
build_difference, yours = from_scratch.check_norm(my_group_norm, from_scratch.group_norm, layer, activation,
                                                 layer.num_groups)
checked_norm = my_group_norm if yours else from_scratch.group_norm

# %%
REVEAL = False  # True prints the reference solution
if REVEAL:
    print(inspect.getsource(from_scratch.group_norm))

# %% [markdown]
# **Question.** With C = `activation.shape[1]`, what is `my_group_norm(activation, 1, layer.weight, layer.bias)` (the layer's own, untrained scale 1 and shift 0), and what is it with `activation.shape[1]` groups? Check both in a new cell against `torch.nn.functional.layer_norm(activation, activation.shape[1:])` and `torch.nn.functional.instance_norm(activation)`.
#
# <details><summary>An answer</summary>
# One group is LayerNorm over (C, H, W); C groups of one channel are InstanceNorm, a mean and variance per channel of each image. Section 6 checks both with PyTorch's functions.
# </details>

# %%
# include: lesson_yours.py

# %%
# include: lesson_train.py

# %% [markdown]
# ## 6. Inside GroupNorm
#
# ### The groups of each layer

# %%
for label, block in probes.c_blocks(model):
    gn = block[2]  # conv, ReLU, norm
    print(f"{label}: {gn.num_channels} channels in {gn.num_groups} groups of {gn.num_channels // gn.num_groups}")

# %% [markdown]
# What enters the norm of C5 for one test image, normalized per group before GroupNorm's scale and shift: each group gets mean 0 and standard deviation 1, and the channels inside a group keep means of their own.

# %%
t = probes.norm_input(model, "C5", x[:1])
G = layer.num_groups
groups = torch.nn.functional.group_norm(t, G).view(1, G, -1, *t.shape[2:])  # (image, group, channel, H, W)
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
# ### Training and evaluation are the same computation

# %%
with torch.no_grad():
    train_mode, eval_mode = model.train()(x[:256]), model.eval()(x[:256])
modes_difference = (train_mode - eval_mode).abs().max().item()
print(f"train against eval mode: largest logit difference {modes_difference:.1e}")
difference, changed = probes.batch_dependence(model, x[:128], "train")
print(f"each of 128 images alone against in one batch: largest logit difference {difference:.1e}, "
      f"{changed} predictions change")

# %% [markdown]
# ## 7. Try it
#
# Each exercise asks for a prediction first: write it down, change the setting, run the cell, and compare. A short run is one seed: two of them a few points apart may differ by chance alone, so before you trust a gap, run both again with another `SEED`. Exercises 1 to 3 run short trainings on the same `SHORT_IMAGES` training images for `SHORT_EPOCHS` epochs, each with its own norm's recipe, scored on a fifth as many test images.
#
# **Exercise 1: the number of groups.** The widths are 16, 28 and 32 channels, so 1, 2 and 4 groups divide every layer, and so do 1, 2 or 4 `channels_per_group`. One channel per group is InstanceNorm: it runs here after the ReLU, where this suite puts GroupNorm, and before it. Predict where the accuracy drops, and why.

# %%
GROUPINGS = {"1 group": dict(groups=1), "2 groups": dict(groups=2), "4 groups": dict(groups=4),
             "2 channels per group": dict(channels_per_group=2),
             "1 channel per group, after the ReLU": dict(channels_per_group=1),
             "1 channel per group, before the ReLU": dict(channels_per_group=1, order="norm-relu")}
group_counts = exercises.short_runs(data, {name: dict(norm="gn", **grouping) for name, grouping in GROUPINGS.items()},
                                SHORT_IMAGES, SHORT_EPOCHS, device, seed=SEED)

# %% [markdown]
# Now compare with the saved runs: how many channels per group this network wants, measured once in 8-epoch runs on 10,000 images. They took plain convs and **another recipe**, BatchNorm's (Muon's rate 0.1; "x1" in the caption means that recipe's own learning rates), so that only the group size differs; your runs above used GroupNorm's.

# %%
experiments.show("groups")

# %% [markdown]
# <details><summary>After you have run it: one channel per group</summary>
#
# With one channel per group, the norm gives every channel of every image mean 0 over its positions, then adds the channel's shift $\beta_c$. After the ReLU nothing follows it in C9's block, and the skip adds C7's output, whose own norm left each channel's mean fixed at its shift too, so the global average pool receives the same numbers for every image, and the classifier can only guess one class. Before the ReLU, the ReLU cuts each normalized channel where it is negative, and the mean of what is left depends on the image again: the network can learn, if slowly (the record above trained longer). Among several channels per group, each channel's own mean survives the norm.
# </details>

# %% [markdown]
# **Exercise 2: Weight Standardization.** Predict how much the standardized convs (`conv="ws"`, this lesson's) add over plain ones.

# %%
convs = exercises.short_runs(data, {"standardized convs": dict(norm="gn", conv="ws"),
                                "plain convs": dict(norm="gn", conv="plain")}, SHORT_IMAGES, SHORT_EPOCHS, device,
                         seed=SEED)

# %% [markdown]
# <details><summary>After you have run it: Weight Standardization</summary>
# On the validation split two seeds each put the standardized convs a little above plain ones, which is why GroupNorm uses them; on the test set the full runs with and without them showed no difference (`docs/experiments.md`). Compare your two short runs with that, and with the warning about single seeds above.
# </details>

# %% [markdown]
# **Exercise 3: small batches.** Wu and He (2018) made GroupNorm for training with few images per GPU, as detection and video do; on ImageNet BatchNorm's error grew below 16 images per batch while GroupNorm's held. Predict BatchNorm's and GroupNorm's accuracy at a batch of 4 here (more steps: these runs take longer). Each trains with its own recipe: the BatchNorm run with plain convs and Muon's rate 0.1, the GroupNorm run with standardized convs and 0.03, so more than the norm differs.
#
# <details><summary>Reading the result</summary>
# Two short runs of one seed each differ by a few points by chance alone; a gap smaller than that names no winner. To see the effect of the batch on BatchNorm's statistics alone, Exercise 1 of the BatchNorm lesson keeps the trained model and changes only the batch its statistics come from.
# </details>

# %%
small = exercises.short_runs(data, {"GroupNorm, batch 4": dict(norm="gn", batch_size=4),
                                "BatchNorm, batch 4": dict(norm="bn", batch_size=4)}, SHORT_IMAGES, SHORT_EPOCHS, device,
                         seed=SEED)

# %%
# include: lesson_watch_variant.py

# %% [markdown]
# **Exercise 5: a mistake to predict.** `from_scratch.mistaken_group_norm("batch axis")` is the reference with one change: it takes each group's mean and variance over the whole batch, (N, C / groups, H, W), instead of over each image. It has no running averages, so evaluation normalizes each test batch with its own statistics, as training did. Predict its training accuracy, and its test accuracy scored in batches of 1,000 images and of 2, against PyTorch's layer; then run it.

# %%
mistaken_norm = from_scratch.mistaken_group_norm("batch axis")
mistaken_runs = from_scratch.train_side_by_side(model, mistaken_norm, network_data, network_cfg, device)
for name, run in mistaken_runs.items():
    scored = {size: (utils.predict(run["model"], network_data.test_images.to(device), network_data, batch_size=size)
                     .argmax(1).cpu() == network_data.test_labels).float().mean().item() * 100 for size in (1000, 2)}
    print(f"{name}: train accuracy {run['history'][-1]['train_acc']:.2f}%, test accuracy in batches of 1,000 "
          f"{scored[1000]:.2f}%, in batches of 2 {scored[2]:.2f}%")

# %% [markdown]
# <details><summary>After you have run it: statistics over the batch</summary>
#
# Over the batch, a group's statistics are BatchNorm's, pooled over a few channels: in training it behaves like a BatchNorm without running averages, and with large test batches, whose statistics are close to the training batches', it scores close to PyTorch's GroupNorm. But each image's prediction now depends on the images that share its batch: with two images per batch the statistics come from two images and the test accuracy drops, while PyTorch's GroupNorm scores the same in any batch. That independence is what GroupNorm was made for.
# </details>

# %% [markdown]
# ## 8. Summary

# %%
ran = {name: globals().get(name, "(not run)") for name in ("group_counts", "convs", "small")}  # the exercises
Markdown(f"""What this notebook measured, in this run:

- {'Your' if yours else 'The reference'} GroupNorm {from_scratch.verdict(build_difference, f"PyTorch's `{layer}`")}.
- Trained with {'your' if yours else 'the reference'} {checked_norm.__name__} beside PyTorch's layer ({NETWORK_EPOCHS} epochs, {len(network_data.train_labels):,} images): the first step's losses differed by {first:.1e}; test accuracy {' against '.join(f"{run['history'][-1]['test_acc']:.2f}%" for run in side.values())}.
- Over the first {watched_steps} steps, the standard deviation of what leaves each block stayed between {min(held):.2f} and {max(held):.2f} with {LABELS[NORM]}; without a norm C9's went from {std['none']['C9'][0]:.3f} to {std['none']['C9'][-1]:.2f}.
- {EPOCHS} epochs on {len(data.train_labels):,} training images: test accuracy {history[-1]['test_acc']:.2f}%, training accuracy {history[-1]['train_acc']:.2f}% on augmented images.
- Train and eval mode's logits differed by at most {modes_difference:.1e}; passed alone instead of in a batch of 128, {changed} predictions changed.
- Short runs ({SHORT_EPOCHS} epochs, {SHORT_IMAGES:,} images): {ran['group_counts']}; {ran['convs']}. At a batch of 4: {ran['small']}.""")
