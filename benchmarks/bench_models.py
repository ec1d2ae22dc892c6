"""Params, GFLOPs and CPU latency of every registered model, side by side.

    .venv/bin/python benchmarks/bench_models.py [--size 250] [--threads 2] [--repeats 30]
                                                [--models palsynet deeplabv3plus_r34 ...] [--no-fold]
                                                [--json OUT]

Latency: batch 1, eval mode, ``torch.inference_mode``, ``--threads`` intra-op threads, a warm-up
per model, then ``--repeats`` rounds in which every model runs in turn (round-robin, the order
reversed every other round), so load from other processes on a shared machine hits all models
alike and the ratios stay fair. Within a
round each model runs once untimed and once timed: without that, a small model timed right after
a large one pays for the caches the large one evicted (seen: ~10 ms on PalsyNet). Reported:
median and minimum per model and the ratio of each to ``deeplabv3plus_r34`` from the same run.
The 1-minute load average before and after is printed with the results. Every model is timed
as ``palsyseg predict`` and ``palsyseg evaluate`` run it, with its BatchNorms folded into the
convolutions before them (:mod:`palsyseg.models.fuse`, the same for every model; ``--no-fold``
times the modules as trained); params and GFLOPs are the trained network's. Prints a table to stderr
and one JSON object to stdout (and to ``--json`` if given).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

REFERENCE = "deeplabv3plus_r34"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=250)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--models", nargs="*", default=None)
    parser.add_argument(
        "--no-fold",
        action="store_true",
        help="time the networks as trained, BatchNorms unfolded (default: folded, as served)",
    )
    parser.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)

    import torch

    from palsyseg.models import create_model, list_models, model_summary

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    names = args.models or list_models()
    if REFERENCE not in names:
        names = [*names, REFERENCE]
    models = {name: create_model(name).eval() for name in names}
    x = torch.randn(1, 3, args.size, args.size)

    summaries = {name: model_summary(model, args.size) for name, model in models.items()}
    if not args.no_fold:  # as predict and evaluate run them (palsyseg.models.fuse)
        from palsyseg.models.fuse import fold_batchnorm

        models = {name: fold_batchnorm(model) for name, model in models.items()}
    load_before = os.getloadavg()[0]
    times: dict[str, list[float]] = {name: [] for name in names}
    with torch.inference_mode():
        for model in models.values():
            for _ in range(args.warmup):
                model(x)
        for round_index in range(args.repeats):
            order = list(models.items())
            if round_index % 2:  # alternate the order so no model always follows the largest
                order.reverse()
            for name, model in order:
                model(x)  # untimed: the previous (larger) model has evicted this one's caches
                start = time.perf_counter()
                model(x)
                times[name].append((time.perf_counter() - start) * 1000)
    load_after = os.getloadavg()[0]

    ref_median = statistics.median(times[REFERENCE])
    ref_min = min(times[REFERENCE])
    rows = {}
    for name in names:
        median, best = statistics.median(times[name]), min(times[name])
        rows[name] = {
            "params": summaries[name]["params"],
            "gflops": round(summaries[name]["gflops"], 3),
            "latency_ms_median": round(median, 2),
            "latency_ms_min": round(best, 2),
            "speedup_vs_deeplabv3plus_r34_median": round(ref_median / median, 2),
            "speedup_vs_deeplabv3plus_r34_min": round(ref_min / best, 2),
        }
    result = {
        "image_size": args.size,
        "batch": 1,
        "threads": args.threads,
        "repeats": args.repeats,
        "batchnorm_folded": not args.no_fold,
        "torch": torch.__version__,
        "cpu_count": os.cpu_count(),
        "load_average_1min_before": round(load_before, 2),
        "load_average_1min_after": round(load_after, 2),
        "models": rows,
    }

    header = f"{'model':<26}{'params':>12}{'GFLOPs':>9}{'median ms':>11}{'min ms':>9}{'× DLv3+ (med)':>15}{'× DLv3+ (min)':>15}"
    lines = [header, "-" * len(header)]
    for name, r in rows.items():
        lines.append(
            f"{name:<26}{r['params']:>12,}{r['gflops']:>9.3f}{r['latency_ms_median']:>11.1f}"
            f"{r['latency_ms_min']:>9.1f}{r['speedup_vs_deeplabv3plus_r34_median']:>15.2f}"
            f"{r['speedup_vs_deeplabv3plus_r34_min']:>15.2f}"
        )
    lines.append(
        f"{args.size}×{args.size}, batch 1, {args.threads} threads, {args.repeats} rounds; "
        f"load average {load_before:.2f} → {load_after:.2f} on {os.cpu_count()} CPUs"
    )
    sys.stderr.write("\n".join(lines) + "\n")
    text = json.dumps(result, indent=2)
    sys.stdout.write(text + "\n")
    if args.json:
        from palsyseg.atomic import atomic_write_text

        atomic_write_text(args.json, text + "\n")
    return result


if __name__ == "__main__":
    main()
