"""Training and testing one model: `train` runs an epoch, `test` scores the test set, `fit` does both for every
epoch of the recipe, and `get_incorrect_predictions` with `plot_incorrect_predictions` shows the worst mistakes."""

import copy
import math
import time
import warnings
from dataclasses import dataclass
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

from data import normalize, train_batches
from hardware import Precision
from plots import plot_incorrect_predictions  # noqa: F401 (the exercise's name: utils.plot_incorrect_predictions)
from recipes import make_optimizer

FP32 = Precision("off", False, "evaluation default")


def train(model, data, optimizer, scheduler, cfg, generator, precision, epoch=1, progress=True, scaler=None,
          on_step=None):
    """One epoch over data.train_* (on the model's device): (loss, accuracy %, the learning rate of its last step).
    `on_step`, if given, receives each step's loss (a tensor on the device: nothing is read back)."""
    model.train()
    n = len(data.train_labels)
    steps = math.ceil(n / cfg.batch_size)
    sums = EpochSums(data.train_images.device)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    batches = train_batches(data, cfg.batch_size, generator, cfg.pad, cfg.flip, cfg.cutout, precision.memory_format)
    for step, (x, y) in enumerate(batches):
        with precision.autocast(x.device):
            logits = model(x)
            loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
        sums.add(loss, logits, y, step)
        if on_step is not None:
            on_step(loss.detach())
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:  # fp16: the loss scaled up so that small gradients do not round to zero
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used; after the last step the scheduler overshoots
        scheduler.step()
        if step % 25 == 24 or step == steps - 1:  # the only reads back to the host
            bad = int(sums.first_bad_step)
            if bad >= 0:
                raise FloatingPointError(
                    f"loss became NaN or infinite at epoch {epoch}, step {bad + 1}; "
                    "lower the learning rate (lr; run.py: --lr) or train in fp32 (amp='off'; run.py: --amp off)"
                )
            bar.set_postfix(loss=f"{sums.loss.item() / min(n, (step + 1) * cfg.batch_size):.3f}", refresh=False)
            bar.update(step + 1 - bar.n)
    bar.close()
    return sums.loss.item() / n, 100.0 * sums.correct.item() / n, float(lr)


class EpochSums:
    """An epoch's loss and correct predictions summed, and the first step whose loss was not finite,
    all on the device: adding a step reads nothing back to the host."""

    def __init__(self, device):
        self.loss = torch.zeros((), device=device)
        self.correct = torch.zeros((), device=device, dtype=torch.long)
        self.first_bad_step = torch.full((), -1, device=device, dtype=torch.long)

    def add(self, loss, logits, labels, step):
        bad = ~torch.isfinite(loss.detach())
        self.first_bad_step.copy_(torch.where(bad & (self.first_bad_step < 0), step, self.first_bad_step))
        self.loss += loss.detach() * len(labels)
        self.correct += (logits.argmax(1) == labels).sum()


def test(model, data, precision=FP32):
    """(loss, accuracy %) of `model` on data.test_*: plain cross-entropy, no augmentation."""
    result = scores(model, data, precision)
    return result.loss, result.accuracy


@torch.no_grad()
def predict(model, images, data, precision=FP32, batch_size=1000, flip=False):
    """Class probabilities (float32) for uint8 `images`; with `flip`, also those of each image mirrored, in one pass."""
    model.eval()
    plain, mirrored = [], []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size], data.mean, data.std).contiguous(memory_format=precision.memory_format)
        with precision.autocast(images.device):
            plain.append(model(x).float().softmax(1))
            if flip:
                mirrored.append(model(x.flip(3)).float().softmax(1))
    return (torch.cat(plain), torch.cat(mirrored)) if flip else torch.cat(plain)


@dataclass
class Scores:
    """One pass of a model over the test set, which the accuracy, flip-TTA accuracy and mistakes are read from."""

    probs: torch.Tensor  # (N, classes) float32 on the CPU
    labels: torch.Tensor
    mirrored: Optional[torch.Tensor] = None  # the same for each image flipped left-right, if scored

    @property
    def loss(self):
        """Plain cross-entropy (no label smoothing)."""
        return F.nll_loss(self.probs.clamp_min(1e-12).log(), self.labels).item()

    @property
    def accuracy(self):
        return 100.0 * (self.probs.argmax(1) == self.labels).float().mean().item()

    @property
    def flip_tta_accuracy(self):
        """Accuracy with each image's prediction averaged with its mirror image's (test-time augmentation)."""
        return 100.0 * (((self.probs + self.mirrored) / 2).argmax(1) == self.labels).float().mean().item()

    def mistakes(self, images):
        """The misclassified images as dicts, most confident mistakes first (ties: lower index first)."""
        confidence, predicted = self.probs.max(1)
        wrong = (predicted != self.labels).nonzero().flatten()
        # Sort by index first, then stably by confidence: equal confidences keep index order.
        order = wrong[torch.sort(-confidence[wrong], stable=True).indices]
        return [dict(index=int(i), image=images[i].cpu(), true=int(self.labels[i]), predicted=int(predicted[i]),
                     confidence=float(confidence[i])) for i in order]


def scores(model, data, precision=FP32, flip=False):
    """Scores of `model` on data.test_*, on the model's device; with `flip`, the mirror images in the same pass."""
    images = data.test_images.to(next(model.parameters()).device)
    probs = predict(model, images, data, precision, flip=flip)
    plain, mirrored = probs if flip else (probs, None)
    return Scores(plain.cpu(), data.test_labels.cpu(), None if mirrored is None else mirrored.cpu())


def get_incorrect_predictions(model, data, precision=FP32):
    """The misclassified test images, most confident mistakes first (Scores.mistakes), on the model's device."""
    return scores(model, data, precision).mistakes(data.test_images)


class History(list):
    """fit's per-epoch rows (dicts); `scores` holds the last epoch's Scores (one pass), mirror images included."""

    scores = None


def fit(model, data, cfg, device, precision, progress=True, log=print, stop_after=None, history=None, on_step=None):
    """Train `model` for cfg.epochs on `data` in `precision`, testing after every epoch; return the History.
    `stop_after` trains only the first that many epochs of cfg.epochs' schedule; with `history` (a History), the rows
    go there as they come, so a caller keeps the epochs before a divergence. `on_step`: as train's."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    data = data.to(device)
    model.to(device, memory_format=precision.memory_format)
    n = len(data.train_labels)
    if cfg.batch_size > n:
        warnings.warn(f"batch size {cfg.batch_size} is larger than the {n:,} training images: one step per epoch; "
                      f"use a batch size of {n} or less", stacklevel=2)
    optimizer, scheduler = make_optimizer(model, cfg, math.ceil(n / cfg.batch_size))
    scaler = precision.grad_scaler(device)
    history = History() if history is None else history
    log(f"precision: {precision.describe(layout=False)}")
    log("epoch  train loss  train acc  test loss  test acc   seconds")
    for epoch in range(1, min(cfg.epochs, stop_after or cfg.epochs) + 1):
        start = time.perf_counter()
        train_loss, train_acc, lr = train(model, data, optimizer, scheduler, cfg, generator, precision, epoch,
                                          progress, scaler, on_step)
        seconds = time.perf_counter() - start  # training only; evaluation is not counted
        history.scores = scores(model, data, precision, flip=epoch == cfg.epochs)
        row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=history.scores.loss,
                   test_acc=history.scores.accuracy, lr=lr, seconds=seconds)
        history.append(row)
        log(f"{row['epoch']:5d}  {row['train_loss']:10.4f}  {row['train_acc']:8.2f}%  "
            f"{row['test_loss']:9.4f}  {row['test_acc']:7.2f}%  {row['seconds']:8.1f}")
    return history


def summarize(model, device):
    """Print the torchsummary table for `model` as it would run on `device`."""
    from torchsummary import summary

    # torchsummary runs a forward pass in train mode, which would move BatchNorm's running
    # statistics, and draws its input from the global RNG: summarize a copy, RNG untouched.
    # It knows only 'cuda' and 'cpu'.
    summary_device = "cuda" if device.type == "cuda" else "cpu"
    with torch.random.fork_rng(devices=[]):
        summary(copy.deepcopy(model).to(summary_device), (3, 32, 32), device=summary_device)
