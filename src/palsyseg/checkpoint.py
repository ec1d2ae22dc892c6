"""The checkpoint file format: what ``last.pt`` and ``best.pt`` hold, and how they are read and written.

A checkpoint is a ``torch.save`` of plain types and tensors only, so it loads with
``torch.load(..., weights_only=True)`` and a file from elsewhere is never unpickled into code:

- ``format`` (``"palsyseg.checkpoint"``), ``version`` (:data:`CHECKPOINT_VERSION`);
- ``model_state``: the network's ``state_dict``;
- ``metadata``: model name, classes, image size, face frame, palsy threshold, epoch, validation
  metrics, the training config, and ``weights_sha256``, a SHA-256 of ``model_state``
  (:func:`state_sha256`) that the tracking layer can store on the MLflow model version;
- ``training`` and ``training_sha256`` (``last.pt`` only): optimizer, scheduler, loss, scaler,
  progress and RNG states to resume from, and their SHA-256.

torch's zip container keeps no checksum it checks, so a flipped byte in the tensor data would
load as other weights. :func:`read_checkpoint` recomputes both digests and refuses a file that
does not match; a checkpoint written before the digests existed loads with a warning that it
cannot be verified. Every reading problem is one :class:`CheckpointError` naming the file and
the rule, never a parser's traceback.

A run directory holds ``last.pt`` (every epoch) and ``best.pt`` (the best epoch so far).
:mod:`palsyseg.train` writes ``last.pt`` first and ``best.pt`` second, so ``best.pt`` never
describes an epoch ``last.pt`` has not recorded; a kill between the two leaves ``last.pt``
naming its own epoch as the best, and :func:`reconcile_run` (at the next start in the
directory) writes ``best.pt`` from it.
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from palsyseg.atomic import atomic_path, remove_stale_temporaries
from palsyseg.errors import PalsysegError, Problem
from palsyseg.metrics import PALSY_SCORES

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "palsyseg.checkpoint"
CHECKPOINT_VERSION = 1
LAST_CHECKPOINT = "last.pt"
BEST_CHECKPOINT = "best.pt"
WEIGHTS_DIGEST = "weights_sha256"  # in ``metadata``
TRAINING_DIGEST = "training_sha256"  # top level, next to ``training``


class CheckpointError(PalsysegError):
    """A checkpoint is missing, unreadable, corrupt, foreign, or does not fit the run."""


def _refuse(path: Path, rule: str) -> CheckpointError:
    return CheckpointError(Problem(file=str(path), rule=rule))


# ----------------------------------------------------------------------------------------------
# Digests


def _feed(digest: Any, value: Any) -> None:
    """Feed ``value`` to ``digest`` in a canonical, type-tagged, length-prefixed encoding.

    Equal after a ``torch.save``/``torch.load`` round trip: mappings by sorted keys, lists and
    tuples alike, tensors by dtype, shape and raw bytes (on CPU, contiguous), scalars by repr.
    """
    if isinstance(value, torch.Tensor):
        tensor = value.detach().to("cpu")
        if tensor.is_quantized:
            tensor = tensor.int_repr()
        if tensor.layout != torch.strided:
            tensor = tensor.to_dense()
        tensor = tensor.contiguous()
        digest.update(f"T{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    elif isinstance(value, Mapping):
        digest.update(b"D%d|" % len(value))
        for key in sorted(value, key=repr):
            _feed(digest, key)
            _feed(digest, value[key])
    elif isinstance(value, list | tuple):
        digest.update(b"L%d|" % len(value))
        for item in value:
            _feed(digest, item)
    elif isinstance(value, str):
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"S%d|" % len(data) + data)
    elif isinstance(value, bytes | bytearray):
        digest.update(b"B%d|" % len(value) + bytes(value))
    else:  # None, bool, int, float (repr is exact), torch.Size, dtypes
        data = f"{type(value).__name__}:{value!r}".encode()
        digest.update(b"R%d|" % len(data) + data)


def state_sha256(state: Any) -> str:
    """SHA-256 (hex) of a ``state_dict`` or any nested state of plain types and tensors.

    The same weights give the same digest on any device and after saving and loading; it
    depends on the parameter names, dtypes, shapes and values only.
    """
    digest = hashlib.sha256()
    _feed(digest, state)
    return digest.hexdigest()


def _with_digests(payload: Mapping[str, Any]) -> dict[str, Any]:
    data = dict(payload)
    data["metadata"] = {**data["metadata"], WEIGHTS_DIGEST: state_sha256(data["model_state"])}
    if "training" in data:
        data[TRAINING_DIGEST] = state_sha256(data["training"])
    return data


def _verify(path: Path, data: dict[str, Any]) -> None:
    stored = data["metadata"].get(WEIGHTS_DIGEST)
    if stored is None:
        log.warning(
            "%s: checkpoint has no %s (written before palsyseg stored one): its weights "
            "cannot be verified",
            path,
            WEIGHTS_DIGEST,
        )
    elif stored != (computed := state_sha256(data["model_state"])):
        raise _refuse(
            path,
            f"weights do not match their SHA-256 (stored {str(stored)[:12]}…, computed "
            f"{computed[:12]}…): the file is corrupt or was altered; retrain, or restore it "
            "from its MLflow run",
        )
    if TRAINING_DIGEST in data and data[TRAINING_DIGEST] != state_sha256(data.get("training")):
        raise _refuse(
            path,
            "training state does not match its SHA-256: the file is corrupt or was "
            "altered; it cannot be resumed from (start the run afresh)",
        )


# ----------------------------------------------------------------------------------------------
# Reading


def _unpickler_reason(message: str) -> str:
    """The one informative line of torch's long weights_only refusal message."""
    _, _, rest = message.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (rest or message).splitlines() if line.strip()]
    reason = lines[0] if lines else "unpickling refused"
    return reason.split(" was not an allowed global")[0]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    # torch's zip reader appends a paragraph of advice to the one sentence that matters
    first = first.split(". ")[0].rstrip(".")
    # KeyError: 101 or IndexError: pop from empty list say little without their type
    if not first or not isinstance(exc, RuntimeError | ValueError | EOFError):
        first = f"{type(exc).__name__}: {first}" if first else type(exc).__name__
    return first[:200]


def read_checkpoint(path: str | os.PathLike[str], map_location: str = "cpu") -> dict[str, Any]:
    """Load a palsyseg checkpoint with ``weights_only=True``, check its format and digests.

    Raises :class:`CheckpointError` naming the file when it is missing, unreadable, not a
    torch file (a text file, a truncated or damaged one), holds pickled objects beyond plain
    types and tensors, is not ours, or its weights or training state do not match their
    SHA-256. A checkpoint without digests (written by an older palsyseg) loads, with a
    warning logged that it cannot be verified.
    """
    path = Path(path)
    if path.is_dir():
        raise _refuse(path, "is a directory, not a checkpoint file")
    if not path.is_file():
        raise _refuse(path, "checkpoint file does not exist")
    try:
        data = torch.load(path, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as exc:
        reason = _unpickler_reason(str(exc))
        if "Unsupported global" in reason:  # pickled code or objects: never unpickled here
            raise _refuse(
                path,
                "refused: not a plain-weights torch file, so it is not unpickled "
                f"(weights_only=True: {reason})",
            ) from None
        raise _refuse(
            path,
            f"not a plain-weights torch file (corrupt, or another kind of file: {reason})",
        ) from None
    except OSError as exc:
        if exc.errno is not None:  # the disk or the permissions, not the content
            raise _refuse(path, f"cannot be read ({exc.strerror})") from None
        raise _refuse(
            path, f"not a readable torch checkpoint (corrupt or truncated: {_first_line(exc)})"
        ) from None
    except Exception as exc:
        # torch's zip and pickle readers raise whatever a malformed file trips (KeyError,
        # IndexError, TypeError, struct.error, RuntimeError, ...): any of them means the same.
        raise _refuse(
            path,
            "not a readable torch checkpoint (corrupt or truncated, or another kind of file: "
            f"{_first_line(exc)})",
        ) from None
    if not isinstance(data, dict) or data.get("format") != CHECKPOINT_FORMAT:
        raise _refuse(
            path,
            f"not a palsyseg checkpoint (no format={CHECKPOINT_FORMAT!r} entry; "
            "a bare state_dict or another tool's file?)",
        )
    if data.get("version") != CHECKPOINT_VERSION:
        raise _refuse(
            path,
            f"checkpoint format version {data.get('version')!r} is not supported "
            f"(this palsyseg reads version {CHECKPOINT_VERSION})",
        )
    for key in ("model_state", "metadata"):
        if not isinstance(data.get(key), dict):
            raise _refuse(path, f"checkpoint has no {key!r} mapping")
    if "training" in data and not isinstance(data["training"], dict):
        raise _refuse(path, "checkpoint's 'training' entry is not a mapping")
    _verify(path, data)
    return data


def load_checkpoint_model(
    path: str | os.PathLike[str], map_location: str = "cpu"
) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild the model a checkpoint was trained as, load its weights, return it in eval mode.

    Returns ``(model, metadata)``; metadata holds plain types: ``model_name``, ``num_classes``,
    ``image_size``, ``palsy_threshold``, ``palsy_score`` (what that threshold is on; absent in
    checkpoints from before it, :func:`palsy_score`), ``train_config`` (dict), ``epoch``, ``val_metrics``,
    ``label_names``, ``weights_sha256`` (absent in checkpoints from before it existed). Raises
    :class:`CheckpointError` for anything that is not a loadable, intact palsyseg checkpoint
    (see :func:`read_checkpoint`) or whose weights do not fit the model.
    """
    from palsyseg.models import create_model
    from palsyseg.models.asymmetry import PartSideFPP

    path = Path(path)
    data = read_checkpoint(path, map_location)
    meta = data["metadata"]
    try:
        name, num_classes = meta["model_name"], int(meta["num_classes"])
        kwargs = dict(meta.get("train_config", {}).get("model_kwargs", {}))
    except KeyError as exc:
        raise _refuse(path, f"metadata lacks {exc}") from None
    except (TypeError, ValueError, AttributeError) as exc:
        raise _refuse(path, f"metadata is malformed ({exc})") from None
    if (
        name.startswith("palsynet")
        and "mirror_skips" not in kwargs
        and not any(str(key).startswith("skip_mirrors.") for key in data["model_state"])
    ):  # written before PalsyNet's mirror skips existed (they became the default later)
        kwargs["mirror_skips"] = False
    if (
        name.startswith("palsynet")
        and "part_side_fpp" not in kwargs
        and not any(str(key).startswith("part_side.") for key in data["model_state"])
    ):  # written before PalsyNet decided FPP per part and side (PartSideFPP)
        kwargs["part_side_fpp"] = False
    if (
        name.startswith("palsynet")
        and "part_geometry" not in kwargs
        and not any(str(key).startswith("part_side.shape_side.") for key in data["model_state"])
    ):  # written before the part-side decision read the parts' shape moments
        kwargs["part_geometry"] = False
    shape_side = data["model_state"].get("part_side.shape_side.0.weight")
    if (
        name.startswith("palsynet")
        and "part_outline" not in kwargs
        and getattr(shape_side, "shape", (0, 0))[-1] == PartSideFPP.SHAPE_FEATURES
    ):  # written before the shape moments included the parts' outline
        kwargs["part_outline"] = False
    embed = data["model_state"].get("part_side.embed.0.0.weight")  # part 0's first layer
    width = int(kwargs.get("embed_dim", 64))
    if (
        name.startswith("palsynet")
        and "part_fine" not in kwargs
        and getattr(embed, "shape", (0, 0))[-1] == width
    ):  # written before the part-side decision also pooled the 1/2 decoder features
        kwargs["part_fine"] = False
    try:
        model = create_model(name, num_classes=num_classes, **kwargs)
    except (ValueError, TypeError, KeyError) as exc:
        raise _refuse(path, f"cannot rebuild the model: {exc}") from None
    score = palsy_score(meta)
    if score not in PALSY_SCORES:
        raise _refuse(path, f"palsy_score {score!r} is not one of {', '.join(PALSY_SCORES)}")
    state = data["model_state"]
    if (
        getattr(model, "part_side", None) is not None
        and "part_side.decision_bias" not in state
        and any(str(key).startswith("part_side.") for key in state)
    ):  # written before validation chose the decision's operating point: no shift
        state = {**state, "part_side.decision_bias": model.part_side.decision_bias.clone()}
    offsets = getattr(model, "class_offsets", None)
    if offsets is not None and "class_offsets" not in state:
        # written before validation chose per-class logit offsets: none
        state = {**state, "class_offsets": offsets.clone()}
    try:
        model.load_state_dict(state, strict=True)
    except (RuntimeError, TypeError, AttributeError) as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(path, f"weights do not fit model {name!r}: {first}") from None
    if score == "decision" and getattr(model, "part_side", None) is None:
        raise _refuse(path, f"palsy_score is 'decision' but model {name!r} has no FPP decision")
    model.to(map_location).eval()
    return model, meta


def palsy_score(metadata: dict[str, Any]) -> str:
    """What a checkpoint's ``palsy_threshold`` is on (:data:`palsyseg.metrics.PALSY_SCORES`);
    checkpoints from before the part-side decision scored palsy on the FPP area."""
    return str(metadata.get("palsy_score", "fpp_fraction"))


# ----------------------------------------------------------------------------------------------
# Writing


def save_checkpoint(path: str | os.PathLike[str], payload: Mapping[str, Any]) -> None:
    """Write ``payload`` to ``path`` atomically and durably, with its digests added.

    ``payload`` holds ``format``, ``version``, ``model_state``, ``metadata`` and optionally
    ``training``; ``metadata[weights_sha256]`` (and ``training_sha256``) are computed here.
    """
    data = _with_digests(payload)
    with atomic_path(path) as tmp:
        torch.save(data, tmp)


def save_untrained_checkpoint(
    path: str | os.PathLike[str],
    model_name: str = "palsynet",
    image_size: int = 64,
    *,
    palsy_threshold: float = 0.01,
    seed: int = 0,
) -> Path:
    """A checkpoint of a freshly initialised ``model_name`` in a ``image_size`` face frame.

    For plumbing and timing only (``benchmarks/bench_predict.py`` without a trained model, tests
    of predict and serving): it loads and runs like a trained one and its findings mean nothing.
    """
    from palsyseg.align import FaceFrame
    from palsyseg.labels import NUM_CLASSES
    from palsyseg.models import create_model
    from palsyseg.train import TrainConfig

    torch.manual_seed(seed)
    model = create_model(model_name, num_classes=NUM_CLASSES)
    save_checkpoint(
        path,
        {
            "format": CHECKPOINT_FORMAT,
            "version": CHECKPOINT_VERSION,
            "model_state": model.state_dict(),
            "metadata": {
                "model_name": model_name,
                "num_classes": NUM_CLASSES,
                "image_size": image_size,
                "frame": FaceFrame(image_size).to_dict(),
                "palsy_threshold": palsy_threshold,
                "epoch": 0,
                "train_config": TrainConfig(model=model_name, image_size=image_size).to_dict(),
            },
        },
    )
    return Path(path)


def load_initial_weights(
    model: nn.Module,
    path: str | os.PathLike[str],
    model_name: str,
    *,
    keep_class_offsets: bool,
) -> str:
    """A training run's warm start (:mod:`palsyseg.train`, "Warm start"): load the weights of
    ``path`` (a palsyseg checkpoint of ``model_name``) into ``model`` and return their SHA-256.
    The source's class offsets are zeroed unless ``keep_class_offsets`` (a run that does not
    choose its own would otherwise apply them unchosen). Raises :class:`CheckpointError` naming
    the file when it is not a loadable checkpoint, holds another model, or its weights do not
    fit this one (other ``model_kwargs``)."""
    path = Path(path)
    source, meta = load_checkpoint_model(path)
    if meta["model_name"] != model_name:
        raise _refuse(path, f"init_weights holds a {meta['model_name']} model, not {model_name}")
    try:
        model.load_state_dict(source.state_dict(), strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise _refuse(
            path, f"init_weights do not fit {model_name} with these model_kwargs: {first}"
        ) from None
    offsets = getattr(model, "class_offsets", None)
    if offsets is not None and not keep_class_offsets:
        offsets.zero_()
    log.info("%s starts from the weights of %s", model_name, path)
    return str(meta.get(WEIGHTS_DIGEST) or state_sha256(source.state_dict()))


def reconcile_run(out_dir: str | os.PathLike[str], *, also: tuple[str, ...] = ()) -> None:
    """Make a run directory whole after a killed write; call before training in it starts.

    Removes the temporary files of interrupted writes of the checkpoints and of the files
    named in ``also`` (the run's history). When ``last.pt`` says its own epoch is the best but
    ``best.pt`` is missing or from an earlier epoch (killed between the two writes), writes
    ``best.pt`` from ``last.pt``'s weights and metadata. A ``best.pt`` from a later epoch than ``last.pt`` (written by a palsyseg that
    wrote ``best.pt`` first) is named in a warning: the resumed run retrains that epoch.
    """
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        return
    for stale in remove_stale_temporaries(out_dir, [LAST_CHECKPOINT, BEST_CHECKPOINT, *also]):
        log.warning("%s: removed the temporary file of an interrupted write", stale)
    last_path, best_path = out_dir / LAST_CHECKPOINT, out_dir / BEST_CHECKPOINT
    if not last_path.is_file():
        return
    last = read_checkpoint(last_path)
    training = last.get("training") or {}
    epoch, best_epoch = last["metadata"].get("epoch"), training.get("best_epoch")
    best_on_disk = (
        read_checkpoint(best_path)["metadata"].get("epoch") if best_path.is_file() else None
    )
    if isinstance(epoch, int) and best_epoch == epoch and best_on_disk != epoch:
        log.warning(
            "%s: epoch %s was the best but the run stopped before best.pt was written; "
            "writing it from last.pt",
            out_dir,
            epoch,
        )
        payload = {k: v for k, v in last.items() if k not in ("training", TRAINING_DIGEST)}
        save_checkpoint(best_path, payload)
    elif isinstance(best_on_disk, int) and isinstance(epoch, int) and best_on_disk > epoch:
        log.warning(
            "%s: best.pt is from epoch %d but last.pt only from epoch %d (an interrupted "
            "write); resuming retrains epoch %d",
            out_dir,
            best_on_disk,
            epoch,
            epoch + 1,
        )
