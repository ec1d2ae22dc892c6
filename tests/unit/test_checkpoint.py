"""The checkpoint format on real files: digests, one-line refusals, old files, atomic writes.

Checkpoints here are written by :func:`palsyseg.checkpoint.save_checkpoint` from a real
palsynet (2 MB of weights); the training loop's own files (``best.pt`` after training, a run
killed mid-write) are exercised at the end of ``tests/model/test_train.py``.
"""

from __future__ import annotations

import logging
import os
import random
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from palsyseg.checkpoint import (
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    TRAINING_DIGEST,
    WEIGHTS_DIGEST,
    CheckpointError,
    load_checkpoint_model,
    read_checkpoint,
    save_checkpoint,
    state_sha256,
)
from palsyseg.labels import NUM_CLASSES
from palsyseg.models import create_model
from palsyseg.train import TrainConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def payload(seed: int = 0, *, training: bool = False) -> dict:
    torch.manual_seed(seed)
    model = create_model("palsynet", num_classes=NUM_CLASSES)
    config = TrainConfig(model="palsynet", image_size=32, device="cpu")
    data = {
        "format": CHECKPOINT_FORMAT,
        "version": CHECKPOINT_VERSION,
        "model_state": model.state_dict(),
        "metadata": {
            "model_name": "palsynet",
            "num_classes": NUM_CLASSES,
            "image_size": 32,
            "epoch": 1,
            "palsy_threshold": 0.25,
            "train_config": config.to_dict(),
        },
    }
    if training:
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
        model(torch.zeros(1, 3, 32, 32))["logits"].sum().backward()
        optimizer.step()
        data["training"] = {
            "epoch": 1,
            "best_key": [-float("inf"), 0.5],
            "optimizer": optimizer.state_dict(),
        }
    return data


@pytest.fixture(scope="module")
def written(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A best.pt-like checkpoint: weights and metadata."""
    path = tmp_path_factory.mktemp("ckpt") / "best.pt"
    save_checkpoint(path, payload())
    return path


@pytest.fixture(scope="module")
def resumable(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A last.pt-like checkpoint: with a training state (an SGD step's momentum)."""
    path = tmp_path_factory.mktemp("ckpt") / "last.pt"
    save_checkpoint(path, payload(training=True))
    return path


def one_line_refusal(path: Path, match: str) -> str:
    with pytest.raises(CheckpointError, match=match) as info:
        load_checkpoint_model(path)
    (line,) = info.value.lines()
    assert line.startswith(f"{path}: ") and "\n" not in line
    return line


def test_the_weights_digest_is_stored_exposed_and_stable(written: Path, resumable: Path) -> None:
    data = read_checkpoint(written)
    digest = data["metadata"][WEIGHTS_DIGEST]
    # what was saved, recomputed from the loaded tensors and from a freshly built same model
    assert len(digest) == 64 and digest == state_sha256(payload()["model_state"])
    model, meta = load_checkpoint_model(written)
    assert meta[WEIGHTS_DIGEST] == digest == state_sha256(model.state_dict())
    assert state_sha256(payload(seed=1)["model_state"]) != digest  # other weights, other digest
    last = read_checkpoint(resumable)
    assert last[TRAINING_DIGEST] == state_sha256(last["training"])
    assert last["metadata"][WEIGHTS_DIGEST] != digest  # the SGD step moved the weights


def test_a_changed_weight_or_training_state_is_refused(
    written: Path, resumable: Path, tmp_path: Path
) -> None:
    data = read_checkpoint(written)
    first = next(iter(data["model_state"]))
    data["model_state"][first].view(-1)[0] += 1e-3  # the stored digest stays the old one
    torch.save(data, tmp_path / "altered.pt")
    one_line_refusal(tmp_path / "altered.pt", "weights do not match their SHA-256")

    data = read_checkpoint(resumable)
    data["training"]["epoch"] = 7
    torch.save(data, tmp_path / "resumable.pt")
    with pytest.raises(CheckpointError, match="training state does not match its SHA-256"):
        read_checkpoint(tmp_path / "resumable.pt")


def test_single_byte_flips_never_load_other_weights(written: Path, tmp_path: Path) -> None:
    good = written.read_bytes()
    reference = state_sha256(read_checkpoint(written))
    rng = random.Random(10)
    outcomes = {"refused": 0, "identical": 0}
    for _ in range(100):
        data = bytearray(good)
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        flipped = tmp_path / "flipped.pt"
        flipped.write_bytes(bytes(data))
        try:
            loaded = read_checkpoint(flipped)
        except CheckpointError as exc:
            assert str(exc).startswith(f"{flipped}: ") and "\n" not in str(exc)
            outcomes["refused"] += 1
        else:  # a flip in zip padding or an unused header field changes nothing loaded
            assert state_sha256(loaded) == reference
            outcomes["identical"] += 1
    assert outcomes["refused"] >= 90, outcomes


def test_text_garbage_and_truncated_files_are_one_line_each(written: Path, tmp_path: Path) -> None:
    good = written.read_bytes()
    rng = random.Random(3)
    cases: dict[str, bytes] = {
        "notes.txt": b"hello, this is not a checkpoint\nsecond line\n",
        "params.yaml": b"train:\n  epochs: 3\n",
        "data.json": b'{"model_state": {}}',
        "empty.pt": b"",
        "nul.pt": b"\x00" * 4096,
    }
    for i in range(90):
        kind = i % 3
        if kind == 0:  # printable text of any length
            data = bytes(rng.randrange(32, 127) for _ in range(rng.randrange(1, 3000)))
        elif kind == 1:  # a real checkpoint cut anywhere
            data = good[: rng.randrange(len(good))]
        else:  # a real checkpoint with a run of random bytes written over it
            start, length = rng.randrange(len(good)), rng.randrange(1, 400)
            data = good[:start] + rng.randbytes(length) + good[start + length :]
        cases[f"fuzz{i}.pt"] = data
    reference = state_sha256(read_checkpoint(written))
    for name, data in cases.items():
        path = tmp_path / name
        path.write_bytes(data)
        try:
            loaded = read_checkpoint(path)
        except CheckpointError as exc:
            (line,) = exc.lines()
            assert line.startswith(f"{path}: "), line
        else:
            assert state_sha256(loaded) == reference, name
        path.unlink()

    (tmp_path / "notes.txt").write_bytes(cases["notes.txt"])
    line = one_line_refusal(tmp_path / "notes.txt", "corrupt or truncated, or another kind of file")
    assert "Error" in line  # the parser's complaint, named by its type
    one_line_refusal(tmp_path, "is a directory, not a checkpoint file")


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads any file")
def test_an_unreadable_file_says_so(written: Path, tmp_path: Path) -> None:
    path = tmp_path / "locked.pt"
    path.write_bytes(written.read_bytes())
    path.chmod(0)
    try:
        one_line_refusal(path, r"cannot be read \(Permission denied\)")
    finally:
        path.chmod(0o600)


def test_a_checkpoint_from_before_the_digests_loads_with_a_warning(
    resumable: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    data = read_checkpoint(resumable)
    del data["metadata"][WEIGHTS_DIGEST], data[TRAINING_DIGEST]
    torch.save(data, tmp_path / "old.pt")
    with caplog.at_level(logging.WARNING, logger="palsyseg.checkpoint"):
        model, meta = load_checkpoint_model(tmp_path / "old.pt")
    assert WEIGHTS_DIGEST not in meta and not model.training
    (record,) = caplog.records
    assert str(tmp_path / "old.pt") in record.getMessage()
    assert "cannot be verified" in record.getMessage()


def test_a_palsynet_from_before_the_mirror_skips_loads_as_it_was_trained(
    written: Path, tmp_path: Path
) -> None:
    """palsynet gained mirror skips as a default; a registered champion trained without them must
    still load (its weights have no ``skip_mirrors``), and a current one keeps them."""
    from palsyseg.models.asymmetry import MirrorAsymmetry

    def strides(model: torch.nn.Module) -> list[int]:
        return sorted(m.stride for m in model.modules() if isinstance(m, MirrorAsymmetry))

    current, _ = load_checkpoint_model(written)
    assert strides(current) == [4, 8, 16]
    data = read_checkpoint(written)
    torch.manual_seed(0)
    data["model_state"] = create_model("palsynet_no_mirror_skips", NUM_CLASSES).state_dict()
    assert data["metadata"]["model_name"] == "palsynet"
    save_checkpoint(tmp_path / "before.pt", data)
    old, _ = load_checkpoint_model(tmp_path / "before.pt")
    assert strides(old) == [16]
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():  # the same weights give the same logits as the network they came from
        reference = create_model("palsynet_no_mirror_skips", NUM_CLASSES)
        reference.load_state_dict(data["model_state"])
        torch.testing.assert_close(old(x)["logits"], reference.eval()(x)["logits"])


def test_a_palsynet_from_before_the_part_side_decision_loads_as_it_was_trained(
    written: Path, tmp_path: Path
) -> None:
    """palsynet gained the per-part, per-side FPP decision as a default; a champion trained
    before it (no ``part_side`` weights) loads without it and gives its own logits."""
    from palsyseg.models.asymmetry import PartSideFPP

    def decides(model: torch.nn.Module) -> bool:
        return any(isinstance(m, PartSideFPP) for m in model.modules())

    current, _ = load_checkpoint_model(written)
    assert decides(current)
    data = read_checkpoint(written)
    torch.manual_seed(0)
    data["model_state"] = create_model("palsynet_no_part_side", NUM_CLASSES).state_dict()
    save_checkpoint(tmp_path / "before.pt", data)
    old, _ = load_checkpoint_model(tmp_path / "before.pt")
    assert not decides(old)
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = create_model("palsynet_no_part_side", NUM_CLASSES)
        reference.load_state_dict(data["model_state"])
        torch.testing.assert_close(old(x)["logits"], reference.eval()(x)["logits"])


def _load_older_palsynet(written: Path, tmp_path: Path, **built_as: bool) -> torch.nn.Module:
    """A checkpoint of a palsynet built with ``built_as`` (as an older palsyseg built them,
    its train_config saying nothing of those options), loaded; it must give the logits of the
    model it was written from."""
    data = read_checkpoint(written)
    torch.manual_seed(0)
    data["model_state"] = create_model("palsynet", NUM_CLASSES, **built_as).state_dict()
    save_checkpoint(tmp_path / "before.pt", data)
    old, _ = load_checkpoint_model(tmp_path / "before.pt")
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        reference = create_model("palsynet", NUM_CLASSES, **built_as)
        reference.load_state_dict(data["model_state"])
        torch.testing.assert_close(old(x)["logits"], reference.eval()(x)["logits"])
    return old


def test_a_palsynet_from_before_the_shape_moments_loads_as_it_was_trained(
    written: Path, tmp_path: Path
) -> None:
    """The part-side decision later also read each half's part shape; a checkpoint from
    before (no ``part_side.shape_side`` weights) loads without it and gives its own logits."""
    old = _load_older_palsynet(written, tmp_path, part_geometry=False)
    assert not any(key.startswith("part_side.shape_side.") for key in old.state_dict())
    assert old.part_side.geometry is False
    current, _ = load_checkpoint_model(written)
    assert current.part_side.geometry is True


def test_a_palsynet_from_before_the_outline_moments_loads_as_it_was_trained(
    written: Path, tmp_path: Path
) -> None:
    """The shape moments later gained three outline numbers per half (8 inputs to the side
    term instead of 5); a checkpoint from before loads with the five and gives its own logits."""
    old = _load_older_palsynet(written, tmp_path, part_outline=False)
    assert old.part_side.shape_side[0].weight.shape == (1, 5)
    assert old.part_side.geometry is True and old.part_side.outline is False
    current, _ = load_checkpoint_model(written)
    assert current.part_side.outline is True
    assert current.part_side.shape_side[0].weight.shape == (1, 8)


def test_a_palsynet_from_before_the_fine_features_loads_as_it_was_trained(
    written: Path, tmp_path: Path
) -> None:
    """The part-side decision later also pooled the 1/2 decoder features (64 + 16 inputs to
    each part's embedding instead of 64); a checkpoint from before loads without them."""
    old = _load_older_palsynet(written, tmp_path, part_fine=False)
    assert old.config.part_fine is False
    assert old.part_side.embed[0][0].weight.shape == (32, 64)
    current, _ = load_checkpoint_model(written)
    assert current.config.part_fine is True
    assert current.part_side.embed[0][0].weight.shape == (32, 80)


def test_the_decision_operating_point_travels_with_the_weights(
    written: Path, tmp_path: Path
) -> None:
    """Validation sets ``part_side.decision_bias``; a checkpoint keeps it, and one from before
    it existed loads with no shift (the decision as it was trained and scored)."""
    data = read_checkpoint(written)
    data["model_state"]["part_side.decision_bias"] = torch.tensor([0.5, 1.25])
    save_checkpoint(tmp_path / "shifted.pt", data)
    shifted, _ = load_checkpoint_model(tmp_path / "shifted.pt")
    torch.testing.assert_close(shifted.part_side.decision_bias, torch.tensor([0.5, 1.25]))
    del data["model_state"]["part_side.decision_bias"]
    save_checkpoint(tmp_path / "before.pt", data)
    old, _ = load_checkpoint_model(tmp_path / "before.pt")
    torch.testing.assert_close(old.part_side.decision_bias, torch.zeros(2))
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        out = old(x)
        torch.testing.assert_close(
            out["logits"], old.part_side.compose(out["base_logits"], out["fpp_side_log_q"])
        )


def test_a_palsy_score_the_model_cannot_give_is_refused(written: Path, tmp_path: Path) -> None:
    data = read_checkpoint(written)
    data["metadata"]["palsy_score"] = "vibes"
    save_checkpoint(tmp_path / "unknown.pt", data)
    with pytest.raises(CheckpointError, match="palsy_score 'vibes' is not one of"):
        load_checkpoint_model(tmp_path / "unknown.pt")
    data = read_checkpoint(written)
    data["metadata"]["palsy_score"] = "decision"
    data["metadata"]["train_config"]["model_kwargs"] = {"part_side_fpp": False}
    data["model_state"] = create_model("palsynet", NUM_CLASSES, part_side_fpp=False).state_dict()
    save_checkpoint(tmp_path / "no_decision.pt", data)
    with pytest.raises(CheckpointError, match="has no FPP decision"):
        load_checkpoint_model(tmp_path / "no_decision.pt")


def test_malformed_metadata_is_a_checkpoint_error(written: Path, tmp_path: Path) -> None:
    data = read_checkpoint(written)
    data["metadata"]["train_config"] = "not a mapping"
    save_checkpoint(tmp_path / "odd.pt", data)
    one_line_refusal(tmp_path / "odd.pt", "metadata is malformed")


def test_the_cli_names_a_bad_checkpoint_in_one_line(written: Path, tmp_path: Path, cli) -> None:
    from palsyseg.data.manifest import ManifestRow, write_manifest

    write_manifest(
        tmp_path / "test", [ManifestRow("images/a.png", "masks/a.png", "p1", "healthy", "none")]
    )
    text = tmp_path / "notes.txt"
    text.write_text("not a checkpoint\n")
    result = cli(
        "evaluate", "--data", tmp_path / "test", "--checkpoint", f"m={text}", "--candidate", "m",
        "--out", tmp_path / "out",
    )  # fmt: skip
    assert result.code == 1
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {text}: not a plain-weights torch file (corrupt, or another")


def test_a_write_killed_mid_way_leaves_the_old_file_and_a_temp_the_next_start_clears(
    written: Path, tmp_path: Path
) -> None:
    from palsyseg.checkpoint import reconcile_run

    run = tmp_path / "run"
    run.mkdir()
    (run / "best.pt").write_bytes(written.read_bytes())
    # A real SIGKILL in the middle of atomic_path: the whole temp file is on disk, not renamed.
    script = (
        "import os, signal, sys, torch\n"
        "from palsyseg.atomic import atomic_path\n"
        "with atomic_path(sys.argv[1]) as tmp:\n"
        "    torch.save({'x': torch.zeros(300_000)}, tmp)\n"
        "    os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(run / "best.pt")], check=False)
    assert done.returncode == -9
    (stale,) = run.glob(".best.*.tmp.pt")
    assert stale.stat().st_size > 1_000_000
    assert read_checkpoint(run / "best.pt")["metadata"][WEIGHTS_DIGEST]  # the old file, whole
    (run / "notes.tmp.pt").write_bytes(b"keep")  # not one of ours: left alone
    reconcile_run(run)
    assert sorted(p.name for p in run.iterdir()) == ["best.pt", "notes.tmp.pt"]


def test_the_class_offsets_travel_with_the_weights(written: Path, tmp_path: Path) -> None:
    """Validation sets ``class_offsets``; a checkpoint keeps them, and one from before they
    existed loads with none (plain argmax, as it was scored)."""
    data = read_checkpoint(written)
    data["model_state"]["class_offsets"] = torch.tensor([0.0, 0.5, 0.0, -0.25, -0.25, 0.0, 1.0])
    save_checkpoint(tmp_path / "offset.pt", data)
    offset, _ = load_checkpoint_model(tmp_path / "offset.pt")
    assert offset.class_offsets.tolist() == [0.0, 0.5, 0.0, -0.25, -0.25, 0.0, 1.0]
    del data["model_state"]["class_offsets"]
    save_checkpoint(tmp_path / "before.pt", data)
    old, _ = load_checkpoint_model(tmp_path / "before.pt")
    assert old.class_offsets.tolist() == [0.0] * 7
