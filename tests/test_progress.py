"""Progress lines: whole lines on a pipe at least every ``every_s`` seconds and at every
evaluation, with steps done / total, elapsed time, rate and ETA; a bar on a terminal.

A fake clock drives the time, so nothing here depends on how fast the machine is.
"""
from __future__ import annotations

import io

from edgempi.util.progress import Progress, write_line
from edgempi.util.units import byte_counts, describe_bytes, duration, human_bytes


class Pipe(io.StringIO):
    """A non-terminal stream that remembers every write call."""

    def __init__(self, tty: bool = False) -> None:
        super().__init__()
        self.writes: list[str] = []
        self.tty = tty

    def write(self, text: str) -> int:
        self.writes.append(text)
        return super().write(text)

    def isatty(self) -> bool:
        return self.tty


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


ROW = {"step": 40, "epoch": 0.5, "test_acc": 0.8123, "test_loss": 0.51, "rounds": 40, "bytes_up": 2.5e6,
       "bytes_down": 2.5e6, "ctrl_bytes": 4000.0}


def test_a_line_is_one_write_with_its_newline() -> None:
    pipe = Pipe()
    write_line("edgempi: step 1/2", pipe)
    write_line("results/x.h5\n", pipe)
    assert pipe.writes == ["edgempi: step 1/2\n", "results/x.h5\n"]


def test_lines_come_every_interval_with_rate_and_eta() -> None:
    pipe, clock = Pipe(), Clock()
    progress = Progress(True, 100, stream=pipe, every_s=10, clock=clock)
    for _ in range(9):  # 9 s: no line yet
        clock.now += 1
        progress.step(0.5)
    assert pipe.writes == []
    clock.now += 1
    progress.step(0.7)
    (line,) = pipe.writes
    assert line == "edgempi: step 10/100 (10%), 0:00:10 elapsed, 1 steps/s, ETA 0:01:30, loss 0.520\n"
    for _ in range(9):
        clock.now += 1
        progress.step(0.5)
    assert len(pipe.writes) == 1  # the interval restarts at each line
    clock.now += 1
    progress.step(0.5)
    assert len(pipe.writes) == 2 and pipe.writes[1].startswith("edgempi: step 20/100 (20%), 0:00:20 elapsed")


def test_every_evaluation_is_a_line_with_all_four_byte_counts() -> None:
    pipe, clock = Pipe(), Clock()
    progress = Progress(True, 80, stream=pipe, every_s=10, clock=clock)
    for _ in range(40):
        clock.now += 0.1
        progress.step(0.5)
    progress.evaluated(ROW, 80)
    (line,) = pipe.writes
    assert line.startswith("edgempi: step 40/80 (50%), 0:00:04 elapsed, 10 steps/s, ETA 0:00:04, epoch 0.50, "
                           "test_acc 81.23%, test_loss 0.5100, rounds 40, ")
    assert line.endswith("bytes up 2.5 MB, down 2.5 MB, control 4 kB, total 5 MB\n")
    assert line.count("\n") == 1


def test_a_resumed_run_counts_from_its_step() -> None:
    pipe, clock = Pipe(), Clock()
    progress = Progress(True, 100, start=60, stream=pipe, every_s=10, clock=clock)
    clock.now += 20
    progress.step(0.1)
    assert pipe.writes[0].startswith("edgempi: step 61/100 (61%), 0:00:20 elapsed, 0.05 steps/s, ETA 0:13:00")


def test_disabled_progress_writes_nothing() -> None:
    pipe, clock = Pipe(), Clock()
    progress = Progress(False, 10, stream=pipe, every_s=0, clock=clock)
    progress.step(0.1)
    progress.evaluated(ROW, 10)
    progress.close()
    assert pipe.writes == []


def test_a_terminal_gets_a_bar_and_evaluations_above_it() -> None:
    tty = Pipe(tty=True)
    progress = Progress(True, 50, stream=tty)
    progress.step(0.3)
    progress.evaluated(ROW, 50)
    progress.close()
    text = tty.getvalue()
    assert "| 1/50 [" in text and "step/s" in text and "loss=0.300" in text
    assert "edgempi: step 40/50" in text and "total 5 MB" in text


def test_byte_vocabulary() -> None:
    assert byte_counts({"bytes_up": 1, "bytes_down": 2}) == {"up": 1, "down": 2, "control": 0, "total": 3}
    assert describe_bytes({"bytes_up": 1500, "bytes_down": 0, "ctrl_bytes": 8}) == \
        "bytes up 1.5 kB, down 0 B, control 8 B, total 1.51 kB"
    assert human_bytes(999) == "999 B" and human_bytes(5.55e9) == "5.55 GB"
    assert duration(3725.2) == "1:02:05" and duration(float("nan")) == "--:--"
