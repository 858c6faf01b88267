# %% [markdown]
# **Exercise 4: the norm on the other side of the ReLU, watched.** Section 4 watched this model's blocks hold still. `VARIANT` below puts the norm on the other side of its ReLU. Predict: do the mean and standard deviation of what leaves each block still hold still over the first steps, and near which values? Then run it: `WATCH_STEPS` steps from the same seed, beside section 4's.

# %%
VARIANT = dict(order="norm-relu" if model.config.order == "relu-norm" else "relu-norm")
torch.manual_seed(SEED)
variant = probes.watch_training(S8_model(NORM, skips=SKIPS, **VARIANT), data, cfg, WATCH_STEPS, device)
display(plots.plot_watch({NORM: watched[NORM], "variant": variant},
                         {**LABELS, "variant": f"{LABELS[NORM]}, {VARIANT['order']}"}))

# %% [markdown]
# <details><summary>After you have run it: what the order does to the statistics</summary>
#
# Conv, norm, ReLU (BatchNorm's order here): what leaves the block is the ReLU of values the norm set to mean $\beta$ and standard deviation $\gamma$ (0 and 1 at the start). For values like a standard normal's, the ReLU's output has mean $1/\sqrt{2\pi} \approx 0.40$ and standard deviation $\sqrt{1/2 - 1/(2\pi)} \approx 0.58$: compare with the figures. Conv, ReLU, norm (LayerNorm's and GroupNorm's order here): the norm comes last, so at the start ($\gamma = 1$, $\beta = 0$) what leaves the block has mean 0 and standard deviation 1, per channel over the batch for BatchNorm, per image for LayerNorm, per group for GroupNorm, and so over the whole output too; later the learned $\gamma_c$ and $\beta_c$ set each channel's level and scale. Either way the norm holds the statistics still; only their level differs. Which order trains better is another question: the LayerNorm lesson's Exercise 2 and its placement records ask it for each norm.
# </details>
