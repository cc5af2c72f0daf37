"""Where the data lives: the data folder (``--data-dir``, else ``$REPLAB_DATA``, else ``./data``) and how to tell
that one of its files changed.

Below ``replab.data`` (the datasets) and ``replab.text`` (GPT-1's vocabulary, read from ``<data dir>/gpt1-bpe/``),
which both find their files through it; the report reads the vocabulary through ``replab.text`` without loading the
datasets.
"""

from __future__ import annotations

import os
from pathlib import Path

__all__ = ["DATA_ENV", "DEFAULT_DATA_DIR", "file_identity", "resolve_data_dir"]

#: Environment variable naming the data folder (the one holding ``wikitext2/`` and ``cifar10/``).
DATA_ENV = "REPLAB_DATA"
#: Fallback data folder, relative to the current working directory.
DEFAULT_DATA_DIR = "./data"


def resolve_data_dir(explicit: str | Path | None = None) -> Path:
    """The data folder: ``explicit`` if given, else ``$REPLAB_DATA`` if set and non-empty, else ``./data``.

    The folder is expected to hold ``wikitext2/wiki.{train,validation,test}.npz`` and
    ``cifar10/cifar-10-batches-py/``. Nothing is checked here (the datasets raise a clear error when a file
    is missing); ``~`` is expanded, relative paths stay relative to the current working directory.
    """
    if explicit is not None and str(explicit) != "":
        return Path(explicit).expanduser()
    env = os.environ.get(DATA_ENV, "")
    if env:
        return Path(env).expanduser()
    return Path(DEFAULT_DATA_DIR)


def file_identity(path: Path) -> tuple[str, int, int, int]:
    """``(resolved path, size, mtime in ns, inode)``: a key that changes when the file is rewritten or replaced."""
    stat = path.stat()
    return str(path.resolve()), stat.st_size, stat.st_mtime_ns, stat.st_ino
