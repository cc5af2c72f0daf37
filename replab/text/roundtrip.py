"""How much of the course's token files survives ``encode(decode(line))``, and how fast: ``python -m
replab.text.roundtrip [--data-dir DIR]`` prints one row per split (lines and tokens identical, seconds)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from replab.text.bpe import GPT1Tokenizer, vocabulary_files


@dataclass
class RoundTrip:
    """One split: the tokens of each non-empty line, whether the line came back identical, the time each way."""

    split: str
    line_tokens: list[int]
    identical: list[bool]
    decode_seconds: float
    encode_seconds: float

    @property
    def lines(self) -> int:
        return len(self.line_tokens)

    @property
    def tokens(self) -> int:
        return sum(self.line_tokens)

    @property
    def identical_lines(self) -> int:
        return sum(self.identical)

    @property
    def identical_tokens(self) -> int:
        return sum(n for n, same in zip(self.line_tokens, self.identical, strict=True) if same)

    @property
    def different(self) -> list[int]:
        """Indices (among the non-empty lines) of the lines that differ."""
        return [index for index, same in enumerate(self.identical) if not same]

    def row(self) -> str:
        return (f"| {self.split} | {self.identical_lines:,} / {self.lines:,} ({self.identical_lines / self.lines:.2%}) "
                f"| {self.identical_tokens:,} / {self.tokens:,} ({self.identical_tokens / self.tokens:.2%}) "
                f"| {self.decode_seconds:.1f} s | {self.encode_seconds:.1f} s |")


def measure(tokenizer: GPT1Tokenizer, tokens: np.ndarray, sizes: np.ndarray, split: str = "") -> RoundTrip:
    """Decode every non-empty line (``sizes`` tokens each, flat ``tokens``), encode the text again, compare."""
    ends = np.cumsum(sizes)
    lines = [tokens[end - size : end].tolist() for size, end in zip(sizes.tolist(), ends.tolist(), strict=True)
             if size]
    start = time.perf_counter()
    texts = [tokenizer.decode(ids) for ids in lines]
    decode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    back = [tokenizer.encode(text) for text in texts]
    encode_seconds = time.perf_counter() - start
    identical = [ids == again for ids, again in zip(lines, back, strict=True)]
    return RoundTrip(split, [len(ids) for ids in lines], identical, decode_seconds, encode_seconds)


def main(argv: list[str] | None = None) -> int:
    from replab.data import resolve_data_dir
    from replab.data.wikitext2 import SPLITS, Wikitext2

    parser = argparse.ArgumentParser(prog="python -m replab.text.roundtrip", description=__doc__)
    parser.add_argument("--data-dir", help="data folder (default: $REPLAB_DATA, else ./data)")
    args = parser.parse_args(argv)
    print("| split | lines identical | tokens in identical lines | decode | encode (fresh cache) |")
    print("| --- | --- | --- | --- | --- |")
    for split in SPLITS:
        data = Wikitext2(resolve_data_dir(args.data_dir), split=split)
        # a new tokenizer per split: an empty merge cache, so each split's encoding time is measured from cold
        tokenizer = GPT1Tokenizer.from_files(*vocabulary_files(args.data_dir))
        print(measure(tokenizer, data.tokens.numpy(), data.sizes, split).row(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
