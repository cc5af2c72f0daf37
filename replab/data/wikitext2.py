"""Wikitext-2 as fixed-length next-token windows over the course's GPT-1-tokenized ``.npz`` files.

Each file ``wiki.{split}.npz`` holds ``tokens`` (uint16, flat; id = GPT-1 BPE id + 1, so 0 is padding) and
``sizes`` (int64 tokens per line, summing to ``len(tokens)``). A *window* is a slice ``tokens[start:end]`` of at
most ``max_length + 1`` tokens; its item is ``source = window[:-1]``, ``target = window[1:]``, both zero-padded
to ``max_length``, with ``mask`` 1 exactly where a prediction (a real target) exists.

Windows of a segment (the whole stream, or one line) start every ``max_length`` tokens, ``0, L, 2L, ...``,
and are cut until one reaches the end of the segment, so consecutive windows share one token and every token
of the segment but its first is predicted exactly once (a one-token segment gives one prediction-less window).

Break modes:

* ``"none"``: windows over the whole token stream, ignoring line boundaries.
* ``"lines"``: the same inside each line; a window never crosses a line boundary (empty lines give nothing).
* ``"complete"``: the ``"lines"`` windows, in order, packed greedily into sequences of at most
  ``max_length + 1`` tokens, joining a window to the current sequence only when it starts exactly where the
  sequence ends (so the overlapping windows of one long line are never joined, while short consecutive lines
  are). Packing happens first; the ``min_length`` drop is applied to the packed sequences.

In every mode, windows (or packed sequences) holding ``<= min_length`` tokens are dropped.
"""

from __future__ import annotations

import os
import zipfile
import zlib
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from replab.data import checksums
from replab.text import GPT1Tokenizer

__all__ = ["Wikitext2", "SPLITS", "BREAK_MODES"]

SPLITS = ("train", "validation", "test")
BREAK_MODES = ("none", "lines", "complete")

_HOW_TO_GET = (
    "The data folder (--data-dir, else $REPLAB_DATA, else ./data) must hold "
    "wikitext2/wiki.{train,validation,test}.npz, the course's preprocessed (GPT-1 BPE tokenized) Wikitext-2."
)


def _segment_windows(seg_starts: np.ndarray, seg_ends: np.ndarray, max_length: int):
    """Windows of every segment ``[seg_starts[k], seg_ends[k])``, in order: (starts, ends) int64 arrays.

    A segment of ``n >= 1`` tokens gives ``ceil(max(n - 1, 1) / L)`` windows starting at ``0, L, 2L, ...``
    (relative), each ending at ``min(start + L + 1, segment end)``; empty segments give none.
    """
    seg_starts = np.asarray(seg_starts, dtype=np.int64)
    seg_ends = np.asarray(seg_ends, dtype=np.int64)
    n = seg_ends - seg_starts
    counts = np.where(n > 0, (np.maximum(n - 1, 1) + max_length - 1) // max_length, 0)
    total = int(counts.sum())
    first = np.cumsum(counts) - counts  # index of each segment's first window
    rank = np.arange(total, dtype=np.int64) - np.repeat(first, counts)  # window's rank inside its segment
    starts = np.repeat(seg_starts, counts) + max_length * rank
    ends = np.minimum(starts + max_length + 1, np.repeat(seg_ends, counts))
    return starts, ends


def _pack_contiguous(starts: np.ndarray, ends: np.ndarray, capacity: int):
    """Greedily join consecutive windows that are contiguous (next start == current end) while the joined
    sequence holds at most ``capacity`` tokens. Returns the packed (starts, ends) int64 arrays."""
    if len(starts) == 0:
        return starts.copy(), ends.copy()
    out_starts: list[int] = []
    out_ends: list[int] = []
    cur_start, cur_end = int(starts[0]), int(ends[0])
    for s, e in zip(starts[1:].tolist(), ends[1:].tolist(), strict=True):
        if s == cur_end and e - cur_start <= capacity:
            cur_end = e
        else:
            out_starts.append(cur_start)
            out_ends.append(cur_end)
            cur_start, cur_end = s, e
    out_starts.append(cur_start)
    out_ends.append(cur_end)
    return np.asarray(out_starts, dtype=np.int64), np.asarray(out_ends, dtype=np.int64)


def _load_npz(path: Path) -> tuple[np.ndarray, np.ndarray]:
    """``tokens`` (int64, flat) and ``sizes`` (int64) of one split file, validated (and checked against the
    ``MD5SUMS`` beside it, where there is one)."""
    checksums.verify(path, "Wikitext-2")
    try:
        archive = np.load(path, allow_pickle=False)
        if not isinstance(archive, np.lib.npyio.NpzFile):
            raise ValueError("a plain .npy array, not an .npz archive")
        with archive:
            files = set(archive.files)
            arrays = {key: archive[key] for key in ("tokens", "sizes") if key in files}
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error, KeyError, NotImplementedError) as error:
        raise ValueError(f"cannot read {path} as a Wikitext-2 .npz file ({error}). " + _HOW_TO_GET) from error
    missing = {"tokens", "sizes"} - set(arrays)
    if missing:
        raise ValueError(f"{path} lacks the array(s) {sorted(missing)} (it has {sorted(files)}). " + _HOW_TO_GET)
    tokens, sizes = arrays["tokens"], arrays["sizes"]
    if tokens.ndim != 1 or sizes.ndim != 1:
        raise ValueError(
            f"{path}: 'tokens' and 'sizes' must be flat arrays, got shapes {tokens.shape} and {sizes.shape}. "
            + _HOW_TO_GET
        )
    if not (np.issubdtype(tokens.dtype, np.integer) and np.issubdtype(sizes.dtype, np.integer)):
        raise ValueError(f"{path}: 'tokens' and 'sizes' must be integer arrays. " + _HOW_TO_GET)
    sizes = sizes.astype(np.int64)
    if (sizes < 0).any() or int(sizes.sum()) != len(tokens):
        raise ValueError(
            f"{path}: 'sizes' must be non-negative and sum to len(tokens) = {len(tokens)}, "
            f"got sum {int(sizes.sum())}. " + _HOW_TO_GET
        )
    return tokens.astype(np.int64), sizes


class Wikitext2(Dataset):
    """Wikitext-2 next-token windows; item ``i`` is a dict of ``source``, ``target`` (int64) and ``mask``
    (float32), each of shape ``(max_length,)``, zero where ``mask`` is 0 (see the module docstring).

    Args:
        root: the folder holding ``wiki.{split}.npz``, or a data root with a ``wikitext2/`` subfolder.
        split: ``"train"``, ``"validation"`` or ``"test"``.
        break_mode: ``"none"``, ``"lines"`` or ``"complete"``.
        max_length: sequence length ``L`` (a window holds at most ``L + 1`` tokens), ``>= 1``.
        min_length: windows holding ``<= min_length`` tokens are dropped, ``>= 0``.

    Attributes:
        tokens: the whole split as one int64 tensor ``(num_tokens,)``.
        starts, ends: int64 numpy arrays ``(len(self),)``, item ``i`` is ``tokens[starts[i]:ends[i]]``.
    """

    vocabulary_size = 40479

    def __init__(
        self,
        root: str | os.PathLike,
        split: str = "train",
        break_mode: str = "none",
        max_length: int = 256,
        min_length: int = 1,
    ):
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; valid choices are {', '.join(SPLITS)}")
        if break_mode not in BREAK_MODES:
            raise ValueError(f"unknown break_mode {break_mode!r}; valid choices are {', '.join(BREAK_MODES)}")
        if isinstance(max_length, bool) or not isinstance(max_length, int | np.integer) or max_length < 1:
            raise ValueError(f"max_length must be an integer >= 1, got {max_length!r}")
        if isinstance(min_length, bool) or not isinstance(min_length, int | np.integer) or min_length < 0:
            raise ValueError(f"min_length must be an integer >= 0, got {min_length!r}")

        self.root = Path(root)
        self.split = split
        self.break_mode = break_mode
        self.max_length = int(max_length)
        self.min_length = int(min_length)
        self.path = self._find_file(self.root, split)

        tokens, sizes = _load_npz(self.path)
        self.sizes = sizes
        self.tokens = torch.from_numpy(tokens)

        length = self.max_length
        if break_mode == "none":
            starts, ends = _segment_windows(np.zeros(1, np.int64), np.array([len(tokens)], np.int64), length)
        else:
            line_ends = np.cumsum(sizes)
            starts, ends = _segment_windows(line_ends - sizes, line_ends, length)
            if break_mode == "complete":
                starts, ends = _pack_contiguous(starts, ends, length + 1)
        keep = (ends - starts) > self.min_length
        self.starts = np.ascontiguousarray(starts[keep])
        self.ends = np.ascontiguousarray(ends[keep])
        self._starts_t = torch.from_numpy(self.starts)
        self._lengths_t = torch.from_numpy(self.ends - self.starts)
        self._offsets = torch.arange(length + 1, dtype=torch.int64)

    @staticmethod
    def _find_file(root: Path, split: str) -> Path:
        name = f"wiki.{split}.npz"
        candidates = [root / name, root / "wikitext2" / name]
        for candidate in candidates:
            if candidate.is_file():
                return candidate
        raise FileNotFoundError(
            f"Wikitext-2 split {split!r} not found: looked for {' and '.join(map(str, candidates))}. " + _HOW_TO_GET
        )

    def __len__(self) -> int:
        return len(self.starts)

    @property
    def num_predictions(self) -> int:
        """Number of predicted tokens over the whole dataset (the sum of every item's ``mask``)."""
        return int((self.ends - self.starts - 1).sum())

    def get_batch(self, indices) -> dict[str, torch.Tensor]:
        """Items ``indices`` (LongTensor ``(B,)``) stacked with one vectorised gather: ``source`` and
        ``target`` int64 ``(B, max_length)``, ``mask`` float32 ``(B, max_length)``."""
        indices = torch.as_tensor(indices, dtype=torch.int64).reshape(-1)
        if len(indices) and (int(indices.min()) < -len(self) or int(indices.max()) >= len(self)):
            raise IndexError(f"index out of range for a dataset of {len(self)} items")
        starts = self._starts_t[indices]  # (B,)
        lengths = self._lengths_t[indices]  # (B,)
        positions = starts[:, None] + self._offsets[None, :]  # (B, L + 1)
        inside = self._offsets[None, :] < lengths[:, None]  # (B, L + 1)
        window = self.tokens[positions.clamp_(max=max(len(self.tokens) - 1, 0))]
        mask = inside[:, 1:]  # a prediction exists where the target is a real token
        zero = torch.zeros((), dtype=torch.int64)
        return {
            "source": torch.where(mask, window[:, :-1], zero),
            "target": torch.where(mask, window[:, 1:], zero),
            "mask": mask.to(torch.float32),
        }

    def opening_text(self, tokenizer: GPT1Tokenizer, tokens: int) -> str:
        """The start of the split's first article: its first line after the title, cut to at most ``tokens`` tokens
        at a word end, as text (``replab generate``'s default prompt)."""
        starts = np.cumsum(self.sizes) - self.sizes
        for start, size in zip(starts.tolist(), self.sizes.tolist(), strict=True):
            ids = self.tokens[start : start + size].tolist()
            if ids and not tokenizer.decode(ids).startswith("="):  # headings are "= title =", "= = section = =", ...
                ids = ids[:tokens]
                words = [i for i, piece in enumerate(tokenizer.tokens(ids)) if piece.endswith("</w>")]
                return tokenizer.decode(ids[: words[-1] + 1] if words else ids)
        raise ValueError(f"no text line in {self.path}")

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        index = int(index)
        if not -len(self) <= index < len(self):
            raise IndexError(f"index {index} out of range for a dataset of {len(self)} items")
        batch = self.get_batch(torch.tensor([index]))
        return {key: value[0] for key, value in batch.items()}

    def __repr__(self) -> str:
        return (
            f"Wikitext2(split={self.split!r}, break_mode={self.break_mode!r}, max_length={self.max_length}, "
            f"min_length={self.min_length}, items={len(self)}, tokens={len(self.tokens)}, path={self.path})"
        )
