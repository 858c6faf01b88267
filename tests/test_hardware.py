"""The precision and layout policy, pinned without the hardware: the capability queries are faked."""

import pytest
import torch

import hardware
import recipes
import utils
from models import S8_model
from test_utils import FAST, toy_data

CPU, CUDA, MPS = torch.device("cpu"), torch.device("cuda"), torch.device("mps")


@pytest.fixture
def cpu_bf16(monkeypatch):
    """cpu_bf16(True) fakes a CPU with native bf16 (AVX512_BF16, or `unit`="AMX"), False one without (AVX2,
    or an AVX-512 `capability` without bf16 units). oneDNN's own check says True on every AVX-512 CPU."""

    def fake(native, capability=None, unit="AVX512_BF16"):
        capability = capability or ("AVX512" if native else "AVX2")
        monkeypatch.setattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: capability.startswith("AVX512"))
        monkeypatch.setattr(torch.cpu, "_is_avx512_bf16_supported", lambda: native and unit == "AVX512_BF16")
        monkeypatch.setattr(torch.cpu, "_is_amx_tile_supported", lambda: native and unit == "AMX")
        monkeypatch.setattr(torch.backends.cpu, "get_cpu_capability", lambda: capability)

    return fake


@pytest.fixture
def gpu(monkeypatch):
    """gpu((7, 5)) fakes a CUDA GPU of that compute capability that claims bf16 support, as a T4 does."""

    def fake(capability):
        monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)  # emulation counts, here

    return fake


def test_cpu_without_native_bf16_trains_in_fp32_channels_last(cpu_bf16):
    cpu_bf16(False)
    for norm in ("bn", "ln", "gn"):
        p = hardware.choose_precision(CPU, norm)
        assert (p.amp, p.dtype, p.channels_last) == ("off", None, True)
        assert p.grad_scaler(CPU) is None
    assert "no native bf16 on this CPU (AVX2)" in p.describe() and p.describe().startswith("fp32, channels-last")


@pytest.mark.parametrize("native,capability,unit,amp,reason", [
    (False, "AVX2", None, "off", "no native bf16 on this CPU (AVX2)"),  # a laptop, Colab's older CPUs
    (False, "AVX512", None, "off", "no native bf16 on this CPU (AVX512)"),  # Skylake, Cascade Lake: emulated
    (True, "AVX512", "AVX512_BF16", "bf16", "native bf16 (AVX512_BF16) on this CPU (AVX512)"),  # Cooper Lake, Zen 4
    (True, "AVX512", "AMX", "bf16", "native bf16 (AMX) on this CPU (AVX512)"),  # Sapphire Rapids
])
def test_cpu_takes_bf16_only_from_avx512_bf16_or_amx_and_says_which(cpu_bf16, native, capability, unit, amp, reason):
    cpu_bf16(native, capability, unit)
    p = hardware.choose_precision(CPU, "bn")
    assert p.amp == amp and p.reason == reason and hardware.native_bf16(CPU) is native


def test_cpu_with_native_bf16_uses_bf16_and_nchw_for_groupnorm(cpu_bf16):
    cpu_bf16(True)
    chosen = {norm: hardware.choose_precision(CPU, norm) for norm in ("bn", "ln", "gn")}
    assert {p.dtype for p in chosen.values()} == {torch.bfloat16}
    assert {n: p.channels_last for n, p in chosen.items()} == {"bn": True, "ln": True, "gn": False}
    assert chosen["bn"].grad_scaler(CPU) is None


@pytest.mark.parametrize("capability,amp,dtype,scaler", [
    ((7, 5), "fp16", torch.float16, True),   # T4: bf16 is only emulated
    ((8, 0), "bf16", torch.bfloat16, False),  # A100
    ((9, 0), "bf16", torch.bfloat16, False),  # H100
])
@pytest.mark.filterwarnings("ignore:.*CUDA is not available")
def test_cuda_takes_bf16_only_from_compute_capability_8(gpu, capability, amp, dtype, scaler):
    gpu(capability)
    p = hardware.choose_precision(CUDA, "bn")
    assert (p.amp, p.dtype) == (amp, dtype)
    assert isinstance(p.grad_scaler(CUDA), torch.amp.GradScaler) == scaler
    assert not p.channels_last  # not measured on a GPU yet: PyTorch's default layout
    assert f"compute capability {capability[0]}.{capability[1]}" in p.describe()
    assert ("with a GradScaler" in p.describe()) == scaler


def test_mps_and_unknown_devices_stay_in_fp32():
    p = hardware.choose_precision(MPS, "bn")
    assert (p.amp, p.channels_last) == ("off", False)


@pytest.mark.parametrize("amp", ["bf16", "fp16", "off"])
def test_an_explicit_choice_overrides_the_hardware(cpu_bf16, gpu, amp):
    cpu_bf16(False)
    gpu((7, 5))
    assert hardware.choose_precision(CPU, "bn", amp).amp == amp
    assert hardware.choose_precision(CUDA, "bn", amp).amp == amp
    assert hardware.choose_precision(CPU, "bn", amp).reason == "asked for"
    assert hardware.choose_precision(CPU, "gn", "off", channels_last=False).channels_last is False


def test_the_lessons_name_a_records_precision_without_its_memory_layout():
    for layout in (True, False):
        described = hardware.Precision("bf16", layout, "native bf16 on this CPU (AVX512)").describe()
        assert ("channels-last" in described) == layout and ("NCHW" in described) != layout
        assert hardware.without_layout(described) == "bf16 autocast (native bf16 on this CPU (AVX512))"


def test_unknown_amp_is_refused():
    with pytest.raises(ValueError, match="unknown amp 'fp8'; use one of auto, bf16, fp16, off"):
        hardware.choose_precision(CPU, "bn", "fp8")


def test_fit_trains_in_the_precision_chosen(cpu_bf16, monkeypatch):
    """fit on a faked AVX2 CPU runs the model in fp32 channels-last, and logs the arithmetic and why."""
    cpu_bf16(False)
    seen, logged = [], []
    model = S8_model("gn")
    model.register_forward_pre_hook(lambda m, args: seen.append(
        (args[0].is_contiguous(memory_format=torch.channels_last), torch.is_autocast_enabled("cpu"))))
    cfg = recipes.TrainConfig(epochs=1, batch_size=32, pad=2)  # amp and layout left to the policy
    utils.fit(model, toy_data(64, 10), cfg, "cpu", hardware.choose_precision("cpu", "gn"), progress=False,
              log=logged.append)
    assert seen and set(seen) == {(True, False)}
    assert logged[0] == "precision: fp32 (no native bf16 on this CPU (AVX2))"  # the layout stays in the records


def test_fit_takes_fp16_with_a_scaler_when_asked(monkeypatch):
    steps = []
    real = torch.amp.GradScaler.step

    def step(self, optimizer, *a, **k):
        steps.append(self.get_scale())
        return real(self, optimizer, *a, **k)

    monkeypatch.setattr(torch.amp.GradScaler, "step", step)
    cfg = recipes.TrainConfig(epochs=1, **{**FAST, "amp": "fp16"})
    history = utils.fit(S8_model("bn"), toy_data(64, 10), cfg, "cpu", hardware.choose_precision("cpu", "bn", "fp16"),
                        progress=False, log=lambda s: None)
    assert len(steps) == 2 and history[0]["train_loss"] > 0


def test_describe_device_names_the_cpu_capability(cpu_bf16):
    cpu_bf16(False, "AVX2")
    assert "(AVX2)" in hardware.describe_device(CPU) and "threads" in hardware.describe_device(CPU)
