"""Atomic writes: a file or a directory appears whole or not at all.

Every writer in palsyseg goes through here so that a crash, a Ctrl-C or a validation error
never leaves a half-written checkpoint, manifest or dataset behind. Files are written to a
temporary sibling (same filesystem) and moved into place with :func:`os.replace`.

Durable as well as atomic: the new file (or every file of a new directory) is fsynced before
the rename and its parent directory after it, so a power cut cannot leave a renamed but empty
file. A process killed mid-write (SIGKILL, OOM) cannot remove its temporary sibling; the
next writer of the same files clears them with :func:`remove_stale_temporaries`.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from palsyseg.errors import PalsysegError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync(path: Path, *, directory: bool = False) -> None:
    """Flush ``path`` (a file, or a directory's entries) to disk."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if directory else 0)
    try:
        fd = os.open(path, flags)
    except OSError:
        if directory:  # platforms that cannot open a directory (Windows) cannot fsync one
            return
        raise
    try:
        os.fsync(fd)
    except OSError as exc:
        # Some filesystems refuse fsync on a directory; the rename is then as durable as they allow.
        if not (directory and exc.errno in (errno.EINVAL, errno.EBADF, errno.ENOTSUP)):
            raise
    finally:
        os.close(fd)


def _temporary_prefix_suffix(path: Path) -> tuple[str, str]:
    """The name parts of :func:`atomic_path`'s temporary siblings of ``path``."""
    return f".{path.stem}.", f".tmp{path.suffix}"


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike[str]) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; on success it is renamed onto ``path``.

    The caller writes the whole file to the yielded path (with any library that wants a
    filename: ``cv2.imwrite``, ``torch.save``, ...). On an exception the temporary file is
    removed and ``path`` is untouched. The suffix is kept so suffix-sniffing writers work.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    prefix, suffix = _temporary_prefix_suffix(path)
    fd, tmp_name = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        # mkstemp creates 0600; give the file the mode a plain open() would (0666 & ~umask).
        os.chmod(tmp, 0o666 & ~_current_umask())
        _fsync(tmp)
        os.replace(tmp, path)
        _fsync(path.parent, directory=True)
    finally:
        tmp.unlink(missing_ok=True)


def remove_stale_temporaries(directory: str | os.PathLike[str], names: list[str]) -> list[Path]:
    """Delete the temporary siblings :func:`atomic_path` left for ``names`` in ``directory``.

    A write killed before its ``finally`` ran (SIGKILL, out of memory, power cut) leaves
    ``.<stem>.<random>.tmp<suffix>`` behind, as large as the file it was writing. Call this
    where the same files are about to be written again, by the only writer of ``directory``;
    returns what was removed.
    """
    directory = Path(directory)
    removed: list[Path] = []
    for name in names:
        prefix, suffix = _temporary_prefix_suffix(Path(name))
        pattern = f"{glob.escape(prefix)}*{glob.escape(suffix)}"
        for stale in sorted(directory.glob(pattern)):
            if stale.is_file() and not stale.is_symlink():
                stale.unlink(missing_ok=True)
                removed.append(stale)
    return removed


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    """Write ``data`` to ``path`` atomically."""
    with atomic_path(path) as tmp:
        tmp.write_bytes(data)


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def json_safe(value: Any) -> Any:
    """``value`` with NaN and infinities (nested in dicts, lists, tuples) as ``None``: strict JSON has neither."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


def atomic_write_json(path: str | os.PathLike[str], value: Any, *, indent: int = 2) -> None:
    """Write ``value`` as strict JSON (non-finite numbers as ``null``) atomically, newline-terminated."""
    atomic_write_text(path, json.dumps(json_safe(value), indent=indent) + "\n")


class OutputExistsError(PalsysegError):
    """The output directory holds files and ``force`` was not given."""


def _is_non_empty_dir(path: Path) -> bool:
    return path.is_dir() and any(path.iterdir())


def _fsync_tree(root: Path) -> None:
    """fsync every regular file below ``root``, then every directory, deepest first."""
    directories: list[Path] = []
    for folder, _dirs, files in os.walk(root):
        directories.append(Path(folder))
        for name in files:
            path = Path(folder) / name
            if path.is_file() and not path.is_symlink():
                _fsync(path)
    for folder in reversed(directories):
        _fsync(folder, directory=True)


@contextlib.contextmanager
def atomic_directory(out: str | os.PathLike[str], *, force: bool = False) -> Iterator[Path]:
    """Build a directory in a temporary sibling and move it onto ``out`` when the block succeeds.

    Refuses a non-empty ``out`` unless ``force`` (checked before any work starts). With
    ``force`` the old directory is replaced only after the new one is complete, so a failure
    loses nothing. ``out`` must not be a file.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise OutputExistsError(f"{out}: output path exists and is not a directory")
    if _is_non_empty_dir(out) and not force:
        raise OutputExistsError(f"{out}: output directory is not empty (use --force to replace it)")
    out.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".partial", dir=out.parent))
    try:
        yield staging
        os.chmod(staging, 0o777 & ~_current_umask())  # mkdtemp creates 0700
        _fsync_tree(staging)
        if out.exists():
            trash = Path(tempfile.mkdtemp(prefix=f".{out.name}.", suffix=".old", dir=out.parent))
            os.replace(out, trash / "old")
            os.replace(staging, out)
            _fsync(out.parent, directory=True)
            shutil.rmtree(trash, ignore_errors=True)
        else:
            os.replace(staging, out)
            _fsync(out.parent, directory=True)
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
