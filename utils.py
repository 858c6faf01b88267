"""Training, evaluation and the misclassified images of the S8 models.

The training data lives on the training device as uint8 tensors (see data.py); each step
takes a batch of indices, augments the whole batch at once and runs the model. The recipe
(SGD with Nesterov momentum, OneCycleLR, label smoothing) lives in `TrainConfig`.
"""

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Optional

import torch
import torch.nn.functional as F
from matplotlib.figure import Figure
from tqdm.auto import tqdm

from data import normalize, train_batches
from hardware import choose_precision, describe_device, pick_device  # noqa: F401 (utils.pick_device in notebooks)
from models import canonical_norm


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05  # peak of the one-cycle schedule
    momentum: float = 0.9
    weight_decay: float = 5e-4  # on conv weights only; norm scales and biases are not decayed
    label_smoothing: float = 0.1
    warmup: float = 0.2  # fraction of the steps spent rising to the peak learning rate
    pad: int = 4  # random translation of up to this many pixels
    flip: bool = True
    cutout: int = 0  # side of the square cut out of each training image; 0 = off
    norm_lr: float = 1.0  # multiplier of lr for the norms' scales and shifts and the biases
    bn_momentum: float = 0.1  # BatchNorm's running statistics: new = (1 - m) * old + m * batch's
    ema: float = 0.0  # decay per step of an average of the weights that is tested and kept; 0 = off
    lookahead: int = 0  # Lookahead (Zhang et al., 2019): every k steps, move halfway back to the slow weights; 0 = off
    distill_weight: float = 0.0  # share of the loss that matches a teacher's softened predictions (needs a teacher); 0 = off
    distill_temperature: float = 4.0  # softens both predictions in that share (Hinton et al., 2015)
    amp: str = "auto"  # auto | bf16 | fp16 | off: auto takes what the hardware does natively (hardware.py)
    channels_last: Optional[bool] = None  # None: where measured faster for the norm (hardware.CHANNELS_LAST)
    seed: int = 0

    def check(self):
        """Raise ValueError naming every setting out of its range (before any data is loaded)."""
        rules = [
            ("epochs", self.epochs >= 1, "a whole number of at least 1"),
            ("batch_size", self.batch_size >= 1, "a whole number of at least 1"),
            ("lr", self.lr > 0, "above 0"),
            ("momentum", 0 <= self.momentum < 1, "from 0 up to, not including, 1"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "from 0 up to, not including, 1"),
            ("warmup", 0 <= self.warmup < 1, "from 0 up to, not including, 1"),
            ("pad", 0 <= self.pad <= 16, "from 0 to 16 pixels"),
            ("cutout", 0 <= self.cutout <= 32, "from 0 to 32 pixels"),
            ("norm_lr", self.norm_lr > 0, "above 0"),
            ("bn_momentum", 0 < self.bn_momentum <= 1, "above 0 and at most 1"),
            ("ema", 0 <= self.ema < 1, "from 0 (off) up to, not including, 1"),
            ("lookahead", self.lookahead >= 0, "a whole number of steps, 0 for off"),
            ("distill_weight", 0 <= self.distill_weight <= 1, "from 0 (off) to 1"),
            ("distill_temperature", self.distill_temperature > 0, "above 0"),
            ("seed", self.seed >= 0, "a whole number of 0 or more"),
        ]
        problems = [f"--{name.replace('_', '-')} must be {rule}, got {getattr(self, name)!r}"
                    for name, ok, rule in rules if not ok]
        if problems:
            raise ValueError("; ".join(problems))
        return self


# Where a norm's defaults depart from TrainConfig's, each chosen on the validation split
# (results/validation.md). None do today. (The memory layout is a speed setting of the hardware,
# chosen in hardware.py.)
RECIPES = {}


def recipe(norm, **overrides):
    """The TrainConfig for `norm`: TrainConfig's defaults, then RECIPES[norm], then `overrides`."""
    return TrainConfig(**{**RECIPES.get(canonical_norm(norm), {}), **overrides})


def resolve_precision(cfg, device, norm=None):
    """(cfg with amp and channels_last made concrete for `device` and `norm`, the Precision)."""
    precision = choose_precision(device, norm, cfg.amp, cfg.channels_last)
    return replace(cfg, amp=precision.amp, channels_last=precision.channels_last), precision


def _precision(cfg, device, model):
    return choose_precision(device, getattr(model, "norm", None), cfg.amp, cfg.channels_last)


def make_optimizer(model, cfg, steps_per_epoch):
    decay = [p for p in model.parameters() if p.ndim == 4]  # conv kernels
    no_decay = [p for p in model.parameters() if p.ndim != 4]  # norm scales/shifts, biases
    optimizer = torch.optim.SGD(
        [{"params": decay, "weight_decay": cfg.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
        lr=cfg.lr, momentum=cfg.momentum, nesterov=True,
    )
    max_lr = [cfg.lr, cfg.lr * cfg.norm_lr]
    # OneCycleLR divides by zero when the warm-up is exactly one step (a 5-step run with warmup
    # 0.2); such a run warms up for one and a half steps instead. Every other run keeps cfg.warmup.
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup if cfg.warmup * total != 1 else 1.5 / total
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=warmup, anneal_strategy="linear", div_factor=10, final_div_factor=100,
    )
    return optimizer, scheduler


class WeightEMA:
    """An exponential moving average of a model's weights and BatchNorm statistics, updated after
    every step; `model` is the averaged copy, to test and to keep."""

    def __init__(self, model, decay):
        self.model = copy.deepcopy(model).eval().requires_grad_(False)
        self.decay, self.steps = decay, 0
        pairs = list(zip(self.model.state_dict().values(), model.state_dict().values()))
        self.floats = [list(t) for t in zip(*[p for p in pairs if p[0].is_floating_point()])]
        self.counts = [p for p in pairs if not p[0].is_floating_point()]  # BatchNorm's num_batches_tracked

    @torch.no_grad()
    def update(self):
        self.steps += 1
        decay = min(self.decay, (1 + self.steps) / (10 + self.steps))  # early on, forget the random start faster
        torch._foreach_lerp_(self.floats[0], self.floats[1], 1 - decay)
        for average, live in self.counts:
            average.copy_(live)


class Lookahead:
    """Lookahead (Zhang et al., 2019): every k steps the weights move back to halfway between
    themselves and the slow weights of k steps before, which then take their place."""

    def __init__(self, model, k, alpha=0.5):
        self.params = list(model.parameters())
        self.slow = [p.detach().clone() for p in self.params]
        self.k, self.alpha, self.steps = k, alpha, 0

    @torch.no_grad()
    def update(self):
        self.steps += 1
        if self.steps % self.k == 0:
            self.sync()

    @torch.no_grad()
    def sync(self):
        """Take the Lookahead step now: the weights become the slow weights (what is tested and kept)."""
        torch._foreach_lerp_(self.slow, self.params, self.alpha)
        torch._foreach_copy_(self.params, self.slow)
        self.steps = 0


def check_distillation(cfg, has_teacher):
    """Distillation needs a teacher and a share of the loss for it, or neither."""
    if has_teacher != (cfg.distill_weight > 0):
        raise ValueError("distillation needs both a teacher (--teacher CHECKPOINT) and a share of the loss for it "
                         f"(--distill-weight, e.g. 0.5); got {'a teacher' if has_teacher else 'no teacher'} "
                         f"and --distill-weight {cfg.distill_weight}")


def distillation_loss(logits, teacher_logits, labels, cfg):
    """Knowledge distillation (Hinton et al., 2015): (1 - w) x the label loss + w x T^2 x the KL
    divergence from the teacher's predictions to the student's, both softened by temperature T.
    T^2 keeps the soft term's gradients the size of the label term's whatever T is."""
    w, t = cfg.distill_weight, cfg.distill_temperature
    hard = F.cross_entropy(logits, labels, label_smoothing=cfg.label_smoothing)
    soft = F.kl_div(F.log_softmax(logits / t, 1), F.log_softmax(teacher_logits / t, 1), reduction="batchmean",
                    log_target=True)
    return (1 - w) * hard + w * t * t * soft


def train(model, data, optimizer, scheduler, cfg, generator, epoch=1, progress=True, scaler=None, after_step=(),
          teacher=None):
    """One epoch over data.train_* (already on the model's device); each of `after_step` (a
    WeightEMA, a Lookahead) is updated after every optimizer step. With a `teacher` (a trained
    model in eval mode), the loss is distillation_loss on the same augmented batch.

    Returns (loss, accuracy %, the learning rate of the epoch's last step)."""
    model.train()
    device = data.train_images.device
    n = len(data.train_labels)
    steps = math.ceil(n / cfg.batch_size)
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    first_bad_step = torch.full((), -1, device=device, dtype=torch.long)  # checked without a sync per step
    precision = _precision(cfg, device, model)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    batches = train_batches(data, cfg.batch_size, generator, cfg.pad, cfg.flip, cfg.cutout, precision.memory_format)
    for step, (x, y) in enumerate(batches):
        with precision.autocast(device):
            logits = model(x)
            if teacher is None:
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            else:
                with torch.no_grad():
                    teacher_logits = teacher(x).float()
                loss = distillation_loss(logits.float(), teacher_logits, y, cfg)
        bad = ~torch.isfinite(loss.detach())
        first_bad_step = torch.where(bad & (first_bad_step < 0), step, first_bad_step)
        optimizer.zero_grad(set_to_none=True)
        if scaler is not None:
            scaler.scale(loss).backward()
            scaler.step(optimizer)
            scaler.update()
        else:
            loss.backward()
            optimizer.step()
        for hook in after_step:
            hook.update()
        lr = optimizer.param_groups[0]["lr"]  # the rate this step used; after the last step the scheduler overshoots
        scheduler.step()
        loss_sum += loss.detach() * len(y)
        correct += (logits.argmax(1) == y).sum()
        if step % 25 == 24 or step == steps - 1:
            _check_finite(first_bad_step, epoch)
            bar.set_postfix(loss=f"{loss_sum.item() / min(n, (step + 1) * cfg.batch_size):.3f}", refresh=False)
            bar.update(step + 1 - bar.n)
    bar.close()
    return loss_sum.item() / n, 100.0 * correct.item() / n, lr


def _check_finite(first_bad_step, epoch):
    step = int(first_bad_step)
    if step >= 0:
        raise FloatingPointError(
            f"loss became NaN or infinite at epoch {epoch}, step {step + 1}; "
            "lower the learning rate (--lr) or turn off mixed precision (--amp off)"
        )


@torch.no_grad()
def predict(model, images, data, cfg=None, batch_size=1000, flip=False):
    """Class probabilities (float32, on the images' device) for uint8 `images`; with `flip`, the
    average over each image and its mirror image (test-time augmentation)."""
    cfg = cfg or TrainConfig()
    model.eval()
    device = images.device
    precision = _precision(cfg, device, model)
    out = []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size], data.mean, data.std).contiguous(memory_format=precision.memory_format)
        with precision.autocast(device):
            probs = model(x).float().softmax(1)
            if flip:
                probs = (probs + model(x.flip(3)).float().softmax(1)) / 2
        out.append(probs)
    return torch.cat(out)


def test(model, data, cfg=None, flip=False):
    """Plain cross-entropy and accuracy % on data.test_* (no label smoothing, no augmentation;
    with `flip`, predictions averaged over each image and its mirror image)."""
    probs = predict(model, data.test_images, data, cfg, flip=flip)
    labels = data.test_labels
    loss = F.nll_loss(probs.clamp_min(1e-12).log(), labels).item()
    return loss, 100.0 * (probs.argmax(1) == labels).float().mean().item()


def fit(model, data, cfg=None, device=None, progress=True, log=print, teacher=None):
    """Train `model` for cfg.epochs on `data` and return the per-epoch history (list of dicts).
    With cfg.ema, the averaged weights are the ones tested and, at the end, left in `model` (the
    train accuracy stays the live weights'); with cfg.lookahead, each epoch ends with a Lookahead
    step, so the slow weights are the ones tested and kept. With cfg.distill_weight, `teacher` (a
    trained model; it is not changed) supplies the soft targets."""
    cfg = (cfg or TrainConfig()).check()
    check_distillation(cfg, teacher is not None)
    device = pick_device(device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    data = data.to(device)
    cfg, precision = resolve_precision(cfg, device, getattr(model, "norm", None))
    model.to(device, memory_format=precision.memory_format)
    if teacher is not None:
        teacher = copy.deepcopy(teacher).to(device, memory_format=precision.memory_format).eval().requires_grad_(False)
    steps = math.ceil(len(data.train_labels) / cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    scaler = precision.grad_scaler(device)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.momentum = cfg.bn_momentum
    lookahead = [Lookahead(model, cfg.lookahead)] if cfg.lookahead else []  # before the EMA: it moves the weights
    ema = WeightEMA(model, cfg.ema) if cfg.ema else None
    tested = ema.model if ema else model
    history = []
    log(f"precision: {precision.describe()}")
    log(EPOCH_HEADER)
    for epoch in range(1, cfg.epochs + 1):
        start = time.perf_counter()
        train_loss, train_acc, lr = train(model, data, optimizer, scheduler, cfg, generator, epoch, progress, scaler,
                                          lookahead + ([ema] if ema else []), teacher)
        seconds = time.perf_counter() - start  # training only; evaluation is not counted
        for slow in lookahead:
            slow.sync()
        test_loss, test_acc = test(tested, data, cfg)
        row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=test_loss,
                   test_acc=test_acc, lr=lr, seconds=seconds)
        history.append(row)
        log(format_epoch(row))
    if ema:
        model.load_state_dict(ema.model.state_dict())
    return history


EPOCH_HEADER = "epoch  train loss  train acc  test loss  test acc   seconds"


def format_epoch(row):
    return (f"{row['epoch']:5d}  {row['train_loss']:10.4f}  {row['train_acc']:8.2f}%  "
            f"{row['test_loss']:9.4f}  {row['test_acc']:7.2f}%  {row['seconds']:8.1f}")


def summarize(model, device):
    """Print the torchsummary table for `model` as it would run on `device`."""
    from torchsummary import summary

    # torchsummary runs a forward pass in train mode, which would move BatchNorm's running
    # statistics, and draws its input from the global RNG: summarize a copy, RNG untouched.
    # It knows only 'cuda' and 'cpu'.
    summary_device = "cuda" if device.type == "cuda" else "cpu"
    with torch.random.fork_rng(devices=[]):
        summary(copy.deepcopy(model).to(summary_device), (3, 32, 32), device=summary_device)


# ---------------------------------------------------------------------------------------------
# Mistakes and plots


def model_device(model):
    return next(model.parameters()).device


def get_incorrect_predictions(model, data, cfg=None):
    """The misclassified test images, most confident mistakes first (ties: lower index first),
    predicted on the device the model is on.

    Returns a list of dicts: index (in data.test_*), image (uint8 CHW, CPU), true, predicted,
    confidence (the probability given to the predicted class).
    """
    probs = predict(model, data.test_images.to(model_device(model)), data, cfg).cpu()  # normalize moves mean/std
    confidence, predicted = probs.max(1)
    wrong = (predicted != data.test_labels).nonzero().flatten()
    # Sort by index first, then stably by confidence: equal confidences keep index order.
    order = wrong[torch.sort(-confidence[wrong], stable=True).indices]
    return [
        dict(index=int(i), image=data.test_images[i].cpu(), true=int(data.test_labels[i]),
             predicted=int(predicted[i]), confidence=float(confidence[i]))
        for i in order
    ]


def plot_incorrect_predictions(items, classes, count=10, columns=2):
    """A grid of `count` mistakes (5 rows x 2 columns by default), each titled with its true and
    predicted class and the confidence (the probability the model gave the predicted class)."""
    rows = math.ceil(count / columns)
    fig = Figure(figsize=(2.4 * columns + 1, 2.2 * rows), layout="constrained")
    axes = fig.subplots(rows, columns, squeeze=False)
    for k, ax in enumerate(axes.flat):
        ax.set_axis_off()
        if k < min(count, len(items)):
            item = items[k]
            ax.imshow(item["image"].permute(1, 2, 0).numpy())  # raw uint8 pixels: nothing to un-normalize
            ax.set_title(f"true: {classes[item['true']]} | pred: {classes[item['predicted']]}\n"
                         f"confidence {item['confidence']:.2f}", fontsize=9)
    return fig


