"""The lessons' exercises: a few short runs that change one setting each, trained on the same images
and scored on the same test images, so that a student can predict, run and compare."""

import time
from dataclasses import fields

import torch

from hardware import choose_precision
from models import S8_model
from recipes import TrainConfig, recipe
from utils import fit


class Accuracies(dict):
    """{name: test accuracy} that a lesson's summary quotes as one line: 'a 61.20%; b 58.70%'."""

    def __str__(self):
        return "; ".join(f"{name} {accuracy:.2f}%" for name, accuracy in self.items())


def short_runs(data, trials, images, epochs, device, seed=0):
    """Train each of `trials` ({name: ModelConfig and TrainConfig fields}; the rest: its norm's recipe) for `epochs` on
    the same seeded `images` training images and a fifth as many test images; Accuracies {name: final test accuracy}."""
    subset = data.subset(images, seed=seed)
    train_fields = {f.name for f in fields(TrainConfig)}
    accuracies = Accuracies()
    for name, options in trials.items():
        model_options = {k: v for k, v in options.items() if k not in train_fields}
        cfg = recipe(model_options.get("norm", "bn"), epochs=epochs, seed=seed,
                     **{k: v for k, v in options.items() if k in train_fields})
        torch.manual_seed(seed)
        model = S8_model(**model_options)
        start = time.perf_counter()
        history = fit(model, subset, cfg, device, choose_precision(device, model.norm, cfg.amp), log=lambda line: None)
        accuracies[name] = history[-1]["test_acc"]
        print(f"{name}: test accuracy {accuracies[name]:.2f}% ({time.perf_counter() - start:.0f} s)")
    return accuracies
