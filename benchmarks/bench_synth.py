"""Throughput of the synthetic dataset generator (``palsyseg data synth``), per CPU core.

Renders a fixed set of phantom faces, then encodes and writes them, then runs the whole
:func:`~palsyseg.data.synth.generate_dataset` end to end, and reports images per second of
CPU time (one core: OpenCV and BLAS are pinned to one thread) and of wall time, plus the
milliseconds per image of each stage. The target is at least 100 images/s per core at 250 px.

On a shared machine read the CPU-time numbers (wall time includes waiting for a core) and the
best of the repeats (neighbours' load only ever makes a run slower). Prints one JSON line on
stdout, then a small table on stderr::

    .venv/bin/python benchmarks/bench_synth.py [--size 250] [--patients 20] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

STAGES = ("render", "encode_write", "end_to_end")


def _timed(fn):  # type: ignore[no-untyped-def]
    wall, cpu = time.perf_counter(), time.process_time()
    result = fn()
    return result, time.perf_counter() - wall, time.process_time() - cpu


def _run_once(config, jobs) -> dict[str, tuple[float, float]]:  # type: ignore[no-untyped-def]
    """Seconds (CPU, wall) of each stage for all ``jobs``."""
    from palsyseg.data.synth import generate_dataset, render_example, write_example

    renders, render_wall, render_cpu = _timed(
        lambda: [render_example(config, p, i, k, pose) for i, p, k, pose in jobs]
    )
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        _, write_wall, write_cpu = _timed(
            lambda: [
                write_example(root, p, k, pose, r)
                for (_, p, k, pose), r in zip(jobs, renders, strict=True)
            ]
        )
        _, total_wall, total_cpu = _timed(lambda: generate_dataset(root / "dataset", config))
    return {
        "render": (render_cpu, render_wall),
        "encode_write": (write_cpu, write_wall),
        "end_to_end": (total_cpu, total_wall),
    }


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--patients", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)

    import cv2

    cv2.setNumThreads(1)
    from palsyseg.data.synth import SynthConfig, exam_poses, make_patient, render_example

    config = SynthConfig(patients=args.patients, seed=args.seed, size=args.size)
    jobs = []
    for index in range(config.patients):
        patient = make_patient(config, index)
        jobs += [(index, patient, k, pose) for k, pose in enumerate(exam_poses(config, index))]
    render_example(config, jobs[0][1], jobs[0][0], 0, "rest")  # warm-up: texture pool, imports
    n = len(jobs)
    runs = [_run_once(config, jobs) for _ in range(max(1, args.repeat))]

    def ms(stage: str, which: int, pick) -> float:  # type: ignore[no-untyped-def]
        return round(1e3 * pick(run[stage][which] for run in runs) / n, 2)

    best_cpu = {s: ms(s, 0, min) for s in STAGES}
    result = {
        "benchmark": "synth",
        "size": args.size,
        "images": n,
        "repeats": len(runs),
        "images_per_s_cpu": round(1e3 / best_cpu["end_to_end"], 1),
        "images_per_s_cpu_median": round(1e3 / ms("end_to_end", 0, statistics.median), 1),
        "images_per_s_wall": round(1e3 / ms("end_to_end", 1, min), 1),
        "ms_per_image_cpu": best_cpu,
        "ms_per_image_wall": {s: ms(s, 1, min) for s in STAGES},
        "target_images_per_s_per_core": 100,
    }
    print(json.dumps(result))

    from rich.console import Console
    from rich.table import Table

    title = f"palsyseg data synth — {n} images at {args.size} px, one core, best of {len(runs)}"
    table = Table(title=title)
    for column in ("stage", "ms/image (CPU)", "ms/image (wall)", "images/s (CPU)"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    for stage in STAGES:
        cpu, wall = result["ms_per_image_cpu"][stage], result["ms_per_image_wall"][stage]
        table.add_row(stage, f"{cpu:.2f}", f"{wall:.2f}", f"{1e3 / cpu:.0f}")
    Console(stderr=True).print(table)
    return result


if __name__ == "__main__":
    main(sys.argv[1:])
