"""Flower's ClientApp for ``flower_app.py``: one device of the workload per message.

A module of its own (not ``__main__``) so that Ray's actors import it by name.
"""
from __future__ import annotations

from functools import lru_cache

import torch
from flwr.app import ArrayRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from workload import Workload

client = ClientApp()


@lru_cache(maxsize=1)
def actor_workload(devices: int, rounds: int, cohort: int) -> Workload:
    """Each Ray actor loads the data and partition once and keeps them for every client it plays."""
    torch.set_num_threads(1)
    return Workload(devices, rounds, cohort=cohort)


@client.train()
def train(msg: Message, context: Context) -> Message:
    """The device the server names trains one round from the global weights and sends its own back."""
    settings = msg.content["config"]
    work = actor_workload(int(context.node_config["num-partitions"]), int(settings["rounds"]), int(settings["cohort"]))
    model = work.initial_model()
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    device = int(settings["device"])
    loss = work.fit(model, device, int(settings["server-round"]))
    metrics = MetricRecord({"train_loss": loss, "num-examples": work.local_steps * work.loader(device).batch_size})
    return Message(RecordDict({"arrays": ArrayRecord(model.state_dict()), "metrics": metrics}), reply_to=msg)
