"""Run the notebooks under nbval in their short configuration unless told otherwise.

The kernel nbval starts inherits this process's environment, where the notebooks' config
cells read S8_EPOCHS, S8_SUBSET and S8_DATA.
"""

import os
from pathlib import Path

OFFLINE_COPY = Path(__file__).resolve().parent.parent / "shared" / "data" / "cifar10-jpg.tar.gz"

# Under pytest-xdist each worker (and the notebook kernels it starts) takes one thread: the workers
# share the cores instead of fighting over them.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("S8_EPOCHS", "1")
os.environ.setdefault("S8_SUBSET", "500")
os.environ.setdefault("S8_SHORT_IMAGES", "100")  # the lessons' exercises
os.environ.setdefault("S8_SHORT_EPOCHS", "1")
os.environ.setdefault("S8_WATCH_STEPS", "3")
os.environ.setdefault("S8_NETWORK_EPOCHS", "1")
if OFFLINE_COPY.is_file():
    os.environ.setdefault("S8_DATA", str(OFFLINE_COPY))
