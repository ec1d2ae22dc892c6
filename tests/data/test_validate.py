"""``palsyseg data validate`` on real files: a valid dataset passes; each broken rule is one line.

Every test hashes the dataset before and after: validation never modifies it, pass or fail.
The default dataset (conftest ``make_dataset``) has 18 rows: row ``k`` is on CSV line ``k + 2``;
lines 2-3 are patient p00 (healthy), lines 4-5 p01 (bells_palsy, left side).
"""

from __future__ import annotations

import csv
import os
import re
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest

from palsyseg.data.images import read_mask, write_png
from palsyseg.data.manifest import MANIFEST_NAME
from palsyseg.errors import DatasetError
from palsyseg.validate import validate_dataset


def edit_manifest(root: Path, line: int, **changes: str) -> None:
    """Set columns of the row on CSV ``line`` (header = 1) by editing the raw CSV."""
    path = root / MANIFEST_NAME
    with path.open(newline="", encoding="utf-8") as f:
        table = list(csv.reader(f))
    header = table[0]
    for column, value in changes.items():
        table[line - 1][header.index(column)] = value
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(table)


def png_with_header_only(width: int, height: int) -> bytes:
    """A PNG whose IHDR claims ``width``×``height`` but whose pixel data is a few bytes."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", ihdr)
        + chunk(b"IDAT", zlib.compress(b"\0" * 64))
        + chunk(b"IEND", b"")
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error: ")]


# ---- one broken rule at a time -------------------------------------------------------------
# Each breaker mutates a fresh valid dataset; the CLI must exit 1 with exactly one error line
# naming ``manifest.csv:<line>: <column>`` and containing the rule's words.


def _missing_file(root: Path, outside: Path) -> None:
    (root / "images/p01/p01_0.png").unlink()


def _undecodable_image(root: Path, outside: Path) -> None:
    (root / "images/p01/p01_0.png").write_bytes(b"this is not an image at all")


def _truncated_image(root: Path, outside: Path) -> None:
    path = root / "images/p01/p01_0.png"
    path.write_bytes(path.read_bytes()[:60])


def _size_mismatch(root: Path, outside: Path) -> None:
    write_png(root / "masks/p01/p01_0.png", np.ones((40, 32), np.uint8))


def _rgb_mask(root: Path, outside: Path) -> None:
    mask = read_mask(root / "masks/p01/p01_0.png")
    write_png(root / "masks/p01/p01_0.png", np.dstack([mask, mask, mask]))


def _mask_16_bit(root: Path, outside: Path) -> None:
    mask = read_mask(root / "masks/p01/p01_0.png")
    write_png(root / "masks/p01/p01_0.png", mask.astype(np.uint16))


def _mask_value_7(root: Path, outside: Path) -> None:
    mask = read_mask(root / "masks/p01/p01_0.png")
    mask[0, 0] = 7
    write_png(root / "masks/p01/p01_0.png", mask)


def _fpp_on_healthy(root: Path, outside: Path) -> None:
    mask = read_mask(root / "masks/p00/p00_0.png")
    mask[10:12, 10:12] = 6
    write_png(root / "masks/p00/p00_0.png", mask)


def _symlink_escape(root: Path, outside: Path) -> None:
    target = outside / "elsewhere.png"
    target.write_bytes((root / "masks/p01/p01_0.png").read_bytes())
    (root / "masks/p01/p01_0.png").unlink()
    os.symlink(target, root / "masks/p01/p01_0.png")


def _absolute_path(root: Path, outside: Path) -> None:
    edit_manifest(root, 4, image=str((root / "images/p01/p01_0.png").resolve()))


def _dotdot_path(root: Path, outside: Path) -> None:
    edit_manifest(root, 4, image="images/../../elsewhere/p01_0.png")


def _duplicate_image(root: Path, outside: Path) -> None:
    edit_manifest(root, 5, image="images/p01/p01_0.png")


def _healthy_with_side(root: Path, outside: Path) -> None:
    edit_manifest(root, 2, affected_side="left")


def _bomb_header(root: Path, outside: Path) -> None:
    (root / "images/p01/p01_0.png").write_bytes(png_with_header_only(7000, 7000))


BROKEN_RULES: dict[str, tuple[Callable[[Path, Path], None], str, str]] = {
    # name: (breaker, "manifest.csv:<line>: <column>", words of the rule)
    "missing file": (
        _missing_file,
        "manifest.csv:4: image",
        "images/p01/p01_0.png: file does not exist",
    ),
    "undecodable image": (
        _undecodable_image,
        "manifest.csv:4: image",
        "p01_0.png: not a readable image",
    ),
    "truncated image": (
        _truncated_image,
        "manifest.csv:4: image",
        "p01_0.png: image does not decode",
    ),
    "size mismatch": (_size_mismatch, "manifest.csv:4: mask", "size 32×40 differs from image"),
    "RGB mask": (_rgb_mask, "manifest.csv:4: mask", "mask has 3 channels (must be single-channel)"),
    "16-bit mask": (_mask_16_bit, "manifest.csv:4: mask", "mask is uint16 (must be 8-bit)"),
    "value 7 in mask": (
        _mask_value_7,
        "manifest.csv:4: mask",
        "holds value(s) 7 (label values are 0–6)",
    ),
    "fpp on healthy": (
        _fpp_on_healthy,
        "manifest.csv:2: mask",
        "4 pixel(s) labelled fpp (6) on a healthy face",
    ),
    "symlink escape": (
        _symlink_escape,
        "manifest.csv:4: mask",
        "resolves outside the dataset root",
    ),
    "absolute path": (_absolute_path, "manifest.csv:4: image", "is absolute"),
    "dotdot path": (_dotdot_path, "manifest.csv:4: image", "contains '..'"),
    "duplicate image": (_duplicate_image, "manifest.csv:5: image", "already listed on line 4"),
    "healthy with side": (
        _healthy_with_side,
        "manifest.csv:2: affected_side",
        "none if and only if healthy",
    ),
    "bomb header": (
        _bomb_header,
        "manifest.csv:4: image",
        "7000×7000 = 49000000 pixels exceeds the limit of 40000000",
    ),
}


def test_valid_dataset_passes(cli, dataset: Path, tree_digest) -> None:
    before = tree_digest(dataset)
    result = cli("data", "validate", dataset)
    assert result.code == 0, result.stderr
    assert f"{dataset}: OK" in result.stdout
    assert re.search(r"(\d+)/\1 rules passed", result.stdout)
    assert re.search(r"bells_palsy\W+3\W+6\W", result.stdout)  # patients, images
    assert re.search(r"all\W+9\W+18\W", result.stdout)
    assert tree_digest(dataset) == before


def test_valid_dataset_with_depth_and_extra_column_passes(tmp_path: Path, make_dataset) -> None:
    root = tmp_path / "ds"
    make_dataset(root, patients=3, depth=True, landmarks=True)
    result = validate_dataset(root)
    assert result.ok, [str(p) for p in result.problems]
    assert {r.name: r.checked for r in result.rules}["depth_size"] == 6
    assert all(r.passed for r in result.rules)


@pytest.mark.parametrize("name", list(BROKEN_RULES))
def test_each_broken_rule_is_one_line_naming_row_and_rule(
    cli, dataset: Path, tmp_path: Path, tree_digest, name: str
) -> None:
    breaker, where, words = BROKEN_RULES[name]
    outside = tmp_path / "outside"
    outside.mkdir()
    breaker(dataset, outside)
    before = tree_digest(dataset)
    result = cli("data", "validate", dataset)
    assert result.code == 1
    assert "Traceback" not in result.stderr
    lines = error_lines(result.stderr)
    assert len(lines) == 1, lines
    assert f"{dataset / where}:" in lines[0] and words in lines[0], lines[0]
    assert tree_digest(dataset) == before


def test_small_pixel_limit_refuses_before_decoding(dataset: Path) -> None:
    result = validate_dataset(dataset, max_pixels=32 * 32 - 1)
    assert not result.ok
    rules = {r.name: r for r in result.rules}
    assert rules["image_pixel_limit"].broken == 18 and rules["mask_pixel_limit"].broken == 18
    assert rules["image_decodes"].checked == 0  # nothing over the limit was decoded
    assert "32×32 = 1024 pixels exceeds the limit of 1023" in str(result.problems[0])


def test_several_problems_are_reported_together(
    cli, dataset: Path, tmp_path: Path, tree_digest
) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    for breaker in (_missing_file, _mask_value_7, _healthy_with_side, _fpp_on_healthy):
        breaker(dataset, outside)
    _mask_value_7_on(dataset, "masks/p02/p02_1.png")
    before = tree_digest(dataset)
    result = cli("data", "validate", dataset)
    assert result.code == 1
    lines = error_lines(result.stderr)
    # line 2 (healthy with side left) no longer parses, so its fpp mask is not content-checked
    expected = {
        "manifest.csv:2: affected_side": "none if and only if healthy",
        "manifest.csv:4: image": "file does not exist",
        "manifest.csv:4: mask": "holds value(s) 7",
        "manifest.csv:7: mask": "holds value(s) 7",
    }
    assert len(lines) == len(expected), lines
    for where, words in expected.items():
        assert any(f"{dataset / where}:" in line and words in line for line in lines), (
            where,
            lines,
        )
    assert tree_digest(dataset) == before


def _mask_value_7_on(root: Path, rel: str) -> None:
    mask = read_mask(root / rel)
    mask[-1, -1] = 9
    mask[0, 0] = 7
    write_png(root / rel, mask)


def test_rows_after_a_malformed_row_are_still_checked(dataset: Path) -> None:
    path = dataset / MANIFEST_NAME
    lines = path.read_text(encoding="utf-8").splitlines()
    lines[2] += ",surplus"  # line 3 has more fields than the header
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    (dataset / "masks/p03/p03_0.png").unlink()  # line 8
    result = validate_dataset(dataset)
    text = [str(p) for p in result.problems]
    assert any(":3: more fields than the header" in t for t in text), text
    assert any(":8: mask: masks/p03/p03_0.png: file does not exist" in t for t in text), text
    assert len(text) == 2, text


def test_missing_required_column_is_one_line_not_one_per_row(dataset: Path) -> None:
    path = dataset / MANIFEST_NAME
    with path.open(newline="", encoding="utf-8") as f:
        table = [row[:3] + row[4:] for row in csv.reader(f)]  # drop "diagnosis"
    with path.open("w", newline="", encoding="utf-8") as f:
        csv.writer(f, lineterminator="\n").writerows(table)
    result = validate_dataset(dataset)
    assert [str(p) for p in result.problems] == [
        f"{path}:1: diagnosis: required column is missing from the header"
    ]
    assert {r.name: r.broken for r in result.rules}["required_columns"] == 1


def test_missing_dataset_and_missing_manifest(cli, tmp_path: Path) -> None:
    result = cli("data", "validate", tmp_path / "nowhere")
    assert result.code == 1 and "dataset directory does not exist" in result.stderr
    (tmp_path / "empty").mkdir()
    result = cli("data", "validate", tmp_path / "empty")
    assert result.code == 1 and "manifest.csv: missing" in result.stderr
    assert list((tmp_path / "empty").iterdir()) == []


def test_html_report_names_failures_and_is_written_on_failure(
    cli, dataset: Path, tmp_path: Path, tree_digest
) -> None:
    _mask_value_7(dataset, tmp_path)
    _missing_file(dataset, tmp_path)
    before = tree_digest(dataset)
    report = tmp_path / "reports" / "validation.html"
    result = cli("data", "validate", dataset, "--report", report)
    assert result.code == 1
    page = report.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "FAILED: 2 problem(s)" in page
    assert str(dataset.resolve()) in page
    assert "images/p01/p01_0.png: file does not exist" in page
    assert "holds value(s) 7" in page
    assert "<td>mask_values</td>" in page and "<td>image_exists</td>" in page
    assert "<td>bells_palsy</td><td>6</td>" in page  # counts per diagnosis
    assert "<td>p00</td>" in page  # first rows of the manifest
    assert "http" not in page.replace("http-equiv", "")  # self-contained: no links or fetches
    assert sorted(p.name for p in report.parent.iterdir()) == ["validation.html"]  # no temp left
    assert tree_digest(dataset) == before


def test_html_report_on_pass(dataset: Path, tmp_path: Path) -> None:
    report = tmp_path / "ok.html"
    result = validate_dataset(dataset, report=report)
    assert result.ok
    page = report.read_text(encoding="utf-8")
    assert "PASSED" in page and "FAIL<" not in page and "None." in page


def test_report_inside_the_dataset_is_refused(dataset: Path, tree_digest) -> None:
    before = tree_digest(dataset)
    with pytest.raises(DatasetError, match="inside the dataset"):
        validate_dataset(dataset, report=dataset / "report.html")
    assert tree_digest(dataset) == before


def test_result_to_dict_lists_rules_and_problems(dataset: Path) -> None:
    _missing_file(dataset, dataset)
    data = validate_dataset(dataset).to_dict()
    assert data["ok"] is False and data["rows"] == 18 and data["patients"] == 9
    assert data["counts"]["diagnosis"] == {"healthy": 6, "bells_palsy": 6, "stroke": 6}
    assert data["patients_per_diagnosis"] == {"healthy": 3, "bells_palsy": 3, "stroke": 3}
    statuses = {r["name"]: r["status"] for r in data["rules"]}
    assert statuses["image_exists"] == "FAIL" and statuses["mask_values"] == "pass"
    assert len(data["problems"]) == 1
