# %% [markdown]
# ### Your norm in the network
#
# The check ran your function on one activation; here it trains the network. `from_scratch.swap_in(model, fn)` makes every norm layer of a model call `fn` with the layer's own scale, shift, running averages and groups, whichever it has, and `from_scratch.train_side_by_side` trains two fresh models from the same seed on the same batches: one with PyTorch's layer, one with your function (the reference while yours is the stub). A function that failed the check trains too, and the first line says so; one that `swap_in` refuses before training (a shape that does not broadcast, an in-place edit of `x`, a wrong signature) is named, and the reference trains instead. Here both train in fp32, so that the norm is the only difference; in any training, `swap_in` hands your function a float32 (N, C, H, W) tensor and gives what it returns back in the layer's precision and memory layout. `NETWORK_IMAGES` training images (a fifth as many test images), `NETWORK_EPOCHS` epochs.

# %%
print(f"training {'your' if yours else 'the reference,'} {checked_norm.__name__}"
      + ("" if build_difference < from_scratch.TOLERANCE else ", which FAILED the check above"))
network_cfg = recipes.recipe(NORM, epochs=NETWORK_EPOCHS, seed=SEED)
network_data = data.subset(NETWORK_IMAGES, seed=SEED)
try:
    side = from_scratch.train_side_by_side(model, checked_norm, network_data, network_cfg, device)
except ValueError as refusal:  # swap_in's one line, before any training
    print(f"refused: {refusal}\ntraining the reference, from_scratch.{from_scratch.REFERENCES[NORM].__name__}, instead")
    side = from_scratch.train_side_by_side(model, from_scratch.REFERENCES[NORM], network_data, network_cfg, device)
names = list(side)
losses = [side[name]["losses"] for name in names]
print("step " + "".join(f"{name:>30s}" for name in names) + "    difference")
for step in range(min(10, len(losses[0]))):
    print(f"{step + 1:4d} " + "".join(f"{run[step]:30.7f}" for run in losses) + f"{abs(losses[0][step] - losses[1][step]):14.1e}")
for name, run in side.items():
    print(f"{name}: train accuracy {run['history'][-1]['train_acc']:.2f}%, test accuracy "
          f"{run['history'][-1]['test_acc']:.2f}%, training {run['seconds']:.0f} s")
display(plots.plot_side_by_side(side, NORM, title=f"{NETWORK_EPOCHS} epochs on {len(network_data.train_labels):,} images"))
first = abs(losses[0][0] - losses[1][0])
Markdown(f"""At the first step both models have the same weights and see the same batch, so their losses differ by the norms' arithmetic alone: here by {first:.1e}, """ + (
    "the same up to float32's rounding." if first < 1e-5 else
    "more than rounding: in training mode the two compute different things. Look first at the axes of the mean and variance, biased against unbiased variance, and eps; the check in section 3 names the mistakes it knows.")
    + f""" From the second step on, each step starts from weights that differ by the last one's rounding, and training amplifies it: by step {min(10, len(losses[0]))} the losses differ by {abs(losses[0][min(10, len(losses[0])) - 1] - losses[1][min(10, len(losses[0])) - 1]):.1e}, so a small gap in the final accuracies is no evidence against your norm.""")
