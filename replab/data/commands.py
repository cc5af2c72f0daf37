"""The ``replab data`` command: what data is where and whether it loads (``check``, ``--verify`` its checksums), and
the downloads (``download``: CIFAR-10 and GPT-1's vocabulary; ``--embeddings``: GPT-1's token embeddings too).

Wikitext-2 is the course's preprocessed copy: it cannot be downloaded, and ``check`` says where to put it. Exit code
0 when everything present loads, 2 when something is missing or damaged (the optional vocabulary and embeddings
may be absent).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path

from replab.arguments import DATA_DIR_HELP
from replab.data.checksums import OFFICIAL_CIFAR10_MD5, verify_folder
from replab.data.cifar10 import FOLDER, find_folder, load_cifar10
from replab.data.cifar10_download import download_cifar10
from replab.data.embeddings import EMBEDDINGS_FILE, check_embeddings, download_embeddings
from replab.data.vocabulary import check_vocabulary, download_vocabulary
from replab.data.wikitext2 import SPLITS, Wikitext2
from replab.datadir import resolve_data_dir
from replab.exits import EXIT_OK, EXIT_USAGE, UsageError
from replab.text.bpe import VOCABULARY_FOLDER


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=("check", "download"), metavar="ACTION",
                        help="check: what data is where, and whether it loads; download: fetch CIFAR-10 and GPT-1's "
                        "vocabulary (Wikitext-2 is the course's copy: not downloadable)")
    parser.add_argument("--data-dir", metavar="DIR", help=DATA_DIR_HELP)
    parser.add_argument("--verify", action="store_true",
                        help="check: compare every file's MD5 with the official CIFAR-10 sums and the MD5SUMS lists")
    what = parser.add_mutually_exclusive_group()
    what.add_argument("--embeddings", action="store_true",
                      help="download: GPT-1's token embeddings (embeddings.npz) and vocabulary instead of CIFAR-10")
    what.add_argument("--vocabulary", action="store_true",
                      help="download: only GPT-1's BPE vocabulary (gpt1-bpe/, for decoding token ids to text)")
    parser.add_argument("--gpt1-url", "--embeddings-url", dest="gpt1_url", metavar="URL",
                        help="base URL of GPT-1's model/ folder, for the embeddings and the vocabulary (default: "
                        "$REPLAB_EMBEDDINGS_URL, else openai/finetune-transformer-lm on GitHub)")


def cmd_data(args) -> int:
    root = resolve_data_dir(args.data_dir)
    if args.action == "download":
        download(root, args)
    ok = check(root)
    if args.verify:
        ok = verify_checksums(root) and ok
    print(f"data folder: {root.resolve()}")
    return EXIT_OK if ok else EXIT_USAGE


def download(root: Path, args) -> None:
    """``data download``: CIFAR-10 and GPT-1's vocabulary; with ``--embeddings`` the embeddings and the vocabulary,
    with ``--vocabulary`` the vocabulary alone. A failed download is a ``UsageError`` naming what to do."""
    datasets = not (args.embeddings or args.vocabulary)  # a plain `data download`: CIFAR-10 too
    try:
        if args.embeddings:
            print(f"GPT-1 embeddings: {download_embeddings(root, url=args.gpt1_url)}")
        if datasets:
            print(f"CIFAR-10: {download_cifar10(root / 'cifar10')}")
        print(f"GPT-1 vocabulary: {download_vocabulary(root, url=args.gpt1_url)}")
    except (ConnectionError, ValueError) as error:
        raise UsageError(str(error)) from None
    if datasets:
        print("Wikitext-2 (GPT-1 token ids) is the course's preprocessed copy and is not downloadable: "
              f"put wiki.{{train,validation,test}}.npz in {root / 'wikitext2'}")


def check(root: Path) -> bool:
    """``data check``: one line per dataset (and split), the vocabulary and the embeddings; whether every one that
    is there loads (the vocabulary and the embeddings are optional)."""
    ok = all([_loads(f"wikitext2 {split:<10}", lambda s=split: _wikitext2(root, s)) for split in SPLITS])
    ok = _loads("cifar10   ", lambda: _cifar10(root)) and ok
    vocabulary, embeddings = _vocabulary(root), _embeddings(root)
    return ok and vocabulary and embeddings


def _loads(name: str, load: Callable[[], str]) -> bool:
    """``<name> ok: <what load() returns>``, or ``<name> MISSING|DAMAGED: <why>``; whether it loaded."""
    try:
        print(f"{name} ok: {load()}")
        return True
    except (FileNotFoundError, ValueError) as error:
        print(f"{name} {'MISSING' if isinstance(error, FileNotFoundError) else 'DAMAGED'}: {error}")
        return False


def _wikitext2(root: Path, split: str) -> str:
    data = Wikitext2(root, split=split)
    return f"{len(data):>6} sequences, {data.num_predictions:>9,} predicted tokens"


def _cifar10(root: Path) -> str:
    splits = load_cifar10(root)
    return f"{len(splits.train)} train / {len(splits.valid)} valid / {len(splits.test)} test"


def _vocabulary(root: Path) -> bool:
    try:
        tokenizer = check_vocabulary(root)
        print(f"vocabulary ok: {tokenizer.vocabulary_size - 1:,} GPT-1 tokens, {tokenizer.num_merges:,} merges "
              f"({VOCABULARY_FOLDER}/)")
    except FileNotFoundError:
        print("vocabulary absent (needed only to turn token ids into text: `replab generate`, the report's LSTM "
              "samples): replab data download --vocabulary")
    except ValueError as error:
        print(f"vocabulary DAMAGED: {error}")
        return False
    return True


def _embeddings(root: Path) -> bool:
    embeddings = root / EMBEDDINGS_FILE
    if not embeddings.exists():
        print("embeddings absent (optional; without them the LSTM learns its embeddings): "
              "replab data download --embeddings")
        return True
    try:
        rows, width = check_embeddings(embeddings)
    except ValueError as error:
        print(f"embeddings INVALID: {error}")
        return False
    print(f"embeddings ok: {rows:,} x {width} GPT-1 token embeddings ({embeddings.name})")
    return True


def verify_checksums(root: Path) -> bool:
    """``data check --verify``: every CIFAR-10 file against the official sums and the MD5SUMS lists."""
    try:
        cifar = find_folder(root)  # the folder that loading reads
    except FileNotFoundError:
        cifar = root / "cifar10" / FOLDER  # verify_folder names each missing file there
    wikitext = root / "wikitext2"
    sound = True
    for name, folder, files, official in (
        ("cifar10", cifar, list(OFFICIAL_CIFAR10_MD5), OFFICIAL_CIFAR10_MD5),
        ("wikitext2", wikitext, [f"wiki.{s}.npz" for s in SPLITS], None),
    ):
        lines, good = verify_folder(folder, files, official)
        sound = sound and good
        for line in lines:
            print(f"verify {name:<9} {line}")
    return sound
