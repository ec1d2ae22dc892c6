"""Subgroups of the test split: does the model find palsy equally well in every kind of face?

A subgroup is every test image sharing one value of one manifest column — diagnosis, pose,
House–Brackmann grade, beard, glasses, Fitzpatrick skin tone (``docs/CONTRACT.md``; only the
columns the manifest fills appear). Per subgroup, for one model:

- ``f1_fpp``: pixel-level FPP F1 (eq. 9) of the subgroup's summed confusion matrices, the same
  definition as the overall ``f1_fpp`` (``NaN`` when the subgroup holds no FPP pixel in truth
  or prediction);
- ``side_accuracy``: over the subgroup's photos that show palsy, the share whose predicted side
  is the true one (``NaN`` without such photos), as :func:`palsyseg.metrics.image_level_metrics`;
- ``images``, ``patients``, ``palsy_images``: the counts behind them, so a reader weighs a gap
  on 3 photos accordingly;
- ``*_gap``: the subgroup's value minus the whole split's (negative = worse than overall).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from palsyseg.labels import NUM_CLASSES

if TYPE_CHECKING:
    from palsyseg.data.manifest import ManifestRow
    from palsyseg.evaluate import ImageRecord

SUBGROUP_COLUMNS: tuple[str, ...] = ("diagnosis", "pose", "grade", "beard", "glasses", "skin_tone")


def row_attributes(row: ManifestRow) -> dict[str, str]:
    """The subgroup columns a manifest row fills, as text (``true``/``false`` for flags)."""
    out: dict[str, str] = {}
    for column in SUBGROUP_COLUMNS:
        value = getattr(row, column)
        if value is None or value == "":
            continue
        out[column] = str(value).lower() if isinstance(value, bool) else str(value)
    return out


@dataclass(frozen=True)
class SubgroupStats:
    """One line of the subgroup table."""

    column: str
    value: str
    images: int
    patients: int
    palsy_images: int
    f1_fpp: float
    side_accuracy: float
    f1_fpp_gap: float
    side_accuracy_gap: float

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def group_metrics(records: Sequence[ImageRecord], model: str) -> tuple[float, float]:
    """``(f1_fpp, side_accuracy)`` of ``model`` over ``records`` (see the module docstring)."""
    from palsyseg.metrics import segmentation_metrics

    confusion = np.zeros((NUM_CLASSES, NUM_CLASSES), dtype=np.int64)
    for record in records:
        confusion += record.confusion[model]
    f1_fpp = segmentation_metrics(confusion)["f1_fpp"] if records else math.nan
    palsied = [r for r in records if r.true_side != "none"]
    hits = sum(r.pred_side[model] == r.true_side for r in palsied)
    return f1_fpp, hits / len(palsied) if palsied else math.nan


def _order(value: str) -> tuple[int, float, str]:
    """Numbers in numeric order, then text alphabetically."""
    try:
        return (0, float(value), value)
    except ValueError:
        return (1, 0.0, value)


def subgroup_table(records: Sequence[ImageRecord], model: str) -> list[SubgroupStats]:
    """Every subgroup of ``records`` for ``model``: columns in :data:`SUBGROUP_COLUMNS` order
    (those no record fills are left out), values in natural order. Empty without records."""
    if not records:
        return []
    overall_f1, overall_side = group_metrics(records, model)
    table: list[SubgroupStats] = []
    for column in SUBGROUP_COLUMNS:
        groups: dict[str, list[ImageRecord]] = {}
        for record in records:
            if column in record.attributes:
                groups.setdefault(record.attributes[column], []).append(record)
        for value in sorted(groups, key=_order):
            members = groups[value]
            f1_fpp, side = group_metrics(members, model)
            table.append(
                SubgroupStats(
                    column=column,
                    value=value,
                    images=len(members),
                    patients=len({r.patient_id for r in members}),
                    palsy_images=sum(r.true_side != "none" for r in members),
                    f1_fpp=f1_fpp,
                    side_accuracy=side,
                    f1_fpp_gap=f1_fpp - overall_f1,
                    side_accuracy_gap=side - overall_side,
                )
            )
    return table
