"""The training device, and the arithmetic and memory layout it runs this network fastest in: `choose_precision` is
the one place that decides, from what the hardware does natively (docs/speed.md has the table and why)."""

import contextlib
import platform
from dataclasses import dataclass

import torch

AMP_CHOICES = ("auto", "bf16", "fp16", "off")
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "off": None}

# Where channels-last is faster than NCHW, measured with a training step of each norm (the rest
# runs in NCHW, PyTorch's default). Keyed by (device type, amp); values are the norms.
#   cpu, off:  AVX2 CPU, fp32: channels-last 612/662/632 images/s against NCHW 509/574/574 (bn/ln/gn)
#   cpu, bf16: AVX-512 BF16 CPU: channels-last about twice NCHW for BatchNorm and LayerNorm; GroupNorm
#              with 4 groups is slow in channels-last (21.0 against 16.7 s an epoch), so NCHW
# CUDA and MPS are not measured yet, so they keep NCHW. The lessons' controls were not measured:
# each takes its nearest relative's layout (InstanceNorm GroupNorm's, no norm BatchNorm's, the
# per-pixel LayerNorm LayerNorm's).
CHANNELS_LAST = {
    ("cpu", "off"): {"bn", "ln", "gn", "in", "none", "lnc"},
    ("cpu", "bf16"): {"bn", "ln", "none", "lnc"},
}


@dataclass(frozen=True)
class Precision:
    amp: str  # "bf16", "fp16" or "off"
    channels_last: bool
    reason: str  # why this choice, for the log

    @property
    def dtype(self):
        return DTYPES[self.amp]

    @property
    def memory_format(self):
        return torch.channels_last if self.channels_last else torch.contiguous_format

    def autocast(self, device):
        if self.amp == "off":
            return contextlib.nullcontext()
        return torch.autocast(device.type, dtype=self.dtype)

    def grad_scaler(self, device):
        """A GradScaler for float16 (its small range underflows small gradients), else None."""
        return torch.amp.GradScaler(device.type) if self.amp == "fp16" else None

    def describe(self, layout=True):
        """'fp32, channels-last (why)' for the records; without the memory layout for the training log."""
        arithmetic = "fp32" if self.amp == "off" else f"{self.amp} autocast"
        if self.amp == "fp16":
            arithmetic += " with a GradScaler"
        if layout:
            arithmetic += ", channels-last" if self.channels_last else ", NCHW"
        return f"{arithmetic} ({self.reason})"


def without_layout(described):
    """A record's precision ('bf16 autocast, channels-last (why)') without its memory layout, for the lessons."""
    return described.replace(", channels-last", "").replace(", NCHW", "")


def native_bf16(device):
    """True where `device` computes in bfloat16 natively rather than by emulation."""
    device = torch.device(device)
    if device.type == "cpu":
        return _cpu_bf16_unit() is not None
    if device.type == "cuda":
        return torch.cuda.get_device_capability(device) >= (8, 0)
    return False


def _cpu_bf16_unit():
    """'AMX' or 'AVX512_BF16', the CPU's bf16 unit, or None where bf16 would be emulated."""
    if torch.cpu._is_amx_tile_supported():
        return "AMX"
    return "AVX512_BF16" if torch.cpu._is_avx512_bf16_supported() else None


def choose_amp(device, amp="auto"):
    """(amp, reason): bf16 autocast where the CPU or GPU has native bf16, else fp16 with a GradScaler on CUDA and fp32
    elsewhere; "bf16", "fp16" or "off" force one."""
    if amp not in AMP_CHOICES:
        raise ValueError(f"unknown amp {amp!r}; use one of {', '.join(AMP_CHOICES)}")
    if amp != "auto":
        return amp, "asked for"
    if device.type == "cpu":
        hardware = f"this CPU ({torch.backends.cpu.get_cpu_capability()})"
    elif device.type == "cuda":
        major, minor = torch.cuda.get_device_capability(device)
        hardware = f"this GPU (compute capability {major}.{minor})"
    else:
        return "off", f"mixed precision not measured on {device.type.upper()}"
    if native_bf16(device):
        unit = f" ({_cpu_bf16_unit()})" if device.type == "cpu" else ""
        return "bf16", f"native bf16{unit} on {hardware}"
    return ("off" if device.type == "cpu" else "fp16"), f"no native bf16 on {hardware}"


def choose_precision(device, norm=None, amp="auto", channels_last=None):
    """The Precision to train `norm`'s model in on `device`; `channels_last=None` takes CHANNELS_LAST's choice."""
    device = torch.device(device)
    amp, reason = choose_amp(device, amp)
    if channels_last is None:
        channels_last = norm in CHANNELS_LAST.get((device.type, amp), ())
    return Precision(amp, bool(channels_last), reason)


def pick_device(name=None):
    """`name` if given ('cpu', 'cuda', 'mps', 'cuda:1', or a torch.device), else cuda, then mps, then cpu."""
    available = {"cuda": torch.cuda.is_available, "mps": torch.backends.mps.is_available}
    if name:
        device = torch.device(name)
        if device.type in available and not available[device.type]():
            raise ValueError(f"device {name!r} asked for, but {device.type.upper()} is not available; use --device cpu")
        return device
    return torch.device(next((kind for kind, present in available.items() if present()), "cpu"))


def describe_device(device):
    """'NVIDIA H100 80GB HBM3', or the CPU's model name, vector capability and thread count."""
    device = torch.device(device)
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    if device.type == "mps":
        return "Apple MPS"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as cpuinfo:
            models = [line.split(":", 1)[1].strip() for line in cpuinfo if line.startswith("model name")]
        name = models[0] if models else name
    except OSError:
        pass
    return f"CPU {name} ({torch.backends.cpu.get_cpu_capability()}), {torch.get_num_threads()} threads"
