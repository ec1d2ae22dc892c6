"""Patient-grouped, diagnosis-stratified train/val/test split of a contract dataset, plus a leakage check.

Promises (ARCHITECTURE.md, step 3):

* **Grouped by patient.** All images of one ``patient_id`` land in one split; every split is
  checked by :func:`check_no_leakage` before the output appears.
* **Stratified by diagnosis.** Each diagnosis's patients are apportioned to train/val/test on
  their own, so each split has about the configured share of healthy, Bell's palsy and stroke
  patients, and a diagnosis with at least 3 patients appears in *every* split.
* **Deterministic.** The same dataset and :class:`SplitConfig` give byte-identical manifests.
* **Whole datasets out.** ``OUT/train``, ``OUT/val``, ``OUT/test`` are each a complete contract
  dataset (own ``manifest.csv`` with the same relative paths; files hard-linked, copied where a
  link is impossible), plus ``OUT/summary.json``. The output is built in a temporary sibling and
  appears whole or not at all.

How patients are apportioned. Per diagnosis with ``n >= 3`` patients: quotas ``n * ratio`` are
rounded down, the remaining patients go to the largest fractional parts (Hamilton's
largest-remainder method; ties in train, val, test order), then any split left with 0 takes one
patient from the largest. The members are then drawn with scikit-learn's ``train_test_split``
(a seeded shuffle-and-cut) with those exact counts. We stratify by hand rather than with
``train_test_split(..., stratify=diagnosis)`` because scikit-learn rounds each class's share and
can leave a 3-patient class out of val or test entirely.
Fallback for a diagnosis with too few patients to stratify: 1 patient goes to train; 2 go to
train and test (evaluation sees the class; model selection does not). If a split is still empty
afterwards (few patients overall), it takes a patient from the split holding the most, from that
split's most common diagnosis. Fewer than 3 patients in all cannot be split (``DatasetError``).

A patient whose images carry different diagnoses is stratified by the diagnosis on most of their
images (ties: the later one in ``healthy, bells_palsy, stroke``, i.e. palsy over healthy).
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.atomic import atomic_directory, atomic_write_text
from palsyseg.data.manifest import (
    MANIFEST_NAME,
    ManifestRow,
    read_manifest,
    resolve_in_root,
    write_manifest,
)
from palsyseg.errors import ConfigError, DatasetError, Problem
from palsyseg.labels import DIAGNOSES

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "val", "test")
SUMMARY_NAME = "summary.json"
LINKED_EXTRA_COLUMNS: tuple[str, ...] = ("landmarks",)
"""Extra manifest columns holding paths whose files travel with their rows."""


class SplitConfigError(ConfigError, ValueError):
    """Invalid split ratios or seed. Also a ``ValueError`` so :func:`palsyseg.params.from_section`
    prefixes it with the params file and section, like its other errors."""


@dataclass(frozen=True)
class SplitConfig:
    """The ``split`` section of ``params.yaml``: a seed and the share of patients per split."""

    seed: int = 7
    train: float = 0.7
    val: float = 0.15
    test: float = 0.15

    def __post_init__(self) -> None:
        ratios = self.ratios()
        bad = [f"{name}={value}" for name, value in ratios.items() if not value > 0]
        if bad:
            raise SplitConfigError(
                f"split ratios must be > 0 (every split non-empty): {', '.join(bad)}"
            )
        total = sum(ratios.values())
        if not math.isclose(total, 1.0, abs_tol=1e-6):
            raise SplitConfigError(
                f"split ratios train + val + test must sum to 1, got "
                f"{self.train} + {self.val} + {self.test} = {total:g}"
            )
        if self.seed < 0:
            raise SplitConfigError(f"split seed must be >= 0, got {self.seed}")

    def ratios(self) -> dict[str, float]:
        return {"train": self.train, "val": self.val, "test": self.test}


@dataclass
class SplitSummary:
    """What a split wrote: patients and images per diagnosis per split."""

    source: Path
    out: Path
    config: SplitConfig
    patients: dict[str, dict[str, int]]
    images: dict[str, dict[str, int]]
    linked: int = 0
    copied: int = 0
    assignment: dict[str, str] = field(default_factory=dict, repr=False)

    def table(self) -> Any:
        """A rich table: one row per diagnosis, ``patients / images`` per split, totals last."""
        from rich.table import Table

        table = Table(
            title=f"split {self.source} -> {self.out} (seed {self.config.seed})",
            caption=f"{self.linked} files hard-linked, {self.copied} copied",
        )
        table.add_column("diagnosis")
        for split in SPLITS:
            table.add_column(f"{split} patients / images", justify="right")
        diagnoses = [d for d in DIAGNOSES if any(self.images[s].get(d) for s in SPLITS)]
        for diagnosis in diagnoses:
            table.add_row(
                diagnosis,
                *(
                    f"{self.patients[s].get(diagnosis, 0)} / {self.images[s].get(diagnosis, 0)}"
                    for s in SPLITS
                ),
            )
        table.add_row(
            "all",
            *(f"{sum(self.patients[s].values())} / {sum(self.images[s].values())}" for s in SPLITS),
            style="bold",
        )
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "source": str(self.source),
            "seed": self.config.seed,
            "ratios": self.config.ratios(),
            "patients": self.patients,
            "images": self.images,
            "totals": {
                s: {
                    "patients": sum(self.patients[s].values()),
                    "images": sum(self.images[s].values()),
                }
                for s in SPLITS
            },
        }


# --------------------------------------------------------------------------------------------
# Who goes where.


def patient_diagnoses(rows: Sequence[ManifestRow]) -> dict[str, str]:
    """The diagnosis each patient is stratified by: the one on most of their images (ties: palsy)."""
    per_patient: dict[str, Counter[str]] = defaultdict(Counter)
    for row in rows:
        per_patient[row.patient_id][row.diagnosis] += 1
    return {
        patient: max(counts, key=lambda d: (counts[d], DIAGNOSES.index(d)))
        for patient, counts in per_patient.items()
    }


def apportion(n: int, ratios: Sequence[float]) -> list[int]:
    """Split ``n`` patients into ``len(ratios)`` counts summing to ``n`` (module docstring).

    Largest remainder; for ``n >= len(ratios)`` every count is at least 1. For fewer patients
    the fallback applies: 1 → train; 2 → train and the last split (test).
    """
    k = len(ratios)
    if n < k:
        counts = [0] * k
        counts[0] += min(n, 1)  # the first patient trains
        counts[-1] += n - counts[0]  # a second one is tested
        return counts
    quotas = [n * r for r in ratios]
    counts = [math.floor(q + 1e-9) for q in quotas]
    by_remainder = sorted(range(k), key=lambda i: (-(quotas[i] - counts[i]), i))
    for i in by_remainder[: n - sum(counts)]:
        counts[i] += 1
    for i in range(k):
        if counts[i] == 0:
            donor = max(range(k), key=lambda j: (counts[j], -j))
            counts[donor] -= 1
            counts[i] = 1
    return counts


def assign_patients(rows: Sequence[ManifestRow], config: SplitConfig) -> dict[str, str]:
    """``{patient_id: split}`` for every patient of ``rows`` (module docstring for the method)."""
    from sklearn.model_selection import train_test_split

    diagnosis_of = patient_diagnoses(rows)
    if len(diagnosis_of) < len(SPLITS):
        raise DatasetError(
            Problem(
                file=MANIFEST_NAME,
                rule=f"{len(diagnosis_of)} patient(s): a train/val/test split needs at least {len(SPLITS)}",
            )
        )
    rng = np.random.default_rng(config.seed)
    ratios = list(config.ratios().values())
    assignment: dict[str, str] = {}
    for diagnosis in DIAGNOSES:
        patients = sorted(p for p, d in diagnosis_of.items() if d == diagnosis)
        if not patients:
            continue
        n_train, n_val, n_test = apportion(len(patients), ratios)
        groups: dict[str, list[str]] = {"train": patients, "val": [], "test": []}
        if n_val + n_test:
            groups["train"], rest = train_test_split(
                patients,
                train_size=n_train,
                test_size=n_val + n_test,
                random_state=int(rng.integers(2**31)),
            )
            if n_val and n_test:
                groups["val"], groups["test"] = train_test_split(
                    rest, train_size=n_val, test_size=n_test, random_state=int(rng.integers(2**31))
                )
            else:
                groups["val" if n_val else "test"] = list(rest)
        for split, members in groups.items():
            assignment.update(dict.fromkeys(members, split))
    _fill_empty_splits(assignment, diagnosis_of)
    return dict(sorted(assignment.items()))


def _fill_empty_splits(assignment: dict[str, str], diagnosis_of: Mapping[str, str]) -> None:
    """Give each empty split one patient from the fullest split's most common diagnosis (deterministic)."""
    for split in SPLITS:
        members = Counter(assignment.values())
        if members[split]:
            continue
        donor = max(SPLITS, key=lambda s: (members[s], -SPLITS.index(s)))
        in_donor = sorted(p for p, s in assignment.items() if s == donor)
        common = Counter(diagnosis_of[p] for p in in_donor)
        patient = min(in_donor, key=lambda p: (-common[diagnosis_of[p]], p))
        assignment[patient] = split


# --------------------------------------------------------------------------------------------
# Leakage.


def check_no_leakage(
    split_root_or_manifests: str
    | os.PathLike[str]
    | Mapping[str, str | os.PathLike[str] | Sequence[ManifestRow]],
) -> None:
    """Raise :class:`DatasetError` naming every patient that appears in more than one split.

    Takes a split output directory (its ``train/``, ``val/``, ``test/`` datasets that exist), or
    a mapping from split name to a dataset directory or to manifest rows. One problem per leaked
    patient: the split where it shows up again, its CSV line there, and both split names.
    """
    sources: dict[str, Any]
    if isinstance(split_root_or_manifests, Mapping):
        sources = dict(split_root_or_manifests)
    else:
        root = Path(split_root_or_manifests)
        sources = {s: root / s for s in SPLITS if (root / s / MANIFEST_NAME).is_file()}
        if not sources:
            raise DatasetError(
                Problem(file=str(root), rule="no train/val/test datasets with manifest.csv found")
            )
    first_seen: dict[str, str] = {}
    problems: list[Problem] = []
    for split, source in sources.items():
        if isinstance(source, str | os.PathLike):
            rows, file = read_manifest(source), str(Path(source) / MANIFEST_NAME)
        else:
            rows, file = list(source), f"{split} split"
        reported: set[str] = set()
        for index, row in enumerate(rows):
            other = first_seen.get(row.patient_id)
            if other is not None and other != split and row.patient_id not in reported:
                reported.add(row.patient_id)
                problems.append(
                    Problem(
                        file=file,
                        row=index + 2,
                        column="patient_id",
                        rule=f"patient {row.patient_id!r} is in both {other} and {split} (patient leakage across splits)",
                    )
                )
        for row in rows:
            first_seen.setdefault(row.patient_id, split)
    if problems:
        raise DatasetError(problems)


# --------------------------------------------------------------------------------------------
# Writing.


def _path_columns(row: ManifestRow) -> list[tuple[str, str]]:
    paths = [("image", row.image), ("mask", row.mask)]
    if row.depth:
        paths.append(("depth", row.depth))
    paths += [(c, row.extras[c]) for c in LINKED_EXTRA_COLUMNS if row.extras.get(c)]
    return paths


def _link_or_copy(source: Path, target: Path) -> bool:
    """Hard-link ``source`` to ``target``; copy when linking is impossible. True if linked."""
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        os.link(source, target)
        return True
    except OSError:  # another filesystem (EXDEV), no hard links there, link limit, ...
        shutil.copy2(source, target)
        return False


def split_dataset(
    root: str | os.PathLike[str],
    out: str | os.PathLike[str],
    config: SplitConfig,
    *,
    force: bool = False,
) -> SplitSummary:
    """Split dataset ``root`` into ``out/{train,val,test}`` datasets and ``out/summary.json``.

    Reads ``root`` with :func:`read_manifest` (``DatasetError`` on a bad manifest; a missing file
    is a ``DatasetError`` naming its row). Refuses a non-empty ``out`` unless ``force``; nothing
    appears at ``out`` unless the whole split, leakage check included, succeeded.
    """
    root, out = Path(root), Path(out)
    rows = read_manifest(root)
    manifest = str(root / MANIFEST_NAME)
    assignment = assign_patients(rows, config)
    diagnosis_of = patient_diagnoses(rows)
    linked = copied = 0
    rows_of: dict[str, list[ManifestRow]] = {s: [] for s in SPLITS}
    with atomic_directory(out, force=force) as staging:
        for index, row in enumerate(rows):
            split = assignment[row.patient_id]
            rows_of[split].append(row)
            for column, rel in _path_columns(row):
                source = resolve_in_root(root, rel)
                target = staging / split / rel
                if not source.is_file():
                    raise DatasetError(
                        Problem(
                            file=manifest,
                            row=index + 2,
                            column=column,
                            rule=f"{rel}: file does not exist",
                        )
                    )
                if target.exists():
                    continue  # one file listed by several rows (a shared depth map, ...)
                if _link_or_copy(source, target):
                    linked += 1
                else:
                    copied += 1
        for split in SPLITS:
            write_manifest(staging / split, rows_of[split])
        summary = SplitSummary(
            source=root.resolve(),
            out=out,
            config=config,
            patients={
                s: _count(diagnosis_of[p] for p, where in assignment.items() if where == s)
                for s in SPLITS
            },
            images={s: _count(r.diagnosis for r in rows_of[s]) for s in SPLITS},
            linked=linked,
            copied=copied,
            assignment=assignment,
        )
        atomic_write_text(staging / SUMMARY_NAME, json.dumps(summary.to_dict(), indent=2) + "\n")
        check_no_leakage(staging)
    log.info(
        "split %s into %s: %s patients (train/val/test), %d linked, %d copied",
        root,
        out,
        "/".join(str(sum(summary.patients[s].values())) for s in SPLITS),
        linked,
        copied,
    )
    return summary


def _count(values: Any) -> dict[str, int]:
    counts = Counter(values)
    return {d: counts[d] for d in DIAGNOSES if counts[d]}


__all__ = [
    "SPLITS",
    "SplitConfig",
    "SplitConfigError",
    "SplitSummary",
    "apportion",
    "assign_patients",
    "check_no_leakage",
    "patient_diagnoses",
    "split_dataset",
]
