"""GPT-1's token embeddings, from its published weights, in the course's ``embeddings.npz`` format.

GPT-1's weights are published with its code (openai/finetune-transformer-lm, MIT): ``model/params_shapes.json``
lists the shapes of its parameters in order, and ``model/params_0.npy`` .. ``params_9.npy`` hold their float32
values, all concatenated and cut into 10 shards. The first parameter is the position embeddings (512, 768), the
second the token embeddings (40,478, 768; row i = GPT-1 BPE id i). ``download_embeddings`` fetches the shapes
file and only the shards that hold the token embeddings, reading each shard's ``.npy`` header to learn its length
while it streams, and writes ``embeddings.npz``: ``tokens`` (40,479, 768) float32, row 0 the padding row (zeros)
and row i + 1 GPT-1's token i, the course's ids (GPT-1 id + 1). Each shard's SHA-256 is recorded beside it in
``embeddings.sources.json`` after the first download and checked by later ones.
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm.auto import tqdm

from replab.data.http import open_url, retrying
from replab.runlog import atomic_write_bytes

__all__ = ["EMBEDDINGS_FILE", "EMBEDDINGS_URL_ENV", "GPT1_MODEL_URL", "NUM_SHARDS", "default_embeddings_url",
           "download_embeddings", "check_embeddings"]

GPT1_MODEL_URL = "https://raw.githubusercontent.com/openai/finetune-transformer-lm/master/model"
#: Environment variable overriding the base URL (``--gpt1-url`` overrides both).
EMBEDDINGS_URL_ENV = "REPLAB_EMBEDDINGS_URL"
EMBEDDINGS_FILE = "embeddings.npz"
SOURCES_FILE = "embeddings.sources.json"
NUM_SHARDS = 10
HINT = "check the network or --gpt1-url"
VOCABULARY, WIDTH, POSITIONS = 40478, 768, 512  # GPT-1's token embeddings (V, E) and its context


def default_embeddings_url() -> str:
    """``$REPLAB_EMBEDDINGS_URL`` if set, else GPT-1's repository."""
    return os.environ.get(EMBEDDINGS_URL_ENV) or GPT1_MODEL_URL


@dataclass(frozen=True)
class _Block:
    """Where the token embeddings lie in the concatenated parameters: elements [start, stop)."""

    start: int
    stop: int


def _token_block(shapes: list) -> _Block:
    """The element range of the token embeddings, from the shapes file (checked against GPT-1's layout)."""
    if not isinstance(shapes, list) or len(shapes) < 2:
        raise ValueError("params_shapes.json must list at least two shapes")
    if list(shapes[0]) != [POSITIONS, WIDTH] or list(shapes[1]) != [VOCABULARY, WIDTH]:
        raise ValueError(f"params_shapes.json does not start with GPT-1's position ({POSITIONS}, {WIDTH}) and token "
                         f"({VOCABULARY}, {WIDTH}) embeddings: got {shapes[0]} and {shapes[1]}")
    start = POSITIONS * WIDTH
    return _Block(start, start + VOCABULARY * WIDTH)


class _HashingReader(io.RawIOBase):
    """A response read through: every byte is hashed and counted on the progress bar."""

    def __init__(self, response, digest, bar):
        self.response, self.digest, self.bar = response, digest, bar

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self.response.read(len(buffer))
        buffer[: len(data)] = data
        self.digest.update(data)
        self.bar.update(len(data))
        return len(data)


def _stream_shard(url: str, offset: int, block: _Block, out: memoryview, bar) -> tuple[int, str]:
    """Read one ``.npy`` shard holding the parameter elements from ``offset`` on; copy its part of ``block``
    into ``out`` (the block's bytes). Returns (elements in the shard, SHA-256 of the whole file)."""
    digest = hashlib.sha256()
    with open_url(url) as response:
        reader = io.BufferedReader(_HashingReader(response, digest, bar), 1 << 20)
        try:
            version = np.lib.format.read_magic(reader)
            if version not in ((1, 0), (2, 0)):
                raise ValueError(f"unsupported .npy version {version}")
            read_header = np.lib.format.read_array_header_1_0 if version == (1, 0) else \
                np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read_header(reader)
        except ValueError as error:
            raise ValueError(f"{url} is not a .npy file: {error}") from error
        if dtype != np.dtype("<f4") or len(shape) != 1 or fortran:
            raise ValueError(f"{url}: expected a flat little-endian float32 array, got {dtype} {shape}")
        count = int(shape[0])
        position = offset * 4  # byte position in the concatenated parameters
        first, last = block.start * 4, block.stop * 4
        end = position + count * 4
        while position < end:
            chunk = reader.read(min(1 << 20, end - position))
            if not chunk:
                raise ConnectionError(f"{url} ended early: {(end - position) // 4} elements missing")
            low, high = max(position, first), min(position + len(chunk), last)
            if low < high:
                out[low - first : high - first] = chunk[low - position : high - position]
            position += len(chunk)
        while reader.read(1 << 20):  # anything after the array still counts in the checksum
            pass
    return count, digest.hexdigest()


def _fetch_shards(base: str, block: _Block, recorded: dict, retries: int, wait: float, progress: bool):
    """The token block as a (V, E) float32 array and the shards' SHA-256 sums, shard by shard until it is full."""
    values = np.empty(block.stop - block.start, dtype=np.float32)
    out = memoryview(values).cast("B")
    sums: dict[str, str] = {}
    offset = 0
    with tqdm(unit="B", unit_scale=True, desc="GPT-1 weights", disable=not progress) as bar:
        for index in range(NUM_SHARDS):
            if offset >= block.stop:
                break
            name = f"params_{index}.npy"
            count, sums[name] = retrying(lambda n=name, o=offset: _stream_shard(f"{base}/{n}", o, block, out, bar),
                                         retries, wait, HINT)
            if name in recorded and recorded[name] != sums[name]:
                raise ValueError(f"{base}/{name} differs from the first download (SHA-256 {sums[name]}, recorded "
                                 f"{recorded[name]}): refusing it")
            offset += count
    if offset < block.stop:
        raise ValueError(f"the {NUM_SHARDS} shards at {base} hold {offset} elements, fewer than the token embeddings "
                         f"need ({block.stop})")
    return values.reshape(VOCABULARY, WIDTH), sums


def _npz_bytes(tokens: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, tokens=tokens)
    return buffer.getvalue()


def download_embeddings(data_dir: str | os.PathLike, url: str | None = None, retries: int = 3, wait: float = 2.0,
                        progress: bool = True) -> Path:
    """Write ``data_dir/embeddings.npz`` from GPT-1's published weights at ``url`` (default
    ``default_embeddings_url()``); returns its path. Present and valid already: returned untouched, no network.

    Network errors are retried ``retries`` times (waits ``wait``, ``2 wait``, ...). Writes happen only after every
    byte has arrived and checked out: ``embeddings.npz`` atomically, then ``embeddings.sources.json`` (the URL and
    each shard's SHA-256; a later download whose shards differ from it is refused).
    """
    folder = Path(data_dir)
    target = folder / EMBEDDINGS_FILE
    if target.exists():
        check_embeddings(target)
        return target
    base = (url or default_embeddings_url()).rstrip("/")
    sources_path = folder / SOURCES_FILE
    recorded = json.loads(sources_path.read_text()).get("sha256", {}) if sources_path.exists() else {}
    def read_shapes() -> bytes:
        with open_url(f"{base}/params_shapes.json") as response:
            return response.read()

    shapes_bytes = retrying(read_shapes, retries, wait, HINT)
    try:
        shapes = json.loads(shapes_bytes)
    except ValueError as error:
        raise ValueError(f"{base}/params_shapes.json is not JSON: {error}") from error
    block = _token_block(shapes)
    gpt1, sums = _fetch_shards(base, block, recorded, retries, wait, progress)
    sums["params_shapes.json"] = hashlib.sha256(shapes_bytes).hexdigest()
    if "params_shapes.json" in recorded and recorded["params_shapes.json"] != sums["params_shapes.json"]:
        raise ValueError(f"{base}/params_shapes.json differs from the first download: refusing it")
    tokens = np.zeros((VOCABULARY + 1, WIDTH), dtype=np.float32)
    tokens[1:] = gpt1
    atomic_write_bytes(target, _npz_bytes(tokens))
    record = {"source": base, "sha256": {**recorded, **sums}, "rows": "row 0 padding (zeros), row i+1 = GPT-1 token i"}
    atomic_write_bytes(sources_path, (json.dumps(record, indent=2) + "\n").encode())
    return target


def check_embeddings(path: str | os.PathLike) -> tuple[int, int]:
    """The shape of a valid ``embeddings.npz`` (``tokens`` 2-D float, row 0 zeros); ValueError otherwise."""
    path = Path(path)
    try:
        with np.load(path, allow_pickle=False) as archive:
            tokens = archive["tokens"]
    except (OSError, KeyError, ValueError, EOFError) as error:
        raise ValueError(f"{path} is not an npz file with a 'tokens' array: {error}") from error
    if tokens.ndim != 2 or not np.issubdtype(tokens.dtype, np.floating):
        raise ValueError(f"{path}: 'tokens' must be a 2-D float array, got {tokens.dtype} {tokens.shape}")
    if np.any(tokens[0] != 0):
        raise ValueError(f"{path}: row 0 (padding) must be zeros")
    return tokens.shape
