"""The manifest contract (shared/CONTRACT.md): reading, writing and every rejection rule."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from palsyseg.data.manifest import (
    COLUMNS,
    ManifestRow,
    read_manifest,
    resolve_in_root,
    write_manifest,
)
from palsyseg.errors import DatasetError

HEADER = ",".join(COLUMNS)


def write_csv(root: Path, *lines: str, header: str = HEADER) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    (root / "manifest.csv").write_text("\n".join([header, *lines]) + "\n", encoding="utf-8")
    return root


def good_line(image: str = "images/a.png", **overrides: str) -> str:
    values = {
        "image": image,
        "mask": image.replace("images/", "masks/").rsplit(".", 1)[0] + ".png",
        "patient_id": "p1",
        "diagnosis": "bells_palsy",
        "affected_side": "left",
        "grade": "3",
        "depth": "",
        "pose": "smile",
        "beard": "false",
        "glasses": "true",
        "skin_tone": "4",
    }
    values.update(overrides)
    return ",".join(values[c] for c in COLUMNS)


def test_round_trip_keeps_values_and_extra_columns(tmp_path: Path) -> None:
    rows = [
        ManifestRow(
            "images/a.png",
            "masks/a.png",
            "p1",
            "stroke",
            "right",
            grade=4,
            pose="rest",
            beard=True,
            glasses=False,
            skin_tone=6,
            extras={"source": "synth"},
        ),
        ManifestRow("images/b.jpg", "masks/b.png", "p2", "healthy", "none", depth="depth/b.png"),
    ]
    write_manifest(tmp_path, rows)
    back = read_manifest(tmp_path)
    assert back == rows
    assert back[0].extras == {"source": "synth"}
    assert back[1].grade is None and back[1].beard is None


def test_valid_row_parses(tmp_path: Path) -> None:
    (row,) = read_manifest(write_csv(tmp_path, good_line()))
    assert (row.diagnosis, row.affected_side, row.grade, row.glasses, row.beard) == (
        "bells_palsy",
        "left",
        3,
        True,
        False,
    )


@pytest.mark.parametrize(
    ("overrides", "column", "rule_fragment"),
    [
        ({"diagnosis": "flu"}, "diagnosis", "not one of"),
        ({"affected_side": "none"}, "affected_side", "none if and only if healthy"),
        ({"diagnosis": "healthy", "grade": "1"}, "affected_side", "none if and only if healthy"),
        ({"grade": "7"}, "grade", "House–Brackmann"),
        ({"grade": "1"}, "grade", "grade 1 (normal function)"),
        ({"skin_tone": "0"}, "skin_tone", "Fitzpatrick"),
        ({"pose": "frown"}, "pose", "not one of"),
        ({"beard": "yes"}, "beard", "not true or false"),
        ({"patient_id": ""}, "patient_id", "required value is empty"),
        ({"image": "/etc/passwd.png"}, "image", "absolute"),
        ({"mask": "masks/../../x.png"}, "mask", "'..'"),
        ({"mask": "masks\\a.png"}, "mask", "backslashes"),
        ({"image": "images/a.gif"}, "image", "not a PNG or JPEG"),
        ({"depth": "depth/a.jpg"}, "depth", "not a PNG"),
    ],
)
def test_each_broken_rule_names_row_column_and_rule(
    tmp_path: Path, overrides: dict[str, str], column: str, rule_fragment: str
) -> None:
    root = write_csv(tmp_path, good_line(**overrides))
    with pytest.raises(DatasetError) as info:
        read_manifest(root)
    lines = info.value.lines()
    assert any(f"manifest.csv:2: {column}:" in line and rule_fragment in line for line in lines), (
        lines
    )


def test_all_problems_are_reported_at_once(tmp_path: Path) -> None:
    root = write_csv(
        tmp_path, good_line(diagnosis="flu"), good_line("images/b.png", grade="9"), good_line()
    )
    with pytest.raises(DatasetError) as info:
        read_manifest(root)
    lines = info.value.lines()
    assert any(":2: diagnosis" in line for line in lines)
    assert any(":3: grade" in line for line in lines)
    assert any(":4: image" in line and "already listed on line" in line for line in lines)


def test_missing_required_column_and_missing_file(tmp_path: Path) -> None:
    root = write_csv(tmp_path / "a", "x,y", header="image,mask")
    with pytest.raises(DatasetError, match="patient_id: required column is missing"):
        read_manifest(root)
    (tmp_path / "b").mkdir()
    with pytest.raises(DatasetError, match=r"manifest\.csv: missing"):
        read_manifest(tmp_path / "b")
    with pytest.raises(DatasetError, match="no rows"):
        read_manifest(write_csv(tmp_path / "c"))


def test_not_utf8_is_one_clear_error(tmp_path: Path) -> None:
    tmp_path.joinpath("manifest.csv").write_bytes(HEADER.encode() + b"\n\xff\xfe,bad\n")
    with pytest.raises(DatasetError, match="not UTF-8"):
        read_manifest(tmp_path)


def test_symlink_escaping_root_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.png").write_bytes(b"x")
    root = tmp_path / "ds"
    (root / "images").mkdir(parents=True)
    os.symlink(outside / "secret.png", root / "images" / "a.png")
    with pytest.raises(DatasetError, match="outside the dataset root"):
        resolve_in_root(root, "images/a.png")
    write_csv(root, good_line())
    with pytest.raises(DatasetError, match=r"manifest.csv:2: image: .*outside the dataset root"):
        read_manifest(root)


def test_symlink_inside_root_is_allowed(tmp_path: Path) -> None:
    (tmp_path / "images").mkdir()
    (tmp_path / "images" / "real.png").write_bytes(b"x")
    os.symlink(tmp_path / "images" / "real.png", tmp_path / "images" / "a.png")
    assert resolve_in_root(tmp_path, "images/a.png") == (tmp_path / "images" / "real.png").resolve()


def test_write_is_atomic_on_failure(tmp_path: Path) -> None:
    write_manifest(tmp_path, [ManifestRow("images/a.png", "masks/a.png", "p1", "healthy", "none")])
    before = (tmp_path / "manifest.csv").read_text()

    class Boom(ManifestRow):
        def to_record(self) -> dict[str, str]:
            raise RuntimeError("boom")

    with pytest.raises(RuntimeError):
        write_manifest(tmp_path, [Boom("images/b.png", "masks/b.png", "p1", "healthy", "none")])
    assert (tmp_path / "manifest.csv").read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.csv"]


def test_atomic_outputs_get_the_normal_file_mode(tmp_path: Path) -> None:
    from palsyseg.atomic import atomic_directory, atomic_write_text

    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "a.txt", "x")
        with atomic_directory(tmp_path / "out") as staging:
            (staging / "f").write_text("y")
    finally:
        os.umask(old)
    assert (tmp_path / "a.txt").stat().st_mode & 0o777 == 0o644
    assert (tmp_path / "out").stat().st_mode & 0o777 == 0o755


@pytest.mark.parametrize(
    ("patient_id", "code"),
    [("p\x001", "U+0000"), ("p1\x1b[31m", "U+001B"), ("p\u200b1", "U+200B"), ("p1\x7f", "U+007F")],
)
def test_control_or_invisible_characters_in_a_value_are_one_line_each(
    tmp_path: Path, patient_id: str, code: str
) -> None:
    # csv happily reads a NUL; the contract does not: "p1" and "p\u200b1" look like one patient.
    root = write_csv(tmp_path, good_line(patient_id=patient_id), good_line("images/b.png"))
    with pytest.raises(DatasetError) as info:
        read_manifest(root)
    lines = info.value.lines()
    assert len(lines) == 1 and "\n" not in lines[0]
    assert "manifest.csv:2: patient_id:" in lines[0] and code in lines[0]
    assert "\x00" not in lines[0] and "\x1b" not in lines[0]  # shown escaped, never raw


def test_a_manifest_symlinked_out_of_the_dataset_is_refused(tmp_path: Path) -> None:
    elsewhere = write_csv(tmp_path / "elsewhere", good_line())
    root = tmp_path / "ds"
    root.mkdir()
    os.symlink(elsewhere / "manifest.csv", root / "manifest.csv")
    with pytest.raises(DatasetError) as info:
        read_manifest(root)
    (line,) = info.value.lines()
    assert line.startswith(f"{root / 'manifest.csv'}: symbolic link to ")
    assert "outside the dataset root" in line

    # a link that stays inside the dataset (a versioned copy, say) is the dataset's own
    (root / "manifests").mkdir()
    (root / "manifest.csv").unlink()
    write_csv(root / "manifests", good_line())
    os.symlink(Path("manifests") / "manifest.csv", root / "manifest.csv")
    assert [row.patient_id for row in read_manifest(root)] == ["p1"]
