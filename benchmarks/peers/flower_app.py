"""Flower's side of ``flower.py``: the workload as a ServerApp and a ClientApp on Flower's
simulation engine (``run_simulation``, Ray backend), one actor per core.

    python benchmarks/peers/flower_app.py --devices 100 --cohort 10 --rounds 3 --out result.json

Writes the wall-clock time (``time.time()``) at which each round ended and the final test
accuracy. The server's FedAvg samples ``--cohort`` nodes a round (``fraction_train``) and tells
each which device of edgempi's cohort it plays that round (a simulated node keeps no state, so
which node plays a device does not matter); it weights each reply by its examples (all equal
here: every device trains ``local_steps`` full batches), so it is edgempi's plain mean. Flower's federated
evaluation is off (``fraction_evaluate=0``); the server evaluates the global model on the whole
test set before the first round and after the last, as edgempi does.
"""
from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch
from flower_client import client
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg
from flwr.simulation import run_simulation
from workload import RANKS, Workload


class CohortFedAvg(FedAvg):
    """Flower's FedAvg, whose k-th sampled node of round r trains edgempi's k-th device of round r."""

    def __init__(self, work: Workload, **kwargs: object) -> None:
        super().__init__(**kwargs)
        self.work = work

    def _construct_messages(self, record: RecordDict, node_ids: list[int], message_type: str) -> list[Message]:
        config = record[self.configrecord_key]
        if "server-round" not in config:
            return super()._construct_messages(record, node_ids, message_type)
        devices = self.work.cohort(int(config["server-round"]))
        return [Message(content=RecordDict({self.arrayrecord_key: record[self.arrayrecord_key],
                                            self.configrecord_key: ConfigRecord({**config, "device": device})}),
                        message_type=message_type, dst_node_id=node)
                for node, device in zip(node_ids, devices, strict=True)]


def server_app(devices: int, cohort: int, rounds: int, out: Path) -> ServerApp:
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        torch.set_num_threads(1)  # beside the two actors on two cores, as each edgempi rank has one
        work = Workload(devices, rounds, cohort=cohort)
        model = work.initial_model()
        ended: list[float] = []
        accuracy: dict[int, float] = {}
        ready: list[float] = []  # when the evaluation before round 1 ended

        def evaluate(round_index: int, arrays: ArrayRecord) -> MetricRecord | None:
            ended.append(time.time())  # called before round 1 and after every round
            if round_index not in (0, rounds):
                return None
            model.load_state_dict(arrays.to_torch_state_dict())
            accuracy[round_index] = work.accuracy(model)
            if round_index == 0:
                ready.append(time.time())
            return MetricRecord({"accuracy": accuracy[round_index]})

        strategy = CohortFedAvg(work, fraction_train=cohort / devices, fraction_evaluate=0.0, min_train_nodes=cohort,
                                min_available_nodes=devices)
        strategy.start(grid=grid, initial_arrays=ArrayRecord(model.state_dict()), num_rounds=rounds,
                       train_config=ConfigRecord({"rounds": rounds, "cohort": cohort}), evaluate_fn=evaluate)
        out.write_text(json.dumps({"ready": ready[0], "round_ends": ended[1:], "accuracy": accuracy[rounds]}))

    return server


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--devices", type=int, required=True)
    p.add_argument("--cohort", type=int, help="devices trained a round (default: all)")
    p.add_argument("--rounds", type=int, required=True)
    p.add_argument("--out", type=Path, required=True)
    args = p.parse_args()
    cohort = args.cohort or args.devices
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0}, "init_args": {"num_cpus": RANKS}}
    run_simulation(server_app(args.devices, cohort, args.rounds, args.out), client, num_supernodes=args.devices,
                   backend_config=backend)


if __name__ == "__main__":
    main()
