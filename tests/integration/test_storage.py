"""palsyseg.storage against a real S3 server (SeaweedFS): round trips, markers, refusals."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from palsyseg.atomic import OutputExistsError
from palsyseg.errors import ConfigError, DatasetError
from palsyseg.storage import (
    UPLOAD_MARKER,
    S3Location,
    StorageError,
    download_directory,
    fingerprint,
    list_objects,
    materialize_dataset,
    read_upload_marker,
    upload_directory,
)

pytestmark = pytest.mark.integration


def make_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def tree(root: Path) -> dict[str, bytes]:
    return {
        p.relative_to(root).as_posix(): p.read_bytes()
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


FILES = {
    "manifest.csv": b"image,mask\nimages/a.png,masks/a.png\n",
    "images/a.png": b"\x89PNG-a" * 100,
    "masks/a.png": b"\x89PNG-m" * 50,
    "deep/er/x.bin": bytes(range(256)) * 40,
}


def test_parse_s3_uris() -> None:
    assert S3Location.parse("s3://bucket/a/b/") == S3Location("bucket", "a/b")
    assert S3Location.parse("s3://bucket") == S3Location("bucket", "")
    assert S3Location.parse("s3://bucket/a").key("x/y.png") == "a/x/y.png"
    assert str(S3Location.parse("s3://bucket/a/")) == "s3://bucket/a"
    for bad in ("bucket/a", "s3:///a", "s3://b/a/../c", "s3://b/a//c"):
        with pytest.raises(ConfigError):
            S3Location.parse(bad)


def test_upload_download_round_trip_with_checksums(s3_env, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", FILES)
    uri = "s3://palsyseg-datasets/round-trip/v1"
    marker = upload_directory(src, uri)
    assert set(marker["files"]) == set(FILES)
    assert set(list_objects(uri)) == {*FILES, UPLOAD_MARKER}

    out = download_directory(uri, tmp_path / "out")
    assert tree(out) == FILES
    # The S3 fingerprint is the local one: a dataset keeps its identity across the upload.
    assert fingerprint(uri) == fingerprint(src)
    assert fingerprint(src).startswith("sha256:")

    # Refuses to overwrite a non-empty directory unless forced.
    with pytest.raises(OutputExistsError, match="not empty"):
        download_directory(uri, out)
    download_directory(uri, out, force=True)
    assert tree(out) == FILES


def test_reupload_replaces_the_directory_and_drops_stale_objects(s3_env, tmp_path: Path) -> None:
    uri = "s3://palsyseg-datasets/replace"
    upload_directory(make_tree(tmp_path / "v1", FILES), uri)
    smaller = {"manifest.csv": b"new\n", "images/b.png": b"b"}
    upload_directory(make_tree(tmp_path / "v2", smaller), uri)
    assert set(list_objects(uri)) == {*smaller, UPLOAD_MARKER}
    assert tree(download_directory(uri, tmp_path / "out")) == smaller
    assert fingerprint(uri) != fingerprint(tmp_path / "v1")


def test_download_refuses_content_that_does_not_match_the_marker(s3_env, tmp_path: Path) -> None:
    uri = "s3://palsyseg-datasets/tampered"
    upload_directory(make_tree(tmp_path / "src", FILES), uri)
    s3_env.client().put_object(
        Bucket="palsyseg-datasets", Key="tampered/images/a.png", Body=b"something else"
    )
    with pytest.raises(StorageError, match=r"images/a.png: content does not match"):
        download_directory(uri, tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written
    assert not list(tmp_path.glob(".out*"))


def test_prefix_without_marker_downloads_everything(s3_env, tmp_path: Path) -> None:
    client = s3_env.client()
    client.put_object(Bucket="palsyseg-datasets", Key="foreign/a.txt", Body=b"a")
    client.put_object(Bucket="palsyseg-datasets", Key="foreign/sub/b.txt", Body=b"b")
    uri = "s3://palsyseg-datasets/foreign"
    assert read_upload_marker(uri) is None
    assert tree(download_directory(uri, tmp_path / "out")) == {"a.txt": b"a", "sub/b.txt": b"b"}
    assert fingerprint(uri).startswith("sha256:")


def test_empty_prefix_and_bad_marker_are_errors(s3_env, tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="no objects"):
        download_directory("s3://palsyseg-datasets/nothing-here", tmp_path / "out")
    s3_env.client().put_object(
        Bucket="palsyseg-datasets", Key=f"broken/{UPLOAD_MARKER}", Body=b"{not json"
    )
    with pytest.raises(StorageError, match="malformed upload marker"):
        download_directory("s3://palsyseg-datasets/broken", tmp_path / "out")


def test_wrong_keys_are_refused(s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong")
    with pytest.raises(StorageError, match="failed") as info:
        upload_directory(make_tree(tmp_path / "src", FILES), "s3://palsyseg-datasets/denied")
    (line,) = info.value.lines()  # one line: the URI, the operation, the status, what to do
    assert line.startswith("s3://palsyseg-datasets") and "HTTP 403" in line
    assert "AWS_SECRET_ACCESS_KEY" in line


def test_materialize_from_s3_and_from_a_local_directory(s3_env, tmp_path: Path) -> None:
    src = make_tree(tmp_path / "src", FILES)
    uri = "s3://palsyseg-datasets/materialize"
    upload_directory(src, uri)
    assert tree(materialize_dataset(uri, tmp_path / "from-s3")) == FILES
    assert tree(materialize_dataset(str(src), tmp_path / "from-dir")) == FILES
    with pytest.raises(DatasetError, match="does not exist"):
        materialize_dataset(str(tmp_path / "missing"), tmp_path / "x")
    with pytest.raises(ConfigError, match="DVC revision"):
        materialize_dataset(uri, tmp_path / "y", dvc_rev="HEAD")


def test_marker_is_json_listing_sizes_and_hashes(s3_env, tmp_path: Path) -> None:
    uri = "s3://palsyseg-datasets/marker"
    upload_directory(make_tree(tmp_path / "src", FILES), uri)
    body = s3_env.client().get_object(Bucket="palsyseg-datasets", Key=f"marker/{UPLOAD_MARKER}")
    marker = json.loads(body["Body"].read())
    assert marker["files"]["images/a.png"]["size"] == len(FILES["images/a.png"])
    assert len(marker["files"]["images/a.png"]["sha256"]) == 64


def test_an_unreachable_endpoint_is_one_line_within_seconds(
    s3_env, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket
    import time

    with socket.socket() as sock:  # a port nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{port}")
    started = time.monotonic()
    with pytest.raises(StorageError) as info:
        download_directory("s3://palsyseg-datasets/x", tmp_path / "out")
    assert time.monotonic() - started < 15
    assert str(info.value) == (
        f"s3://palsyseg-datasets/x: read marker failed (S3 endpoint http://127.0.0.1:{port}: "
        "connection refused); start it, or fix AWS_ENDPOINT_URL"
    )
    assert not (tmp_path / "out").exists()
