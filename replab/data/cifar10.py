"""CIFAR-10 as whole uint8 tensors: the official pickles read and checked, the seeded train/valid split.

Pure numpy / torch (no torchvision). ``load_cifar10`` reads the canonical python pickles
(``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``) and splits the 50,000 training
images 45,000 / 5,000 into train / valid by a seeded permutation. Batches and their augmentation:
``replab.data.image_batches``; the download of the official archive: ``replab.data.cifar10_download``.
"""

from __future__ import annotations

import os
import pickle
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from replab.data import checksums

__all__ = [
    "CLASSES",
    "MEAN",
    "STD",
    "OFFICIAL_URL",
    "OFFICIAL_MD5",
    "TRAIN_BATCHES",
    "TEST_BATCH",
    "ImageSplit",
    "CIFAR10Splits",
    "load_cifar10",
]

MEAN = (0.49139968, 0.48215841, 0.44653091)
STD = (0.24703223, 0.24348513, 0.26158784)
CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
OFFICIAL_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
OFFICIAL_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{k}" for k in range(1, 6))
TEST_BATCH = "test_batch"
META = "batches.meta"

_HOW_TO_GET = (
    "The data folder (--data-dir, else $REPLAB_DATA, else ./data) must hold cifar10/cifar-10-batches-py: "
    "`replab data download` fetches the official archive into it."
)


# ------------------------------------------------------------------------------------------------ loading
@dataclass
class ImageSplit:
    """One split: ``images`` uint8 ``(N, 3, 32, 32)``, ``labels`` int64 ``(N,)``, ``classes`` names."""

    images: torch.Tensor
    labels: torch.Tensor
    classes: tuple[str, ...] = CLASSES

    def __len__(self) -> int:
        return len(self.labels)

    def to(self, device) -> ImageSplit:
        return ImageSplit(self.images.to(device), self.labels.to(device), self.classes)


@dataclass
class CIFAR10Splits:
    """The three splits: ``train`` (45,000 by default), ``valid`` (5,000) and ``test`` (10,000)."""

    train: ImageSplit
    valid: ImageSplit
    test: ImageSplit

    @property
    def classes(self) -> tuple[str, ...]:
        return self.test.classes


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles plain containers and numpy arrays only (the content of the CIFAR batches), nothing else."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("numpy.core.numeric", "_frombuffer"),  # arrays pickled with protocol 5
        ("numpy._core.numeric", "_frombuffer"),
        ("_codecs", "encode"),  # how Python 3 protocol-2 pickles store bytes
    }

    def find_class(self, module, name):
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"unexpected object {module}.{name} in a CIFAR-10 batch")
        return super().find_class(module, name)


def _text(value) -> str:
    return value.decode("latin1") if isinstance(value, bytes) else str(value)


def _read_pickle(path: Path) -> dict:
    """A batch file as a dict with str keys (bytes keys, as written by ``encoding="bytes"``, are decoded)."""
    if not path.is_file():
        raise FileNotFoundError(f"CIFAR-10 file {path} not found. " + _HOW_TO_GET)
    checksums.verify(path, "CIFAR-10")
    try:
        with open(path, "rb") as handle:
            content = _ArrayUnpickler(handle, encoding="latin1").load()
    except Exception as error:  # any unpickling failure means a corrupt or foreign file
        raise ValueError(
            f"CIFAR-10 file {path} is corrupt or not a CIFAR-10 python batch ({type(error).__name__}: {error}). "
            + _HOW_TO_GET
        ) from error
    if not isinstance(content, dict):
        raise ValueError(f"CIFAR-10 file {path} does not hold a dict. " + _HOW_TO_GET)
    return {_text(key): value for key, value in content.items()}


def _read_batch(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``(images uint8 (N, 3, 32, 32), labels int64 (N,))`` of one canonical batch file, validated."""
    batch = _read_pickle(path)
    if "data" not in batch or "labels" not in batch:
        raise ValueError(
            f"CIFAR-10 file {path} lacks 'data' or 'labels' (has {sorted(batch)}); is it CIFAR-100? " + _HOW_TO_GET
        )
    data = np.asarray(batch["data"])
    labels = np.asarray(batch["labels"])
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise ValueError(
            f"CIFAR-10 file {path}: 'data' must be uint8 (N, 3072), got {data.dtype} {data.shape}. " + _HOW_TO_GET
        )
    if labels.shape != (len(data),) or not np.issubdtype(labels.dtype, np.integer):
        raise ValueError(f"CIFAR-10 file {path}: 'labels' must be {len(data)} integers. " + _HOW_TO_GET)
    if len(labels) and (labels.min() < 0 or labels.max() >= len(CLASSES)):
        raise ValueError(f"CIFAR-10 file {path}: labels outside 0..9. " + _HOW_TO_GET)
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def find_folder(root: Path) -> Path:
    """The folder of CIFAR-10's batches under a data folder: ``root/cifar-10-batches-py``, else
    ``root/cifar10/cifar-10-batches-py``; FileNotFoundError, saying how to get it, where neither exists."""
    candidates = [root / FOLDER, root / "cifar10" / FOLDER]
    for candidate in candidates:
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError(f"CIFAR-10 not found: looked for {' and '.join(map(str, candidates))}. " + _HOW_TO_GET)


def load_cifar10(root: str | os.PathLike, valid_size: int = 5000, seed: int = 42) -> CIFAR10Splits:
    """Load CIFAR-10 from ``root/cifar-10-batches-py`` (or ``root/cifar10/cifar-10-batches-py``).

    The 50,000 training images are split by ``torch.randperm(50000, generator=torch.Generator().manual_seed(
    seed))``: its first ``valid_size`` indices form ``valid``, the rest ``train`` (in permutation order); the
    10,000 test images keep their file order. Deterministic for a given seed. Files listed in an ``MD5SUMS``
    beside them (written by ``download_cifar10``; the course's copy has one) are checked against it first.
    """
    folder = find_folder(Path(root))
    classes = CLASSES
    if (folder / META).is_file():
        meta = _read_pickle(folder / META)
        names = tuple(_text(name) for name in meta.get("label_names", ()))
        if len(names) == len(CLASSES):
            classes = names
    parts = [_read_batch(folder / name) for name in TRAIN_BATCHES]
    train_images = torch.from_numpy(np.concatenate([images for images, _ in parts]))
    train_labels = torch.from_numpy(np.concatenate([labels for _, labels in parts]))
    test_images, test_labels = _read_batch(folder / TEST_BATCH)
    if isinstance(valid_size, bool) or not 0 <= int(valid_size) <= len(train_labels):
        raise ValueError(f"valid_size must be in [0, {len(train_labels)}], got {valid_size!r}")
    permutation = torch.randperm(len(train_labels), generator=torch.Generator().manual_seed(int(seed)))
    valid_index, train_index = permutation[: int(valid_size)], permutation[int(valid_size) :]
    flat = train_images.view(len(train_images), -1)  # index_select on rows is the fast gather on CPU
    take = lambda index: flat.index_select(0, index).view(-1, 3, 32, 32)
    return CIFAR10Splits(
        train=ImageSplit(take(train_index), train_labels[train_index], classes),
        valid=ImageSplit(take(valid_index), train_labels[valid_index], classes),
        test=ImageSplit(torch.from_numpy(test_images), torch.from_numpy(test_labels), classes),
    )
