"""Small CIFAR-10 networks that differ only in their normalization layer and where it sits.

Every model follows the template

    C1 C2 c3 P1  C3 C4 C5 c6 P2  C7 C8 C9 GAP c10

C  = 3x3 conv with the norm and ReLU: conv -> norm -> ReLU for BatchNorm,
     conv -> ReLU -> norm for LayerNorm and GroupNorm (see DEFAULT_ORDERS)
c  = 1x1 conv that reduces channels (c3, c6)
P  = 2x2 max-pool, GAP = global average pool, c10 = 1x1 conv to the 10 logits

with two identity skip connections: the output of C3 is added to the output of C5,
and the output of C7 to the output of C9. The norm is a constructor argument built by
`make_norm`, so swapping BatchNorm for GroupNorm changes one word.
"""

import hashlib
import json

import torch
from torch import nn

NORMS = {"bn": "bn", "batch": "bn", "ln": "ln", "layer": "ln", "gn": "gn", "group": "gn"}
NAMES = {"bn": "Model_Batch_Normalization", "ln": "Model_Layer_Normalization", "gn": "Model_Group_Normalization"}

# Channels after C1, C2, c3, C3-C5, c6, C7-C9. Every width is a multiple of 4 so that
# GroupNorm's default of 4 groups divides every layer.
DEFAULT_WIDTHS = (16, 32, 16, 28, 16, 32)

# Four groups of 4-8 channels each: enough groups to keep per-channel statistics apart
# (one group is LayerNorm), few enough that each group still pools 4+ channels of
# statistics (as many groups as channels is InstanceNorm, which loses contrast cues).
DEFAULT_GROUPS = 4

# Where the norm sits in each C block: before the ReLU (as in ResNet) or after it.
ORDERS = ("norm-relu", "relu-norm")
# Each norm's own placement, chosen on the validation split (results/validation.md): after the
# ReLU, LayerNorm and GroupNorm scored 1.7 points higher each, BatchNorm 1.0 point lower.
DEFAULT_ORDERS = {"bn": "norm-relu", "ln": "relu-norm", "gn": "relu-norm"}

# Where the skips sit in each stage of three C blocks: 'block' adds the first block's output to
# the third's (one skip over two blocks); 'layer' adds each of the last two blocks' input to its
# output (two skips over one block each).
SKIPS = ("block", "layer")
DEFAULT_SKIPS = "block"


def canonical_norm(norm):
    """Map 'bn'/'batch', 'ln'/'layer', 'gn'/'group' (any case) to 'bn', 'ln' or 'gn'."""
    key = str(norm).strip().lower()
    if key not in NORMS:
        raise ValueError(
            f"unknown norm {norm!r}; use one of 'bn' (or 'batch'), 'ln' (or 'layer'), 'gn' (or 'group')"
        )
    return NORMS[key]


def make_norm(norm, channels, groups=DEFAULT_GROUPS):
    """Build the normalization layer for `channels` feature maps.

    - 'bn': BatchNorm2d, statistics over (N, H, W) per channel; running averages at eval.
    - 'ln': layer norm over (C, H, W) of each sample, written as GroupNorm with one group
            (nn.LayerNorm would need the spatial size fixed in advance).
    - 'gn': GroupNorm with `groups` groups of channels, statistics over (C/groups, H, W).
    """
    norm = canonical_norm(norm)
    if norm == "bn":
        return nn.BatchNorm2d(channels)
    if norm == "ln":
        return nn.GroupNorm(1, channels)
    if groups < 1 or channels % groups:
        raise ValueError(
            f"GroupNorm groups={groups} does not divide a layer of {channels} channels; "
            f"choose groups that divide every width (here a divisor of {channels})"
        )
    return nn.GroupNorm(groups, channels)


class ConvBlock(nn.Sequential):
    """C: 3x3 conv -> norm -> ReLU (order 'norm-relu') or 3x3 conv -> ReLU -> norm
    ('relu-norm'), then optional dropout. Before a norm the conv needs no bias (the norm's shift
    replaces it); before a ReLU it does, to set where the ReLU cuts off."""

    def __init__(self, c_in, c_out, norm, groups, dropout, order="norm-relu"):
        if order not in ORDERS:
            raise ValueError(f"unknown order {order!r}; use one of {', '.join(map(repr, ORDERS))}")
        conv = nn.Conv2d(c_in, c_out, 3, padding=1, bias=order == "relu-norm")
        norm_layer, relu = make_norm(norm, c_out, groups), nn.ReLU(inplace=True)
        layers = [conv, norm_layer, relu] if order == "norm-relu" else [conv, relu, norm_layer]
        if dropout:
            layers.append(nn.Dropout2d(dropout))
        super().__init__(*layers)


class S8Net(nn.Module):
    """The template network; see the module docstring."""

    def __init__(self, norm="bn", groups=DEFAULT_GROUPS, widths=DEFAULT_WIDTHS, dropout=0.0, num_classes=10,
                 order=None, skips=DEFAULT_SKIPS):
        super().__init__()
        if skips not in SKIPS:
            raise ValueError(f"unknown skips {skips!r}; use one of {', '.join(map(repr, SKIPS))}")
        self.norm, self.skips = canonical_norm(norm), skips
        order = order or DEFAULT_ORDERS[self.norm]
        a, b, c, d, e, f = widths

        def conv(c_in, c_out):
            return ConvBlock(c_in, c_out, self.norm, groups, dropout, order)

        self.c1, self.c2 = conv(3, a), conv(a, b)
        self.c3 = nn.Conv2d(b, c, 1, bias=False)
        self.C3, self.C4, self.C5 = conv(c, d), conv(d, d), conv(d, d)
        self.c6 = nn.Conv2d(d, e, 1, bias=False)
        self.C7, self.C8, self.C9 = conv(e, f), conv(f, f), conv(f, f)
        self.c10 = nn.Conv2d(f, num_classes, 1)
        self.pool = nn.MaxPool2d(2)

    def forward(self, x):
        x = self.pool(self.c3(self.c2(self.c1(x))))  # 32x32 -> 16x16
        x = self._stage(x, self.C3, self.C4, self.C5)
        x = self.pool(self.c6(x))  # 16x16 -> 8x8
        x = self._stage(x, self.C7, self.C8, self.C9)
        x = x.mean((2, 3), keepdim=True)  # GAP
        return self.c10(x).flatten(1)

    def _stage(self, x, first, second, third):
        x = first(x)
        if self.skips == "layer":
            x = x + second(x)
            return x + third(x)
        return x + third(second(x))  # the first block's output joins the third's


class Model_Batch_Normalization(S8Net):
    def __init__(self, **kwargs):
        super().__init__(norm="bn", **kwargs)


class Model_Layer_Normalization(S8Net):
    def __init__(self, **kwargs):
        super().__init__(norm="ln", **kwargs)


class Model_Group_Normalization(S8Net):
    def __init__(self, **kwargs):
        super().__init__(norm="gn", **kwargs)


def S8_model(norm="bn", **kwargs):
    """The model for `norm` ('bn'/'batch', 'ln'/'layer', 'gn'/'group'); kwargs go to S8Net."""
    return S8Net(norm=norm, **kwargs)


def count_parameters(model):
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


# ---------------------------------------------------------------------------------------------
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


def load_checkpoint(path, norm=None, device="cpu"):
    """(model, checkpoint) from a checkpoint run.py wrote, built from the description it holds.

    With `norm`, a checkpoint of another norm is refused rather than loaded into the wrong model:
    LayerNorm and GroupNorm weights have the same shapes, so nothing else would notice.
    """
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
        raise ValueError(f"{path} holds a {NAMES[config['norm']]}, not the {NAMES[canonical_norm(norm)]} asked for; "
                         f"load checkpoints/{canonical_norm(norm)}.pt, or ask for norm={config['norm']!r}")
    model = S8_model(**config)
    model.load_state_dict(ckpt["model"])
    return model, ckpt
