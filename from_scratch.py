"""The three norms written from their formulas (the lessons' reference solutions, which a lesson prints with
`inspect.getsource`; each takes x of shape (N, C, H, W) and the layer's per-channel weight and bias), and the check
of a student's version on a real activation of the model, against trained_looking copies of the model's own layer."""

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
    each group on its own axis (reshape works in any memory layout; a view that merges channels with H and W
    fails on a channels-last tensor)."""
    n, c, h, w = x.shape
    g = x.reshape(n, groups, c // groups, h, w)
    mean = g.mean((2, 3, 4), keepdim=True)
    var = g.var((2, 3, 4), keepdim=True, unbiased=False)
    return per_channel(weight) * ((g - mean) / torch.sqrt(var + eps)).reshape(n, c, h, w) + per_channel(bias)


def yours_or_reference(yours, reference, *args):
    """The function a lesson checks: the student's `yours`, or `reference` while `yours(*args)` still returns
    None (the stub the student replaces). Prints which; returns (that function, whether it is the student's)."""
    is_yours = yours(*args) is not None
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


@torch.no_grad()
def check_norm(yours, reference, layer, x, *parameters):
    """LayerNorm's and GroupNorm's check: yours_or_reference's `norm(x, *parameters, weight, bias)` against a copy of
    the model's `layer` (trained_looking) on activation `x`; returns (the largest difference, whether it was yours)."""
    layer = trained_looking(layer).to(x.device)
    arguments = (x, *parameters, layer.weight, layer.bias)
    norm, is_yours = yours_or_reference(yours, reference, *arguments)
    return check("output", norm(*arguments), layer(x)), is_yours


def verdict(difference, theirs="PyTorch's"):
    """A lesson summary's words for check's result: 'matched PyTorch's to 4.8e-07', or what failed."""
    if difference == float("inf"):
        return "returned None where the check needed a tensor (FAIL)"
    if difference < TOLERANCE:
        return f"matched {theirs} to {difference:.1e}"
    return f"differed from {theirs} by {difference:.1e}, above the tolerance of {TOLERANCE:g} (FAIL)"


def check(name, mine, theirs):
    """Print the largest difference between `mine` and `theirs` (tensors, or tuples of them) and PASS or
    FAIL against TOLERANCE; returns the difference (infinite where `mine` is None)."""
    pairs = list(zip(mine, theirs)) if isinstance(mine, tuple) else [(mine, theirs)]
    if any(a is None for a, _ in pairs):
        print(f"{name}: FAIL (your function returned None here)")
        return float("inf")
    difference = max((a.detach().float() - b.detach().float()).abs().max().item() for a, b in pairs)
    print(f"{name}: largest difference from PyTorch's {difference:.1e}: "
          + ("PASS" if difference < TOLERANCE else f"FAIL (above {TOLERANCE:g})"))
    return difference


@torch.no_grad()
def check_batch_norm(my_batch_norm, layer, x):
    """`my_batch_norm` against the BatchNorm2d `layer` on activation `x`, each time on trained_looking copies: in
    training (the output and the running averages it leaves), in evaluation, and the running averages after 2
    images of 2x2 positions, where the unbiased variance is 8/7 of the biased one (on 64 images of 16x16 the
    two differ by less than the tolerance)."""
    if layer.running_mean is None or x.shape[0] < 2 or min(x.shape[2:]) < 2:
        raise ValueError("check_batch_norm needs a BatchNorm2d with running averages (track_running_stats=True) and "
                         f"at least 2 images of 2x2 positions, not {tuple(x.shape)}")

    def train_step(x):
        ours, torchs = trained_looking(layer).to(x.device).train(), trained_looking(layer).to(x.device).train()
        out = my_batch_norm(x, ours.weight, ours.bias, ours.running_mean, ours.running_var, True, ours.momentum,
                            ours.eps)
        return ours, torchs, out, torchs(x)

    ours, torchs, out, expected = train_step(x)
    results = [check("train mode, output", out, expected),
               check("train mode, running mean and variance", (ours.running_mean, ours.running_var),
                     (torchs.running_mean, torchs.running_var))]
    ours.eval(), torchs.eval()
    out = my_batch_norm(x, ours.weight, ours.bias, ours.running_mean, ours.running_var, False, ours.momentum, ours.eps)
    results.append(check("eval mode, output", out, torchs(x)))
    ours, torchs, _, _ = train_step(x[:2, :, :2, :2].contiguous())
    results.append(check("running variance after 2 images of 2x2 positions", ours.running_var, torchs.running_var))
    return max(results)
