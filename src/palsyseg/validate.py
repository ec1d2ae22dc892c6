"""Validate a dataset directory against the contract (shared/CONTRACT.md), reporting every broken rule.

Three checkers, one result:

1. **The manifest reader** (:func:`palsyseg.data.manifest.read_manifest`) is the contract's own
   rule book for the CSV: value sets, diagnosis/side/grade consistency, path syntax and
   containment, duplicates. Its problems are kept as they are (they are the most precise lines).
2. **A Great Expectations 1.x suite** runs on one table: the manifest's raw values plus per-row
   *fact columns* computed from the files (GX has no image expectations, so we measure each file
   once -- exists, header size, decodes, channels, label values -- and let expectations judge
   the facts; see shared/STACK-NOTES.md). Each failed expectation becomes one
   :class:`~palsyseg.errors.Problem` per row (``manifest.csv:<line>: <column>: <rule>``).
   Expectations that restate a manifest rule only back it up: their lines are dropped when the
   manifest reader already reported that column, so one broken rule gives one line.
3. **Content facts** come from :mod:`palsyseg.data.images` (header-only pixel limit before any
   decoding, then the mask/depth readers' format rules), for every row that parses, even when
   other rows do not: validation never stops at the first problem.

The dataset is only read, never written. An optional HTML report for data stewards is written
atomically, also (above all) when validation fails.
"""

from __future__ import annotations

import csv
import datetime as dt
import html
import io
import logging
import os
import time
import warnings
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from palsyseg.atomic import atomic_write_text
from palsyseg.data.images import MAX_PIXELS, image_size, read_depth, read_mask, read_rgb
from palsyseg.data.manifest import (
    BOOLEAN_VALUES,
    MANIFEST_NAME,
    REQUIRED_COLUMNS,
    ManifestRow,
    parse_record,
    read_manifest,
    read_manifest_records,
    resolve_in_root,
)
from palsyseg.errors import DatasetError, Problem
from palsyseg.labels import DIAGNOSES, GRADES, NUM_CLASSES, POSES, SIDES, SKIN_TONES, Label

log = logging.getLogger(__name__)

FILE_COLUMNS: tuple[str, ...] = ("image", "mask", "depth")
PREVIEW_ROWS = 20
_LINE = "_csv_line"  # the CSV line of each row (header = 1), the index GX reports failures by


# --------------------------------------------------------------------------------------------
# Rules: one GX expectation (or a few) each, with the words a data steward reads.


@dataclass(frozen=True)
class Rule:
    """One rule of the contract as checked by the GX suite.

    ``expectations`` builds the GX expectations for the columns present; ``message`` turns one
    failing row (the whole table row as a dict) into the rule text of a :class:`Problem` about
    ``column``. ``backs_up_manifest``: the manifest reader checks the same rule, so this rule's
    lines are dropped when the reader already reported any of ``columns``.
    """

    name: str
    description: str
    column: str | None
    columns: tuple[str, ...]
    expectations: Callable[[Any, set[str]], list[Any]]
    message: Callable[[Mapping[str, Any]], str]
    backs_up_manifest: bool = False


@dataclass(frozen=True)
class RuleResult:
    """How one rule fared: rows checked (non-blank values seen) and rows that broke it."""

    name: str
    description: str
    checked: int
    broken: int
    ran: bool = True

    @property
    def passed(self) -> bool:
        return self.ran and self.broken == 0

    @property
    def status(self) -> str:
        return "not run" if not self.ran else ("pass" if self.broken == 0 else "FAIL")


def _fact(column: str, name: str) -> str:
    return f"{column}_{name}"


def _in_set(column: str, values: list[Any]) -> Callable[[Any, set[str]], list[Any]]:
    def build(E: Any, present: set[str]) -> list[Any]:
        return (
            [E.ExpectColumnValuesToBeInSet(column=column, value_set=values)]
            if column in present
            else []
        )

    return build


def _file_rules(column: str, kind: str, max_pixels: int) -> list[Rule]:
    """Content rules for one path column; its facts are named ``<column>_<fact>``."""

    def error(row: Mapping[str, Any]) -> str:
        return f"{row[column]}: {row[_fact(column, 'error')]}"

    return [
        Rule(
            f"{column}_inside_root",
            f"{column} path stays inside the dataset root (symlinks resolved)",
            column,
            (column,),
            _in_set(_fact(column, "inside_root"), [True]),
            lambda row: str(row[_fact(column, "error")]),
            backs_up_manifest=True,
        ),
        Rule(
            f"{column}_exists",
            f"{column} file exists",
            column,
            (column,),
            _in_set(_fact(column, "exists"), [True]),
            lambda row: f"{row[column]}: file does not exist",
        ),
        Rule(
            f"{column}_pixel_limit",
            f"{column} header is at most {max_pixels} pixels (decompression-bomb guard, before decoding)",
            column,
            (column,),
            lambda E, present: [
                E.ExpectColumnValuesToBeBetween(
                    column=_fact(column, "pixels"), min_value=0, max_value=max_pixels
                )
            ],
            error,
        ),
        Rule(
            f"{column}_decodes",
            f"{column} decodes as {kind}",
            column,
            (column,),
            _in_set(_fact(column, "decodes"), [True]),
            error,
        ),
    ]


def _pair_equal(a: str, b: str) -> Callable[[Any, set[str]], list[Any]]:
    def build(E: Any, present: set[str]) -> list[Any]:
        return [
            E.ExpectColumnPairValuesToBeEqual(
                column_A=a, column_B=b, ignore_row_if="either_value_is_missing"
            )
        ]

    return build


def _contract_rules(max_pixels: int) -> list[Rule]:
    """Every rule, manifest rules first. ``max_pixels`` is the pixel limit of the header check."""
    required = list(REQUIRED_COLUMNS)
    valid_pairs = [("healthy", "none")] + [
        (d, s) for d in DIAGNOSES if d != "healthy" for s in SIDES if s != "none"
    ]
    rules = [
        Rule(
            "required_columns",
            "required columns present: " + ", ".join(required),
            None,
            tuple(required),
            lambda E, present: [E.ExpectColumnToExist(column=c) for c in required],
            lambda row: "required column is missing from the header",
            backs_up_manifest=True,
        ),
        Rule(
            "required_values",
            "required values are not blank",
            None,
            tuple(required),
            lambda E, present: [
                E.ExpectColumnValuesToNotBeNull(column=c) for c in required if c in present
            ],
            lambda row: "required value is empty",
            backs_up_manifest=True,
        ),
        Rule(
            "unique_images",
            "each image is listed once",
            "image",
            ("image",),
            lambda E, present: (
                [E.ExpectColumnValuesToBeUnique(column="image")] if "image" in present else []
            ),
            lambda row: f"image {row['image']!r} is listed more than once",
            backs_up_manifest=True,
        ),
    ]
    value_sets: dict[str, list[str]] = {
        "diagnosis": list(DIAGNOSES),
        "affected_side": list(SIDES),
        "pose": list(POSES),
        "grade": [str(g) for g in GRADES],
        "skin_tone": [str(t) for t in SKIN_TONES],
        "beard": list(BOOLEAN_VALUES),
        "glasses": list(BOOLEAN_VALUES),
    }
    for column, values in value_sets.items():
        rules.append(
            Rule(
                f"{column}_values",
                f"{column} is one of {', '.join(values)}",
                column,
                (column,),
                _in_set(column, values),
                lambda row, column=column, values=values: (
                    f"{row[column]!r} is not one of {', '.join(values)}"
                ),
                backs_up_manifest=True,
            )
        )
    rules.append(
        Rule(
            "diagnosis_side",
            "affected_side is none if and only if diagnosis is healthy",
            "affected_side",
            ("diagnosis", "affected_side"),
            lambda E, present: (
                [
                    E.ExpectColumnPairValuesToBeInSet(
                        column_A="diagnosis", column_B="affected_side", value_pairs_set=valid_pairs
                    )
                ]
                if {"diagnosis", "affected_side"} <= present
                else []
            ),
            lambda row: (
                f"affected_side is {row['affected_side']!r} for diagnosis {row['diagnosis']!r} (none if and only if healthy)"
            ),
            backs_up_manifest=True,
        )
    )
    rules += _file_rules("image", "an RGB image", max_pixels)
    rules += _file_rules("mask", "a single-channel 8-bit PNG", max_pixels)
    rules += _file_rules("depth", "a single-channel 16-bit PNG", max_pixels)
    for column in ("mask", "depth"):
        rules.append(
            Rule(
                f"{column}_size",
                f"{column} has the image's width and height",
                column,
                (column,),
                _pair_equal(_fact("image", "size"), _fact(column, "size")),
                lambda row, column=column: (
                    f"{row[column]}: size {row[_fact(column, 'size')]} differs from image {row['image']} ({row[_fact('image', 'size')]})"
                ),
            )
        )
    rules += [
        Rule(
            "mask_values",
            f"mask values are label values 0–{NUM_CLASSES - 1}",
            "mask",
            ("mask",),
            lambda E, present: [
                E.ExpectColumnValuesToBeBetween(
                    column="mask_max_value", min_value=0, max_value=NUM_CLASSES - 1
                )
            ],
            lambda row: (
                f"{row['mask']}: holds value(s) {row['mask_bad_values']} (label values are 0–{NUM_CLASSES - 1})"
            ),
        ),
        Rule(
            "no_fpp_on_healthy",
            f"no pixel of a healthy face is fpp ({int(Label.FPP)})",
            "mask",
            ("mask",),
            lambda E, present: [
                E.ExpectColumnValuesToBeBetween(column="healthy_fpp_pixels", max_value=0)
            ],
            lambda row: (
                f"{row['mask']}: {int(row['healthy_fpp_pixels'])} pixel(s) labelled fpp ({int(Label.FPP)}) on a healthy face (fpp marks palsy only)"
            ),
        ),
    ]
    return rules


# --------------------------------------------------------------------------------------------
# Facts: what each file of a row holds, measured once.


_READERS: dict[str, Callable[..., np.ndarray]] = {
    "image": read_rgb,
    "mask": read_mask,
    "depth": read_depth,
}
_FACTS = ("inside_root", "exists", "pixels", "decodes", "size", "error")


def _empty_facts() -> dict[str, Any]:
    facts: dict[str, Any] = {_fact(c, f): None for c in FILE_COLUMNS for f in _FACTS}
    facts.update(mask_max_value=None, mask_bad_values=None, healthy_fpp_pixels=None)
    return facts


def _file_facts(
    root: Path, column: str, rel: str, max_pixels: int
) -> tuple[dict[str, Any], np.ndarray | None]:
    """Measure one file in order -- inside root, exists, header pixels, decodes -- stopping at the first failure.

    A later fact stays ``None`` (unchecked) once an earlier one fails, so each file breaks one rule.
    """
    from PIL import Image

    facts: dict[str, Any] = {}

    def fact(name: str, value: Any) -> None:
        facts[_fact(column, name)] = value

    try:
        path = resolve_in_root(root, rel)
    except DatasetError as exc:
        fact("inside_root", False)
        fact("error", exc.problems[0].rule if exc.problems else str(exc))
        return facts, None
    fact("inside_root", True)
    fact("exists", path.is_file())
    if not path.is_file():
        return facts, None
    with warnings.catch_warnings():
        # PIL warns about large headers; the pixel limit below is the rule we apply.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            width, height = image_size(path)
        except DatasetError as exc:
            fact("decodes", False)
            fact("error", exc.problems[0].rule)
            return facts, None
    fact("pixels", width * height)
    if width * height > max_pixels:
        fact(
            "error",
            f"{width}×{height} = {width * height} pixels exceeds the limit of {max_pixels} (not decoded)",
        )
        return facts, None
    try:
        array = _READERS[column](path, max_pixels=max_pixels)
    except DatasetError as exc:
        fact("decodes", False)
        fact("error", exc.problems[0].rule)
        return facts, None
    fact("decodes", True)
    fact("size", f"{array.shape[1]}×{array.shape[0]}")
    return facts, array


def _row_facts(root: Path, row: ManifestRow, max_pixels: int) -> dict[str, Any]:
    facts = _empty_facts()
    for column in FILE_COLUMNS:
        rel = getattr(row, column)
        if not rel:
            continue
        found, array = _file_facts(root, column, rel, max_pixels)
        facts.update(found)
        if column == "mask" and array is not None:
            facts["mask_max_value"] = int(array.max()) if array.size else 0
            bad = np.unique(array[array >= NUM_CLASSES])
            facts["mask_bad_values"] = ", ".join(str(v) for v in bad[:10]) or None
            if row.diagnosis == "healthy":
                facts["healthy_fpp_pixels"] = int(np.count_nonzero(array == Label.FPP))
    return facts


# --------------------------------------------------------------------------------------------
# The result.


@dataclass
class ValidationResult:
    """Everything a validation found. ``ok`` iff no problem; ``problems`` one per broken rule and row."""

    root: Path
    problems: list[Problem]
    rules: list[RuleResult]
    rows: int
    patients: int
    counts: dict[str, dict[str, int]]
    patients_per_diagnosis: dict[str, int] = field(default_factory=dict)
    preview_header: list[str] = field(default_factory=list)
    preview: list[dict[str, str]] = field(default_factory=list)
    created: str = ""
    seconds: float = 0.0
    max_pixels: int = MAX_PIXELS
    report: Path | None = None

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> Any:
        """A short rich table for the CLI: patients and images per diagnosis, rules passed."""
        from rich.table import Table

        passed = sum(r.passed for r in self.rules)
        title = f"{self.root}: {'OK' if self.ok else f'{len(self.problems)} problem(s)'}"
        caption = f"{passed}/{len(self.rules)} rules passed"
        table = Table(title=title, caption=caption, min_width=len(title) + 4)
        table.add_column("diagnosis")
        table.add_column("patients", justify="right")
        table.add_column("images", justify="right")
        for diagnosis, count in self.counts.get("diagnosis", {}).items():
            table.add_row(diagnosis, str(self.patients_per_diagnosis.get(diagnosis, 0)), str(count))
        table.add_row("all", str(self.patients), str(self.rows), style="bold")
        return table

    def to_dict(self) -> dict[str, Any]:
        return {
            "root": str(self.root),
            "ok": self.ok,
            "created": self.created,
            "seconds": round(self.seconds, 3),
            "rows": self.rows,
            "patients": self.patients,
            "max_pixels": self.max_pixels,
            "counts": self.counts,
            "patients_per_diagnosis": self.patients_per_diagnosis,
            "rules": [
                {
                    "name": r.name,
                    "description": r.description,
                    "checked": r.checked,
                    "broken": r.broken,
                    "status": r.status,
                }
                for r in self.rules
            ],
            "problems": [str(p) for p in self.problems],
        }


# --------------------------------------------------------------------------------------------
# Reading the manifest without stopping at the first problem.


def _read_records(root: Path) -> tuple[list[str], list[dict[str, str]], list[Problem], bool]:
    """``(header, records, problems, rows_usable)`` of ``root/manifest.csv``.

    The strict reader decides; when it refuses only the header's columns or some rows (more
    fields than the header), the file is read again leniently so everything else is still
    checked. Over-long rows are kept (for line numbers) with their ``None`` key, as :mod:`csv`
    leaves them, and are not parsed.
    """
    try:
        header, records = read_manifest_records(root)
        return header, records, [], True
    except DatasetError as exc:
        problems = exc.problems
    if not problems or any(p.row is None for p in problems):
        return [], [], problems, False  # no directory or file, not UTF-8, not CSV, no header
    text = (root / MANIFEST_NAME).read_bytes().decode("utf-8-sig")
    reader = csv.DictReader(io.StringIO(text, newline=""))
    header = [h.strip() for h in (reader.fieldnames or [])]
    reader.fieldnames = header
    return header, list(reader), problems, True


def _parsed_rows(
    root: Path, records: list[dict[str, str]]
) -> tuple[dict[int, ManifestRow], list[Problem]]:
    """Rows that parse under the contract, by CSV line, and every manifest problem.

    ``read_manifest`` is the authority; when it refuses the file, each record is parsed on its
    own with the same :func:`parse_record` so the valid rows still get their content checked.
    """
    path = str(root / MANIFEST_NAME)
    try:
        rows = read_manifest(root)
        return {index + 2: row for index, row in enumerate(rows)}, []
    except DatasetError as exc:
        problems = list(exc.problems)
    parsed: dict[int, ManifestRow] = {}
    for index, record in enumerate(records):
        if None in record:
            continue
        row, found = parse_record(record, file=path, line=index + 2)
        problems += found
        if row is not None:
            parsed[index + 2] = row
    return parsed, list(dict.fromkeys(problems))


# --------------------------------------------------------------------------------------------
# Validation.


def _run_suite(
    table: Any, rules: list[Rule]
) -> dict[str, tuple[list[tuple[int, str | None]], int]]:
    """Run the GX suite on ``table``; per rule name: ``([(line, column), ...] that failed, rows checked)``.

    ``column`` is the column an expectation was about (for rules spanning several columns); a
    missing header column fails on line 1.
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    context = gx.get_context(mode="ephemeral")
    context.variables.progress_bars = ProgressBarsConfig(globally=False)
    batch = (
        context.data_sources.add_pandas("dataset")
        .add_dataframe_asset("manifest_with_facts")
        .add_batch_definition_whole_dataframe("all_rows")
    )
    present = set(table.columns)
    expectations = []
    for rule in rules:
        for expectation in rule.expectations(gx.expectations, present):
            expectation.meta = {"rule": rule.name}
            expectations.append(expectation)
    # One add with all expectations: adding them one by one re-serialises the suite each time.
    suite = context.suites.add(
        gx.ExpectationSuite(name="palsyseg_contract", expectations=expectations)
    )
    definition = context.validation_definitions.add(
        gx.ValidationDefinition(name="palsyseg_validate", data=batch, suite=suite)
    )
    result = definition.run(
        batch_parameters={"dataframe": table},
        result_format={"result_format": "COMPLETE", "unexpected_index_column_names": [_LINE]},
    )
    outcome: dict[str, tuple[list[tuple[int, str | None]], int]] = {
        rule.name: ([], 0) for rule in rules
    }
    for item in result.results:
        config = item.expectation_config
        name = config.meta["rule"]
        if item.exception_info and item.exception_info.get("raised_exception"):
            # A suite that cannot run is a bug here, not a finding about the data.
            raise RuntimeError(
                f"GX expectation for rule {name} raised: {item.exception_info.get('exception_message')}"
            )
        failed, checked = outcome[name]
        column = config.kwargs.get("column")
        info = item.result or {}
        if config.type == "expect_column_to_exist":
            checked = 1  # the header line
            failed = failed + ([] if item.success else [(1, column)])
        else:
            checked = max(
                checked, (info.get("element_count") or 0) - (info.get("missing_count") or 0)
            )
            failed = failed + [
                (int(u[_LINE]), column) for u in info.get("unexpected_index_list") or []
            ]
        outcome[name] = (failed, checked)
    return {
        name: (sorted(set(failed), key=lambda f: (f[0], f[1] or "")), checked)
        for name, (failed, checked) in outcome.items()
    }


def validate_dataset(
    root: str | os.PathLike[str],
    *,
    report: str | os.PathLike[str] | None = None,
    max_pixels: int = MAX_PIXELS,
) -> ValidationResult:
    """Check dataset ``root`` against the contract and return every problem found (bad data never raises).

    Runs the manifest reader, the content checks on every row that parses, and the GX suite over
    the manifest and the content facts (module docstring). Reads only: the dataset is never
    modified. With ``report``, writes a self-contained HTML report there atomically, pass or fail;
    a report path inside the dataset is refused (:class:`DatasetError`) for that reason.
    """
    import pandas as pd

    from palsyseg.progress import track

    started = time.perf_counter()
    root = Path(root)
    if report is not None:
        report = Path(report)
        if report.resolve().is_relative_to(root.resolve()):
            raise DatasetError(
                Problem(
                    file=str(report),
                    rule="report path is inside the dataset (validation never writes into a dataset)",
                )
            )
    manifest = str(root / MANIFEST_NAME)
    header, records, problems, usable = _read_records(root)
    parsed: dict[int, ManifestRow] = {}
    # Without every required column no row can parse; the header problem already says why.
    if usable and set(REQUIRED_COLUMNS) <= set(header):
        parsed, manifest_problems = _parsed_rows(root, records)
        problems += manifest_problems

    facts = {
        line: _row_facts(root, row, max_pixels)
        for line, row in track(list(parsed.items()), "checking files")
    }
    table_rows = []
    for index, record in enumerate(records):
        line = index + 2
        values = {k: ((v or "").strip() or None) for k, v in record.items() if k is not None}
        table_rows.append({_LINE: line, **values, **facts.get(line, _empty_facts())})
    columns = list(dict.fromkeys([_LINE, *header, *_empty_facts()]))
    table = pd.DataFrame(table_rows, columns=columns, dtype=object)

    rules = _contract_rules(max_pixels)
    rule_results: list[RuleResult] = []
    outcome = _run_suite(table, rules) if header else {}
    reported_columns = {p.column for p in problems if p.column}
    by_line = {row[_LINE]: row for row in table_rows}
    for rule in rules:
        if rule.name not in outcome:
            rule_results.append(RuleResult(rule.name, rule.description, 0, 0, ran=False))
            continue
        failed, checked = outcome[rule.name]
        rule_results.append(
            RuleResult(rule.name, rule.description, checked, len({line for line, _ in failed}))
        )
        if rule.backs_up_manifest and reported_columns & set(rule.columns):
            continue  # the manifest reader already named these rows, in its own words
        problems += [
            Problem(
                file=manifest,
                row=line,
                column=rule.column or column,
                rule=rule.message(by_line.get(line, {})),
            )
            for line, column in failed
        ]
    problems = list(dict.fromkeys(problems))

    def value(record: Mapping[str, str | None], column: str) -> str:
        return (record.get(column) or "").strip()

    counts = {
        column: dict(Counter(value(r, column) or "(blank)" for r in records))
        for column in ("diagnosis", "affected_side", "pose")
        if column in header
    }
    patient_diagnosis = {
        (value(r, "patient_id"), value(r, "diagnosis") or "(blank)") for r in records
    }
    patient_diagnosis = {(p, d) for p, d in patient_diagnosis if p}
    result = ValidationResult(
        root=root,
        problems=problems,
        rules=rule_results,
        rows=len(records),
        patients=len({p for p, _ in patient_diagnosis}),
        counts=counts,
        patients_per_diagnosis=dict(Counter(d for _, d in patient_diagnosis)),
        preview_header=header,
        preview=[{k: v for k, v in r.items() if k is not None} for r in records[:PREVIEW_ROWS]],
        created=dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        seconds=time.perf_counter() - started,
        max_pixels=max_pixels,
        report=report,
    )
    log.info(
        "validated %s: %d rows, %d problem(s) in %.2f s",
        root,
        result.rows,
        len(problems),
        result.seconds,
    )
    if report is not None:
        atomic_write_text(report, render_html(result))
    return result


# --------------------------------------------------------------------------------------------
# The HTML report.

_CSS = """
body{font-family:system-ui,sans-serif;margin:2em;max-width:70em;color:#222}
table{border-collapse:collapse;margin:.5em 0 1.5em}th,td{border:1px solid #ccc;padding:.25em .6em;text-align:left}
th{background:#f3f3f3}.pass{color:#176f2c;font-weight:bold}.FAIL{color:#b00020;font-weight:bold}
.notrun{color:#777}.verdict{font-size:1.4em}code{background:#f6f6f6;padding:0 .2em}
"""


def _table(header: list[str], rows: list[list[str]], classes: list[str] | None = None) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = []
    for index, row in enumerate(rows):
        css = f' class="{classes[index]}"' if classes else ""
        body.append(
            "<tr>"
            + "".join(
                f"<td{css if i == len(row) - 1 else ''}>{html.escape(str(c))}</td>"
                for i, c in enumerate(row)
            )
            + "</tr>"
        )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def render_html(result: ValidationResult) -> str:
    """A self-contained HTML page (inline CSS, no scripts, no links) describing ``result``."""
    esc = html.escape
    verdict = "PASSED" if result.ok else f"FAILED: {len(result.problems)} problem(s)"
    parts = [
        "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
        f"<title>palsyseg validation: {esc(str(result.root))}</title><style>{_CSS}</style></head><body>",
        "<h1>Dataset validation report</h1>",
        f"<p class='verdict {'pass' if result.ok else 'FAIL'}'>{esc(verdict)}</p>",
        "<ul>",
        f"<li>Dataset: <code>{esc(str(result.root.resolve()))}</code></li>",
        f"<li>Checked: {esc(result.created)} ({result.seconds:.2f} s)</li>",
        f"<li>Rows: {result.rows}; patients: {result.patients}; pixel limit per image: {result.max_pixels}</li>",
        "</ul>",
        "<h2>Counts</h2>",
    ]
    if not result.counts:
        parts.append("<p>No rows could be read.</p>")
    for column, counts in result.counts.items():
        parts.append(f"<h3>{esc(column)}</h3>")
        parts.append(_table([column, "images"], [[k, str(v)] for k, v in sorted(counts.items())]))
    parts.append("<h2>Rules</h2>")
    parts.append(
        _table(
            ["rule", "description", "rows checked", "rows broken", "result"],
            [
                [r.name, r.description, str(r.checked), str(r.broken), r.status]
                for r in result.rules
            ],
            classes=[r.status.replace(" ", "") for r in result.rules],
        )
    )
    parts.append(f"<h2>Problems ({len(result.problems)})</h2>")
    if result.problems:
        parts.append(
            "<ol>"
            + "".join(f"<li><code>{esc(str(p))}</code></li>" for p in result.problems)
            + "</ol>"
        )
    else:
        parts.append("<p>None.</p>")
    parts.append(f"<h2>First {min(PREVIEW_ROWS, result.rows)} rows of {MANIFEST_NAME}</h2>")
    header = ["line", *result.preview_header]
    parts.append(
        _table(
            header,
            [
                [str(i + 2), *(r.get(h, "") for h in result.preview_header)]
                for i, r in enumerate(result.preview)
            ],
        )
    )
    parts.append(
        "<p><small>Generated by palsyseg data validate (Great Expectations suite + content checks).</small></p>"
    )
    parts.append("</body></html>\n")
    return "\n".join(parts)
