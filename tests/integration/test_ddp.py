"""DDP under torchrun: 2 CPU processes (gloo) train one tiny model in sync; rank 0 alone writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow

# Runs in each torchrun process. It wraps create_model and the Dataset to observe, per rank, the
# model replica and the training samples it drew; train_model itself runs unchanged.
DRIVER = textwrap.dedent(
    """
    import hashlib, json, os, sys
    from pathlib import Path

    import torch

    torch.set_num_threads(1)
    import palsyseg.train as train
    from palsyseg.data.torch_dataset import SegmentationDataset

    split, out = Path(sys.argv[1]), Path(sys.argv[2])
    rank = int(os.environ["RANK"])
    models, drawn = [], {}
    real_create = train.create_model

    def create_model(*args, **kwargs):
        models.append(real_create(*args, **kwargs))
        return models[-1]

    train.create_model = create_model
    real_getitem = SegmentationDataset.__getitem__

    def getitem(self, index):
        if self.augment is not None:  # the training set
            drawn.setdefault(self.epoch, []).append(index)
        return real_getitem(self, index)

    SegmentationDataset.__getitem__ = getitem

    def digest(state):
        h = hashlib.sha256()
        for key in sorted(state):
            h.update(key.encode())
            h.update(state[key].detach().cpu().contiguous().numpy().tobytes())
        return h.hexdigest()

    seen = []
    config = train.TrainConfig(epochs=2, batch_size=4, image_size=32, device="cpu", seed=5)
    result = train.train_model(
        split / "train", split / "val", out / "run", config,
        on_epoch_end=lambda epoch, metrics: seen.append(epoch),
    )
    report = {
        "world_size": int(os.environ["WORLD_SIZE"]),
        # parameters, not buffers: BatchNorm running statistics stay per rank between DDP's
        # buffer broadcasts (rank 0's are the ones saved)
        "parameters": digest(dict(models[0].named_parameters())),
        "state": digest(models[0].state_dict()),
        "best_epoch": result.best_epoch,
        "train_loss": [h["train_loss"] for h in result.history],
        "last_checkpoint": str(result.last_checkpoint),
        "callback_epochs": seen,
        "drawn": {str(k): v for k, v in drawn.items()},
        "train_size": len(SegmentationDataset(split / "train")),
    }
    if rank == 0:
        saved = torch.load(result.last_checkpoint, weights_only=True)["model_state"]
        report["saved_state"] = digest(saved)
    (out / f"rank{rank}.json").write_text(json.dumps(report))
    """
)


def test_two_gloo_processes_train_in_sync_and_only_rank_zero_writes(tmp_path: Path) -> None:
    from palsyseg.data.synth import SynthConfig, generate_dataset
    from palsyseg.split import SplitConfig, split_dataset

    generate_dataset(
        tmp_path / "data", SynthConfig(patients=6, seed=3, size=64, images_per_patient=2)
    )
    split_dataset(tmp_path / "data", tmp_path / "split", SplitConfig(seed=3))
    (tmp_path / "driver.py").write_text(DRIVER)
    out = tmp_path / "out"
    out.mkdir()
    env = {
        **os.environ,
        "OMP_NUM_THREADS": "1",
        "NO_ALBUMENTATIONS_UPDATE": "1",
        "PYTHONWARNINGS": "ignore",
    }
    command = [
        sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
        str(tmp_path / "driver.py"), str(tmp_path / "split"), str(out),
    ]  # fmt: skip
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]

    rank0 = json.loads((out / "rank0.json").read_text())
    rank1 = json.loads((out / "rank1.json").read_text())
    assert rank0["world_size"] == rank1["world_size"] == 2
    # DDP kept the replicas' parameters identical, and rank 0 saved exactly its model
    assert rank0["parameters"] == rank1["parameters"]
    assert rank0["state"] == rank0["saved_state"]
    # every rank returns the same result (broadcast from rank 0)
    for key in ("best_epoch", "train_loss", "last_checkpoint"):
        assert rank0[key] == rank1[key]
    assert len(rank0["train_loss"]) == 2
    # rank 0 alone validates and calls back; rank 1 writes nothing
    assert rank0["callback_epochs"] == [1, 2] and rank1["callback_epochs"] == []
    files = sorted(p.name for p in (out / "run").iterdir())
    assert files == ["best.pt", "history.json", "last.pt"]
    # DistributedSampler: in each epoch the two ranks draw disjoint halves covering the split
    for epoch in ("0", "1"):
        a, b = rank0["drawn"][epoch], rank1["drawn"][epoch]
        assert set(a) | set(b) == set(range(rank0["train_size"]))
        assert len(a) == len(b) and len(set(a) & set(b)) <= 1  # 1 pad when the count is odd
