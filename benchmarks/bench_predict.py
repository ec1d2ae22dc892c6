"""How long does ``palsyseg predict`` take per photo, and where does the time go?

Times :class:`palsyseg.predict.photo.Predictor` on 1-megapixel photos, per stage, after the
model and dlib's models are loaded (their load time is reported apart):

- ``decode``: header check (decompression-bomb guard) and JPEG decoding;
- ``detect``: dlib's HOG face detector on the copy downscaled to the working size;
- ``landmarks``: the 68-point shape predictor on the photo;
- ``model``: warp into the face frame, normalise, the network's forward pass, the finding
  (FPP fraction, side, parts, probability, measures) and the logits mapped back onto the photo;
- ``write``: the overlay drawn and both PNGs (mask, overlay) written atomically.

The photos: ``skimage.data.astronaut()`` (a real face) and phantom faces (``palsyseg data
synth``), each upscaled to about ``--megapixels`` and saved as JPEG; used for timing only. The
network is an untrained palsynet in a face frame of ``--image-size`` (the demo trains at 96 px)
unless ``--checkpoint`` names a trained one: its weights do not change its speed. Target: at
most 0.5 s per photo end to end. Prints one JSON line on stdout and a table on stderr, and saves
the JSON under ``benchmarks/results/``::

    OMP_NUM_THREADS=2 .venv/bin/python benchmarks/bench_predict.py [--threads 2] [--photos 8]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

STAGES = ("decode", "detect", "landmarks", "model", "write")
TARGET_S = 0.5
RESULTS = Path(__file__).parent / "results"


def _photos(folder: Path, count: int, megapixels: float) -> list[Path]:
    """``count`` JPEG photos of about ``megapixels``: the astronaut, then phantom faces."""
    import cv2
    import numpy as np
    from skimage import data

    from palsyseg.data.images import read_rgb, write_jpeg
    from palsyseg.data.synth import SynthConfig, generate_dataset

    side = round((megapixels * 1e6) ** 0.5)
    sources = [data.astronaut()]
    if count > 1:
        phantom = folder / "phantom"
        generate_dataset(phantom, SynthConfig(patients=(count + 3) // 5 + 1, seed=11, size=250))
        faces = sorted((phantom / "images").rglob("*.jpg"))[: count - 1]
        sources += [read_rgb(p) for p in faces]
    paths = []
    for k, rgb in enumerate(sources[:count]):
        big = cv2.resize(np.ascontiguousarray(rgb), (side, side), interpolation=cv2.INTER_CUBIC)
        paths.append(write_jpeg(folder / f"photo_{k:02d}.jpg", big, quality=90))
    return paths


def _network(image_size: int, checkpoint: str | None, folder: Path) -> str:
    """A checkpoint path: ``checkpoint``, else an untrained palsynet saved in a face frame."""
    if checkpoint:
        return checkpoint
    from palsyseg.checkpoint import save_untrained_checkpoint

    return str(save_untrained_checkpoint(folder / "untrained.pt", image_size=image_size))


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--photos", type=int, default=8, help="distinct photos timed")
    parser.add_argument("--megapixels", type=float, default=1.0)
    parser.add_argument("--threads", type=int, default=2, help="torch and OpenCV threads")
    parser.add_argument("--repeat", type=int, default=2, help="passes over the photos")
    parser.add_argument("--image-size", type=int, default=96, help="face frame of the network")
    parser.add_argument("--checkpoint", default=None, help="time this checkpoint instead")
    parser.add_argument("--no-save", action="store_true", help="do not write the JSON file")
    args = parser.parse_args(argv)

    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    import cv2
    import numpy as np
    import torch

    from palsyseg.atomic import atomic_write_json
    from palsyseg.predict.model import load_predict_model
    from palsyseg.predict.outputs import write_outputs
    from palsyseg.predict.photo import Predictor

    torch.set_num_threads(args.threads)
    cv2.setNumThreads(args.threads)
    with tempfile.TemporaryDirectory(prefix="bench-predict-") as tmp:
        folder = Path(tmp)
        photos = _photos(folder, args.photos, args.megapixels)
        checkpoint = _network(args.image_size, args.checkpoint, folder)
        started = time.perf_counter()
        predictor = Predictor(load_predict_model(checkpoint))
        predictor.predict(photos[0])  # loads dlib's models and warms the network up
        load_s = time.perf_counter() - started
        out = folder / "out"
        timings: dict[str, list[float]] = {stage: [] for stage in (*STAGES, "total")}
        failed = 0
        for _ in range(args.repeat):
            for photo in photos:
                began = time.perf_counter()
                try:
                    finding = predictor.predict(photo)
                except Exception:  # counted: a photo without a face is not timed
                    failed += 1
                    continue
                written = time.perf_counter()
                write_outputs(finding, out, photo.stem)
                finding.seconds["write"] = time.perf_counter() - written
                finding.seconds["total"] = time.perf_counter() - began
                for stage in timings:
                    timings[stage].append(finding.seconds[stage])
        width, height = finding.width, finding.height

    def summary(values: list[float]) -> dict[str, float]:
        array = np.asarray(values) * 1000
        return {
            "mean_ms": round(float(array.mean()), 1),
            "median_ms": round(float(np.median(array)), 1),
            "max_ms": round(float(array.max()), 1),
        }

    stages = {stage: summary(values) for stage, values in timings.items()}
    output = {
        "benchmark": "predict",
        "setup": {
            **vars(args),
            "photo_size": [width, height],
            "timed_photos": len(timings["total"]),
            "no_face": failed,
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
        },
        "load_s": round(load_s, 2),
        "stages": stages,
        "target_s": TARGET_S,
        "meets_target": stages["total"]["mean_ms"] <= TARGET_S * 1000,
    }
    if not args.no_save:
        name = f"predict-{args.megapixels:g}mp-{args.threads}threads-{args.image_size}px.json"
        atomic_write_json(RESULTS / name, output)

    from rich.console import Console
    from rich.table import Table

    table = Table(
        title=f"palsyseg predict per photo ({width}×{height}, {args.threads} threads, "
        f"frame {args.image_size} px; load {load_s:.1f} s apart)"
    )
    for column in ("stage", "mean ms", "median ms", "max ms", "share"):
        table.add_column(column, justify="right")
    total = stages["total"]["mean_ms"]
    for stage, row in stages.items():
        share = f"{row['mean_ms'] / total:.0%}" if stage != "total" else "100%"
        table.add_row(
            stage, f"{row['mean_ms']:.1f}", f"{row['median_ms']:.1f}", f"{row['max_ms']:.1f}", share
        )
    Console(stderr=True).print(table)
    verdict = "meets" if output["meets_target"] else "misses"
    Console(stderr=True).print(f"{verdict} the target of {TARGET_S * 1000:.0f} ms per photo")
    print(json.dumps(output))
    return output


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
