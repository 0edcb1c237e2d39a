"""``vitrina datasets download`` against a local HTTP server on loopback (no internet needed)."""

from __future__ import annotations

import hashlib
import http.server
import io
import threading
import zipfile
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from typer.testing import CliRunner

from vitrina.cli import app
from vitrina.data import datasets
from vitrina.data.datasets import Checksum, DownloadError, download, load_dataset


@pytest.fixture()
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    root = tmp_path / "www"
    root.mkdir()

    class Handler(http.server.SimpleHTTPRequestHandler):
        def __init__(self, *a: object, **kw: object) -> None:
            super().__init__(*a, directory=str(root), **kw)  # type: ignore[arg-type]

        def log_message(self, *args: object) -> None:
            pass

    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", root
    httpd.shutdown()


def _ml100k_zip(data_home: Path, extra: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", (data_home / "ml-100k" / "u.data").read_bytes())
        for name, content in (extra or {}).items():
            zf.writestr(name, content)
    return buf.getvalue()


@pytest.fixture()
def local_spec(
    monkeypatch: pytest.MonkeyPatch, data_home: Path, server: tuple[str, Path]
) -> tuple[str, Path]:
    """Point ml-100k's archive at the loopback server, with the checksum of the archive served there."""
    url, root = server
    blob = _ml100k_zip(data_home)
    (root / "ml-100k.zip").write_bytes(blob)
    spec = datasets.DATASETS["ml-100k"]
    archive = replace(
        spec.archive, url=f"{url}/ml-100k.zip", checksum=Checksum("sha256", hashlib.sha256(blob).hexdigest())
    )
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", replace(spec, archive=archive))
    return url, root


def test_download_verifies_and_unpacks(local_spec: tuple[str, Path], tmp_path: Path) -> None:
    home = tmp_path / "home"
    result = CliRunner().invoke(app, ["datasets", "download", "ml-100k", "--home", str(home)])
    assert result.exit_code == 0, result.output
    assert (home / "ml-100k" / "u.data").is_file()
    assert load_dataset("ml-100k", home).height == 100_000


def test_download_refuses_wrong_archive_checksum(local_spec: tuple[str, Path], tmp_path: Path) -> None:
    url, root = local_spec
    (root / "tampered.zip").write_bytes(b"PK not really a zip")
    with pytest.raises(DownloadError, match=r"sha256 is .*expected"):
        download("ml-100k", tmp_path / "home", url=f"{url}/tampered.zip")
    assert not (tmp_path / "home" / "ml-100k").exists()


def test_download_checks_member_content(
    monkeypatch: pytest.MonkeyPatch, data_home: Path, server: tuple[str, Path], tmp_path: Path
) -> None:
    url, root = server
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("ml-100k/u.data", b"1\t2\t3\t4\n")  # right name, wrong content
    blob = buf.getvalue()
    (root / "bad.zip").write_bytes(blob)
    spec = datasets.DATASETS["ml-100k"]
    archive = replace(spec.archive, checksum=Checksum("sha256", hashlib.sha256(blob).hexdigest()))
    monkeypatch.setitem(datasets.DATASETS, "ml-100k", replace(spec, archive=archive))
    with pytest.raises(DownloadError, match=r"u\.data: sha256"):
        download("ml-100k", tmp_path / "home", url=f"{url}/bad.zip")


def test_download_unreachable_and_unknown(tmp_path: Path) -> None:
    with pytest.raises(DownloadError, match="cannot fetch"):
        download("ml-100k", tmp_path, url="http://127.0.0.1:9/ml-100k.zip", timeout=2)
    result = CliRunner().invoke(app, ["datasets", "download", "beauty", "--home", str(tmp_path)])
    assert result.exit_code == 2 and "no official archive" in result.output


def test_gitblob_checksum_matches_git() -> None:
    assert Checksum("gitblob", "").of(b"hello\n") == "ce013625030ba8dba906f756967f9e9ca394464a"
