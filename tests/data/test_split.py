"""``palsyseg data split``: patient-grouped, diagnosis-stratified, deterministic, whole datasets out."""

from __future__ import annotations

import errno
import json
import os
from pathlib import Path

import pytest

from palsyseg.data.manifest import ManifestRow, read_manifest, write_manifest
from palsyseg.errors import ConfigError, DatasetError
from palsyseg.params import from_section
from palsyseg.split import (
    SPLITS,
    SplitConfig,
    apportion,
    assign_patients,
    check_no_leakage,
    split_dataset,
)
from palsyseg.validate import validate_dataset


@pytest.fixture
def big_dataset(tmp_path: Path, make_dataset) -> Path:
    """30 patients (10 per diagnosis), one or two 16×16 images each."""
    root = tmp_path / "big"
    make_dataset(root, patients=30, images_per_patient=1, size=16)
    return root


def manifests(out: Path) -> dict[str, list[ManifestRow]]:
    return {s: read_manifest(out / s) for s in SPLITS}


def patients_of(rows: list[ManifestRow]) -> set[str]:
    return {r.patient_id for r in rows}


def rows_for(counts: dict[str, int]) -> list[ManifestRow]:
    """Manifest rows (no files) with ``counts[diagnosis]`` patients of two images each."""
    rows = []
    for diagnosis, n in counts.items():
        side = "none" if diagnosis == "healthy" else "left"
        for i in range(n):
            for k in range(2):
                rows.append(
                    ManifestRow(
                        f"images/{diagnosis}{i}_{k}.png",
                        "m.png",
                        f"{diagnosis}{i}",
                        diagnosis,
                        side,
                    )
                )
    return rows


def test_same_seed_same_split_and_other_seed_differs(big_dataset: Path, tmp_path: Path) -> None:
    first = split_dataset(big_dataset, tmp_path / "a", SplitConfig(seed=3))
    second = split_dataset(big_dataset, tmp_path / "b", SplitConfig(seed=3))
    other = split_dataset(big_dataset, tmp_path / "c", SplitConfig(seed=4))
    for split in SPLITS:
        a = (tmp_path / "a" / split / "manifest.csv").read_bytes()
        assert a == (tmp_path / "b" / split / "manifest.csv").read_bytes()
    assert (tmp_path / "a/summary.json").read_bytes() == (tmp_path / "b/summary.json").read_bytes()
    assert first.assignment == second.assignment
    assert other.assignment != first.assignment


def test_no_patient_in_two_splits_and_every_image_once(big_dataset: Path, tmp_path: Path) -> None:
    split_dataset(big_dataset, tmp_path / "out", SplitConfig())
    got = manifests(tmp_path / "out")
    train, val, test = (patients_of(got[s]) for s in SPLITS)
    assert not (train & val) and not (train & test) and not (val & test)
    assert train | val | test == patients_of(read_manifest(big_dataset))
    images = sorted(r.image for s in SPLITS for r in got[s])
    assert images == sorted(r.image for r in read_manifest(big_dataset))
    check_no_leakage(tmp_path / "out")  # the standalone check agrees


def test_stratified_by_diagnosis_with_configured_shares(big_dataset: Path, tmp_path: Path) -> None:
    summary = split_dataset(
        big_dataset, tmp_path / "out", SplitConfig(train=0.6, val=0.2, test=0.2)
    )
    got = manifests(tmp_path / "out")
    for diagnosis in ("healthy", "bells_palsy", "stroke"):
        per_split = [
            len(patients_of([r for r in got[s] if r.diagnosis == diagnosis])) for s in SPLITS
        ]
        assert per_split == [6, 2, 2], (diagnosis, per_split)
        assert [summary.patients[s][diagnosis] for s in SPLITS] == per_split


def test_each_diagnosis_with_three_patients_is_in_every_split(tmp_path: Path, make_dataset) -> None:
    root = tmp_path / "ds"
    make_dataset(root, patients=9)  # 3 patients per diagnosis: 0.7 * 3 would leave val/test short
    split_dataset(root, tmp_path / "out", SplitConfig())
    for split, rows in manifests(tmp_path / "out").items():
        assert {r.diagnosis for r in rows} == {"healthy", "bells_palsy", "stroke"}, split


def test_every_split_is_a_valid_dataset_with_its_files(
    tmp_path: Path, make_dataset, tree_digest
) -> None:
    root = tmp_path / "ds"
    make_dataset(root, patients=9, depth=True, landmarks=True)
    before = tree_digest(root)
    summary = split_dataset(root, tmp_path / "out", SplitConfig())
    assert tree_digest(root) == before
    for split in SPLITS:
        result = validate_dataset(tmp_path / "out" / split)
        assert result.ok, [str(p) for p in result.problems]
        for row in read_manifest(tmp_path / "out" / split):
            for rel in (row.image, row.mask, row.depth, row.extras["landmarks"]):
                assert (tmp_path / "out" / split / rel).samefile(
                    root / rel
                )  # hard link, same bytes
    assert summary.linked == 18 * 4 and summary.copied == 0


def test_copies_when_hard_links_are_impossible(dataset: Path, tmp_path: Path, monkeypatch) -> None:
    def no_links(src: object, dst: object) -> None:
        raise OSError(errno.EXDEV, "Invalid cross-device link")

    monkeypatch.setattr(os, "link", no_links)
    summary = split_dataset(dataset, tmp_path / "out", SplitConfig())
    assert summary.copied == 36 and summary.linked == 0
    row = read_manifest(tmp_path / "out/train")[0]
    copy = tmp_path / "out/train" / row.mask
    assert copy.read_bytes() == (dataset / row.mask).read_bytes() and not copy.samefile(
        dataset / row.mask
    )
    assert validate_dataset(tmp_path / "out/train").ok


def test_summary_numbers_match_the_manifests(big_dataset: Path, tmp_path: Path) -> None:
    split_dataset(big_dataset, tmp_path / "out", SplitConfig(seed=11))
    summary = json.loads((tmp_path / "out/summary.json").read_text(encoding="utf-8"))
    assert summary["seed"] == 11 and summary["ratios"] == {"train": 0.7, "val": 0.15, "test": 0.15}
    assert summary["source"] == str(big_dataset.resolve())
    for split, rows in manifests(tmp_path / "out").items():
        for diagnosis in ("healthy", "bells_palsy", "stroke"):
            of_diagnosis = [r for r in rows if r.diagnosis == diagnosis]
            assert summary["images"][split][diagnosis] == len(of_diagnosis)
            assert summary["patients"][split][diagnosis] == len(patients_of(of_diagnosis))
        assert summary["totals"][split] == {"patients": len(patients_of(rows)), "images": len(rows)}


def test_leakage_check_catches_a_planted_leak(dataset: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    split_dataset(dataset, out, SplitConfig())
    train, val = read_manifest(out / "train"), read_manifest(out / "val")
    leaked = train[0]
    write_manifest(out / "val", [*val, leaked])
    with pytest.raises(DatasetError) as caught:
        check_no_leakage(out)
    (line,) = caught.value.lines()
    assert f"{out / 'val' / 'manifest.csv'}:{len(val) + 2}: patient_id:" in line
    assert f"patient {leaked.patient_id!r} is in both train and val" in line
    # the same check on manifests in memory
    with pytest.raises(DatasetError, match="is in both train and test"):
        check_no_leakage({"train": train, "test": [leaked]})
    check_no_leakage({"train": train, "val": val})


def test_cli_split_refuses_non_empty_out_without_force(cli, dataset: Path, tmp_path: Path) -> None:
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  seed: 5\n", encoding="utf-8")
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("precious", encoding="utf-8")
    result = cli("data", "split", dataset, "--out", out, "--params", params)
    assert result.code == 1 and "not empty" in result.stderr and "Traceback" not in result.stderr
    assert [p.name for p in out.iterdir()] == ["keep.txt"]
    result = cli("data", "split", dataset, "--out", out, "--params", params, "--force")
    assert result.code == 0, result.stderr
    assert sorted(p.name for p in out.iterdir()) == ["summary.json", "test", "train", "val"]
    assert "bells_palsy" in result.stdout and "train patients" in result.stdout
    assert json.loads((out / "summary.json").read_text(encoding="utf-8"))["seed"] == 5
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no staging left


def test_bad_input_leaves_no_output(cli, dataset: Path, tmp_path: Path) -> None:
    (dataset / "images/p01/p01_0.png").unlink()
    out = tmp_path / "out"
    with pytest.raises(
        DatasetError, match=r"manifest.csv:4: image: images/p01/p01_0.png: file does not exist"
    ):
        split_dataset(dataset, out, SplitConfig())
    assert not out.exists()
    (dataset / "manifest.csv").write_text("image,mask\n", encoding="utf-8")
    params = tmp_path / "params.yaml"
    params.write_text("split: {}\n", encoding="utf-8")
    result = cli("data", "split", dataset, "--out", out, "--params", params)
    assert result.code == 1 and "required column is missing" in result.stderr
    assert not out.exists() and [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_ratios_must_sum_to_one_and_be_positive(cli, dataset: Path, tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="must sum to 1"):
        SplitConfig(train=0.8, val=0.15, test=0.15)
    with pytest.raises(ConfigError, match="must be > 0"):
        SplitConfig(train=0.85, val=0.15, test=0.0)
    config = from_section({"seed": 1, "train": 0.5, "val": 0.25, "test": 0.25}, SplitConfig)
    assert config == SplitConfig(seed=1, train=0.5, val=0.25, test=0.25)
    params = tmp_path / "params.yaml"
    params.write_text("split:\n  train: 0.9\n", encoding="utf-8")
    result = cli("data", "split", dataset, "--out", tmp_path / "out", "--params", params)
    assert result.code == 1
    assert f"error: {params}:split: split ratios train + val + test must sum to 1" in result.stderr
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("n", range(1, 40))
def test_apportion_sums_and_keeps_every_split_for_three_or_more(n: int) -> None:
    for ratios in ([0.7, 0.15, 0.15], [0.8, 0.1, 0.1], [0.34, 0.33, 0.33]):
        counts = apportion(n, ratios)
        assert sum(counts) == n
        if n >= 3:
            assert min(counts) >= 1
            assert all(abs(c - n * r) < 1.5 for c, r in zip(counts, ratios, strict=True)), counts
    assert apportion(1, [0.7, 0.15, 0.15]) == [1, 0, 0]
    assert apportion(2, [0.7, 0.15, 0.15]) == [1, 0, 1]


def test_fallback_for_small_diagnoses_keeps_every_split_non_empty() -> None:
    rows = rows_for({"healthy": 2, "bells_palsy": 1, "stroke": 5})
    assignment = assign_patients(rows, SplitConfig())
    assert assignment == assign_patients(rows, SplitConfig())  # deterministic
    by_split = {s: {p for p, where in assignment.items() if where == s} for s in SPLITS}
    assert by_split["train"] >= {"bells_palsy0"}
    assert sorted(assignment[p] for p in ("healthy0", "healthy1")) == ["test", "train"]
    assert all(any(p.startswith("stroke") for p in by_split[s]) for s in SPLITS)
    # one patient per diagnosis: all would train; the empty splits borrow from train
    tiny = assign_patients(rows_for({"healthy": 1, "bells_palsy": 1, "stroke": 1}), SplitConfig())
    assert sorted(tiny.values()) == ["test", "train", "val"]
    with pytest.raises(DatasetError, match="needs at least 3"):
        assign_patients(rows_for({"stroke": 2}), SplitConfig())


def test_patient_with_mixed_diagnoses_stays_in_one_split(tmp_path: Path, make_dataset) -> None:
    root = tmp_path / "ds"
    rows = make_dataset(root, patients=9)
    # p00's second image relabelled as another patient's: p00 now spans healthy and bells_palsy
    rows[1] = ManifestRow(rows[1].image, rows[1].mask, "p00", "healthy", "none")
    rows[2] = ManifestRow(rows[2].image, rows[2].mask, "p00", "bells_palsy", "left")
    write_manifest(root, rows)
    summary = split_dataset(root, tmp_path / "out", SplitConfig())
    homes = [s for s, got in manifests(tmp_path / "out").items() if "p00" in patients_of(got)]
    assert len(homes) == 1
    assert sum(summary.images[s].get("bells_palsy", 0) for s in SPLITS) == 6
