"""GPT-1's byte-pair encoding, from its published vocabulary, with the course's token ids (GPT-1 id + 1; 0 pads).

Text -> ids (``encode``): pre-tokenized into words the way the course's token files were made (measured against
them, see the README): control characters dropped, whitespace split, spaces put around CJK ideographs, lower
case, accents stripped (NFD, combining marks removed), and every punctuation character a word of its own (ASCII
symbols and Unicode ``P*`` categories). Each word is then byte-pair encoded: its characters, the last one marked
``</w>``, merged pair by pair in the order of the merge table; a piece outside the vocabulary (a character GPT-1
never saw, e.g. IPA symbols or ``–``) becomes GPT-1's unknown token ``<unk>`` (id 1 here). The literal text
``<unk>`` (Wikitext-2 writes rare words so) reads as one such unknown character, part of the word around it:
``ti<unk>kal`` -> ``ti`` ``<unk>`` ``kal</w>``, as the course's files hold it. Words are cached: a corpus of
millions of words takes seconds.

Ids -> text (``decode``): the pieces joined, ``</w>`` ending a word. ``<unk>`` is written ``<unk>``, followed by
a space unless it sits inside a word. Punctuation is spaced as in prose (``word ,`` -> ``word,``, ``( word )`` ->
``(word)``; Wikitext's ``@-@`` kept whole), which ``encode`` undoes since it splits punctuation again, so
``encode(decode(ids)) == ids`` for every sequence a tokenizer like this one can produce.
"""

from __future__ import annotations

import json
import re
import unicodedata
from functools import cache, lru_cache
from pathlib import Path

from replab.datadir import file_identity, resolve_data_dir

__all__ = ["GPT1Tokenizer", "UNK", "PAD_ID", "UNK_ID", "VOCABULARY_FOLDER", "pre_tokenize", "vocabulary_files"]

UNK = "<unk>"
PAD_ID = 0  # our padding id (no GPT-1 token)
UNK_ID = 1  # GPT-1's <unk> (encoder id 0) + 1
END = "</w>"
#: The vocabulary's folder inside the data folder, and its two files (GPT-1's names).
VOCABULARY_FOLDER = "gpt1-bpe"
ENCODER_FILE, MERGES_FILE = "encoder_bpe_40000.json", "vocab_40000.bpe"
_UNKNOWN_CHAR = "\ue000"  # stands for the literal <unk> during encoding: a private-use character, in no merge

_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F), (0x2B740, 0x2B81F),
        (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


# Whitespace: tab, newline, carriage return and the space separators (Unicode category Zs; a test checks the list).
SPACE_CHARACTERS = " \t\n\r\u00a0\u1680\u202f\u205f\u3000" + "".join(map(chr, range(0x2000, 0x200B)))
_SPACES = re.compile(f"[{SPACE_CHARACTERS}]+")


@cache
def _char_class(char: str) -> str:
    """'drop' (control, NUL, U+FFFD), 'space', 'cjk', 'punct' or 'letter' (anything else)."""
    if char in " \t\n\r":
        return "space"
    if char == _UNKNOWN_CHAR:
        return "letter"
    code = ord(char)
    category = unicodedata.category(char)
    if code == 0 or code == 0xFFFD or category.startswith("C"):
        return "drop"
    if category == "Zs":
        return "space"
    if any(low <= code <= high for low, high in _CJK):
        return "cjk"
    if 33 <= code <= 47 or 58 <= code <= 64 or 91 <= code <= 96 or 123 <= code <= 126 or category.startswith("P"):
        return "punct"
    return "letter"


def _normalise_word(word: str) -> str:
    """Lower case, then accents stripped: NFD and combining marks (category Mn) removed."""
    word = unicodedata.normalize("NFD", word.lower())
    return "".join(c for c in word if unicodedata.category(c) != "Mn")


@lru_cache(maxsize=1 << 18)
def _split_chunk(chunk: str) -> tuple[str, ...]:
    """The words of a whitespace-free chunk: normalised, then punctuation and CJK characters split off."""
    words: list[str] = []
    current: list[str] = []
    for char in _normalise_word(chunk):
        kind = _char_class(char)
        if kind == "drop":
            continue
        if kind in ("punct", "cjk", "space"):
            if current:
                words.append("".join(current))
                current = []
            if kind != "space":
                words.append(char)
        else:
            current.append(char)
    if current:
        words.append("".join(current))
    return tuple(words)


def pre_tokenize(text: str) -> list[str]:
    """The words ``text`` is byte-pair encoded by; ``<unk>`` is one character of them, U+E000. str -> list of str."""
    text = unicodedata.normalize("NFC", text).replace(UNK, _UNKNOWN_CHAR)
    words: list[str] = []
    for chunk in _SPACES.split(text):
        if chunk:
            words.extend(_split_chunk(chunk))
    return words


_PUNCT_ATTACH_LEFT = re.compile(r" ([.,;:!?%)\]}])")
_PUNCT_ATTACH_RIGHT = re.compile(r"([(\[{$]) ")
_WIKI_JOINERS = re.compile(r"@ ([-.,]) @")


def _tidy(text: str) -> str:
    """Readable spacing of punctuation: ``a , b ( c )`` -> ``a, b (c)``; Wikitext's ``@ - @`` -> ``@-@``."""
    text = _WIKI_JOINERS.sub(r"@\1@", text)
    text = _PUNCT_ATTACH_LEFT.sub(r"\1", text)
    return _PUNCT_ATTACH_RIGHT.sub(r"\1", text)


def vocabulary_files(data_dir: str | Path | None = None) -> tuple[Path, Path]:
    """``<data dir>/gpt1-bpe/encoder_bpe_40000.json`` and ``vocab_40000.bpe`` (data dir: ``resolve_data_dir``)."""
    folder = resolve_data_dir(data_dir) / VOCABULARY_FOLDER
    return folder / ENCODER_FILE, folder / MERGES_FILE


def parse_vocabulary(encoder_text: str, merges_text: str) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """The encoder (token string -> GPT-1 id) and the merge table of the two files' texts; ValueError naming the
    problem where they are not GPT-1's formats (a JSON object of ids; a version line, then one pair a line)."""
    try:
        encoder = json.loads(encoder_text)
    except ValueError as error:
        raise ValueError(f"{ENCODER_FILE} is not JSON: {error}") from None
    if not isinstance(encoder, dict) or not encoder or not all(isinstance(i, int) for i in encoder.values()):
        raise ValueError(f"{ENCODER_FILE} must be a JSON object of token -> id")
    lines = merges_text.split("\n")
    if not lines[0].startswith("#version"):
        raise ValueError(f"{MERGES_FILE} must start with a '#version' line")
    merges = [tuple(line.split()) for line in lines[1:] if line.strip()]
    bad = next((n for n, pair in enumerate(merges, 2) if len(pair) != 2), None)
    if bad is not None:
        raise ValueError(f"{MERGES_FILE}: line {bad} is not a pair of symbols")
    return encoder, merges


class GPT1Tokenizer:
    """GPT-1 BPE with the course's ids. ``vocabulary_size`` = 40,479 (40,478 GPT-1 tokens + padding).

    Args:
        encoder: GPT-1 token string -> GPT-1 id (``encoder_bpe_40000.json``).
        merges: the merge table, highest priority first (``vocab_40000.bpe`` without its version line).
    """

    def __init__(self, encoder: dict[str, int], merges: list[tuple[str, str]]):
        self.pieces = [""] * (max(encoder.values()) + 2)  # our id -> token string; id 0 pads
        for piece, gpt1_id in encoder.items():
            self.pieces[gpt1_id + 1] = piece
        self.ids = {piece: i for i, piece in enumerate(self.pieces) if i}
        if self.ids.get(UNK) != UNK_ID:
            raise ValueError(f"the vocabulary must hold {UNK} as GPT-1 id 0")
        self.ranks = {pair: rank for rank, pair in enumerate(merges)}
        self._cache: dict[str, tuple[int, ...]] = {}

    @classmethod
    def from_files(cls, encoder_path: str | Path, merges_path: str | Path) -> GPT1Tokenizer:
        """From ``encoder_bpe_40000.json`` and ``vocab_40000.bpe``; ValueError naming the file that is not one."""
        texts = [Path(path).read_text(encoding="utf-8") for path in (encoder_path, merges_path)]
        try:
            return cls(*parse_vocabulary(*texts))
        except ValueError as error:
            raise ValueError(f"{Path(encoder_path).parent}: {error}") from None

    @classmethod
    def from_data_dir(cls, data_dir: str | Path | None = None) -> GPT1Tokenizer:
        """The tokenizer of ``<data dir>/gpt1-bpe/`` (data dir: ``resolve_data_dir``), loaded once per folder and
        process (again when a file changed). FileNotFoundError saying how to get it where a file is missing."""
        encoder, merges = vocabulary_files(data_dir)
        missing = [path.name for path in (encoder, merges) if not path.is_file()]
        if missing:
            raise FileNotFoundError(f"GPT-1's BPE vocabulary is not in {encoder.parent} (missing {', '.join(missing)}):"
                                    " get it with `replab data download --vocabulary`, or point --data-dir or "
                                    "$REPLAB_DATA at a data folder that holds gpt1-bpe/")
        return _load_tokenizer(file_identity(encoder), file_identity(merges))

    @property
    def vocabulary_size(self) -> int:
        return len(self.pieces)

    @property
    def num_merges(self) -> int:
        """The number of merges in the table (40,000 for GPT-1)."""
        return len(self.ranks)

    def bpe(self, word: str) -> tuple[str, ...]:
        """The BPE pieces of one pre-tokenized word, the last one ending in ``</w>``."""
        symbols = list(word[:-1]) + [word[-1] + END]
        never = len(self.ranks)
        while len(symbols) > 1:
            pairs = list(zip(symbols[:-1], symbols[1:], strict=True))
            best = min(pairs, key=lambda pair: self.ranks.get(pair, never))
            if best not in self.ranks:
                break
            merged: list[str] = []
            i = 0
            while i < len(symbols):
                if i < len(symbols) - 1 and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return tuple(symbols)

    def encode_word(self, word: str) -> tuple[int, ...]:
        """Ids of one pre-tokenized word (cached); pieces outside the vocabulary are ``<unk>``."""
        ids = self._cache.get(word)
        if ids is None:
            ids = tuple(self.ids.get(piece, UNK_ID) for piece in self.bpe(word))
            self._cache[word] = ids
        return ids

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` (GPT-1 id + 1). Never fails: unknown characters become ``<unk>`` (id 1)."""
        ids: list[int] = []
        for word in pre_tokenize(text):
            ids.extend(self.encode_word(word))
        return ids

    def tokens(self, ids) -> list[str]:
        """The token strings of ``ids`` (padding, id 0, skipped). Raises ValueError for an id out of range."""
        out = []
        for i in ids:
            i = int(i)
            if not 0 <= i < len(self.pieces):
                raise ValueError(f"token id {i} is outside the vocabulary (0..{len(self.pieces) - 1})")
            if i != PAD_ID:
                out.append(self.pieces[i])
        return out

    def decode(self, ids) -> str:
        """Text of ``ids``: pieces joined, ``</w>`` ending words, ``<unk>`` spaced as a word unless it is inside
        one, punctuation spaced as in prose (see the module docstring). ids: iterable of int -> str."""
        pieces = self.tokens(ids)
        out: list[str] = []
        for piece in pieces:
            if piece == UNK:  # inside a word when the previous piece left one open (no </w>, no space)
                inside = bool(out) and not out[-1].endswith((END, " "))
                piece = UNK if inside else UNK + " "
            out.append(piece)
        text = " ".join("".join(out).replace(END, " ").split())
        return _tidy(text)


@lru_cache(maxsize=8)
def _load_tokenizer(encoder: tuple, merges: tuple) -> GPT1Tokenizer:
    """The tokenizer of two files given as ``file_identity`` keys (path first): a file changed since is read
    again."""
    return GPT1Tokenizer.from_files(encoder[0], merges[0])
