"""The training recipe: its settings (TrainConfig, checked where they are made), each norm's departure
from them (RECIPES), and the optimizer with its one-cycle schedule (make_optimizer)."""

import math
from dataclasses import dataclass
from typing import Optional

import torch

from hardware import AMP_CHOICES
from models import canonical_norm
from muon import MuonSGD


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


# TrainConfig's defaults are the recipe chosen on the validation split (docs/experiments.md has the runs): Muon
# for the conv kernels, no weight decay. A norm departs from them only where its own screen chose another peak
# rate: GroupNorm. The lessons' controls (InstanceNorm, no norm, LayerNorm over the channels) were not tuned: they
# take the defaults, so that a comparison with them changes the norm alone.
RECIPES = {"gn": {"muon_lr": 0.03}}


def recipe(norm, **overrides):
    """The TrainConfig for `norm`: TrainConfig's defaults, then RECIPES[norm], then `overrides`."""
    return TrainConfig(**{**RECIPES.get(canonical_norm(norm), {}), **overrides})


def optimizer_groups(model):
    """{"muon": [names], "sgd": [names]}: which parameters each update rule moves. Muon takes the conv
    kernels that a norm follows, every one but the classifier c10 (a norm makes its layer's output blind
    to the kernel's scale, so a fixed-size orthogonal step suits it; c10's scale is the logits' scale);
    SGD takes c10 and every 1-D parameter (norm scales and shifts, biases)."""
    muon = [n for n, p in model.named_parameters() if p.ndim == 4 and not n.startswith("c10.")]
    return {"muon": muon, "sgd": [n for n, _ in model.named_parameters() if n not in muon]}


def make_optimizer(model, cfg, steps_per_epoch, batched=None):
    """MuonSGD and its one-cycle schedule, for both rates. SGD's weight decay falls on c10's kernel only."""
    params = dict(model.named_parameters())
    muon = optimizer_groups(model)["muon"]
    sgd_kernels = [p for n, p in params.items() if p.ndim == 4 and n not in muon]
    others = [p for p in params.values() if p.ndim != 4]  # norm scales/shifts, biases
    groups = [{"params": sgd_kernels, "weight_decay": cfg.weight_decay}, {"params": others, "weight_decay": 0.0}]
    # one-cycle: the rate rises to its peak and falls; SGD's momentum falls by 0.1 while the rate peaks
    groups.append({"params": [params[n] for n in muon], "muon": True, "lr": cfg.muon_lr,
                   "momentum": cfg.muon_momentum, "weight_decay": cfg.muon_weight_decay})
    optimizer = MuonSGD(groups, lr=cfg.lr, momentum=cfg.momentum, batched=batched)
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
