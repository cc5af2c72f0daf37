"""How much of the course's token files survives ``encode(decode(line))``, and how fast: ``python -m
replab.text.roundtrip [--data-dir DIR]`` prints one row per split (lines and tokens identical, seconds)."""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np

from replab.text.bpe import GPT1Tokenizer


@dataclass
class RoundTrip:
    """Lines (non-empty) and tokens of one split, how many come back identical, and the time each way."""

    split: str
    lines: int = 0
    identical_lines: int = 0
    tokens: int = 0
    identical_tokens: int = 0
    decode_seconds: float = 0.0
    encode_seconds: float = 0.0
    different: list[int] = field(default_factory=list)  # indices (among the non-empty lines) that differ

    def row(self) -> str:
        return (f"| {self.split} | {self.identical_lines:,} / {self.lines:,} ({self.identical_lines / self.lines:.2%}) "
                f"| {self.identical_tokens:,} / {self.tokens:,} ({self.identical_tokens / self.tokens:.2%}) "
                f"| {self.decode_seconds:.1f} s | {self.encode_seconds:.1f} s |")


def measure(tokenizer: GPT1Tokenizer, tokens: np.ndarray, sizes: np.ndarray, split: str = "") -> RoundTrip:
    """Decode every non-empty line (``sizes`` tokens each, flat ``tokens``), encode the text again, compare."""
    ends = np.cumsum(sizes)
    lines = [tokens[end - size : end].tolist() for size, end in zip(sizes.tolist(), ends.tolist(), strict=True)
             if size]
    result = RoundTrip(split, lines=len(lines), tokens=sum(map(len, lines)))
    start = time.perf_counter()
    texts = [tokenizer.decode(ids) for ids in lines]
    result.decode_seconds = time.perf_counter() - start
    start = time.perf_counter()
    back = [tokenizer.encode(text) for text in texts]
    result.encode_seconds = time.perf_counter() - start
    for index, (ids, again) in enumerate(zip(lines, back, strict=True)):
        if ids == again:
            result.identical_lines += 1
            result.identical_tokens += len(ids)
        else:
            result.different.append(index)
    return result


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
        tokenizer = GPT1Tokenizer.from_files(*GPT1Tokenizer.default_files())  # an empty merge cache per split
        print(measure(tokenizer, data.tokens.numpy(), data.sizes, split).row(), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
