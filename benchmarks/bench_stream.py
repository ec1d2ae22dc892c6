"""Does the phantom stream keep up with training? Items/s it makes vs. images/s training eats.

Measures, at each ``--image-size``, in one run:

- ``stream``: :class:`palsyseg.data.stream.PhantomStream` items per second of one process with
  one thread (render at the stream's size, JPEG round trip, five points from the generator's
  landmarks, warp into the face frame, training augmentation, tensors), best of ``--repeat``;
- ``train``: images per second of palsynet's training step (forward, the full loss, backward,
  SGD step) on ready batches of ``--batch-size`` with ``--threads`` torch threads, best of
  ``--repeat``;
- ``ratio`` = stream / train: above 1, one DataLoader worker renders faster than the model
  trains (``num_workers=1``); below it, the stream is what limits an epoch.

On 2 cores the two share the machine, so the ratio is the honest question: how much of an
epoch does rendering cost. Prints one JSON line on stdout and a table on stderr::

    .venv/bin/python benchmarks/bench_stream.py [--image-size 128 160] [--threads 2]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def _stream_rate(size: int, items: int, repeat: int) -> float:
    import torch

    from palsyseg.data.augment import TrainAugmentation
    from palsyseg.data.stream import PhantomStream, StreamConfig

    torch.set_num_threads(1)
    stream = PhantomStream(
        StreamConfig(patients_per_epoch=(items + 4) // 5 + 1),
        image_size=size,
        augment=TrainAugmentation(),
    )
    stream[len(stream) - 1]  # warm-up: texture pools, albumentations
    best = 0.0
    for epoch in range(repeat):
        stream.set_epoch(epoch + 1)
        started = time.perf_counter()
        for index in range(items):
            stream[index]
        best = max(best, items / (time.perf_counter() - started))
    return best


def _train_rate(size: int, batch: int, steps: int, threads: int, repeat: int) -> float:
    import torch

    from palsyseg.labels import NUM_CLASSES
    from palsyseg.losses import LossConfig, SegmentationLoss
    from palsyseg.models import create_model

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    model = create_model("palsynet", num_classes=NUM_CLASSES)
    criterion = SegmentationLoss(LossConfig(), num_classes=NUM_CLASSES)
    optimizer = torch.optim.SGD(
        list(model.parameters()) + list(criterion.parameters()), lr=0.01, momentum=0.9
    )
    image = torch.randn(batch, 3, size, size)
    mask = torch.randint(0, NUM_CLASSES, (batch, size, size))
    depth = torch.rand(batch, size, size)
    model.train()

    def step() -> None:
        loss, _ = criterion(model(image), mask, depth)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    step()
    best = 0.0
    for _ in range(repeat):
        started = time.perf_counter()
        for _ in range(steps):
            step()
        best = max(best, steps * batch / (time.perf_counter() - started))
    return best


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-size", type=int, nargs="+", default=[128, 160])
    parser.add_argument("--items", type=int, default=100, help="stream items per repeat")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=10, help="training steps per repeat")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeat", type=int, default=2)
    args = parser.parse_args(argv)

    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    from palsyseg.align import FaceFrame
    from palsyseg.data.stream import render_size_for

    results = {}
    for size in args.image_size:
        stream = _stream_rate(size, args.items, args.repeat)
        train = _train_rate(size, args.batch_size, args.steps, args.threads, args.repeat)
        results[str(size)] = {
            "render_size": render_size_for(FaceFrame(size=size)),
            "stream_items_per_s": round(stream, 1),
            "train_images_per_s": round(train, 1),
            "ratio": round(stream / train, 2),
        }
    output = {"benchmark": "stream", "setup": vars(args), "results": results}

    from rich.console import Console
    from rich.table import Table

    table = Table(title="phantom stream vs. palsynet training")
    for column in ("frame px", "render px", "stream items/s (1 thread)", "train images/s", "ratio"):
        table.add_column(column, justify="right")
    for size, row in results.items():
        table.add_row(
            size,
            str(row["render_size"]),
            f"{row['stream_items_per_s']:.1f}",
            f"{row['train_images_per_s']:.1f} ({args.threads} threads)",
            f"{row['ratio']:.2f}",
        )
    Console(stderr=True).print(table)
    print(json.dumps(output))
    return output


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
