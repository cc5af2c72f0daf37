"""Datasets of the study: Wikitext-2 (GPT-1 token ids) and CIFAR-10, kept as whole tensors.

Where the data folder is: ``replab.datadir`` (``resolve_data_dir``), below this package and ``replab.text``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

__all__ = ["shard"]


def shard(indices: torch.Tensor, rank: int, world_size: int) -> torch.Tensor:
    """This rank's contiguous part of a global batch (of indices, or of per-example values): no overlap, nothing
    dropped (``tensor_split``)."""
    return indices.tensor_split(world_size)[rank] if world_size > 1 else indices
