"""Can a command reach what it needs? One-line answers before any work starts, and after.

Before: :func:`check_tracking_store` refuses a tracking URI that is a plain path, an MLflow
store that does not exist where a command must not create one (the registry's commands: a
mistyped ``--tracking-uri`` would otherwise become a new, empty store), and a tracking server
that does not answer (one request to its ``/health``, at most :data:`PROBE_TIMEOUT_S` seconds,
instead of MLflow's minutes of retries). :func:`check_s3_endpoint` does the same for the S3
endpoint MLflow's client uploads artifacts to.

After: :func:`describe_error` turns an MLflow, S3 or network exception that reached the command
line into one line naming what failed (URI, status) and what to do; the CLI prints it instead
of a traceback (``palsyseg --debug`` keeps the traceback).

Importing this module imports nothing heavy; ``requests``, MLflow and botocore are imported
only when a check runs or an error of theirs is described.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import socket
import sqlite3
from pathlib import Path
from urllib.parse import unquote, urlsplit

from palsyseg.errors import ConfigError, PalsysegError

PROBE_TIMEOUT_S = 5.0
SQLITE_MAGIC = b"SQLite format 3\x00"
# Tables every MLflow sqlite store has; a database without them is someone else's.
_MLFLOW_TABLES = ("experiments", "runs")


class ConnectivityError(PalsysegError):
    """A server (MLflow tracking, S3) cannot be reached, or answers that it is failing."""


# --------------------------------------------------------------------------- tracking store


def _source(tracking_uri: str | None) -> str:
    """Where the URI came from, as the user would fix it."""
    if tracking_uri:
        return "--tracking-uri"
    if os.environ.get("MLFLOW_TRACKING_URI"):
        return "MLFLOW_TRACKING_URI"
    return "the default store"


def _sqlite_file(uri: str) -> Path | None:
    """The database file of a ``sqlite:///PATH`` URI (query string dropped); ``None`` for memory."""
    rest = uri[len("sqlite://") :]
    if not rest.startswith("/") or rest == "/":
        return None  # sqlite:// (in memory) or malformed; let MLflow judge it
    return Path(unquote(rest[1:].split("?", 1)[0]))


def _sqlite_store_problem(path: Path, *, create: bool) -> str | None:
    """Why ``path`` cannot serve as an MLflow sqlite store, or ``None``."""
    if path.is_dir():
        return f"{path} is a directory, not an SQLite database file"
    if not path.exists():
        if create:
            return None
        return (
            f"no MLflow store at {path} (no such file, and this command does not create "
            "one); check the path, or run `palsyseg pipeline run` to make the store"
        )
    try:
        with path.open("rb") as fh:
            head = fh.read(len(SQLITE_MAGIC))
    except OSError as exc:
        return f"{path} cannot be read ({exc.strerror})"
    if not head:
        return None if create else f"{path} is an empty file, not an MLflow store"
    if head != SQLITE_MAGIC:
        return f"{path} is not an SQLite database (is it the right file?)"
    try:
        with contextlib.closing(
            sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            names = {row[0] for row in db.execute("SELECT name FROM sqlite_master")}
    except sqlite3.Error as exc:
        return f"{path} cannot be opened as an SQLite database ({exc})"
    if names and not all(table in names for table in _MLFLOW_TABLES):
        return f"{path} is an SQLite database but not an MLflow store (no experiments/runs tables)"
    if not names and not create:
        return f"{path} is an empty SQLite database, not an MLflow store"
    return None


def check_tracking_store(tracking_uri: str | None = None, *, create: bool = False) -> str:
    """The resolved tracking URI, once it is known to be usable; else a one-line error.

    ``tracking_uri`` is the ``--tracking-uri`` flag (``None``: ``MLFLOW_TRACKING_URI``, else
    the project's embedded sqlite store). Refused with :class:`~palsyseg.errors.ConfigError`:
    a plain path or a ``file:`` folder that does not exist; a sqlite file that is not an MLflow
    store; with ``create=False`` (commands that only read or change a registry) a sqlite store
    that does not exist, unless it is the project's own default store. Refused with
    :class:`ConnectivityError`: an ``http(s)`` server whose ``/health`` does not answer
    within :data:`PROBE_TIMEOUT_S` seconds, or answers with a server error.
    """
    from palsyseg.runtime import find_project_root
    from palsyseg.tracking.runs import resolve_tracking_uri

    uri = resolve_tracking_uri(tracking_uri)
    source = _source(tracking_uri)
    scheme = urlsplit(uri).scheme.lower()
    if len(scheme) <= 1:  # no scheme, or a Windows drive letter
        where = Path(uri).expanduser().resolve()
        database = where / "mlflow.db" if where.is_dir() else where
        raise ConfigError(
            f"{source} {uri}: a plain path is not a tracking URI; use sqlite:///{database} "
            "for a local store, or http://HOST:PORT for a tracking server"
        )
    if scheme == "sqlite":
        path = _sqlite_file(uri)
        if path is None:
            return uri
        default_in_project = source == "the default store" and find_project_root() is not None
        problem = _sqlite_store_problem(path, create=create or default_in_project)
        if problem:
            raise ConfigError(f"{source} {uri}: {problem}")
    elif scheme == "file":
        folder = Path(unquote(urlsplit(uri).path))
        if not create and not folder.is_dir():
            raise ConfigError(
                f"{source} {uri}: no MLflow store at {folder} (no such folder, and this "
                "command does not create one); check the path"
            )
    elif scheme in ("http", "https"):
        probe_server(
            uri, what="MLflow tracking server", fix=f"start it, or point {source} at a running one"
        )
    return uri


# --------------------------------------------------------------------------- servers


def _tls_verify() -> bool | str:
    """TLS verification as MLflow's client does it (its insecure flag and CA bundle)."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return False
    return os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH") or True


def probe_server(url: str, *, what: str, fix: str, path: str = "/health") -> None:
    """One GET of ``url + path`` (no retries, :data:`PROBE_TIMEOUT_S` s); one line if it fails.

    Any HTTP answer below 500 counts as reachable (authentication is the command's business);
    no answer, or a 5xx, raises :class:`ConnectivityError` with ``fix`` as the advice.
    """
    import requests

    target = url.rstrip("/") + path
    try:
        response = requests.get(
            target, timeout=(PROBE_TIMEOUT_S, PROBE_TIMEOUT_S), verify=_tls_verify()
        )
    except requests.exceptions.RequestException as exc:
        raise ConnectivityError(
            f"{what} {url}: unreachable ({network_reason(exc)}); {fix}"
        ) from None
    if response.status_code >= 500:
        raise ConnectivityError(
            f"{what} {url}: {path} answered HTTP {response.status_code} "
            f"{response.reason or ''}".rstrip()
            + "; the server is up but failing (see its log)"
        )


def check_s3_endpoint(variables: tuple[str, ...] = ("MLFLOW_S3_ENDPOINT_URL",)) -> str | None:
    """Probe the S3 endpoint named by the first of ``variables`` that is set.

    The default is the endpoint MLflow's client uploads artifacts to. Returns the endpoint, or
    ``None`` when none is set (AWS itself is not probed). Any HTTP answer counts as reachable
    (an S3 server answers 403 to an anonymous GET).
    """
    variable = next((name for name in variables if os.environ.get(name)), None)
    if variable is None:
        return None
    endpoint = os.environ[variable]
    probe_server(endpoint, what="S3 endpoint", fix=f"start it, or fix {variable}", path="/")
    return endpoint


# --------------------------------------------------------------------------- describing errors


def _chain(exc: BaseException) -> list[BaseException]:
    """``exc`` and every exception it wraps (causes, contexts, ``reason``, exception args)."""
    seen: list[BaseException] = []
    todo = [exc]
    while todo:
        current = todo.pop(0)
        if any(current is s for s in seen) or len(seen) > 30:
            continue
        seen.append(current)
        linked = [current.__cause__, current.__context__, getattr(current, "reason", None)]
        linked += [a for a in getattr(current, "args", ()) if isinstance(a, BaseException)]
        todo += [e for e in linked if isinstance(e, BaseException)]
    return seen


_REASON_PATTERNS = (
    (re.compile(r"Connection refused", re.I), "connection refused"),
    (re.compile(r"Name or service not known|nodename nor servname|getaddrinfo failed|"
                r"Temporary failure in name resolution|NameResolutionError", re.I),
     "host name not found"),
    (re.compile(r"timed out|ConnectTimeout|ReadTimeout", re.I), "no answer in time"),
    (re.compile(r"Network is unreachable", re.I), "network unreachable"),
    (re.compile(r"No route to host", re.I), "no route to host"),
    (re.compile(r"CERTIFICATE_VERIFY_FAILED|SSLError|certificate verify failed", re.I),
     "TLS certificate not trusted"),
)  # fmt: skip


def network_reason(exc: BaseException) -> str | None:
    """``connection refused``, ``host name not found``, ... for a failed connection, else ``None``."""
    for link in _chain(exc):
        if isinstance(link, ConnectionRefusedError):
            return "connection refused"
        if isinstance(link, socket.gaierror):
            return "host name not found"
        if isinstance(link, TimeoutError | socket.timeout):
            return "no answer in time"
        if isinstance(link, OSError) and link.errno in (errno.ENETUNREACH, errno.EHOSTUNREACH):
            return "network unreachable" if link.errno == errno.ENETUNREACH else "no route to host"
    text = " ".join(str(link) for link in _chain(exc))
    for pattern, reason in _REASON_PATTERNS:
        if pattern.search(text):
            return reason
    return None


def _first_line(text: str, limit: int = 240) -> str:
    line = next((part.strip() for part in str(text).splitlines() if part.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


_MLFLOW_ADVICE = {
    "UNAUTHENTICATED": "set MLFLOW_TRACKING_USERNAME and MLFLOW_TRACKING_PASSWORD",
    "PERMISSION_DENIED": "ask the server's administrator for the permission",
    "INTERNAL_ERROR": "the server failed; see its log",
    "TEMPORARILY_UNAVAILABLE": "the server is overloaded or restarting; try again shortly",
    "ENDPOINT_NOT_FOUND": "is this URI an MLflow tracking server of a compatible version?",
}


def _mlflow_uri() -> str:
    import sys

    mlflow = sys.modules.get("mlflow")
    try:
        return str(mlflow.get_tracking_uri()) if mlflow is not None else "MLflow"
    except Exception:  # describing an error must not raise another
        return "MLflow"


def _describe_mlflow(exc: BaseException) -> str:
    uri = _mlflow_uri()
    message = _first_line(str(exc))
    reason = network_reason(exc)
    retries = os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "7")
    if reason is not None and "API request to" in message:
        return (
            f"MLflow tracking server {uri}: unreachable ({reason}, after {retries} retries); "
            "start it, or point --tracking-uri / MLFLOW_TRACKING_URI at a running one"
        )
    status = re.search(r"error code (\d{3})", message)
    code = getattr(exc, "error_code", "") or ""
    http = status.group(1) if status else None
    if http is None and hasattr(exc, "get_http_status_code") and code != "INTERNAL_ERROR":
        http = str(exc.get_http_status_code())
    if http is not None and http.startswith("5") and code in ("", "INTERNAL_ERROR"):
        code = "INTERNAL_ERROR"
    if "error code 404" in message:
        code = "ENDPOINT_NOT_FOUND"
    advice = _MLFLOW_ADVICE.get(code)
    where = f"MLflow {uri}" + (f" (HTTP {http})" if http else "")
    return f"{where}: {message}" + (f"; {advice}" if advice else "")


def describe_error(exc: BaseException) -> str | None:
    """One line for an MLflow, S3 or network error; ``None`` for anything else.

    Names what failed (the tracking URI, the S3 endpoint and operation, the URL), the status
    (HTTP code, error code, connection refused, ...) and what to do.
    """
    kinds = {type(link).__module__.split(".")[0] for link in _chain(exc)}
    if type(exc).__module__.startswith("mlflow"):
        return _describe_mlflow(exc)
    if "botocore" in kinds or "boto3" in kinds:
        from palsyseg.storage import describe_s3_error

        return describe_s3_error(exc)
    if kinds & {"requests", "urllib3"} or isinstance(exc, ConnectionError | TimeoutError):
        url = getattr(getattr(exc, "request", None), "url", None)
        reason = network_reason(exc) or _first_line(str(exc))
        return f"{url or 'network'}: request failed ({reason}); check the address and that the server runs"
    return None
