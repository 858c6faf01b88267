"""Training and evaluation of the S8 models.

The training data lives on the training device as uint8 tensors (see data.py); each step
takes a batch of indices, augments the whole batch at once and runs the model. The recipe
(one-cycle rates, label smoothing, Muon with SGD) lives in `TrainConfig`. The precision
(hardware.Precision) is chosen once per run by hardware.choose_precision and passed in.
`run_one` trains one seed and returns its record (results.run_record), checkpoint and mistakes.
"""

import contextlib
import copy
import math
import time
import warnings
from dataclasses import asdict, dataclass, fields, replace
from typing import Optional

import torch
import torch.nn.functional as F
from tqdm.auto import tqdm

import results
from data import normalize, train_batches
from hardware import AMP_CHOICES, Precision, choose_precision, describe_device
from models import PARAMETER_BUDGET, S8_model, canonical_norm, checkpoint, count_parameters
from muon import MuonSGD
from plots import plot_incorrect_predictions  # noqa: F401 (the exercise's name: utils.plot_incorrect_predictions)


@dataclass
class TrainConfig:
    epochs: int = 20
    batch_size: int = 128
    lr: float = 0.05  # SGD's peak on the one-cycle schedule (the classifier c10, the norms' scales and shifts, biases)
    # SGD's Nesterov momentum at the start and the end of the run: the one-cycle schedule lowers it
    # by 0.1 while the learning rate peaks (0.95 to 0.85, PyTorch's OneCycleLR defaults).
    momentum: float = 0.95
    weight_decay: float = 0.0  # SGD's, on the classifier's kernel only; norm scales and biases are not decayed
    label_smoothing: float = 0.1
    warmup: float = 0.2  # fraction of the steps spent rising to the peak learning rate
    pad: int = 4  # random translation of up to this many pixels
    flip: bool = True
    cutout: int = 0  # side of the square cut out of each training image; 0 = off
    amp: str = "auto"  # auto | bf16 | fp16 | off: auto takes what the hardware does natively (hardware.py)
    channels_last: Optional[bool] = None  # None: where measured faster for the norm (hardware.CHANNELS_LAST)
    muon_lr: float = 0.1  # Muon's peak rate (muon.py: the conv kernels a norm follows), on the same schedule
    muon_momentum: float = 0.9  # Muon's Nesterov momentum (constant)
    muon_weight_decay: float = 0.0  # decoupled: each Muon step shrinks the kernel by lr x this
    # CUDA only: each training step recorded once as a CUDA graph and replayed (CapturedStep), so that a step
    # is one launch instead of hundreds; each epoch's last, smaller batch is left out (a graph has one shape)
    cuda_graph: bool = False
    seed: int = 0

    def __post_init__(self):
        """Refuse, naming each, every setting out of its range: a config is checked where it is made,
        so run.py refuses a bad flag before it loads any data, and nothing downstream checks again."""
        rules = [
            ("epochs", self.epochs >= 1, "a whole number of at least 1"),
            ("batch_size", self.batch_size >= 1, "a whole number of at least 1"),
            ("lr", self.lr > 0, "above 0"),
            ("momentum", 0.1 <= self.momentum < 1, "from 0.1 up to, not including, 1 (one-cycle lowers it by 0.1)"),
            ("weight_decay", self.weight_decay >= 0, "0 or more"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "from 0 up to, not including, 1"),
            ("warmup", 0 <= self.warmup < 1, "from 0 up to, not including, 1"),
            ("pad", 0 <= self.pad <= 16, "from 0 to 16 pixels"),
            ("cutout", 0 <= self.cutout <= 32, "from 0 to 32 pixels"),
            ("amp", self.amp in AMP_CHOICES, f"one of {', '.join(AMP_CHOICES)}"),
            ("muon_lr", self.muon_lr > 0, "above 0"),
            ("muon_momentum", 0 <= self.muon_momentum < 1, "from 0 up to, not including, 1"),
            ("muon_weight_decay", self.muon_weight_decay >= 0, "0 or more"),
            ("seed", self.seed >= 0, "a whole number of 0 or more"),
        ]
        problems = []
        for name, ok, rule in rules:
            value = getattr(self, name)
            if isinstance(value, float) and not math.isfinite(value):  # inf would pass a rule like '0 or more'
                rule, ok = "a finite number", False
            if not ok:
                problems.append(f"--{name.replace('_', '-')} must be {rule}, got {value!r}")
        if problems:
            raise ValueError("; ".join(problems))


# TrainConfig's defaults are the recipe chosen on the validation split (results/validation.md,
# docs/experiments.md): Muon for the conv kernels, no weight decay. Full validation runs, seeds 0 and 1,
# against SGD for every kernel with weight decay 5e-4 (an option that lost, and left the code):
# BatchNorm (Muon 0.1) 82.30/83.00 against 81.78/81.54; GroupNorm (Muon 0.03) 81.98/81.82 against
# 80.34/80.32; LayerNorm (Muon 0.1) 82.34/82.10 against 80.70/80.20. Where a norm departs from them,
# at the peak rate that won its screen: GroupNorm. The lessons' controls (InstanceNorm, no norm,
# LayerNorm over the channels) were not tuned: they take the defaults, so that a comparison with them
# changes the norm alone. (The memory layout is a speed setting of the hardware, chosen in hardware.py.)
RECIPES = {"gn": {"muon_lr": 0.03}}


def recipe(norm, **overrides):
    """The TrainConfig for `norm`: TrainConfig's defaults, then RECIPES[norm], then `overrides`."""
    return TrainConfig(**{**RECIPES.get(canonical_norm(norm), {}), **overrides})


def optimizer_groups(model):
    """{"muon": [names], "sgd": [names]}: which parameters each update rule moves. Muon takes the conv
    kernels that a norm follows, every one but the classifier c10 (a norm makes its layer's output blind
    to the kernel's scale, so a fixed-size orthogonal step suits it; c10's scale is the logits' scale);
    SGD takes c10 and every 1-D parameter (norm scales and shifts, biases)."""
    names = [name for name, _ in model.named_parameters()]
    muon = [n for n, p in model.named_parameters() if p.ndim == 4 and not n.startswith("c10.")]
    return {"muon": muon, "sgd": [n for n in names if n not in muon]}


def make_optimizer(model, cfg, steps_per_epoch):
    """MuonSGD and its one-cycle schedule, for both rates. SGD's weight decay falls on c10's kernel only."""
    params = dict(model.named_parameters())
    muon = optimizer_groups(model)["muon"]
    sgd_kernels = [p for n, p in params.items() if p.ndim == 4 and n not in muon]
    others = [p for p in params.values() if p.ndim != 4]  # norm scales/shifts, biases
    groups = [{"params": sgd_kernels, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}]
    # one-cycle: the rate rises to its peak and falls; SGD's momentum falls by 0.1 while the rate peaks
    groups.append({"params": [params[n] for n in muon], "muon": True, "lr": cfg.muon_lr,
                   "momentum": cfg.muon_momentum, "weight_decay": cfg.muon_weight_decay})
    optimizer = MuonSGD(groups, lr=cfg.lr, momentum=cfg.momentum)
    max_lr, top, bottom = [cfg.lr, cfg.lr, cfg.muon_lr], [cfg.momentum] * 2 + [cfg.muon_momentum], [
        cfg.momentum - 0.1] * 2 + [cfg.muon_momentum]  # Muon's momentum is constant
    # OneCycleLR divides by zero when the warm-up is exactly one step (a 5-step run with warmup
    # 0.2); such a run warms up for one and a half steps instead. Every other run keeps cfg.warmup.
    total = cfg.epochs * steps_per_epoch
    warmup = cfg.warmup if cfg.warmup * total != 1 else 1.5 / total
    scheduler = torch.optim.lr_scheduler.OneCycleLR(
        optimizer, max_lr=max_lr, epochs=cfg.epochs, steps_per_epoch=steps_per_epoch,
        pct_start=warmup, anneal_strategy="linear", div_factor=10, final_div_factor=100,
        max_momentum=top, base_momentum=bottom,
    )
    return optimizer, scheduler


def train(model, data, optimizer, scheduler, cfg, generator, precision, epoch=1, progress=True, scaler=None,
          captured=None):
    """One epoch over data.train_* (already on the model's device), in `precision`; with `captured` (a
    CapturedStep) each step is its graph's replay, and the epoch's last batch is left out when it is smaller.

    Returns (loss, accuracy %, the learning rate of the epoch's last step)."""
    model.train()
    device = data.train_images.device
    n = len(data.train_labels)
    steps = n // cfg.batch_size if captured else math.ceil(n / cfg.batch_size)
    seen = steps * cfg.batch_size if captured else n
    sums = captured.start_epoch() if captured else EpochSums(device)
    bar = tqdm(total=steps, desc=f"epoch {epoch}", leave=False, disable=not progress, unit="batch")
    batches = train_batches(data, cfg.batch_size, generator, cfg.pad, cfg.flip, cfg.cutout, precision.memory_format)
    for step, (x, y) in enumerate(batches):
        if step == steps:  # the captured step's shape is the full batch's
            break
        if captured:
            lr = captured(x, y)
        else:
            with precision.autocast(device):
                logits = model(x)
                loss = F.cross_entropy(logits.float(), y, label_smoothing=cfg.label_smoothing)
            sums.add(loss, logits, y, step)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(loss).backward()
                scaler.step(optimizer)
                scaler.update()
            else:
                loss.backward()
                optimizer.step()
            lr = optimizer.param_groups[0]["lr"]  # the rate this step used; after the last step the scheduler overshoots
            scheduler.step()
        if step % 25 == 24 or step == steps - 1:  # the only reads back to the host
            _check_finite(sums.first_bad_step, epoch)
            bar.set_postfix(loss=f"{sums.loss.item() / min(seen, (step + 1) * cfg.batch_size):.3f}", refresh=False)
            bar.update(step + 1 - bar.n)
    bar.close()
    return sums.loss.item() / seen, 100.0 * sums.correct.item() / seen, float(lr)


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


def rate_table(model, cfg, steps_per_epoch):
    """[[(lr, momentum) of each param group] for each step of the run]: the one-cycle schedule worked out in
    advance, for a captured step, which reads its rates from the device instead of from Python floats."""
    optimizer, scheduler = make_optimizer(copy.deepcopy(model), cfg, steps_per_epoch)
    table = []
    with warnings.catch_warnings():  # the schedule is stepped without the optimizer, on purpose
        warnings.simplefilter("ignore")
        for _ in range(cfg.epochs * steps_per_epoch):
            table.append([(g["lr"], g["momentum"]) for g in optimizer.param_groups])
            scheduler.step()
    return table


class CapturedStep:
    """One training step (forward, loss, backward, optimizer step, the epoch's sums) that a CUDA graph can
    hold, and with `graph` holds: recorded once and replayed at every step, one launch instead of hundreds.

    What makes it capturable: the batch goes into fixed input tensors (one shape: the full batch); the
    rates are device tensors that the schedule (rate_table) is copied into before each replay, not
    Python floats; the optimizer takes them batched (MuonSGD); the sums and the non-finite check stay
    on the device (EpochSums), read every 25 steps as the eager loop does; a GradScaler's scale and
    found-inf flag stay on the device too (MuonSGD takes them). Before the graph is recorded it runs
    three warm-up steps, as CUDA graphs need; the model, optimizer and scaler are then put back as
    they were, so the run starts from the same weights as an eager one. Without `graph` (the tests, on
    the CPU) the same step runs eagerly."""

    WARMUP = 3

    def __init__(self, model, optimizer, table, cfg, precision, scaler, device, graph=True):
        self.model, self.optimizer, self.cfg, self.precision, self.scaler = model, optimizer, cfg, precision, scaler
        self.device, self.graph, self.step_index = device, None, 0
        self.table = torch.tensor(table, device=device, dtype=torch.float32)  # (steps, groups, 2)
        self.rates = self.table[0].clone()
        optimizer.batched = True  # tensor rates, no host read
        varies = (self.table != self.table[:1]).any(0)  # which rates the schedule moves
        for k, group in enumerate(optimizer.param_groups):
            group["lr"] = self.rates[k, 0]
            if varies[k, 1]:
                group["momentum"] = self.rates[k, 1]
        self.x = torch.zeros((cfg.batch_size, 3, 32, 32), device=device).contiguous(memory_format=precision.memory_format)
        self.y = torch.zeros(cfg.batch_size, device=device, dtype=torch.long)
        self.sums, self.index = EpochSums(device), torch.zeros((), device=device, dtype=torch.long)
        if graph:
            self.graph = record_graph(self._step, self._state())

    def _state(self):
        """Every tensor a step changes, to put back after the warm-up."""
        model, optimizer = self.model, self.optimizer
        for p in (p for group in optimizer.param_groups for p in group["params"]):
            optimizer.state[p].setdefault("buffer", torch.zeros_like(p))
        scaler = []
        if self.scaler is not None:
            if self.scaler._scale is None:  # made on the first scale(): made now, so that it is put back too
                self.scaler._lazy_init_scale_growth_tracker(self.device)
            scaler = [self.scaler._scale, self.scaler._growth_tracker]
        return [*model.parameters(), *model.buffers(), *(s["buffer"] for s in optimizer.state.values()), *scaler,
                self.sums.loss, self.sums.correct, self.sums.first_bad_step, self.index]

    def _step(self):
        autocast = torch.autocast(self.device.type, dtype=self.precision.dtype, cache_enabled=False) \
            if self.precision.amp != "off" else contextlib.nullcontext()  # a graph cannot hold autocast's cache
        with autocast:
            logits = self.model(self.x)
            loss = F.cross_entropy(logits.float(), self.y, label_smoothing=self.cfg.label_smoothing)
        self.sums.add(loss, logits, self.y, self.index)
        self.index += 1
        self.optimizer.zero_grad(set_to_none=False)
        if self.scaler is not None:
            self.scaler.scale(loss).backward()
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            loss.backward()
            self.optimizer.step()

    def start_epoch(self):
        for total in (self.sums.loss, self.sums.correct, self.index):
            total.zero_()
        self.sums.first_bad_step.fill_(-1)
        return self.sums

    def __call__(self, x, y):
        """Train on the batch (x, y); returns the learning rate it used."""
        self.x.copy_(x)
        self.y.copy_(y)
        self.rates.copy_(self.table[self.step_index])
        self.graph.replay() if self.graph else self._step()
        self.step_index += 1
        return self.table[self.step_index - 1, 0, 0]


def record_graph(step, state):
    """A CUDA graph of `step()`, recorded after WARMUP eager steps on a side stream (as CUDA graphs need),
    with every tensor of `state` put back to its value from before the warm-up."""
    saved = [t.detach().clone() for t in state]
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(CapturedStep.WARMUP):
            step()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step()
    with torch.no_grad():
        for tensor, value in zip(state, saved):
            tensor.copy_(value)
    return graph


def check_cuda_graph(cfg, device):
    """Refuse cuda_graph off CUDA, in one line, before any training."""
    if cfg.cuda_graph and torch.device(device).type != "cuda":
        raise ValueError(f"--cuda-graph records each training step as a CUDA graph, which needs a CUDA GPU, and this "
                         f"run is on {torch.device(device).type}: leave out --cuda-graph")


def _check_finite(first_bad_step, epoch):
    step = int(first_bad_step)
    if step >= 0:
        raise FloatingPointError(
            f"loss became NaN or infinite at epoch {epoch}, step {step + 1}; "
            "lower the learning rate (--lr) or turn off mixed precision (--amp off)"
        )


FP32 = Precision("off", False, "evaluation default")


@torch.no_grad()
def predict(model, images, data, precision=FP32, batch_size=1000, flip=False):
    """Class probabilities (float32, on the images' device) for uint8 `images`; with `flip`, a second
    tensor: the probabilities for each image mirrored left-right, from the same pass."""
    model.eval()
    device = images.device
    plain, mirrored = [], []
    for i in range(0, len(images), batch_size):
        x = normalize(images[i:i + batch_size], data.mean, data.std).contiguous(memory_format=precision.memory_format)
        with precision.autocast(device):
            plain.append(model(x).float().softmax(1))
            if flip:
                mirrored.append(model(x.flip(3)).float().softmax(1))
    return (torch.cat(plain), torch.cat(mirrored)) if flip else torch.cat(plain)


@dataclass
class Scores:
    """One pass of a model over the test set: what the accuracy, the flip-TTA accuracy and the
    mistakes are all read from."""

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
        """The misclassified images, most confident mistakes first (ties: lower index first): dicts
        of index, image (uint8 CHW, CPU), true, predicted, confidence (the probability given to the
        predicted class)."""
        confidence, predicted = self.probs.max(1)
        wrong = (predicted != self.labels).nonzero().flatten()
        # Sort by index first, then stably by confidence: equal confidences keep index order.
        order = wrong[torch.sort(-confidence[wrong], stable=True).indices]
        return [dict(index=int(i), image=images[i].cpu(), true=int(self.labels[i]), predicted=int(predicted[i]),
                     confidence=float(confidence[i])) for i in order]


def score(model, data, precision=FP32, flip=False):
    """Scores of `model` on data.test_*, predicted on the device the model is on (no label smoothing,
    no augmentation; with `flip`, the mirror images are scored in the same pass)."""
    images = data.test_images.to(model_device(model))
    probs = predict(model, images, data, precision, flip=flip)
    plain, mirrored = probs if flip else (probs, None)
    return Scores(plain.cpu(), data.test_labels.cpu(), None if mirrored is None else mirrored.cpu())


class History(list):
    """fit's per-epoch rows (dicts); `scores` holds the last epoch's Scores, mirror images included,
    so the final accuracy, its flip-TTA accuracy and the mistakes come from one pass."""

    scores = None


def fit(model, data, cfg, device, precision, progress=True, log=print, stop_after=None, history=None):
    """Train `model` for cfg.epochs on `data` in `precision` (hardware.choose_precision), testing after
    every epoch; return the History. `stop_after` trains only the first that many epochs of cfg.epochs'
    schedule (a look at early training: the same steps as the full run's first epochs). With `history`
    (a History), the rows go there as they come, so a caller keeps the epochs before a divergence."""
    device = torch.device(device)
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    data = data.to(device)
    model.to(device, memory_format=precision.memory_format)
    n = len(data.train_labels)
    if cfg.batch_size > n:
        warnings.warn(f"batch size {cfg.batch_size} is larger than the {n:,} training images: one step per epoch; "
                      f"use a batch size of {n} or less", stacklevel=2)
    check_cuda_graph(cfg, device)
    steps = n // cfg.batch_size if cfg.cuda_graph else math.ceil(n / cfg.batch_size)
    optimizer, scheduler = make_optimizer(model, cfg, steps)
    scaler = precision.grad_scaler(device)
    history, captured = History() if history is None else history, None
    log(f"precision: {precision.describe(layout=False)}" + (f"; each step a CUDA graph's replay, the last {n % cfg.batch_size} "
                                                 "images of each epoch's order left out" if cfg.cuda_graph else ""))
    log(EPOCH_HEADER)
    for epoch in range(1, min(cfg.epochs, stop_after or cfg.epochs) + 1):
        start = time.perf_counter()
        if cfg.cuda_graph and captured is None:  # recorded inside the first epoch's time
            captured = CapturedStep(model, optimizer, rate_table(model, cfg, steps), cfg, precision, scaler, device)
        train_loss, train_acc, lr = train(model, data, optimizer, scheduler, cfg, generator, precision, epoch,
                                          progress, scaler, captured)
        seconds = time.perf_counter() - start  # training only; evaluation is not counted
        history.scores = score(model, data, precision, flip=epoch == cfg.epochs)
        row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, test_loss=history.scores.loss,
                   test_acc=history.scores.accuracy, lr=lr, seconds=seconds)
        history.append(row)
        log(format_epoch(row))
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


def model_device(model):
    return next(model.parameters()).device


def get_incorrect_predictions(model, data, precision=FP32):
    """The misclassified test images, most confident mistakes first (Scores.mistakes), predicted on
    the device the model is on, in `precision` (fp32 by default)."""
    return score(model, data, precision).mistakes(data.test_images)


def run_one(model_config, cfg, data, precision, device, verbose=True, progress=True, probe=None, keep_diverged=False):
    """Train one seed of `model_config` with `cfg` in `precision`; returns {"record": the run's record
    (results.run_record), "checkpoint", "mistakes", "model"}; `verbose` prints the model's summary and a line
    per epoch, `progress` draws the progress bars. `probe(model, steps_per_epoch)` is called
    before training and returns a function that gives the record's extra fields after it. With
    `keep_diverged`, a run whose loss stops being finite is recorded as diverged (its finished epochs
    kept) instead of raising."""
    model_config = replace(model_config, num_classes=len(data.classes))
    torch.manual_seed(cfg.seed)
    model = S8_model(**asdict(model_config))
    parameters = count_parameters(model)
    if verbose:
        print(f"\n=== {type(model).__name__} ({results.LABELS[model.norm]}) ===")
        summarize(model, device)
        print(f"{parameters:,} parameters: " + (f"within the {PARAMETER_BUDGET:,} budget" if parameters < PARAMETER_BUDGET
              else f"OVER the {PARAMETER_BUDGET:,}-parameter budget (the results will say so)"))
    extra = probe(model, math.ceil(len(data.train_labels) / cfg.batch_size)) if probe else None
    history, diverged = History(), None
    try:
        fit(model, data, cfg, device, precision, progress, log=print if verbose else lambda line: None, history=history)
    except FloatingPointError as err:
        if not keep_diverged:
            raise
        diverged = str(err)
    record = results.run_record(model, cfg, data, precision, describe_device(device), history, diverged,
                                optimizer_groups(model), extra() if extra else {})
    saved = checkpoint(model, classes=list(data.classes), config=record["config"], mean=data.mean.cpu(),
                       std=data.std.cpu(), data=data.source, git_commit=record["git_commit"],
                       git_dirty=record["git_dirty"])
    mistakes = history.scores.mistakes(data.test_images) if history.scores is not None and not diverged else []
    return {"record": record, "checkpoint": saved, "mistakes": mistakes, "model": model}


class Accuracies(dict):
    """{name: test accuracy} that a lesson's summary quotes as one line: 'a 61.20%; b 58.70%'."""

    def __str__(self):
        return "; ".join(f"{name} {accuracy:.2f}%" for name, accuracy in self.items())


def short_runs(data, trials, images, epochs, device, seed=0):
    """The notebooks' exercises: train each of `trials` ({name: ModelConfig and TrainConfig fields}, the rest of
    its norm's recipe) for `epochs` on the same seeded `images` training images, score it on a fifth as many
    test images, print a line each as it finishes; returns Accuracies {name: final test accuracy}."""
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
