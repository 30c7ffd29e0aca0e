"""Speed and ratio of every compressor on a ResNet-18-sized and a LeNet-5-sized gradient.

    OMP_NUM_THREADS=1 PYTHONPATH=. python benchmarks/micro/compression.py [--repeats 5]

Times compress and decompress (into a kept buffer, as the exchange does; median over
repeats, after one warm-up call) of each compressor on one device, and the compression ratio 4·d / payload bytes.
For the compressors exchanged by Allgather it also times what each device does after it: the
mean of ``--devices`` (4) devices' payloads (``mean_rows_`` / ``mean_payloads_``); for every
compressor, error feedback's residual acc − sent (``residual_into``). The DGC-style
``topk`` selection is compared with ``torch.topk`` at the same density in the same run; the
script exits with status 1 if it is not at least ``--min-speedup`` (5) times faster.
"""
from __future__ import annotations

import argparse
import math
import statistics
import sys
import time
from collections.abc import Callable

import torch

from edgempi.compression import Compressor, Payload, create, payload_bytes

LENET5 = [(6, 1, 5, 5), (6,), (16, 6, 5, 5), (16,), (120, 400), (120,), (84, 120), (84,), (10, 84), (10,)]

CASES: list[tuple[str, dict]] = [
    ("none", {}),
    ("fp16", {}),
    ("topk", {"ratio": 0.001}),
    ("topk", {"ratio": 0.01}),
    ("randomk", {"ratio": 0.01}),
    ("qsgd", {"levels": 127, "bucket_size": 512}),
    ("qsgd", {"levels": 7, "bucket_size": 512}),  # 4-bit codes
    ("qsgd", {"levels": 1, "bucket_size": 512}),  # 2-bit (ternary) codes
    ("signsgd", {}),
    ("powersgd", {"rank": 4}),
]


def resnet18_shapes() -> list[tuple[int, ...]]:
    import torchvision  # only for the layout: 11,181,642 parameters with 10 classes

    return [tuple(p.shape) for p in torchvision.models.resnet18(num_classes=10).parameters()]


def median_ms(fn: Callable[[], object], repeats: int) -> float:
    fn()  # warm-up: first-touch page faults and scratch buffers
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return 1e3 * statistics.median(times)


def describe(kw: dict) -> str:
    return ", ".join(f"{k}={v}" for k, v in kw.items())


def gathered_mean(comp: Compressor, payloads: list[Payload], out: torch.Tensor) -> Callable[[], None] | None:
    """What a device does after the Allgather: the mean of every device's payload (None for the
    compressors whose payloads are summed by Allreduce)."""
    if comp.summable:
        return None
    if comp.uniform:
        rows = tuple(torch.stack(parts) for parts in zip(*payloads))
        return lambda: comp.mean_rows_(out, rows)
    return lambda: comp.mean_payloads_(out, payloads)


def bench_model(label: str, shapes: list[tuple[int, ...]], repeats: int, devices: int) -> tuple[list[str], float]:
    numel = sum(math.prod(s) for s in shapes)
    xs = [torch.randn(numel, generator=torch.Generator().manual_seed(d)) for d in range(devices)]
    x = xs[0]
    rows = []
    for name, kw in CASES:
        comp = create(name, **kw, **({"shapes": shapes} if name == "powersgd" else {}))
        payloads = [tuple(t.clone() for t in comp.compress(v)) for v in xs]  # a payload lives until the next compress
        payload, out, residual = payloads[0], torch.empty(numel), torch.empty(numel)
        c_ms = median_ms(lambda comp=comp: comp.compress(x), repeats)
        d_ms = median_ms(lambda comp=comp, payload=payload, out=out: comp.decompress_into(payload, out), repeats)
        mean = gathered_mean(comp, payloads, out)
        m_ms = f"{median_ms(mean, repeats):.3g}" if mean else "–"
        residual_ms = median_ms(lambda comp=comp, residual=residual, payload=payload:
                                comp.residual_into(residual, x, payload), repeats)
        r_ms = f"{residual_ms:.3g}"
        ratio = 4 * numel / payload_bytes(payload)
        rows.append(f"| {label} | {name} | {describe(kw)} | {c_ms:.3g} | {d_ms:.3g} | {m_ms} | {r_ms} | {ratio:.1f}× |")
    k = round(0.001 * numel)
    topk = create("topk", ratio=0.001)
    ours = median_ms(lambda: topk.compress(x), repeats)
    torch_ms = median_ms(lambda: torch.topk(x.abs(), k, sorted=False), repeats)
    rows.append(f"| {label} | torch.topk (peer) | k = 0.1%·d | {torch_ms:.3g} | – | – | – | – |")
    return rows, torch_ms / ours


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--min-speedup", type=float, default=5.0)
    parser.add_argument("--devices", type=int, default=4, help="devices whose payloads are averaged")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, threads {torch.get_num_threads()}, repeats {args.repeats}\n")
    print(f"| gradient | compressor | options | compress ms | decompress ms | mean of {args.devices} ms "
          "| residual ms | ratio |")
    print("| --- | --- | --- | ---: | ---: | ---: | ---: | ---: |")
    verdict = 0
    for label, shapes in (("ResNet-18 (11,181,642)", resnet18_shapes()), ("LeNet-5 (61,706)", LENET5)):
        rows, speedup = bench_model(label, shapes, args.repeats, args.devices)
        print("\n".join(rows))
        if label.startswith("ResNet"):
            resnet_speedup = speedup
        else:
            lenet_speedup = speedup
    print(f"\ntopk 0.1% vs torch.topk, same run: {resnet_speedup:.1f}× faster on ResNet-18, "
          f"{lenet_speedup:.1f}× on LeNet-5 (required on ResNet-18: ≥ {args.min_speedup}×)")
    if resnet_speedup < args.min_speedup:
        print("FAIL: the sampled-threshold selection is not fast enough", file=sys.stderr)
        verdict = 1
    return verdict


if __name__ == "__main__":
    sys.exit(main())
