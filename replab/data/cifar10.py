"""CIFAR-10 as whole uint8 tensors, with batched GPU-friendly augmentation and a checked downloader.

Pure numpy / torch (no torchvision). ``load_cifar10`` reads the canonical python pickles
(``cifar-10-batches-py/data_batch_1..5``, ``test_batch``, ``batches.meta``) and splits the 50,000 training
images 45,000 / 5,000 into train / valid by a seeded permutation. ``augment`` reproduces torchvision's
``RandomResizedCrop(32, scale=(0.8, 1.0), ratio=(0.9, 1.1))`` + ``RandomHorizontalFlip(0.5)`` on a whole batch
at once, ``ImageBatches`` serves (normalised images, labels) batches from a split held on
the device, and ``download_cifar10`` fetches and verifies the official archive.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import pickle
import shutil
import tarfile
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from replab.data import checksums, shard
from replab.data.http import open_url, retrying

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
    "normalize",
    "sample_crops",
    "apply_crops",
    "augment",
    "ImageBatches",
    "download_cifar10",
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


def _find_folder(root: Path) -> Path:
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
    folder = _find_folder(Path(root))
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


# ----------------------------------------------------------------------------------- normalisation / aug
def _check_images(images: torch.Tensor) -> None:
    if not isinstance(images, torch.Tensor) or images.dtype != torch.uint8 or images.ndim != 4:
        got = f"{images.dtype} {tuple(images.shape)}" if isinstance(images, torch.Tensor) else type(images)
        raise TypeError(f"expected a uint8 image batch (B, 3, H, W), got {got}")


def _standardize(values: torch.Tensor, value_max: float = 1.0) -> torch.Tensor:
    """``(values / value_max - MEAN) / STD`` per channel, for float images ``(B, 3, H, W)``, in one pass."""
    std = torch.tensor(STD, dtype=torch.float32, device=values.device).view(1, 3, 1, 1)
    mean = torch.tensor(MEAN, dtype=torch.float32, device=values.device).view(1, 3, 1, 1)
    return torch.addcmul(-mean / std, values, 1.0 / (value_max * std))


def normalize(images: torch.Tensor) -> torch.Tensor:
    """uint8 ``(B, 3, H, W)`` -> float32 ``(images / 255 - MEAN) / STD``, same shape and device."""
    _check_images(images)
    return _standardize(images.to(torch.float32), 255.0)


def sample_crops(
    batch_size: int,
    generator: torch.Generator,
    height: int = 32,
    width: int = 32,
    scale: tuple[float, float] = (0.8, 1.0),
    ratio: tuple[float, float] = (0.9, 1.1),
    flip_p: float = 0.5,
    attempts: int = 10,
):
    """Crop boxes and flips for a batch, as torchvision's ``RandomResizedCrop.get_params`` and
    ``RandomHorizontalFlip`` sample them, vectorised over the batch.

    For each image, ``attempts`` candidates draw ``area = H * W * U(scale)`` and ``aspect = exp(U(log ratio))``,
    ``w = round(sqrt(area * aspect))``, ``h = round(sqrt(area / aspect))`` (round half to even, as Python);
    the first candidate with ``0 < w <= W`` and ``0 < h <= H`` is kept, with top ``i ~ randint(0, H - h + 1)``
    and left ``j ~ randint(0, W - w + 1)``; without one, the centre crop of the image with its aspect ratio
    clamped into ``ratio``. Draw order from ``generator`` (float64 uniforms, on the generator's device):
    area ``(B, attempts)``, aspect ``(B, attempts)``, top ``(B,)``, left ``(B,)``, flip ``(B,)``.

    Returns ``(i, j, h, w, flip)``: int64 ``(B,)`` tensors and a bool ``(B,)`` tensor, on the generator's device.
    """
    device = generator.device
    shape = (batch_size, attempts)
    options = {"generator": generator, "device": device, "dtype": torch.float64}
    area = height * width * (scale[0] + (scale[1] - scale[0]) * torch.rand(shape, **options))
    log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
    aspect = torch.exp(log_lo + (log_hi - log_lo) * torch.rand(shape, **options))
    u_top = torch.rand(batch_size, **options)
    u_left = torch.rand(batch_size, **options)
    flip = torch.rand(batch_size, **options) < flip_p

    ws = torch.round(torch.sqrt(area * aspect)).to(torch.int64)
    hs = torch.round(torch.sqrt(area / aspect)).to(torch.int64)
    valid = (ws > 0) & (ws <= width) & (hs > 0) & (hs <= height)
    first = valid.to(torch.uint8).argmax(dim=1, keepdim=True)  # first valid attempt (0 if none)
    found = valid.any(dim=1)
    w = ws.gather(1, first).squeeze(1)
    h = hs.gather(1, first).squeeze(1)

    # Fallback: centre crop with the image's aspect ratio clamped into ``ratio`` (torchvision's rule).
    in_ratio = width / height
    if in_ratio < min(ratio):
        fallback_w, fallback_h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        fallback_w, fallback_h = int(round(height * max(ratio))), height
    else:
        fallback_w, fallback_h = width, height
    w = torch.where(found, w, torch.full_like(w, fallback_w))
    h = torch.where(found, h, torch.full_like(h, fallback_h))

    top_range = height - h + 1
    left_range = width - w + 1
    i = torch.minimum(torch.floor(u_top * top_range).to(torch.int64), top_range - 1)
    j = torch.minimum(torch.floor(u_left * left_range).to(torch.int64), left_range - 1)
    i = torch.where(found, i, (height - h) // 2)
    j = torch.where(found, j, (width - w) // 2)
    return i, j, h, w, flip


def _resize_weights(
    start: torch.Tensor, length: torch.Tensor, in_size: int, out_size: int, flip: torch.Tensor | None = None
) -> torch.Tensor:
    """Bilinear resampling matrices of 1-D crops: float32 ``(B, in_size, out_size)``.

    Column ``k`` of matrix ``b`` holds the weights that ``F.interpolate(mode="bilinear", align_corners=False)``
    gives the input pixels for output pixel ``k`` when the crop ``[start[b], start[b] + length[b])`` is resized
    to ``out_size``: source position ``max((k + 0.5) * length / out_size - 0.5, 0)``, split between its two
    neighbours inside the crop (the last pixel repeats at the border). Where ``flip[b]``, the columns are in
    reverse order (a mirrored output). ``start``, ``length``, ``flip``: ``(B,)`` tensors on the output device.
    """
    device = start.device
    dst = torch.arange(out_size, dtype=torch.float32, device=device).expand(len(start), out_size)
    if flip is not None:
        dst = torch.where(flip.unsqueeze(1), (out_size - 1) - dst, dst)
    length = length.unsqueeze(1)
    src = ((dst + 0.5) * (length.to(torch.float32) / out_size) - 0.5).clamp_(min=0.0)  # (B, out_size)
    lo = src.to(torch.int64)  # floor, as src >= 0
    frac = src - lo
    hi = torch.minimum(lo + 1, length - 1)
    start = start.unsqueeze(1)
    weights = torch.zeros(len(start), in_size, out_size, dtype=torch.float32, device=device)
    weights.scatter_(1, (start + lo).unsqueeze(1), (1.0 - frac).unsqueeze(1))
    return weights.scatter_add_(1, (start + hi).unsqueeze(1), frac.unsqueeze(1))


def apply_crops(
    images: torch.Tensor,
    i: torch.Tensor,
    j: torch.Tensor,
    h: torch.Tensor,
    w: torch.Tensor,
    flip: torch.Tensor,
    size: int | tuple[int, int] = 32,
) -> torch.Tensor:
    """Crop box ``(i, j, h, w)`` of every image, resized to ``size`` bilinearly, mirrored where ``flip``.

    ``images`` ``(B, C, H, W)`` (uint8 or float; computed in float32, in the input's value scale) -> float32
    ``(B, C, size, size)``. Output ``b`` equals ``F.interpolate(images[b:b+1, :, i:i+h, j:j+w], size,
    mode="bilinear", align_corners=False)`` (flipped along the width where ``flip[b]``). Bilinear resizing is
    separable, so the whole batch is two batched matrix products with per-image resampling matrices
    (``_resize_weights``): ``out[b, c] = Wy[b]^T @ images[b, c] @ Wx[b]``.
    """
    batch, channels, height, width = images.shape
    out_h, out_w = (size, size) if isinstance(size, int) else size
    device = images.device
    i, j, h, w, flip = (t.to(device) for t in (i, j, h, w, flip))
    wx = _resize_weights(j, w, width, out_w, flip)  # (B, W, out_w)
    wy = _resize_weights(i, h, height, out_h).transpose(1, 2)  # (B, out_h, H)
    rows = torch.bmm(images.to(torch.float32).reshape(batch, channels * height, width), wx)  # (B, C*H, out_w)
    wy = wy.unsqueeze(1).expand(batch, channels, out_h, height).reshape(batch * channels, out_h, height)
    out = torch.bmm(wy, rows.view(batch * channels, height, out_w))  # (B*C, out_h, out_w)
    return out.view(batch, channels, out_h, out_w)


def augment(images: torch.Tensor, generator: torch.Generator, size: int = 32) -> torch.Tensor:
    """Training augmentation: uint8 ``(B, 3, H, W)`` -> float32 normalised ``(B, 3, size, size)``, same device.

    ``RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1))`` (bilinear) then ``RandomHorizontalFlip(0.5)``,
    every random number drawn from ``generator`` (see ``sample_crops``), so a seed reproduces the batch.
    """
    _check_images(images)
    return _augment(images, generator, size, len(images))


def _augment(images: torch.Tensor, generator: torch.Generator, size: int, batch_size: int, rank: int = 0,
             world_size: int = 1) -> torch.Tensor:
    """``augment`` of this rank's part ``images`` of a global batch of ``batch_size`` images: the crops of the whole
    batch are drawn (so every rank draws the same numbers), and this rank's part of them applied."""
    _, _, height, width = images.shape
    boxes = sample_crops(batch_size, generator, height, width)
    crops = apply_crops(images, *(shard(t, rank, world_size) for t in boxes), size=size)
    return _standardize(crops, 255.0)


# ---------------------------------------------------------------------------------------------- batches
class ImageBatches:
    """Batches ``(images float32 normalised (B, 3, 32, 32), labels int64 (B,))`` of a split held as one tensor.

    The split is moved to ``device`` once; each iteration (epoch) draws a fresh permutation from ``generator``
    when ``shuffle`` and augments with ``augment`` (also from ``generator``) when asked; evaluation batches
    (``augment=False``) are only normalised. ``len()`` is the number of batches. Without a ``generator``, one
    is seeded from torch's global RNG, so ``torch.manual_seed`` makes the stream reproducible.

    Data parallel: with ``world_size > 1`` every rank (given equally seeded generators) draws the same global
    batch of ``batch_size`` examples and its crop parameters, and yields its contiguous part
    ``tensor_split(world_size)[rank]``, so the ranks together see exactly the single-process batches.
    """

    def __init__(
        self,
        split: ImageSplit,
        batch_size: int,
        *,
        shuffle: bool,
        augment: bool,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        drop_last: bool = False,
        rank: int = 0,
        world_size: int = 1,
    ):
        if int(batch_size) < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size!r}")
        if not 0 <= int(rank) < int(world_size):
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank!r}, world_size={world_size!r}")
        self.device = torch.device(device) if device is not None else split.images.device
        self.images = split.images.to(self.device)
        self.labels = split.labels.to(self.device)
        self.batch_size = int(batch_size)
        self.shuffle = shuffle
        self.augment = augment
        self.drop_last = drop_last
        self.rank = int(rank)
        self.world_size = int(world_size)
        if generator is None:
            generator = torch.Generator().manual_seed(int(torch.randint(2**62, (1,))))
        self.generator = generator

    def __len__(self) -> int:
        n = len(self.labels)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.labels)
        if self.shuffle:
            order = torch.randperm(n, generator=self.generator, device=self.generator.device).to(self.device)
        else:
            order = torch.arange(n, device=self.device)
        for k in range(len(self)):
            index = order[k * self.batch_size : (k + 1) * self.batch_size]
            local = shard(index, self.rank, self.world_size)
            images = self.images.index_select(0, local)  # much faster than images[local] on the CPU
            if self.augment:
                images = _augment(images, self.generator, 32, len(index), self.rank, self.world_size)
            else:
                images = normalize(images)
            yield images, self.labels.index_select(0, local)


# --------------------------------------------------------------------------------------------- download
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
    from tqdm.auto import tqdm

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
        try:
            with tarfile.open(archive_path, "r:gz") as archive:
                members = _safe_members(archive, extract_dir)
                if hasattr(tarfile, "data_filter"):
                    archive.extractall(extract_dir, members=members, filter="data")
                else:  # pragma: no cover - Python without extraction filters; members are checked above
                    archive.extractall(extract_dir, members=members)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise ValueError(f"cannot extract the CIFAR-10 archive downloaded from {url}: {error}") from error
        if not _complete(extract_dir / FOLDER):
            raise ValueError(f"the archive from {url} does not contain {FOLDER}/ with every batch file")
        extracted = extract_dir / FOLDER
        checksums.write_md5sums(extracted, sorted(p.name for p in extracted.iterdir() if p.is_file()))
        os.replace(extract_dir / FOLDER, target)
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
