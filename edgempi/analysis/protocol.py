"""Which model a run's evaluations scored, and the sync that "bytes to target" must charge for it.

``global`` runs scored a model their method produced and paid for (the model of the last sync,
or the one model all devices share). ``average`` runs scored the devices' current average, an
exchange no method made: at an evaluation that did not fall on a full sync, the cost to target
includes the one weight sync (``sync_bytes`` up and down, one round) that would produce it.
Runs scored differently answer different questions, so tables and figures refuse to mix them.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from edgempi.analysis.runs import Run

DESCRIBED = {"global": "the model each method produced (its last sync)",
             "average": "the devices' average, charged one weight sync where none had happened"}


def eval_model(run: Run) -> str:
    """``global`` or ``average``; files written before the attribute existed scored the
    devices' average wherever the devices held models of their own."""
    stored = run.attrs.get("eval_model")
    if stored:
        return str(stored)
    return "global" if run.attrs.get("evaluated_model", "shared model") == "shared model" else "average"


def check_same(runs: Sequence[Run], mixed: bool) -> None:
    """A one-line refusal (ValueError) for runs scored on different models, unless ``mixed``."""
    kinds = {eval_model(r) for r in runs}
    if len(kinds) > 1 and not mixed:
        example = {eval_model(r): r.name for r in runs}
        raise ValueError("eval_model: these runs scored different models (global: "
                         f"{example['global']}, average: {example['average']}); compare runs of one "
                         "train.eval_model, or pass --mixed-eval to show them together")


def full_sync_steps(run: Run) -> set[float]:
    """Steps after which every device held the same, freshly synced model (/syncs rows where
    somebody reported and, for Kamp's balancing, the whole set was averaged)."""
    syncs = run.tables.get("syncs", {})
    steps = np.asarray(syncs.get("step", ()), dtype=float)
    full = np.ones(len(steps), dtype=bool)
    if "participants" in syncs:
        full &= np.asarray(syncs["participants"], dtype=float)[:len(steps)] > 0
    if "averaged" in syncs:
        averaged = np.asarray(syncs["averaged"], dtype=float)[:len(steps)]
        full &= ~np.isfinite(averaged) | (averaged >= float(run.attrs.get("devices", 0)))
    return set(steps[full].tolist())


def charges(run: Run) -> tuple[np.ndarray, np.ndarray]:
    """(rounds, bytes per direction) to add at each /evals row: one weight sync at the
    evaluations of an ``average`` run that fell between syncs (or after none), else nothing."""
    steps = np.asarray(run.evals.get("step", ()), dtype=float)
    sync_bytes = int(run.attrs.get("sync_bytes", 0))
    if eval_model(run) != "average" or not sync_bytes:
        return np.zeros(len(steps)), np.zeros(len(steps))
    synced = full_sync_steps(run) | {0.0}
    between = np.array([s not in synced for s in steps.tolist()], dtype=float)
    return between, between * sync_bytes


# What a charged sync adds to each cost axis, in units of (rounds, bytes per direction).
CHARGED = {"round": (1, 0), "bytes_up": (0, 1), "bytes_down": (0, 1), "bytes": (0, 2)}


def charged(run: Run, name: str) -> np.ndarray:
    """The charge of axis ``name`` at each /evals row (zeros for axes a sync does not move)."""
    rounds, sent = charges(run)
    per_round, per_byte = CHARGED.get(name, (0, 0))
    return per_round * rounds + per_byte * sent
