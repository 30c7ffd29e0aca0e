"""``mpiexec -n 4 python tests/fail_on_rank.py RANK STEP CONFIG ...``: the CLI, with a fault injected.

Raises inside the training step of one rank, as a real bug would, without a test hook in the
library itself. With ``FAULT_TIME_FILE`` set, the wall-clock time of the fault is written there
first, so a test can time the job's end from the fault rather than from its start-up.
"""
import os
import sys
import time

import torch.nn.functional as F

from edgempi import train
from edgempi.cli import main
from edgempi.comm import Comm

bad_rank, bad_step = int(sys.argv[1]), int(sys.argv[2])
calls = {"n": 0}


def faulty_loss(logits, target, **kw):
    calls["n"] += 1
    if Comm().rank == bad_rank and calls["n"] > bad_step:
        if "FAULT_TIME_FILE" in os.environ:
            with open(os.environ["FAULT_TIME_FILE"], "w") as f:
                f.write(repr(time.time()))
        raise RuntimeError(f"injected fault at step {bad_step}")
    return F.cross_entropy(logits, target, **kw)


train.F = type("F", (), {"cross_entropy": staticmethod(faulty_loss)})
sys.exit(main(sys.argv[3:]))
