# %% [markdown]
# ## 4. Training
#
# How it is trained, from `recipes.recipe(NORM)` (chosen on a validation split held out of the training images, `docs/experiments.md`):
#
# - **One-cycle schedule:** the learning rate rises over the first fifth of the steps to its peak, then falls linearly to nearly zero.
# - **Muon** (`muon.py`) updates every conv kernel but the classifier's with a step of fixed size: it replaces the kernel's momentum by the nearest orthogonal matrix, so every direction of the layer moves by the same amount. The classifier `c10`, the norms' scales and shifts and any conv biases take SGD with Nesterov momentum.
# - **Label smoothing 0.1:** the target gives the true class 0.91 and each other class 0.01, which keeps the model from growing ever more confident (and the training loss above zero).
# - **Arithmetic:** the first line of the log names it. Where the hardware computes **bf16** (a 16-bit float with float32's range) natively, autocast runs the convs in bf16; on Colab's free T4 GPU it is **fp16**, with a **GradScaler** scaling the loss up so that small gradients do not round to zero. Which operations run in 16 bits depends on the device: on a CPU the norms do too, on a GPU LayerNorm and GroupNorm stay in float32; the weights, the optimizer's state and the loss always stay in float32. So a run there gives slightly different numbers from the committed one.
#

# %%
cfg = recipes.recipe(NORM, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED)
precision = choose_precision(device, NORM, cfg.amp)
LABELS = {NORM: NORM_TYPES[NORM].label, "none": "no norm"}

# %% [markdown]
# ### The first steps, watched
#
# Before the whole run, a fresh copy of this model and one without a norm (`norm="none"`) train for the first `WATCH_STEPS` steps of this recipe, in fp32, from the same seed and so on the same batches. A forward hook on each C block (a function PyTorch calls with the block's output every time the block runs) records the mean and standard deviation of what leaves it, after its norm and ReLU in whichever order they sit and before a skip adds to it, at every step (after fast.ai's course-v3 notebook `07_batchnorm`). One line per block below, shallow to deep; the standard deviation is on a log scale. Why a norm that holds these still helps, and why the first explanation of it was questioned: [`S8_compare.ipynb`](S8_compare.ipynb), section 7.

# %%
watched = {}
for arm in LABELS:
    torch.manual_seed(SEED)
    watched[arm] = probes.watch_training(S8_model(arm, skips=SKIPS), data, cfg, WATCH_STEPS, device)
display(plots.plot_watch(watched, LABELS))
std = {arm: {block: values["std"] for block, values in stats.items()} for arm, stats in watched.items()}
held = [s for values in std[NORM].values() for s in values]
none, watched_steps = std["none"], len(std["none"]["C9"])
Markdown(f"""Without a norm, the standard deviation of what leaves the blocks is {none['C1'][0]:.2f} at C1 and {none['C9'][0]:.3f} at C9 at the first step; by step {watched_steps} C9's has {'grown' if none['C9'][-1] > none['C9'][0] else 'fallen'} to {none['C9'][-1]:.2f}, {none['C9'][-1] / none['C9'][0]:.1f} times its first. With {LABELS[NORM]} every block's stays between {min(held):.2f} and {max(held):.2f} at every step""" + (
    ", so each layer's input keeps its size while the layers before it change." if max(held) < 1.5 * min(held) else "."))

# %% [markdown]
# ### The whole run
#
# The log has one row per epoch: loss and accuracy on the training images (augmented, averaged over the epoch while the weights move) and on the test images (after the epoch), and the seconds the epoch's training took. Running the cell again continues training the same model; to train afresh, run the cells again from section 2.

# %%
history = utils.fit(model, data, cfg, device, precision)

# %% [markdown]
# The training numbers are averaged over the epoch, on augmented images with label smoothing; the test numbers come from the model at the epoch's end, on unaltered images, without smoothing. So compare their trends, not their levels: the first line below is the lowest training loss label smoothing allows.

# %%
target = torch.full((10,), 0.01) + 0.9 * torch.eye(10)[0]  # label smoothing's target for an image of class 0
print(f"the lowest training loss label smoothing 0.1 allows: {-(target * target.log()).sum().item():.3f}")
plots.plot_curves(history, title=f"{type(model).__name__}, seed {SEED}: test accuracy "
                                 f"{history[-1]['test_acc']:.2f}%, train {history[-1]['train_acc']:.2f}% (augmented)")

# %% [markdown]
# This notebook's run beside the reference run's seed 0 (the one in `results/` and the README's results table, which has three seeds), each with the machine and arithmetic it trained in: on another machine or in another precision the same seed ends a little elsewhere. The training time below leaves out the testing after each epoch, which the time under the set-up cell includes.

# %%
committed = results.read(results.seed_path(results.ROOT, NORM, 0))
print(f"committed run, seed 0: test accuracy {committed['final_test_accuracy']:.2f}% after {committed['epochs']} epochs "
      f"on {committed['train_images']:,} images; {committed['device']}; {without_layout(committed['precision'])}")
print(f"this run, seed {SEED}: test accuracy {history[-1]['test_acc']:.2f}% after {len(history)} epochs on "
      f"{len(data.train_labels):,} images; {describe_device(device)}; {precision.describe(layout=False)}; "
      f"training took {sum(row['seconds'] for row in history) / 60:.1f} min")

# %% [markdown]
# ## 5. Mistakes
#
# The ten test images the model got wrong with the most confidence; below them, a browser of every mistake by true and predicted class (it needs a live kernel).

# %%
mistakes = utils.get_incorrect_predictions(model, data, precision)
print(f"{len(mistakes):,} of {len(data.test_labels):,} test images misclassified")
display(utils.plot_incorrect_predictions(mistakes, data.classes, model=type(model).__name__))
mistake_explorer(mistakes, data.classes)
