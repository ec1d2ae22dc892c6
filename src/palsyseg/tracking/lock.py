"""The registry-wide promotion lock: one champion change at a time, across processes and hosts.

MLflow has no transactions or conditional writes, but creating a registered model is atomic
(its name is the table's primary key; a second create fails with ``RESOURCE_ALREADY_EXISTS``).
The lock is a registered model named ``<model>.promotion-lock``, created to acquire and
deleted to release, tagged with its holder: a token, the time, and where the holder runs
(host, boot, PID namespace, PID and the PID's start time).

A holder that died is detected two ways:

- on the same machine and PID namespace, at once: its PID is gone, or now belongs to a
  process that started later (a reused PID);
- anywhere else, when the lock is older than ``stale_after`` seconds.
"""

from __future__ import annotations

import contextlib
import logging
import os
import random
import socket
import time
import uuid
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

from palsyseg.errors import PalsysegError

log = logging.getLogger(__name__)

LOCK_SUFFIX = ".promotion-lock"


class LockError(PalsysegError):
    """The promotion lock cannot be taken (busy, or a dead holder's lock we may not break)."""


def _read(path: str) -> str:
    try:
        return Path(path).read_text(encoding="ascii").strip()
    except OSError:
        return ""


@cache
def host_identity() -> str:
    """``host/boot/pid-namespace``: two processes with equal values see the same PIDs.

    Empty where ``/proc`` does not say (then PIDs are never compared).
    """
    boot = _read("/proc/sys/kernel/random/boot_id")
    try:
        namespace = os.readlink("/proc/self/ns/pid")
    except OSError:
        namespace = ""
    if not boot or not namespace:
        return ""
    return f"{socket.gethostname()}/{boot}/{namespace}"


def process_start(pid: int) -> str:
    """The start time of ``pid`` in clock ticks since boot (``/proc/PID/stat`` field 22)."""
    stat = _read(f"/proc/{pid}/stat")
    # The command name (field 2) may hold spaces and parentheses: split after its last ")".
    fields = stat.rpartition(")")[2].split()
    return fields[19] if len(fields) > 19 else ""


def holder_tags(token: str) -> dict[str, str]:
    """What a holder writes on the lock so that others can tell whether it is still alive."""
    pid = os.getpid()
    return {
        "holder": token,
        "acquired_at": f"{time.time():.3f}",
        "host": host_identity(),
        "pid": str(pid),
        "pid_start": process_start(pid),
    }


def holder_is_dead(tags: dict[str, str]) -> bool:
    """Whether the holder provably died: same host and PID namespace, and its PID is gone
    or belongs to a process that started after it took the lock."""
    here = host_identity()
    if not here or tags.get("host") != here:
        return False
    try:
        pid = int(tags.get("pid", ""))
    except ValueError:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        pass  # alive, another user's
    started = tags.get("pid_start", "")
    return bool(started) and process_start(pid) not in ("", started)


def find_model(mlflow_client: Any, name: str) -> Any | None:
    """Registered model ``name``, or ``None`` when it does not exist."""
    from mlflow.exceptions import MlflowException

    try:
        return mlflow_client.get_registered_model(name)
    except MlflowException as exc:
        if exc.error_code == "RESOURCE_DOES_NOT_EXIST":
            return None
        raise


def _contended(exc: Exception) -> bool:
    """Whether a failed lock create means "someone else holds or just released it".

    Besides ``RESOURCE_ALREADY_EXISTS`` (and sqlite's "database is locked"), MLflow's SQL
    store answers a duplicate create by reading the existing model back; when its holder
    deletes it between the failed insert and that read, the create fails with
    ``RESOURCE_DOES_NOT_EXIST`` naming the lock. All three mean: try again.
    """
    code = getattr(exc, "error_code", None)
    return code in {"RESOURCE_ALREADY_EXISTS", "RESOURCE_DOES_NOT_EXIST"} or "locked" in str(exc)


def _break(mlflow_client: Any, lock: str, tags: dict[str, str], why: str) -> None:
    from mlflow.exceptions import MlflowException

    log.warning("breaking the promotion lock %s held by %s: %s", lock, tags.get("holder"), why)
    try:
        mlflow_client.delete_registered_model(lock)
    except MlflowException as exc:
        if exc.error_code == "PERMISSION_DENIED":
            raise LockError(
                f"{lock}: held by {tags.get('holder', '?').split(':')[0]}, who is gone ({why}), "
                "but you may not delete it; an MLflow admin can delete that registered model"
            ) from None
        if exc.error_code != "RESOURCE_DOES_NOT_EXIST":
            raise


@contextlib.contextmanager
def promotion_lock(
    mlflow_client: Any,
    name: str,
    *,
    holder: str,
    timeout: float = 60.0,
    stale_after: float = 120.0,
) -> Iterator[str]:
    """Hold the registry-wide lock of model ``name`` (see the module docstring)."""
    from mlflow.exceptions import MlflowException

    lock = f"{name}{LOCK_SUFFIX}"
    token = f"{holder}:{uuid.uuid4().hex}"
    deadline = time.monotonic() + timeout
    rng = random.Random()
    while True:
        try:
            mlflow_client.create_registered_model(
                lock,
                tags=holder_tags(token),
                description=f"palsyseg promotion lock for {name}; held by {holder}",
            )
            break
        except MlflowException as exc:
            if not _contended(exc):
                raise
        current = find_model(mlflow_client, lock)
        if current is not None:
            tags = dict(current.tags or {})
            if tags.get("holder") == token:  # our create succeeded, its reply was lost
                break
            age = time.time() - float(tags.get("acquired_at") or time.time())
            if holder_is_dead(tags):
                _break(mlflow_client, lock, tags, f"process {tags.get('pid')} on this host ended")
                continue
            if age > stale_after:
                _break(mlflow_client, lock, tags, f"held for {age:.0f} s > {stale_after:.0f} s")
                continue
        if time.monotonic() > deadline:
            raise LockError(
                f"registry {name}: another promotion holds the lock ({lock}); try again"
            )
        time.sleep(rng.uniform(0.02, 0.15))
    try:
        yield token
    finally:
        current = find_model(mlflow_client, lock)
        if current is not None and (current.tags or {}).get("holder") == token:
            mlflow_client.delete_registered_model(lock)
