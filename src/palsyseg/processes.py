"""Random state, devices and ``torchrun`` processes of a training run (:mod:`palsyseg.train`).

The RNG state of python, numpy, torch and CUDA is captured into a checkpoint and restored on
resume; a run's device is resolved from ``TrainConfig.device``; under ``torchrun``
(``WORLD_SIZE > 1``) the process group is joined; on CPU deterministic algorithms are on for
the run's duration; :func:`autocast` runs a forward pass in the run's mixed precision.
"""

from __future__ import annotations

import contextlib
import os
import random
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from palsyseg.errors import ConfigError

__all__ = [
    "Processes",
    "autocast",
    "deterministic",
    "resolve_device",
    "restore_rng_state",
    "rng_state",
    "seed_everything",
    "start_processes",
]


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def rng_state() -> dict[str, Any]:
    name, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss = random.getstate()
    return {
        "python": [version, list(internal), gauss],
        "numpy": [name, keys.tolist(), int(pos), int(has_gauss), float(cached)],
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
    }


def restore_rng_state(state: dict[str, Any]) -> None:
    version, internal, gauss = state["python"]
    random.setstate((version, tuple(internal), gauss))
    name, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((name, np.asarray(keys, dtype=np.uint32), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        with contextlib.suppress(RuntimeError, IndexError):  # fewer GPUs than when saved
            torch.cuda.set_rng_state_all(state["cuda"])


@dataclass
class Processes:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    initialized_here: bool = False

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(requested: str, local_rank: int) -> torch.device:
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested.startswith("cuda"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device {requested!r} asked for, but CUDA is not available here")
        return torch.device(requested if ":" in requested else f"cuda:{local_rank}")
    return torch.device("cpu")


def start_processes(requested: str) -> tuple[Processes, torch.device]:
    """The device (``requested``: ``TrainConfig.device``) and, when ``WORLD_SIZE > 1``, the
    ``torchrun`` process group joined (gloo on CPU, nccl on CUDA)."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    device = resolve_device(requested, local_rank)
    if world_size <= 1:
        return Processes(), device
    import torch.distributed as dist

    if device.type == "cuda":
        torch.cuda.set_device(device)
    initialized_here = False
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
        initialized_here = True
    procs = Processes(dist.get_rank(), dist.get_world_size(), local_rank, initialized_here)
    return procs, device


@contextlib.contextmanager
def deterministic(device: torch.device) -> Iterator[None]:
    """Deterministic algorithms on CPU (warn-only), cudnn autotuning on CUDA; restored afterwards."""
    was = torch.are_deterministic_algorithms_enabled()
    was_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    was_benchmark = torch.backends.cudnn.benchmark
    if device.type == "cpu":
        torch.use_deterministic_algorithms(True, warn_only=True)
    else:
        torch.backends.cudnn.benchmark = True
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(was, warn_only=was_warn)
        torch.backends.cudnn.benchmark = was_benchmark


def autocast(device: torch.device, dtype: torch.dtype | None) -> contextlib.AbstractContextManager:
    """``torch.autocast`` on ``device`` to ``dtype``; a no-op context without a dtype."""
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
