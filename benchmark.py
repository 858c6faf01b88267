"""Training throughput: this suite's pipeline against the one public solutions use.

    python benchmark.py --data ../shared/data/cifar10-jpg.tar.gz

Public pipeline: torchvision transforms on PIL images (RandomCrop with padding 4,
RandomHorizontalFlip, ToTensor, Normalize) in a DataLoader with two workers, batch 64, fp32, plain SGD.
This suite: uint8 tensors in memory, whole-batch augmentation, batch 128, and the precision and
memory layout hardware.py chooses for this machine and norm (bf16 autocast only where the CPU has
native bf16; --amp forces one), with the norm's recipe and convs (Muon for the conv kernels, and
Weight Standardization for GroupNorm).
Prints images per second, seconds per 50,000-image epoch and the ratio to the public pipeline; on a
GPU also the time for 20 epochs of each norm. Writes the report to --report (default results/benchmark.txt).
"""

import argparse
import time

import torch
import torch.nn.functional as F

import results
import utils
from atomic import write_text
from data import load_cifar10
from hardware import AMP_CHOICES, choose_precision, describe_device, native_bf16
from models import ModelConfig, S8_model
from results import LABELS, NORMS


# The pipeline column fits the longest name ("suite: ..., bf16 NCHW, muon, ws" is 55 characters).
NAME_WIDTH = 56

def public_pipeline_ips(data, norm, steps, batch_size=64, workers=2):
    """Images/s of the DataLoader + PIL transforms pipeline, fp32, after a warm-up."""
    import torchvision.transforms as T
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    mean, std = data.mean.tolist(), data.std.tolist()

    class PILCIFAR(Dataset):  # what torchvision.datasets.CIFAR10 does per item
        def __init__(self, images, labels):
            self.images, self.labels = images.permute(0, 2, 3, 1).numpy(), labels.tolist()
            self.transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(),
                                        T.ToTensor(), T.Normalize(mean, std)])

        def __len__(self):
            return len(self.labels)

        def __getitem__(self, i):
            return self.transform(Image.fromarray(self.images[i])), self.labels[i]

    torch.manual_seed(0)
    model = S8_model(norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)  # as public solutions do
    loader = DataLoader(PILCIFAR(data.train_images, data.train_labels), batch_size=batch_size,
                        shuffle=True, num_workers=workers, persistent_workers=True)
    model.train()
    seen, start = 0, None
    for step, (x, y) in enumerate(loader):
        if step == 5:  # warm-up done: workers started, first batches out
            seen, start = 0, time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
        if step == steps + 5:
            break
    return seen / (time.perf_counter() - start)


def suite_ips(data, norm, images, device, cfg, precision):
    """Images/s of utils.train on `images` training images with `cfg` in `precision`, after a warm-up epoch."""
    part = data.subset(images, 1, seed=0).to(device)
    torch.manual_seed(0)
    model = S8_model(norm).to(device, memory_format=precision.memory_format)
    steps = -(-images // cfg.batch_size)
    optimizer, scheduler = utils.make_optimizer(model, cfg, steps_per_epoch=2 * steps)
    generator = torch.Generator(device=device).manual_seed(0)
    utils.train(model, part, optimizer, scheduler, cfg, generator, precision, progress=False)  # warm-up
    start = time.perf_counter()
    utils.train(model, part, optimizer, scheduler, cfg, generator, precision, progress=False)
    return images / (time.perf_counter() - start)


def gpu_twenty_epochs(data, device, amp="auto"):
    """Seconds to train each norm for 20 epochs on the GPU, from data already decoded."""
    gpu_data = data.to(device)
    times = {}
    for norm in NORMS:
        cfg = utils.recipe(norm, batch_size=512, lr=0.1, amp=amp)
        torch.manual_seed(0)
        model = S8_model(norm)
        torch.cuda.synchronize()
        start = time.perf_counter()
        precision = choose_precision(device, norm, cfg.amp, cfg.channels_last)
        history = utils.fit(model, gpu_data, cfg, device, precision, progress=False, log=lambda s: None)
        torch.cuda.synchronize()
        times[norm] = (time.perf_counter() - start, history[-1]["test_acc"])
    return times


def _short(precision):
    """'fp32 CL', 'bf16 NCHW': the precision and layout in a table cell."""
    return f"{'fp32' if precision.amp == 'off' else precision.amp} {'CL' if precision.channels_last else 'NCHW'}"


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="data", help="CIFAR-10 source (see run.py --help)")
    p.add_argument("--norms", default="bn,ln,gn")
    p.add_argument("--steps", type=int, default=150, help="timed steps of the public pipeline (batch 64)")
    p.add_argument("--images", type=int, default=12800, help="timed images of this suite's pipeline")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto", help="the suite's precision (default %(default)s)")
    p.add_argument("--report", default=str(results.benchmark_path()))
    args = p.parse_args(argv)

    data = load_cifar10(args.data)
    cpu = torch.device("cpu")
    lines = [f"benchmark.py on {describe_device(cpu)}, native bf16: {'yes' if native_bf16(cpu) else 'no'}, "
             f"torch {torch.__version__}, data {data.source}",
             f"{'pipeline':{NAME_WIDTH}s} {'norm':9s}  images/s  s/epoch(50k)  ratio"]
    print(lines[0] + "\n" + lines[1])
    for norm in args.norms.split(","):
        rows = [("public: PIL transforms, DataLoader x2, bs64, fp32", public_pipeline_ips(data, norm, args.steps))]
        cfg = utils.recipe(norm, amp=args.amp)
        precision = choose_precision(cpu, norm, cfg.amp, cfg.channels_last)
        rows.append((f"suite: uint8, batch augment, bs128, {_short(precision)}, muon"
                     + (", ws" if ModelConfig(norm=norm).conv == "ws" else ""), suite_ips(data, norm, args.images, cpu, cfg, precision)))
        for name, ips in rows:
            lines.append(f"{name:{NAME_WIDTH}s} {LABELS[norm]:9s} {ips:9.0f}  {50000 / ips:12.1f}  {ips / rows[0][1]:.2f}x")
            print(lines[-1], flush=True)
    if torch.cuda.is_available():
        device = torch.device("cuda")
        precision = choose_precision(device, None, args.amp)
        lines.append(f"GPU {describe_device(device)}: 20 epochs each, batch 512, data decoded and on the GPU, "
                     f"{precision.describe()}")
        total = 0.0
        for norm, (seconds, acc) in gpu_twenty_epochs(data, device, args.amp).items():
            total += seconds
            lines.append(f"  {LABELS[norm]:9s} {seconds:7.1f} s  (final test accuracy {acc:.2f}%)")
        lines.append(f"  all three {total:7.1f} s")
        print("\n".join(lines[-4:]))
    else:
        lines.append("GPU: none on this machine")
    write_text(args.report, "\n".join(lines) + "\n")
    print(f"written to {args.report}")


if __name__ == "__main__":
    main()
