"""Atomic file writes: each file is written to a temp file beside its target and renamed into
place, so an interrupted run never leaves half a file and never loses what was saved before."""

import json
import os
import tempfile
from pathlib import Path

import torch


def write_atomically(path, write):
    """Call write(temp path) beside `path`, then rename the temp file into place; returns `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def write_text(path, text):
    return write_atomically(path, lambda tmp: tmp.write_text(text))


def write_json(path, obj):
    return write_text(path, json.dumps(obj, indent=1) + "\n")


def torch_save(obj, path):
    write_atomically(path, lambda tmp: torch.save(obj, tmp))


def save_figure(fig, path):
    # No 'Software' stamp and no dates in a PNG: the same run gives the same bytes.
    write_atomically(path, lambda tmp: fig.savefig(tmp, format="png", dpi=100, metadata={"Software": None}))


def ensure_writable(out):
    """Create the folder `out` and prove a file can be written there, before any training."""
    try:
        Path(out).mkdir(parents=True, exist_ok=True)
        handle, probe = tempfile.mkstemp(dir=out, prefix=".write-test-")
        os.close(handle)
        os.unlink(probe)
    except OSError as err:
        raise ValueError(f"--out {out} is not a folder this run can write to ({err.strerror or err}); "
                         f"choose another with --out") from None
