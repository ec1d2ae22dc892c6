"""How much of palsynet's FPP F1 its part-side decision costs, measured on one checkpoint.

    .venv/bin/python benchmarks/bench_decision.py CHECKPOINT TEST_DIR [--threads 2] [--json OUT]

e.g. ``CHECKPOINT = build/bench_quality/models/palsynet/best.pt`` and ``TEST_DIR =
build/bench_quality/splits/test`` after ``bench_quality.py``. FPP is the weak half's eye or
mouth: the segmentation says where each part is, :class:`palsyseg.models.asymmetry.PartSideFPP`
says per part and half whether it is FPP. This scores the test photos (in the face frame,
mapped back to each photo's pixels, as ``palsyseg evaluate`` does) four ways from one forward
pass per photo, its base logits composed (:meth:`PartSideFPP.compose`) with: the network's own
decision at its operating point, and the labels' decision in place of its own for the eye,
for the mouth and for both (:func:`palsyseg.losses.fpp_decision_targets` on the photo's mask in
the frame: the decision's training target). With both, the FPP F1 left is what the parts'
segmentation allows; the rest is the decision's. Also reported per part: the decision's F1 over
halves (a half is right when it is marked FPP exactly where the label has it). Prints a table to
stderr and one JSON object to stdout (and to ``--json``). Needs a palsynet with the part-side
decision (the default palsynet).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

VARIANTS = ("as decided", "label's eye", "label's mouth", "label's eye and mouth")


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoint", type=Path)
    parser.add_argument("test_dir", type=Path)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--json", default=None, help="also write the JSON result to this file")
    args = parser.parse_args(argv)

    from palsyseg.runtime import configure_quiet_offline

    configure_quiet_offline()
    import numpy as np
    import torch

    from palsyseg.align import FaceFrame, logits_to_photo
    from palsyseg.atomic import atomic_write_json
    from palsyseg.checkpoint import load_checkpoint_model
    from palsyseg.data.manifest import read_manifest
    from palsyseg.data.torch_dataset import (
        fallback_points,
        load_sample,
        normalize_image,
        row_points,
        to_frame,
    )
    from palsyseg.labels import LABEL_NAMES, NUM_CLASSES
    from palsyseg.losses import fpp_decision_targets
    from palsyseg.metrics import ConfusionMatrix, segmentation_metrics
    from palsyseg.models.fuse import fold_batchnorm
    from palsyseg.progress import track

    torch.set_num_threads(args.threads)
    model, meta = load_checkpoint_model(args.checkpoint, "cpu")
    block = getattr(model, "part_side", None)
    if block is None or not meta.get("frame"):
        sys.exit(
            f"{args.checkpoint}: not a palsynet with the part-side FPP decision and a face frame"
        )
    fold_batchnorm(model)
    frame = FaceFrame.from_dict(meta["frame"])
    names = [LABEL_NAMES[part] for part in block.parts]
    rows = read_manifest(args.test_dir)
    points = row_points(args.test_dir, rows)

    confusion = {variant: ConfusionMatrix(NUM_CLASSES) for variant in VARIANTS}
    halves = {name: {"tp": 0, "fp": 0, "fn": 0, "label_halves": 0} for name in names}
    replaced = {
        VARIANTS[0]: [],
        VARIANTS[1]: [names.index("eye")] if "eye" in names else [],
        VARIANTS[2]: [names.index("mouth")] if "mouth" in names else [],
        VARIANTS[3]: list(range(len(names))),
    }
    with torch.inference_mode():
        for index, row in enumerate(track(rows, "scoring the decision")):
            sample = load_sample(args.test_dir, row)
            height, width = sample.mask.shape
            crop, framed_mask, _, matrix = to_frame(
                sample, points[index] or fallback_points(height, width), frame
            )
            x = normalize_image(crop).unsqueeze(0)
            truth = fpp_decision_targets(
                torch.from_numpy(framed_mask.astype(np.int64))[None], block.parts, block.fpp_class
            )  # 1×P×2
            labels_log_q = torch.log(truth.clamp(1e-6, 1 - 1e-6))
            out = model(x)
            decided = out["fpp_decision_log_q"]  # at the operating point
            for variant in VARIANTS:
                log_q = decided.clone()
                log_q[:, replaced[variant]] = labels_log_q[:, replaced[variant]]
                # the forward's last steps, with this decision: composed, then eval's offsets
                logits = block.compose(out["base_logits"], log_q)
                logits = logits + model.class_offsets[:, None, None]
                pred = logits_to_photo(logits, matrix, (height, width)).argmax(dim=1)
                confusion[variant].update(pred[0].numpy().astype(np.uint8), sample.mask)
            marked = decided[0].exp() > 0.5  # P×2
            for i, name in enumerate(names):
                label = truth[0, i] > 0.5
                right = bool(torch.equal(marked[i], label))
                counts = halves[name]
                counts["label_halves"] += int(label.sum())
                if label.any():
                    counts["tp" if right else "fn"] += 1
                if marked[i].any() and not right:
                    counts["fp"] += 1

    results = {}
    for variant in VARIANTS:
        metrics = segmentation_metrics(confusion[variant].matrix)
        results[variant] = {
            key: round(float(metrics[key]), 4)
            for key in ("mean_f1", "f1_eyebrow", "f1_eye", "f1_mouth", "f1_fpp")
        }
    for counts in halves.values():
        tp, fp, fn = counts["tp"], counts["fp"], counts["fn"]
        counts["f1"] = round(2 * tp / (2 * tp + fp + fn), 4) if tp + fp + fn else None
    output = {
        "benchmark": "decision",
        "checkpoint": str(args.checkpoint),
        "test_dir": str(args.test_dir),
        "images": len(rows),
        "decision_bias": [round(float(b), 3) for b in block.decision_bias],
        "scores": results,
        "decision_per_part": halves,
    }

    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"FPP with the network's or the labels' decision ({len(rows)} photos)")
    for column in ("decision", "mean F1", "eyebrow", "eye", "mouth", "FPP F1"):
        table.add_column(column, justify="left" if column == "decision" else "right")
    for variant, row in results.items():
        table.add_row(variant, *(f"{value:.3f}" for value in row.values()))
    console = Console(stderr=True, width=120)
    console.print(table)
    for name, counts in halves.items():
        console.print(
            f"{name} decision: F1 {counts['f1']} over photos with a weak {name} half or a marked one "
            f"(right {counts['tp']}, false alarms {counts['fp']}, missed {counts['fn']})"
        )
    print(json.dumps(output))
    if args.json:
        atomic_write_json(args.json, output)  # written whole or not at all
    return output


if __name__ == "__main__":
    main()
