# %% [markdown]
# ## 4. Training
#
# One row per epoch: the loss and accuracy on the training images (augmented, averaged over the epoch while the weights move) and on the test images (after the epoch), and the seconds the epoch's training took. The first line names the arithmetic chosen for this machine: fp32, or **bf16** (bfloat16, a 16-bit float with float32's range) where the CPU or GPU computes it natively; on Colab's free T4 GPU it is **fp16**, which has more precision than bf16 but less range, so its gradients are scaled up by a **GradScaler** to keep them from rounding to zero. A run there therefore gives slightly different numbers from the committed one. Running this cell again continues training the same model; to train afresh, run the cells again from section 2.

# %%
cfg = recipes.recipe(NORM, epochs=EPOCHS, batch_size=BATCH_SIZE, seed=SEED)
precision = choose_precision(device, NORM, cfg.amp)
history = utils.fit(model, data, cfg, device, precision)

# %% [markdown]
# In the table the test loss stays below the training loss, and in the first epoch the test accuracy is above the training accuracy too. The training numbers are averaged over the whole epoch, so they include the first batches of a still poor model, and they are taken on augmented images with label smoothing (the target gives the true class 0.91 and each other class 0.01, so even a perfect model keeps the training loss printed below); the test loss has no smoothing, and the test numbers come from the model as it is at the epoch's end, on unaltered images. Compare the trends, not the levels.

# %%
target = torch.full((10,), 0.01) + 0.9 * torch.eye(10)[0]  # label smoothing's target for an image of class 0
print(f"the lowest training loss label smoothing 0.1 allows: {-(target * target.log()).sum().item():.3f}")
plots.plot_curves(history, title=f"{type(model).__name__}, seed {SEED}: test accuracy "
                                 f"{history[-1]['test_acc']:.2f}%, train {history[-1]['train_acc']:.2f}% (augmented)")

# %% [markdown]
# The README's results table holds this norm's committed runs, three seeds each. Its seed 0 beside this run, each with the machine and arithmetic it trained in: on another machine, or in another precision, the numbers differ a little even with the same seed.

# %%
from lab import results

committed = results.read(results.seed_path(results.ROOT, NORM, 0))
print(f"committed run, seed 0: test accuracy {committed['final_test_accuracy']:.2f}% after {committed['epochs']} epochs "
      f"on {committed['train_images']:,} images; {committed['device']}; {without_layout(committed['precision'])}")
print(f"this run, seed {SEED}: test accuracy {history[-1]['test_acc']:.2f}% after {len(history)} epochs on "
      f"{len(data.train_labels):,} images; {describe_device(device)}; {precision.describe(layout=False)}")

# %% [markdown]
# ### How it was trained
#
# The settings come from `recipes.recipe(NORM)`, chosen on a validation split held out of the training images (`docs/experiments.md`):
#
# - **One-cycle schedule:** the learning rate rises over the first fifth of the steps to its peak, then falls linearly to nearly zero.
# - **Muon** (`muon.py`) updates every conv kernel but the classifier's: it replaces the kernel's momentum by the nearest orthogonal matrix, so every direction of the layer moves by the same amount. The classifier `c10`, the norms' scales and shifts and any conv biases take SGD with Nesterov momentum.
# - **Label smoothing 0.1:** the training target gives the true class 0.91 and each of the other nine 0.01, which keeps the model from growing ever more confident.
# - **Flip TTA** (test-time augmentation), in the results table only: each test image scored as it is and mirrored, the two predictions averaged.
# - **bf16 and fp16** (defined at the top of section 4): where the hardware computes them, autocast runs the convs, and what follows them, in 16 bits; the weights, the optimizer's state and the loss stay in float32.

# %% [markdown]
# ## 5. Mistakes
#
# The ten test images the model got wrong with the most confidence, with their true and predicted classes; below them, a browser of every mistake by true and predicted class (it needs a live kernel).

# %%
mistakes = utils.get_incorrect_predictions(model, data, precision)
print(f"{len(mistakes):,} of {len(data.test_labels):,} test images misclassified")
display(utils.plot_incorrect_predictions(mistakes, data.classes, model=type(model).__name__))
mistake_explorer(mistakes, data.classes)
