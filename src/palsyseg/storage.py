"""Datasets and artifacts on S3 (boto3), and fetching a pipeline's input dataset.

The endpoint comes from ``AWS_ENDPOINT_URL`` (read by boto3 itself) or, failing that,
``MLFLOW_S3_ENDPOINT_URL`` (the variable MLflow uses), so one S3-compatible store (AWS,
SeaweedFS, MinIO) serves datasets, DVC and MLflow artifacts. Keys come from the usual AWS
chain (``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``, a profile, a role).

A directory upload is published by one small object written last, ``.palsyseg-upload.json``,
listing every file with its size and SHA-256. Readers that find it verify what they download
against it, and a re-upload deletes it first, so a reader never takes a half-replaced
directory for a whole one. Downloads build the directory in a temporary sibling and rename it
into place (:func:`palsyseg.atomic.atomic_directory`): nothing half-written is left behind.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from palsyseg.atomic import atomic_directory
from palsyseg.errors import ConfigError, DatasetError, PalsysegError

log = logging.getLogger(__name__)

UPLOAD_MARKER = ".palsyseg-upload.json"
_CHUNK = 1 << 20


class StorageError(PalsysegError):
    """An S3 operation failed or an object store holds something other than what was promised."""


@dataclass(frozen=True)
class S3Location:
    """``s3://bucket/prefix`` split into its parts; ``prefix`` has no leading or trailing ``/``."""

    bucket: str
    prefix: str = ""

    @classmethod
    def parse(cls, uri: str) -> S3Location:
        """Parse ``s3://bucket[/prefix]``; anything else raises :class:`ConfigError`."""
        if not is_s3_uri(uri):
            raise ConfigError(f"{uri}: not an s3:// URI")
        rest = uri[len("s3://") :]
        bucket, _, prefix = rest.partition("/")
        if not bucket:
            raise ConfigError(f"{uri}: S3 URI has no bucket")
        prefix = prefix.strip("/")
        if any(part in ("", ".", "..") for part in prefix.split("/")) and prefix:
            raise ConfigError(f"{uri}: S3 prefix has an empty, '.' or '..' part")
        return cls(bucket, prefix)

    def key(self, relative: str) -> str:
        """The object key of ``relative`` (a POSIX path) below this prefix."""
        return f"{self.prefix}/{relative}" if self.prefix else relative

    def __str__(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"


def is_s3_uri(uri: str | os.PathLike[str]) -> bool:
    return isinstance(uri, str) and uri.startswith("s3://")


def endpoint_url() -> str | None:
    """The S3 endpoint: ``AWS_ENDPOINT_URL``, else ``MLFLOW_S3_ENDPOINT_URL``, else AWS itself."""
    return os.environ.get("AWS_ENDPOINT_URL") or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or None


# An endpoint that does not answer fails in seconds, not minutes: 5 s to connect, 3 attempts
# with standard backoff (AWS_MAX_ATTEMPTS, when set, wins over the attempts).
CONNECT_TIMEOUT_S = 5
READ_TIMEOUT_S = 60
MAX_ATTEMPTS = 3


def s3_client(endpoint: str | None = None) -> Any:
    """A boto3 S3 client for ``endpoint`` (default :func:`endpoint_url`), path-style addressing,
    with bounded timeouts and retries."""
    import boto3
    from botocore.config import Config

    region = os.environ.get("AWS_DEFAULT_REGION") or os.environ.get("AWS_REGION") or "us-east-1"
    retries: dict[str, Any] = {"mode": "standard"}
    if not os.environ.get("AWS_MAX_ATTEMPTS"):
        retries["max_attempts"] = MAX_ATTEMPTS
    # A fresh session reads the credentials now; boto3's default session caches the first ones.
    return boto3.session.Session().client(
        "s3",
        endpoint_url=endpoint or endpoint_url(),
        region_name=region,
        config=Config(
            s3={"addressing_style": "path"},
            retries=retries,
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=READ_TIMEOUT_S,
        ),
    )


_S3_ADVICE = {
    "AccessDenied": "check the S3 keys (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and their rights",
    "InvalidAccessKeyId": "check AWS_ACCESS_KEY_ID",
    "SignatureDoesNotMatch": "check AWS_SECRET_ACCESS_KEY",
    "NoSuchBucket": "the bucket does not exist; check the URI",
    "NoSuchKey": "the object does not exist; check the URI",
    "403": "check the S3 keys (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY) and their rights",
    "404": "check the URI (bucket and prefix)",
}


def describe_s3_error(exc: BaseException, uri: str | None = None, action: str | None = None) -> str:
    """One line for a boto3/botocore error: what (URI or endpoint, operation), the status
    (HTTP code and S3 error code, or the connection failure) and what to do."""
    from botocore.exceptions import ClientError, NoCredentialsError, PartialCredentialsError

    from palsyseg.connectivity import network_reason

    variable = next(
        (v for v in ("AWS_ENDPOINT_URL", "MLFLOW_S3_ENDPOINT_URL") if os.environ.get(v)), None
    )
    endpoint = endpoint_url() or "AWS S3"
    what = uri or f"S3 endpoint {endpoint}"
    action = action or getattr(exc, "operation_name", None) or "request"
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        return (
            f"{what}: {action} failed (no S3 credentials); set AWS_ACCESS_KEY_ID and "
            "AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
        )
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        code = str(error.get("Code") or "error")
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode")
        detail = f"HTTP {status} {code}" if status and str(status) != code else code
        advice = _S3_ADVICE.get(code) or _S3_ADVICE.get(str(status), "")
        return f"{what}: {action} failed ({detail})" + (f"; {advice}" if advice else "")
    reason = network_reason(exc)
    if reason is not None:
        fix = f"start it, or fix {variable}" if variable else "check the network"
        return f"{what}: {action} failed (S3 endpoint {endpoint}: {reason}); {fix}"
    first = next((line for line in str(exc).splitlines() if line.strip()), type(exc).__name__)
    return f"{what}: {action} failed ({type(exc).__name__}: {first.strip()[:200]})"


def _client_error(exc: Exception, uri: str, action: str) -> StorageError:
    return StorageError(describe_s3_error(exc, uri, action))


def ensure_bucket(bucket: str, *, client: Any = None) -> None:
    """Create ``bucket`` unless it exists (idempotent)."""
    from botocore.exceptions import ClientError

    client = client or s3_client()
    try:
        client.head_bucket(Bucket=bucket)
        return
    except ClientError:
        pass
    try:
        client.create_bucket(Bucket=bucket)
    except ClientError as exc:
        code = exc.response.get("Error", {}).get("Code", "")
        if code not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise _client_error(exc, f"s3://{bucket}", "create bucket") from None


def list_objects(uri: str, *, client: Any = None) -> dict[str, dict[str, Any]]:
    """Every object below ``uri``: relative path -> ``{"size", "etag"}``."""
    from botocore.exceptions import BotoCoreError, ClientError

    loc = S3Location.parse(uri)
    client = client or s3_client()
    base = f"{loc.prefix}/" if loc.prefix else ""
    found: dict[str, dict[str, Any]] = {}
    try:
        for page in client.get_paginator("list_objects_v2").paginate(
            Bucket=loc.bucket, Prefix=base
        ):
            for obj in page.get("Contents", []):
                rel = obj["Key"][len(base) :]
                if rel and not rel.endswith("/"):
                    found[rel] = {"size": int(obj["Size"]), "etag": obj["ETag"].strip('"')}
    except (ClientError, BotoCoreError) as exc:
        raise _client_error(exc, uri, "list") from None
    return found


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _local_files(root: Path) -> dict[str, Path]:
    files: dict[str, Path] = {}
    for path in sorted(root.rglob("*")):
        if path.is_symlink():
            raise DatasetError(f"{path}: symbolic links are not uploaded")
        if path.is_file() and path.name != UPLOAD_MARKER:
            files[path.relative_to(root).as_posix()] = path
    return files


def directory_listing(root: str | os.PathLike[str]) -> dict[str, dict[str, Any]]:
    """Relative path -> ``{"size", "sha256"}`` for every file below ``root``."""
    root = Path(root)
    if not root.is_dir():
        raise DatasetError(f"{root}: not a directory")
    return {
        rel: {"size": path.stat().st_size, "sha256": _sha256(path)}
        for rel, path in _local_files(root).items()
    }


def upload_directory(
    local_dir: str | os.PathLike[str], uri: str, *, client: Any = None
) -> dict[str, Any]:
    """Upload ``local_dir`` to ``uri``, replacing what was there; returns the published listing.

    Order: delete the old marker, put every file, delete objects the new directory lacks,
    put the marker. A failure at any point leaves no marker, so readers refuse the prefix.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    local_dir = Path(local_dir)
    loc = S3Location.parse(uri)
    client = client or s3_client()
    files = _local_files(local_dir) if local_dir.is_dir() else None
    if files is None:
        raise DatasetError(f"{local_dir}: not a directory")
    ensure_bucket(loc.bucket, client=client)
    listing: dict[str, dict[str, Any]] = {}
    try:
        client.delete_object(Bucket=loc.bucket, Key=loc.key(UPLOAD_MARKER))
        for rel, path in files.items():
            listing[rel] = {"size": path.stat().st_size, "sha256": _sha256(path)}
            client.upload_file(str(path), loc.bucket, loc.key(rel))
        stale = [rel for rel in list_objects(uri, client=client) if rel not in files]
        for rel in stale:
            if rel != UPLOAD_MARKER:
                client.delete_object(Bucket=loc.bucket, Key=loc.key(rel))
        marker = {"format": 1, "files": listing}
        client.put_object(
            Bucket=loc.bucket,
            Key=loc.key(UPLOAD_MARKER),
            Body=json.dumps(marker, sort_keys=True).encode("utf-8"),
            ContentType="application/json",
        )
    except (ClientError, BotoCoreError) as exc:
        raise _client_error(exc, uri, "upload") from None
    log.info("uploaded %d files to %s", len(files), loc)
    return marker


def read_upload_marker(uri: str, *, client: Any = None) -> dict[str, Any] | None:
    """The published listing of ``uri``, or ``None`` when the prefix has no marker."""
    from botocore.exceptions import BotoCoreError, ClientError

    loc = S3Location.parse(uri)
    client = client or s3_client()
    try:
        body = client.get_object(Bucket=loc.bucket, Key=loc.key(UPLOAD_MARKER))["Body"].read()
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
            return None
        raise _client_error(exc, uri, "read marker") from None
    except BotoCoreError as exc:
        raise _client_error(exc, uri, "read marker") from None
    try:
        marker = json.loads(body)
        if not isinstance(marker.get("files"), dict):
            raise ValueError("no files map")
    except ValueError as exc:
        raise StorageError(f"{loc.key(UPLOAD_MARKER)}: malformed upload marker ({exc})") from None
    return marker


def download_directory(
    uri: str, dest: str | os.PathLike[str], *, client: Any = None, force: bool = False
) -> Path:
    """Download everything below ``uri`` into ``dest``, atomically.

    With an upload marker, exactly its files are fetched and each is checked against its
    size and SHA-256 (a mismatch is a :class:`StorageError`). Without one (a prefix written
    by another tool), every object is fetched. An empty prefix is an error.
    """
    from botocore.exceptions import BotoCoreError, ClientError

    loc = S3Location.parse(uri)
    client = client or s3_client()
    marker = read_upload_marker(uri, client=client)
    if marker is not None:
        wanted = {rel: info for rel, info in marker["files"].items()}
    else:
        wanted = {rel: {} for rel in list_objects(uri, client=client)}
        if wanted:
            log.warning("%s has no %s; downloading without checksums", loc, UPLOAD_MARKER)
    if not wanted:
        raise StorageError(f"{uri}: no objects below this prefix")
    with atomic_directory(dest, force=force) as staging:
        for rel, info in sorted(wanted.items()):
            target = (staging / rel).resolve()
            if not target.is_relative_to(staging.resolve()):
                raise StorageError(f"{loc.key(rel)}: object key escapes the download directory")
            target.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(loc.bucket, loc.key(rel), str(target))
            except (ClientError, BotoCoreError) as exc:
                raise _client_error(exc, f"{loc}/{rel}", "download") from None
            if info and (
                target.stat().st_size != info["size"] or _sha256(target) != info["sha256"]
            ):
                raise StorageError(f"{loc}/{rel}: content does not match the upload marker")
    log.info("downloaded %d files from %s to %s", len(wanted), loc, dest)
    return Path(dest)


def fingerprint(uri_or_path: str | os.PathLike[str], *, client: Any = None) -> str:
    """A content hash of a dataset directory or S3 prefix (``sha256:<hex>``).

    Local: over every file's relative path and SHA-256. S3 with a marker: the same value as
    the local directory it was uploaded from; without a marker: over keys, sizes and ETags.
    Used as the pipeline's cache key, so changed data never reuses a cached step.
    """
    if is_s3_uri(uri_or_path):
        marker = read_upload_marker(str(uri_or_path), client=client)
        if marker is not None:
            listing = {rel: info["sha256"] for rel, info in marker["files"].items()}
        else:
            objects = list_objects(str(uri_or_path), client=client)
            if not objects:
                raise StorageError(f"{uri_or_path}: no objects below this prefix")
            listing = {rel: f"{o['size']}:{o['etag']}" for rel, o in objects.items()}
    else:
        listing = {rel: info["sha256"] for rel, info in directory_listing(uri_or_path).items()}
    digest = hashlib.sha256(json.dumps(listing, sort_keys=True).encode("utf-8"))
    return f"sha256:{digest.hexdigest()}"


def materialize_dataset(
    uri: str,
    dest: str | os.PathLike[str],
    *,
    dvc_rev: str = "",
    dvc_repo: str = "",
    force: bool = False,
) -> Path:
    """Make the dataset named by ``uri`` a local directory at ``dest`` (atomically).

    - ``s3://bucket/prefix``: downloaded with :func:`download_directory`;
    - ``dvc_rev`` given: ``uri`` is a path inside the DVC project ``dvc_repo`` (a git URL or
      directory; default: the current project), fetched at that git revision with ``dvc get``
      (from the DVC cache or remote);
    - otherwise a local directory, copied.
    """
    dest = Path(dest)
    if is_s3_uri(uri):
        if dvc_rev:
            raise ConfigError(f"{uri}: a DVC revision applies to a path in a DVC project, not S3")
        return download_directory(uri, dest, force=force)
    if dvc_rev:
        from dvc.exceptions import DvcException
        from dvc.repo import Repo

        from palsyseg.runtime import find_project_root

        repo = dvc_repo or str(find_project_root() or Path.cwd())
        with atomic_directory(dest, force=force) as staging:
            try:
                Repo.get(repo, uri, out=str(staging / "dataset"), rev=dvc_rev)
            except DvcException as exc:
                raise StorageError(f"{repo}:{uri}@{dvc_rev}: dvc get failed ({exc})") from None
            fetched = staging / "dataset"
            for child in fetched.iterdir():
                os.replace(child, staging / child.name)
            fetched.rmdir()
        return dest
    source = Path(uri)
    if not source.is_dir():
        raise DatasetError(f"{uri}: dataset directory does not exist")
    with atomic_directory(dest, force=force) as staging:
        shutil.copytree(source, staging, dirs_exist_ok=True, symlinks=True)
    return dest
