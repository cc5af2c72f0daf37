"""The augmented CIFAR-10 training batches: replab's batched pipeline against per-image PIL in a DataLoader.

Usage::

    python -m benchmarks.cifar_pipeline [--device auto] [--repeats 5] [--warmup 1] [--batch-size 128]
        [--batches 20] [--reference-batches 4] [--workers 0] [--data-dir DIR] [--synthetic] [--threads N]
        [--out bench-results/cifar_pipeline.json] [--quick]
    python -m benchmarks cifar_pipeline [same options]

Contestants, each producing normalised float32 (B, 3, 32, 32) training batches with labels, on the device:

* replab: ``ImageBatches(train split, B, shuffle=True, augment=True)``: the whole split held as one uint8 tensor
  on the device, each batch cropped/resized/flipped at once (two batched matrix products with per-image
  resampling matrices);
* reference: a ``torch.utils.data.DataLoader`` (batch B, shuffle, ``--workers`` processes) over a dataset that
  augments one PIL image at a time, as torchvision's transforms would (Pillow only):
  ``RandomResizedCrop(32, scale=(0.8, 1), ratio=(0.9, 1.1))`` (torchvision's sampling rule, bilinear
  ``Image.resize`` of the box), ``RandomHorizontalFlip(0.5)``, ``ToTensor``, ``Normalize(mean, std)``; the batch
  is then moved to the device (pinned memory on CUDA).

Each round times ``--batches`` batches of replab, ``--reference-batches`` batches of the reference (both from
iterators that keep running across rounds, restarting at the end of an epoch; with workers, the batches they
prefetched while other contestants ran are drained untimed before each timed call) and one training step of
``VisionTransformer(num_layers=2)`` (batch B, AdamW, fp32), interleaved. Reported: images/s of both pipelines,
their ratio, and the pipeline's time per batch as a share of the ViT-2 step.

Data: the real 45,000-image training split when found (``--data-dir``, else ``$REPLAB_DATA``, else ``./data``;
loading it is not timed), otherwise (or with ``--synthetic``) 10,000 random images.
"""

from __future__ import annotations

import argparse
import math
import random
import time

import numpy as np
import torch

from benchmarks import common
from benchmarks.vit_step import make_step
from replab.arguments import DATA_DIR_HELP
from replab.data.cifar10 import CLASSES, MEAN, STD, ImageSplit, load_cifar10
from replab.data.image_batches import ImageBatches
from replab.datadir import resolve_data_dir
from replab.models.vit import VisionTransformer

NAME = "cifar_pipeline"
TARGET_RATIO = 20.0
TARGET_SHARE = 0.05


# ------------------------------------------------------------------------------------------- PIL reference
def random_resized_crop_box(width: int, height: int, rng: random.Random, scale=(0.8, 1.0), ratio=(0.9, 1.1)):
    """torchvision's ``RandomResizedCrop.get_params`` rule, with Python's RNG: ``(top, left, h, w)``."""
    area = height * width
    log_ratio = (math.log(ratio[0]), math.log(ratio[1]))
    for _ in range(10):
        target_area = area * rng.uniform(scale[0], scale[1])
        aspect = math.exp(rng.uniform(*log_ratio))
        w = int(round(math.sqrt(target_area * aspect)))
        h = int(round(math.sqrt(target_area / aspect)))
        if 0 < w <= width and 0 < h <= height:
            return rng.randint(0, height - h), rng.randint(0, width - w), h, w
    in_ratio = width / height
    if in_ratio < min(ratio):
        w, h = width, int(round(width / min(ratio)))
    elif in_ratio > max(ratio):
        h, w = height, int(round(height * max(ratio)))
    else:
        w, h = width, height
    return (height - h) // 2, (width - w) // 2, h, w


class PILAugmentedImages(torch.utils.data.Dataset):
    """CIFAR images (uint8 HWC numpy) augmented one at a time with Pillow, returning (normalised CHW, label)."""

    def __init__(self, images_hwc: np.ndarray, labels: np.ndarray, size: int = 32, seed: int = 0):
        self.images, self.labels, self.size = images_hwc, labels, size
        self.mean = torch.tensor(MEAN).view(3, 1, 1)
        self.std = torch.tensor(STD).view(3, 1, 1)
        self.rng = random.Random(seed)

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int):
        from PIL import Image  # pillow: a development dependency, needed only by this torchvision-style reference

        image = Image.fromarray(self.images[index])
        top, left, h, w = random_resized_crop_box(image.width, image.height, self.rng)
        image = image.resize((self.size, self.size), Image.BILINEAR, box=(left, top, left + w, top + h))
        if self.rng.random() < 0.5:
            image = image.transpose(Image.FLIP_LEFT_RIGHT)
        # ToTensor, as torchvision writes it: HWC uint8 -> CHW float in [0, 1]
        tensor = torch.from_numpy(np.array(image, np.uint8, copy=True))
        tensor = tensor.view(image.height, image.width, 3).permute(2, 0, 1).contiguous().to(torch.float32).div(255)
        # Normalize, as torchvision writes it
        tensor = tensor.sub_(self.mean).div_(self.std)
        return tensor, int(self.labels[index])


def _seed_worker(worker_id: int) -> None:
    info = torch.utils.data.get_worker_info()
    info.dataset.rng = random.Random(info.seed)


def reference_loader(split: ImageSplit, batch_size: int, workers: int, device: torch.device):
    images = split.images.permute(0, 2, 3, 1).contiguous().numpy()  # (N, H, W, C) as PIL wants it
    dataset = PILAugmentedImages(images, split.labels.numpy())
    return torch.utils.data.DataLoader(
        dataset, batch_size=batch_size, shuffle=True, num_workers=workers, drop_last=True,
        persistent_workers=workers > 0, worker_init_fn=_seed_worker if workers > 0 else None,
        pin_memory=device.type == "cuda", generator=torch.Generator().manual_seed(0),
    )


# --------------------------------------------------------------------------------------------- plumbing
def endless(make_iterable, device: torch.device):
    """Batches from ``make_iterable()``, epoch after epoch, moved to ``device``."""
    while True:
        for images, labels in make_iterable():
            yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


class Pull:
    """Takes ``count`` batches from ``iterator`` per call. ``drain`` batches are taken untimed first (``prepare``):
    a DataLoader's worker processes keep filling their prefetch queue while other contestants run, and batches
    made in that background time must not count as made during the timed call."""

    def __init__(self, iterator, count: int, drain: int = 0):
        self.iterator, self.count, self.drain = iterator, count, drain
        if drain:
            self.prepare = self._drain

    def _drain(self) -> None:
        for _ in range(self.drain):
            next(self.iterator)

    def __call__(self):
        for _ in range(self.count):
            images, _ = next(self.iterator)
        return images


def load_split(args) -> tuple[ImageSplit, str]:
    if not args.synthetic and not args.quick:
        root = resolve_data_dir(args.data_dir)
        try:
            return load_cifar10(root).train, f"CIFAR-10 train split from {root}"
        except (FileNotFoundError, ValueError) as error:
            common.log(f"CIFAR-10 not loaded ({error}); using random images")
    count = 1024 if args.quick else 10_000
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, 3, 32, 32), dtype=torch.uint8, generator=generator)
    labels = torch.randint(0, len(CLASSES), (count,), generator=generator)
    return ImageSplit(images, labels), f"{count} random images"


def make_vit_step(batch: int, device: torch.device, quick: bool):
    torch.manual_seed(0)
    model_args = dict(embed_dim=32, hidden_dim=64, num_heads=4, num_layers=2) if quick else dict(num_layers=2)
    model = VisionTransformer(**model_args).to(device)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, 3, 32, 32, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    return make_step(model, images, labels, amp_dtype=None, compile_model=False)


# ------------------------------------------------------------------------------------------------- run
def build_parser() -> argparse.ArgumentParser:
    parser = common.base_parser(NAME, __doc__.split("\n\n")[0], batch_size=128, repeats=5, warmup=1)
    parser.add_argument("--batches", type=int, default=20, help="replab batches per round (default 20)")
    parser.add_argument("--reference-batches", type=int, default=None,
                        help="reference batches per round (default 4; 20 with --workers, for a steady state)")
    parser.add_argument("--workers", type=int, default=0,
                        help="DataLoader worker processes of the reference (default 0: in the main process)")
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
    parser.add_argument("--synthetic", action="store_true", help="random images instead of CIFAR-10")
    return parser


def run(args: argparse.Namespace) -> dict:
    device = common.setup(args)
    batch = args.batch_size
    ours_batches = args.batches
    ref_batches = args.reference_batches or (20 if args.workers else 4)
    if args.quick:
        batch, ours_batches, ref_batches = min(batch, 32), min(ours_batches, 2), min(ref_batches, 1)
    if ours_batches < 1 or ref_batches < 1 or args.workers < 0:
        raise SystemExit("error: --batches and --reference-batches must be >= 1, --workers >= 0")
    info = common.machine_info(device)
    split, source = load_split(args)
    common.log(f"{NAME}: device {device}, {torch.get_num_threads()} threads, batch {batch}, data: {source}")

    generator = torch.Generator().manual_seed(0)
    replab_batches = ImageBatches(split, batch, shuffle=True, augment=True, generator=generator, device=device,
                                  drop_last=True)
    loader = reference_loader(split, batch, args.workers, device)
    ours = endless(lambda: replab_batches, device)
    reference = endless(lambda: loader, device)
    contestants = {
        "replab": Pull(ours, ours_batches),
        "reference": Pull(reference, ref_batches, drain=args.workers * loader.prefetch_factor if args.workers else 0),
        "vit2_step": make_vit_step(batch, device, args.quick),
    }
    common.log(f"timing {args.repeats} rounds ({ours_batches} replab batches, {ref_batches} reference batches, "
               f"one ViT-2 step each) after {args.warmup} warm-up calls")
    seconds = common.interleaved(contestants, device, args.repeats, args.warmup, common.log)
    per_batch = {"replab": [s / ours_batches for s in seconds["replab"]],
                 "reference": [s / ref_batches for s in seconds["reference"]]}
    ratio = common.median(common.paired(per_batch["reference"], per_batch["replab"], lambda r, o: r / o))
    share = common.median(common.paired(per_batch["replab"], seconds["vit2_step"], lambda p, s: p / s))
    reference_share = common.median(common.paired(per_batch["reference"], seconds["vit2_step"], lambda p, s: p / s))
    results = {
        "images_per_s": {k: batch / common.median(v) for k, v in per_batch.items()},
        "seconds_per_batch": {k: common.median(v) for k, v in per_batch.items()},
        "ratio_replab_over_reference": ratio,
        "vit2_step_s": common.median(seconds["vit2_step"]),
        "vit2_images_per_s": batch / common.median(seconds["vit2_step"]),
        "share_of_vit2_step": {"replab": share, "reference": reference_share},
        "timings": {k: common.timing_summary(v) for k, v in seconds.items()},
    }
    targets = [
        common.target_row("ratio replab/reference", ratio, TARGET_RATIO, unit="x"),
        common.target_row("replab pipeline / ViT-2 step", share, TARGET_SHARE, higher_is_better=False),
    ]
    return {
        "benchmark": NAME,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": common.finish_machine_info(info),
        "settings": {
            "device": str(device), "batch_size": batch, "repeats": args.repeats, "warmup": args.warmup,
            "replab_batches_per_round": ours_batches, "reference_batches_per_round": ref_batches,
            "reference_workers": args.workers, "data": source, "quick": args.quick,
            "threads": torch.get_num_threads(), "vit2": "VisionTransformer(num_layers=2), AdamW, fp32",
        },
        "results": results,
        "targets": targets,
    }


def report(payload: dict) -> None:
    r, s = payload["results"], payload["settings"]
    rows = [
        ["replab ImageBatches (augment)", r["images_per_s"]["replab"], r["seconds_per_batch"]["replab"] * 1e3,
         f"{r['share_of_vit2_step']['replab']:.2%}"],
        [f"reference PIL DataLoader ({s['reference_workers']} workers)", r["images_per_s"]["reference"],
         r["seconds_per_batch"]["reference"] * 1e3, f"{r['share_of_vit2_step']['reference']:.2%}"],
        ["ViT-2 training step", r["vit2_images_per_s"], r["vit2_step_s"] * 1e3, ""],
    ]
    common.print_table(f"CIFAR-10 augmented batches (batch {s['batch_size']}, device {s['device']}, "
                       f"{s['threads']} threads, data: {s['data']})",
                       ["contestant", "images/s", "ms/batch", "share of ViT-2 step"], rows)
    print(f"ratio replab/reference: {r['ratio_replab_over_reference']:.1f}x")
    common.print_targets(payload["targets"])


def main(argv: list[str] | None = None) -> int:
    return common.run_main(build_parser, run, report, argv)


if __name__ == "__main__":
    raise SystemExit(main())
