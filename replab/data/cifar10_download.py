"""The official CIFAR-10 archive (``cifar-10-python.tar.gz``): downloaded, checked against its MD5, extracted
safely and moved into the data folder whole (``replab data download``).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
from pathlib import Path

from tqdm.auto import tqdm

from replab.data import checksums
from replab.data.cifar10 import FOLDER, OFFICIAL_MD5, OFFICIAL_URL, TEST_BATCH, TRAIN_BATCHES
from replab.data.http import open_url, retrying

__all__ = ["download_cifar10"]


def _complete(folder: Path) -> bool:
    return all((folder / name).is_file() for name in (*TRAIN_BATCHES, TEST_BATCH))


def _safe_members(archive: tarfile.TarFile, destination: Path) -> list[tarfile.TarInfo]:
    """Every member, after checking it is a plain file or folder that lands inside ``destination``."""
    destination = destination.resolve()
    members = archive.getmembers()
    for member in members:
        target = (destination / member.name).resolve()
        if (
            Path(member.name).is_absolute()
            or ".." in Path(member.name).parts
            or (target != destination and destination not in target.parents)
        ):
            raise ValueError(f"refusing to extract {member.name!r}: it points outside the extraction folder")
        if not (member.isfile() or member.isdir()):
            raise ValueError(f"refusing to extract {member.name!r}: not a regular file or folder")
    return members


def _fetch(url: str, path: Path, progress: bool) -> str:
    """Stream ``url`` into ``path`` (from its start) with a tqdm bar; returns the MD5 of the bytes.

    A body shorter than its Content-Length (the connection closed early) raises ``ConnectionError``, so it is
    retried rather than reported as a checksum mismatch."""
    digest = hashlib.md5(usedforsecurity=False)
    received = 0
    with open_url(url) as response, path.open("wb") as out:
        length = response.headers.get("Content-Length")
        total = int(length) if length else None
        with tqdm(total=total, unit="B", unit_scale=True, desc=url.rsplit("/", 1)[-1], disable=not progress) as bar:
            while chunk := response.read(1 << 20):
                out.write(chunk)
                digest.update(chunk)
                received += len(chunk)
                bar.update(len(chunk))
    if total is not None and received < total:
        raise ConnectionError(f"{url} ended early: {received:,} of {total:,} bytes")
    return digest.hexdigest()


def _extract(archive_path: Path, extract_dir: Path, url: str) -> Path:
    """Extract the archive (downloaded from ``url``) into ``extract_dir``, its members checked first
    (``_safe_members``), and record the MD5 of each file in its ``MD5SUMS``; returns the extracted ``FOLDER``.
    ValueError where the archive cannot be extracted or lacks a batch file."""
    try:
        with tarfile.open(archive_path, "r:gz") as archive:
            members = _safe_members(archive, extract_dir)
            if hasattr(tarfile, "data_filter"):
                archive.extractall(extract_dir, members=members, filter="data")
            else:  # pragma: no cover - Python without extraction filters; members are checked above
                archive.extractall(extract_dir, members=members)
    except (tarfile.TarError, EOFError, OSError) as error:
        raise ValueError(f"cannot extract the CIFAR-10 archive downloaded from {url}: {error}") from error
    extracted = extract_dir / FOLDER
    if not _complete(extracted):
        raise ValueError(f"the archive from {url} does not contain {FOLDER}/ with every batch file")
    checksums.write_md5sums(extracted, sorted(p.name for p in extracted.iterdir() if p.is_file()))
    return extracted


def download_cifar10(
    root: str | os.PathLike,
    url: str = OFFICIAL_URL,
    md5: str | None = OFFICIAL_MD5,
    progress: bool = True,
    retries: int = 3,
    wait: float = 2.0,
) -> Path:
    """Download and extract CIFAR-10 to ``root/cifar-10-batches-py``; returns that folder.

    If it (or ``root/cifar10/cifar-10-batches-py``) already holds every batch file, it is returned untouched,
    without any network access or checksum. Otherwise the archive is streamed to a temporary file inside
    ``root`` (with a tqdm progress bar; network errors are retried ``retries`` times after ``wait``, ``2 wait``, ...
    seconds, an HTTP 4xx is not), its MD5 checked against ``md5`` (skipped when ``None``), extracted into
    a temporary folder inside ``root`` (members escaping it, links and devices are refused), the MD5 of each file
    recorded in its ``MD5SUMS`` (so a later change is caught on load), and moved into place with one atomic
    ``os.replace``. On any failure the temporary file and folder are removed.
    """
    root = Path(root)
    target = root / FOLDER
    for folder in (target, root / "cifar10" / FOLDER):
        if _complete(folder):
            return folder
    if target.exists():
        missing = [name for name in (*TRAIN_BATCHES, TEST_BATCH) if not (target / name).is_file()]
        raise FileExistsError(
            f"{target} exists but is incomplete (missing {', '.join(missing)}); delete it and download again."
        )
    created_root = not root.exists()
    root.mkdir(parents=True, exist_ok=True)
    archive_path: Path | None = None
    extract_dir: Path | None = None
    try:
        handle, name = tempfile.mkstemp(dir=root, prefix=".cifar-10-download-", suffix=".tar.gz")
        os.close(handle)
        archive_path = Path(name)
        hint = f"or download the archive by hand and extract it into {root}"
        actual = retrying(lambda: _fetch(url, archive_path, progress), retries, wait, f"check the network, {hint}")
        if md5 is not None and actual != md5.lower():
            raise ValueError(
                f"MD5 mismatch for the CIFAR-10 archive downloaded from {url}: expected {md5}, got {actual}. "
                "The download was deleted; retry, or check the URL."
            )
        extract_dir = Path(tempfile.mkdtemp(dir=root, prefix=".cifar-10-extract-"))
        os.replace(_extract(archive_path, extract_dir, url), target)
        return target
    finally:
        if archive_path is not None:
            with contextlib.suppress(FileNotFoundError):
                archive_path.unlink()
        if extract_dir is not None:
            shutil.rmtree(extract_dir, ignore_errors=True)
        if created_root and not _complete(target):
            with contextlib.suppress(OSError):
                root.rmdir()
