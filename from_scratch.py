"""The three norms written from their formulas (the lessons' reference solutions, which a lesson prints with
`inspect.getsource`; each takes x of shape (N, C, H, W) and the layer's per-channel weight and bias), and the check
of a student's version on a real activation of the model, against trained_looking copies of the model's own layer."""

import copy
import inspect

import torch
import torch.nn.functional as F
from torch import nn

import utils
from hardware import choose_precision
from models import NORM_TYPES, S8_model

TOLERANCE = 1e-4  # the largest difference from PyTorch's layer that passes (float32 rounding is ~1e-6)


def per_channel(t):
    """A (C,) tensor shaped (1, C, 1, 1), to scale or shift every channel of a batch."""
    return t.view(1, -1, 1, 1)


def batch_norm(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
    """BatchNorm: each channel's mean and variance over N, H and W. In training they come from the batch,
    and the running averages move towards them in place, PyTorch's way: running = (1 - momentum) * running
    + momentum * batch (so momentum 0.1 keeps 90% of the old value), with the variance's unbiased
    estimate; in evaluation the running averages are used instead."""
    if training:
        mean = x.mean((0, 2, 3))
        var = x.var((0, 2, 3), unbiased=False)  # normalizing uses the biased variance
        n = x.numel() / x.shape[1]
        with torch.no_grad():
            running_mean.mul_(1 - momentum).add_(momentum * mean)
            running_var.mul_(1 - momentum).add_(momentum * var * n / (n - 1))
    else:
        mean, var = running_mean, running_var
    return per_channel(weight) * (x - per_channel(mean)) / torch.sqrt(per_channel(var) + eps) + per_channel(bias)


def layer_norm(x, weight, bias, eps=1e-5):
    """LayerNorm as this suite builds it (GroupNorm(1, C)): each image's mean and variance over C, H and W."""
    mean = x.mean((1, 2, 3), keepdim=True)
    var = x.var((1, 2, 3), keepdim=True, unbiased=False)
    return per_channel(weight) * (x - mean) / torch.sqrt(var + eps) + per_channel(bias)


def group_norm(x, groups, weight, bias, eps=1e-5):
    """GroupNorm: the channels split into `groups` groups of C / groups; each group of each image gets its
    own mean and variance over its channels, H and W. A reshape to (N, groups, C / groups, H, W) puts
    each group on its own axis (reshape works in any memory layout; a view that merges channels with H and W
    fails on a channels-last tensor)."""
    n, c, h, w = x.shape
    g = x.reshape(n, groups, c // groups, h, w)
    mean = g.mean((2, 3, 4), keepdim=True)
    var = g.var((2, 3, 4), keepdim=True, unbiased=False)
    return per_channel(weight) * ((g - mean) / torch.sqrt(var + eps)).reshape(n, c, h, w) + per_channel(bias)


def batch_norm_backward(grad_out, x, weight, eps=1e-5):
    """BatchNorm's backward pass in training mode: the gradients of the loss for x, the scale and the shift, from
    `grad_out`, the loss's gradient for the output. With x_hat = (x - mean) / sqrt(var + eps) over n = N·H·W values
    per channel, the shift's is the sum of grad_out, the scale's the sum of grad_out · x_hat, and the input's has
    three terms: its own path, and the paths through the mean and the variance, which every value shares."""
    dims = (0, 2, 3)
    n = x.numel() / x.shape[1]
    mean = x.mean(dims, keepdim=True)
    inverse_std = torch.rsqrt(x.var(dims, keepdim=True, unbiased=False) + eps)
    x_hat = (x - mean) * inverse_std
    grad_x_hat = grad_out * per_channel(weight)
    grad_x = inverse_std / n * (n * grad_x_hat - grad_x_hat.sum(dims, keepdim=True)
                                - x_hat * (grad_x_hat * x_hat).sum(dims, keepdim=True))
    return grad_x, (grad_out * x_hat).sum(dims), grad_out.sum(dims)


# The mistakes the checks name. Each is the reference with one thing wrong (mistaken_batch_norm, mistaken_group_norm):
# the check runs each, and where one gives what the student's did, it names it. The tests and the lessons' "Try it"
# use them too.
MISTAKES = {
    "no reshape": "a (C,) tensor met the (N, C, H, W) activation without a reshape: broadcasting lines shapes up from "
                  "the last axis, so it met W, not C; reshape it to (1, C, 1, 1) (per_channel) or keep the axes "
                  "(keepdim=True)",
    "not in place": "the running averages did not move: `running_mean = ...` makes a new tensor and leaves the layer's "
                    "buffer as it was; update them in place (running_mean.mul_(1 - momentum).add_(momentum * mean))",
    "momentum reversed": "the running averages kept `momentum` of their old value: PyTorch's momentum is the new "
                         "batch's share, running = (1 - momentum) * running + momentum * batch",
    "biased running variance": "the running variance took the biased variance; the running average takes the "
                               "unbiased one (divided by n - 1: x.var(dims, unbiased=True))",
    "unbiased variance": "the values were normalized with the unbiased variance (divided by n - 1); normalize with the "
                         "biased one (unbiased=False): only BatchNorm's running variance takes the unbiased one",
    "eps outside the root": "eps was added outside the square root: divide by sqrt(var + eps), which matters where a "
                            "variance is near eps (the check shrinks one channel and one image to that)",
    "batch axis": "the statistics were taken over the batch too: each image's own mean and variance need the axes "
                  "after the first (N)",
    "each channel alone": "the statistics were taken over each channel alone (H and W), which is InstanceNorm; "
                          "a group's take its channels together, (C / groups, H, W)",
}
BATCH_NORM_MISTAKES = ("no reshape", "not in place", "momentum reversed", "biased running variance",
                       "unbiased variance", "eps outside the root")
GROUP_NORM_MISTAKES = ("no reshape", "unbiased variance", "eps outside the root", "batch axis", "each channel alone")


def _denominator(var, eps, mistake):
    return torch.sqrt(var) + eps if mistake == "eps outside the root" else torch.sqrt(var + eps)


def mistaken_batch_norm(mistake):
    """from_scratch.batch_norm with one of BATCH_NORM_MISTAKES."""
    def wrong(x, weight, bias, running_mean, running_var, training, momentum=0.1, eps=1e-5):
        shape = (lambda t: t) if mistake == "no reshape" else per_channel
        if training:
            mean = x.mean((0, 2, 3))
            var = x.var((0, 2, 3), unbiased=mistake == "unbiased variance")
            kept = momentum if mistake == "momentum reversed" else 1 - momentum
            new_var = x.var((0, 2, 3), unbiased=mistake != "biased running variance")
            if mistake == "not in place":  # new tensors; the layer's buffers never move
                running_mean, running_var = kept * running_mean + (1 - kept) * mean, kept * running_var + (1 - kept) * new_var
            else:
                running_mean.mul_(kept).add_((1 - kept) * mean)
                running_var.mul_(kept).add_((1 - kept) * new_var)
        else:
            mean, var = running_mean, running_var
        return shape(weight) * (x - shape(mean)) / _denominator(shape(var), eps, mistake) + shape(bias)
    wrong.__name__ = f"batch_norm with {mistake!r}"
    return wrong


def mistaken_group_norm(mistake, groups=None):
    """from_scratch.group_norm with one of GROUP_NORM_MISTAKES; with `groups`, LayerNorm's call (x, weight, bias, eps)."""
    def wrong(x, *arguments):
        g, weight, bias, *eps = (groups, *arguments) if groups else arguments
        n, c, h, w = x.shape
        g = c if mistake == "each channel alone" else g
        grouped = x.reshape(n, g, c // g, h, w)
        dims = (0, 2, 3, 4) if mistake == "batch axis" else (2, 3, 4)
        keep = mistake != "no reshape"
        mean = grouped.mean(dims, keepdim=keep)
        var = grouped.var(dims, keepdim=keep, unbiased=mistake == "unbiased variance")
        if not keep:  # (N, groups) meets (N, groups, C / groups, H, W) from the last axis
            return weight * (grouped - mean) / _denominator(var, eps[0] if eps else 1e-5, mistake) + bias
        normalized = ((grouped - mean) / _denominator(var, eps[0] if eps else 1e-5, mistake)).reshape(n, c, h, w)
        return per_channel(weight) * normalized + per_channel(bias)
    wrong.__name__ = f"{'layer' if groups else 'group'}_norm with {mistake!r}"
    wrong.__signature__ = inspect.signature(layer_norm if groups else group_norm)  # the exercise's arguments
    return wrong


def yours_or_reference(yours, reference, *args):
    """The function a lesson checks: the student's `yours`, or `reference` while `yours(*args)` still returns
    None (the stub the student replaces). Prints which; returns (that function, whether it is the student's)."""
    try:
        is_yours = yours(*args) is not None
    except RuntimeError as err:  # the check names a shape that does not broadcast
        if "must match the size" not in str(err):
            raise
        is_yours = True
    print("checking", f"your {yours.__name__}" if is_yours else f"the reference, from_scratch.{reference.__name__}")
    return (yours if is_yours else reference), is_yours


def trained_looking(layer):
    """A copy of a norm `layer` with random scale and shift (and running averages): an untrained layer's scale 1,
    shift 0, mean 0 and variance 1 would let a norm that forgets them pass."""
    layer = copy.deepcopy(layer)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        # drawn on the CPU, so the same numbers on any device; copy_ moves them to the layer's
        if layer.weight is not None:  # affine=False: nothing to scale or shift
            layer.weight.copy_(0.5 + torch.rand(layer.weight.shape, generator=generator))
            layer.bias.copy_(torch.randn(layer.bias.shape, generator=generator))
        if getattr(layer, "running_mean", None) is not None:
            layer.running_mean.copy_(torch.randn(layer.running_mean.shape, generator=generator))
            layer.running_var.copy_(0.5 + torch.rand(layer.running_var.shape, generator=generator))
    return layer


def check_input(x):
    """What the checks feed a norm: activation `x` at unit scale, so that a mistake shows above TOLERANCE whatever the
    activation's own (C5's of an untrained BatchNorm model has a variance near 3e-5), with channel 0 and image 0
    shrunk to a variance under eps, where eps inside or outside the square root differ."""
    x = x.detach().float() / x.detach().float().std()
    x[:, 0] *= 1e-3
    x[0] *= 1e-3
    return x


def small(x):
    """2 images of 2x2 positions: n = N·H·W is small enough that n / (n - 1) shows (8 / 7 for BatchNorm)."""
    return x[:2, :, :2, :2].contiguous()


def batch_norm_outcome(norm, layer, x):
    """{quantity: tensor} of `norm`, called as BatchNorm on trained_looking copies of `layer`: the output in training,
    the running averages that leaves, the output in evaluation after it, and the same training step on small(x)."""
    outcome = {}
    for case, inputs in (("", x), (", 2 images of 2x2 positions", small(x))):
        ours = trained_looking(layer).to(x.device)
        state = (ours.weight, ours.bias, ours.running_mean, ours.running_var)
        outcome["train mode, output" + case] = norm(inputs, *state, True, ours.momentum, ours.eps)
        outcome["running mean and variance" + case] = (ours.running_mean.clone(), ours.running_var.clone())
        if not case:
            outcome["eval mode, output"] = norm(inputs, *state, False, ours.momentum, ours.eps)
    return outcome


def pytorchs_batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps):
    return F.batch_norm(x, running_mean, running_var, weight, bias, training, momentum, eps)


@torch.no_grad()
def check_batch_norm(my_batch_norm, layer, x):
    """`my_batch_norm` against PyTorch's BatchNorm on trained_looking copies of `layer`, on check_input(x)
    (batch_norm_outcome); prints each difference and, on a FAIL, the likely cause. Returns the largest difference."""
    if layer.running_mean is None or x.shape[0] < 2 or min(x.shape[2:]) < 2:
        raise ValueError("check_batch_norm needs a BatchNorm2d with running averages (track_running_stats=True) and "
                         f"at least 2 images of 2x2 positions, not {tuple(x.shape)}")
    x = check_input(x)
    return compare(lambda norm: batch_norm_outcome(norm, layer, x), my_batch_norm, pytorchs_batch_norm,
                   {m: mistaken_batch_norm(m) for m in BATCH_NORM_MISTAKES})


@torch.no_grad()
def check_norm(yours, reference, layer, x, *parameters):
    """LayerNorm's and GroupNorm's check: yours_or_reference's `norm(x, *parameters, weight, bias)` against a
    trained_looking copy of the model's `layer` on check_input(x) and on small(x); prints each difference and, on a
    FAIL, the likely cause. Returns (the largest difference, whether it was yours)."""
    layer = trained_looking(layer).to(x.device)
    x = check_input(x)
    norm, is_yours = yours_or_reference(yours, reference, x, *parameters, layer.weight, layer.bias)

    def outcome(f):
        return {f"output{case}": f(inputs, *parameters, layer.weight, layer.bias)
                for case, inputs in (("", x), (", 2 images of 2x2 positions", small(x)))}
    mistakes = {m: mistaken_group_norm(m, None if parameters else 1) for m in GROUP_NORM_MISTAKES}
    return compare(outcome, norm, lambda inputs, *rest: layer(inputs), mistakes), is_yours


def compare(outcome, yours, pytorchs, mistakes):
    """Print check's line for each quantity of outcome(yours) against outcome(pytorchs); on a FAIL, the first of
    `mistakes` ({name: function}) whose outcome is yours, by MISTAKES' words. Returns the largest difference (NaN
    where yours raised the broadcasting error)."""
    try:
        mine = outcome(yours)
    except RuntimeError as err:
        if "must match the size" not in str(err):
            raise
        print(f"FAIL: {err}\nlikely cause: {MISTAKES['no reshape']}")
        return float("nan")
    expected = outcome(pytorchs)
    worst = max(check(name, mine[name], expected[name]) for name in expected)
    if worst >= TOLERANCE and worst != float("inf"):
        for name, wrong in mistakes.items():
            try:
                theirs = outcome(wrong)
            except RuntimeError:
                continue
            if all(difference(mine[q], theirs[q]) < TOLERANCE for q in theirs):
                print(f"likely cause: {MISTAKES[name]}")
                break
        else:
            print("look first at: the axes of the mean and variance, biased against unbiased variance, eps inside the "
                  "square root, and the running averages' momentum")
    return worst


def verdict(difference, theirs="PyTorch's"):
    """A lesson summary's words for check's result: 'matched PyTorch's to 4.8e-07', or what failed."""
    if difference != difference:
        return "raised an error: a (C,) tensor met an (N, C, H, W) one without a reshape (FAIL)"
    if difference == float("inf"):
        return "returned None where the check needed a tensor (FAIL)"
    if difference < TOLERANCE:
        return f"matched {theirs} to {difference:.1e}"
    return f"differed from {theirs} by {difference:.1e}, above the tolerance of {TOLERANCE:g} (FAIL)"


def difference(mine, theirs):
    """The largest difference between `mine` and `theirs` (tensors, or tuples of them), relative to the largest
    value of `theirs` where that is above 1, so that a large gradient is held to float32's relative rounding."""
    pairs = list(zip(mine, theirs)) if isinstance(mine, tuple) else [(mine, theirs)]
    return max(((a.detach().float() - b.detach().float()).abs().max() / b.detach().float().abs().max().clamp_min(1)).item()
               for a, b in pairs)


def check(name, mine, theirs, whose="PyTorch's"):
    """Print the largest difference between `mine` and `theirs` (difference) and PASS or FAIL against TOLERANCE;
    returns the difference (infinite where `mine` is None)."""
    if mine is None or (isinstance(mine, tuple) and any(a is None for a in mine)):
        print(f"{name}: FAIL (your function returned None here)")
        return float("inf")
    result = difference(mine, theirs)
    print(f"{name}: largest difference from {whose} {result:.1e}: "
          + ("PASS" if result < TOLERANCE else f"FAIL (above {TOLERANCE:g})"))
    return result


def check_batch_norm_backward(my_batch_norm_backward, layer, x):
    """`my_batch_norm_backward(grad_out, x, weight, eps)` against autograd through PyTorch's BatchNorm in training
    mode (a trained_looking copy of `layer`), on check_input(x) and a seeded random grad_out: the gradients for the
    input, the scale and the shift. Returns the largest difference."""
    x = check_input(x).requires_grad_()
    ours = trained_looking(layer).to(x.device).train()
    out = ours(x)
    grad_out = torch.randn(out.shape, generator=torch.Generator().manual_seed(0)).to(x.device)
    out.backward(grad_out)
    with torch.no_grad():
        mine = my_batch_norm_backward(grad_out, x.detach(), ours.weight.detach(), ours.eps)
        if mine is None:
            mine = (None, None, None)
        return max(check(f"gradient of the {name}", m, t.grad, "autograd's") for name, m, t in
                   zip(("input", "scale", "shift"), mine, (x, ours.weight, ours.bias)))


# Your norm in the network: swap_in makes each norm layer of a model call a function written in a lesson, and
# train_side_by_side trains a model with PyTorch's layers and with that function from the same seed.

EXERCISES = {  # the model's norm: (its layers' class, the lesson's function, that function's parameters)
    "bn": (nn.BatchNorm2d, "my_batch_norm", ("x", "weight", "bias", "running_mean", "running_var", "training",
                                             "momentum", "eps")),
    "ln": (nn.GroupNorm, "my_layer_norm", ("x", "weight", "bias", "eps")),
    "gn": (nn.GroupNorm, "my_group_norm", ("x", "groups", "weight", "bias", "eps")),
}


class YourBatchNorm(nn.BatchNorm2d):
    """A BatchNorm2d whose forward calls `self.your_norm` with its own parameters and running averages."""

    def normalize(self, x):
        if self.training:
            self.num_batches_tracked.add_(1)  # as PyTorch's layer counts its training batches
        return self.your_norm(x, self.weight, self.bias, self.running_mean, self.running_var, self.training,
                              self.momentum, self.eps)

    def forward(self, x):
        return in_fp32_nchw(self.normalize, x)


class YourLayerNorm(nn.GroupNorm):
    """The suite's LayerNorm, GroupNorm(1, C), whose forward calls `self.your_norm(x, weight, bias, eps)`."""

    def forward(self, x):
        return in_fp32_nchw(lambda x: self.your_norm(x, self.weight, self.bias, self.eps), x)


class YourGroupNorm(nn.GroupNorm):
    """A GroupNorm whose forward calls `self.your_norm(x, groups, weight, bias, eps)` with its own groups."""

    def forward(self, x):
        return in_fp32_nchw(lambda x: self.your_norm(x, self.num_groups, self.weight, self.bias, self.eps), x)


REFERENCES = {"bn": batch_norm, "ln": layer_norm, "gn": group_norm}  # what a lesson trains while its stub stands
SWAPPED = {"bn": YourBatchNorm, "ln": YourLayerNorm, "gn": YourGroupNorm}


def in_fp32_nchw(norm, x):
    """norm(x) on x as float32 in NCHW with autocast off, returned in x's dtype and memory layout: a function written
    for the check's NCHW float32 tensor then runs as written under bf16 or fp16 training and channels-last."""
    channels_last = x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous()
    with torch.autocast(x.device.type, enabled=False):
        y = norm(x.float().contiguous())
    return y.to(x.dtype).contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)


def swap_in(model, fn):
    """Make every norm layer of `model` call `fn`, the lesson's exercise for the model's norm (EXERCISES), with the
    layer's own parameters, running averages and groups; in place, and returns the model. The state_dict, the
    parameter count and a checkpoint stay as they were. `fn` is checked first, on a tiny tensor."""
    norm = model.config.norm
    if norm not in EXERCISES:
        raise ValueError(f"the {model.config.norm!r} model has no norm exercise to swap in (InstanceNorm, no norm and "
                         f"LayerNorm over the channels have none); use a BatchNorm, LayerNorm or GroupNorm model")
    layer_class, exercise, parameters = EXERCISES[norm]
    layers = [m for m in model.modules() if type(m) in (layer_class, SWAPPED[norm])]
    if not layers:
        raise ValueError(f"the model has no plain {layer_class.__name__} layer to swap (a ghost batch has no exercise)")
    given = tuple(inspect.signature(fn).parameters)
    if given != parameters:
        raise ValueError(f"{fn.__name__} takes ({', '.join(given)}), not {exercise}'s ({', '.join(parameters)}): "
                         f"swap in the function written for the {NORM_TYPES[norm].label} lesson's exercise, with its "
                         f"arguments in order")
    try_once(fn, norm, layers[0])
    for layer in layers:
        layer.__class__, layer.your_norm = SWAPPED[norm], fn
    return model


@torch.no_grad()
def try_once(fn, norm, layer):
    """Call `fn` once as `layer` would on a tiny seeded tensor; one clear line for what would fail in training."""
    channels = layer.num_features if norm == "bn" else layer.num_channels
    x = torch.randn(2, channels, 4, 4, generator=torch.Generator().manual_seed(0)).to(layer.weight.device)
    before = x.clone()
    arguments = {"bn": lambda: (x, layer.weight, layer.bias, layer.running_mean.clone(), layer.running_var.clone(),
                                True, 0.1, layer.eps),
                 "ln": lambda: (x, layer.weight, layer.bias, layer.eps),
                 "gn": lambda: (x, layer.num_groups, layer.weight, layer.bias, layer.eps)}[norm]()
    try:
        y = fn(*arguments)
    except RuntimeError as err:
        if "must match the size" in str(err):
            raise ValueError(f"{fn.__name__} fails on a (2, {channels}, 4, 4) tensor: {MISTAKES['no reshape']}") from None
        raise
    if y is None:
        raise ValueError(f"{fn.__name__} returns None: write it first (section 3), or swap in the reference")
    if not torch.equal(x, before):
        raise ValueError(f"{fn.__name__} edits x in place: in the network x is a tensor autograd still needs (in "
                         f"LayerNorm's and GroupNorm's blocks the ReLU's output), so the backward pass would fail; "
                         f"compute new tensors (x - mean), not x -= mean")
    if not isinstance(y, torch.Tensor) or y.shape != x.shape:
        raise ValueError(f"{fn.__name__} returns {tuple(y.shape) if isinstance(y, torch.Tensor) else type(y).__name__} "
                         f"for a {tuple(x.shape)} tensor; a norm returns a tensor of its input's shape")


def train_side_by_side(model, fn, data, cfg, device):
    """Two fresh models built from `model`'s config and cfg.seed, one with PyTorch's norm layers and one with `fn`
    swapped in, each trained with utils.fit on `data` in fp32 (so that the norm is the only difference) on the same
    batches: {name: {"model", "losses": every step's training loss, "history": fit's, "seconds": its training time}}."""
    runs = {}
    for name, swap in (("PyTorch's layer", None), (fn.__name__, fn)):
        torch.manual_seed(cfg.seed)
        fresh = S8_model(**model.config.to_dict())
        if swap is not None:
            swap_in(fresh, swap)
        losses = []
        history = utils.fit(fresh, data, cfg, device, choose_precision(device, fresh.norm, "off"), progress=False,
                            log=lambda line: None, on_step=losses.append)
        runs[name] = {"model": fresh, "losses": torch.stack(losses).tolist(), "history": history,
                      "seconds": sum(row["seconds"] for row in history)}
    return runs
