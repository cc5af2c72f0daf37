"""How much of the course's token files survives GPT-1's BPE ``encode(decode(line))``, and how fast: ``python -m
replab.data.roundtrip [--data-dir DIR]`` prints one row per split (lines and tokens identical, seconds)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass

import numpy as np

from replab.arguments import DATA_DIR_HELP
from replab.data.wikitext2 import SPLITS, Wikitext2
from replab.datadir import resolve_data_dir
from replab.text.bpe import GPT1Tokenizer, vocabulary_files


@dataclass
class RoundTrip:
    """One split: its non-empty lines and their tokens, how many came back identical, the time each way."""

    split: str
    lines: int
    tokens: int
    identical_lines: int
    identical_tokens: int
    different: list[int]  # indices (among the non-empty lines) of the lines that differ
    decode_seconds: float
    encode_seconds: float

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
    return RoundTrip(split, len(lines), sum(map(len, lines)), sum(identical),
                     sum(len(ids) for ids, same in zip(lines, identical, strict=True) if same),
                     [index for index, same in enumerate(identical) if not same], decode_seconds, encode_seconds)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m replab.data.roundtrip", description=__doc__)
    parser.add_argument("--data-dir", help=DATA_DIR_HELP)
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
