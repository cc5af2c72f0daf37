"""Batches of CIFAR-10 images held as one tensor on the device: normalisation, and the batched augmentation.

``augment`` reproduces torchvision's ``RandomResizedCrop(32, scale=(0.8, 1.0), ratio=(0.9, 1.1))`` +
``RandomHorizontalFlip(0.5)`` on a whole batch at once (``sample_crops`` draws the boxes, ``apply_crops`` resamples
them bilinearly as matrix products); ``ImageBatches`` serves (normalised images, labels) batches of a split
(``replab.data.cifar10``), sharded across ranks. Pure torch, no torchvision.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from replab.data import shard
from replab.data.cifar10 import MEAN, STD, ImageSplit

__all__ = ["normalize", "sample_crops", "apply_crops", "augment", "ImageBatches"]


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
