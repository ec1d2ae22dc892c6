"""The dataset directory contract (shared/CONTRACT.md): a typed reader and writer of ``manifest.csv``.

A dataset is a directory with ``manifest.csv`` at its root, one row per image. Paths in the
manifest are relative POSIX paths below the root; a path that is absolute, contains ``..``,
or resolves outside the root (symlinks included) is refused and never followed.

The reader is strict and exhaustive: it collects *every* broken rule of the manifest, one
:class:`~palsyseg.errors.Problem` per rule and row (``manifest.csv:<line>: <column>: <rule>``,
where ``<line>`` is the CSV line, the header being line 1), then raises one
:class:`~palsyseg.errors.DatasetError`. Columns the contract does not name are kept in
:attr:`ManifestRow.extras` and written back, so tools that add columns (``source``) round-trip.
File *content* (decodes, sizes, label values) is checked by :mod:`palsyseg.validate`.
"""

from __future__ import annotations

import csv
import io
import os
import unicodedata
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from palsyseg.atomic import atomic_write_text
from palsyseg.errors import DatasetError, Problem
from palsyseg.labels import DIAGNOSES, GRADES, POSES, SIDES, SKIN_TONES

MANIFEST_NAME = "manifest.csv"
REQUIRED_COLUMNS: tuple[str, ...] = ("image", "mask", "patient_id", "diagnosis", "affected_side")
OPTIONAL_COLUMNS: tuple[str, ...] = ("grade", "depth", "pose", "beard", "glasses", "skin_tone")
COLUMNS: tuple[str, ...] = REQUIRED_COLUMNS + OPTIONAL_COLUMNS
PATH_COLUMNS: tuple[str, ...] = ("image", "mask", "depth")
IMAGE_SUFFIXES: tuple[str, ...] = (".png", ".jpg", ".jpeg")
BOOLEAN_VALUES: dict[str, bool] = {"true": True, "false": False}


@dataclass(frozen=True)
class ManifestRow:
    """One image of a dataset, as the contract defines it. Optional fields are ``None`` when blank."""

    image: str
    mask: str
    patient_id: str
    diagnosis: str
    affected_side: str
    grade: int | None = None
    depth: str | None = None
    pose: str | None = None
    beard: bool | None = None
    glasses: bool | None = None
    skin_tone: int | None = None
    extras: Mapping[str, str] = field(default_factory=dict, compare=False)

    @property
    def has_palsy(self) -> bool:
        return self.diagnosis != "healthy"

    def to_record(self) -> dict[str, str]:
        """The row as CSV strings (booleans ``true``/``false``, ``None`` as blank)."""
        record: dict[str, str] = {}
        for name in COLUMNS:
            value = getattr(self, name)
            if value is None:
                record[name] = ""
            elif isinstance(value, bool):
                record[name] = "true" if value else "false"
            else:
                record[name] = str(value)
        record.update(self.extras)
        return record


def check_relative_path(value: str) -> str | None:
    """Return the broken path rule for a manifest path string, or ``None`` if the syntax is fine.

    Syntax only (no disk access): non-empty, relative, POSIX separators, no ``..`` component.
    """
    if not value:
        return "path is empty"
    if "\\" in value:
        return f"path {value!r} uses backslashes (paths are relative POSIX paths)"
    posix = PurePosixPath(value)
    if posix.is_absolute() or (len(value) > 1 and value[1] == ":"):
        return f"path {value!r} is absolute (paths must be relative to the dataset root)"
    if ".." in posix.parts:
        return f"path {value!r} contains '..' (paths must stay inside the dataset root)"
    return None


def resolve_in_root(root: str | os.PathLike[str], value: str) -> Path:
    """Resolve manifest path ``value`` below ``root``, refusing anything that escapes it.

    Raises :class:`DatasetError` if the syntax is wrong or if the resolved path (symlinks
    followed) lies outside the resolved root. The file need not exist.
    """
    rule = check_relative_path(value)
    if rule is not None:
        raise DatasetError(Problem(file=str(Path(root) / MANIFEST_NAME), rule=rule))
    root_resolved = Path(root).resolve()
    resolved = (root_resolved / value).resolve()
    if not resolved.is_relative_to(root_resolved):
        raise DatasetError(
            Problem(
                file=str(Path(root) / value),
                rule=f"path {value!r} resolves outside the dataset root (symlink escape); refused",
            )
        )
    return resolved


# Unicode categories refused in contract values: control characters (NUL, ESC, DEL, C1),
# invisible format characters (zero-width space, bidi overrides), line/paragraph separators and
# lone surrogates. They are invisible in tables and logs, so "p1" and "p1\u200b" would look like
# one patient while the split treats them as two (leakage), and NUL truncates C strings.
_INVISIBLE_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})


def invisible_character(value: str) -> str | None:
    """``U+XXXX`` of the first control or invisible character in ``value``, else ``None``."""
    for char in value:
        if unicodedata.category(char) in _INVISIBLE_CATEGORIES:
            return f"U+{ord(char):04X}"
    return None


def _parse_int(value: str, allowed: Sequence[int]) -> int | None:
    try:
        number = int(value)
    except ValueError:
        return None
    return number if number in allowed else None


def parse_record(
    record: Mapping[str, str | None], *, file: str, line: int
) -> tuple[ManifestRow | None, list[Problem]]:
    """Parse one CSV record into a :class:`ManifestRow`, collecting every broken rule.

    Returns ``(row, [])`` when the record is valid and ``(None, problems)`` otherwise.
    """
    problems: list[Problem] = []

    def broken(column: str, rule: str) -> None:
        problems.append(Problem(file=file, row=line, column=column, rule=rule))

    value = {k: (v or "").strip() for k, v in record.items() if k is not None}
    for column in REQUIRED_COLUMNS:
        if not value.get(column):
            broken(column, "required value is empty")
    for column in COLUMNS:
        code = invisible_character(value.get(column, ""))
        if code is not None:
            broken(
                column,
                f"value {value[column]!r} contains the control or invisible character {code} "
                "(equal-looking values would differ)",
            )
            value[column] = ""  # reported once: not again as a bad path, diagnosis, ...

    for column in PATH_COLUMNS:
        text = value.get(column, "")
        if not text:
            continue
        rule = check_relative_path(text)
        if rule:
            broken(column, rule)
        elif PurePosixPath(text).suffix.lower() not in (
            IMAGE_SUFFIXES if column == "image" else (".png",)
        ):
            expected = "PNG or JPEG" if column == "image" else "PNG"
            broken(column, f"path {text!r} is not a {expected} file")

    diagnosis, side = value.get("diagnosis", ""), value.get("affected_side", "")
    if diagnosis and diagnosis not in DIAGNOSES:
        broken("diagnosis", f"{diagnosis!r} is not one of {', '.join(DIAGNOSES)}")
    if side and side not in SIDES:
        broken("affected_side", f"{side!r} is not one of {', '.join(SIDES)}")
    if diagnosis in DIAGNOSES and side in SIDES and (diagnosis == "healthy") != (side == "none"):
        broken(
            "affected_side",
            f"affected_side is {side!r} for diagnosis {diagnosis!r} (none if and only if healthy)",
        )

    grade: int | None = None
    if value.get("grade"):
        grade = _parse_int(value["grade"], GRADES)
        if grade is None:
            broken("grade", f"{value['grade']!r} is not a House–Brackmann grade 1–6")
        elif diagnosis == "healthy" and grade != 1:
            broken("grade", f"grade {grade} on a healthy face (grade 1 is normal function)")
        elif diagnosis in ("bells_palsy", "stroke") and grade == 1:
            broken("grade", f"grade 1 (normal function) on diagnosis {diagnosis!r}")
    skin_tone: int | None = None
    if value.get("skin_tone"):
        skin_tone = _parse_int(value["skin_tone"], SKIN_TONES)
        if skin_tone is None:
            broken("skin_tone", f"{value['skin_tone']!r} is not a Fitzpatrick type 1–6")
    if value.get("pose") and value["pose"] not in POSES:
        broken("pose", f"{value['pose']!r} is not one of {', '.join(POSES)}")
    flags: dict[str, bool | None] = {}
    for column in ("beard", "glasses"):
        text = value.get(column, "")
        flags[column] = BOOLEAN_VALUES.get(text) if text else None
        if text and text not in BOOLEAN_VALUES:
            broken(column, f"{text!r} is not true or false")

    if problems:
        return None, problems
    extras = {k: v for k, v in value.items() if k not in COLUMNS}
    row = ManifestRow(
        image=value["image"],
        mask=value["mask"],
        patient_id=value["patient_id"],
        diagnosis=diagnosis,
        affected_side=side,
        grade=grade,
        depth=value.get("depth") or None,
        pose=value.get("pose") or None,
        beard=flags["beard"],
        glasses=flags["glasses"],
        skin_tone=skin_tone,
        extras=extras,
    )
    return row, []


def read_manifest_records(root: str | os.PathLike[str]) -> tuple[list[str], list[dict[str, str]]]:
    """Read ``manifest.csv`` as raw strings: ``(header, records)``.

    Raises :class:`DatasetError` when the file is missing, not UTF-8, not CSV, or lacks a
    required column. Values are not checked here (see :func:`read_manifest`).
    """
    path = Path(root) / MANIFEST_NAME
    if not Path(root).is_dir():
        raise DatasetError(Problem(file=str(root), rule="dataset directory does not exist"))
    if path.is_symlink() and not path.resolve().is_relative_to(Path(root).resolve()):
        raise DatasetError(
            Problem(
                file=str(path),
                rule=f"symbolic link to {os.readlink(path)!r}, outside the dataset root; refused "
                "(a dataset's manifest must be its own)",
            )
        )
    if not path.is_file():
        raise DatasetError(
            Problem(file=str(path), rule="missing (a dataset needs manifest.csv at its root)")
        )
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DatasetError(
            Problem(file=str(path), rule=f"not UTF-8 ({exc.reason} at byte {exc.start})")
        ) from None
    try:
        reader = csv.DictReader(io.StringIO(text, newline=""), strict=True)
        header = [h.strip() for h in (reader.fieldnames or [])]
        reader.fieldnames = header
        records = list(reader)
    except csv.Error as exc:
        raise DatasetError(Problem(file=str(path), rule=f"not valid CSV ({exc})")) from None
    if not header:
        raise DatasetError(Problem(file=str(path), rule="empty file (expected a header row)"))
    problems = [
        Problem(
            file=str(path), row=1, column=column, rule="required column is missing from the header"
        )
        for column in REQUIRED_COLUMNS
        if column not in header
    ]
    duplicated = sorted({h for h in header if header.count(h) > 1})
    problems += [
        Problem(file=str(path), row=1, column=h, rule="column appears twice in the header")
        for h in duplicated
    ]
    for index, record in enumerate(records):
        if None in record:
            problems.append(
                Problem(
                    file=str(path), row=index + 2, rule="more fields than the header has columns"
                )
            )
    if problems:
        raise DatasetError(problems)
    return header, [{k: (v if v is not None else "") for k, v in r.items()} for r in records]


def read_manifest(root: str | os.PathLike[str]) -> list[ManifestRow]:
    """Read and check ``root/manifest.csv``; raise :class:`DatasetError` listing every broken rule.

    Checks everything that needs no image decoding: required columns and values, value sets,
    diagnosis/side/grade consistency, path syntax and containment (symlinks resolved), and
    that no image appears twice. An empty manifest is an error.
    """
    _header, records = read_manifest_records(root)
    path = str(Path(root) / MANIFEST_NAME)
    rows: list[ManifestRow] = []
    problems: list[Problem] = []
    first_line_of: dict[str, int] = {}
    for index, record in enumerate(records):
        line = index + 2
        row, found = parse_record(record, file=path, line=line)
        problems += found
        image = (record.get("image") or "").strip()
        if image and image in first_line_of:
            problems.append(
                Problem(
                    file=path,
                    row=line,
                    column="image",
                    rule=f"image {image!r} already listed on line {first_line_of[image]}",
                )
            )
        elif image:
            first_line_of[image] = line
        if row is None:
            continue
        for column in PATH_COLUMNS:
            rel = getattr(row, column)
            if rel:
                try:
                    resolve_in_root(root, rel)
                except DatasetError as exc:
                    problems += [
                        Problem(file=path, row=line, column=column, rule=p.rule)
                        for p in exc.problems
                    ]
        rows.append(row)
    if not records:
        problems.append(
            Problem(file=path, rule="manifest has no rows (a dataset needs at least one image)")
        )
    if problems:
        raise DatasetError(problems)
    return rows


def write_manifest(root: str | os.PathLike[str], rows: Iterable[ManifestRow]) -> Path:
    """Write ``rows`` to ``root/manifest.csv`` atomically, contract columns first, extras after."""
    rows = list(rows)
    extra_columns = sorted({k for row in rows for k in row.extras})
    buffer = io.StringIO(newline="")
    writer = csv.DictWriter(
        buffer, fieldnames=[*COLUMNS, *extra_columns], lineterminator="\n", restval=""
    )
    writer.writeheader()
    for row in rows:
        writer.writerow(row.to_record())
    path = Path(root) / MANIFEST_NAME
    atomic_write_text(path, buffer.getvalue())
    return path
