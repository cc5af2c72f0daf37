"""Datasets of the study: Wikitext-2 (GPT-1 token ids) and CIFAR-10, kept as whole tensors."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["DATA_ENV", "DEFAULT_DATA_DIR", "resolve_data_dir", "shard"]

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


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous part of a global batch (of indices, or of per-example values): no overlap, nothing
    dropped (``tensor_split``)."""
    return indices.tensor_split(world_size)[rank] if world_size > 1 else indices
