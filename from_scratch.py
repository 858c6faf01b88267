"""The three norms written from their formulas, and a check of a student's version against PyTorch's layer.

The lessons have the student write each norm; these are the reference solutions (a lesson prints one
with `inspect.getsource`) and `check`, which runs a version on a real activation of the model and
compares it with the layer the model uses. Each takes x of shape (N, C, H, W) and the layer's per-channel
scale (weight) and shift (bias).
"""

import copy

import torch

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
    each group on its own axis."""
    n, c, h, w = x.shape
    g = x.view(n, groups, c // groups, h, w)
    mean = g.mean((2, 3, 4), keepdim=True)
    var = g.var((2, 3, 4), keepdim=True, unbiased=False)
    return per_channel(weight) * ((g - mean) / torch.sqrt(var + eps)).view(n, c, h, w) + per_channel(bias)


def yours_or_reference(yours, reference, *args):
    """The function a lesson checks: the student's `yours`, or `reference` while `yours(*args)` still returns
    None (the stub the student replaces). Prints which; returns (that function, whether it is the student's)."""
    is_yours = yours(*args) is not None
    print("checking", f"your {yours.__name__}" if is_yours else f"the reference, from_scratch.{reference.__name__}")
    return (yours if is_yours else reference), is_yours


@torch.no_grad()
def check_norm(yours, reference, layer, x, *parameters):
    """LayerNorm's and GroupNorm's check: `yours(x, *parameters)` (or the reference while yours is the stub)
    against the model's `layer` on activation `x`; returns (the largest difference, whether it was yours)."""
    norm, is_yours = yours_or_reference(yours, reference, x, *parameters)
    return check("output", norm(x, *parameters), layer(x)), is_yours


def check(name, mine, theirs):
    """Print the largest difference between `mine` and `theirs` (tensors, or tuples of them) and PASS or
    FAIL against TOLERANCE; returns the difference."""
    pairs = zip(mine, theirs) if isinstance(mine, tuple) else [(mine, theirs)]
    difference = max((a.detach().float() - b.detach().float()).abs().max().item() for a, b in pairs)
    print(f"{name}: largest difference from PyTorch's {difference:.1e}: "
          + ("PASS" if difference < TOLERANCE else f"FAIL (above {TOLERANCE:g})"))
    return difference


@torch.no_grad()
def check_batch_norm(my_batch_norm, layer, x):
    """`my_batch_norm` against the BatchNorm2d `layer` on activation `x`: in training (the output and the
    running averages it leaves), then in evaluation, each on a copy of the layer."""
    ours, torchs = copy.deepcopy(layer).train(), copy.deepcopy(layer).train()
    out = my_batch_norm(x, ours.weight, ours.bias, ours.running_mean, ours.running_var, True, ours.momentum, ours.eps)
    expected = torchs(x)
    results = [check("train mode, output", out, expected),
               check("train mode, running mean and variance", (ours.running_mean, ours.running_var),
                     (torchs.running_mean, torchs.running_var))]
    ours.eval(), torchs.eval()
    out = my_batch_norm(x, ours.weight, ours.bias, ours.running_mean, ours.running_var, False, ours.momentum, ours.eps)
    return max(*results, check("eval mode, output", out, torchs(x)))
