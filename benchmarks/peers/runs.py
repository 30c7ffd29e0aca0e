"""One measured command: started in a session of its own, its output lines timestamped, the
memory of every process of that session sampled from /proc, and nothing of it left running.

A session and its descendants, not only a process tree: Ray's actors outlive the driver that
started them (they are re-parented to init when it exits), but they keep its session id, so
they are both counted and ended here.
"""
from __future__ import annotations

import os
import signal
import statistics
import subprocess
import threading
import time
from dataclasses import dataclass
from pathlib import Path

SAMPLE_S = 0.25
GRACE_S = 5.0  # for a command's leftovers to exit on their own before they are ended


@dataclass
class Run:
    """What one run of one engine measured; times are ``time.time()`` seconds."""

    engine: str
    devices: int
    launched: float
    ready: float  # the evaluation before round 1 has ended
    round_ends: list[float]
    ended: float
    accuracy: float
    peak_rss: int  # bytes
    peak_pss: int
    load: float  # the 1-minute load average when the run began

    def summary(self) -> dict[str, float | str]:
        rounds = [b - a for a, b in zip(self.round_ends, self.round_ends[1:])]
        steady = statistics.median(rounds)
        return {"engine": self.engine, "devices": self.devices, "rounds": len(self.round_ends),
                "ready_s": self.ready - self.launched,
                "startup_s": self.round_ends[0] - self.launched - steady,
                "first_round_s": self.round_ends[0] - self.launched,
                "s_per_round": steady, "total_s": self.ended - self.launched, "accuracy": self.accuracy,
                "peak_rss_gb": self.peak_rss / 1e9, "peak_pss_gb": self.peak_pss / 1e9, "load": self.load}


def session_pids(sid: int) -> list[int]:
    """Every live process of session ``sid`` and every descendant of one (MPICH's proxy and
    ranks each start a session of their own; Ray's orphaned actors keep the driver's)."""
    parents: dict[int, int] = {}
    members = set()
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()  # after the name: state ppid pgrp session
        parents[int(entry.name)] = int(fields[1])
        if int(fields[3]) == sid:
            members.add(int(entry.name))
    grew = True
    while grew:
        grown = {pid for pid, parent in parents.items() if parent in members} - members
        members |= grown
        grew = bool(grown)
    return sorted(members)


def memory(pids: list[int]) -> tuple[int, int]:
    """Summed (RSS, PSS) in bytes of ``pids`` (from smaps_rollup; a process gone meanwhile counts 0)."""
    rss = pss = 0
    for pid in pids:
        try:
            text = Path(f"/proc/{pid}/smaps_rollup").read_text()
        except OSError:
            continue
        for line in text.splitlines():
            if line.startswith("Rss:"):
                rss += int(line.split()[1]) * 1024
            elif line.startswith("Pss:"):
                pss += int(line.split()[1]) * 1024
    return rss, pss


class PeakMemory(threading.Thread):
    """The largest summed RSS and PSS of a session, sampled until :meth:`stop`."""

    def __init__(self, sid: int) -> None:
        super().__init__(daemon=True)
        self.sid, self.rss, self.pss = sid, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            rss, pss = memory(session_pids(self.sid))
            self.rss, self.pss = max(self.rss, rss), max(self.pss, pss)
            self.done.wait(SAMPLE_S)

    def stop(self) -> tuple[int, int]:
        self.done.set()
        self.join()
        return self.rss, self.pss


def end_session(sid: int) -> None:
    """Wait a little for what the command left behind, then end it: SIGTERM, then SIGKILL."""
    deadline = time.monotonic() + GRACE_S
    while session_pids(sid) and time.monotonic() < deadline:
        time.sleep(0.1)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in session_pids(sid):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        time.sleep(1.0)


Measured = tuple[float, float, list[tuple[float, str]], tuple[int, int, float]]


def launch(argv: list[str], env: dict[str, str], log: Path) -> Measured:
    """Run ``argv`` to its end: (launched, ended, timestamped output lines, (peak RSS, peak PSS, load)).

    ``ended`` is when the command itself exited, before its leftovers are waited for. A
    non-zero exit raises RuntimeError naming the log.
    """
    load = os.getloadavg()[0]
    lines: list[tuple[float, str]] = []
    launched = time.time()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env,
                            start_new_session=True)
    sampler = PeakMemory(proc.pid)
    sampler.start()
    reader = threading.Thread(target=lambda: lines.extend((time.time(), text) for text in proc.stdout), daemon=True)
    reader.start()
    code = proc.wait()
    ended = time.time()
    end_session(proc.pid)
    peak = sampler.stop()
    reader.join(timeout=GRACE_S)
    log.write_text("".join(text for _, text in lines))
    if code != 0:
        raise RuntimeError(f"{Path(argv[0]).name} ... exited {code}; its output is in {log}")
    return launched, ended, lines, (*peak, load)
