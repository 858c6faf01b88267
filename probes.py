"""Measurements of a model's insides, for the lessons (lab/experiments.py and the notebooks)."""

import copy
import math
import statistics
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

from data import normalize, train_batches
from models import ConvBlock
from recipes import make_optimizer

PERCENTILES = (1, 20, 80, 99)
SAMPLE = 1 << 18  # values a percentile is taken over (a strided sample of a larger activation)


def c_blocks(model):
    """[(label, ConvBlock)] in the order data flows: C1 C2 C3 C4 C5 C7 C8 C9."""
    return [(name, m) for name, m in model.named_children() if isinstance(m, ConvBlock)]


def percentiles(x):
    """The PERCENTILES of tensor `x` (over a strided sample of at most SAMPLE values), as floats."""
    x = x.detach().float().reshape(-1)
    if x.numel() > SAMPLE:
        x = x[:: x.numel() // SAMPLE][:SAMPLE]
    q = torch.tensor([p / 100 for p in PERCENTILES], device=x.device)
    return [round(v, 5) for v in torch.quantile(x, q).tolist()]


class ActivationRecorder:
    """Records the PERCENTILES of what enters each C block's ReLU (its pre-activation) on the training steps
    `record(step)` picks, step counting the model's training forwards from 0 (not evaluation's). Read `steps`
    and `values` ({block: [[p1, p20, p80, p99] per recorded step]}); `remove()` takes the hooks out."""

    def __init__(self, model, record):
        self.record, self.step, self.active = record, 0, False
        self.steps, self.values = [], {label: [] for label, _ in c_blocks(model)}
        self.handles = [model.register_forward_pre_hook(self._count)]
        for label, block in c_blocks(model):
            relu = next(m for m in block if isinstance(m, nn.ReLU))
            self.handles.append(relu.register_forward_pre_hook(self._hook(label)))

    def _count(self, model, inputs):
        self.active = model.training and self.record(self.step)
        if self.active:
            self.steps.append(self.step)
        self.step += model.training

    def _hook(self, label):
        def hook(module, inputs):
            if self.active:
                self.values[label].append(percentiles(inputs[0]))
        return hook

    def remove(self):
        for handle in self.handles:
            handle.remove()


def watch_training(model, data, cfg, steps, device):
    """Train `model` for the first `steps` steps of cfg's schedule (all of it if shorter), in fp32, and record the mean and standard
    deviation of what leaves each C block (after its norm and ReLU, in either order) at every step:
    {block: {"mean": [...], "std": [...]}}. The batches depend on cfg.seed alone, so two models see the same ones."""
    torch.manual_seed(cfg.seed)
    generator = torch.Generator(device=device).manual_seed(cfg.seed)
    data, model = data.to(device), model.to(device).float().train()
    steps_per_epoch = math.ceil(len(data.train_labels) / cfg.batch_size)
    steps = min(steps, cfg.epochs * steps_per_epoch)  # a short schedule ends sooner
    optimizer, scheduler = make_optimizer(model, cfg, steps_per_epoch)
    stats = {label: {"mean": [], "std": []} for label, _ in c_blocks(model)}

    def record(label):
        def hook(module, inputs, output):
            stats[label]["mean"].append(output.mean().item())
            stats[label]["std"].append(output.std().item())
        return hook
    handles = [block.register_forward_hook(record(label)) for label, block in c_blocks(model)]
    try:
        step = 0
        while step < steps:  # as many epochs as the steps take
            for x, y in train_batches(data, cfg.batch_size, generator, cfg.pad, cfg.flip, cfg.cutout):
                loss = F.cross_entropy(model(x), y, label_smoothing=cfg.label_smoothing)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                scheduler.step()
                step += 1
                if step == steps:
                    break
    finally:
        for handle in handles:
            handle.remove()
    return stats


@torch.no_grad()
def scale_change(model, block, x, factor=10.0, train=True, bias=True):
    """How much C block `block`'s output moves, relative to its largest value, when its conv's kernel (and with
    `bias` its bias) is multiplied by `factor`, on float batch `x`, in train mode or eval on frozen_copy's."""
    outputs = []
    for scale in (1.0, factor):
        probe = frozen_copy(model, train).float()
        conv = getattr(probe, block)[0]
        conv.weight.mul_(scale)
        if bias and conv.bias is not None:
            conv.bias.mul_(scale)
        handle = getattr(probe, block).register_forward_hook(lambda module, inputs, output: outputs.append(output))
        probe(x)
        handle.remove()
    before, after = outputs
    return ((after - before).abs().max() / before.abs().max()).item()


def first_epoch_and_end(steps_per_epoch, total_steps, points=20):
    """The steps an ActivationRecorder records: `points` evenly spaced through the first epoch, its
    last step, the first step of every later epoch, and the last step of training."""
    every = max(1, steps_per_epoch // points)
    return lambda step: ((step < steps_per_epoch and step % every == 0) or step == steps_per_epoch - 1
                         or step % steps_per_epoch == 0 or step == total_steps - 1)


@torch.no_grad()
def norm_input(model, block, x):
    """What the norm of C block `block` ('C5') normalizes, in fp32, when `model` in eval mode sees float `x`."""
    norm = next(m for m in getattr(model, block) if not isinstance(m, (nn.Conv2d, nn.ReLU)))
    captured = []
    handle = norm.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0].float()))
    try:
        model.eval()(x)
    finally:
        handle.remove()
    return captured[0]


def gradient_norms(model, images, labels, mean, std):
    """{layer: L2 norm of the plain cross-entropy's gradient for its weights} for every conv with weights (C1 C2 c3
    C3 C4 C5 c6 C7 C8 C9 c10) on uint8 `images`, in fp32 and train mode, on a copy (the model stays as it was)."""
    probe = copy.deepcopy(model).float().train()
    device = next(probe.parameters()).device
    x = normalize(images.to(device), mean.to(device), std.to(device))
    probe.zero_grad(set_to_none=True)
    F.cross_entropy(probe(x), labels.to(device)).backward()
    convs = [(label, m[0] if isinstance(m, ConvBlock) else m) for label, m in probe.named_children()]
    return {label: round(conv.weight.grad.norm().item(), 6) for label, conv in convs if isinstance(conv, nn.Conv2d)}


def fold_batchnorm(model):
    """A copy of a BatchNorm model in eval mode with each BatchNorm folded into the conv before it:
    in eval mode BatchNorm is a fixed per-channel scale and shift (its running statistics), which
    the conv's weights and bias can absorb. Only a norm placed right after the conv folds."""
    folded = copy.deepcopy(model).eval()
    for _, block in c_blocks(folded):
        conv, norm = block[0], block[1]
        if not isinstance(norm, nn.BatchNorm2d):
            raise ValueError(f"only BatchNorm directly after its conv can be folded, not {type(norm).__name__}; "
                             f"fold a BatchNorm model with order norm-relu")
        block[0], block[1] = fuse_conv_bn_eval(conv, norm), nn.Identity()
        block[0].bias.requires_grad_(block[0].weight.requires_grad)  # the new bias is a parameter like the weight
    return folded


@torch.no_grad()
def seconds_per_image(model, x, batch_size, repeats=5):
    """Median over `repeats` (after a warm-up) of an eval pass's seconds per image over `x`, batches of `batch_size`."""
    model.eval()
    batches = [x[i:i + batch_size] for i in range(0, len(x), batch_size)]
    times = []
    for r in range(repeats + 1):
        start = time.perf_counter()
        for b in batches:
            model(b)
        if x.is_cuda:  # a GPU runs behind the Python that queues its work: wait for it
            torch.cuda.synchronize(x.device)
        if r:  # the first pass warms up
            times.append((time.perf_counter() - start) / len(x))
    return statistics.median(times)


def frozen_copy(model, train, momentum=0.0):
    """A copy of `model`, in train mode or not, whose BatchNorm running statistics move with `momentum` (0: kept)."""
    probe = copy.deepcopy(model).train(train)
    for bn in (m for m in probe.modules() if isinstance(m, nn.BatchNorm2d)):
        bn.momentum = momentum
    return probe


@torch.no_grad()
def batch_dependence(model, x, mode):
    """How much each image's logits depend on the rest of its batch, in `mode` ('eval' or 'train', on a frozen_copy):
    (largest absolute logit difference, how many predictions change) of float batch `x` whole against alone."""
    probe = frozen_copy(model, mode == "train").float()
    together = probe(x)
    alone = torch.cat([probe(x[i:i + 1]) for i in range(len(x))])
    return (together - alone).abs().max().item(), int((together.argmax(1) != alone.argmax(1)).sum())


@torch.no_grad()
def accuracy_with_batch_statistics(model, data, batch_size, seed=0):
    """Test accuracy with BatchNorm in train mode, on a frozen_copy: each test batch of `batch_size` images (in a
    seeded random order, since the test set is stored class by class) normalized with its own statistics."""
    probe = frozen_copy(model, train=True)
    order = torch.randperm(len(data.test_labels), generator=torch.Generator().manual_seed(seed))
    device = next(model.parameters()).device
    correct = seen = 0
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        if len(idx) == 1 < batch_size:  # a lone last image would be the only batch of one
            continue
        x = normalize(data.test_images[idx].to(device), data.mean.to(device), data.std.to(device))
        correct += (probe(x).argmax(1).cpu() == data.test_labels[idx]).sum().item()
        seen += len(idx)
    return 100.0 * correct / seen


@torch.no_grad()
def recalibrated(model, data, images, seed=0):
    """A copy of a BatchNorm model whose running averages are the statistics of one batch of `images` seeded
    random training images (momentum 1: the batch's statistics replace them), in eval mode."""
    probe = frozen_copy(model, True, momentum=1.0)
    pick = torch.randperm(len(data.train_labels), generator=torch.Generator().manual_seed(seed))[:images]
    device = next(model.parameters()).device
    probe(normalize(data.train_images[pick].to(device), data.mean.to(device), data.std.to(device)))
    return probe.eval()
