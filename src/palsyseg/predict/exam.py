"""One person's exam (several poses) → one patient finding and a pattern hint.

A clinician grades facial palsy from the whole exam (rest, smile, brow raise, eye closure,
pucker), not from one photo: mild palsy often shows in one or two poses only. The patient
finding combines the photos exactly as the evaluation's patient-level metrics do
(:func:`palsyseg.metrics.patient_finding`): the score is the mean FPP fraction of the photos,
compared with the same threshold as one photo's; the side is the side the photos above that
threshold lean to, each weighted by its excess over it (every photo, weighted by its score, when
none is above it).

**Pattern hint.** In a peripheral (lower motor neuron) palsy such as Bell's, the forehead on the
weak side is paralysed too: that brow sits lower and does not rise when the patient raises the
brows. A central (upper motor neuron) palsy such as a stroke spares the forehead, which has
input from both hemispheres. The hint reads the **brow-height difference** toward the affected
side (the other brow's height above its eye centre minus this one's, in IOD; positive: this brow
lower), per photo, from dlib's 68 points and from the predicted mask, and takes their mean
where both exist. It decides on the brow-raise photos when the exam has one (the pose that
shows the forehead), else on every photo, with a warning. The forehead is *involved* when the
largest of those differences exceeds :data:`BROW_INVOLVED`:

- involved → ``peripheral``: Bell's-like;
- spared → ``central``: stroke-like;
- no palsy found → ``none``; no brow seen in any photo → ``undetermined``.

:data:`BROW_INVOLVED` sits above the largest brow asymmetry healthy faces show raising their
brows: 0.027 IOD over 500 generated healthy faces in the brow-raise pose (``palsyseg data
synth`` faces, seed 7, the generator's own landmarks), as :mod:`palsyseg.visibility` set its
thresholds; there Bell's faces of grade III and above showed a median deficit of 0.054–0.205.
It was not tuned on any test photo. The hint is evidence for a clinician, never a diagnosis:
a stroke is an emergency whatever the forehead does.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.labels import POSES
from palsyseg.predict.photo import NOTICE, PhotoFinding, relative_measures

BROW_INVOLVED = 0.035
"""Brow-height difference (IOD) toward the affected side above which the forehead is involved."""
KEY_POSE = "brow_raise"


def pose_of(image: str | Path) -> str | None:
    """The exam pose a file name names (``..._brow_raise.jpg`` → ``brow_raise``), else ``None``.

    A pose counts when its name stands between separators (``_``, ``-``, ``.``, space) or at the
    ends of the stem, case-insensitively; ``palsyseg data synth`` names photos so.
    """
    stem = Path(str(image)).stem.lower()
    for pose in sorted(POSES, key=len, reverse=True):
        if re.search(rf"(^|[_\-. ]){re.escape(pose)}($|[_\-. ])", stem):
            return pose
    return None


def _brow_difference(finding: PhotoFinding, side: str) -> dict[str, float | None]:
    landmarks = relative_measures(finding.landmark_measures, side)["brow_height_diff"]
    mask = relative_measures(finding.mask_measures, side)["brow_height_diff"]
    known = [v for v in (landmarks, mask) if v is not None]
    return {
        "landmarks": landmarks,
        "mask": mask,
        "combined": round(float(np.mean(known)), 4) if known else None,
    }


def pattern_hint(findings: Sequence[PhotoFinding], side: str) -> dict[str, Any]:
    """The forehead-involvement hint of an exam whose affected side is ``side`` (module
    docstring), with the per-photo evidence it rests on."""
    evidence = (
        [
            {
                "image": f.image,
                "pose": pose_of(f.image),
                "brow_height_diff": _brow_difference(f, side),
            }
            for f in findings
        ]
        if side in ("left", "right")
        else []
    )
    result: dict[str, Any] = {
        "hint": "none",
        "text": "no palsy found in this exam: no pattern to hint at",
        "forehead_involved": None,
        "decided_on": None,
        "largest_brow_height_diff": None,
        "threshold": BROW_INVOLVED,
        "unit": "inter-ocular distance",
        "evidence": evidence,
        "warnings": [],
    }
    if side not in ("left", "right"):
        return result
    keyed = [e for e in evidence if e["pose"] == KEY_POSE]
    if keyed:
        decided_on = keyed
        result["decided_on"] = f"{len(keyed)} {KEY_POSE} photo(s)"
    else:
        decided_on = evidence
        result["decided_on"] = f"all {len(evidence)} photo(s)"
        result["warnings"].append(
            "no brow_raise photo in the exam (none named *_brow_raise.*): the hint rests on "
            "the brows at rest, where a weak forehead shows less"
        )
    values = [e["brow_height_diff"]["combined"] for e in decided_on]
    values = [v for v in values if v is not None]
    if not values:
        result.update(hint="undetermined", text="no brow was found in the photos decided on")
        return result
    largest = max(values)
    involved = largest > BROW_INVOLVED
    result["largest_brow_height_diff"] = round(largest, 4)
    result["forehead_involved"] = involved
    if involved:
        result.update(
            hint="peripheral",
            text=(
                f"the patient's {side} brow sits {largest:.3f} IOD lower than the other "
                f"(above {BROW_INVOLVED}): forehead involved, a peripheral (Bell's-like) pattern"
            ),
        )
    else:
        result.update(
            hint="central",
            text=(
                f"the brows differ by at most {largest:.3f} IOD (not above {BROW_INVOLVED}): "
                "forehead spared, a central (stroke-like) pattern; a suspected stroke needs "
                "emergency care"
            ),
        )
    return result


def exam_finding(
    findings: Sequence[PhotoFinding],
    *,
    threshold: float,
    model: dict[str, Any] | None = None,
    failed: Sequence[str] = (),
) -> dict[str, Any]:
    """The patient finding over one person's photos (module docstring), as a JSON object.

    ``findings`` are the photos that gave a finding; ``failed`` names those that did not (no
    face, unreadable), listed so the reader knows what the finding rests on.
    """
    from palsyseg.metrics import patient_finding

    scores = [f.score for f in findings]  # what the threshold is on (PhotoFinding.score)
    score, side = patient_finding(scores, [f.leaning_side for f in findings], threshold)
    present = bool(findings) and score > threshold
    affected = side if present else "none"
    showing = [f for f in findings if f.present and f.affected_side == affected]
    parts = sorted({part for f in showing for part in f.parts})
    on_side = [f.probability for f in findings if f.leaning_side == side] or [0.0]
    warnings: list[str] = []
    if not findings:
        warnings.append("no photo of the exam gave a finding")
    poses = [pose_of(f.image) for f in findings]
    missing = [p for p in POSES if p not in poses]
    if findings and missing:
        warnings.append("exam lacks the pose(s) " + ", ".join(missing))
    hint = pattern_hint(findings, affected)
    warnings.extend(hint.pop("warnings"))
    return {
        "exam": {
            "photos": [
                {
                    "image": f.image,
                    "pose": pose,
                    "fpp_fraction": round(f.fpp_fraction, 4),
                    "score": round(f.score, 4),
                    "side": f.leaning_side,
                    "present": f.present,
                }
                for f, pose in zip(findings, poses, strict=True)
            ],
            "failed": list(failed),
            "palsy": {
                "present": present,
                "probability": round(float(np.mean(on_side)), 4),
                "affected_side": affected,
                "parts": parts,
                "score": round(score, 4),
                "threshold": threshold,
                "photos_showing": len(showing),
            },
            "pattern": hint,
            "model": model,
            "warnings": warnings,
            "notice": NOTICE,
        }
    }
