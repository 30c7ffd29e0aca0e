"""Progress of a run, shown by rank 0: a bar on a terminal, whole lines everywhere else.

Under ``mpiexec``, ``srun`` or in a Slurm log, stderr is a pipe or a file, so a bar would
never show. There a line is written at every evaluation and at least every ``every_s``
seconds in between::

    edgempi: step 120/2000 (6%), 0:00:35 elapsed, 3.43 steps/s, ETA 0:09:08, loss 0.512
    edgempi: step 200/2000 (10%), 0:00:58 elapsed, 3.45 steps/s, ETA 0:08:42, epoch 2.00, test_acc 81.20%,
             test_loss 0.5100, rounds 200, bytes up 1.2 MB, down 1.2 MB, control 0 B, total 2.4 MB

(the second is one line). Every line goes out in one write with its newline, so a stream
merged with stdout (``2>&1``, a Slurm ``.out``) never glues it to the next output.
"""
from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from typing import TextIO

from edgempi.util.units import describe_bytes, duration

EVERY_S = 10.0


def write_line(text: str, stream: TextIO | None = None) -> None:
    """Write ``text`` and its newline in one call, then flush: never split by other output."""
    stream = stream if stream is not None else sys.stderr
    stream.write(text.rstrip("\n") + "\n")
    stream.flush()


class Progress:
    """Steps done / total, elapsed time, rate and ETA of this session, on rank 0.

    ``enabled`` is False on other ranks and with ``--quiet``. ``start`` is the step a resumed
    run continues from. On a terminal a tqdm bar, with evaluation lines printed above it.
    """

    def __init__(self, enabled: bool, total: int, start: int = 0, stream: TextIO | None = None,
                 every_s: float = EVERY_S, clock: Callable[[], float] = time.monotonic) -> None:
        self.enabled, self.total, self.start, self.done = enabled, total, start, start
        self.stream = stream if stream is not None else sys.stderr
        self.every_s, self.clock = every_s, clock
        self.began = self.last_line = clock()
        self.loss_sum, self.loss_count = 0.0, 0
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(total=total, initial=start, unit="step", dynamic_ncols=True, file=self.stream)

    def step(self, loss: float) -> None:
        """One step done (``loss``: this rank's mean over its devices)."""
        if not self.enabled:
            return
        self.done += 1
        self.loss_sum, self.loss_count = self.loss_sum + loss, self.loss_count + 1
        if self.bar is not None:
            self.bar.update(1)
            self.bar.set_postfix(loss=f"{loss:.3f}", refresh=False)
        elif self.clock() - self.last_line >= self.every_s:
            loss_text = f", loss {self.loss_sum / self.loss_count:.3f}" if self.loss_count else ""
            self._line(self._where(self.done) + loss_text)

    def evaluated(self, row: Mapping[str, float], total: int | None = None) -> None:
        """An evaluation row (reduced over all devices): always a line."""
        if not self.enabled:
            return
        text = (f"{self._where(int(row['step']))}, epoch {row['epoch']:.2f}, test_acc {row['test_acc']:.2%}, "
                f"test_loss {row['test_loss']:.4f}, rounds {int(row['rounds'])}, {describe_bytes(row)}")
        if self.bar is not None:
            self.bar.write(f"edgempi: {text}", file=self.stream)
        else:
            self._line(text)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()

    def _where(self, done: int) -> str:
        """``step 120/2000 (6%), 0:00:35 elapsed, 3.43 steps/s, ETA 0:09:08`` after ``done`` steps."""
        elapsed = self.clock() - self.began
        ran = done - self.start
        rate = ran / elapsed if elapsed > 0 and ran > 0 else float("nan")
        eta = (self.total - done) / rate if rate == rate else float("nan")
        pct = 100 * done / self.total if self.total else 100.0
        rate_text = f"{rate:.3g} steps/s" if rate == rate else "-- steps/s"
        return (f"step {done}/{self.total} ({pct:.0f}%), {duration(elapsed)} elapsed, {rate_text}, "
                f"ETA {duration(eta)}")

    def _line(self, text: str) -> None:
        write_line(f"edgempi: {text}", self.stream)
        self.last_line = self.clock()
        self.loss_sum, self.loss_count = 0.0, 0
