"""Training learns: a few hundred steps on streamed faces beat an untrained network clearly.

Without this test nothing failed when the optimizer step was removed (the training, evaluation
and DDP tests check plumbing, not learning).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from palsyseg.data.synth import SynthConfig, generate_dataset
from palsyseg.train import TrainConfig, load_checkpoint_model, train_model, validate

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def test_a_few_hundred_streamed_steps_learn_the_face(tmp_path: Path) -> None:
    from torch.utils.data import DataLoader

    from palsyseg.data.torch_dataset import SegmentationDataset
    from palsyseg.models import create_model

    val = tmp_path / "val"
    generate_dataset(val, SynthConfig(patients=6, seed=9, size=128))
    config = TrainConfig(
        model="palsynet",
        epochs=6,
        batch_size=8,
        image_size=64,
        lr=0.03,
        device="cpu",
        seed=5,
        stream_patients=48,  # 240 photos an epoch: 30 steps, 180 in all, no face seen twice
    )
    result = train_model(tmp_path / "unused", val, tmp_path / "run", config)
    losses = [entry["train_loss"] for entry in result.history]
    assert losses[-1] < 0.8 * losses[0]

    loader = DataLoader(SegmentationDataset(val, image_size=64), batch_size=8)
    torch.manual_seed(5)
    untrained, _ = validate(create_model("palsynet"), loader, torch.device("cpu"), midline=31.5)
    trained_model, _ = load_checkpoint_model(result.best_checkpoint)
    trained, _ = validate(trained_model, loader, torch.device("cpu"), midline=31.5)
    assert trained["mean_f1"] > untrained["mean_f1"] + 0.2, (
        trained["mean_f1"],
        untrained["mean_f1"],
    )
    for part in ("skin", "hair", "eye", "mouth"):
        assert trained[f"f1_{part}"] > untrained[f"f1_{part}"] + 0.1, part
