"""Named datasets resolved under a data home, and a verified downloader for official archives.

The data home is ``$VITRINA_DATA_HOME`` (else ``~/.vitrina/datasets``). Each dataset lists the
files it may be read from, in order of preference, relative to the data home; the layouts of
the official archives and of the common preprocessed copies are both accepted.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import shutil
import tempfile
import urllib.parse
import urllib.request
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import polars as pl

from vitrina.data.loaders import Format, load
from vitrina.errors import DatasetNotFoundError, VitrinaError


class DownloadError(VitrinaError):
    """An archive could not be fetched, failed its checksum or had unexpected contents."""


class PartialDatasetWarning(UserWarning):
    """A dataset was read from an incomplete copy; numbers are not comparable with the full data."""


@dataclass(frozen=True)
class Checksum:
    """``algorithm`` is a hashlib name (md5, sha256) or ``gitblob`` (``git hash-object``)."""

    algorithm: str
    hexdigest: str

    def of(self, data: bytes) -> str:
        if self.algorithm == "gitblob":
            return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        return hashlib.new(self.algorithm, data).hexdigest()

    def verify(self, data: bytes, what: str) -> None:
        got = self.of(data)
        if got != self.hexdigest:
            raise DownloadError(f"{what}: {self.algorithm} is {got}, expected {self.hexdigest}; refusing it")


@dataclass(frozen=True)
class Archive:
    url: str
    checksum: Checksum  # of the archive as published (GroupLens publishes MD5 sums)
    members: dict[str, Checksum]  # files inside it (path in the zip) -> checksum of their content
    target: str  # folder under the data home


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    candidates: tuple[tuple[str, Format], ...]  # (path under data home, format), preferred first
    description: str
    source: str
    archive: Archive | None = None
    partial: frozenset[str] = field(default_factory=frozenset)  # candidates that are incomplete copies
    implicit_threshold: float | None = None
    # False: ``timestamp`` is only the order of events (S3-Rec/SASRec sequence files); models that
    # read times (hstu, fuxi-alpha) refuse such data
    has_time: bool = True


_ML1M_NOTE = "ml-1m/ratings_users_0001-2999.dat.gz"

DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "ml-100k",
            (("ml-100k/u.data", "movielens"),),
            "MovieLens 100K ratings (943 users, 1,682 movies, 100,000 ratings with timestamps)",
            "https://grouplens.org/datasets/movielens/100k/",
            Archive(
                "https://files.grouplens.org/datasets/movielens/ml-100k.zip",
                Checksum("md5", "0e33842e24a9c977be4e0107933c0723"),
                {
                    "ml-100k/u.data": Checksum(
                        "sha256", "06416e597f82b7342361e41163890c81036900f418ad91315590814211dca490"
                    )
                },
                "ml-100k",
            ),
        ),
        DatasetSpec(
            "ml-1m",
            (("ml-1m/ratings.dat", "movielens"), (_ML1M_NOTE, "movielens")),
            "MovieLens 1M ratings (6,040 users, 3,706 movies, 1,000,209 ratings with timestamps)",
            "https://grouplens.org/datasets/movielens/1m/",
            Archive(
                "https://files.grouplens.org/datasets/movielens/ml-1m.zip",
                Checksum("md5", "c4d9eecfca2ab87c1945afe126590906"),
                {"ml-1m/ratings.dat": Checksum("gitblob", "77a7c4b150f588c23bb9e1f068aa996c0b413695")},
                "ml-1m",
            ),
            partial=frozenset({_ML1M_NOTE}),
        ),
        DatasetSpec(
            "beauty",
            (("amazon-beauty/s3rec/Beauty.txt", "s3rec"), ("beauty/Beauty.txt", "s3rec")),
            "Amazon Beauty 5-core, S3-Rec preprocessing (22,363 users, 12,101 items)",
            "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Beauty.txt)",
            has_time=False,
        ),
        DatasetSpec(
            "beauty-ts",
            (("amazon-beauty/timestamps/Beauty_s3rec_with_ts.tsv.gz", "s3rec-ts"),),
            "Amazon Beauty 5-core, S3-Rec preprocessing with absolute review times (Unix seconds, day "
            "resolution: same-day events keep the S3-Rec order); the same 198,502 events as 'beauty'",
            "https://github.com/KingGugu/TiCoSeRec (data/Beauty, times attached to S3-Rec ids)",
        ),
        DatasetSpec(
            "yelp",
            (("yelp/s3rec/Yelp.txt", "s3rec"), ("yelp/Yelp.txt", "s3rec")),
            "Yelp 2019 5-core, S3-Rec preprocessing (30,431 users, 20,033 items)",
            "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/Yelp.txt)",
            has_time=False,
        ),
        DatasetSpec(
            "yelp-ts",
            (("yelp/timestamps/Yelp_s3rec_with_ts.tsv.gz", "s3rec-ts"),),
            "Yelp 2019 5-core, S3-Rec preprocessing with absolute review times (Unix seconds); 30,424 "
            "of the 30,431 users of 'yelp' (7 users could not be matched to their times)",
            "https://github.com/KingGugu/TiCoSeRec (data/Yelp-A, times attached to S3-Rec ids)",
        ),
        DatasetSpec(
            "lastfm",
            (("lastfm/s3rec/LastFM.txt", "s3rec"), ("lastfm/LastFM.txt", "s3rec")),
            "Last.fm HetRec-2k tagging sequences, S3-Rec preprocessing (1,090 users, 3,646 artists)",
            "https://github.com/RUCAIBox/CIKM2020-S3Rec (data/LastFM.txt)",
            has_time=False,
        ),
        DatasetSpec(
            "video-games",
            (
                ("amazon-video-games/sasrec/Video.txt.gz", "pairs"),
                ("amazon-video-games/sasrec/Video.txt", "pairs"),
            ),
            "Amazon Video Games, SASRec preprocessing (31,013 users, 23,715 items)",
            "https://github.com/kang205/SASRec (data/Video.txt)",
            has_time=False,
        ),
    )
}


def data_home() -> Path:
    """``$VITRINA_DATA_HOME`` or ``~/.vitrina/datasets``."""
    return Path(os.environ.get("VITRINA_DATA_HOME") or Path.home() / ".vitrina" / "datasets").expanduser()


def _spec(name: str) -> DatasetSpec:
    if name not in DATASETS:
        raise DatasetNotFoundError(f"unknown dataset '{name}'; known: {', '.join(DATASETS)}")
    return DATASETS[name]


def resolve(name: str, home: Path | None = None) -> tuple[Path, Format]:
    """Path and format of the best available copy of a named dataset."""
    spec = _spec(name)
    home = home or data_home()
    for rel, fmt in spec.candidates:
        if (home / rel).is_file():
            if rel in spec.partial:
                warnings.warn(
                    f"{name}: using the incomplete copy {rel}; results are not comparable with the full "
                    "dataset. "
                    f"Get the full one with `vitrina datasets download {name}`",
                    PartialDatasetWarning,
                    stacklevel=2,
                )
            return home / rel, fmt
    how = (
        f"run `vitrina datasets download {name}`"
        if spec.archive
        else f"download it from {spec.source} and place it at {home / spec.candidates[0][0]}"
    )
    raise DatasetNotFoundError(
        f"dataset '{name}' not found under {home} (looked for {', '.join(r for r, _ in spec.candidates)}); "
        f"{how}, or set VITRINA_DATA_HOME to the folder that holds it"
    )


def load_dataset(name: str, home: Path | None = None) -> pl.DataFrame:
    """Load a named dataset as an interaction table."""
    path, fmt = resolve(name, home)
    return load(path, fmt)


def download(
    name: str,
    home: Path | None = None,
    *,
    url: str | None = None,
    progress: Callable[[int, int | None], None] | None = None,
    timeout: float = 60.0,
) -> Path:
    """Fetch a dataset's official archive, verify it and its members, and unpack it under the data home.

    ``url`` overrides the address (a mirror); the checksums still apply. Returns the folder.
    """
    spec = _spec(name)
    if spec.archive is None:
        raise DownloadError(f"'{name}' has no official archive to download; get it from {spec.source}")
    archive = spec.archive
    home = home or data_home()
    source = url or archive.url
    parts = urllib.parse.urlsplit(source)
    if parts.scheme not in ("http", "https", "file") or (parts.scheme != "file" and not parts.netloc):
        raise DownloadError(f"{name}: --url {source!r} is not an http://, https:// or file:// address")
    try:
        with urllib.request.urlopen(source, timeout=timeout) as response:
            total = response.headers.get("Content-Length")
            chunks, done = [], 0
            while chunk := response.read(1 << 20):
                chunks.append(chunk)
                done += len(chunk)
                if progress:
                    progress(done, int(total) if total else None)
    except (OSError, ValueError, http.client.HTTPException) as exc:  # the last two: a malformed address
        raise DownloadError(f"{name}: cannot fetch {source} ({exc})") from exc
    data = b"".join(chunks)
    archive.checksum.verify(data, f"{name}: archive from {source}")
    with tempfile.TemporaryDirectory() as tmp:
        zpath = Path(tmp) / "archive.zip"
        zpath.write_bytes(data)
        try:
            with zipfile.ZipFile(zpath) as zf:
                names = set(zf.namelist())
                for member, checksum in archive.members.items():
                    if member not in names:
                        raise DownloadError(f"{name}: archive lacks {member}")
                    checksum.verify(zf.read(member), f"{name}: {member}")
                unpack = Path(tmp) / "unpacked"
                for info in zf.infolist():  # refuse paths escaping the folder (zip slip)
                    if info.filename.startswith("/") or ".." in Path(info.filename).parts:
                        raise DownloadError(f"{name}: unsafe path in archive: {info.filename}")
                zf.extractall(unpack)
        except zipfile.BadZipFile as exc:
            raise DownloadError(f"{name}: not a zip archive ({exc})") from exc
        target = home / archive.target
        target.mkdir(parents=True, exist_ok=True)
        top = unpack / archive.target
        for item in (top if top.is_dir() else unpack).iterdir():
            dest = target / item.name
            if dest.is_dir():
                shutil.rmtree(dest)
            shutil.move(str(item), dest)
    return target
