"""The network and nothing else: small CIFAR-10 CNNs that differ only in their normalization layer and where it
sits, the template `C1 C2 c3 P1 C3 C4 C5 c6 P2 C7 C8 C9 GAP c10` with two skips (C3's output added to C5's, C7's
to C9's), its configuration (ModelConfig) and its checkpoints. README.md's "The network" draws the layers."""

import hashlib
import json
import warnings
from dataclasses import asdict, dataclass, fields
from functools import partial
from typing import Callable, Optional

import torch
from torch import nn


def _group_norm(channels, groups, channels_per_group=None):
    if channels_per_group:
        _check_divides("channels_per_group", channels_per_group, (channels,))
        return nn.GroupNorm(channels // channels_per_group, channels)
    _check_divides("groups", groups, (channels,))
    return nn.GroupNorm(groups, channels)


class ChannelLayerNorm(nn.Module):
    """LayerNorm as ConvNeXt and transformers use it: each pixel of each image normalized over its C channels alone.
    The suite's LayerNorm, GroupNorm(1, C), takes its statistics over C, H and W of each image together."""

    def __init__(self, channels, eps=1e-5):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps)

    def forward(self, x):
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


class GhostBatchNorm2d(nn.BatchNorm2d):
    """BatchNorm whose training statistics come from splits of `ghost_batch` images of each batch (a ghost batch,
    Hoffer et al., 2017), so that the noise of its statistics changes while the optimizer's steps stay the same.
    The running averages move once a batch, towards the splits' mean statistics (a last, smaller split of a batch
    counts as much as the others); evaluation is plain BatchNorm."""

    def __init__(self, channels, ghost_batch):
        super().__init__(channels)
        self.ghost_batch = ghost_batch

    def forward(self, x):
        n, c, h, w = x.shape
        if not self.training or n <= self.ghost_batch:
            return super().forward(x)
        whole = n - n % self.ghost_batch
        parts = [x[:whole].reshape(-1, self.ghost_batch, c, h, w)] + ([x[whole:].unsqueeze(0)] if whole < n else [])
        outputs, means, variances = [], [], []
        for part in parts:  # part: (splits, images per split, C, H, W)
            var, mean = torch.var_mean(part.float(), dim=(1, 3, 4), keepdim=True, unbiased=False)
            outputs.append(((part - mean) * torch.rsqrt(var + self.eps)).reshape(-1, c, h, w))
            m = part.shape[1] * h * w
            means.append(mean.reshape(-1, c))
            variances.append(var.reshape(-1, c) * m / max(m - 1, 1))  # the running variance is unbiased, as in nn
        with torch.no_grad():
            self.running_mean.lerp_(torch.cat(means).mean(0), self.momentum)
            self.running_var.lerp_(torch.cat(variances).mean(0), self.momentum)
            self.num_batches_tracked += 1
        y = torch.cat(outputs) * self.weight.view(1, -1, 1, 1) + self.bias.view(1, -1, 1, 1)
        return y.to(x.dtype)


def _check_divides(name, value, widths):
    """GroupNorm's `groups` or `channels_per_group` must divide every layer's channels."""
    for channels in widths:
        if value < 1 or channels % value:
            raise ValueError(
                f"GroupNorm {name}={value} does not divide a layer of {channels} channels; "
                f"choose a value of {name} that divides every width (here a divisor of {channels})"
            )


@dataclass(frozen=True)
class NormType:
    key: str  # the canonical name: results/<key>.json, checkpoints/<key>.pt
    aliases: tuple  # other names accepted for it (any case)
    label: str  # for people: tables, plots, widgets
    short: str  # in file and notebook names: images/BN_curves.png, S8_BN.ipynb
    color: str  # the norm's one colour in every figure
    class_name: str  # the model class S8_model returns
    layer: Callable  # layer(channels, groups) -> nn.Module
    order: str  # where it sits in a C block by default, chosen on the validation split
    conv: str = "plain"  # the C blocks' 3x3 conv by default (CONVS), chosen on the validation split


# Where the norm sits in each C block: before the ReLU (as in ResNet) or after it.
ORDERS = ("norm-relu", "relu-norm")

# The one table of norms. The placements and convs of the first three were chosen on the validation split
# (docs/experiments.md): LayerNorm and GroupNorm after the ReLU, BatchNorm before it; GroupNorm's convs
# weight-standardized. The controls take plain convs. InstanceNorm sits before the ReLU: after it, the last block's
# output has every channel's spatial mean equal to its shift, so the average pool sees the same numbers for every
# image and the network trains at chance.
NORM_TYPES = {t.key: t for t in (
    NormType("bn", ("batch", "batchnorm"), "BatchNorm", "BN", "tab:blue", "Model_Batch_Normalization",
             lambda c, groups: nn.BatchNorm2d(c), "norm-relu"),
    # Layer norm over (C, H, W) of each image is GroupNorm with one group; nn.LayerNorm([C, H, W]) would need
    # the spatial size fixed in advance and learn a scale and shift for every channel at every pixel.
    NormType("ln", ("layer", "layernorm"), "LayerNorm", "LN", "tab:orange", "Model_Layer_Normalization",
             lambda c, groups: nn.GroupNorm(1, c), "relu-norm"),
    NormType("gn", ("group", "groupnorm"), "GroupNorm", "GN", "tab:green", "Model_Group_Normalization", _group_norm,
             "relu-norm", "ws"),
    # One channel per group: statistics over (H, W) of each channel of each image; GroupNorm keeps the
    # per-channel scale and shift that nn.InstanceNorm2d leaves out by default.
    NormType("in", ("instance", "instancenorm"), "InstanceNorm", "IN", "tab:red", "Model_Instance_Normalization",
             lambda c, groups: nn.GroupNorm(c, c), "norm-relu"),
    NormType("none", ("identity", "no-norm"), "no norm", "NONE", "tab:gray", "Model_No_Normalization",
             lambda c, groups: nn.Identity(), "norm-relu"),
    NormType("lnc", ("channel-layernorm", "layernorm-c"), "LayerNorm over C", "LNC", "tab:purple",
             "Model_Channel_Layer_Normalization", lambda c, groups: ChannelLayerNorm(c), "relu-norm"),
)}

# The three norms the suite trains, compares and teaches one notebook each.
SUITE_NORMS = ("bn", "ln", "gn")


class StdConv2d(nn.Conv2d):
    """A conv with Weight Standardization (Qiao et al., 2019): each filter is shifted to mean 0 and scaled to
    variance 1 before it is applied, so the conv's output does not depend on its kernel's scale."""

    def forward(self, x):
        w = self.weight
        var, mean = torch.var_mean(w, dim=(1, 2, 3), keepdim=True, unbiased=False)
        return self._conv_forward(x, (w - mean) * torch.rsqrt(var + 1e-5), self.bias)


# The 3x3 conv of every C block, by name (ModelConfig.conv).
CONVS = {"plain": nn.Conv2d, "ws": StdConv2d}

# Channels after C1, C2, c3, C3-C5, c6, C7-C9. Every width is a multiple of 4 so that
# GroupNorm's default of 4 groups divides every layer.
DEFAULT_WIDTHS = (16, 32, 16, 28, 16, 32)

# The budget every variant must stay under; a run of a larger model says so (run.py).
PARAMETER_BUDGET = 50_000

# Four groups of 4-8 channels: between one group (LayerNorm) and one channel per group (InstanceNorm).
DEFAULT_GROUPS = 4


def norm_type(norm):
    """The NormType for a key or alias, any case ('bn', 'Batch', 'GN', ...)."""
    name = str(norm).strip().lower()
    for t in NORM_TYPES.values():
        if name == t.key or name in t.aliases:
            return t
    accepted = ", ".join(f"{t.key!r} (or {t.aliases[0]!r})" for t in NORM_TYPES.values())
    raise ValueError(f"unknown norm {norm!r}; use one of {accepted}")


def canonical_norm(norm):
    """The NORM_TYPES key ('bn', 'ln', 'gn', 'in', 'none', 'lnc') for any accepted name of a norm."""
    return norm_type(norm).key


def norm_layer(norm, groups=DEFAULT_GROUPS, channels_per_group=None):
    """The constructor a block calls: norm_layer(norm)(channels) -> the norm's layer."""
    t = norm_type(norm)
    if channels_per_group:
        return partial(t.layer, groups=groups, channels_per_group=channels_per_group)
    return partial(t.layer, groups=groups)


@dataclass
class ModelConfig:
    """Everything that defines a model: stored in every checkpoint, a run.py flag per field but norm and num_classes."""

    norm: str = "bn"
    widths: tuple = DEFAULT_WIDTHS  # channels after C1, C2, c3, C3-C5, c6, C7-C9
    groups: int = DEFAULT_GROUPS  # GroupNorm's groups (the other norms ignore it)
    channels_per_group: Optional[int] = None  # GroupNorm: this many channels per group instead of `groups`
    order: Optional[str] = None  # norm-relu | relu-norm; None: the norm's own (NORM_TYPES)
    conv: Optional[str] = None  # plain | ws (Weight Standardization): the C blocks' 3x3 convs; None: the norm's own
    skips: bool = True  # the two identity skips (C3 -> C5, C7 -> C9); False for the lesson on them
    ghost_batch: Optional[int] = None  # BatchNorm: training statistics over splits of this many images; None: the batch
    num_classes: int = 10

    def __post_init__(self):
        self.norm = canonical_norm(self.norm)
        self.widths = tuple(self.widths)
        self.order = self.order or NORM_TYPES[self.norm].order
        self.conv = self.conv or NORM_TYPES[self.norm].conv
        if self.order not in ORDERS:
            raise ValueError(f"unknown order {self.order!r}; use one of {', '.join(map(repr, ORDERS))}")
        if len(self.widths) != 6 or min(self.widths) < 1:
            raise ValueError(f"widths takes 6 channel counts of 1 or more, got {self.widths}")
        if self.conv not in CONVS:
            raise ValueError(f"unknown conv {self.conv!r}; use one of {', '.join(map(repr, CONVS))}")
        if self.channels_per_group is not None and self.norm != "gn":
            raise ValueError(f"channels_per_group is GroupNorm's; the {self.norm} model has no groups (leave it out)")
        if self.ghost_batch is not None and (self.norm != "bn" or self.ghost_batch < 1):
            raise ValueError(f"ghost_batch is BatchNorm's, a whole number of images of 1 or more; the {self.norm} model "
                             f"got {self.ghost_batch!r} (leave it out)")
        if self.norm == "gn":  # checked here, with the rest, rather than when the first layer is built
            if self.channels_per_group is None:
                _check_divides("groups", self.groups, self.widths)
            else:
                _check_divides("channels_per_group", self.channels_per_group, self.widths)
        if self.order == "relu-norm" and (self.norm == "in" or (self.norm == "gn" and self.channels_per_group == 1)):
            warnings.warn("one channel per group after the ReLU trains at chance: each channel's spatial mean becomes "
                          "its shift, so the pool sees the same numbers for every image; put the norm before the ReLU "
                          "(order='norm-relu', run.py's --order norm-relu)",
                          stacklevel=3)

    def to_dict(self):
        return {**asdict(self), "widths": list(self.widths)}


class ConvBlock(nn.Sequential):
    """C: 3x3 conv -> norm -> ReLU (order 'norm-relu') or 3x3 conv -> ReLU -> norm ('relu-norm').
    Before a norm the conv needs no bias (the norm's shift replaces it); before a ReLU it does,
    to set where the ReLU cuts off, and so it does where there is no norm at all."""

    def __init__(self, c_in, c_out, norm_layer, order="norm-relu", conv_layer=nn.Conv2d):
        norm, relu = norm_layer(c_out), nn.ReLU(inplace=True)
        conv = conv_layer(c_in, c_out, 3, padding=1, bias=order == "relu-norm" or isinstance(norm, nn.Identity))
        super().__init__(*([conv, norm, relu] if order == "norm-relu" else [conv, relu, norm]))


class S8Net(nn.Module):
    """The template network (module docstring); build it with S8_model(norm, ...) or S8Net(ModelConfig(...))."""

    NORM = None  # a named subclass's norm

    def __init__(self, config=None, **kwargs):
        super().__init__()
        if config is None:
            config = ModelConfig(**({"norm": self.NORM} if self.NORM else {}), **kwargs)
        if self.NORM and config.norm != self.NORM:
            raise ValueError(f"{type(self).__name__} is the {self.NORM} model, not {config.norm}; use S8_model(norm)")
        self.config, self.norm = config, config.norm
        a, b, c, d, e, f = self.config.widths

        def conv(c_in, c_out):
            layer = norm_layer(self.norm, config.groups, config.channels_per_group)
            if config.ghost_batch:
                layer = partial(GhostBatchNorm2d, ghost_batch=config.ghost_batch)
            return ConvBlock(c_in, c_out, layer, config.order, CONVS[config.conv])

        # Registered in the template's order, so that the printed model reads as the template.
        self.C1, self.C2 = conv(3, a), conv(a, b)
        self.c3, self.P1 = nn.Conv2d(b, c, 1, bias=False), nn.MaxPool2d(2)
        self.C3, self.C4, self.C5 = conv(c, d), conv(d, d), conv(d, d)
        self.c6, self.P2 = nn.Conv2d(d, e, 1, bias=False), nn.MaxPool2d(2)
        self.C7, self.C8, self.C9 = conv(e, f), conv(f, f), conv(f, f)
        self.GAP, self.c10 = GlobalAveragePool(), nn.Conv2d(f, self.config.num_classes, 1)

    def forward(self, x):
        x = self.P1(self.c3(self.C2(self.C1(x))))  # 32x32 -> 16x16
        x = self.C3(x)
        x = self.C5(self.C4(x)) + (x if self.config.skips else 0)  # skip: C3's output joins C5's
        x = self.P2(self.c6(x))  # 16x16 -> 8x8
        x = self.C7(x)
        x = self.C9(self.C8(x)) + (x if self.config.skips else 0)  # skip: C7's output joins C9's
        return self.c10(self.GAP(x)).flatten(1)


class GlobalAveragePool(nn.Module):
    """GAP: each channel's mean over the image, (N, C, H, W) -> (N, C, 1, 1)."""

    def forward(self, x):
        return x.mean((2, 3), keepdim=True)


class Model_Batch_Normalization(S8Net):
    """S8Net with BatchNorm: statistics over (N, H, W) per channel."""

    NORM = "bn"


class Model_Layer_Normalization(S8Net):
    """S8Net with LayerNorm: statistics over (C, H, W) per image."""

    NORM = "ln"


class Model_Group_Normalization(S8Net):
    """S8Net with GroupNorm: statistics over (C/groups, H, W) per image and group."""

    NORM = "gn"


def model_class(norm):
    """The class NORM_TYPES names for `norm`, made as a subclass of S8Net for a norm without a class of its own."""
    t = norm_type(norm)
    cls = globals().get(t.class_name)
    if cls is None or getattr(cls, "NORM", None) != t.key:
        cls = type(t.class_name, (S8Net,), {"NORM": t.key, "__doc__": f"S8Net with {t.label}.", "__module__": __name__})
    return cls


def S8_model(norm="bn", **kwargs):
    """The model for `norm` (any name norm_type takes), an instance of its named class; kwargs: ModelConfig fields."""
    config = ModelConfig(norm=norm, **kwargs)
    return model_class(config.norm)(config)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# Checkpoints: the weights with everything that defines the model they fit, bound by a fingerprint.


def fingerprint(model_config, state_dict):
    """sha256 over the model's description and every tensor: a checkpoint whose description was
    changed (say, norm 'gn' on LayerNorm weights, which have the same shapes) no longer matches."""
    h = hashlib.sha256(json.dumps(model_config, sort_keys=True).encode())
    for name in sorted(state_dict):
        tensor = state_dict[name].detach().cpu().contiguous()
        h.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}".encode())
        h.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def checkpoint(model, **extra):
    """The weights, the ModelConfig they fit and the fingerprint binding the two, plus `extra` (classes, ...)."""
    # CPU copies: a GPU run's checkpoint then loads with a plain torch.load on a machine without a GPU
    config, weights = model.config.to_dict(), {name: t.detach().cpu() for name, t in model.state_dict().items()}
    return {"model": weights, "model_config": config, "fingerprint": fingerprint(config, weights),
            "norm": model.norm, **extra}


def load_checkpoint(path, norm=None, device="cpu"):
    """(model, checkpoint) from a checkpoint run.py wrote, built from the description it holds; with `norm`, one of
    another norm is refused (LayerNorm and GroupNorm weights have the same shapes, so nothing else would notice)."""
    try:
        ckpt = torch.load(path, map_location=device, weights_only=True)  # never runs code from the file
    except FileNotFoundError:
        raise ValueError(f"no checkpoint at {path}; train one with `python run.py --norm NORM`") from None
    except Exception as err:
        raise ValueError(f"{path} is not a checkpoint this suite can read ({err})") from err
    if not isinstance(ckpt, dict) or "model_config" not in ckpt or "fingerprint" not in ckpt:
        raise ValueError(f"{path} holds no model description and fingerprint (not written by this version of "
                         f"run.py); retrain it with `python run.py`")
    config = ckpt["model_config"]
    if fingerprint(config, ckpt["model"]) != ckpt["fingerprint"]:
        raise ValueError(f"{path}: its model description {config} does not match the weights saved with it "
                         f"(edited or mislabelled); retrain it with `python run.py --norm {config.get('norm')}`")
    if norm is not None and canonical_norm(norm) != config["norm"]:
        raise ValueError(f"{path} holds a {NORM_TYPES[config['norm']].class_name}, not the "
                         f"{norm_type(norm).class_name} asked for; load checkpoints/{canonical_norm(norm)}.pt, "
                         f"or ask for norm={config['norm']!r}")
    removed = sorted(set(config) - {f.name for f in fields(ModelConfig)})
    if removed:
        raise ValueError(f"{path} was trained with model options this version no longer has ({', '.join(removed)}); "
                         f"retrain it with `python run.py --norm {config.get('norm')}`")
    model = S8_model(**config)
    model.load_state_dict(ckpt["model"])
    return model, ckpt

