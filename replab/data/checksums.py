"""MD5 checksums of data files: the official CIFAR-10 sums, and ``MD5SUMS`` lists kept beside a dataset's files.

An ``MD5SUMS`` file (the ``md5sum`` tool's format: ``<md5>  <name>`` per line) in a dataset's folder, or in the
folder above it, is the record of what its files should hold: the loaders check every listed file against it and
refuse a damaged or altered one. ``replab data download`` writes one for the files it extracts; the course's
copies ship with theirs. Files with no list are read unchecked (a re-encoded copy is not an error).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from replab.datadir import file_identity

SUMS_FILE = "MD5SUMS"

#: The files of the official ``cifar-10-python.tar.gz`` (https://www.cs.toronto.edu/~kriz/cifar.html).
OFFICIAL_CIFAR10_MD5 = {
    "data_batch_1": "c99cafc152244af753f735de768cd75f",
    "data_batch_2": "d4bba439e000b95fd0a9bffe97cbabec",
    "data_batch_3": "54ebc095f3ab1f0389bbae665268c751",
    "data_batch_4": "634d18415352ddfa80567beed471001a",
    "data_batch_5": "482c414d41f54cd18b22e5b47cb7c3cb",
    "test_batch": "40351d587109b95175f43aff81a1287e",
    "batches.meta": "5ff9c542aee3614f3951f8cda6e48888",
}


def md5_file(path: str | Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            digest.update(chunk)
    return digest.hexdigest()


def read_md5sums(path: Path) -> dict[str, str]:
    """``{file name: md5}`` from an ``MD5SUMS`` file; a malformed line is a ``ValueError`` naming the file."""
    sums = {}
    for number, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split(maxsplit=1)
        if len(parts) != 2 or len(parts[0]) != 32:
            raise ValueError(f"{path} line {number} is not '<md5>  <file name>': the checksum list is damaged")
        sums[parts[1].strip().lstrip("*")] = parts[0].lower()
    return sums


def write_md5sums(folder: Path, names: list[str]) -> Path:
    """Record the MD5 of each named file of ``folder`` in ``folder/MD5SUMS``."""
    path = folder / SUMS_FILE
    path.write_text("".join(f"{md5_file(folder / name)}  {name}\n" for name in names))
    return path


def find_sums(folder: Path) -> Path | None:
    """The ``MD5SUMS`` that lists ``folder``'s files: in the folder, else in its parent; ``None`` if neither."""
    for candidate in (folder / SUMS_FILE, folder.parent / SUMS_FILE):
        if candidate.is_file():
            return candidate
    return None


_verified: set[tuple] = set()  # (path, size, mtime, inode) of files this process checked already


def verify(path: Path, dataset: str) -> None:
    """Check ``path`` against the ``MD5SUMS`` beside it (if there is one and it lists the file).

    Raises ``ValueError`` naming the file when it differs: damaged (truncated, a copy cut short) or altered.
    A file is hashed once per process while its size, modification time and inode stay the same.
    """
    sums_path = find_sums(path.parent)
    if sums_path is None:
        return
    expected = read_md5sums(sums_path).get(path.name)
    if expected is None:
        return
    key = (*file_identity(path), expected)
    if key in _verified:
        return
    actual = md5_file(path)
    if actual != expected:
        raise ValueError(
            f"{dataset} file {path} does not match its checksum in {sums_path} (MD5 {actual}, expected {expected}): "
            "it is damaged or altered. Restore it from its source (`replab data check --verify` lists every file)"
        )
    _verified.add(key)


def verify_folder(folder: Path, names: list[str], official: dict[str, str] | None = None) -> tuple[list[str], bool]:
    """One line per file saying whether it matches the official sums and the folder's ``MD5SUMS``; and whether
    every file is sound (matches one of them). A file that matches neither is damaged or altered."""
    sums_path = find_sums(folder)
    try:
        listed = read_md5sums(sums_path) if sums_path else {}
    except ValueError as error:
        return [str(error)], False
    lines, sound = [], True
    for name in names:
        path = folder / name
        if not path.is_file():
            lines.append(f"{name}: MISSING")
            sound = False
            continue
        actual = md5_file(path)
        verdicts = []
        if official is not None:
            verdicts.append("matches the official release" if official.get(name) == actual
                            else "differs from the official release")
        if name in listed:
            verdicts.append(f"matches {sums_path}" if listed[name] == actual else f"DIFFERS from {sums_path}")
        unchecked = official is None and name not in listed
        good = unchecked or (official is not None and official.get(name) == actual) or listed.get(name) == actual
        if unchecked:
            verdicts.append("no checksum to compare with (not checked)")
        elif not good:
            verdicts.append("DAMAGED or altered" if name in listed else "not official, and no MD5SUMS lists it")
        sound = sound and good
        lines.append(f"{name}: " + "; ".join(verdicts) + f" (MD5 {actual})")
    return lines, sound
