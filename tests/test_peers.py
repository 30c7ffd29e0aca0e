"""benchmarks/peers: edgempi, Flower and pfl-research run one workload. Without the peers: the
edgempi command is that workload, its cohorts are edgempi's draw, and the Flower client's training
(edgempi's shards, batches, model and start, averaged as Flower's FedAvg does) ends where edgempi's
FedAvg ends. With Flower (the ``peers`` extra): a whole small comparison agrees on the accuracy.
With pfl (the ``pfl`` extra): pfl's users are edgempi's devices, batches, model and cohorts, and
pfl's FedAvg on them ends at edgempi's accuracy."""
from __future__ import annotations

import importlib.util
import json
import multiprocessing
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from helpers import FASHION, ROOT, load_script, self_comm

from edgempi import cohort as edgempi_cohort
from edgempi import config
from edgempi.train import Trainer, build, load_dataset

PEERS = ROOT / "benchmarks" / "peers"
sys.path.insert(0, str(PEERS))

import runs  # noqa: E402
from workload import CONFIG, RANKS, Workload, edgempi_command, overrides, workload_config  # noqa: E402

needs_fashion = pytest.mark.skipif(not FASHION.is_dir(),
                                   reason="Fashion-MNIST (Debian's dataset-fashion-mnist) is not installed")
needs_pfl = pytest.mark.skipif(importlib.util.find_spec("pfl") is None,
                               reason="pfl-research is not installed (extra: pfl; see benchmarks/docs/vs-pfl.md)")


def command_config(argv: list[str]) -> config.RunConfig:
    """The config ``edgempi run CONFIG --set ...`` in ``argv`` reads."""
    run = argv.index("run")
    sets = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--set"]
    return config.load(argv[run + 1], sets)


@pytest.mark.parametrize("devices", [10, 100, 1000])
def test_edgempi_command_runs_the_workload_flower_is_given(devices, tmp_path):
    argv = edgempi_command(devices, 3, tmp_path, mpiexec="mpiexec")
    assert argv[:3] == ["mpiexec", "-n", str(RANKS)] and argv[3:6] == [sys.executable, "-m", "edgempi"]
    ours = command_config(argv)
    assert ours.output.name == f"peers-{devices}"
    ours.output = workload_config(devices, 3).output
    assert ours == workload_config(devices, 3)
    d, t, a = ours.data, ours.train, ours.algorithm
    assert (d.name, d.partition, ours.model.name, ours.seed) == ("fashion-mnist", "iid", "lenet5", 0)
    assert (t.batch_size, t.optimizer, t.lr, t.momentum, t.weight_decay, t.schedule, t.warmup_steps) == \
        (32, "sgd", 0.05, 0.0, 0.0, "constant", 0)
    local = {10: 187, 100: 18, 1000: 1}[devices]  # one epoch: 6,000, 600 and 60 images in batches of 32
    assert (a.name, a.local_steps, a.participation, a.dropout) == ("fedavg", local, 1.0, 0.0)
    assert ours.parallel.devices_per_rank * RANKS == devices and t.steps == 3 * local and t.log_every == local


def test_a_device_count_the_ranks_do_not_divide_is_refused():
    with pytest.raises(config.ConfigError, match="7 devices"):
        overrides(7, 3)


@pytest.fixture
def one_thread():
    """One torch thread, as each rank and each Flower actor has (two threads on a loaded
    2-core machine make LeNet-5's step about 20 times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@needs_fashion
@pytest.mark.parametrize("devices, cohort", [(2, None), (4000, 2)])
def test_flower_clients_averaged_end_where_edgempi_fedavg_ends(one_thread, devices, cohort):
    """Two rounds of 10 steps: what the Flower client computes per device, averaged with equal
    weights (every reply counts the same examples), equals edgempi's run in this process; with
    4,000 devices a shard holds 15 images, trained as one batch at each step, as edgempi does."""
    cfg = config.load(CONFIG, overrides(devices, 2, ranks=1, cohort=cohort, local_steps=10))  # all on this rank
    dataset = load_dataset(cfg)
    setup = build(cfg, self_comm(), dataset)
    outcome = Trainer(setup, self_comm()).run()
    work = Workload(devices, 2, dataset, cohort=cohort, local_steps=10)
    assert work.cfg.train == cfg.train and work.cfg.algorithm == cfg.algorithm
    model = work.initial_model()
    for round_index in (1, 2):
        states = []
        for device in work.cohort(round_index):
            local = work.initial_model()
            local.load_state_dict(model.state_dict())
            work.fit(local, device, round_index)
            states.append(local.state_dict())
        model.load_state_dict({k: (states[0][k] + states[1][k]) / 2 for k in states[0]})
    ours = torch.cat([p.detach().flatten() for p in model.parameters()])
    theirs = outcome.storage[0, :ours.numel()]
    assert not torch.equal(ours, torch.cat([p.detach().flatten() for p in work.initial_model().parameters()]))
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert work.accuracy(model) == pytest.approx(outcome.evals[-1]["test_acc"], abs=1e-4)


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def test_a_measured_command_leaves_nothing_running(tmp_path, monkeypatch):
    """A child that outlives the command (as Ray's actors do) is counted, then ended."""
    monkeypatch.setattr(runs, "GRACE_S", 0.5)
    script = "import subprocess; print(subprocess.Popen(['sleep', '60']).pid, flush=True)"
    started = time.monotonic()
    launched, ended, lines, (rss, pss, _) = runs.launch([sys.executable, "-c", script], {}, tmp_path / "log")
    orphan = int(lines[0][1])
    assert ended >= launched and time.monotonic() - started < 30
    assert rss >= pss > 0
    assert not alive(orphan)


def peers_main(*args: str) -> int:
    """``flower.py ARGS`` in this process (it needs no Flower for a dry run or a refusal)."""
    try:
        return load_script(PEERS / "flower.py").main(list(args))
    except SystemExit as exc:
        return exc.code


def test_dry_run_prints_every_command_and_bad_input_is_one_line(capsys):
    assert peers_main("--devices", "10", "1000", "--rounds", "3", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 6 and "parallel.devices_per_rank=500" in lines[3] and "flower_app.py" in lines[4]
    assert "torch.distributed.run" in lines[5] and "--nproc_per_node=2" in lines[5] and "pfl_app.py" in lines[5]
    assert peers_main("--devices", "100", "--cohort", "10", "--engines", "edgempi", "pfl", "--dry-run") == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and "algorithm.cohort=10" in lines[0] and "--cohort 10" in lines[1]
    for bad in (["--devices", "7"], ["--rounds", "1"], ["--devices", "x"], ["--devices", "10", "--cohort", "11"],
                ["--devices", "10", "--cohort", "3"]):
        assert peers_main(*bad) == 2
        err = capsys.readouterr().err
        assert len(err.splitlines()) == 1 and "error" in err, err


def test_the_table_gives_ready_directly_and_no_ratio_for_a_start_up_rounds_swamp():
    flower = load_script(PEERS / "flower.py")
    # Flower's round 1 (120 s) is shorter than its later rounds (150 s): round 1 less a round is < 0
    measured = [runs.Run("edgempi", 8, 100.0, 103.0, [110.0, 116.0, 122.0], 123.0, 0.5, 2 * 10**9, 10**9, 1.0),
                runs.Run("flower", 8, 200.0, 209.0, [320.0, 470.0, 620.0], 621.0, 0.5, 4 * 10**9, 3 * 10**9, 1.5)]
    row = flower.table(measured, [8], {8: [1.9, 1.7, 2.4]}).splitlines()[2].split(" | ")
    assert row[1:5] == ["Flower", "3.0 / 9.0 (3.0×)", "4.0 / -30.0 (–)", "6 / 150 (25.0×)"]
    assert row[5:7] == ["2.00 / 4.00 (2.0×)", "1.00 / 3.00 (3.0×)"]
    assert row[8] == "1.9"  # the import of torch on two ranks, median of the repeats
    measured.append(runs.Run("pfl", 8, 300.0, 301.0, [302.0, 302.1, 302.2], 303.0, 0.5, 10**9, 10**9, 1.0))
    row = flower.table(measured, [8], {8: [1.9]}).splitlines()[3].split(" | ")
    assert row[1] == "pfl" and row[4] == "6 / 0.1 (0.02×)"  # a peer faster than edgempi: two decimals


@needs_fashion
@pytest.mark.skipif(importlib.util.find_spec("flwr") is None, reason="Flower is not installed (extra: peers)")
def test_flower_and_edgempi_reach_the_same_accuracy():
    argv = [sys.executable, str(PEERS / "flower.py"), "--devices", "2", "--rounds", "2", "--repeats", "1",
            "--engines", "edgempi", "flower"]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "| 2 |" in proc.stdout
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    measured = [m for m in lines if "engine" in m]
    assert sorted(m["engine"] for m in measured) == ["edgempi", "flower"]
    imports = [m["import_torch_s"] for m in lines if "import_torch_s" in m]
    assert len(imports) == 1 and 0 < imports[0] < 120, lines
    assert all(0 < m["ready_s"] < m["first_round_s"] for m in measured), measured


def test_a_cohort_is_edgempis_cohort_sampling():
    argv = edgempi_command(100, 3, Path("OUT"), cohort=10)
    cfg = command_config(argv)
    assert cfg.algorithm.cohort == 10 and cfg.algorithm.participation == 1.0 and cfg.parallel.devices_per_rank == 50
    assert not any("algorithm.cohort" in a for a in edgempi_command(100, 3, Path("OUT")))  # no cohort: everyone
    with pytest.raises(config.ConfigError, match="cohort"):
        overrides(100, 3, cohort=101)


@needs_fashion
def test_the_cohorts_and_round_batches_are_edgempis():
    """The peers are told edgempi's draw and given the batches edgempi's devices train on."""
    work = Workload(100, 3, cohort=10)
    for round_index in (1, 2, 3):
        members = edgempi_cohort.draw(work.cfg.seed, 100, 10, round_index - 1)
        assert work.cohort(round_index) == members.tolist() and len(work.cohort(round_index)) == 10
    assert work.cohort(1) != work.cohort(2)
    assert Workload(4, 2).cohort(1) == [0, 1, 2, 3]
    x, y = work.round_batches(7, 2)
    loader, b = work.loader(7), work.cfg.train.batch_size
    assert len(y) == work.local_steps * b
    for k, step in enumerate(range(work.local_steps, 2 * work.local_steps)):
        bx, by = loader.batch(step)
        assert torch.equal(x[k * b:(k + 1) * b], bx) and torch.equal(y[k * b:(k + 1) * b], by)


@pytest.fixture
def pfl_app():
    """``pfl_app.py`` imported; importing pfl's torch ops makes forkserver the default start
    method of this whole process, which is put back afterwards for the other tests."""
    before = multiprocessing.get_start_method(allow_none=True)
    yield load_script(PEERS / "pfl_app.py")
    multiprocessing.set_start_method(before, force=True)


@needs_fashion
@needs_pfl
def test_pfl_users_are_edgempis_devices_model_and_cohorts(pfl_app):
    """pfl's federated dataset hands out, round by round, edgempi's cohort with the batches each
    device trains on, and its model is edgempi's LeNet-5 from edgempi's start."""
    app, work = pfl_app, Workload(100, 2, cohort=10)
    module = app.pfl_module(work)
    start = work.initial_model()
    assert type(module) is type(start) and sum(p.numel() for p in module.parameters()) == 61_706
    for ours, theirs in zip(module.state_dict().values(), start.state_dict().values(), strict=True):
        assert torch.equal(ours, theirs)
    x, y = next(iter(work.round_batches(0, 1)[0].split(32))), work.round_batches(0, 1)[1][:32]
    assert module.loss(x, y).item() == pytest.approx(torch.nn.functional.cross_entropy(start(x), y).item(), abs=1e-6)
    dataset = app.federated_dataset(work, 2)
    for round_index in (1, 2):
        users = [next(dataset) for _ in work.cohort(round_index)]
        assert [u.user_id for u, _ in users] == [(d, round_index) for d in work.cohort(round_index)]
        rx, ry = work.round_batches(*users[3][0].user_id)
        assert torch.equal(users[3][0].raw_data[0], rx) and torch.equal(users[3][0].raw_data[1], ry)


@needs_fashion
@needs_pfl
@pytest.mark.parametrize("devices", [4, 4000])
def test_pfl_fedavg_on_a_cohort_ends_at_edgempis_accuracy(one_thread, pfl_app, tmp_path, devices):
    """A cohort of two, two rounds of 10 steps: pfl (one process) ends at edgempi's model and accuracy;
    with 4,000 devices a shard holds 15 images, trained as one batch at each step, as edgempi does."""
    cfg = config.load(CONFIG, overrides(devices, 2, ranks=1, cohort=2, local_steps=10))
    outcome = Trainer(build(cfg, self_comm(), load_dataset(cfg)), self_comm()).run()
    model = pfl_app.run(devices, 2, 2, tmp_path / "pfl.json", local_steps=10)
    ours = torch.cat([p.detach().flatten() for p in model.parameters()])
    torch.testing.assert_close(ours, outcome.storage[0, :ours.numel()], rtol=0, atol=1e-5)
    result = json.loads((tmp_path / "pfl.json").read_text())
    assert len(result["round_ends"]) == 2 and result["ready"] <= result["round_ends"][0]
    assert result["accuracy"] == pytest.approx(outcome.evals[-1]["test_acc"], abs=1e-4)
