"""Wikitext2 against a brute-force reference of the windowing rules, plus error paths and the real data."""

from __future__ import annotations

import math
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from replab.data.wikitext2 import BREAK_MODES, Wikitext2
from replab.datadir import resolve_data_dir

MAX_LENGTHS = [1, 2, 3, 5, 8]


# --------------------------------------------------------------------------------------------- reference
def reference_windows(sizes, mode, max_length, min_length):
    """The windowing rules written out with plain loops: a list of (start, end) token positions."""
    capacity = max_length + 1

    def segment(a, b):
        windows = []
        if b <= a:
            return windows
        s = a
        while True:
            e = min(s + capacity, b)
            windows.append((s, e))
            if e == b:
                return windows
            s += max_length

    total = sum(sizes)
    if mode == "none":
        windows = segment(0, total)
    else:
        windows = []
        offset = 0
        for size in sizes:
            windows += segment(offset, offset + size)
            offset += size
        if mode == "complete":
            packed = []
            for s, e in windows:
                if packed and packed[-1][1] == s and e - packed[-1][0] <= capacity:
                    packed[-1] = (packed[-1][0], e)
                else:
                    packed.append((s, e))
            windows = packed
    return [(s, e) for s, e in windows if e - s > min_length]


def reference_item(tokens, start, end, max_length):
    window = list(tokens[start:end])
    source, target = window[:-1], window[1:]
    pad = max_length - len(target)
    return {
        "source": torch.tensor(source + [0] * pad, dtype=torch.int64),
        "target": torch.tensor(target + [0] * pad, dtype=torch.int64),
        "mask": torch.tensor([1.0] * len(target) + [0.0] * pad, dtype=torch.float32),
    }


def write_split(folder: Path, sizes, tokens=None, split="train") -> np.ndarray:
    sizes = np.asarray(sizes, dtype=np.int64)
    if tokens is None:  # distinct ids, so a token value identifies its position in the stream
        tokens = np.arange(1, int(sizes.sum()) + 1, dtype=np.uint16)
    np.savez(folder / f"wiki.{split}.npz", tokens=np.asarray(tokens, dtype=np.uint16), sizes=sizes)
    return np.asarray(tokens)


def check_against_reference(folder, tokens, sizes, mode, max_length, min_length):
    dataset = Wikitext2(folder, "train", mode, max_length=max_length, min_length=min_length)
    expected = reference_windows(list(sizes), mode, max_length, min_length)
    assert list(zip(dataset.starts.tolist(), dataset.ends.tolist(), strict=True)) == expected
    assert len(dataset) == len(expected)
    assert dataset.num_predictions == sum(e - s - 1 for s, e in expected)
    for index, (s, e) in enumerate(expected):
        item = dataset[index]
        reference = reference_item(tokens, s, e, max_length)
        for key in ("source", "target", "mask"):
            assert item[key].dtype == reference[key].dtype
            assert torch.equal(item[key], reference[key]), (mode, max_length, min_length, index, key)
    if len(dataset):
        indices = torch.randint(len(dataset), (7,))
        batch = dataset.get_batch(indices)
        for key in ("source", "target", "mask"):
            assert torch.equal(batch[key], torch.stack([dataset[int(i)][key] for i in indices]))
    return dataset, expected


# ------------------------------------------------------------------------------------- reference checks
line_sizes = st.lists(
    st.one_of(st.integers(0, 2), st.integers(0, 20)),  # plenty of empty / one-token lines, some long ones
    min_size=0,
    max_size=12,
)


@pytest.mark.parametrize("mode", BREAK_MODES)
@settings(max_examples=40, deadline=None)
@given(sizes=line_sizes, max_length=st.sampled_from(MAX_LENGTHS), min_length=st.sampled_from([0, 1, 2, 4]))
def test_matches_reference(mode, sizes, max_length, min_length):
    with tempfile.TemporaryDirectory() as folder:
        tokens = write_split(Path(folder), sizes)
        check_against_reference(folder, tokens, sizes, mode, max_length, min_length)


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_matches_reference_random_vocabulary(tmp_path, seed, max_length):
    """Repeated token values, long lines (> max_length + 1), empty and one-token lines, all modes."""
    rng = np.random.default_rng(seed)
    sizes = rng.choice([0, 1, 2, max_length, max_length + 1, max_length + 2, 3 * max_length + 4], size=15)
    tokens = write_split(tmp_path, sizes, tokens=rng.integers(1, 40480, size=int(sizes.sum())))
    for mode in BREAK_MODES:
        for min_length in (0, 1, 3):
            check_against_reference(tmp_path, tokens, sizes, mode, max_length, min_length)


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_none_predicts_every_token_but_the_first_once(tmp_path, max_length):
    sizes = [3, 0, 1, 11, 2, 17]
    tokens = write_split(tmp_path, sizes)
    dataset = Wikitext2(tmp_path, break_mode="none", max_length=max_length)
    batch = dataset.get_batch(torch.arange(len(dataset)))
    predicted = batch["target"][batch["mask"].bool()]
    assert sorted(predicted.tolist()) == tokens[1:].tolist()
    assert dataset.num_predictions == len(tokens) - 1 == int(batch["mask"].sum())
    # consecutive windows share exactly one token, and the last one ends at the end of the stream
    assert (dataset.starts[1:] == dataset.ends[:-1] - 1).all()
    assert dataset.ends[-1] == len(tokens)


@pytest.mark.parametrize("max_length", MAX_LENGTHS)
def test_lines_never_cross_a_boundary(tmp_path, max_length):
    sizes = [5, 1, 0, 9, 2, 2, 13, 1]
    tokens = write_split(tmp_path, sizes)
    line_of = np.repeat(np.arange(len(sizes)), sizes)  # token value v sits at position v - 1
    dataset = Wikitext2(tmp_path, break_mode="lines", max_length=max_length)
    predicted = []
    for index in range(len(dataset)):
        item = dataset[index]
        n = int(item["mask"].sum())
        used = torch.cat([item["source"][:n], item["target"][:n]]).numpy()
        assert len(set(line_of[used - 1])) == 1
        predicted += item["target"][:n].tolist()
    firsts = set((np.cumsum(sizes) - sizes)[np.asarray(sizes) > 0] + 1)
    assert sorted(predicted) == [int(t) for t in tokens if t not in firsts]


def test_complete_joins_short_lines_but_not_overlapping_windows(tmp_path):
    # max_length 4, capacity 5: lines 2+2 join, the long line's overlapping windows stay apart, and its
    # last window (2 tokens) joins the following one-token line.
    write_split(tmp_path, [2, 2, 10, 1, 6])
    dataset = Wikitext2(tmp_path, break_mode="complete", max_length=4)
    windows = list(zip(dataset.starts.tolist(), dataset.ends.tolist(), strict=True))
    assert windows == [(0, 4), (4, 9), (8, 13), (12, 15), (15, 20), (19, 21)]
    assert windows == reference_windows([2, 2, 10, 1, 6], "complete", 4, 1)


def test_pack_before_min_length_drop(tmp_path):
    # Two one-token lines are dropped alone by min_length=1 but kept once packed into a two-token sequence.
    write_split(tmp_path, [1, 1])
    assert len(Wikitext2(tmp_path, break_mode="lines", max_length=4)) == 0
    dataset = Wikitext2(tmp_path, break_mode="complete", max_length=4)
    assert len(dataset) == 1 and dataset.num_predictions == 1
    assert dataset[0]["target"].tolist() == [2, 0, 0, 0]


def test_accepts_data_root_and_env(tmp_path, monkeypatch):
    (tmp_path / "wikitext2").mkdir()
    write_split(tmp_path / "wikitext2", [4, 4], split="validation")
    monkeypatch.setenv("REPLAB_DATA", str(tmp_path))
    dataset = Wikitext2(resolve_data_dir(), split="validation", max_length=3)
    assert dataset.path == tmp_path / "wikitext2" / "wiki.validation.npz"
    assert len(dataset) == 3


def test_resolve_data_dir(monkeypatch):
    monkeypatch.setenv("REPLAB_DATA", "/from/env")
    assert resolve_data_dir("/explicit") == Path("/explicit")
    assert resolve_data_dir() == Path("/from/env")
    monkeypatch.delenv("REPLAB_DATA")
    assert resolve_data_dir() == Path("./data")


def test_index_errors_and_empty_split(tmp_path):
    write_split(tmp_path, [0, 1])
    dataset = Wikitext2(tmp_path, max_length=3)
    assert len(dataset) == 0 and dataset.num_predictions == 0
    with pytest.raises(IndexError):
        dataset[0]
    write_split(tmp_path, [6])
    dataset = Wikitext2(tmp_path, max_length=3)
    assert torch.equal(dataset[-1]["target"], dataset[len(dataset) - 1]["target"])
    with pytest.raises(IndexError):
        dataset[len(dataset)]
    with pytest.raises(IndexError):
        dataset.get_batch(torch.tensor([0, len(dataset)]))


# ---------------------------------------------------------------------------------------------- errors
def test_bad_arguments(tmp_path):
    write_split(tmp_path, [3])
    with pytest.raises(ValueError, match="train, validation, test"):
        Wikitext2(tmp_path, split="valid")
    with pytest.raises(ValueError, match="none, lines, complete"):
        Wikitext2(tmp_path, break_mode="eos")
    with pytest.raises(ValueError, match="max_length"):
        Wikitext2(tmp_path, max_length=0)
    with pytest.raises(ValueError, match="min_length"):
        Wikitext2(tmp_path, min_length=-1)


def test_missing_file_names_path_and_fix(tmp_path):
    with pytest.raises(FileNotFoundError) as info:
        Wikitext2(tmp_path, split="test")
    assert str(tmp_path / "wiki.test.npz") in str(info.value)
    assert "REPLAB_DATA" in str(info.value) and "--data-dir" in str(info.value)


def test_unreadable_or_inconsistent_file(tmp_path):
    path = tmp_path / "wiki.train.npz"
    path.write_bytes(b"not a zip file")
    with pytest.raises(ValueError, match="REPLAB_DATA") as info:
        Wikitext2(tmp_path)
    assert str(path) in str(info.value)
    with open(path, "wb") as handle:
        np.save(handle, np.arange(4))
    with pytest.raises(ValueError, match="not an .npz"):
        Wikitext2(tmp_path)
    np.savez(path, tokens=np.arange(1, 5, dtype=np.uint16))
    with pytest.raises(ValueError, match="sizes"):
        Wikitext2(tmp_path)
    np.savez(path, tokens=np.arange(1, 5, dtype=np.uint16), sizes=np.array([3], dtype=np.int64))
    with pytest.raises(ValueError, match="sum to"):
        Wikitext2(tmp_path)


# ------------------------------------------------------------------------------------------- real data
REAL = {"train": (2_356_376, 23_767), "validation": (245_046, 2_461), "test": (279_023, 2_891)}


@pytest.mark.parametrize("split", list(REAL))
def test_real_data(data_root, split):
    num_tokens, num_lines = REAL[split]
    sizes = None
    for mode in BREAK_MODES:
        dataset = Wikitext2(data_root, split=split, break_mode=mode)
        assert len(dataset.tokens) == num_tokens and len(dataset.sizes) == num_lines
        assert dataset.tokens.dtype == torch.int64
        sizes = dataset.sizes.tolist()
        expected = reference_windows(sizes, mode, 256, 1)
        assert len(dataset) == len(expected)
        assert dataset.num_predictions == sum(e - s - 1 for s, e in expected)
        if mode == "none":
            assert len(dataset) == math.ceil((num_tokens - 1) / 256)
            assert dataset.num_predictions == num_tokens - 1
        if mode == "lines":
            assert dataset.num_predictions == sum(n - 1 for n in sizes if n > 0)
        batch = dataset.get_batch(torch.tensor([0, len(dataset) // 2, len(dataset) - 1]))
        for key, dtype in (("source", torch.int64), ("target", torch.int64), ("mask", torch.float32)):
            assert batch[key].shape == (3, 256) and batch[key].dtype == dtype
        off = batch["mask"] == 0
        assert (batch["source"][off] == 0).all() and (batch["target"][off] == 0).all()
        assert (batch["target"][~off] > 0).all() and (batch["source"][~off] > 0).all()
        assert int(batch["target"].max()) < Wikitext2.vocabulary_size
        item = dataset[len(dataset) - 1]
        assert torch.equal(item["mask"], batch["mask"][2])


def test_real_train_none_predicts_2356375_tokens(data_root):
    dataset = Wikitext2(data_root / "wikitext2", split="train", break_mode="none")
    assert dataset.num_predictions == 2_356_375
    assert int(dataset.get_batch(torch.arange(len(dataset)))["mask"].sum()) == 2_356_375
