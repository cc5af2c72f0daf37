"""CIFAR-10 loading (fake canonical batches and the real data), augmentation oracles, batches, download."""

from __future__ import annotations

import hashlib
import importlib
import io
import math
import os
import pickle
import socket
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import replab.data.http
from replab.data import cifar10
from replab.data.cifar10 import CLASSES, MEAN, STD, ImageSplit, load_cifar10
from replab.data.cifar10_download import download_cifar10
from replab.data.image_batches import ImageBatches, apply_crops, augment, normalize, sample_crops
from tests.data.local_server import serve

PER_BATCH = 4  # images per fake batch: 20 training images, 4 test images
FAKE_CLASSES = tuple(f"class{k}" for k in range(10))


# ------------------------------------------------------------------------------------------- fake data
def write_fake_cifar(folder: Path, *, bytes_keys: bool = False, meta: bool = True, seed: int = 0, protocol: int = 2):
    """Canonical python batches (``data`` uint8 (N, 3072) R|G|B row-major, ``labels`` list) in ``folder``.

    Returns ``(train_images (20, 3, 32, 32), train_labels, test_images, test_labels)`` as numpy arrays.
    """
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    key = (lambda k: k.encode()) if bytes_keys else (lambda k: k)
    text = (lambda s: s.encode()) if bytes_keys else (lambda s: s)
    written = {}
    for name in (*cifar10.TRAIN_BATCHES, cifar10.TEST_BATCH):
        data = rng.integers(0, 256, size=(PER_BATCH, 3072), dtype=np.uint8)
        labels = rng.integers(0, 10, size=PER_BATCH).tolist()
        batch = {
            key("batch_label"): text(f"fake {name}"),
            key("labels"): labels,
            key("data"): data,
            key("filenames"): [text(f"img_{name}_{k}.png") for k in range(PER_BATCH)],
        }
        with open(folder / name, "wb") as handle:
            pickle.dump(batch, handle, protocol=protocol)
        written[name] = (data, np.asarray(labels))
    if meta:
        content = {key("num_cases_per_batch"): PER_BATCH, key("label_names"): [text(c) for c in FAKE_CLASSES]}
        with open(folder / "batches.meta", "wb") as handle:
            pickle.dump(content, handle, protocol=2)
    train = [written[name] for name in cifar10.TRAIN_BATCHES]
    train_data = np.concatenate([d for d, _ in train])
    test_data, test_labels = written[cifar10.TEST_BATCH]
    return (
        train_data.reshape(-1, 3, 32, 32),
        np.concatenate([lab for _, lab in train]),
        test_data.reshape(-1, 3, 32, 32),
        test_labels,
    )


def row_keys(images) -> list[bytes]:
    return [bytes(image.reshape(-1)) for image in np.asarray(images)]


@pytest.fixture
def fake_root(tmp_path):
    arrays = write_fake_cifar(tmp_path / "cifar-10-batches-py")
    return tmp_path, arrays


# ---------------------------------------------------------------------------------------------- loading
@pytest.mark.parametrize("bytes_keys, protocol", [(False, 2), (True, 2), (False, 5), (True, 4)])
def test_load_fake_batches(tmp_path, bytes_keys, protocol):
    train_images, train_labels, test_images, test_labels = write_fake_cifar(
        tmp_path / "cifar-10-batches-py", bytes_keys=bytes_keys, protocol=protocol
    )
    splits = load_cifar10(tmp_path, valid_size=5, seed=0)
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (15, 5, PER_BATCH)
    for split in (splits.train, splits.valid, splits.test):
        assert split.images.dtype == torch.uint8 and split.images.shape[1:] == (3, 32, 32)
        assert split.labels.dtype == torch.int64 and split.labels.shape == (len(split.images),)
        assert split.classes == FAKE_CLASSES
    # test keeps the file order; train + valid is a partition of the 20 training images, labels attached
    assert np.array_equal(splits.test.images.numpy(), test_images)
    assert np.array_equal(splits.test.labels.numpy(), test_labels)
    label_of = dict(zip(row_keys(train_images), train_labels.tolist(), strict=True))
    got = row_keys(splits.train.images) + row_keys(splits.valid.images)
    assert sorted(got) == sorted(label_of)
    got_labels = splits.train.labels.tolist() + splits.valid.labels.tolist()
    assert [label_of[k] for k in got] == got_labels


def test_pixel_layout(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    with open(folder / "test_batch", "rb") as handle:
        data = pickle.load(handle, encoding="latin1")["data"]
    images = load_cifar10(tmp_path, valid_size=5).test.images.numpy()
    for b in range(PER_BATCH):
        for channel in range(3):
            for row, col in [(0, 0), (0, 31), (5, 7), (31, 0), (31, 31)]:
                assert images[b, channel, row, col] == data[b, channel * 1024 + row * 32 + col]


def test_without_meta_and_data_root_layout(tmp_path):
    write_fake_cifar(tmp_path / "cifar10" / "cifar-10-batches-py", meta=False)
    splits = load_cifar10(tmp_path, valid_size=5)  # a data root holding cifar10/cifar-10-batches-py
    assert splits.test.classes == CLASSES == splits.classes
    assert len(splits.train) + len(splits.valid) == 5 * PER_BATCH


def test_split_determinism_and_seed(fake_root):
    root, _ = fake_root
    a, b = load_cifar10(root, valid_size=6, seed=1), load_cifar10(root, valid_size=6, seed=1)
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.valid.labels, b.valid.labels)
    others = [load_cifar10(root, valid_size=6, seed=s) for s in (2, 3, 4)]
    assert any(set(row_keys(o.valid.images)) != set(row_keys(a.valid.images)) for o in others)
    assert len(load_cifar10(root, valid_size=0).valid) == 0
    with pytest.raises(ValueError, match="valid_size"):
        load_cifar10(root, valid_size=21)


def test_missing_files(tmp_path, fake_root):
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(tmp_path / "nowhere")
    assert str(tmp_path / "nowhere" / "cifar-10-batches-py") in str(info.value)
    assert "REPLAB_DATA" in str(info.value) and "replab data download" in str(info.value)
    root, _ = fake_root
    (root / "cifar-10-batches-py" / "data_batch_3").unlink()
    with pytest.raises(FileNotFoundError) as info:
        load_cifar10(root, valid_size=5)
    assert str(root / "cifar-10-batches-py" / "data_batch_3") in str(info.value)
    assert "--data-dir" in str(info.value)


def test_corrupt_files(fake_root):
    root, _ = fake_root
    path = root / "cifar-10-batches-py" / "data_batch_2"
    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(ValueError, match="corrupt") as info:
        load_cifar10(root, valid_size=5)
    assert str(path) in str(info.value) and "replab data download" in str(info.value)
    with open(path, "wb") as handle:  # wrong layout
        pickle.dump({"data": np.zeros((2, 100), np.uint8), "labels": [0, 1]}, handle)
    with pytest.raises(ValueError, match="3072"):
        load_cifar10(root, valid_size=5)
    marker = root / "executed"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    with open(path, "wb") as handle:  # a pickle that would run code is refused, not executed
        pickle.dump({"data": Evil(), "labels": []}, handle)
    with pytest.raises(ValueError, match="corrupt"):
        load_cifar10(root, valid_size=5)
    assert not marker.exists()


# -------------------------------------------------------------------------------------------- real data
@pytest.fixture(scope="module")
def real_splits(data_root):
    return load_cifar10(data_root)


def test_real_data(real_splits, data_root):
    splits = real_splits
    assert (len(splits.train), len(splits.valid), len(splits.test)) == (45_000, 5_000, 10_000)
    assert splits.train.images.shape == (45_000, 3, 32, 32) and splits.train.images.dtype == torch.uint8
    assert torch.bincount(splits.test.labels, minlength=10).tolist() == [1000] * 10
    all_train = torch.cat([splits.train.labels, splits.valid.labels])
    assert torch.bincount(all_train, minlength=10).tolist() == [5000] * 10
    assert splits.classes == CLASSES
    again = load_cifar10(data_root / "cifar10")
    assert torch.equal(again.valid.labels, splits.valid.labels)
    assert torch.equal(again.valid.images, splits.valid.images)
    assert torch.equal(again.train.images[::97], splits.train.images[::97])
    mean = normalize(splits.test.images[:2000]).mean(dim=(0, 2, 3))
    assert mean.abs().max() < 0.1  # the constants standardise the data (roughly: a subset)


# ------------------------------------------------------------------------------------- normalize / crops
def test_normalize_matches_manual():
    images = torch.randint(0, 256, (3, 3, 8, 5), dtype=torch.uint8)
    out = normalize(images)
    assert out.dtype == torch.float32 and out.shape == images.shape
    manual = torch.empty(images.shape, dtype=torch.float64)
    for channel in range(3):
        manual[:, channel] = (images[:, channel].double() / 255 - MEAN[channel]) / STD[channel]
    torch.testing.assert_close(out.double(), manual, atol=1e-5, rtol=0)
    with pytest.raises(TypeError, match="uint8"):
        normalize(images.float())


def oracle_crops(images, i, j, h, w, flip, size):
    out = []
    for b in range(len(images)):
        crop = images[b : b + 1, :, int(i[b]) : int(i[b] + h[b]), int(j[b]) : int(j[b] + w[b])].float()
        resized = F.interpolate(crop, size=size, mode="bilinear", align_corners=False)[0]
        out.append(resized.flip(-1) if flip[b] else resized)
    return torch.stack(out)


def random_boxes(batch, height, width, generator):
    h = torch.randint(1, height + 1, (batch,), generator=generator)
    w = torch.randint(1, width + 1, (batch,), generator=generator)
    i = (torch.rand(batch, generator=generator) * (height - h + 1)).long()
    j = (torch.rand(batch, generator=generator) * (width - w + 1)).long()
    flip = torch.rand(batch, generator=generator) < 0.5
    return i, j, h, w, flip


@pytest.mark.parametrize("batch", [1, 5, 16])
def test_apply_crops_matches_interpolate_of_crops(batch):
    generator = torch.Generator().manual_seed(batch)
    images = torch.randint(0, 256, (batch, 3, 32, 32), dtype=torch.uint8, generator=generator)
    for boxes in (sample_crops(batch, generator), random_boxes(batch, 32, 32, generator)):
        got = apply_crops(images, *boxes, size=32)
        assert got.dtype == torch.float32 and got.shape == (batch, 3, 32, 32)
        torch.testing.assert_close(got, oracle_crops(images, *boxes, size=32), atol=2e-3, rtol=0)
    # explicit corner cases: whole image (identity), single pixel, flipped full image
    full = [torch.tensor([v] * batch) for v in (0, 0, 32, 32)]
    torch.testing.assert_close(apply_crops(images, *full, torch.zeros(batch, dtype=torch.bool)), images.float())
    torch.testing.assert_close(apply_crops(images, *full, torch.ones(batch, dtype=torch.bool)), images.float().flip(-1))
    pixel = apply_crops(images, *[torch.tensor([v] * batch) for v in (3, 30, 1, 1)], torch.zeros(batch).bool())
    torch.testing.assert_close(pixel, images[:, :, 3:4, 30:31].float().expand(-1, -1, 32, 32))


def test_apply_crops_non_square():
    generator = torch.Generator().manual_seed(7)
    images = torch.rand(6, 2, 24, 40, generator=generator)
    boxes = random_boxes(6, 24, 40, generator)
    torch.testing.assert_close(
        apply_crops(images, *boxes, size=(16, 20)), oracle_crops(images, *boxes, size=(16, 20)), atol=1e-5, rtol=0
    )


def torchvision_reference(draws, height, width, scale, ratio, flip_p):
    """torchvision's get_params written out per image, fed the same uniforms as ``sample_crops`` draws."""
    u_area, u_aspect, u_top, u_left, u_flip = draws
    out = []
    for b in range(len(u_top)):
        box = None
        for k in range(u_area.shape[1]):
            target_area = height * width * (scale[0] + (scale[1] - scale[0]) * float(u_area[b, k]))
            log_lo, log_hi = math.log(ratio[0]), math.log(ratio[1])
            aspect = math.exp(log_lo + (log_hi - log_lo) * float(u_aspect[b, k]))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                i = int(float(u_top[b]) * (height - h + 1))
                j = int(float(u_left[b]) * (width - w + 1))
                box = (i, j, h, w)
                break
        if box is None:
            in_ratio = width / height
            if in_ratio < min(ratio):
                w, h = width, int(round(width / min(ratio)))
            elif in_ratio > max(ratio):
                h, w = height, int(round(height * max(ratio)))
            else:
                w, h = width, height
            box = ((height - h) // 2, (width - w) // 2, h, w)
        out.append((*box, bool(float(u_flip[b]) < flip_p)))
    return out


@pytest.mark.parametrize(
    "scale, ratio",
    [((0.8, 1.0), (0.9, 1.1)), ((0.9, 1.3), (0.7, 1.4)), ((1.5, 2.0), (0.9, 1.1)), ((1.5, 2.0), (2.0, 3.0))],
)
def test_sample_crops_follows_torchvision_rule(scale, ratio):
    batch, seed = 400, 11
    got = sample_crops(batch, torch.Generator().manual_seed(seed), scale=scale, ratio=ratio)
    generator = torch.Generator().manual_seed(seed)  # the documented draw order
    draws = [torch.rand(shape, generator=generator, dtype=torch.float64) for shape in [(batch, 10)] * 2]
    draws += [torch.rand(batch, generator=generator, dtype=torch.float64) for _ in range(3)]
    expected = torchvision_reference(draws, 32, 32, scale, ratio, 0.5)
    rows = list(zip(*[t.tolist() for t in got], strict=True))
    assert rows == expected
    if scale[0] > 1:  # no candidate fits: the centre crop with the aspect ratio clamped into ``ratio``
        assert set(rows[k][:4] for k in range(batch)) == {(0, 0, 32, 32) if ratio[0] < 1 else (8, 0, 16, 32)}


def test_sample_crops_distribution():
    n = 20_000
    i, j, h, w, flip = sample_crops(n, torch.Generator().manual_seed(0))
    for t in (i, j, h, w):
        assert t.dtype == torch.int64 and t.shape == (n,)
    assert flip.dtype == torch.bool and abs(flip.float().mean().item() - 0.5) < 0.02
    area = (h * w).double() / 1024
    assert area.min() >= 0.8 * (1 - 0.05) and area.max() <= 1.0
    assert 0.87 < area.mean() < 0.93
    aspect = w.double() / h.double()
    assert aspect.min() >= 0.9 * (1 - 0.05) and aspect.max() <= 1.1 * (1 + 0.05)
    assert (aspect < 0.97).any() and (aspect > 1.03).any()
    assert (i >= 0).all() and (j >= 0).all() and (i + h <= 32).all() and (j + w <= 32).all()
    assert (i == 0).any() and (i + h == 32).any() and (j == 0).any() and (j + w == 32).any()
    again = sample_crops(n, torch.Generator().manual_seed(0))
    assert all(torch.equal(a, b) for a, b in zip((i, j, h, w, flip), again, strict=True))
    other = sample_crops(n, torch.Generator().manual_seed(1))
    assert not torch.equal(i, other[0]) and not torch.equal(flip, other[4])


def test_augment_reproducible_and_equal_to_oracle():
    images = torch.randint(0, 256, (8, 3, 32, 32), dtype=torch.uint8)
    out = augment(images, torch.Generator().manual_seed(3))
    assert out.dtype == torch.float32 and out.shape == (8, 3, 32, 32) and out.device == images.device
    assert torch.equal(out, augment(images, torch.Generator().manual_seed(3)))
    assert not torch.equal(out, augment(images, torch.Generator().manual_seed(4)))
    boxes = sample_crops(8, torch.Generator().manual_seed(3))
    unit = oracle_crops(images, *boxes, size=32) / 255
    expected = (unit - torch.tensor(MEAN).view(1, 3, 1, 1)) / torch.tensor(STD).view(1, 3, 1, 1)
    torch.testing.assert_close(out, expected, atol=1e-4, rtol=0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8)
    cpu = augment(images, torch.Generator().manual_seed(0))
    gpu = augment(images.cuda(), torch.Generator().manual_seed(0))
    assert gpu.device.type == "cuda" and gpu.dtype == torch.float32
    torch.testing.assert_close(gpu.cpu(), cpu, atol=1e-4, rtol=0)
    torch.testing.assert_close(normalize(images.cuda()).cpu(), normalize(images))
    split = ImageSplit(images, torch.arange(64))
    for x, y in ImageBatches(split, 16, shuffle=True, augment=True, device="cuda"):
        assert x.device.type == "cuda" and y.device.type == "cuda" and x.shape == (16, 3, 32, 32)


class _BlockTorchvision:
    """A meta-path finder that records (and refuses) every attempt to import torchvision."""

    def __init__(self):
        self.attempts = []

    def find_spec(self, name, path=None, target=None):
        if name == "torchvision" or name.startswith("torchvision."):
            self.attempts.append(name)
            raise ImportError(f"{name} is blocked in this test")
        return None


def test_import_without_torchvision(monkeypatch):
    """A fresh import of the data modules never tries to import torchvision (not even guarded)."""
    import replab.data

    blocker = _BlockTorchvision()
    monkeypatch.setattr(sys, "meta_path", [blocker, *sys.meta_path])
    monkeypatch.setitem(sys.modules, "torchvision", None)
    names = ("cifar10", "image_batches", "cifar10_download", "wikitext2")
    for name in names:
        monkeypatch.delitem(sys.modules, f"replab.data.{name}", raising=False)
        monkeypatch.setattr(replab.data, name, None, raising=False)
    fresh = {name: importlib.import_module(f"replab.data.{name}") for name in names}
    assert fresh["cifar10"] is not cifar10 and blocker.attempts == []
    assert fresh["image_batches"].normalize(torch.zeros(1, 3, 2, 2, dtype=torch.uint8)).shape == (1, 3, 2, 2)
    for module in fresh.values():
        source = Path(module.__file__).read_text()
        assert "import torchvision" not in source and "from torchvision" not in source


# ---------------------------------------------------------------------------------------------- batches
def identified_split(n=10):
    images = torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8)
    return ImageSplit(images, torch.arange(n))  # the label identifies the example


def test_image_batches_epoch_coverage_and_shapes():
    split = identified_split(10)
    batches = ImageBatches(split, 4, shuffle=True, augment=False, generator=torch.Generator().manual_seed(0))
    assert len(batches) == 3
    epochs = []
    for _ in range(2):
        seen = []
        for images, labels in batches:
            assert images.dtype == torch.float32 and images.shape == (len(labels), 3, 32, 32)
            assert labels.dtype == torch.int64
            torch.testing.assert_close(images, normalize(split.images[labels]))
            seen.append(labels)
        assert [len(s) for s in seen] == [4, 4, 2]
        order = torch.cat(seen)
        assert sorted(order.tolist()) == list(range(10))
        epochs.append(order)
    assert not torch.equal(epochs[0], epochs[1])  # a fresh permutation each epoch
    ordered = torch.cat([labels for _, labels in ImageBatches(split, 3, shuffle=False, augment=False)])
    assert ordered.tolist() == list(range(10))


def test_image_batches_drop_last_and_reproducible():
    split = identified_split(10)
    batches = ImageBatches(split, 4, shuffle=True, augment=True, drop_last=True, generator=None)
    assert len(batches) == 2 and [len(labels) for _, labels in batches] == [4, 4]

    def run(seed):
        generator = torch.Generator().manual_seed(seed)
        return [(x, y) for x, y in ImageBatches(split, 3, shuffle=True, augment=True, generator=generator)]

    first, second, other = run(5), run(5), run(6)
    assert all(torch.equal(a[0], b[0]) and torch.equal(a[1], b[1]) for a, b in zip(first, second, strict=True))
    assert not all(torch.equal(a[0], b[0]) for a, b in zip(first, other, strict=True))
    assert first[0][0].shape == (3, 3, 32, 32) and first[0][0].dtype == torch.float32
    torch.manual_seed(1)
    a = [y for _, y in ImageBatches(split, 3, shuffle=True, augment=False)]
    torch.manual_seed(1)
    b = [y for _, y in ImageBatches(split, 3, shuffle=True, augment=False)]
    assert all(torch.equal(x, y) for x, y in zip(a, b, strict=True))
    with pytest.raises(ValueError, match="batch_size"):
        ImageBatches(split, 0, shuffle=False, augment=False)


def test_image_batches_ranks_partition_the_global_batch():
    split = identified_split(11)

    def run(rank, world_size, augment):
        generator = torch.Generator().manual_seed(9)
        batches = ImageBatches(
            split, 4, shuffle=True, augment=augment, generator=generator, rank=rank, world_size=world_size
        )
        return list(batches)

    for augment_flag in (False, True):
        single = run(0, 1, augment_flag)
        parts = [run(rank, 3, augment_flag) for rank in range(3)]
        assert all(len(p) == len(single) == 3 for p in parts)
        for k, (images, labels) in enumerate(single):
            torch.testing.assert_close(torch.cat([p[k][0] for p in parts]), images, atol=1e-5, rtol=0)
            assert torch.equal(torch.cat([p[k][1] for p in parts]), labels)
    with pytest.raises(ValueError, match="rank"):
        ImageBatches(split, 4, shuffle=False, augment=False, rank=2, world_size=2)


# --------------------------------------------------------------------------------------------- download
def build_archive(folder: Path, *, members=None) -> bytes:
    """A tar.gz of fake batches under ``cifar-10-batches-py/`` (or the given (name, bytes) members)."""
    if members is None:
        source = folder / "source"
        write_fake_cifar(source / "cifar-10-batches-py")
        members = [
            (f"cifar-10-batches-py/{p.name}", p.read_bytes())
            for p in sorted((source / "cifar-10-batches-py").iterdir())
        ]
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name, content in members:
            info = tarfile.TarInfo(name)
            info.size = len(content)
            archive.addfile(info, io.BytesIO(content))
    return buffer.getvalue()


@pytest.fixture
def server(tmp_path):
    """A local HTTP server serving ``tmp_path / "www"``; yields (base url, folder, its ``Server`` state)."""
    www = tmp_path / "www"
    www.mkdir()
    with serve(www) as local:
        yield local.base, www, local


def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/cifar-10-python.tar.gz"


def test_download_extracts_and_verifies(tmp_path, server):
    base, www, local = server
    payload = build_archive(tmp_path)
    (www / "cifar-10-python.tar.gz").write_bytes(payload)
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    md5 = hashlib.md5(payload).hexdigest()
    folder = download_cifar10(root, url=f"{base}/cifar-10-python.tar.gz", md5=md5, progress=True)
    assert folder == root / "cifar-10-batches-py"
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py", "keep.txt"]  # no temporary leftovers
    assert {"data_batch_1", "data_batch_5", "test_batch", "batches.meta"} <= set(os.listdir(folder))
    assert len(load_cifar10(root, valid_size=5).train) == 15
    assert local.requests == ["/cifar-10-python.tar.gz"]


def test_download_wrong_md5_leaves_nothing(tmp_path, server):
    base, www, _ = server
    (www / "cifar-10-python.tar.gz").write_bytes(build_archive(tmp_path))
    root = tmp_path / "data"
    root.mkdir()
    (root / "keep.txt").write_text("mine")
    url = f"{base}/cifar-10-python.tar.gz"
    with pytest.raises(ValueError, match="MD5 mismatch") as info:
        download_cifar10(root, url=url, md5="0" * 32, progress=False)
    message = str(info.value)
    assert "0" * 32 in message and url in message
    assert hashlib.md5((www / "cifar-10-python.tar.gz").read_bytes()).hexdigest() in message
    assert os.listdir(root) == ["keep.txt"]
    fresh = tmp_path / "fresh" / "data"  # a root the call created is removed again
    with pytest.raises(ValueError, match="MD5 mismatch"):
        download_cifar10(fresh, url=url, md5="0" * 32, progress=False)
    assert not fresh.exists()


@pytest.mark.parametrize(
    "members, error",
    [
        ([("../evil", b"x")], "outside"),
        ([("/tmp/abs_evil", b"x")], "outside"),
        ([("cifar-10-batches-py/data_batch_1", b"x")], "does not contain"),
    ],
)
def test_download_bad_archives_leave_nothing(tmp_path, server, members, error):
    base, www, _ = server
    payload = build_archive(tmp_path, members=members)
    (www / "a.tar.gz").write_bytes(payload)
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(ValueError, match=error):
        download_cifar10(root, url=f"{base}/a.tar.gz", md5=hashlib.md5(payload).hexdigest(), progress=False)
    assert os.listdir(root) == []
    assert not (tmp_path / "evil").exists()


def test_download_http_error_leaves_nothing(tmp_path, server):
    base, _, local = server
    root = tmp_path / "data"
    root.mkdir()
    with pytest.raises(ConnectionError, match="missing.tar.gz: HTTP 404"):
        download_cifar10(root, url=f"{base}/missing.tar.gz", progress=False)
    assert os.listdir(root) == []
    assert local.requests == ["/missing.tar.gz"]  # a 404 is not asked again


def test_download_retries_a_failed_and_a_cut_short_transfer(tmp_path, server):
    base, www, local = server
    payload = build_archive(tmp_path)
    (www / "cifar-10-python.tar.gz").write_bytes(payload)
    local.fail_once.add("/cifar-10-python.tar.gz")  # a 503, then half the body and a closed connection
    local.cut_once.add("/cifar-10-python.tar.gz")
    root = tmp_path / "data"
    folder = download_cifar10(root, url=f"{base}/cifar-10-python.tar.gz", md5=hashlib.md5(payload).hexdigest(),
                              progress=False, wait=0.01)
    assert local.requests == ["/cifar-10-python.tar.gz"] * 3
    assert sorted(os.listdir(root)) == ["cifar-10-batches-py"] and folder == root / "cifar-10-batches-py"
    assert len(load_cifar10(root, valid_size=5).train) == 15


def test_download_gives_up_after_its_retries_and_leaves_nothing(tmp_path):
    root = tmp_path / "data"
    with pytest.raises(ConnectionError, match="after 3 attempts; check the network, or download the archive by hand"):
        download_cifar10(root, url=closed_port_url(), progress=False, retries=2, wait=0.01)
    assert not root.exists()


def test_download_skipped_when_present(tmp_path, monkeypatch):
    def no_network(*args, **kwargs):
        raise AssertionError("network accessed")

    monkeypatch.setattr(replab.data.http.urllib.request, "urlopen", no_network)
    folder = tmp_path / "cifar-10-batches-py"
    write_fake_cifar(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert download_cifar10(tmp_path, url=closed_port_url(), progress=False) == folder
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before
    write_fake_cifar(tmp_path / "root2" / "cifar10" / "cifar-10-batches-py")  # the data-root layout
    found = download_cifar10(tmp_path / "root2", url=closed_port_url(), progress=False)
    assert found == tmp_path / "root2" / "cifar10" / "cifar-10-batches-py"
    (folder / "test_batch").unlink()
    with pytest.raises(FileExistsError, match="incomplete"):
        download_cifar10(tmp_path, url=closed_port_url(), progress=False)


def test_download_records_checksums_and_a_later_change_is_refused_on_load(tmp_path, server):
    base, www, _ = server
    payload = build_archive(tmp_path)
    (www / "cifar-10-python.tar.gz").write_bytes(payload)
    root = tmp_path / "data"
    folder = download_cifar10(root, url=f"{base}/cifar-10-python.tar.gz", md5=hashlib.md5(payload).hexdigest(),
                              progress=False)
    sums = dict(line.split()[::-1] for line in (folder / "MD5SUMS").read_text().splitlines())
    assert {"data_batch_1", "test_batch", "batches.meta"} <= set(sums)
    assert all(hashlib.md5((folder / name).read_bytes()).hexdigest() == md5 for name, md5 in sums.items())
    data = bytearray((folder / "data_batch_2").read_bytes())
    data[-100] ^= 0xFF  # one pixel: the pickle still loads
    (folder / "data_batch_2").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="data_batch_2 does not match its checksum"):
        load_cifar10(root, valid_size=5)
