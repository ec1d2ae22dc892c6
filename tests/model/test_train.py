"""The training loop: checkpoints, exact resume, determinism, best-model selection, errors, CLI."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from palsyseg import train as train_module
from palsyseg.errors import ConfigError
from palsyseg.train import (
    CheckpointError,
    TrainConfig,
    load_checkpoint_model,
    read_checkpoint,
    train_model,
)

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


# Tiny and CPU-only: 6 synthetic patients × 2 images of 64 px, trained at 32 px in batches of 3.
TINY = {"epochs": 1, "batch_size": 3, "image_size": 32, "device": "cpu", "seed": 3}


def weights(path: Path) -> dict[str, torch.Tensor]:
    return read_checkpoint(path)["model_state"]


def comparable(history: list[dict[str, float]]) -> list[dict[str, object]]:
    """History without wall times, NaN made comparable (NaN != NaN)."""
    return [
        {k: "nan" if v != v else v for k, v in entry.items() if k != "epoch_seconds"}
        for entry in history
    ]


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), f"{key} differs"


def test_one_epoch_writes_checkpoints_history_and_a_loadable_model(
    split: Path, tmp_path: Path
) -> None:
    seen: list[tuple[int, dict[str, float]]] = []
    result = train_model(
        split / "train",
        split / "val",
        tmp_path / "run",
        TrainConfig(**TINY),
        on_epoch_end=lambda epoch, metrics: seen.append((epoch, metrics)),
    )
    assert result.last_checkpoint.is_file() and result.best_checkpoint.is_file()
    assert result.best_epoch == 1 and len(result.history) == 1
    entry = result.history[0]
    for key in (
        "epoch",
        "train_loss",
        "lr",
        "val_mean_f1",
        "val_miou",
        "val_f1_fpp",
        "val_pixel_accuracy",
        "val_palsy_sensitivity",
        "val_palsy_threshold",
    ):
        assert key in entry
    assert seen == [(1, entry)]
    assert json.loads((tmp_path / "run" / "history.json").read_text())[0]["epoch"] == 1
    # every file in the run directory is a finished one (atomic writes leave no temp files)
    assert sorted(p.name for p in (tmp_path / "run").iterdir()) == [
        "best.pt",
        "history.json",
        "last.pt",
    ]

    model, meta = load_checkpoint_model(result.best_checkpoint)
    assert not model.training
    assert meta["model_name"] == "palsynet" and meta["image_size"] == 32
    assert meta["palsy_threshold"] == result.palsy_threshold
    assert meta["train_config"]["batch_size"] == 3
    with torch.inference_mode():
        logits = model(torch.zeros(1, 3, 32, 32))["logits"]
    assert logits.shape == (1, 7, 32, 32)


def test_resume_after_a_stop_equals_an_uninterrupted_run(split: Path, tmp_path: Path) -> None:
    config = TrainConfig(**{**TINY, "epochs": 4})
    full = train_model(split / "train", split / "val", tmp_path / "full", config)

    class Killed(Exception):
        pass

    def stop_after_two(epoch: int, _: dict[str, float]) -> None:
        if epoch == 2:
            raise Killed

    with pytest.raises(Killed):
        train_model(
            split / "train", split / "val", tmp_path / "cut", config, on_epoch_end=stop_after_two
        )
    assert read_checkpoint(tmp_path / "cut" / "last.pt")["training"]["epoch"] == 2

    resumed_epochs: list[int] = []
    resumed = train_model(
        split / "train",
        split / "val",
        tmp_path / "cut",
        config,
        resume=True,
        on_epoch_end=lambda epoch, _: resumed_epochs.append(epoch),
    )
    assert resumed_epochs == [3, 4]
    assert_same_weights(full.last_checkpoint, resumed.last_checkpoint)
    assert comparable(full.history) == comparable(resumed.history)
    assert resumed.best_epoch == full.best_epoch

    # resuming a finished run trains nothing and returns the same result
    done = train_model(split / "train", split / "val", tmp_path / "cut", config, resume=True)
    assert comparable(done.history) == comparable(resumed.history)


def test_same_seed_same_weights_other_seed_other_weights(split: Path, tmp_path: Path) -> None:
    for name, seed in (("a", 3), ("b", 3), ("c", 4)):
        train_model(
            split / "train", split / "val", tmp_path / name, TrainConfig(**{**TINY, "seed": seed})
        )
    assert_same_weights(tmp_path / "a" / "last.pt", tmp_path / "b" / "last.pt")
    wa, wc = weights(tmp_path / "a" / "last.pt"), weights(tmp_path / "c" / "last.pt")
    assert any(not torch.equal(wa[k], wc[k]) for k in wa)


def test_best_checkpoint_is_the_epoch_with_the_highest_mean_f1(
    split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Scripted validation results: mean F1 decides, FPP F1 breaks the tie, NaN counts as worst.
    script = iter(
        [
            ({"mean_f1": 0.2, "f1_fpp": 0.9}, 0.01),  # a few lucky FPP pixels do not win
            ({"mean_f1": 0.5, "f1_fpp": 0.1}, 0.02),
            (
                {"mean_f1": 0.5, "f1_fpp": 0.3},
                0.03,
            ),  # best: ties epoch 2 on mean F1, wins on FPP F1
            ({"mean_f1": float("nan"), "f1_fpp": 0.99}, 0.04),
            ({"mean_f1": 0.5, "f1_fpp": 0.3}, 0.05),  # exact tie with epoch 3: the earlier stays
        ]
    )

    def scripted_validate(*args: object, **kwargs: object) -> tuple[dict[str, float], float]:
        metrics, threshold = next(script)
        return {**metrics, "miou": 0.0}, threshold

    monkeypatch.setattr(train_module, "validate", scripted_validate)
    saved_at: list[int] = []
    original_save = train_module._save_checkpoint

    def spy(path: Path, payload: dict) -> None:
        if path.name == "best.pt":
            saved_at.append(payload["metadata"]["epoch"])
        original_save(path, payload)

    monkeypatch.setattr(train_module, "_save_checkpoint", spy)
    result = train_model(
        split / "train", split / "val", tmp_path / "run", TrainConfig(**{**TINY, "epochs": 5})
    )
    assert result.best_epoch == 3 and saved_at == [1, 2, 3]
    assert result.palsy_threshold == 0.03
    assert result.best_val_metrics["f1_fpp"] == 0.3
    _, meta = load_checkpoint_model(result.best_checkpoint)
    assert meta["epoch"] == 3 and meta["palsy_threshold"] == 0.03
    assert read_checkpoint(result.last_checkpoint)["metadata"]["epoch"] == 5


@pytest.fixture(scope="module")
def trained(split: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("trained")
    train_model(split / "train", split / "val", out, TrainConfig(**TINY))
    return out


def test_corrupt_truncated_and_foreign_checkpoints_are_refused(
    trained: Path, tmp_path: Path
) -> None:
    good = (trained / "last.pt").read_bytes()
    cases = {
        "truncated.pt": (good[: len(good) // 2], "corrupt or truncated"),
        "garbage.pt": (b"\x00not a checkpoint at all" * 10, "not a plain-weights torch file"),
        "empty.pt": (b"", "corrupt or truncated"),
    }
    for name, (data, message) in cases.items():
        (tmp_path / name).write_bytes(data)
        with pytest.raises(CheckpointError, match=message) as info:
            load_checkpoint_model(tmp_path / name)
        assert str(tmp_path / name) in str(info.value)

    torch.save({"conv.weight": torch.zeros(1)}, tmp_path / "state_dict.pt")
    with pytest.raises(CheckpointError, match="not a palsyseg checkpoint"):
        load_checkpoint_model(tmp_path / "state_dict.pt")

    # pickled objects (a whole pickled model, say) are never unpickled: weights_only refuses them
    torch.save(torch.nn.Linear(2, 2), tmp_path / "pickled_module.pt")
    with pytest.raises(CheckpointError, match=r"refused: .*torch\.nn\.modules\.linear\.Linear"):
        load_checkpoint_model(tmp_path / "pickled_module.pt")

    with pytest.raises(CheckpointError, match="does not exist"):
        load_checkpoint_model(tmp_path / "missing.pt")

    data = read_checkpoint(trained / "best.pt")
    torch.save({**data, "version": 99}, tmp_path / "future.pt")
    with pytest.raises(CheckpointError, match="version 99"):
        load_checkpoint_model(tmp_path / "future.pt")

    data["metadata"] = {**data["metadata"], "model_name": "unet_r18"}
    torch.save(data, tmp_path / "mislabelled.pt")
    with pytest.raises(CheckpointError, match="do not fit model 'unet_r18'"):
        load_checkpoint_model(tmp_path / "mislabelled.pt")


def test_existing_run_is_not_overwritten_and_resume_checks_the_config(
    split: Path, trained: Path
) -> None:
    with pytest.raises(CheckpointError, match="already holds a training run"):
        train_model(split / "train", split / "val", trained, TrainConfig(**TINY))
    with pytest.raises(ConfigError, match="image_size was 32 in the checkpoint, now 48"):
        train_model(
            split / "train",
            split / "val",
            trained,
            TrainConfig(**{**TINY, "image_size": 48}),
            resume=True,
        )


def test_config_refuses_bad_values() -> None:
    with pytest.raises(ValueError, match="unknown model 'resnet'"):
        TrainConfig(model="resnet")
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="tpu")
    with pytest.raises(ValueError, match="refit_operating_point"):
        TrainConfig(refit_operating_point="test")


def test_paper_defaults() -> None:
    config = TrainConfig()
    assert (config.epochs, config.batch_size, config.momentum, config.image_size) == (
        300,
        32,
        0.9,
        250,
    )
    assert (config.optimizer, config.schedule, config.warmup) == ("sgd", "poly", 0.0)


def test_learning_rate_warms_up_then_decays_to_zero() -> None:
    from palsyseg.train import _lr_factor

    poly = _lr_factor(TrainConfig(poly_power=0.9), 100)
    assert poly(0) == 1.0 and poly(50) == pytest.approx(0.5**0.9) and poly(100) == 0.0
    cosine = _lr_factor(TrainConfig(schedule="cosine", warmup=0.1), 100)
    assert [cosine(i) for i in range(10)] == pytest.approx([(i + 1) / 10 for i in range(10)])
    assert cosine(10) == 1.0 and cosine(55) == pytest.approx(0.5) and cosine(100) == 0.0
    values = [cosine(i) for i in range(10, 101)]
    assert all(a >= b for a, b in itertools.pairwise(values))
    with pytest.raises(ValueError, match="optimizer"):
        TrainConfig(optimizer="lbfgs")
    with pytest.raises(ValueError, match="warmup"):
        TrainConfig(warmup=1.0)


def test_adamw_cosine_trains_and_resumes_like_an_uninterrupted_run(
    split: Path, tmp_path: Path
) -> None:
    config = TrainConfig(
        model="palsynet",
        optimizer="adamw",
        lr=2e-3,
        weight_decay=0.01,
        schedule="cosine",
        warmup=0.2,
        **{**TINY, "epochs": 2},
    )
    whole = train_model(split / "train", split / "val", tmp_path / "whole", config)

    class Killed(Exception):
        pass

    def stop(epoch: int, _: dict[str, float]) -> None:
        raise Killed

    with pytest.raises(Killed):
        train_model(split / "train", split / "val", tmp_path / "cut", config, on_epoch_end=stop)
    resumed = train_model(split / "train", split / "val", tmp_path / "cut", config, resume=True)
    assert [e["train_loss"] for e in resumed.history] == [e["train_loss"] for e in whole.history]
    assert whole.history[-1]["lr"] == pytest.approx(0.0, abs=1e-12)


def test_cli_train_prints_a_table_and_honours_params_and_flags(
    split: Path, tmp_path: Path, cli
) -> None:
    params = tmp_path / "params.yaml"
    params.write_text(
        "train:\n  epochs: 3\n  batch_size: 3\n  image_size: 40\n  device: cpu\n  seed: 3\n"
    )
    out = tmp_path / "run"
    result = cli(
        "train",
        "--model",
        "palsynet",
        "--data",
        split,
        "--out",
        out,
        "--epochs",
        1,
        "--image-size",
        32,
        "--params",
        params,
    )
    assert result.code == 0, result.stderr
    assert "best.pt" in result.stdout and "FPP F1" in result.stdout
    meta = read_checkpoint(out / "best.pt")["metadata"]
    assert meta["image_size"] == 32  # flag beats params.yaml
    assert meta["train_config"]["epochs"] == 1
    assert meta["train_config"]["batch_size"] == 3  # from params.yaml

    again = cli("train", "--model", "palsynet", "--data", split, "--out", out, "--params", params)
    assert again.code == 1 and "already holds a training run" in again.stderr

    bad = tmp_path / "bad.yaml"
    bad.write_text("train:\n  epoch: 3\n")
    result = cli("train", "--data", split, "--out", tmp_path / "x", "--params", bad)
    assert result.code == 1 and "unknown key(s) epoch" in result.stderr

    result = cli(
        "train", "--data", tmp_path / "nowhere", "--out", tmp_path / "y", "--params", params
    )
    assert result.code == 1 and "error:" in result.stderr


def test_params_section_reaches_model_kwargs_and_loss() -> None:
    """`train:` in params.yaml (and `dvc exp run -S train.model_kwargs=...`) configures the
    network and the loss; a wrong type names the key."""
    from palsyseg.params import from_section

    section = {"model_kwargs": {"head_channels": 32}, "loss": {"edge_weight": 0.25}, "epochs": 2}
    config = from_section(section, TrainConfig, where="params.yaml:train")
    assert config.model_kwargs == {"head_channels": 32}
    assert config.loss.edge_weight == 0.25
    with pytest.raises(ConfigError, match=r"params.yaml:train.model_kwargs: expected a mapping"):
        from_section({"model_kwargs": [1]}, TrainConfig, where="params.yaml:train")


# --- checkpoints after a kill: last.pt before best.pt, temp files cleared, digests -----------

KILLED_RUN = """
import os, signal, sys
from pathlib import Path
import torch
from palsyseg import train
from palsyseg.train import TrainConfig, train_model

scores = iter([0.2, 0.5, 0.9])  # every epoch a new best
train.validate = lambda *a, **k: ({"f1_fpp": next(scores), "mean_f1": 0.5, "miou": 0.0}, 0.1)
real_save = torch.save

def save_then_die(obj, target, *args, **kwargs):
    real_save(obj, target, *args, **kwargs)
    # the whole of epoch 2's best.pt is in its temp file, not yet renamed: die here
    if Path(target).name.startswith(".best.") and obj["metadata"]["epoch"] == 2:
        os.kill(os.getpid(), signal.SIGKILL)

torch.save = save_then_die
split, out = Path(sys.argv[1]), Path(sys.argv[2])
config = TrainConfig(epochs=3, batch_size=3, image_size=32, device="cpu", seed=3)
train_model(split / "train", split / "val", out, config)
"""


def test_a_kill_while_writing_best_never_leaves_best_ahead_and_the_next_start_repairs(
    split: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import subprocess
    import sys

    from palsyseg.checkpoint import WEIGHTS_DIGEST, reconcile_run, state_sha256

    out = tmp_path / "run"
    env = {**__import__("os").environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(
        [sys.executable, "-c", KILLED_RUN, str(split), str(out)], env=env, check=False
    )
    assert done.returncode == -9  # SIGKILL: no finally, no cleanup ran
    (stale,) = out.glob(".best.*.tmp.pt")  # checkpoint-sized, left by the kill
    assert stale.stat().st_size > 1_000_000
    last, best = read_checkpoint(out / "last.pt"), read_checkpoint(out / "best.pt")
    # last.pt was written first: it has epoch 2 (and says 2 is the best); best.pt is not ahead
    assert last["metadata"]["epoch"] == 2 and last["training"]["best_epoch"] == 2
    assert best["metadata"]["epoch"] == 1

    reconcile_run(out)  # what the next train_model in this directory does first
    assert not list(out.glob(".*.tmp.*"))
    best = read_checkpoint(out / "best.pt")
    assert best["metadata"]["epoch"] == 2 and "training" not in best
    assert best["metadata"][WEIGHTS_DIGEST] == state_sha256(last["model_state"])

    scores = iter([0.3])  # the resumed epoch 3 is worse than 0.5: best stays epoch 2
    monkeypatch.setattr(
        train_module,
        "validate",
        lambda *a, **k: ({"f1_fpp": next(scores), "mean_f1": 0.4, "miou": 0.0}, 0.1),
    )
    config = TrainConfig(**{**TINY, "epochs": 3})
    result = train_model(split / "train", split / "val", out, config, resume=True)
    assert result.best_epoch == 2 and [e["epoch"] for e in result.history] == [1, 2, 3]
    assert read_checkpoint(out / "best.pt")["metadata"]["epoch"] == 2
    assert read_checkpoint(out / "last.pt")["training"]["best_epoch"] == 2
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history.json", "last.pt"]


def test_temp_files_of_a_killed_first_write_are_cleared_by_a_fresh_start(
    split: Path, tmp_path: Path
) -> None:
    out = tmp_path / "run"
    out.mkdir()
    for name in (".last.k1ll3d00.tmp.pt", ".best.k1ll3d00.tmp.pt", ".history.k1ll3d00.tmp.json"):
        (out / name).write_bytes(b"\x00" * 4096)  # what a SIGKILL mid-write leaves
    train_model(split / "train", split / "val", out, TrainConfig(**TINY))
    assert sorted(p.name for p in out.iterdir()) == ["best.pt", "history.json", "last.pt"]


def test_every_checkpoint_of_a_run_carries_its_weights_digest(trained: Path) -> None:
    from palsyseg.checkpoint import TRAINING_DIGEST, WEIGHTS_DIGEST, state_sha256

    for name in ("best.pt", "last.pt"):
        data = read_checkpoint(trained / name)
        assert data["metadata"][WEIGHTS_DIGEST] == state_sha256(data["model_state"])
    _, meta = load_checkpoint_model(trained / "best.pt")
    assert len(meta[WEIGHTS_DIGEST]) == 64  # for the tracking layer to store on the model version
    last = read_checkpoint(trained / "last.pt")
    assert last[TRAINING_DIGEST] == state_sha256(last["training"])


def test_a_warm_start_begins_at_the_given_weights_and_records_them(
    trained: Path, split: Path, tmp_path: Path
) -> None:
    from palsyseg.checkpoint import WEIGHTS_DIGEST
    from palsyseg.processes import Processes

    source = read_checkpoint(trained / "best.pt")
    config = TrainConfig(**{**TINY, "seed": 11, "init_weights": str(trained / "best.pt")})
    run = train_module._build_run(
        config, Processes(), torch.device("cpu"), tmp_path / "built", steps=1
    )
    for key, value in run.model.state_dict().items():  # not the seed-11 random draw
        assert torch.equal(value, source["model_state"][key]), key
    train_model(split / "train", split / "val", tmp_path / "tuned", config)
    tuned = read_checkpoint(tmp_path / "tuned" / "last.pt")
    assert tuned["metadata"]["init_weights_sha256"] == source["metadata"][WEIGHTS_DIGEST]
    assert any(  # and it trained on from there
        not torch.equal(v, source["model_state"][k]) for k, v in tuned["model_state"].items()
    )
    fresh = read_checkpoint(trained / "last.pt")  # a run without a warm start records none
    assert "init_weights_sha256" not in fresh["metadata"]


def test_a_warm_start_drops_class_offsets_the_run_would_not_choose(
    trained: Path, tmp_path: Path
) -> None:
    from palsyseg.checkpoint import save_checkpoint
    from palsyseg.processes import Processes

    data = read_checkpoint(trained / "best.pt")
    data["model_state"]["class_offsets"] = torch.linspace(-1, 1, 7)
    save_checkpoint(tmp_path / "offsets.pt", data)
    for choose, expected in ((True, torch.linspace(-1, 1, 7)), (False, torch.zeros(7))):
        config = TrainConfig(
            **{**TINY, "init_weights": str(tmp_path / "offsets.pt"), "class_offsets": choose}
        )
        run = train_module._build_run(config, Processes(), torch.device("cpu"), tmp_path, 1)
        torch.testing.assert_close(run.model.class_offsets, expected)


def test_a_warm_start_from_another_model_or_shape_is_refused_naming_the_file(
    trained: Path, split: Path, tmp_path: Path
) -> None:
    best = trained / "best.pt"
    cases = {
        "unet_r18": (best, "holds a palsynet model, not unet_r18"),
        "palsynet": (tmp_path / "missing.pt", "checkpoint file does not exist"),
    }
    for model, (path, rule) in cases.items():
        config = TrainConfig(**{**TINY, "model": model, "init_weights": str(path)})
        with pytest.raises(CheckpointError, match=rule) as caught:
            train_model(split / "train", split / "val", tmp_path / model, config)
        assert str(path) in str(caught.value)
    narrow = TrainConfig(
        **{**TINY, "init_weights": str(best), "model_kwargs": {"head_channels": 8}}
    )
    with pytest.raises(CheckpointError, match="do not fit palsynet with these model_kwargs"):
        train_model(split / "train", split / "val", tmp_path / "narrow", narrow)
    assert not (tmp_path / "narrow" / "last.pt").exists()


class _UnderConfident(torch.nn.Module):
    """A model whose segmentation is right and whose part-side decision ranks the weak mouth
    half first but never reaches q > 0.5 (q 0.3 there, 0.05 elsewhere), as trained PalsyNets
    did. Its "image" carries the true mask in channel 0."""

    def __init__(self) -> None:
        super().__init__()
        from palsyseg.labels import Label
        from palsyseg.models.asymmetry import PartSideFPP

        self.part_side = PartSideFPP(4, (int(Label.EYE), int(Label.MOUTH)), int(Label.FPP))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        from palsyseg.labels import NUM_CLASSES, Label
        from palsyseg.losses import fpp_decision_targets

        mask = image[:, 0].round().long()
        part_mask = torch.where(mask == Label.FPP, torch.full_like(mask, Label.MOUTH), mask)
        base = 10 * torch.nn.functional.one_hot(part_mask, NUM_CLASSES).permute(0, 3, 1, 2)
        targets = fpp_decision_targets(mask, self.part_side.parts, self.part_side.fpp_class)
        log_q = torch.log(0.05 + 0.25 * targets)
        used = log_q if self.training else self.part_side.shift(log_q)
        logits = self.part_side.compose(base.float(), used)
        return {"logits": logits, "base_logits": base.float(), "fpp_side_log_q": log_q}


def test_validation_chooses_the_fpp_decision_operating_point() -> None:
    from palsyseg.labels import Label

    masks = torch.full((6, 16, 16), int(Label.SKIN))
    masks[:, 3:5, 2:14] = Label.EYE
    masks[:, 10:12, 2:14] = Label.MOUTH
    masks[:3, 10:12, 2:8] = Label.FPP  # the left mouth half weak in three photos
    masks[3, 10:12, 8:14] = Label.FPP  # the right one in one; two healthy photos
    batch = {
        "image": masks[:, None].float().expand(-1, 3, -1, -1),
        "mask": masks,
        "palsy": torch.tensor([1, 1, 1, 1, 0, 0]),
        # SIDES: none, left, right — of the patient, whose right is the image's left half
        "visible_side": torch.tensor([2, 2, 2, 1, 0, 0]),
    }
    model = _UnderConfident()
    with torch.no_grad():
        assert not (model.eval()(batch["image"])["logits"].argmax(1) == Label.FPP).any()
    metrics, _ = train_module.validate(model, [batch], torch.device("cpu"), midline=7.5)
    # logit(0.3) = −0.85 against logit(0.05) = −2.94: the smallest bias in between is 1.0
    torch.testing.assert_close(model.part_side.decision_bias, torch.tensor([0.0, 1.0]))
    assert metrics["fpp_decision_bias_mouth"] == 1.0 and metrics["fpp_decision_bias_eye"] == 0.0
    assert metrics["f1_fpp"] == pytest.approx(1.0) and metrics["f1_mouth"] == pytest.approx(1.0)
    assert metrics["side_accuracy"] == 1.0 and not model.training
    with torch.no_grad():  # the model keeps the point: it marks the weak halves from now on
        torch.testing.assert_close(model(batch["image"])["logits"].argmax(1), masks)
    # operating_point=False: the bias set elsewhere (the refit's items) stays and is scored as is
    model.part_side.decision_bias.copy_(torch.tensor([0.0, 0.25]))
    kept, _ = train_module.validate(
        model, [batch], torch.device("cpu"), midline=7.5, operating_point=False
    )
    torch.testing.assert_close(model.part_side.decision_bias, torch.tensor([0.0, 0.25]))
    assert kept["fpp_decision_bias_mouth"] == 0.25 and kept["f1_fpp"] < 0.5


class _WideParts(torch.nn.Module):
    """A segmentation whose eyes come out one pixel too wide: logits favour the eye by 1.5 on
    the ring of skin around each eye, as eq. 7 left trained networks. Its "image" carries the
    true mask in channel 0."""

    def __init__(self) -> None:
        super().__init__()
        self.register_buffer("class_offsets", torch.zeros(7))

    def forward(self, image: torch.Tensor) -> dict[str, torch.Tensor]:
        from palsyseg.labels import NUM_CLASSES, Label

        mask = image[:, 0].round().long()
        eye = (mask == Label.EYE).float()[:, None]
        ring = (torch.nn.functional.max_pool2d(eye, 3, 1, 1) - eye)[:, 0] > 0
        logits = 2.0 * torch.nn.functional.one_hot(mask, NUM_CLASSES).permute(0, 3, 1, 2).float()
        logits[:, Label.EYE] += 3.5 * ring  # 1.5 above the skin's 2 there
        if not self.training:
            logits = logits + self.class_offsets[:, None, None]
        return {"logits": logits}


def test_validation_chooses_class_offsets_only_when_asked() -> None:
    from palsyseg.labels import Label

    masks = torch.full((4, 16, 16), int(Label.SKIN))
    masks[:, 4:7, 3:7] = Label.EYE
    masks[:, 4:7, 9:13] = Label.EYE
    batch = {
        "image": masks[:, None].float().expand(-1, 3, -1, -1),
        "mask": masks,
        "palsy": torch.zeros(4, dtype=torch.long),
        "visible_side": torch.zeros(4, dtype=torch.long),
    }
    model = _WideParts()
    plain, _ = train_module.validate(model, [batch], torch.device("cpu"), midline=7.5)
    assert plain["f1_eye"] < 0.6 and "class_offset_eye" not in plain
    assert not model.class_offsets.any()
    metrics, _ = train_module.validate(
        model, [batch], torch.device("cpu"), midline=7.5, class_offsets=True
    )
    assert metrics["f1_eye"] == pytest.approx(1.0) and metrics["f1_skin"] == pytest.approx(1.0)
    eye_margin = model.class_offsets[Label.SKIN] - model.class_offsets[Label.EYE]
    assert 1.5 < eye_margin <= 2.0 and metrics["class_offset_eye"] == model.class_offsets[4]
    with torch.no_grad():  # the model keeps them: its eval logits now give the true mask
        torch.testing.assert_close(model.eval()(batch["image"])["logits"].argmax(1), masks)
    again, _ = train_module.validate(  # chosen afresh on the raw logits, not on top of the old
        model, [batch], torch.device("cpu"), midline=7.5, class_offsets=True
    )
    assert again["class_offset_eye"] == metrics["class_offset_eye"]
