"""GPT-1's BPE vocabulary, from its published files, into ``<data dir>/gpt1-bpe/``.

The vocabulary turns the course's token ids back into text (``replab generate``, the report's LSTM samples). It is
published with GPT-1's code (openai/finetune-transformer-lm, MIT) beside the weights the embeddings come from:
``model/encoder_bpe_40000.json`` (token string -> GPT-1 id) and ``model/vocab_40000.bpe`` (the merge table).
``download_vocabulary`` fetches both, checks that they parse as GPT-1's vocabulary (40,478 tokens, ``<unk>`` at
id 0, 40,000 merges), and only then writes them, each atomically; the URL and their SHA-256 are recorded in
``gpt1-bpe/sources.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

from replab.data.embeddings import HINT, VOCABULARY, default_embeddings_url
from replab.data.http import open_url, retrying
from replab.runlog import atomic_write_bytes
from replab.text.bpe import ENCODER_FILE, MERGES_FILE, GPT1Tokenizer, parse_vocabulary, vocabulary_files

__all__ = ["MERGES", "check_vocabulary", "download_vocabulary"]

MERGES = 40000  # GPT-1's merge table
SOURCES_FILE = "sources.json"


def _check(tokenizer: GPT1Tokenizer) -> GPT1Tokenizer:
    """``tokenizer`` if its vocabulary has GPT-1's sizes; ValueError giving them otherwise."""
    tokens = tokenizer.vocabulary_size - 1
    if tokens != VOCABULARY or tokenizer.num_merges != MERGES:
        raise ValueError(f"not GPT-1's vocabulary: {tokens:,} tokens and {tokenizer.num_merges:,} merges, expected "
                         f"{VOCABULARY:,} and {MERGES:,}")
    return tokenizer


def check_vocabulary(data_dir: str | os.PathLike | None = None) -> GPT1Tokenizer:
    """The tokenizer of ``<data dir>/gpt1-bpe/`` once checked to be GPT-1's; FileNotFoundError where a file is
    missing, ValueError where one is damaged."""
    tokenizer = GPT1Tokenizer.from_data_dir(data_dir)
    try:
        return _check(tokenizer)
    except ValueError as error:
        raise ValueError(f"{vocabulary_files(data_dir)[0].parent}: {error}") from None


def download_vocabulary(data_dir: str | os.PathLike | None = None, url: str | None = None, retries: int = 3,
                        wait: float = 2.0) -> Path:
    """Write ``<data dir>/gpt1-bpe/`` from GPT-1's ``model/`` folder at ``url`` (default
    ``default_embeddings_url()``); returns the folder. Present and valid already: returned untouched, no network.

    Network errors are retried ``retries`` times (waits ``wait``, ``2 wait``, ...). Nothing is written unless both
    files arrived whole and parse as GPT-1's vocabulary (ValueError otherwise); then each is written atomically.
    """
    encoder_path, merges_path = vocabulary_files(data_dir)
    folder = encoder_path.parent
    if encoder_path.is_file() and merges_path.is_file():
        check_vocabulary(data_dir)
        return folder
    base = (url or default_embeddings_url()).rstrip("/")

    def fetch(name: str) -> bytes:
        with open_url(f"{base}/{name}") as response:
            return response.read()

    blobs = {name: retrying(lambda n=name: fetch(n), retries, wait, HINT) for name in (ENCODER_FILE, MERGES_FILE)}
    try:
        texts = [blobs[name].decode("utf-8") for name in (ENCODER_FILE, MERGES_FILE)]
        _check(GPT1Tokenizer(*parse_vocabulary(*texts)))
    except (UnicodeDecodeError, ValueError) as error:
        raise ValueError(f"refusing the vocabulary at {base}: {error}") from None
    for name, blob in blobs.items():
        atomic_write_bytes(folder / name, blob)
    record = {"source": base, "sha256": {name: hashlib.sha256(blob).hexdigest() for name, blob in blobs.items()}}
    atomic_write_bytes(folder / SOURCES_FILE, (json.dumps(record, indent=2) + "\n").encode())
    return folder
