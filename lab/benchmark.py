"""Training speed: each norm's step, the operations in it, and this suite's pipeline against the public one, in
sections in order of importance, so that --budget keeps the rows that matter most. See docs/speed.md#speed."""

import argparse
import contextlib
import time
from itertools import islice
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

import recipes
import utils
from atomic import write_text
from data import add_source_flags, load_cifar10
from hardware import AMP_CHOICES, choose_precision, describe_device, native_bf16, pick_device
from lab import results
from lab.results import LABELS
from models import S8_model


def public_pipeline_ips(data, norm, steps, batch_size=64, workers=2):
    """Images/s of the DataLoader + PIL transforms pipeline, fp32, after a warm-up."""
    import torchvision.transforms as T
    from PIL import Image
    from torch.utils.data import DataLoader, Dataset

    images, labels = data.train_images.permute(0, 2, 3, 1).numpy(), data.train_labels.tolist()
    transform = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                           T.Normalize(data.mean.tolist(), data.std.tolist())])

    class PILCIFAR(Dataset):  # what torchvision.datasets.CIFAR10 does per item
        def __len__(self):
            return len(labels)

        def __getitem__(self, i):
            return transform(Image.fromarray(images[i])), labels[i]

    torch.manual_seed(0)
    model = S8_model(norm)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)  # as public solutions do
    loader = DataLoader(PILCIFAR(), batch_size=batch_size,
                        shuffle=True, num_workers=workers, persistent_workers=True)
    seen, start = 0, None
    for step, (x, y) in enumerate(islice(loader, steps + 6)):
        if step == 5:  # warm-up done: workers started, first batches out
            seen, start = 0, time.perf_counter()
        loss = F.cross_entropy(model(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        seen += len(y)
    return seen / (time.perf_counter() - start)


def step_seconds(data, norm, device, precision, steps, batch_size=128, batched=None):
    """Seconds a training step of `norm`'s recipe takes over `steps` full batches, after as many to warm up."""
    part = data.subset(steps * batch_size, 1, seed=0).to(device)
    torch.manual_seed(0)
    model = S8_model(norm).to(device, memory_format=precision.memory_format)
    cfg = recipes.recipe(norm, batch_size=batch_size, epochs=2)
    optimizer, scheduler = recipes.make_optimizer(model, cfg, steps, batched)
    scaler = precision.grad_scaler(device)
    generator = torch.Generator(device=device).manual_seed(0)
    for _ in range(2):  # the first is the warm-up, the second is timed
        start = time.perf_counter()
        utils.train(model, part, optimizer, scheduler, cfg, generator, precision, progress=False, scaler=scaler)
    return (time.perf_counter() - start) / steps  # train ends by reading the loss: the device has finished


def operations_per_step(norm, batched, batch_size=128):
    """Top-level aten calls (views too) in one CPU training step of `norm`'s recipe, and those in its optimizer's."""
    torch.manual_seed(0)
    model = S8_model(norm)
    optimizer, scheduler = recipes.make_optimizer(model, recipes.recipe(norm, epochs=1), 10, batched)
    x, y = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    for counted in (False, True):  # the buffers are made on the first step; the second is counted
        with profile(activities=[ProfilerActivity.CPU]) if counted else contextlib.nullcontext() as prof:
            loss = F.cross_entropy(model(x), y, label_smoothing=0.1)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            scheduler.step()
    total = in_optimizer = 0
    for event in prof.events():
        parents, above = [], event.cpu_parent
        while above is not None:
            parents.append(above.name)
            above = above.cpu_parent
        if event.name.startswith("aten::") and not any(name.startswith("aten::") for name in parents):
            total += 1
            in_optimizer += any(name.startswith("Optimizer.step") for name in parents)
    return total, in_optimizer


HEAD = f"{'':44s} {'norm':9s} {'ms/step':>9s}  images/s  ratio"


def rows(measured):
    """A line for each (name, norm, seconds per step, batch size): its images/s and their ratio to the first row's."""
    first = None
    for name, norm, seconds, batch in measured:
        ips = batch / seconds
        first = first or ips
        yield f"{name:44s} {LABELS[norm]:9s} {1000 * seconds:9.2f}  {ips:8.0f}  {ips / first:.2f}x"


def sections(data, device, norms, args):
    """(title, column heads, lines) in order of importance; a line is measured only when the report asks for it."""
    cuda = device.type == "cuda"

    def timed(name, norm, amp=args.amp, channels_last=None, batch=128, batched=None):
        precision = choose_precision(device, norm, amp, channels_last)
        short = f"{'fp32' if precision.amp == 'off' else precision.amp} {'CL' if precision.channels_last else 'NCHW'}"
        return f"{name}, {short}", norm, step_seconds(data, norm, device, precision, args.steps, batch, batched), batch

    def per_norm(arms):  # for each norm, a row per (name, timed's options)
        for norm in norms:
            yield from rows(timed(name, norm, **options) for name, options in arms)

    def operations():
        for batched in (False, True):
            total, in_optimizer = operations_per_step("bn", batched)
            yield f"{'Muon batched' if batched else 'Muon per kernel':44s} {total:6d}  {in_optimizer:9d}"

    def public():
        for norm in norms:
            theirs = public_pipeline_ips(data, norm, args.public_steps)
            suite, _, seconds, batch = timed("suite: uint8, batch augment, bs128", norm)
            for name, ips in (("public: PIL, DataLoader x2, bs64, fp32", theirs), (suite, batch / seconds)):
                yield f"{name:44s} {LABELS[norm]:9s} {ips:9.0f}  {ips / theirs:.2f}x"

    yield "1. each norm's recipe, batch 128", HEAD, per_norm([("Muon per kernel", {"batched": False}),
                                                             ("Muon batched", {"batched": True})])
    yield "2. operations in one BatchNorm training step (profiler, CPU)", f"{'':44s} {'all':>6s}  optimizer", operations()
    if cuda:
        yield "3. BatchNorm, batch 512 against 128", HEAD, rows(timed(f"batch {b}", "bn", batch=b) for b in (128, 512))
        if native_bf16(device):
            yield "4. BatchNorm, fp16 against bf16", HEAD, rows(timed(amp, "bn", amp=amp) for amp in ("fp16", "bf16"))
    yield "5. memory layout", HEAD, per_norm([("layout", {"channels_last": cl}) for cl in (False, True)])
    if not cuda:  # the public pipeline feeds the model from CPU worker processes
        yield "6. the public pipeline against this suite's", f"{'':44s} {'norm':9s}  images/s  ratio", public()


def main(argv=None):
    p = argparse.ArgumentParser(prog="python -m lab.benchmark", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    add_source_flags(p)
    p.add_argument("--norms", default="bn,ln,gn")
    p.add_argument("--steps", type=int, default=40, help="timed training steps a row (after as many to warm up)")
    p.add_argument("--public-steps", type=int, default=150, help="timed steps of the public pipeline (batch 64)")
    p.add_argument("--amp", choices=AMP_CHOICES, default="auto", help="the suite's precision (default %(default)s)")
    p.add_argument("--budget", type=float, default=0, help="stop after this many seconds, keeping what was "
                                                            "measured (default: no limit)")
    p.add_argument("--report", default=None, help="default results/benchmark.txt (on CUDA results/benchmark_gpu.txt)")
    args = p.parse_args(argv)
    device = pick_device(args.device)
    report = Path(args.report or results.benchmark_path(gpu=device.type == "cuda"))
    deadline = time.perf_counter() + args.budget if args.budget else None
    data = load_cifar10(args.data, cache_dir=args.cache)
    lines = [f"python -m lab.benchmark on {describe_device(device)}, native bf16: {'yes' if native_bf16(device) else 'no'}, "
             f"torch {torch.__version__}, data {data.source}"]
    print(lines[0], flush=True)
    try:
        for title, head, section in sections(data, device, args.norms.split(","), args):
            lines += [f"\n{title}", head]
            print("\n".join(lines[-2:]), flush=True)
            for line in section:  # each line is measured as it is asked for
                lines.append(line)
                print(line, flush=True)
                if deadline and time.perf_counter() > deadline:
                    raise TimeoutError
    except TimeoutError:
        lines.append(f"(the budget of {args.budget:g} s is spent: stopped here)")
        print(lines[-1])
    if device.type != "cuda":
        lines.append("\nGPU: none on this machine")
    write_text(report, "\n".join(lines) + "\n")
    print(f"written to {report}")


if __name__ == "__main__":
    main()
